"""Frequency caps: rule parsing, UTC windows, counting from events and the decision log, live counters."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from offerflow.rules.capping import (CapCounters, CapError, CapRule, load_cap_counters, next_window_start, parse_caps,
                               window_start, write_cap_reset)
from offerflow.ingest.catalog import CatalogError, load_offers
from offerflow.core.schema import EVENT_SCHEMA

UTC = timezone.utc


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize("value, expected", [
    (None, 0), (float("nan"), 0), ("", 0), ([], 0),
    ([{"limit": 3}], 1),
    ('[{"event": "click", "scope": "total", "limit": 5, "reset": "weekly", "per_placement": true}]', 1),
    ({"limit": 2, "reset": "daily"}, 1),
])
def test_parse_caps_accepts_lists_json_and_empty(value, expected):
    rules = parse_caps(value, "offer 'o-1'")
    assert len(rules) == expected
    if expected:
        assert all(isinstance(r, CapRule) for r in rules)


@pytest.mark.parametrize("value, message", [
    ([{"limit": 0}], "offer 'o-1': caps[0].limit: Input should be greater than or equal to 1"),
    ([{"limit": 2}, {"limit": 3, "event": "view"}], "offer 'o-1': caps[1].event:"),
    ([{"limit": 3, "reset": "hourly"}], "caps[0].reset:"),
    ([{"limit": 3, "every": "day"}], "caps[0].every: Extra inputs are not permitted"),
    ([{"event": "display"}], "caps[0].limit: Field required"),
    ("[{limit: 3}", "caps: not valid JSON"),
    (7, "caps: expected a list of cap rules, got int"),
    (["daily"], "caps[0]: expected a mapping"),
])
def test_parse_caps_errors_are_located(value, message):
    with pytest.raises(CapError) as exc:
        parse_caps(value, "offer 'o-1'")
    assert message in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize("reset, now, start, end", [
    ("daily", "2026-11-23T23:59:59", "2026-11-23T00:00:00", "2026-11-24T00:00:00"),
    ("daily", "2026-11-24T00:00:00", "2026-11-24T00:00:00", "2026-11-25T00:00:00"),
    ("weekly", "2026-11-22T12:00:00", "2026-11-16T00:00:00", "2026-11-23T00:00:00"),  # Sunday -> Monday 16th
    ("weekly", "2026-11-23T00:00:00", "2026-11-23T00:00:00", "2026-11-30T00:00:00"),
    ("monthly", "2026-12-31T23:00:00", "2026-12-01T00:00:00", "2027-01-01T00:00:00"),
    ("monthly", "2026-02-14T05:00:00", "2026-02-01T00:00:00", "2026-03-01T00:00:00"),
    ("never", "2026-02-14T05:00:00", "1970-01-01T00:00:00", None),
])
def test_windows_are_utc_calendar_periods(reset, now, start, end):
    assert window_start(reset, at(now)) == at(start)
    if end is not None:
        assert next_window_start(reset, at(now)) == at(end)
    # a time given in another zone is the same instant: 01:30 at +02:00 is 23:30 UTC the day before
    local = datetime.fromisoformat("2026-11-24T01:30:00+02:00")
    assert window_start("daily", local) == at("2026-11-23T00:00:00")


def test_counters_reset_at_the_utc_boundary():
    rule = CapRule(event="display", scope="per_profile", limit=2, reset="daily")
    counters = CapCounters({"o-1": (rule,)}, now=at("2026-11-23T22:00:00"))
    before_midnight = at("2026-11-23T23:59:59")
    counters.record(["o-1"], "web", "p1", before_midnight)
    assert not counters.capped("o-1", "web", "p1", before_midnight)
    counters.record(["o-1"], "web", "p1", before_midnight)
    assert counters.capped("o-1", "web", "p1", before_midnight)
    assert not counters.capped("o-1", "web", "p2", before_midnight)  # per profile
    assert not counters.capped("o-1", "web", "p1", at("2026-11-24T00:00:00"))  # new UTC day


def test_never_reset_keeps_counting_and_total_scope_is_shared():
    rule = CapRule(event="decision", scope="total", limit=3, reset="never")
    counters = CapCounters({"o-1": (rule,)}, now=at("2026-01-01T00:00:00"))
    for day, profile in enumerate(["p1", "p2", "p3"], start=1):
        counters.record(["o-1"], "web", profile, at(f"2026-01-0{day}T12:00:00"))
    assert counters.capped("o-1", "email", "p9", at("2027-06-01T00:00:00"))


def test_per_placement_rules_count_each_placement_and_any_rule_caps():
    rules = (CapRule(event="display", scope="total", limit=1, reset="never", per_placement=True),
             CapRule(event="display", scope="per_profile", limit=5, reset="never"))
    now = at("2026-11-23T10:00:00")
    counters = CapCounters({"o-1": rules}, now=now)
    counters.record(["o-1"], "web", "p1", now)
    assert counters.capped("o-1", "web", "p2", now)       # the total rule, web
    assert not counters.capped("o-1", "email", "p2", now)  # email counts separately
    counters.record(["o-1"], "email", "p1", now, events=("click",))  # clicks do not count displays
    assert not counters.capped("o-1", "email", "p2", now)
    assert counters.reset("o-1") == 2 and not counters.capped("o-1", "web", "p2", now)


def _write_events(path: Path, rows: list[dict]) -> None:
    frame = pd.DataFrame(rows).reindex(columns=EVENT_SCHEMA.names)
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    pq.write_table(pa.Table.from_pandas(frame, schema=EVENT_SCHEMA, preserve_index=False), path)


def _event(event_id, ts, profile, event_type="display", offer="o-1", placement="web", decision=None):
    return {"event_id": event_id, "timestamp": ts, "profile_id": profile, "event_type": event_type,
            "offer_id": offer, "placement_id": placement, "channel": "web", "decision_id": decision}


def _counted_project(tmp_path):
    """Ingested events and a decision log (p1 and p2, offers o-1 capped and o-2), o-1's three caps."""
    events, log = tmp_path / "events.parquet", tmp_path / "decision_log"
    log.mkdir()
    _write_events(events, [
        _event("e1", "2026-11-23T08:00:00Z", "p1"),
        _event("dec-a-web-1", "2026-11-23T09:00:00Z", "p1", decision="dec-a"),  # logged AND ingested
        _event("e2", "2026-11-23T09:01:00Z", "p1", event_type="click", decision="dec-a"),
        _event("e3", "2026-11-22T23:59:59Z", "p1"),                      # yesterday: not today's window
        _event("e4", "2026-11-23T10:00:00Z", "p2", offer="o-2"),          # uncapped offer
    ])
    _write_events(log / "decisions-1.parquet", [
        _event("dec-a-web-1", "2026-11-23T09:00:00Z", "p1", decision="dec-a"),
        _event("dec-b-web-1", "2026-11-23T11:00:00Z", "p1", decision="dec-b"),
        _event("dec-c-email-1", "2026-11-23T11:00:00Z", "p2", placement="email", decision="dec-c"),
    ])
    caps = {"o-1": (CapRule(event="display", scope="per_profile", limit=4, reset="daily"),
                    CapRule(event="click", scope="per_profile", limit=2, reset="never"),
                    CapRule(event="decision", scope="total", limit=9, reset="never", per_placement=True))}
    return events, log, caps


