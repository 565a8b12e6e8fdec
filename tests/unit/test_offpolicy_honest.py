"""Honest estimates on thin windows: bounded intervals, no [0, 0] for zero clicks, a warning and no
switch when clicks are too few, plain sentences without 'nan%', every estimate in the JSON."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest

from offerflow.core.config import ProjectConfig, RankingMethod
from offerflow.evaluation.intervals import bounded_interval
from offerflow.evaluation.logged_displays import LoggedDisplays
from offerflow.evaluation.offpolicy import evaluate
from offerflow.evaluation.policies import Strategy, argmax_policy, uniform_policy
from offerflow.evaluation.report import EvaluationResult, add_offline, evaluation_json, summary_sentences
from offerflow.evaluation.strategies import PlacementCandidates

N_PROFILES, N_OFFERS = 50, 4


def thin_log(n: int, click_rate: np.ndarray, seed: int = 0) -> LoggedDisplays:
    """A uniform logger over N_OFFERS offers; offer j is clicked with probability click_rate[j]."""
    rng = np.random.default_rng(seed)
    row, action = rng.integers(0, N_PROFILES, n), rng.integers(0, N_OFFERS, n)
    reward = (rng.random(n) < click_rate[action]).astype(float)
    profiles = pd.DataFrame({"profile_id": [f"p{i}" for i in range(N_PROFILES)]})
    offers = pd.DataFrame({"offer_id": [f"o{j}" for j in range(N_OFFERS)], "fallback": False,
                           "priority": np.arange(N_OFFERS)})
    t = datetime(2026, 1, 1, tzinfo=timezone.utc)
    return LoggedDisplays("web-banner", t, t, profiles, offers, np.ones((N_PROFILES, N_OFFERS), bool), row, action,
                          np.full(n, 1 / N_OFFERS), reward, np.full(n, np.datetime64("2026-01-01", "D")))


def strategies() -> list[Strategy]:
    # priority puts the highest priority (offer 3) first
    return [Strategy("logged", "logged", "logged", None),
            Strategy("random", "random", "random", lambda p, o, e: uniform_policy(e)),
            Strategy("priority", "priority", "priority",
                     lambda p, o, e: argmax_policy(np.tile(o["priority"].to_numpy(float), (len(p), 1)), e))]


def result_of(evaluation) -> tuple[EvaluationResult, ProjectConfig]:
    config = ProjectConfig(placements=[{"id": "web-banner", "channel": "web"}])
    result = EvaluationResult("now", "events.parquet")
    add_offline(result, config, evaluation, PlacementCandidates(strategies(), "priority", None, [],
                                                                {"priority": RankingMethod()}))
    result.summary = summary_sentences(result, config)
    return result, config


def test_zero_clicks_get_an_honest_upper_bound_not_0_to_0() -> None:
    evaluation = evaluate(thin_log(2_000, np.zeros(N_OFFERS)), strategies(), np.full((N_PROFILES, N_OFFERS), 0.01))
    table = evaluation.table
    assert (table["value"] == 0).all() and (table["low"] == 0).all() and (table["high"] > 0).all()
    logged = table[(table["strategy"] == "logged") & (table["estimator"] == "snips")].iloc[0]
    assert logged["high"] == pytest.approx(1 - 0.025 ** (1 / 2_000), rel=1e-6)  # Clopper-Pearson, 0 of 2,000


def test_bounded_interval_clips_and_reduces_to_clopper_pearson() -> None:
    value, low, high = bounded_interval(np.array([-0.0034, 1.7, 0.25]), np.array([1e-6, 0.01, 0.25 * 0.75 / 100]),
                                        np.array([400.0, 3.0, 100.0]), 100, 0.95)
    assert value.tolist() == [0.0, 1.0, 0.25]
    # a negative DR estimate: [0, the bound of 0 clicks in min(ESS, n) displays], not a negative rate
    assert low[0] == 0 and high[0] == pytest.approx(1 - 0.025 ** (1 / 100))
    assert high[1] == 1 and 0 < low[1] < 1
    assert (low[2], high[2]) == pytest.approx((0.1688, 0.3466), abs=2e-4)  # exact binomial, 25 of 100


def test_few_clicks_warn_and_block_any_switch_and_sentences_never_say_nan() -> None:
    evaluation = evaluate(thin_log(1_500, np.array([0.004, 0.004, 0.004, 0.0])), strategies(), None, n_bootstrap=100)
    assert evaluation.clicks < 30 and evaluation.too_few and evaluation.warnings[0].startswith(f"only {evaluation.clicks}")
    result, _ = result_of(evaluation)
    assert not result.serving["web-banner"].serve_candidate
    assert "not enough data to rank strategies" in result.serving["web-banner"].reason
    text = " ".join(result.summary)
    assert "too few to rank strategies" in text and "nan" not in text.lower()
    assert "SNIPS" in text  # no reward model: the DR headline falls back to SNIPS instead of crashing


def test_a_zero_baseline_gives_no_relative_lift_instead_of_nan() -> None:
    evaluation = evaluate(thin_log(20_000, np.array([0.02, 0.02, 0.02, 0.0])), strategies(), None, n_bootstrap=100)
    assert evaluation.too_few is None and evaluation.estimate("priority", "snips")["value"] == 0
    result, _ = result_of(evaluation)
    text = " ".join(result.summary)
    assert "no relative lift" in text and "nan" not in text.lower(), text


def test_only_the_logged_policy_estimated_is_a_sentence_not_an_index_error() -> None:
    evaluation = evaluate(thin_log(500, np.full(N_OFFERS, 0.1)), strategies()[:1], None)
    config = ProjectConfig(placements=[{"id": "web-banner", "channel": "web"}])
    result = EvaluationResult("now", "events.parquet")
    result.offline["web-banner"] = evaluation
    assert summary_sentences(result, config) == ["On web-banner, no strategy could be estimated (500 displays)."]


def test_json_carries_every_estimate_with_its_interval() -> None:
    evaluation = evaluate(thin_log(3_000, np.array([0.05, 0.05, 0.05, 0.01])), strategies(),
                          np.full((N_PROFILES, N_OFFERS), 0.04))
    result, config = result_of(evaluation)
    payload = json.loads(json.dumps(evaluation_json(result, config), allow_nan=False))
    rows = payload["placements"]["web-banner"]["estimates"]
    assert len(rows) == 9 and {r["estimator"] for r in rows} == {"ips", "snips", "dr"}
    assert all(0 <= r["low"] <= r["value"] <= r["high"] <= 1 for r in rows)
    assert payload["placements"]["web-banner"]["clicks"] == evaluation.clicks


def test_a_current_strategy_without_an_estimate_says_why() -> None:
    """A placement served by an AI model that the window left without training data: the serving
    decision names the reason the model was skipped, not only that it has no estimate."""
    evaluation = evaluate(thin_log(2_000, np.array([0.05, 0.1, 0.15, 0.2])), strategies(), None, n_bootstrap=100)
    assert not evaluation.too_few
    candidates = PlacementCandidates(strategies(), "web-personalized", None, [], {"priority": RankingMethod()})
    candidates.skip("web-personalized", "0 displays and 0 successes in the window: too few to train a click model")
    config = ProjectConfig(placements=[{"id": "web-banner", "channel": "web"}])
    result = EvaluationResult("now", "events.parquet")
    add_offline(result, config, evaluation, candidates)
    decision = result.serving["web-banner"]
    assert not decision.serve_candidate
    assert decision.reason == ("current strategy 'web-personalized' has no estimate (web-personalized skipped: 0 displays"
                               " and 0 successes in the window: too few to train a click model)")
    assert candidates.notes == ["web-personalized skipped: 0 displays and 0 successes in the window: too few to train"
                                " a click model"]
