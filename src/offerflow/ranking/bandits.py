"""Auto-optimization: Thompson sampling over Beta posteriors of each offer's success rate.

Training is counting: per offer, displays and successes in a rolling window give a Beta(1 + s,
1 + d - s) posterior. Serving samples one rate per offer and ranks by the samples, so traffic moves
toward the best offers while still exploring. Offers with too little data ("new") are served only
by the exploration share of traffic; with fewer than two qualified offers, serving is random.

The exploration share goes to the new offers (one of them, uniformly, comes first), and only
while some eligible offer is new: once every eligible offer has qualified, Thompson sampling
explores by itself (an uncertain posterior wins some draws), and random traffic over offers it
already knows would only cost clicks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from offerflow.ranking.priors import fit_beta_prior

if TYPE_CHECKING:
    import pandas as pd

PRIOR_ALPHA = 1.0
PRIOR_BETA = 1.0


def fit_posteriors(counts: pd.DataFrame, min_displays: int, min_successes: int,
                   value_weighted: bool = False, value_prior_successes: float = 5.0,
                   empirical_prior: bool = False, sharpening: float = 1.0) -> pd.DataFrame:
    """Beta posteriors per offer from `offer_id, displays, successes[, value]`. Returns the columns
    of `schema.POSTERIOR_SCHEMA`, sorted by offer_id.

    The prior is the flat Beta(1, 1), or with `empirical_prior` the Beta fitted to these offers'
    own rates (`priors.fit_beta_prior`): offers with few displays start near the others' mean.
    `sharpening` k counts each display k times in the posterior (the prior once): Beta(alpha0 +
    k s, beta0 + k (d - s)), whose spread is that of k times the data, so Thompson sampling settles
    on the best offers sooner (k = 1: the plain posterior; the fitted prior sees the raw counts).

    Value-weighted models rank by expected value per display = success rate x mean value of a
    success. The mean value per offer is shrunk toward the mean over all offers, as if each offer
    had `value_prior_successes` extra successes of average value, so an offer with two lucky large
    orders does not jump to the top.
    """
    import pandas as pd  # training only: the decision path imports this module, not pandas

    displays = counts["displays"].to_numpy(np.int64)
    successes = np.minimum(counts["successes"].to_numpy(float), displays)
    weight = np.ones(len(counts))
    if value_weighted:
        value = counts["value"].to_numpy(float) if "value" in counts else np.zeros(len(counts))
        value = np.nan_to_num(value)
        overall = value.sum() / successes.sum() if successes.sum() > 0 else 0.0
        weight = (value + value_prior_successes * overall) / (successes + value_prior_successes)
    prior_alpha, prior_beta = fit_beta_prior(displays, successes) if empirical_prior else (PRIOR_ALPHA, PRIOR_BETA)
    return pd.DataFrame({
        "offer_id": counts["offer_id"].astype(str).to_numpy(),
        "alpha": prior_alpha + sharpening * successes,
        "beta": prior_beta + sharpening * (displays - successes),
        "displays": displays,
        "successes": successes,
        "qualified": (displays >= min_displays) & (successes >= min_successes),
        "value_weight": weight,
    }).sort_values("offer_id", kind="stable").reset_index(drop=True)


def sampled_offers(qualified: np.ndarray, new_offers: str) -> np.ndarray:
    """The offers Thompson sampling ranks, shape (m,): every offer with `new_offers:
    empirical_bayes`, only the qualified ones with `new_offers: exploration_share`."""
    qualified = np.asarray(qualified, dtype=bool)
    return np.ones_like(qualified) if new_offers == "empirical_bayes" else qualified


@dataclass(frozen=True)
class Selection:
    """Offers chosen for one decision, best first, and the probability of the first choice."""

    indices: np.ndarray  # shape (n_items,), positions into the candidate arrays
    propensity: float    # probability that the first item would have been chosen first
    explored: bool
    #: the qualified eligible offers Thompson-sampled (positions) and their samples, shape (k,) each;
    #: None when serving was random (fewer than two qualified). Kept for explanations.
    pool: np.ndarray | None = None
    samples: np.ndarray | None = None


def thompson_select(alpha: np.ndarray, beta: np.ndarray, qualified: np.ndarray, eligible: np.ndarray,
                    n_items: int, exploration_share: float, rng: np.random.Generator,
                    propensity_draws: int = 1000, first_probabilities: np.ndarray | None = None,
                    weights: np.ndarray | None = None) -> Selection:
    """Rank eligible offers for one request.

    Args:
        alpha, beta: shape (m,), posterior parameters per offer.
        qualified: shape (m,), offers with enough data to be served by the model.
        eligible: shape (m,), offers this profile may see.
        n_items: how many offers to return (fewer if fewer are eligible).
        first_probabilities: shape (m,), `first_choice_probability` for these inputs if the caller
            has it cached (it only changes with the posteriors and the eligible set).
        weights: shape (m,), value of a success per offer (value-weighted models); None = 1.
    """
    candidates = np.flatnonzero(eligible)
    if len(candidates) == 0:
        return Selection(np.empty(0, dtype=np.int64), 1.0, explored=False)
    model_pool = candidates[qualified[candidates]]
    new = np.setdiff1d(candidates, model_pool)
    samples = None
    if len(model_pool) < 2:
        explore, order = True, rng.permutation(candidates)[:n_items]
    else:
        explore = len(new) > 0 and rng.random() < exploration_share
        samples = rng.beta(alpha[model_pool], beta[model_pool])
        if weights is not None:
            samples = samples * weights[model_pool]
        ranked = model_pool[np.argsort(-samples, kind="stable")]
        # Exploration puts a new offer first; otherwise new offers fill the remaining slots only
        # after every qualified one.
        order = np.concatenate([rng.permutation(new), ranked] if explore else [ranked, rng.permutation(new)])[:n_items]
    first = order[0]
    if first_probabilities is None:
        first_probabilities = first_choice_probability(alpha, beta, qualified, eligible, exploration_share,
                                                       rng, propensity_draws, weights)
    p_first = first_probabilities[first]
    return Selection(order, float(p_first), explored=bool(explore), pool=None if samples is None else model_pool,
                     samples=samples)


def first_choice_probability(alpha: np.ndarray, beta: np.ndarray, qualified: np.ndarray, eligible: np.ndarray,
                             exploration_share: float, rng: np.random.Generator, draws: int = 1000,
                             weights: np.ndarray | None = None) -> np.ndarray:
    """Probability of each offer being ranked first, shape (m,).

    The Thompson part has no closed form for more than two offers, so it is estimated by Monte
    Carlo with `draws` samples; the exploration part is exact (uniform over the new eligible
    offers, so it exists only while one is new; with fewer than two qualified, uniform over all).
    """
    m = len(alpha)
    probs = np.zeros(m)
    candidates = np.flatnonzero(eligible)
    if len(candidates) == 0:
        return probs
    pool = candidates[qualified[candidates]]
    uniform = np.zeros(m)
    uniform[candidates] = 1.0 / len(candidates)
    if len(pool) < 2:
        return uniform
    new = np.setdiff1d(candidates, pool)
    uniform = np.zeros(m)  # exploration: uniform over the NEW eligible offers
    uniform[new] = 1.0 / max(len(new), 1)
    if len(new) == 0:  # nothing new to explore: Thompson sampling alone
        exploration_share = 0.0
    samples = rng.beta(alpha[pool], beta[pool], size=(draws, len(pool)))
    if weights is not None:
        samples = samples * weights[pool]
    wins = np.bincount(samples.argmax(axis=1), minlength=len(pool)) / draws
    probs[pool] = wins
    return exploration_share * uniform + (1.0 - exploration_share) * probs


def thompson_first_choices(alpha: np.ndarray, beta: np.ndarray, qualified: np.ndarray, eligible: np.ndarray,
                           exploration_share: float, rng: np.random.Generator) -> np.ndarray:
    """The first offer `thompson_select` would choose for each of many requests at once, shape
    (n,), -1 where nothing is eligible: for simulations, with the same policy (exploration only while
    an eligible offer is new, random serving with fewer than two qualified).

    Args:
        alpha, beta, qualified: shape (m,); eligible: shape (n, m), the offers each request may see.
    """
    n, m = eligible.shape
    pool = eligible & qualified[None, :]
    in_pool, n_eligible = pool.sum(axis=1), eligible.sum(axis=1)
    random_serving = in_pool < 2
    explore = ~random_serving & (in_pool < n_eligible) & (rng.random(n) < exploration_share)
    keys = np.where(pool, rng.beta(alpha, beta, size=(n, m)), -np.inf)
    noise = rng.random((n, m))
    keys[random_serving] = np.where(eligible[random_serving], noise[random_serving], -np.inf)
    keys[explore] = np.where(eligible[explore] & ~qualified[None, :], noise[explore], -np.inf)
    return np.where(n_eligible > 0, keys.argmax(axis=1), -1)
