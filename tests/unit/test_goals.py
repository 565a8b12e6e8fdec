"""Goal definitions: predicates, churn meaning 'will not occur', and located errors for bad goals."""

from __future__ import annotations

from datetime import datetime, timezone

import pandas as pd
import pytest

from offerflow.core.config import ConfigError, PropensityGoalConfig, parse_config
from offerflow.core.features import open_events
from offerflow.customer_ai.goals import GoalError, eligible_profiles, goal_predicate, label_goal
from offerflow.customer_ai.goals import population as goal_population
from offerflow.customer_ai.propensity import feature_frame

T0 = pd.Timestamp("2026-10-01", tz="UTC")


@pytest.fixture()
def con(tmp_path):
    rows = [("e1", T0 - pd.Timedelta(days=2), "p1", "display", None), ("e2", T0 - pd.Timedelta(days=1), "p2", "display", None),
            ("e3", T0 + pd.Timedelta(days=1), "p1", "purchase", 30.0), ("e4", T0 + pd.Timedelta(days=2), "p2", "purchase", 5.0),
            ("e5", T0 - pd.Timedelta(days=90), "p3", "display", None)]
    frame = pd.DataFrame(rows, columns=["event_id", "timestamp", "profile_id", "event_type", "value"])
    frame["channel"] = "web"
    frame.to_parquet(tmp_path / "events.parquet", index=False)
    return open_events(tmp_path / "events.parquet")


def goal(**overrides) -> PropensityGoalConfig:
    raw = {"name": "big_purchase_7d", "outcome_window_days": 7,
           "goal": {"all_of": [{"field": "event_type", "value": "purchase"}, {"field": "value", "operator": ">", "value": 20}]}}
    return PropensityGoalConfig.model_validate({**raw, **overrides})


def test_all_of_conditions_and_eligible_population(con):
    # By default every profile with any event before the cut-off is eligible (p3: 90 days ago).
    labels = label_goal(con, goal(), T0.to_pydatetime())
    assert labels.to_dict("list") == {"profile_id": ["p1", "p2", "p3"], "label": [1, 0, 0]}
    # The activity filter is opt-in.
    labels = label_goal(con, goal(eligible_active_within_days=45), T0.to_pydatetime())
    assert labels.to_dict("list") == {"profile_id": ["p1", "p2"], "label": [1, 0]}  # p3 inactive 45+ days


@pytest.mark.parametrize("active_within, eligible, excluded", [
    (None, ["p1", "p2", "p3"], {"no_history": 2}),
    (45, ["p1", "p2"], {"no_history": 2, "inactive": 1}),
])
def test_population_counts_eligible_scored_and_excluded_with_the_reason(con, active_within, eligible, excluded):
    g = goal(eligible_active_within_days=active_within)
    table = pd.Series(["p1", "p2", "p3", "p4", "p5"])  # p4, p5: no events at all
    population = goal_population(con, g, table, T0.to_pydatetime())
    assert eligible_profiles(con, g, T0.to_pydatetime()).tolist() == eligible
    assert (population.profiles, population.eligible, population.scored) == (5, len(eligible), len(eligible))
    assert population.excluded == excluded
    assert population.as_metrics()["population_excluded"] == 5 - len(eligible)
    assert "2 no event before 2026-10-01" in population.describe()
    if active_within:
        assert "1 no event in the 45 days before 2026-10-01 (eligible_active_within_days)" in population.describe()
    # a profile seen in the events but not in the table is eligible, never counted as excluded
    partial = goal_population(con, g, pd.Series(["p1"]), T0.to_pydatetime(), scored=len(eligible))
    assert (partial.profiles, partial.eligible, partial.excluded["no_history"]) == (1, len(eligible), 0)


def test_any_of_and_will_not_occur(con):
    g = goal(goal={"any_of": [{"field": "value", "operator": ">", "value": 20}, {"field": "value", "operator": "<", "value": 1}],
                   "occurrence": "will_not_occur"}, eligible_active_within_days=45)
    assert label_goal(con, g, T0.to_pydatetime())["label"].tolist() == [0, 1]


def test_churn_defaults_to_will_not_occur_and_can_say_otherwise():
    assert goal(type="churn").goal.occurrence == "will_not_occur"
    explicit = goal(type="churn", goal={"all_of": [{"field": "event_type", "value": "display"}], "occurrence": "will_occur"})
    assert explicit.goal.occurrence == "will_occur"
    assert goal().goal.occurrence == "will_occur"


