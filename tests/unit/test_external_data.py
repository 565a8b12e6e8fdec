"""bench/external_data.py: the Open Bandit Dataset samples as an offerflow project (skipped
without the `obp` package, which `make bench-external` installs with --no-deps)."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
external_data = pytest.importorskip("external_data")
if external_data.obd_root() is None:
    pytest.skip(external_data.MISSING_MESSAGE, allow_module_level=True)


def test_read_obd_is_one_impression_per_row_with_tz_aware_times():
    log = external_data.read_obd("bts", "men")
    assert len(log) == 10_000 and log["row"].is_unique
    assert str(log["timestamp"].dt.tz) == "UTC"
    assert set(log["position"]) == {1, 2, 3} and set(log["click"]) <= {0, 1}
    assert log["propensity_score"].between(0, 1, inclusive="right").all()


@pytest.mark.parametrize("layout", ["per_position", "single"])
def test_project_carries_every_row_click_and_propensity(tmp_path, layout):
    from offerflow.ingest.catalog import load_offers
    from offerflow.core.config import load_config

    config = load_config(external_data.write_obd_project(tmp_path, "random", "women", layout))
    log = external_data.read_obd("random", "women")
    events = pd.read_parquet(tmp_path / "data" / "events.parquet")
    displays = events[events["event_type"] == "display"]
    clicks = events[events["event_type"] == "click"]
    assert len(displays) == len(log) and len(clicks) == log["click"].sum()
    assert displays["propensity"].tolist() == pytest.approx(log.sort_values("timestamp")["propensity_score"].tolist())
    assert set(clicks["decision_id"]) <= set(displays["decision_id"]) and displays["decision_id"].is_unique
    if layout == "per_position":  # each row in the placement of its position
        assert (displays["placement_id"] == "obd-pos" + displays["event_id"].str[-1]).all()
    profiles = pd.read_parquet(tmp_path / "data" / "profiles.parquet")
    assert profiles["profile_id"].is_unique and len(profiles) == len(log)
    offers = load_offers(tmp_path / "data" / "offers.yaml", [p.id for p in config.placements], profiles=profiles)
    assert (~offers["fallback"]).sum() == 46 and offers["fallback"].sum() == 1


def test_unknown_campaign_is_one_clear_error():
    with pytest.raises(ValueError, match="unknown campaign 'kids'"):
        external_data.read_obd("bts", "kids")


def test_default_window_on_the_whole_7_day_log_is_a_note_not_a_crash(tmp_path):
    """offerflow evaluate's default window_days: 7 on OBD's 7-day log used to end in an IndexError
    (no DR estimate to put in the summary); now: SNIPS, a note why, warnings about few clicks."""
    from offerflow.core.config import load_config
    from offerflow.core.features import open_events
    from offerflow.evaluation.report import load_evaluation_catalog, run_evaluation

    config = load_config(external_data.write_obd_project(tmp_path, "bts", "all", layout="single"))
    config = config.model_copy(update={"evaluation": config.evaluation.model_copy(update={"window_days": 7})})
    profiles, offers = load_evaluation_catalog(config)
    result = run_evaluation(open_events(config.path(config.data.events)), config, profiles, offers, "events")
    evaluation = result.offline["obd"]
    assert evaluation.n == 10_000 and set(evaluation.table["estimator"]) == {"ips", "snips", "dr"}  # DR: logged only
    assert any("holds the placement's whole log (about 7 days)" in w for w in evaluation.warnings)
    random = evaluation.estimate("random", "snips")
    assert 0 <= random["low"] <= random["value"] <= random["high"] <= 1 and random["warnings"]
    text = " ".join(result.summary)
    assert "(off-policy, SNIPS)" in text and "nan" not in text.lower()