def test_counts_from_events_and_decision_log_without_double_counting(tmp_path):
    events, log, caps = _counted_project(tmp_path)
    now = at("2026-11-23T12:00:00")
    counters = load_cap_counters(caps, events, log, now=now)
    display, click, decision = caps["o-1"]
    # p1 today: e1 + dec-a (once, though ingested and logged) + dec-b = 3
    assert counters.count(display, "o-1", "web", "p1", now) == 3
    assert counters.count(display, "o-1", "email", "p2", now) == 1
    assert counters.count(click, "o-1", "web", "p1", now) == 1
    assert counters.count(decision, "o-1", "web", "p1", now) == 2
    assert counters.count(decision, "o-1", "email", "p1", now) == 1
    assert not counters.capped("o-1", "web", "p1", now)
    counters.record(["o-1"], "web", "p1", now)  # the 4th display today
    assert counters.capped("o-1", "web", "p1", now)
    # an administrator's reset drops the events before it, also for a fresh count
    write_cap_reset(tmp_path / "resets.json", "o-1", at("2026-11-23T10:30:00"))
    again = load_cap_counters(caps, events, log, resets_path=tmp_path / "resets.json", now=now)
    assert again.count(display, "o-1", "web", "p1", now) == 1  # only dec-b
    assert json.loads((tmp_path / "resets.json").read_text())["o-1"].startswith("2026-11-23T10:30")


