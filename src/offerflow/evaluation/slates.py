"""Position-aware off-policy evaluation of whole slates: the expected number of clicks a strategy's
top-K list would have earned, from logged decisions whose every slot carries its propensity.

Estimand: V(pi) = E_x[ sum_k E[click at slot k | x, pi] ], the expected clicks per decision over the
placement's K slots. Assumption (the item-position model; the position-based click model
click = examined(k) x attracted(x, a) is a special case): a click at slot k depends only on the
context, the offer in slot k and k itself, not on the other offers of the slate. Then
(Li et al. 2018, "Offline evaluation of ranking policies with click models")

    IIPS:  mean_i sum_k  pi_k(a_ik | x_i) / mu_k(a_ik | x_i) * r_ik

is unbiased when mu_k(a | x) > 0 wherever pi_k(a | x) > 0, with pi_k / mu_k the target's / logger's
probability of showing offer a in slot k (per-slot marginals, not whole-slate probabilities, so the
weights stay as small as for one item). Also per-slot self-normalized IIPS, and a slot-wise DR with
q_k(x, a) = theta_k q(x, a): the reward model's click probability scaled by each slot's observed
clicks / predicted clicks. The pseudo-inverse estimator (Swaminathan et al. 2017) needs only slate
rewards; with per-slot clicks logged, IIPS uses strictly more information under the same additivity.

The logger's per-slot marginals (`propensity` on every display of a decision, rank from the event
id `<decision>-<placement>-<rank>`) are written by the decision engine since per-slot logging
(docs/decisioning.md); decisions with a slot lacking it are dropped and counted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import duckdb
import numpy as np
import pandas as pd

from offerflow.core.features import EVENTS_VIEW, query_frame
from offerflow.evaluation.intervals import poisson_bootstrap
from offerflow.evaluation.logged_displays import placement_eligibility
from offerflow.evaluation.offpolicy import WarningLimits
from offerflow.core.schema import PROFILE_ID

SLATE_NOTE = ("Slate estimates: expected clicks per decision over all K slots of the placement, by "
              "position-aware (per-slot) inverse propensity weighting; they assume a click in a slot depends "
              "only on the offer shown there and the slot.")

#: (profiles, offers, eligible[n_profiles, n_offers], k) -> (n_profiles, n_offers, k): the probability
#: that the strategy shows each offer in each slot (each slot's column sums to at most 1).
SlatePolicyFn = Callable[[pd.DataFrame, pd.DataFrame, np.ndarray, int], np.ndarray]


@dataclass
class LoggedSlates:
    """The logged decisions of one placement in a window, one row per decision, one column per slot.

    `action[i, k]` is the offer shown in slot k (index into `offers`, -1 if none), `propensity[i, k]`
    the logger's probability of that offer in that slot, `reward[i, k]` 1 if it was clicked."""

    placement_id: str
    items: int
    profiles: pd.DataFrame
    offers: pd.DataFrame
    eligible: np.ndarray
    profile_row: np.ndarray     # (n,)
    action: np.ndarray          # (n, K) int
    propensity: np.ndarray      # (n, K) float, NaN where no offer
    reward: np.ndarray          # (n, K) float
    dropped: dict[str, int] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.profile_row)

    def short_share(self) -> float:
        """Share of decisions showing fewer offers than min(items, offers eligible now): a log of
        single offers on a multi-item placement is not a log of slates."""
        if self.n == 0:
            return 0.0
        possible = np.minimum(self.eligible[self.profile_row].sum(axis=1), self.items)
        return float(((self.action >= 0).sum(axis=1) < possible).mean())


