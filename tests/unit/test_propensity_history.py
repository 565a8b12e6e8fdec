"""Whole-history features of sparse repeat events, short histories (one training cut-off, or none),
and early stopping that keeps the trees the data supports."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest

from offerflow.core.config import PropensityGoalConfig
from offerflow.core.metrics import classification_metrics
from offerflow.core.features import event_time_range, interaction_features, open_events
from offerflow.customer_ai.goals import GoalError, HistoryTooShort
from offerflow.customer_ai.propensity import (PropensityTrainingData, build_examples, fit_propensity_model, history_too_short,
                                  plan_cutoffs)
from offerflow.synthetic.world import load_truth, true_purchase_probability

CUTOFF = datetime(2026, 10, 1, tzinfo=timezone.utc)
DAY = pd.Timedelta(days=1)


@pytest.fixture()
def con(tmp_path):
    t = pd.Timestamp(CUTOFF)
    rows = [  # p1 buys on days -40, -30 (twice), -10; p2 buys once; p3 only browses
        ("e1", t - 40 * DAY, "p1", "purchase", 10.0), ("e2", t - 30 * DAY, "p1", "purchase", 20.0),
        ("e3", t - 30 * DAY + pd.Timedelta(hours=2), "p1", "purchase", 30.0),
        ("e4", t - 10 * DAY, "p1", "purchase", 40.0), ("e5", t - 5 * DAY, "p1", "display", None),
        ("e6", t - 20 * DAY, "p2", "purchase", 5.0), ("e7", t - 50 * DAY, "p3", "display", None),
        ("e8", t + DAY, "p1", "purchase", 999.0), ("e9", t, "p2", "purchase", 999.0)]  # at/after: never seen
    frame = pd.DataFrame(rows, columns=["event_id", "timestamp", "profile_id", "event_type", "value"])
    frame["channel"] = "web"
    frame.to_parquet(tmp_path / "events.parquet", index=False)
    return open_events(tmp_path / "events.parquet")


def test_recency_frequency_tenure_gaps_and_value_of_the_whole_history(con):
    f = interaction_features(con, CUTOFF, [7], ["display", "purchase"], history_event_types=["purchase"])
    f = f.set_index("profile_id")
    p1, p2, p3 = f.loc["p1"], f.loc["p2"], f.loc["p3"]
    assert (p1["count_purchase_all"], p1["days_purchase_all"]) == (4, 3)  # two purchases on day -30
    assert p1["days_since_first_purchase"] == pytest.approx(40) and p1["days_since_purchase"] == pytest.approx(10)
    assert p1["mean_gap_purchase"] == pytest.approx(15)  # (40 - 10) days over 2 gaps between 3 days
    assert p1["last_gap_purchase"] == pytest.approx(30 - 2 / 24 - 10)  # between the last two purchases
    assert p1["recency_gap_ratio_purchase"] == pytest.approx(10 / 15)
    assert (p1["value_purchase_all"], p1["mean_value_purchase"]) == (100.0, 25.0)
    assert p1["rate_purchase_all"] == pytest.approx(3 / 40)
    assert (p1["days_since_first_event"], p1["days_since_last_event"]) == (pytest.approx(40), pytest.approx(5))
    # one purchase: frequency and tenure, but no gap
    assert (p2["count_purchase_all"], p2["days_since_first_purchase"]) == (1, pytest.approx(20))
    assert np.isnan(p2["mean_gap_purchase"]) and np.isnan(p2["last_gap_purchase"])
    assert np.isnan(p2["recency_gap_ratio_purchase"]) and p2["value_purchase_all"] == 5.0
    # never bought: zero counts and value, unknown recency
    assert (p3["count_purchase_all"], p3["days_purchase_all"], p3["value_purchase_all"]) == (0, 0, 0.0)
    assert np.isnan(p3["days_since_first_purchase"]) and np.isnan(p3["mean_value_purchase"])
    assert p3["days_since_first_event"] == pytest.approx(50)


def _goal(window: int, **extra) -> PropensityGoalConfig:
    return PropensityGoalConfig.model_validate({
        "name": "purchase_goal", "goal": {"all_of": [{"field": "event_type", "value": "purchase"}]},
        "outcome_window_days": window, "min_positives": 100, "min_negatives": 100,
        "lightgbm": {"num_threads": 1}, **extra})


@pytest.mark.parametrize("days, window, expected", [
    (43, 14, 2),   # 2 x 14 + 7 = 35 days for one cut-off, one more per 7 days: 35 and 42 fit
    (35, 14, 1),
    (67, 30, 1),   # the worked example of docs/customer-ai.md
    (80, 30, 2),
])
def test_as_many_cutoffs_as_fit_down_to_one(days, window, expected):
    first = datetime(2026, 1, 1, tzinfo=timezone.utc)
    last = first + pd.Timedelta(days=days) - pd.Timedelta(seconds=1)
    plan = plan_cutoffs(first, last, _goal(window))
    assert len(plan.train) == expected
    assert plan.train[-1] + pd.Timedelta(days=window) <= plan.holdout  # no training label overlaps the holdout's
    assert plan.train[0] >= first + pd.Timedelta(days=7)


def test_no_cutoff_fits_is_a_one_line_skip_reason(con, tmp_path):
    first = datetime(2026, 1, 1, tzinfo=timezone.utc)
    with pytest.raises(HistoryTooShort) as raised:
        plan_cutoffs(first, first + pd.Timedelta(days=43) - pd.Timedelta(seconds=1), _goal(30))
    assert isinstance(raised.value, GoalError)
    assert str(raised.value) == ("propensity goal 'purchase_goal': the events span 43 days, but an outcome window of"
                                 " 30 days needs at least 67 (7 of history, a training outcome window, a holdout one)")
    with pytest.raises(HistoryTooShort, match="the events span 1 day, but an outcome window of 1 day needs at least 9"):
        plan_cutoffs(first, first + pd.Timedelta(hours=5), _goal(1))
    # the fixture's events span 52 days: a 14-day goal fits, a 30-day goal is skipped
    assert history_too_short(tmp_path / "events.parquet", _goal(14)) is None
    assert history_too_short(tmp_path / "events.parquet", _goal(30)).endswith("needs at least 67 (7 of history,"
                                                                              " a training outcome window, a holdout one); skipped")


def test_one_cutoff_validates_on_a_stable_share_of_its_profiles_and_keeps_many_trees(world_dir):
    """Snapshots of one cut-off (the seeded world's latest training one, 4 weeks of history):
    early stopping validates on a hash share of its profiles, and on a world with real signal
    keeps far more than a few trees; the holdout AUC stays near the several-cut-off model's."""
    con = open_events(world_dir / "events.parquet")
    goal = _goal(14)
    plan = plan_cutoffs(*event_time_range(con), goal)
    profiles = pd.read_parquet(world_dir / "profiles.parquet")
    examples = build_examples(con, goal, profiles, plan.train[-1:])
    data = PropensityTrainingData.of(examples)
    assert 0.15 < data.valid.mean() < 0.25 and (data.train == ~data.valid).all()
    assert (PropensityTrainingData.of(examples).valid == data.valid).all()  # stable
    model = fit_propensity_model(examples, goal.lightgbm, seed=7)
    assert model.n_trees >= 20, model.n_trees
    holdout = build_examples(con, goal, profiles, [plan.holdout])
    truth, _ = load_truth(world_dir)
    holdout = holdout.merge(truth[["profile_id", "activity", "daily_purchase_rate"]], on="profile_id")
    y = holdout["label"].to_numpy()
    auc = classification_metrics(y, model.predict(holdout))["auc"]
    oracle = classification_metrics(y, true_purchase_probability(holdout, 14))["auc"]
    assert auc > oracle - 0.06, (auc, oracle)


def test_early_stopping_validates_on_profiles_that_never_train(world_dir):
    """Snapshots a week apart share most of their history and outcome window: a profile whose
    other snapshots trained would give its validation label away."""
    con = open_events(world_dir / "events.parquet")
    goal = _goal(14)
    examples = build_examples(con, goal, pd.read_parquet(world_dir / "profiles.parquet"),
                              plan_cutoffs(*event_time_range(con), goal).train)
    data = PropensityTrainingData.of(examples)
    assert (data.train == ~data.valid).all() and 0.15 < data.valid.mean() < 0.25
    assert not set(examples.loc[data.valid, "profile_id"]) & set(examples.loc[data.train, "profile_id"])
    for rows in (data.train, data.valid):  # every cut-off on both sides
        assert examples.loc[rows, "cutoff"].nunique() == examples["cutoff"].nunique()


def test_a_rare_goal_keeps_the_trees_its_signal_supports(world_dir):
    """A 3-day purchase goal (base rate ~10%): class weights up to 10x plus LightGBM's default log
    loss watched next to the AUC stopped this model after 4 trees; on the AUC alone it keeps 50+."""
    con = open_events(world_dir / "events.parquet")
    goal = _goal(3)
    examples = build_examples(con, goal, pd.read_parquet(world_dir / "profiles.parquet"),
                              plan_cutoffs(*event_time_range(con), goal).train)
    assert 0.05 < examples["label"].mean() < 0.15
    model = fit_propensity_model(examples, goal.lightgbm, seed=7)
    assert model.n_trees >= 20, model.n_trees
    # no class weights: the mean probability matches the base rate (calibrated, not inflated)
    assert abs(model.predict(examples).mean() - examples["label"].mean()) < 0.01
