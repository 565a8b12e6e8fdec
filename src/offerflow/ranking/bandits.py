"""Auto-optimization: Thompson sampling over Beta posteriors of each offer's success rate.

Training is counting: per offer, displays and successes in a rolling window give a Beta(1 + s,
1 + d - s) posterior. Serving samples one rate per offer and ranks by the samples, so traffic moves
toward the best offers while still exploring. Offers with too little data ("new") are served only
by the exploration share of traffic; with fewer than two qualified offers, serving is random.

The exploration share goes to the new offers (one of them, uniformly, comes first), and only
while some eligible offer is new: once every eligible offer has qualified, Thompson sampling
explores by itself (an uncertain posterior wins some draws), and random traffic over offers it
already knows would only cost clicks.

With `sampling.rule: top_two` (top-two Thompson sampling, Russo 2016, with a bounded re-draw) a
decision serves the order of its first draw with probability `leader_share`; otherwise it re-draws
up to `max_redraws` times and serves the order of the first re-draw won by another offer than the
first draw's winner (the leader), or the first draw's order if none is. A close runner-up keeps
winning some decisions; a clear leader, which no re-draw unseats, keeps nearly all of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from offerflow.ranking.priors import fit_beta_prior

if TYPE_CHECKING:
    import pandas as pd

    from offerflow.core.settings import SamplingConfig

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
    #: top-two sampling served a re-draw: the first draw's winner (a position), passed over for the
    #: re-draw's; None otherwise. `samples` are those of the draw served.
    leader: int | None = None


def top_two_rule(sampling: SamplingConfig | None) -> tuple[float, int] | None:
    """(leader share, most re-draws) of a top-two sampling setting; None for plain Thompson sampling."""
    if sampling is None or sampling.rule != "top_two":
        return None
    return float(sampling.leader_share), int(sampling.max_redraws)


def _draw(alpha: np.ndarray, beta: np.ndarray, pool: np.ndarray, weights: np.ndarray | None,
          rng: np.random.Generator) -> np.ndarray:
    samples = rng.beta(alpha[pool], beta[pool])
    return samples if weights is None else samples * weights[pool]


def _top_two_draw(samples: np.ndarray, alpha: np.ndarray, beta: np.ndarray, pool: np.ndarray,
                  weights: np.ndarray | None, rng: np.random.Generator,
                  rule: tuple[float, int]) -> tuple[np.ndarray, int | None]:
    """The draw top-two sampling serves, from the first one (`samples`, over `pool`), and the leader
    it passed over (a position into the candidate arrays; None when it serves the first draw)."""
    leader_share, max_redraws = rule
    if rng.random() < leader_share:
        return samples, None
    leader = int(samples.argmax())
    for _ in range(max_redraws):
        redraw = _draw(alpha, beta, pool, weights, rng)
        if int(redraw.argmax()) != leader:
            return redraw, int(pool[leader])
    return samples, None


def top_two_probabilities(p: np.ndarray, rule: tuple[float, int]) -> np.ndarray:
    """First-choice probabilities under top-two sampling from those of one draw, `p` (shape (k,),
    summing to 1). Draws are independent, each won by j with probability p_j, so from leader i the
    re-draws find challenger j != i with probability p_j c_i, c_i = 1 + p_i + ... + p_i^(R-1), and
    give up (leader i) with p_i^R: P(j) = s p_j + (1 - s) p_j (sum_i p_i c_i - p_j c_j + p_j^R)."""
    leader_share, max_redraws = rule
    p = np.asarray(p, dtype=float)
    stay = sum((p ** r for r in range(max_redraws)), np.zeros_like(p))
    challenged = p * ((p * stay).sum() - p * stay + p ** max_redraws)
    return leader_share * p + (1.0 - leader_share) * challenged


def thompson_select(alpha: np.ndarray, beta: np.ndarray, qualified: np.ndarray, eligible: np.ndarray,
                    n_items: int, exploration_share: float, rng: np.random.Generator,
                    propensity_draws: int = 1000, first_probabilities: np.ndarray | None = None,
                    weights: np.ndarray | None = None, sampling: SamplingConfig | None = None) -> Selection:
    """Rank eligible offers for one request.

    Args:
        alpha, beta: shape (m,), posterior parameters per offer.
        qualified: shape (m,), offers with enough data to be served by the model.
        eligible: shape (m,), offers this profile may see.
        n_items: how many offers to return (fewer if fewer are eligible).
        first_probabilities: shape (m,), `first_choice_probability` for these inputs if the caller
            has it cached (it only changes with the posteriors and the eligible set).
        weights: shape (m,), value of a success per offer (value-weighted models); None = 1.
        sampling: the model's sampling rule (None: plain Thompson sampling); with top-two sampling
            the slate is the served draw's order (module docstring).
    """
    candidates = np.flatnonzero(eligible)
    if len(candidates) == 0:
        return Selection(np.empty(0, dtype=np.int64), 1.0, explored=False)
    model_pool = candidates[qualified[candidates]]
    new = np.setdiff1d(candidates, model_pool)
    samples, leader, rule = None, None, top_two_rule(sampling)
    if len(model_pool) < 2:
        explore, order = True, rng.permutation(candidates)[:n_items]
    else:
        explore = len(new) > 0 and rng.random() < exploration_share
        samples = _draw(alpha, beta, model_pool, weights, rng)
        if rule is not None and not explore:
            samples, leader = _top_two_draw(samples, alpha, beta, model_pool, weights, rng, rule)
        ranked = model_pool[np.argsort(-samples, kind="stable")]
        # Exploration puts a new offer first; otherwise new offers fill the remaining slots only
        # after every qualified one.
        order = np.concatenate([rng.permutation(new), ranked] if explore else [ranked, rng.permutation(new)])[:n_items]
    first = order[0]
    if first_probabilities is None:
        first_probabilities = first_choice_probability(alpha, beta, qualified, eligible, exploration_share,
                                                       rng, propensity_draws, weights, sampling)
    p_first = first_probabilities[first]
    return Selection(order, float(p_first), explored=bool(explore), pool=None if samples is None else model_pool,
                     samples=samples, leader=leader)


def first_choice_probability(alpha: np.ndarray, beta: np.ndarray, qualified: np.ndarray, eligible: np.ndarray,
                             exploration_share: float, rng: np.random.Generator, draws: int = 1000,
                             weights: np.ndarray | None = None, sampling: SamplingConfig | None = None) -> np.ndarray:
    """Probability of each offer being ranked first, shape (m,).

    The Thompson part has no closed form for more than two offers, so it is estimated by Monte
    Carlo with `draws` samples; the exploration part is exact (uniform over the new eligible
    offers, so it exists only while one is new; with fewer than two qualified, uniform over all).
    With top-two `sampling`, the Monte Carlo win rates of one draw go through
    `top_two_probabilities` (exact given them).
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
    rule = top_two_rule(sampling)
    probs[pool] = wins if rule is None else top_two_probabilities(wins, rule)
    return exploration_share * uniform + (1.0 - exploration_share) * probs


