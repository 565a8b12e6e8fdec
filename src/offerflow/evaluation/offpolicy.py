"""Off-policy evaluation: what click rate would another ranking strategy have achieved on the
traffic we logged, estimated from displays that carry the logging propensity.

What is evaluated here: the FIRST item of each slate. Per (decision, placement) we take the rank-1
display (the event id's trailing `-<rank>`, else the one that carries a propensity) and its reward,
a click on that offer in the same decision. Whole slates: `offerflow.evaluation.slates`. A target strategy is a probability vector over the
placement's offers eligible for that profile: the chance it would have put each offer first. The
estimand is the strategy's first-item click rate on the logged contexts of the evaluation window.

Estimators (x = logged context, a = logged offer, p = its logging propensity, r = click,
w = pi(a|x) / p, q = a reward model's click probability):
- IPS:  mean(w r)                         unbiased if p is right and p > 0 wherever pi > 0;
- SNIPS: sum(w r) / sum(w)                slightly biased, much lower variance;
- DR:   mean(sum_b pi(b|x) q(x,b) + w (r - q(x,a)))   unbiased if either p or q is right.
Click rates are bounded, so estimates and intervals are too: every estimate is clipped to [0, 1]
and its interval is a Clopper-Pearson interval on an effective sample (Korn & Graubard 1998):
n_eff = v (1 - v) / Var(v) from the estimator's linearized variance (at most the number of
displays), successes v n_eff. It stays inside [0, 1], reduces to the exact binomial interval for
the logged policy, and is not [0, 0] when no click was seen (then n_eff is the Kish effective
sample size of the weights). Paired Poisson-bootstrap resamples over displays give the intervals
for the lift of one strategy over another. The reward model and every learned target strategy are
trained only on events before the evaluation window.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import duckdb
import numpy as np
import pandas as pd

from offerflow.core.features import EVENTS_VIEW, query_frame
from offerflow.ranking.click_model import eligibility_matrix
from offerflow.core.schema import PROFILE_ID

ESTIMATORS = ("ips", "snips", "dr")
FIRST_ITEM_NOTE = ("Estimates are for the first item of each slate: the offer a strategy would put "
                   "in rank 1, and whether the profile clicked it.")

#: A target policy: (profiles, offers, eligible[n_profiles, n_offers]) -> probabilities, same shape,
#: each row summing to 1 over the eligible offers (0 where nothing is eligible).
PolicyFn = Callable[[pd.DataFrame, pd.DataFrame, np.ndarray], np.ndarray]


@dataclass
class LoggedDisplays:
    """The first-item displays of one placement in the evaluation window, as columns.

    `profiles` holds each profile once; `profile_row[i]` points display i at its profile and
    `action[i]` at its offer in `offers` (-1 if the offer is not in the placement's catalog).
    """

    placement_id: str
    start: datetime
    end: datetime
    profiles: pd.DataFrame
    offers: pd.DataFrame
    eligible: np.ndarray        # (n_profiles, n_offers) bool, current attributes
    profile_row: np.ndarray     # (n,) int
    action: np.ndarray          # (n,) int
    propensity: np.ndarray      # (n,) float, NaN if missing
    reward: np.ndarray          # (n,) float 0/1
    day: np.ndarray             # (n,) datetime64[D]
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> displays not usable

    @property
    def n(self) -> int:
        return len(self.reward)


def load_logged_displays(con: duckdb.DuckDBPyConnection, placement_id: str, start: datetime, end: datetime,
                         profiles: pd.DataFrame, offers: pd.DataFrame,
                         success_event: str = "click") -> LoggedDisplays:
    """First-item displays of `placement_id` in [start, end) with their reward, from the events view.

    `offers` are the placement's offers (fallback included). Displays without a usable propensity,
    of unknown profiles or of offers outside the catalog are dropped and counted in `dropped`.
    """
    sql = f"""
        WITH d AS (
            SELECT profile_id, offer_id, propensity, timestamp, COALESCE(decision_id, event_id) AS decision_key,
                   decision_id,
                   row_number() OVER (PARTITION BY COALESCE(decision_id, event_id)
                                      ORDER BY (propensity IS NULL),
                                               TRY_CAST(regexp_extract(event_id, '-([0-9]+)$', 1) AS INTEGER)
                                               NULLS LAST, event_id) AS slot
            FROM {EVENTS_VIEW}
            WHERE event_type = 'display' AND placement_id = ? AND timestamp >= ? AND timestamp < ?),
        s AS (SELECT DISTINCT decision_id, offer_id FROM {EVENTS_VIEW}
              WHERE event_type = ? AND decision_id IS NOT NULL)
        SELECT d.profile_id, d.offer_id, d.propensity, CAST(d.timestamp AS DATE) AS day,
               (s.decision_id IS NOT NULL)::DOUBLE AS reward
        FROM d LEFT JOIN s ON d.decision_id = s.decision_id AND d.offer_id = s.offer_id
        WHERE d.slot = 1
        ORDER BY d.timestamp, d.profile_id"""
    log = query_frame(con, sql, [placement_id, start, end, success_event])
    dropped: dict[str, int] = {}
    p = log["propensity"].to_numpy(float)
    bad_p = ~np.isfinite(p) | (p <= 0) | (p > 1)
    if bad_p.any():
        dropped["propensity missing or outside (0, 1]"] = int(bad_p.sum())
    known_offer = log["offer_id"].isin(offers["offer_id"]).to_numpy()
    if (~known_offer & ~bad_p).any():
        dropped["offer not in the placement's catalog"] = int((~known_offer & ~bad_p).sum())
    known_profile = log[PROFILE_ID].isin(profiles[PROFILE_ID]).to_numpy()
    if (~known_profile & known_offer & ~bad_p).any():
        dropped["unknown profile"] = int((~known_profile & known_offer & ~bad_p).sum())
    log = log[~bad_p & known_offer & known_profile].reset_index(drop=True)
    ids = pd.Index(log[PROFILE_ID].unique())
    window_profiles = profiles.set_index(PROFILE_ID).loc[ids].reset_index()
    offers = offers.reset_index(drop=True)
    return LoggedDisplays(
        placement_id=placement_id, start=start, end=end, profiles=window_profiles, offers=offers,
        eligible=placement_eligibility(window_profiles, offers),
        profile_row=ids.get_indexer(log[PROFILE_ID]).astype(np.int64),
        action=pd.Index(offers["offer_id"]).get_indexer(log["offer_id"]).astype(np.int64),
        propensity=log["propensity"].to_numpy(float), reward=log["reward"].to_numpy(float),
        day=pd.to_datetime(log["day"]).to_numpy().astype("datetime64[D]"), dropped=dropped)


def placement_eligibility(profiles: pd.DataFrame, offers: pd.DataFrame) -> np.ndarray:
    """Eligibility as the decision engine applies it: a fallback offer only when no regular one is."""
    if len(profiles) == 0:
        return np.zeros((0, len(offers)), dtype=bool)
    eligible = eligibility_matrix(profiles, offers)
    if "fallback" in offers:
        fallback = offers["fallback"].fillna(False).to_numpy(bool)
        if fallback.any():
            none_regular = ~eligible[:, ~fallback].any(axis=1)
            eligible[:, fallback] = eligible[:, fallback] & none_regular[:, None]
    return eligible


# --- target policies --------------------------------------------------------------------------

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
                    draws: int = 4000) -> PolicyFn:
    """Auto-optimization as served: the Thompson first-choice probability of each offer, computed
    once per distinct eligible set (offers without a posterior are never qualified)."""
    from offerflow.ranking.bandits import first_choice_probability

    def policy(profiles: pd.DataFrame, offers: pd.DataFrame, eligible: np.ndarray) -> np.ndarray:
        post = offers[["offer_id"]].merge(posteriors, on="offer_id", how="left")
        alpha = post["alpha"].fillna(1.0).to_numpy(float)
        beta = post["beta"].fillna(1.0).to_numpy(float)
        qualified = post["qualified"].fillna(False).to_numpy(bool)
        sets, inverse = np.unique(eligible, axis=0, return_inverse=True)
        rng = np.random.default_rng(seed)
        per_set = np.stack([first_choice_probability(alpha, beta, qualified, row, exploration_share, rng, draws)
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


# --- estimation -------------------------------------------------------------------------------

@dataclass
class Evaluation:
    """Estimates for every strategy x estimator on one placement, plus their bootstrap replicates."""

    placement_id: str
    n: int
    table: pd.DataFrame  # strategy, label, kind, estimator, value, raw, low, high, ess, n, clicks, effective_clicks, warnings
    replicates: dict[tuple[str, str], np.ndarray]  # (strategy, estimator) -> (B,)
    policies: dict[str, np.ndarray]      # strategy -> (n_profiles, n_offers) target probabilities
    confidence: float
    warnings: list[str] = field(default_factory=list)  # about the placement's data as a whole
    slates: object | None = None   # `slates.SlateEvaluation` for multi-item placements with per-slot logs
    slate_note: str | None = None  # why there is no slate estimate
    clicks: int = 0                # clicked first-item displays in the window
    start: datetime | None = None  # the evaluation window [start, end)
    end: datetime | None = None
    #: why the strategies cannot be ranked on this window (too few clicks), else None
    too_few: str | None = None

    def estimate(self, strategy: str, estimator: str) -> pd.Series:
        rows = self.table[(self.table["strategy"] == strategy) & (self.table["estimator"] == estimator)]
        if rows.empty:
            raise KeyError(f"no estimate for strategy {strategy!r} with estimator {estimator!r}")
        return rows.iloc[0]

    def lift(self, candidate: str, baseline: str, estimator: str = "dr") -> dict[str, float]:
        """(candidate - baseline) / baseline with a paired bootstrap interval."""
        c, b = self.estimate(candidate, estimator), self.estimate(baseline, estimator)
        rc, rb = (np.clip(self.replicates[(s, estimator)], 0.0, 1.0) for s in (candidate, baseline))
        with np.errstate(divide="ignore", invalid="ignore"):
            reps = (rc - rb) / rb
        reps = reps[np.isfinite(reps)]
        tail = (1 - self.confidence) / 2
        value = (c["value"] - b["value"]) / b["value"] if b["value"] > 0 else float("nan")
        low, high = (np.quantile(reps, [tail, 1 - tail]) if len(reps) else (np.nan, np.nan))
        return {"lift": float(value), "low": float(low), "high": float(high), "candidate": float(c["value"]),
                "baseline": float(b["value"]), "n": float(self.n)}


@dataclass(frozen=True)
class WarningLimits:
    min_ess: float = 200.0            # effective sample size below this: estimate not trusted
    min_ess_share: float = 0.01       # ... or below this share of the displays
    min_propensity: float = 0.01      # logging propensities below this are "near zero"
    unseen_mass: float = 0.01         # target mass on offers never logged above this share
    min_clicks: int = 30              # fewer clicks (in the window, or carrying an estimate): not rankable


def expected_value(policy: np.ndarray, click_probability: np.ndarray) -> np.ndarray:
    """Per display, the click probability of the strategy's first item: sum_b pi(b|x) q(x,b)."""
    return (policy * click_probability).sum(axis=1)


def effective_count(x: np.ndarray) -> float:
    """Kish's effective number of non-zero terms, (sum x)^2 / sum x^2 (0 when all are 0)."""
    squares = float((x ** 2).sum())
    return float(x.sum() ** 2 / squares) if squares > 0 else 0.0


def _clicks_warning(effective_clicks: float, limits: WarningLimits) -> list[str]:
    if effective_clicks >= limits.min_clicks:
        return []
    return [f"few clicks: the estimate rests on about {effective_clicks:,.1f} clicks (effective; fewer than "
            f"{limits.min_clicks}), too few to rank it against other strategies"]


def _warnings(logged: LoggedDisplays, strategy: Strategy, policy: np.ndarray, w: np.ndarray, ess: float,
              limits: WarningLimits) -> list[str]:
    out = []
    n = logged.n
    if ess < max(limits.min_ess, limits.min_ess_share * n):
        out.append(f"tiny effective sample size: {ess:,.0f} of {n:,} displays (the strategy rarely agrees "
                   "with what was logged; the interval is wide and may miss)")
    shown = np.bincount(logged.action, minlength=len(logged.offers)) > 0
    unseen_mass = float(policy[:, ~shown].sum() / max(n, 1))
    if unseen_mass > limits.unseen_mass:
        names = ", ".join(logged.offers["offer_id"].to_numpy()[~shown & (policy.sum(axis=0) > 0)][:5])
        out.append(f"{unseen_mass:.1%} of the strategy's choices are offers the logger never showed in the "
                   f"window ({names}); IPS cannot see their clicks and underestimates")
    near_zero = logged.propensity < limits.min_propensity
    if near_zero.any() and float(w[near_zero].sum()) > 0.1 * float(w.sum()):
        out.append(f"{int(near_zero.sum()):,} displays with logging propensity below {limits.min_propensity:g} "
                   "carry over 10% of the weight; the estimate leans on a few displays")
    return out


def bounded_interval(value: np.ndarray, variance: np.ndarray, ess: np.ndarray, n: int,
                     confidence: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Click-rate estimates clipped to [0, 1] and Clopper-Pearson intervals on an effective sample.

    Korn & Graubard (1998), for proportions estimated from weighted samples: n_eff = v (1 - v) /
    variance (at most `n`), successes x = v n_eff, interval = Beta quantiles of (x, n_eff - x + 1)
    and (x + 1, n_eff - x). Where v is 0 or 1 (no click carried any weight, or a clipped
    estimate) or the variance is 0, n_eff is `ess`, the Kish effective sample size of the weights:
    0 clicks in 1,000 effective displays gives [0, 0.37%], not [0, 0]. Fewer than one effective
    display gives [0, 1].

    Args: arrays of one shape (estimates, their linearized variances, effective sample sizes).
    Returns: (clipped value, low, high), each of that shape.
    """
    from scipy.special import betaincinv  # scipy comes with LightGBM; scipy.stats takes seconds to import

    v = np.clip(np.nan_to_num(np.asarray(value, dtype=float), nan=0.0), 0.0, 1.0)
    variance = np.asarray(variance, dtype=float)
    ess = np.nan_to_num(np.asarray(ess, dtype=float), nan=0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        from_variance = v * (1 - v) / variance
    usable = (v > 0) & (v < 1) & np.isfinite(from_variance) & (from_variance > 0)
    n_eff = np.minimum(np.where(usable, from_variance, ess), n)
    ok = n_eff >= 1
    n_eff = np.where(ok, n_eff, 1.0)
    x = v * n_eff
    tail = (1 - confidence) / 2
    with np.errstate(invalid="ignore"):
        low = np.where(ok & (x > 0), betaincinv(np.maximum(x, 1e-12), n_eff - x + 1, tail), 0.0)
        high = np.where(ok & (x < n_eff), betaincinv(x + 1, np.maximum(n_eff - x, 1e-12), 1 - tail), 1.0)
    return v, np.clip(np.nan_to_num(low), 0.0, v), np.clip(np.nan_to_num(high, nan=1.0), v, 1.0)


#: Pseudo-clicks of the prior on an estimate's variance (see `_shrunk_variances`).
VARIANCE_PRIOR_CLICKS = 2.0


def _shrunk_variances(estimates: dict[str, tuple[float, float]], ess: float,
                      effective_clicks: float) -> dict[str, float]:
    """Each estimator's linearized variance, shrunk towards v (1 - v) / ESS (the variance if clicks
    fell independently of the weights) with the weight of VARIANCE_PRIOR_CLICKS clicks: with few
    clicks the linearized variance is itself noisy and too small whenever the clicks happened to
    land on low-weight displays (95% intervals of a deterministic strategy at ~17 effective clicks
    covered 93% without, 96% with; see docs/evaluation.md). Equal for the logged policy."""
    share = VARIANCE_PRIOR_CLICKS / (VARIANCE_PRIOR_CLICKS + effective_clicks)
    out = {}
    for estimator, (value, variance) in estimates.items():
        v = min(max(value, 0.0), 1.0) if np.isfinite(value) else np.nan
        independent = v * (1 - v) / ess if ess > 0 else np.nan
        out[estimator] = float((1 - share) * variance + share * independent) if np.isfinite(independent) else variance
    return out


def evaluate(logged: LoggedDisplays, strategies: Sequence[Strategy], reward_model: np.ndarray | None,
             n_bootstrap: int = 500, confidence: float = 0.95, seed: int = 0,
             limits: WarningLimits = WarningLimits()) -> Evaluation:
    """IPS, SNIPS and DR estimates of each strategy's first-item click rate, with intervals.

    Every estimate is clipped to [0, 1] (`raw` keeps the unclipped one) and its interval is
    `bounded_interval` of the estimator's linearized variance. Warns, per placement, when the
    window holds fewer than `limits.min_clicks` clicks, and per strategy when fewer effective
    clicks carry its estimate (`Evaluation.too_few` then blocks any switch).

    Args:
        logged: the placement's first-item displays in the evaluation window.
        strategies: candidates; a strategy with `policy=None` is the logged policy (mean reward).
        reward_model: (n_profiles, n_offers) click probabilities from a model trained before the
            window, rows aligned with `logged.profiles`; None skips DR.
    """
    n, m = logged.n, len(logged.offers)
    placement_warnings = [f"{count:,} displays dropped: {reason}" for reason, count in logged.dropped.items()]
    if n == 0:
        raise ValueError(f"placement {logged.placement_id!r}: no usable logged displays between "
                         f"{logged.start:%Y-%m-%d} and {logged.end:%Y-%m-%d}")
    p, r = logged.propensity, logged.reward
    clicks = int(r.sum())
    too_few = None
    if clicks < limits.min_clicks:
        too_few = (f"only {clicks:,} clicks in {n:,} displays of the window: too few to rank strategies (at least "
                   f"{limits.min_clicks} needed); the estimates are shown with their intervals, no strategy is "
                   "switched")
        placement_warnings.insert(0, too_few)
    if (p < limits.min_propensity).any():
        placement_warnings.append(f"{int((p < limits.min_propensity).sum()):,} of {n:,} displays have a logging "
                                  f"propensity below {limits.min_propensity:g}")
    rows = np.arange(n)
    q = reward_model[logged.profile_row] if reward_model is not None else None
    # Per display and strategy, the terms whose (resampled) sums give every estimator.
    policies: dict[str, np.ndarray] = {}
    ess: list[float] = []
    effective_clicks: list[float] = []
    variances: list[dict[str, float]] = []
    warns: list[list[str]] = []
    columns: list[np.ndarray] = []  # per strategy: w, w*r and the DR term per display
    for strategy in strategies:
        if strategy.policy is None:  # the logged policy: every weight is 1, every estimator the mean
            w, dr_term = np.ones(n), r.copy()
            warns.append([])
        else:
            per_profile = strategy.policy(logged.profiles, logged.offers, logged.eligible)
            policies[strategy.name] = per_profile
            policy = per_profile[logged.profile_row]
            w = policy[rows, logged.action] / p
            dr_term = (expected_value(policy, q) + w * (r - q[rows, logged.action])) if q is not None \
                else np.full(n, np.nan)
        ess.append(effective_count(w))
        effective_clicks.append(effective_count(w * r))
        w_sum = float(w.sum())
        snips = float((w * r).sum() / w_sum) if w_sum > 0 else np.nan
        variances.append(_shrunk_variances(
            {"ips": (float((w * r).mean()), float((w * r).var() / n)),
             "snips": (snips, float(((w * (r - snips)) ** 2).sum() / w_sum ** 2) if w_sum > 0 else np.nan),
             "dr": (float(dr_term.mean()), float(dr_term.var() / n))}, ess[-1], effective_clicks[-1]))
        if strategy.policy is not None:
            warns.append(_warnings(logged, strategy, policy, w, ess[-1], limits))
            del policy
        warns[-1] += _clicks_warning(effective_clicks[-1], limits) if too_few is None else []
        columns.append(np.stack([w, w * r, dr_term], axis=1))
    terms = np.concatenate(columns, axis=1)  # (n, 3 S)
    del columns
    totals = np.concatenate([[n], terms.sum(axis=0)])
    reps = _poisson_bootstrap(terms, n_bootstrap, seed)  # (B, 1 + 3 S): resampled n and sums
    table, replicates = [], {}
    for s, strategy in enumerate(strategies):
        i = 1 + 3 * s
        w_sum, wr_sum, dr_sum = totals[i], totals[i + 1], totals[i + 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            values = {"ips": (wr_sum / n, reps[:, i + 1] / reps[:, 0]),
                      "snips": (wr_sum / w_sum, reps[:, i + 1] / reps[:, i]),
                      "dr": (dr_sum / n, reps[:, i + 2] / reps[:, 0])}
        for estimator, (raw, rep) in values.items():
            if not np.isfinite(raw):
                continue
            replicates[(strategy.name, estimator)] = rep
            value, low, high = bounded_interval(np.array(raw), np.array(variances[s][estimator]), np.array(ess[s]),
                                                n, confidence)
            table.append({"strategy": strategy.name, "label": strategy.label, "kind": strategy.kind,
                          "estimator": estimator, "value": float(value), "raw": float(raw), "low": float(low),
                          "high": float(high), "ess": ess[s], "n": n, "clicks": clicks,
                          "effective_clicks": effective_clicks[s], "offers_personalized": strategy.offers_personalized,
                          "warnings": warns[s]})
    return Evaluation(logged.placement_id, n, pd.DataFrame(table), replicates, policies, confidence,
                      placement_warnings, clicks=clicks, start=logged.start, end=logged.end, too_few=too_few)


def _poisson_bootstrap(terms: np.ndarray, n_bootstrap: int, seed: int, chunk: int = 50) -> np.ndarray:
    """Resampled (count, column sums) with Poisson(1) display weights: B x (1 + columns).

    Poisson weights approximate the multinomial bootstrap and batch as one matrix product."""
    rng = np.random.default_rng(seed)
    filled = np.nan_to_num(terms)
    out = np.empty((n_bootstrap, 1 + terms.shape[1]))
    for start in range(0, n_bootstrap, chunk):
        size = min(chunk, n_bootstrap - start)
        counts = rng.poisson(1.0, size=(size, len(terms))).astype(np.float64)
        out[start:start + size, 0] = counts.sum(axis=1)
        out[start:start + size, 1:] = counts @ filled
    out[:, 1:][:, np.isnan(terms).any(axis=0)] = np.nan
    return out


# --- serving decision ---------------------------------------------------------------------------

@dataclass(frozen=True)
class ServingDecision:
    serve_candidate: bool
    reason: str
    evidence: Mapping[str, float]
    candidate: str | None = None   # the best-estimated servable strategy
    current: str | None = None     # the strategy the placement serves now


def serving_decision(candidate: str, current: str, lift: Mapping[str, float], min_lift: float = 0.0,
                     warnings: Sequence[str] = ()) -> ServingDecision:
    """Serve the candidate only when the lower end of its lift interval over the current strategy
    is above `min_lift` and its estimate carries no warning (a warned estimate is not evidence)."""
    low, value = lift.get("low", float("nan")), lift.get("lift", float("nan"))
    evidence = dict(lift)
    if candidate == current:
        return ServingDecision(False, f"{candidate} is already the current strategy", evidence, candidate, current)
    if warnings:
        return ServingDecision(False, f"estimate for {candidate} is not trusted: {warnings[0]}", evidence, candidate,
                               current)
    if not (np.isfinite(low) and np.isfinite(value)):
        return ServingDecision(False, f"no finite lift interval for {candidate} over {current}", evidence, candidate,
                               current)
    if low > min_lift:
        return ServingDecision(True, f"{candidate} beats {current}: lift {lift['lift']:+.1%}, interval lower end "
                                     f"{low:+.1%} > {min_lift:+.1%}", evidence, candidate, current)
    return ServingDecision(False, f"{candidate} not proven better than {current}: lift {lift['lift']:+.1%}, "
                                  f"interval lower end {low:+.1%} <= {min_lift:+.1%}", evidence, candidate,
                           current)
