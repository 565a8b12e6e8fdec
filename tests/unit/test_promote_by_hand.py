"""A promotion by hand on a real MLflow registry (SQLite): the replaced champion becomes
@challenger and its training run stops saying `promoted=True`; promoting the champion again
records the reason and no previous champion (it named itself)."""

from __future__ import annotations

from offerflow.core.tracking import CHALLENGER, CHAMPION, Tracker
from offerflow.models.registry import promote_by_hand

NAME = "offerflow-propensity-purchase_14d"


def registry_with_two_versions(tmp_path) -> tuple[Tracker, list[str]]:
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "mlruns")
    tracker.client.create_registered_model(NAME)
    runs = []
    for version in ("1", "2"):
        with tracker.run("offerflow-propensity-purchase_14d", f"train-{version}") as run_id:
            runs.append(run_id)
        tracker.client.create_model_version(NAME, str(tmp_path / f"model-{version}"), run_id=run_id)
        tracker.set_run_tags(run_id, {"promoted": "True"})  # each was promoted by the rule when trained
    tracker.set_alias(NAME, CHAMPION, "2")
    return tracker, runs


def test_the_replaced_champion_is_challenger_and_no_longer_marked_promoted(tmp_path) -> None:
    tracker, (run_1, run_2) = registry_with_two_versions(tmp_path)
    record = promote_by_hand(tracker, NAME, "1", "v2 overfits the holiday week", promoted_by="ana")
    assert record.previous_champion == "2"
    assert tracker.alias_version(NAME, CHAMPION) == "1" and tracker.alias_version(NAME, CHALLENGER) == "2"
    tags_1, tags_2 = (tracker.client.get_run(r).data.tags for r in (run_1, run_2))
    assert tags_1["promoted"] == "True" and tags_1["promotion"] == "manual" and tags_1["previous_champion"] == "2"
    assert tags_2["promoted"] == "False"
    assert tags_2["replaced_by"].startswith("version 1, by hand by ana at ")
    assert tags_2["replaced_by"].endswith(": v2 overfits the holiday week")


def test_promoting_the_champion_again_names_no_previous_champion(tmp_path) -> None:
    tracker, (_, run_2) = registry_with_two_versions(tmp_path)
    record = promote_by_hand(tracker, NAME, "2", "confirmed after review", promoted_by="ana")
    assert record.previous_champion is None
    version = tracker.client.get_model_version(NAME, "2")
    assert version.tags["previous_champion"] == "" and version.tags["promotion_reason"] == "confirmed after review"
    assert tracker.alias_version(NAME, CHALLENGER) is None
    assert tracker.client.get_run(run_2).data.tags["promoted"] == "True"
