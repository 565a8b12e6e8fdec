"""Off-policy estimators, warnings, the serving rule and the holdout statistics, on synthetic
logs whose true values are known exactly."""

from __future__ import annotations

import math
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest

from offerflow.evaluation.holdout import lift_table, two_proportion
from offerflow.evaluation.logged_displays import LoggedDisplays
from offerflow.evaluation.offpolicy import WarningLimits, evaluate, serving_decision
from offerflow.evaluation.policies import Strategy, argmax_policy, softmax_policy, uniform_policy

N_TYPES, N_OFFERS = 6, 5


def synthetic_log(n: int, seed: int, never_logged: int | None = None) -> tuple[LoggedDisplays, np.ndarray]:
    """Profiles of a few types, a logger that prefers low offer ids; returns the log and the true
    click probability per (profile, offer)."""
    rng = np.random.default_rng(seed)
    n_profiles = 2000
    kind = rng.integers(0, N_TYPES, n_profiles)
    q_type = rng.uniform(0.02, 0.3, size=(N_TYPES, N_OFFERS))
    q = q_type[kind]
    eligible = np.ones((n_profiles, N_OFFERS), dtype=bool)
    eligible[kind == 0, 3] = False
    logging = 0.3 * uniform_policy(eligible) + 0.7 * softmax_policy(-np.arange(N_OFFERS)[None, :] * 0.5 +
                                                                     np.zeros((n_profiles, 1)), eligible, 1.0)
    if never_logged is not None:
        logging[:, never_logged] = 0
        logging /= logging.sum(axis=1, keepdims=True)
    row = rng.integers(0, n_profiles, n)
    cdf = np.cumsum(logging[row], axis=1)
    action = np.minimum((cdf < rng.random((n, 1))).sum(axis=1), N_OFFERS - 1)
    reward = (rng.random(n) < q[row, action]).astype(float)
    profiles = pd.DataFrame({"profile_id": [f"p{i}" for i in range(n_profiles)], "kind": kind})
    offers = pd.DataFrame({"offer_id": [f"o{j}" for j in range(N_OFFERS)], "fallback": False,
                           "priority": np.arange(N_OFFERS)[::-1]})
    t = datetime(2026, 1, 1, tzinfo=timezone.utc)
    logged = LoggedDisplays("web-banner", t, t, profiles, offers, eligible, row, action,
                            logging[row, action], reward, np.full(n, np.datetime64("2026-01-01", "D")))
    return logged, q


def strategies(q: np.ndarray) -> list[Strategy]:
    best = Strategy("best", "best", "formula", lambda p, o, e: argmax_policy(q, e))
    worst = Strategy("worst", "worst", "formula", lambda p, o, e: argmax_policy(-q, e))
    rand = Strategy("random", "random", "random", lambda p, o, e: uniform_policy(e))
    return [Strategy("logged", "logged", "logged", None), rand, best, worst]


def truth(logged: LoggedDisplays, evaluation, name: str, q: np.ndarray) -> float:
    return float((evaluation.policies[name] * q).sum(axis=1)[logged.profile_row].mean())


def test_estimates_cover_the_true_value_and_rank_strategies() -> None:
    covered, total = 0, 0
    for seed in range(5):
        logged, q = synthetic_log(30_000, seed)
        noisy = np.clip(q + np.random.default_rng(seed).normal(0, 0.03, q.shape), 0.001, 0.999)
        result = evaluate(logged, strategies(q), noisy, n_bootstrap=300, seed=seed)
        for name in ("random", "best", "worst"):
            true = truth(logged, result, name, q)
            for estimator in ("ips", "snips", "dr"):
                row = result.estimate(name, estimator)
                covered += row["low"] <= true <= row["high"]
                total += 1
        assert result.estimate("best", "dr")["low"] > result.estimate("worst", "dr")["high"]
        # the logged policy's estimate is its observed click rate
        assert result.estimate("logged", "ips")["value"] == pytest.approx(logged.reward.mean())
    assert covered / total >= 0.85, f"covered {covered} of {total}"


def test_dr_with_a_perfect_reward_model_is_tighter_than_ips() -> None:
    logged, q = synthetic_log(20_000, 3)
    result = evaluate(logged, strategies(q), q, n_bootstrap=300)
    ips, dr = result.estimate("best", "ips"), result.estimate("best", "dr")
    assert dr["high"] - dr["low"] < ips["high"] - ips["low"]


