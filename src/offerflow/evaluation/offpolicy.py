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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pandas as pd

from offerflow.evaluation.intervals import bounded_interval, effective_count, poisson_bootstrap, shrunk_variances
from offerflow.evaluation.logged_displays import LoggedDisplays
from offerflow.evaluation.policies import Strategy

ESTIMATORS = ("ips", "snips", "dr")
FIRST_ITEM_NOTE = ("Estimates are for the first item of each slate: the offer a strategy would put "
                   "in rank 1, and whether the profile clicked it.")


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
    n = logged.n
    placement_warnings, clicks, too_few = _window_checks(logged, limits)
    q = reward_model[logged.profile_row] if reward_model is not None else None
    # Per display and strategy, the terms whose (resampled) sums give every estimator.
    policies: dict[str, np.ndarray] = {}
    stats: list[_StrategyStats] = []
    columns: list[np.ndarray] = []  # per strategy: w, w*r and the DR term per display
    for strategy in strategies:
        strategy_columns, strategy_stats = _strategy_terms(logged, strategy, q, policies, limits, too_few is None)
        columns.append(strategy_columns)
        stats.append(strategy_stats)
    terms = np.concatenate(columns, axis=1)  # (n, 3 S)
    del columns
    totals = np.concatenate([[n], terms.sum(axis=0)])
    reps = poisson_bootstrap(terms, n_bootstrap, seed)  # (B, 1 + 3 S): resampled n and sums
    table, replicates = _estimate_table(strategies, stats, totals, reps, n, clicks, confidence)
    return Evaluation(logged.placement_id, n, pd.DataFrame(table), replicates, policies, confidence,
                      placement_warnings, clicks=clicks, start=logged.start, end=logged.end, too_few=too_few)


@dataclass(frozen=True)
class _StrategyStats:
    """What one strategy's estimates need besides the resampled sums."""

    ess: float
    effective_clicks: float
    variances: dict[str, float]  # estimator -> shrunk linearized variance
    warnings: list[str]


def _window_checks(logged: LoggedDisplays, limits: WarningLimits) -> tuple[list[str], int, str | None]:
    """The placement's warnings, its clicks and why strategies cannot be ranked (None: they can);
    raises ValueError when the window holds no usable display."""
    n, p = logged.n, logged.propensity
    placement_warnings = [f"{count:,} displays dropped: {reason}" for reason, count in logged.dropped.items()]
    if n == 0:
        raise ValueError(f"placement {logged.placement_id!r}: no usable logged displays between "
                         f"{logged.start:%Y-%m-%d} and {logged.end:%Y-%m-%d}")
    clicks = int(logged.reward.sum())
    too_few = None
    if clicks < limits.min_clicks:
        too_few = (f"only {clicks:,} clicks in {n:,} displays of the window: too few to rank strategies (at least "
                   f"{limits.min_clicks} needed); the estimates are shown with their intervals, no strategy is "
                   "switched")
        placement_warnings.insert(0, too_few)
    if (p < limits.min_propensity).any():
        placement_warnings.append(f"{int((p < limits.min_propensity).sum()):,} of {n:,} displays have a logging "
                                  f"propensity below {limits.min_propensity:g}")
    return placement_warnings, clicks, too_few


def _strategy_terms(logged: LoggedDisplays, strategy: Strategy, q: np.ndarray | None,
                    policies: dict[str, np.ndarray], limits: WarningLimits,
                    warn_few_clicks: bool) -> tuple[np.ndarray, _StrategyStats]:
    """One strategy's per-display terms (w, w*r, the DR term; shape (n, 3)) and their statistics.
    Records the strategy's per-profile target probabilities in `policies`."""
    n, p, r = logged.n, logged.propensity, logged.reward
    rows = np.arange(n)
    warnings: list[str] = []
    if strategy.policy is None:  # the logged policy: every weight is 1, every estimator the mean
        w, dr_term = np.ones(n), r.copy()
    else:
        per_profile = strategy.policy(logged.profiles, logged.offers, logged.eligible)
        policies[strategy.name] = per_profile
        policy = per_profile[logged.profile_row]
        w = policy[rows, logged.action] / p
        dr_term = (expected_value(policy, q) + w * (r - q[rows, logged.action])) if q is not None \
            else np.full(n, np.nan)
    ess = effective_count(w)
    effective_clicks = effective_count(w * r)
    w_sum = float(w.sum())
    snips = float((w * r).sum() / w_sum) if w_sum > 0 else np.nan
    variances = shrunk_variances(
        {"ips": (float((w * r).mean()), float((w * r).var() / n)),
         "snips": (snips, float(((w * (r - snips)) ** 2).sum() / w_sum ** 2) if w_sum > 0 else np.nan),
         "dr": (float(dr_term.mean()), float(dr_term.var() / n))}, ess, effective_clicks)
    if strategy.policy is not None:
        warnings = _warnings(logged, strategy, policy, w, ess, limits)
        del policy
    warnings += _clicks_warning(effective_clicks, limits) if warn_few_clicks else []
    return np.stack([w, w * r, dr_term], axis=1), _StrategyStats(ess, effective_clicks, variances, warnings)


def _estimate_table(strategies: Sequence[Strategy], stats: Sequence[_StrategyStats], totals: np.ndarray,
                    reps: np.ndarray, n: int, clicks: int,
                    confidence: float) -> tuple[list[dict], dict[tuple[str, str], np.ndarray]]:
    """The rows of `Evaluation.table` and the bootstrap replicates, from the terms' totals and
    their resampled sums (column 0: count; then w, w*r, DR term per strategy)."""
    table, replicates = [], {}
    for s, (strategy, stat) in enumerate(zip(strategies, stats)):
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
            value, low, high = bounded_interval(np.array(raw), np.array(stat.variances[estimator]),
                                                np.array(stat.ess), n, confidence)
            table.append({"strategy": strategy.name, "label": strategy.label, "kind": strategy.kind,
                          "estimator": estimator, "value": float(value), "raw": float(raw), "low": float(low),
                          "high": float(high), "ess": stat.ess, "n": n, "clicks": clicks,
                          "effective_clicks": stat.effective_clicks,
                          "offers_personalized": strategy.offers_personalized, "warnings": stat.warnings})
    return table, replicates


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