def test_a_serving_process_absorbs_the_decisions_other_processes_logged_once(tmp_path):
    """`absorb_logs`: decision-log files that appeared after the counts were made (an `offerflow
    decide` beside a running service) are counted once; the serving process's own files (it counted
    their decisions as it made them) are not; an administrator's reset still drops what came before it."""
    events, log, caps = _counted_project(tmp_path)
    now = at("2026-11-23T12:00:00")
    counters = load_cap_counters(caps, events, log, now=now)
    display = caps["o-1"][0]
    assert counters.count(display, "o-1", "web", "p1", now) == 3
    assert counters.absorb_logs(log, now=now) == 0  # nothing new
    _write_events(log / "decisions-2.parquet", [_event("dec-d-web-1", "2026-11-23T11:30:00Z", "p1", decision="dec-d")])
    counters.record(["o-1"], "web", "p1", now)  # the service's own decision, logged in decisions-own
    _write_events(log / "decisions-own.parquet", [_event("dec-e-web-1", "2026-11-23T11:40:00Z", "p1", decision="dec-e")])
    assert counters.absorb_logs(log, own={"decisions-own.parquet"}, now=now) == 1
    assert counters.count(display, "o-1", "web", "p1", now) == 5 and counters.capped("o-1", "web", "p1", now)
    assert counters.absorb_logs(log, now=now) == 0 and counters.count(display, "o-1", "web", "p1", now) == 5
    write_cap_reset(tmp_path / "resets.json", "o-1", at("2026-11-23T11:50:00"))
    counters.reset("o-1")
    _write_events(log / "decisions-3.parquet", [_event("dec-f-web-1", "2026-11-23T11:45:00Z", "p1", decision="dec-f"),
                                                _event("dec-g-web-1", "2026-11-23T11:55:00Z", "p1", decision="dec-g")])
    assert counters.absorb_logs(log, resets_path=tmp_path / "resets.json", now=now) == 1
    assert counters.count(display, "o-1", "web", "p1", now) == 1  # dec-g only: dec-f came before the reset


def test_counters_for_some_profiles_count_only_theirs_per_profile_and_everyone_in_totals(tmp_path):
    """`offerflow decide` counts per-profile caps for its profile only; total caps still count everyone."""
    events, log, caps = _counted_project(tmp_path)
    now = at("2026-11-23T12:00:00")
    everyone = load_cap_counters(caps, events, log, now=now)
    p2_only = load_cap_counters(caps, events, log, now=now, profile_ids=["p2"])
    display, click, decision = caps["o-1"]
    assert p2_only.count(display, "o-1", "email", "p2", now) == everyone.count(display, "o-1", "email", "p2", now) == 1
    assert everyone.count(display, "o-1", "web", "p1", now) == 3
    assert p2_only.count(display, "o-1", "web", "p1", now) == 0
    assert everyone.count(click, "o-1", "web", "p1", now) == 1 and p2_only.count(click, "o-1", "web", "p1", now) == 0
    for placement in ("web", "email"):  # a total cap: p1's decisions count for p2 too
        total = everyone.count(decision, "o-1", placement, "p1", now)
        assert total > 0 and p2_only.count(decision, "o-1", placement, "p2", now) == total


