"""Auto-optimization's regret on a seeded catalog with known click rates, shaped like the external
benchmark world's feeds (bench/external_world.py): 60 offers at about 2%, a long right tail, a few
thousand displays a day. The model defaults (window, posterior sharpening, empirical-Bayes prior)
run in a closed loop from a cold start; the test fails if their regret gets worse than the bound."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from offerflow.core.config import AIModelConfig
from offerflow.ranking.bandits import fit_posteriors, thompson_first_choices

DAYS, RETRAINS_PER_DAY, DISPLAYS_PER_DAY = 35, 4, 3_400
#: Regret bound: clicks lost against always showing the best offer, as a share of its clicks, over
#: the whole 35 days (cold start included). The defaults (28 days, sharpening 2) measured 0.069 /
#: 0.119 / 0.092 on seeds 21 / 22 / 24; the former defaults (14 days, no sharpening) 0.199 / 0.151 /
#: 0.148, over the bound on every seed. (A single week's regret moves too much between seeds to bound.)
REGRET_BOUND = 0.14


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


@pytest.mark.parametrize("seed", [21, 22, 24])
def test_default_auto_optimization_regret_stays_within_its_bound(seed):
    model = AIModelConfig(name="auto", type="auto_optimization", placements=["feed"])
    regret = daily_regret(catalog(seed), model, seed)
    assert regret.mean() <= REGRET_BOUND, regret.round(3)