def load_logged_slates(con: duckdb.DuckDBPyConnection, placement_id: str, items: int, start: datetime, end: datetime,
                       profiles: pd.DataFrame, offers: pd.DataFrame, success_event: str = "click") -> LoggedSlates:
    """Decisions of `placement_id` in [start, end) with all their slots, from the events view.

    Kept: decisions whose every shown slot (rank 1..items) has a propensity in (0, 1], of a known
    profile and catalog offers. The rank is the event id's trailing `-<rank>` (decision log), 1
    for a decision's lone display without one."""
    sql = f"""
        WITH d AS (
            SELECT decision_id, profile_id, offer_id, propensity,
                   COALESCE(TRY_CAST(regexp_extract(event_id, '-([0-9]+)$', 1) AS INTEGER), 1) AS rank
            FROM {EVENTS_VIEW}
            WHERE event_type = 'display' AND placement_id = ? AND timestamp >= ? AND timestamp < ?
              AND decision_id IS NOT NULL),
        s AS (SELECT DISTINCT decision_id, offer_id FROM {EVENTS_VIEW}
              WHERE event_type = ? AND decision_id IS NOT NULL)
        SELECT d.decision_id, d.profile_id, d.offer_id, d.propensity, d.rank,
               (s.decision_id IS NOT NULL)::DOUBLE AS reward
        FROM d LEFT JOIN s ON d.decision_id = s.decision_id AND d.offer_id = s.offer_id
        ORDER BY d.decision_id, d.rank"""
    log = query_frame(con, sql, [placement_id, start, end, success_event])
    offers = offers.reset_index(drop=True)
    decision, decisions = pd.factorize(log["decision_id"])
    p = log["propensity"].to_numpy(float)
    offer_idx = pd.Index(offers["offer_id"]).get_indexer(log["offer_id"])
    rank = log["rank"].to_numpy(np.int64)
    bad = np.zeros(len(decisions), dtype=bool)
    reasons = {"a slot without a per-slot propensity in (0, 1]": ~(np.isfinite(p) & (p > 0) & (p <= 1)),
               "an offer not in the placement's catalog": offer_idx < 0,
               f"a rank outside 1..{items}": (rank < 1) | (rank > items)}
    dropped: dict[str, int] = {}
    for reason, row_bad in reasons.items():
        now_bad = np.zeros(len(decisions), dtype=bool)
        now_bad[decision[row_bad]] = True
        if (now_bad & ~bad).any():
            dropped[f"decisions dropped: {reason}"] = int((now_bad & ~bad).sum())
        bad |= now_bad
    first_profile = log.groupby(decision)[PROFILE_ID].first().to_numpy() if len(log) else np.array([], dtype=object)
    unknown = ~pd.Series(first_profile).isin(profiles[PROFILE_ID]).to_numpy()
    if (unknown & ~bad).any():
        dropped["decisions dropped: unknown profile"] = int((unknown & ~bad).sum())
    bad |= unknown
    keep_rows = ~bad[decision]
    new_index = np.cumsum(~bad) - 1
    n = int((~bad).sum())
    action = np.full((n, items), -1, dtype=np.int64)
    propensity = np.full((n, items), np.nan)
    reward = np.zeros((n, items))
    i, k = new_index[decision[keep_rows]], rank[keep_rows] - 1
    action[i, k], propensity[i, k], reward[i, k] = offer_idx[keep_rows], p[keep_rows], log["reward"].to_numpy(float)[keep_rows]
    kept_profiles = first_profile[~bad]
    ids = pd.Index(pd.unique(kept_profiles))
    window_profiles = profiles.set_index(PROFILE_ID).loc[ids].reset_index()
    return LoggedSlates(placement_id, items, window_profiles, offers, placement_eligibility(window_profiles, offers),
                        ids.get_indexer(kept_profiles).astype(np.int64), action, propensity, reward, dropped)


# --- what a strategy would show in each slot ------------------------------------------------------

def ranked_slot_probabilities(scores: np.ndarray, eligible: np.ndarray, k: int, chunk: int = 20_000) -> np.ndarray:
    """Per-slot probabilities of ranking the eligible offers by score: an offer whose score is beaten
    by `start` eligible offers and tied with `size` (itself included) lands uniformly in slots
    start..start+size-1 (random tie-breaking). Shape (n, m, k)."""
    n, m = eligible.shape
    out = np.zeros((n, m, k))
    slots = np.arange(k)
    for lo in range(0, n, chunk):
        s = np.where(eligible[lo:lo + chunk], scores[lo:lo + chunk], -np.inf)
        e = eligible[lo:lo + chunk, None, :]
        start = ((s[:, None, :] > s[:, :, None]) & e).sum(axis=2)
        size = ((s[:, None, :] == s[:, :, None]) & e).sum(axis=2)
        inside = (slots >= start[..., None]) & (slots < (start + size)[..., None])
        out[lo:lo + chunk] = np.where(eligible[lo:lo + chunk, :, None], inside / np.maximum(size, 1)[..., None], 0.0)
    return out


