"""BG/NBD features of Customer AI (offerflow.bgnbd): the maximum-likelihood fit recovers the
parameters of a generated BG/NBD sample, the features reach the model, and too little data gives
NaN columns instead of an error."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from offerflow import bgnbd
from offerflow.config import PropensityGoalConfig
from offerflow.features import open_events
from offerflow.propensity import build_examples, fit_propensity_model, plan_cutoffs, score_goal
from offerflow.features import event_time_range

TRUE = np.array([0.5, 4.0, 0.8, 2.5])  # r, alpha (weeks), a, b


def sample(n: int, weeks: float, seed: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, t_x, T) of `n` customers drawn from BG/NBD with `TRUE`, observed for `weeks`."""
    rng = np.random.default_rng(seed)
    r, alpha, a, b = TRUE
    rate, dropout = rng.gamma(r, 1 / alpha, n), rng.beta(a, b, n)
    T = rng.uniform(weeks / 2, weeks, n)
    x, t_x = np.zeros(n), np.zeros(n)
    for i in range(n):
        t = 0.0
        while True:
            t += rng.exponential(1 / rate[i])
            if t > T[i]:
                break
            x[i], t_x[i] = x[i] + 1, t
            if rng.random() < dropout[i]:
                break
    return x, t_x, T


def test_maximum_likelihood_recovers_the_parameters_of_a_bgnbd_sample():
    params = bgnbd.fit(*sample(8_000, 52))
    assert params is not None
    r, alpha, a, b = params
    assert r == pytest.approx(TRUE[0], rel=0.25) and alpha == pytest.approx(TRUE[1], rel=0.35)
    assert a == pytest.approx(TRUE[2], rel=0.5) and b == pytest.approx(TRUE[3], rel=0.6)
    x, t_x, T = sample(500, 52, seed=4)
    got = bgnbd.predictions(params, x, t_x, T, 12)
    assert np.all((got["p_alive"] >= 0) & (got["p_alive"] <= 1)) and np.all((got["p_any"] >= 0) & (got["p_any"] <= 1))
    # a customer who bought often and recently is more likely to buy than one silent for long
    hot = bgnbd.predictions(params, np.array([6.0]), np.array([50.0]), np.array([52.0]), 12)
    cold = bgnbd.predictions(params, np.array([6.0]), np.array([5.0]), np.array([52.0]), 12)
    assert hot["p_any"][0] > cold["p_any"][0] and hot["expected"][0] > cold["expected"][0]


def test_too_little_data_gives_nan_columns_not_an_error():
    frame = pd.DataFrame({"profile_id": ["a", "b"], "days_purchase_all": [2, 1],
                          "days_since_first_purchase": [30.0, 10.0], "days_since_purchase": [5.0, 10.0]})
    out = bgnbd.add_features(frame, "purchase", 30)
    assert set(bgnbd.feature_names("purchase")) <= set(out.columns)
    assert out[bgnbd.feature_names("purchase")].isna().all().all()
    assert bgnbd.fit(np.zeros(1000), np.zeros(1000), np.ones(1000)) is None  # nobody repeats
    assert "bgnbd_p_alive" in bgnbd.add_features(frame.drop(columns="days_purchase_all"), "purchase", 30)


def test_the_model_trains_and_scores_with_the_bgnbd_features(tmp_path):
    x, t_x, T = sample(1_500, 40, seed=5)
    rng = np.random.default_rng(6)
    origin = pd.Timestamp("2026-01-01", tz="UTC")
    rows = []
    for i in range(len(x)):
        first = origin + pd.Timedelta(weeks=float(40 - T[i]))
        days = [first] + sorted(first + pd.Timedelta(weeks=float(w)) for w in rng.uniform(0, t_x[i], int(x[i])))
        if x[i] > 0:
            days[-1] = first + pd.Timedelta(weeks=float(t_x[i]))
        rows += [(f"e{i}_{j}", d, f"p{i:04d}") for j, d in enumerate(days)]
    events = pd.DataFrame(rows, columns=["event_id", "timestamp", "profile_id"]).assign(
        event_type="purchase", offer_id=None, placement_id=None, channel=None, value=10.0, propensity=np.nan,
        decision_id=None)
    events.to_parquet(tmp_path / "events.parquet", index=False)
    con = open_events(tmp_path / "events.parquet")
    goal = PropensityGoalConfig.model_validate({
        "name": "buy", "goal": {"all_of": [{"field": "event_type", "value": "purchase"}]},
        "outcome_window_days": 28, "min_positives": 20, "min_negatives": 20, "lightgbm": {"num_threads": 1},
        "bgnbd_features": True})
    profiles = pd.DataFrame({"profile_id": sorted(events["profile_id"].unique())})
    plan = plan_cutoffs(*event_time_range(con), goal)
    examples = build_examples(con, goal, profiles, plan.train[-3:])
    names = bgnbd.feature_names("purchase")
    assert examples[names].notna().any().all()
    model = fit_propensity_model(examples, goal.lightgbm, 7)
    assert set(names) <= set(model.feature_columns)
    scores = score_goal(con, model, goal, profiles, plan.holdout)
    assert len(scores) > 0 and scores["probability"].between(0, 1).all()
    off = build_examples(con, goal.model_copy(update={"bgnbd_features": False}), profiles, plan.train[-1:])
    assert not set(names) & set(off.columns)
