"""Auto-optimization's regret on a seeded catalog with known click rates, shaped like the external
benchmark world's feeds (bench/external_world.py): 60 offers at about 2%, a long right tail, a few
thousand displays a day. The model defaults (window, posterior sharpening, empirical-Bayes prior)
run in a closed loop from a cold start; the test fails if their mean regret over several catalogs
and simulation seeds gets worse than the bound. One loop can lock on an early-lucky runner-up (one of
24 measured loops lost 0.22), so a single seeded loop would pass or fail with the random stream."""

from __future__ import annotations

import numpy as np
import pandas as pd

from offerflow.core.config import AIModelConfig
from offerflow.ranking.bandits import fit_posteriors, thompson_first_choices

DAYS, RETRAINS_PER_DAY, DISPLAYS_PER_DAY = 35, 4, 3_400
#: Regret bound: clicks lost against always showing the best offer, as a share of its clicks, over
#: the whole 35 days (cold start included), averaged over 3 catalogs x 3 simulation seeds. Measured
#: (2026-12-07): the defaults (28 days, sharpening 2) 0.085 (single loops 0.046-0.154); the former
#: defaults (14 days, no sharpening) 0.154 (0.102-0.190). 8 seeds a catalog: 0.082 / 0.083 / 0.089
#: against 0.119 / 0.161 / 0.151. (A single week's regret moves too much between seeds to bound.)
REGRET_BOUND = 0.12
CATALOG_SEEDS, LOOPS_PER_CATALOG = (21, 22, 24), 3


def catalog(seed: int) -> np.ndarray:
    """60 true click rates: lognormal around 2%, the best a few times the median."""
    return np.clip(0.02 * np.exp(np.random.default_rng(seed).normal(0.0, 0.45, 60)), 0.002, 0.2)


def daily_regret(rates: np.ndarray, model: AIModelConfig, seed: int) -> np.ndarray:
    """Per day, the share of the best offer's clicks the model lost, shape (DAYS,): retrain on the
    rolling window, serve, click each shown offer with its true rate, repeat."""
    rng = np.random.default_rng(seed)
    m, batch = len(rates), DISPLAYS_PER_DAY // RETRAINS_PER_DAY
    ids = [f"o{j:03d}" for j in range(m)]  # sorted as fit_posteriors sorts
    history: list[tuple[np.ndarray, np.ndarray]] = []
    served = np.zeros((DAYS, RETRAINS_PER_DAY))
    for step in range(DAYS * RETRAINS_PER_DAY):
        window = history[-model.training_window_days * RETRAINS_PER_DAY:]
        displays = np.sum([d for d, _ in window], axis=0) if window else np.zeros(m)
        successes = np.sum([s for _, s in window], axis=0) if window else np.zeros(m)
        post = fit_posteriors(pd.DataFrame({"offer_id": ids, "displays": displays, "successes": successes}),
                              model.min_displays, model.min_successes, empirical_prior=model.samples_every_offer,
                              sharpening=model.posterior_sharpening)
        shown = thompson_first_choices(post["alpha"].to_numpy(), post["beta"].to_numpy(),
                                       np.ones(m, bool), np.ones((batch, m), bool), 0.0, rng, model.sampling)
        clicks = rng.random(batch) < rates[shown]
        history.append((np.bincount(shown, minlength=m), np.bincount(shown, weights=clicks, minlength=m)))
        served[divmod(step, RETRAINS_PER_DAY)] = rates[shown].mean()
    return 1.0 - served.mean(axis=1) / rates.max()


def test_default_auto_optimization_regret_stays_within_its_bound():
    model = AIModelConfig(name="auto", type="auto_optimization", placements=["feed"])
    regrets = {(seed, k): daily_regret(catalog(seed), model, seed * 100 + k).mean()
               for seed in CATALOG_SEEDS for k in range(LOOPS_PER_CATALOG)}
    assert np.mean(list(regrets.values())) <= REGRET_BOUND, {key: round(r, 3) for key, r in regrets.items()}