def uniform_slot_probabilities(eligible: np.ndarray, k: int) -> np.ndarray:
    """A uniformly random order of the eligible offers: 1/m in each of the first min(k, m) slots."""
    m = eligible.sum(axis=1)
    per = np.where(eligible, 1.0 / np.maximum(m, 1)[:, None], 0.0)
    return per[:, :, None] * (np.arange(k)[None, :] < m[:, None])[:, None, :]


def score_slate_policy(score_fn: Callable[[pd.DataFrame, pd.DataFrame], np.ndarray]) -> SlatePolicyFn:
    def policy(profiles: pd.DataFrame, offers: pd.DataFrame, eligible: np.ndarray, k: int) -> np.ndarray:
        return ranked_slot_probabilities(np.asarray(score_fn(profiles, offers), dtype=float), eligible, k)
    return policy


def random_slate_policy(profiles: pd.DataFrame, offers: pd.DataFrame, eligible: np.ndarray, k: int) -> np.ndarray:
    return uniform_slot_probabilities(eligible, k)


# --- estimation ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SlateStrategy:
    name: str
    label: str
    kind: str
    policy: SlatePolicyFn | None  # None: the logged policy (observed clicks per decision)


@dataclass
class SlateEvaluation:
    placement_id: str
    items: int
    n: int
    table: pd.DataFrame            # strategy, label, kind, estimator, value, low, high, ess, n, warnings
    policies: dict[str, np.ndarray]  # strategy -> (n_profiles, n_offers, K)
    position_weights: np.ndarray   # theta_k of the DR reward model (observed / predicted clicks per slot)
    warnings: list[str] = field(default_factory=list)


def evaluate_slates(logged: LoggedSlates, strategies: Sequence[SlateStrategy], reward_model: np.ndarray | None,
                    n_bootstrap: int = 500, confidence: float = 0.95, seed: int = 0,
                    limits: WarningLimits = WarningLimits()) -> SlateEvaluation:
    """IIPS, per-slot SNIPS and slot-wise DR estimates of each strategy's expected clicks per
    decision over the K slots, with Poisson-bootstrap intervals over decisions.

    Args:
        logged: the placement's logged slates (every shown slot with its propensity).
        reward_model: (n_profiles, n_offers) click probabilities trained before the window, rows
            aligned with `logged.profiles`; None skips DR.
    """
    n, k = logged.n, logged.items
    warnings = [f"{count:,} {reason}" for reason, count in logged.dropped.items()]
    if n == 0:
        raise ValueError(f"placement {logged.placement_id!r}: no logged decisions with a propensity in every slot")
    shown = logged.action >= 0
    a = np.where(shown, logged.action, 0)
    rows = np.arange(n)[:, None]
    q_x = q_shown = theta = None
    if reward_model is not None:
        q_x = reward_model[logged.profile_row]                        # (n, m)
        q_shown = np.where(shown, q_x[rows, a], 0.0)                  # (n, K)
        theta = logged.reward.sum(axis=0) / np.maximum(q_shown.sum(axis=0), 1e-12)  # observed / predicted, per slot
    policies: dict[str, np.ndarray] = {}
    columns, ess, warns = [], [], []
    for strategy in strategies:
        strategy_columns, strategy_ess, strategy_warnings = _slate_terms(logged, strategy, q_x, q_shown, theta,
                                                                         policies, limits)
        columns.append(strategy_columns)
        ess.append(strategy_ess)
        warns.append(strategy_warnings)
    terms = np.concatenate(columns, axis=1)
    reps = poisson_bootstrap(terms, n_bootstrap, seed)
    table = _slate_table(strategies, ess, warns, terms.sum(axis=0), reps, n, k, confidence)
    return SlateEvaluation(logged.placement_id, k, n, pd.DataFrame(table), policies,
                           theta if theta is not None else np.full(k, np.nan), warnings)