def thompson_first_choices(alpha: np.ndarray, beta: np.ndarray, qualified: np.ndarray, eligible: np.ndarray,
                           exploration_share: float, rng: np.random.Generator,
                           sampling: SamplingConfig | None = None) -> np.ndarray:
    """The first offer `thompson_select` would choose for each of many requests at once, shape
    (n,), -1 where nothing is eligible: for simulations, with the same policy (exploration only while
    an eligible offer is new, random serving with fewer than two qualified, the sampling rule).

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
    first = np.where(n_eligible > 0, keys.argmax(axis=1), -1)
    rule = top_two_rule(sampling)
    if rule is not None:
        challenged = ~random_serving & ~explore & (rng.random(n) >= rule[0])
        _top_two_challengers(first, np.flatnonzero(challenged), alpha, beta, pool, rng, rule[1])
    return first


def _top_two_challengers(first: np.ndarray, rows: np.ndarray, alpha: np.ndarray, beta: np.ndarray,
                         pool: np.ndarray, rng: np.random.Generator, max_redraws: int) -> None:
    """Top-two sampling for the requests `rows` that look for a challenger: re-draw their posteriors
    up to `max_redraws` times and put the first re-draw winner other than the leader (`first[row]`)
    in `first`, in place; rows where none turns up keep the leader."""
    leader = first[rows]
    for _ in range(max_redraws):
        if len(rows) == 0:
            break
        winner = np.where(pool[rows], rng.beta(alpha, beta, size=(len(rows), len(alpha))), -np.inf).argmax(axis=1)
        found = winner != leader
        first[rows[found]] = winner[found]
        rows, leader = rows[~found], leader[~found]