def test_values_are_bound_not_pasted():
    sql, params = goal_predicate(goal(goal={"all_of": [{"field": "event_type", "operator": "in",
                                                         "value": ["purchase", "x'); DROP TABLE events; --"]}]}).goal,
                                 ["event_type"])
    assert sql == '("event_type" IN (?, ?))' and params[1].startswith("x'")


def test_unknown_event_field_is_a_located_error(con):
    bad = goal(goal={"all_of": [{"field": "evnt_type", "value": "purchase"}]})
    with pytest.raises(GoalError, match=r"^propensity_goals\[big_purchase_7d\]\.goal\.all_of\[0\]: unknown event field"
                                        r" 'evnt_type' \(fields: channel, event_id, event_type, profile_id, timestamp, value\)$"):
        label_goal(con, bad, T0.to_pydatetime())


def test_value_of_the_wrong_type_is_a_located_error(con):
    bad = goal(goal={"all_of": [{"field": "value", "operator": ">", "value": "lots"}]})
    with pytest.raises(GoalError, match=r"^propensity_goals\[big_purchase_7d\]\.goal: cannot evaluate the conditions: "):
        label_goal(con, bad, T0.to_pydatetime())


def test_unknown_profile_attribute_is_a_located_error(con):
    profiles = pd.DataFrame({"profile_id": ["p1", "p2"], "age": [30, 40]})
    with pytest.raises(GoalError, match=r"^propensity_goals\[big_purchase_7d\]\.profile_attributes: unknown profile"
                                        r" attribute\(s\) 'agee' \(attributes: age\)$"):
        feature_frame(con, goal(profile_attributes=["agee"]), profiles, profiles["profile_id"],
                      datetime(2026, 10, 1, tzinfo=timezone.utc))


@pytest.mark.parametrize("change, message", [
    ({"buckets": {"medium_from": 80, "high_from": 75}}, "propensity_goals[0].buckets: medium_from (80) must be below high_from (75)"),
    ({"top_factors": 0}, "propensity_goals[0].top_factors: Input should be greater than or equal to 1"),
    ({"type": "upsell"}, "propensity_goals[0].type: Input should be 'conversion' or 'churn'"),
    ({"goal": {"all_of": [{"field": "event_type", "operator": "~", "value": 1}]}},
     "propensity_goals[0].goal.all_of[0].operator: Input should be"),
])
def test_misconfigured_goal_is_a_located_config_error(change, message):
    from offerflow.synthetic.world import demo_config_yaml
    import yaml

    raw = yaml.safe_load(demo_config_yaml("data"))
    raw["propensity_goals"][0].update(change)
    with pytest.raises(ConfigError) as raised:
        parse_config(raw)
    assert str(raised.value).startswith(f"offerflow.yaml: {message}")


def test_a_backtest_window_that_ends_with_the_data_day_is_whole_not_partial(tmp_path):
    """Daily data (CDNOW: one timestamp per day) ends on the window's last day: the window is
    whole, as for the holdout cut-off (`plan_cutoffs` ends the data at midnight after the last
    event). It printed `partial window: 89.5 days observed` for a 90-day backtest at the holdout."""
    from offerflow.customer_ai.propensity import backtest_scores

    days = pd.date_range(T0 - pd.Timedelta(days=20), T0 + pd.Timedelta(days=6), freq="D") + pd.Timedelta(hours=12)
    frame = pd.DataFrame({"event_id": [f"e{i}" for i in range(2 * len(days))],
                          "timestamp": list(days) * 2, "profile_id": ["p1"] * len(days) + ["p2"] * len(days),
                          "event_type": "purchase", "value": 30.0, "channel": "web"})
    frame = frame[(frame["profile_id"] == "p1") | (frame["timestamp"] < T0)]  # p2 stops buying at T0
    frame.to_parquet(tmp_path / "events.parquet", index=False)
    scores = pd.DataFrame({"profile_id": ["p1", "p2"], "probability": [0.9, 0.1]})
    result = backtest_scores(open_events(tmp_path / "events.parquet"), goal(), scores, T0.to_pydatetime())
    assert result["observed_days"] == 7.0 and result["auc"] == 1.0