def _slate_terms(logged: LoggedSlates, strategy: SlateStrategy, q_x: np.ndarray | None, q_shown: np.ndarray | None,
                 theta: np.ndarray | None, policies: dict[str, np.ndarray],
                 limits: WarningLimits) -> tuple[np.ndarray, float, list[str]]:
    """One strategy's per-decision terms (IIPS sum, DR sum, then per slot w, w*r and whether the
    strategy fills the slot: 2 + 3K columns), its smallest per-slot ESS and its warnings. Records
    the strategy's per-profile slot probabilities in `policies`."""
    n, k = logged.n, logged.items
    shown = logged.action >= 0
    a = np.where(shown, logged.action, 0)
    mu = np.where(shown, logged.propensity, 1.0)
    r = logged.reward
    rows = np.arange(n)[:, None]
    notes: list[str] = []
    if strategy.policy is None:
        w = shown.astype(float)
        dr = r.sum(axis=1)
        fill = w
    else:
        per_profile = strategy.policy(logged.profiles, logged.offers, logged.eligible, k)
        policies[strategy.name] = per_profile
        pi = per_profile[logged.profile_row]                      # (n, m, K)
        target = pi[rows, a, np.arange(k)[None, :]]               # (n, K): pi_k(a_ik)
        fill = pi.sum(axis=1)                                     # (n, K): the strategy fills slot k
        w = np.where(shown, target / mu, 0.0)
        if q_shown is not None:
            direct = (pi * q_x[:, :, None]).sum(axis=1) * theta   # (n, K)
            dr = (direct + w * (r - theta * q_shown)).sum(axis=1)
        else:
            dr = np.full(n, np.nan)
        missing = (pi.sum(axis=1) > 0) & ~shown                   # the strategy fills a slot the logger left empty
        notes = _slate_warnings(w, missing, n, limits)
        del pi
    ess = float(((w.sum(axis=0) ** 2) / np.maximum((w ** 2).sum(axis=0), 1e-300)).min())
    return np.column_stack([(w * r).sum(axis=1), dr, w, w * r, fill]), ess, notes  # 2 + 3K columns


def _slate_warnings(w: np.ndarray, missing: np.ndarray, n: int, limits: WarningLimits) -> list[str]:
    """Warnings on a strategy's slate estimate: a slot with a tiny effective sample, or slots the
    strategy fills that the logger left empty."""
    notes = []
    slot_ess = (w.sum(axis=0) ** 2) / np.maximum((w ** 2).sum(axis=0), 1e-300)
    if slot_ess.min() < max(limits.min_ess, limits.min_ess_share * n):
        notes.append(f"tiny effective sample size: {slot_ess.min():,.0f} of {n:,} decisions in slot "
                     f"{int(slot_ess.argmin()) + 1} (the strategy rarely agrees with what was logged there)")
    if missing.mean() > limits.unseen_mass:
        notes.append(f"{missing.mean():.1%} of slots the strategy fills were empty in the logged decision; "
                     "their clicks are missing from the estimate")
    return notes


def _slate_table(strategies: Sequence[SlateStrategy], ess: Sequence[float], warns: Sequence[list[str]],
                 totals: np.ndarray, reps: np.ndarray, n: int, k: int, confidence: float) -> list[dict]:
    """The rows of `SlateEvaluation.table`: per strategy and estimator, the value clipped to [0, K]
    and its bootstrap interval, from the terms' totals and resampled sums (column 0: count)."""
    width = 2 + 3 * k
    tail = (1 - confidence) / 2
    table = []
    for s, strategy in enumerate(strategies):
        base = s * width
        w_sum, wr_sum, fill_sum = (totals[base + 2 + j * k: base + 2 + (j + 1) * k] for j in range(3))
        rep_w, rep_wr, rep_fill = (reps[:, 1 + base + 2 + j * k: 1 + base + 2 + (j + 1) * k] for j in range(3))
        # per slot: the weighted click rate where the strategy fills the slot, times how often it does
        with np.errstate(divide="ignore", invalid="ignore"):
            values = {"ips": (totals[base] / n, reps[:, 1 + base] / reps[:, 0]),
                      "snips": (float(np.nansum(wr_sum / w_sum * fill_sum / n)),
                                np.nansum(rep_wr / rep_w * rep_fill / reps[:, :1], axis=1)),
                      "dr": (totals[base + 1] / n, reps[:, 1 + base + 1] / reps[:, 0])}
        for estimator, (value, rep) in values.items():
            rep = rep[np.isfinite(rep)]
            if not np.isfinite(value) or not len(rep):
                continue
            # expected clicks per decision lie in [0, K]: a DR estimate below 0 is clipped, as its interval
            value = float(np.clip(value, 0, k))
            low, high = np.clip(np.quantile(rep, [tail, 1 - tail]), 0, k)
            table.append({"strategy": strategy.name, "label": strategy.label, "kind": strategy.kind,
                          "estimator": estimator, "value": value, "low": float(min(low, value)),
                          "high": float(max(high, value)), "ess": ess[s], "n": n, "warnings": warns[s]})
    return table