def test_ess_is_n_for_the_logged_policy_and_small_for_a_rarely_logged_choice() -> None:
    logged, q = synthetic_log(10_000, 1)
    last = Strategy("last", "always the last offer", "formula",
                    lambda p, o, e: argmax_policy(np.tile(np.arange(N_OFFERS, dtype=float), (len(p), 1)), e))
    result = evaluate(logged, [Strategy("logged", "logged", "logged", None), last], q, n_bootstrap=100)
    assert result.estimate("logged", "ips")["ess"] == pytest.approx(logged.n)
    ess = result.estimate("last", "ips")["ess"]
    assert ess < 0.15 * logged.n
    strict = evaluate(logged, [last], q, n_bootstrap=100,
                      limits=WarningLimits(min_ess=ess + 1))
    assert any("tiny effective sample size" in w for w in strict.estimate("last", "ips")["warnings"])


def test_warns_when_the_strategy_picks_offers_never_logged() -> None:
    logged, q = synthetic_log(10_000, 2, never_logged=4)
    only_four = Strategy("four", "o4 first", "formula",
                         lambda p, o, e: argmax_policy(np.tile(np.eye(N_OFFERS)[4], (len(p), 1)), e))
    result = evaluate(logged, [only_four], q, n_bootstrap=100)
    warnings = result.estimate("four", "ips")["warnings"]
    assert any("never showed" in w and "o4" in w for w in warnings)
    # IPS sees none of o4's clicks, so it reports ~0 although the truth is positive
    assert result.estimate("four", "ips")["value"] < 0.5 * truth(logged, result, "four", q)


def test_no_usable_displays_is_a_clear_error() -> None:
    logged, q = synthetic_log(10, 0)
    empty = LoggedDisplays("email-hero", logged.start, logged.end, logged.profiles, logged.offers, logged.eligible,
                           logged.profile_row[:0], logged.action[:0], logged.propensity[:0], logged.reward[:0],
                           logged.day[:0], {"propensity missing or outside (0, 1]": 10})
    with pytest.raises(ValueError, match="no usable logged displays"):
        evaluate(empty, strategies(q), None)


def test_serving_rule_needs_the_lower_end_above_the_threshold() -> None:
    lift = {"lift": 0.2, "low": 0.05, "high": 0.35}
    assert serving_decision("b", "a", lift).serve_candidate
    assert not serving_decision("b", "a", lift, min_lift=0.1).serve_candidate
    assert not serving_decision("b", "a", {"lift": 0.2, "low": -0.01, "high": 0.4}).serve_candidate
    assert not serving_decision("a", "a", lift).serve_candidate
    warned = serving_decision("b", "a", lift, warnings=["tiny effective sample size: 12 of 900 displays"])
    assert not warned.serve_candidate and "not trusted" in warned.reason
    assert not serving_decision("b", "a", {"lift": math.nan, "low": math.nan, "high": math.nan}).serve_candidate


def test_two_proportion_matches_hand_computation() -> None:
    out = two_proportion(120, 1000, 80, 1000)
    assert out["lift"] == pytest.approx(0.5)
    pooled = 200 / 2000
    z = (0.12 - 0.08) / math.sqrt(pooled * (1 - pooled) * 2 / 1000)
    assert out["z"] == pytest.approx(z)
    assert out["p_value"] == pytest.approx(math.erfc(z / math.sqrt(2)))
    se = math.sqrt(1 / 120 - 1 / 1000 + 1 / 80 - 1 / 1000)
    assert out["lift_low"] == pytest.approx(1.5 * math.exp(-1.959964 * se) - 1, rel=1e-5)
    assert math.isnan(two_proportion(5, 100, 0, 0)["lift"])


def test_lift_table_per_day_and_overall() -> None:
    rng = np.random.default_rng(0)
    n = 40_000
    arm = np.where(rng.random(n) < 0.1, "holdout", "model")
    converted = (rng.random(n) < np.where(arm == "model", 0.12, 0.08)).astype(int)
    outcomes = pd.DataFrame({"placement_id": "web-banner", "ai_model": "m", "arm": arm, "converted": converted,
                             "day": np.array(["2026-01-01", "2026-01-02"])[rng.integers(0, 2, n)]})
    table = lift_table(outcomes)
    assert len(table) == 3
    overall = table[table["day"].isna()].iloc[0]
    assert overall["displays_model"] + overall["displays_holdout"] == n
    assert overall["lift_low"] < 0.5 < overall["lift_high"]
    assert overall["p_value"] < 1e-6
