"""Threshold errors name the expectation, the count and share, the threshold and the setting that
changes it (issue 19): one bad row in a 5-row file is 20% of it."""

from __future__ import annotations

import pandas as pd
import pytest

from offerflow.core.config import load_config
from offerflow.ingest.snapshot import ValidationFailed, ingest_events, load_catalog

from tests.unit.test_project_check import edit_config


def five_rows(project, bad: dict) -> None:
    rows = [{"event_id": f"e{i}", "timestamp": f"2026-10-0{i + 1}T08:00:00Z", "profile_id": "p-00001",
             "event_type": "display", "offer_id": "o-001", "placement_id": "web-banner", "channel": "web",
             "decision_id": f"d{i}"} for i in range(5)]
    rows[4].update(bad)
    pd.DataFrame(rows).to_csv(project / "data/events.csv", index=False)
    edit_config(project, lambda raw: raw["data"].update(events="data/events.csv"))


def ingest(project):
    config = load_config(project / "offerflow.yaml")
    _, offers = load_catalog(config, build_docs=False)
    return ingest_events(config, offers, "five-rows", build_docs=False)


@pytest.mark.parametrize(("bad", "line"), [
    ({"offer_id": "o-nope"}, "events.csv: column offer_id: 1 of 5 rows (20.0%) unknown offer ids, above"
     " validation.max_unknown_share 1%: fix the rows or raise the setting (expect_column_values_to_be_in_set(offer_id))"),
    ({"profile_id": None}, "events.csv: column profile_id: 1 of 5 rows (20.0%) null, above validation.max_null_share"
     " 1%: fix the rows or raise the setting (expect_column_values_to_not_be_null(profile_id))"),
    # a value that does not parse counts as null: the line says what it was (naive times are refused)
    ({"timestamp": "2026-10-05 08:00:00"}, "events.csv: column timestamp: 1 of 5 rows (20.0%) null (1 timestamp: no"
     " timezone), above validation.max_null_share 1%: fix the rows or raise the setting"
     " (expect_column_values_to_not_be_null(timestamp))"),
])
def test_one_bad_row_of_five_names_the_threshold_and_its_setting(project_dir, bad, line):
    five_rows(project_dir, bad)
    with pytest.raises(ValidationFailed) as failed:
        ingest(project_dir)
    assert str(failed.value).splitlines()[0] == line
    assert failed.value.failures == [line]
    assert "Critical failures:" in str(failed.value)  # the summary follows


def test_raising_the_setting_keeps_the_good_rows_and_quarantines_the_bad_one(project_dir):
    five_rows(project_dir, {"offer_id": "o-nope"})
    edit_config(project_dir, lambda raw: raw.setdefault("validation", {}).update(max_unknown_share=0.25))
    result = ingest(project_dir)
    assert result.counts() == {"rows": 5, "accepted": 4, "quarantined": 1, "logged_displays": 0,
                               "logged_displays_in_events": 0, "logged_displays_after_events": 0}