def test_a_cap_of_one_reads_in_the_singular():
    assert CapRule(event="click", scope="per_profile", limit=1, reset="weekly").describe() == \
        "1 click per profile, weekly, all placements"
    assert CapRule(event="display", scope="total", limit=2, reset="never", per_placement=True).describe() == \
        "2 displays total, never, per placement"


def test_state_reports_counts_and_capped_offers():
    rule = CapRule(event="display", scope="per_profile", limit=1, reset="daily")
    now = at("2026-11-23T10:00:00")
    counters = CapCounters({"o-1": (rule,)}, now=now)
    counters.record(["o-1"], "web", "p1", now)
    (row,) = counters.state(now)
    assert row["capped"] and row["at_limit"] == 1 and row["resets_at"].startswith("2026-11-24T00:00")
    (other,) = counters.state(now, profile_id="p2")
    assert not other["capped"] and other["count"] == 0


def test_state_has_a_row_per_placement_for_a_rule_counted_per_placement():
    per_placement = CapRule(event="display", scope="total", limit=2, reset="never", per_placement=True)
    everywhere = CapRule(event="display", scope="per_profile", limit=1, reset="daily")
    now = at("2026-11-23T10:00:00")
    counters = CapCounters({"o-1": (per_placement, everywhere)}, now=now)
    counters.record(["o-1"], "web", "p1", now)
    counters.record(["o-1"], "web", "p2", now)
    counters.record(["o-1"], "email", "p1", now)
    rows = counters.state(now)
    by_placement = {r["placement_id"]: r for r in rows if r["rule"] == 0}
    assert {p: (r["count"], r["capped"]) for p, r in by_placement.items()} == {"web": (2, True), "email": (1, False)}
    (overall,) = [r for r in rows if r["rule"] == 1]  # per profile, all placements: the busiest profile
    assert overall["placement_id"] is None and overall["count"] == 2 and overall["at_limit"] == 2
    assert (overall["event"], overall["scope"], overall["reset"], overall["per_placement"]) == \
        ("display", "per_profile", "daily", False)
    (untouched,) = CapCounters({"o-1": (per_placement,)}, now=now).state(now)  # nothing counted: one row
    assert untouched["placement_id"] is None and untouched["count"] == 0


def test_catalog_load_checks_caps_with_located_messages(tmp_path):
    good = tmp_path / "offers.csv"
    good.write_text('offer_id,name,priority,placements,fallback,caps\n'
                    'o-1,A,5,web,false,"[{""limit"": 2, ""reset"": ""daily""}]"\n'
                    'o-f,F,0,web,true,\n')
    offers = load_offers(good, ["web"])
    assert offers.set_index("offer_id").loc["o-1", "caps"][0].limit == 2
    assert offers.set_index("offer_id").loc["o-f", "caps"] == ()
    bad = tmp_path / "bad.yaml"
    bad.write_text("offers:\n"
                   "  - {offer_id: o-1, name: A, priority: 5, placements: [web], caps: [{limit: -1}]}\n"
                   "  - {offer_id: o-2, name: B, priority: 5, placements: [web], caps: [{limit: 2, scope: all}]}\n"
                   "  - {offer_id: o-f, name: F, priority: 0, placements: [web], fallback: true}\n")
    with pytest.raises(CatalogError) as exc:
        load_offers(bad, ["web"])
    message = str(exc.value)
    assert message.startswith(f"{bad}: offer 'o-1': caps[0].limit:") and "offer 'o-2': caps[0].scope:" in message
