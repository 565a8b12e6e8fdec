"""Target policies of off-policy evaluation: per profile, the probability that a strategy puts each
eligible offer first (uniform, argmax or softmax of scores, Thompson sampling as served), and the
`Strategy` that names one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from offerflow.core.settings import SamplingConfig

#: A target policy: (profiles, offers, eligible[n_profiles, n_offers]) -> probabilities, same shape,
#: each row summing to 1 over the eligible offers (0 where nothing is eligible).
PolicyFn = Callable[[pd.DataFrame, pd.DataFrame, np.ndarray], np.ndarray]


def uniform_policy(eligible: np.ndarray) -> np.ndarray:
    """Uniformly random over the eligible offers."""
    count = eligible.sum(axis=1, keepdims=True)
    return np.where(eligible, 1.0 / np.maximum(count, 1), 0.0)


def argmax_policy(scores: np.ndarray, eligible: np.ndarray) -> np.ndarray:
    """The best-scoring eligible offer first; exact ties share the probability equally."""
    masked = np.where(eligible, scores, -np.inf)
    best = masked.max(axis=1, keepdims=True)
    top = eligible & (masked == best) & np.isfinite(best)
    return top / np.maximum(top.sum(axis=1, keepdims=True), 1)


def softmax_policy(scores: np.ndarray, eligible: np.ndarray, temperature: float) -> np.ndarray:
    """Eligible offers in proportion to exp(score / temperature)."""
    masked = np.where(eligible, scores / temperature, -np.inf)
    masked = masked - np.where(eligible.any(axis=1, keepdims=True), masked.max(axis=1, keepdims=True), 0.0)
    weights = np.where(eligible, np.exp(masked), 0.0)
    return weights / np.maximum(weights.sum(axis=1, keepdims=True), 1e-300)


def score_policy(score_fn: Callable[[pd.DataFrame, pd.DataFrame], np.ndarray]) -> PolicyFn:
    """Rank by a score function (priority, a formula, a click model): argmax over eligible offers."""
    def policy(profiles: pd.DataFrame, offers: pd.DataFrame, eligible: np.ndarray) -> np.ndarray:
        return argmax_policy(np.asarray(score_fn(profiles, offers), dtype=float), eligible)
    return policy


def thompson_policy(posteriors: pd.DataFrame, exploration_share: float, seed: int,
                    draws: int = 4000, new_offers: str = "exploration_share",
                    sampling: SamplingConfig | None = None) -> PolicyFn:
    """Auto-optimization as served: the Thompson first-choice probability of each offer, computed
    once per distinct eligible set (offers without a posterior are never qualified; with
    `new_offers: empirical_bayes` every offer is sampled; `sampling`: the model's rule, None = plain)."""
    from offerflow.ranking.bandits import first_choice_probability, sampled_offers

    def policy(profiles: pd.DataFrame, offers: pd.DataFrame, eligible: np.ndarray) -> np.ndarray:
        post = offers[["offer_id"]].merge(posteriors, on="offer_id", how="left")
        alpha = post["alpha"].fillna(1.0).to_numpy(float)
        beta = post["beta"].fillna(1.0).to_numpy(float)
        qualified = sampled_offers(post["qualified"].fillna(False).to_numpy(bool), new_offers)
        sets, inverse = np.unique(eligible, axis=0, return_inverse=True)
        rng = np.random.default_rng(seed)
        per_set = np.stack([first_choice_probability(alpha, beta, qualified, row, exploration_share, rng, draws,
                                                     sampling=sampling)
                            for row in sets]) if len(sets) else np.zeros((0, len(offers)))
        return per_set[inverse.reshape(-1)]
    return policy


@dataclass(frozen=True)
class Strategy:
    """A candidate ranking strategy: `name` is a metric-safe slug, `label` what people read."""

    name: str
    label: str
    kind: str  # random | priority | formula | auto_optimization | personalized | logged
    policy: PolicyFn | None  # None for the logged policy itself (on-policy mean)
    offers_personalized: int | None = None
    #: per-slot probabilities for whole slates (`slates.SlatePolicyFn`); None: first item only
    slate: Callable[..., np.ndarray] | None = None
