"""The holdout report counts only decisions whose outcome can be in the events: a decision made
after the last ingested event (a batch of today's decisions next to last year's log) would read as
a decision nobody clicked, diluting both arms' rates."""

from __future__ import annotations

from datetime import datetime, timezone

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from offerflow.evaluation.holdout import events_end, observed_only


def write_events(path, types: list[str], times: list[datetime]) -> None:
    pq.write_table(pa.table({"event_type": types, "timestamp": pa.array(times, pa.timestamp("us", "UTC"))}), path)


def test_events_end_is_the_last_event_of_the_sources(tmp_path) -> None:
    assert events_end([]) is None and events_end([tmp_path / "missing.parquet"]) is None
    times = [datetime(2019, 11, 24, tzinfo=timezone.utc), datetime(2019, 11, 30, 23, 59, tzinfo=timezone.utc)]
    write_events(tmp_path / "events.parquet", ["display", "click"], times)
    assert events_end([tmp_path / "events.parquet"]) == pd.Timestamp("2019-11-30 23:59", tz="UTC")
    assert events_end([tmp_path]) == pd.Timestamp("2019-11-30 23:59", tz="UTC")  # a directory of event files


def test_decisions_after_the_events_end_are_left_out_with_a_note() -> None:
    decided = pd.to_datetime(["2019-11-29 00:00", "2019-11-30 12:00", "2026-12-07 00:00"], utc=True)
    outcomes = pd.DataFrame({"decision_id": ["d1", "d2", "d3"], "placement_id": "pos1", "arm": "model",
                             "decided_at": decided, "converted": [1, 0, 0]})
    kept, note = observed_only(outcomes, pd.Timestamp("2019-11-30 23:59", tz="UTC"))
    assert kept["decision_id"].tolist() == ["d1", "d2"]
    assert note == ("holdout report: 1 of 3 decisions were made after the events end (2019-11-30 23:59 UTC) and are"
                    " left out: their clicks are not in the events yet")
    assert observed_only(outcomes, None) == (outcomes, None)  # no events: nothing to measure a horizon on
    same, none = observed_only(outcomes, pd.Timestamp("2027-01-01", tz="UTC"))
    assert none is None and len(same) == 3


def test_outcomes_filed_in_the_decision_log_count_displays_there_do_not(tmp_path) -> None:
    """Clicks written next to the decision log (a replay, a test) move the horizon; the log's own
    display events (the decisions themselves) do not."""
    log = tmp_path / "decision_log"
    log.mkdir()
    write_events(log / "decisions-1.parquet", ["display"], [datetime(2026, 12, 7, tzinfo=timezone.utc)])
    assert events_end([], log) is None
    write_events(log / "clicks-served.parquet", ["click"], [datetime(2026, 12, 6, tzinfo=timezone.utc)])
    assert events_end([], log) == pd.Timestamp("2026-12-06", tz="UTC")
