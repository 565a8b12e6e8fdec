"""Point-in-time correctness: no feature may see an event at or after its cut-off.

The same world twice: as generated, and with everything from the cut-off on replaced by a
different future (a purchase of 1,000 by every profile exactly AT the cut-off, more events just
after, none of the real ones). A feature that used any event at/after the cut-off would differ
between the two; the labels, which must look at the future, do differ.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

from offerflow.core.config import PropensityGoalConfig
from offerflow.core.features import event_time_range, open_events
from offerflow.customer_ai.goals import label_goal
from offerflow.customer_ai.propensity import build_examples, feature_frame, plan_cutoffs

GOAL = PropensityGoalConfig.model_validate({
    "name": "purchase_14d", "goal": {"all_of": [{"field": "event_type", "value": "purchase"}]},
    "outcome_window_days": 14, "lookback_days": [7, 30], "custom_event_types": ["click"]})


def _other_future(world_dir: Path, out: Path, cutoff) -> Path:
    events = pd.read_parquet(world_dir / "events.parquet")
    past = events[events["timestamp"] < cutoff]
    ids = past["profile_id"].unique()
    at = pd.Timestamp(cutoff)

    def injected(event_type: str, when: pd.Timestamp, channel: str | None, value: float | None) -> pd.DataFrame:
        return pd.DataFrame({"event_id": [f"x-{event_type}-{when.value}-{i}" for i in range(len(ids))],
                             "timestamp": when, "profile_id": ids, "event_type": event_type,
                             "offer_id": None if channel is None else "o-001", "placement_id": None,
                             "channel": channel, "value": value, "propensity": None, "decision_id": None})

    future = pd.concat([injected("purchase", at, None, 1000.0),
                        injected("display", at + pd.Timedelta(seconds=1), "web", None),
                        injected("click", at + pd.Timedelta(hours=1), "web", None),
                        injected("purchase", at + pd.Timedelta(days=3), None, 500.0)], ignore_index=True)
    changed = pd.concat([past, future.astype({c: past[c].dtype for c in future.columns})], ignore_index=True)
    path = out / "events.parquet"
    changed.to_parquet(path, index=False)
    return path


@pytest.fixture(scope="module")
def two_worlds(world_dir: Path, tmp_path_factory):
    real = open_events(world_dir / "events.parquet")
    plan = plan_cutoffs(*event_time_range(real), GOAL)
    cutoff = plan.train[-1]
    other = open_events(_other_future(world_dir, tmp_path_factory.mktemp("future"), cutoff))
    return real, other, cutoff, pd.read_parquet(world_dir / "profiles.parquet")


def test_features_ignore_every_event_at_or_after_the_cutoff(two_worlds):
    real, other, cutoff, profiles = two_worlds
    real_labels, other_labels = label_goal(real, GOAL, cutoff), label_goal(other, GOAL, cutoff)
    # the eligible population is decided by the past only
    assert real_labels["profile_id"].tolist() == other_labels["profile_id"].tolist()
    ids = real_labels["profile_id"]
    a = feature_frame(real, GOAL, profiles, ids, cutoff)
    b = feature_frame(other, GOAL, profiles, ids, cutoff)
    assert len(a.columns) > 15
    # the whole-history features of the goal's events (purchase) and the custom ones (click) included
    assert {f"{f}_{t}" for f in ("count", "days") for t in ("purchase_all", "click_all")} <= set(a.columns)
    assert {f"{f}_{t}" for f in ("days_since_first", "mean_gap", "last_gap", "recency_gap_ratio", "mean_value")
            for t in ("purchase", "click")} <= set(a.columns)
    assert {"value_purchase_all", "days_since_first_event", "days_since_last_event"} <= set(a.columns)
    pd.testing.assert_frame_equal(a, b)


def test_labels_do_see_the_future(two_worlds):
    real, other, cutoff, _ = two_worlds
    assert label_goal(other, GOAL, cutoff)["label"].all()  # everyone bought at the cut-off
    assert not label_goal(real, GOAL, cutoff)["label"].all()


def test_training_examples_at_earlier_cutoffs_are_unchanged(two_worlds):
    """Every training example (features and label) of a cut-off whose outcome window ends before
    the changed future is identical in both worlds."""
    real, other, cutoff, profiles = two_worlds
    earlier = [cutoff - timedelta(days=GOAL.outcome_window_days)]
    pd.testing.assert_frame_equal(build_examples(real, GOAL, profiles, earlier),
                                  build_examples(other, GOAL, profiles, earlier))


def test_a_training_sample_keeps_every_snapshot_of_the_profiles_it_draws(two_worlds):
    """Above `max_training_profiles` a stable hash sample of profiles gives the training snapshots:
    the same profiles at every cut-off, each with exactly the rows the full build gives it."""
    real, _, cutoff, profiles = two_worlds
    cutoffs = [cutoff - timedelta(days=7), cutoff]
    full = build_examples(real, GOAL, profiles, cutoffs)
    sampled_goal = GOAL.model_copy(update={"max_training_profiles": 1000})
    sample = build_examples(real, sampled_goal, profiles, cutoffs)
    again = build_examples(real, sampled_goal, profiles, cutoffs)
    pd.testing.assert_frame_equal(sample, again)  # stable: the same sample in every run
    drawn = set(sample["profile_id"])
    assert 850 <= len(drawn) <= 1150  # 1,000 of 3,000 profiles expected, binomial spread
    for when in cutoffs:  # a drawn profile is in every snapshot it is eligible for
        eligible = set(full.loc[full["cutoff"] == when, "profile_id"])
        assert set(sample.loc[sample["cutoff"] == when, "profile_id"]) == eligible & drawn
    expected = full[full["profile_id"].isin(drawn)].reset_index(drop=True)
    pd.testing.assert_frame_equal(sample, expected)
