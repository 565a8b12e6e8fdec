"""The catalog step: eligibility rules, profile ids and fallbacks checked (and the catalog
expectation suites run) before any training starts."""

import json
import tempfile
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
import yaml
from hypothesis import HealthCheck, given, settings as hyp_settings, strategies as st

from offerflow.ingest.catalog import CatalogError, read_offers
from offerflow.core.config import ValidationConfig, load_config
from offerflow.ingest.staging import EventStage
from offerflow.ingest.events import EventFileError, coerce_event_types, read_events_batches
from offerflow.ingest.snapshot import ingest_events, load_catalog
from offerflow.ingest.validation import stage_events, validate_catalog


def set_rule(project, offer_id, rule):
    path = project / "data" / "offers.yaml"
    raw = yaml.safe_load(path.read_text())
    for offer in raw["offers"]:
        if offer["offer_id"] == offer_id:
            offer["eligibility"] = rule
    path.write_text(yaml.safe_dump(raw, sort_keys=False))


def test_rules_may_use_customer_ai_scores(project_dir):
    set_rule(project_dir, "o-001", "profile.propensity.purchase_14d.score > 50 and profile.age >= 18")
    profiles, offers = load_catalog(load_config(project_dir / "offerflow.yaml"))
    assert "propensity.purchase_14d.score" not in profiles.columns  # placeholders only for checking
    assert offers.set_index("offer_id").at["o-001", "eligibility"].startswith("profile.propensity")


def test_bad_rule_stops_before_training_with_its_location(project_dir):
    set_rule(project_dir, "o-002", "profile.agee >= 18")
    with pytest.raises(CatalogError, match=r"offer 'o-002' eligibility: column 1: unknown name 'profile.agee'"):
        load_catalog(load_config(project_dir / "offerflow.yaml"))


# -- the catalog suites (profiles, offers, placements) run by the pipeline's catalog step --------


def test_catalog_suites_pass_on_the_seeded_world(project_dir):
    config = load_config(project_dir / "offerflow.yaml")
    profiles, offers = load_catalog(config, build_docs=False)
    outcomes = validate_catalog(profiles, offers, [p.id for p in config.placements],
                                context_dir=project_dir / "great_expectations", run_id="t", build_docs=False)
    assert {o.name.split(":")[0] for o in outcomes} == {"profiles", "offers", "placements"}
    assert all(o.success and o.why.endswith(".") for o in outcomes), [o for o in outcomes if not o.success]


def test_duplicate_profile_ids_fail_the_profiles_suite_and_the_catalog_step(project_dir):
    path = project_dir / "data" / "profiles.parquet"
    profiles = pd.read_parquet(path)
    doubled = pd.concat([profiles, profiles.iloc[[5, 9]]], ignore_index=True)
    doubled.to_parquet(path, index=False)
    config = load_config(project_dir / "offerflow.yaml")
    with pytest.raises(CatalogError) as error:
        load_catalog(config, build_docs=False)
    assert str(error.value) == f"{path}: 2 duplicate profile_id(s), e.g. {profiles.at[5, 'profile_id']!r}"
    offers = read_offers(project_dir / "data" / "offers.yaml")
    outcomes = {o.name: o for o in validate_catalog(doubled, offers, [p.id for p in config.placements],
                                                    context_dir=project_dir / "great_expectations",
                                                    run_id="t", build_docs=False)}
    unique = outcomes["profiles: expect_column_values_to_be_unique(profile_id)"]
    assert not unique.success and unique.severity == "critical"
    assert unique.observed.startswith(f"4 of {len(doubled)} values unexpected")


def test_missing_profile_id_is_one_message(project_dir):
    path = project_dir / "data" / "profiles.parquet"
    profiles = pd.read_parquet(path)
    profiles.loc[3, "profile_id"] = None
    profiles.to_parquet(path, index=False)
    with pytest.raises(CatalogError) as error:
        load_catalog(load_config(project_dir / "offerflow.yaml"), build_docs=False)
    assert str(error.value) == f"{path}: 1 profile(s) without a profile_id (first: row 4)"


def test_placement_without_fallback_fails_the_placements_suite_and_the_catalog_step(project_dir):
    path = project_dir / "data" / "offers.yaml"
    raw = yaml.safe_load(path.read_text())
    for offer in raw["offers"]:
        if offer.get("fallback"):
            offer["placements"] = [p for p in offer["placements"] if p != "email-hero"]
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    config = load_config(project_dir / "offerflow.yaml")
    with pytest.raises(CatalogError) as error:
        load_catalog(config, build_docs=False)
    assert str(error.value) == f"{path}: placement 'email-hero' has no fallback offer"
    outcomes = {o.name: o for o in validate_catalog(
        pd.read_parquet(project_dir / "data" / "profiles.parquet"), read_offers(path),
        [p.id for p in config.placements], context_dir=project_dir / "great_expectations", run_id="t",
        build_docs=False)}
    fallback = outcomes["placements: expect_column_values_to_be_between(fallback_offers)"]
    assert not fallback.success and fallback.observed.startswith("1 of 3 values unexpected")


# -- streaming ingestion end to end: batches, bad lines, conservation ------------------------------


def with_events(config, name: str, **validation):
    return config.model_copy(update={
        "data": config.data.model_copy(update={"events": Path("data") / name}),
        "validation": config.validation.model_copy(update=validation)})


def world_csv(project: Path, rows: int) -> tuple[pd.DataFrame, list[str]]:
    """The first `rows` events of the seeded world as CSV lines (header first)."""
    events = pd.read_parquet(project / "data" / "events.parquet").iloc[:rows].reset_index(drop=True)
    text = events.assign(timestamp=events["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    return events, text.to_csv(index=False, lineterminator="\n").splitlines()


def test_streamed_csv_with_bad_lines_loses_nothing_and_matches_one_batch(project_dir: Path):
    events, lines = world_csv(project_dir, 2000)
    purchase = events.index[events["event_type"] == "purchase"][0]
    fields = lines[1 + purchase].split(",")

    def variant(event_id: str, **changes: str) -> str:
        row = dict(zip(lines[0].split(","), fields), event_id=event_id, **changes)
        return ",".join(row.values())

    bad = {  # line -> expected reasons
        # an id with an identical copy and a differing one: every row goes, the copy says both
        "exact copy": (lines[1 + purchase],
                       "event_id: duplicate (identical row); event_id: duplicate with conflicting content"),
        "conflicting": (variant(fields[0], value="1.0"), "event_id: duplicate with conflicting content"),
        "unparseable": (variant("b1", timestamp="yesterday"),
                        "timestamp: unparseable 'yesterday'; timestamp: missing or unparseable"),
        "naive": (variant("b2", timestamp="2026-09-24T00:00:00"),
                  "timestamp: no timezone '2026-09-24T00:00:00'; timestamp: missing or unparseable"),
        "negative": (variant("b3", value="-5"), "value: negative"),
        "wrong type": (variant("b4", value="lots"), "value: not a number 'lots'"),
        "unknown offer": (variant("b5", event_type="display", offer_id="o-nope", placement_id="web-banner",
                                  decision_id="dx", propensity="0.5"), "offer_id: unknown offer 'o-nope'"),
        "propensity 0": (variant("b6", event_type="display", offer_id="o-001", placement_id="web-banner",
                                 decision_id="dy", propensity="0"), "propensity: not in (0, 1]"),
        "orphan click": (variant("b7", event_type="click", offer_id="o-001", placement_id="web-banner",
                                 decision_id="d-none"),
                         f"click: no matching display for decision 'd-none' (profile {fields[2]}, offer o-001)"),
        "short line": ("b8,2026-09-24T00:00:00Z", "CSV: expected 10 fields, got 2; profile_id: missing;"
                       " event_type: missing"),
    }
    body = [*lines, *(line for line, _ in bad.values())]
    path = project_dir / "data" / "events.csv"
    path.write_text("\n".join(body) + "\n" + "b9,2026-09-24T00:00:00Z,p1,purch")  # truncated last line
    expected = {len(lines) + 1 + i: reason for i, (_, reason) in enumerate(bad.values())}
    expected[1 + 1 + purchase] = "event_id: duplicate with conflicting content"  # the original row too

    config = load_config(project_dir / "offerflow.yaml")
    _, offers = load_catalog(config, build_docs=False)
    outcomes = {}
    for batch_rows in (700, 10**6):
        result = ingest_events(with_events(config, "events.csv", batch_rows=batch_rows), offers,
                               f"run-{batch_rows}", build_docs=False)
        quarantined = pd.read_parquet(result.quarantine_path)
        snapshot = pd.read_parquet(result.validated_path)
        assert len(snapshot) + len(quarantined) == result.report.row_count == len(body)  # header out, last in
        outcomes[batch_rows] = (snapshot, quarantined[["event_id", "_source_line", "reasons"]])
    assert outcomes[700][0].equals(outcomes[10**6][0])
    assert outcomes[700][1].equals(outcomes[10**6][1])
    got = dict(zip(outcomes[700][1]["_source_line"], outcomes[700][1]["reasons"]))
    assert got.pop(len(body) + 1) == "CSV: expected 10 fields, got 4"  # the truncated last line
    assert got == expected
    assert snapshot["timestamp"].is_monotonic_increasing


def test_whole_file_problem_mid_stream_touches_nothing(project_dir: Path):
    events, lines = world_csv(project_dir, 3000)
    path = project_dir / "data" / "events.csv"
    config = load_config(project_dir / "offerflow.yaml")
    _, offers = load_catalog(config, build_docs=False)
    streamed = with_events(config, "events.csv", batch_rows=1000)
    path.write_text("\n".join(lines) + "\n")
    good = ingest_events(streamed, offers, "good", build_docs=False)
    snapshot = good.validated_path.read_bytes()
    data = bytearray(path.read_bytes())
    offset = data.index(lines[2500].encode())
    data[offset + 1] = 0xFF  # inside event_id of line 2501: in the third batch
    path.write_bytes(bytes(data))
    with pytest.raises(EventFileError) as error:
        ingest_events(streamed, offers, "bad", build_docs=False)
    assert str(error.value) == f"{path}: not UTF-8 text (invalid byte 0xff at byte offset {offset + 1})"
    assert good.validated_path.read_bytes() == snapshot
    assert sorted(p.name for p in good.validated_path.parent.iterdir()) == ["events.parquet", "last_run.json"]
    assert not list((project_dir / "data" / "quarantine").glob("*bad*"))


def test_xdm_events_without_propositions_or_items_are_quarantined(project_dir: Path):
    def xdm(event_id, propositions, event_type="decisioning.propositionDisplay"):
        return {"_id": event_id, "timestamp": "2026-09-24T08:00:00Z", "eventType": event_type,
                "identityMap": {"ECID": [{"id": "p0000001"}]},
                "_experience": {"decisioning": {"propositions": propositions}}}

    shown = {"id": "d1", "scope": "web-banner", "items": [{"id": "o-001"}, {"id": "o-002"}]}
    lines = [xdm("x1", [shown]), xdm("x2", [{**shown, "items": []}]), xdm("x3", []),
             xdm("x4", [{**shown, "items": [{"id": "o-002"}]}], "decisioning.propositionInteract")]
    (project_dir / "data" / "events.ndjson").write_text("\n".join(map(json.dumps, lines)) + "\n")
    config = load_config(project_dir / "offerflow.yaml")
    _, offers = load_catalog(config, build_docs=False)
    result = ingest_events(with_events(config, "events.ndjson"), offers, "xdm", build_docs=False)
    quarantined = pd.read_parquet(result.quarantine_path)
    assert dict(zip(quarantined["event_id"], quarantined["reasons"])) == {
        "x2": "XDM: proposition 'd1' has no items; offer_id: missing for display/click",
        "x3": "XDM: display event has no propositions; offer_id: missing for display/click;"
              " placement_id: missing for display/click",
    }
    snapshot = pd.read_parquet(result.validated_path)
    assert sorted(snapshot["event_id"]) == ["x1#0", "x1#1", "x4"]
    assert result.report.row_count == 5 == len(snapshot) + len(quarantined)


@pytest.mark.slow
def test_a_100_mb_line_is_one_quarantined_row(project_dir: Path):
    events, lines = world_csv(project_dir, 200)  # 1 bad row of 201: under the 1 % "mostly"
    path = project_dir / "data" / "events.csv"
    with path.open("w") as out:
        out.write("\n".join(lines[:20]) + "\n")
        out.write("huge," + "x" * (100 * 2**20) + "\n")
        out.write("\n".join(lines[20:]) + "\n")
    config = load_config(project_dir / "offerflow.yaml")
    _, offers = load_catalog(config, build_docs=False)
    result = ingest_events(with_events(config, "events.csv"), offers, "huge", build_docs=False)
    quarantined = pd.read_parquet(result.quarantine_path)
    assert quarantined[["_source_line", "reasons"]].values.tolist() == [
        [21, "line longer than 16 MiB; event_id: missing; profile_id: missing; event_type: missing;"
             " timestamp: missing or unparseable"]]
    assert result.report.row_count == 201 == len(pd.read_parquet(result.validated_path)) + 1


FIELD = st.one_of(st.sampled_from(["", "e1", "e2", "display", "click", "o-001", "web-banner", "d1", "p1",
                                   "2026-09-24T08:00:00Z", "2026-09-24 08:00", "-1", "0", "0.5", "nan", "1e9"]),
                  st.text(alphabet=st.sampled_from(list('ab,"\r é:-TZ0123456789.')), max_size=12))


@hyp_settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(st.lists(FIELD, min_size=0, max_size=12), max_size=25), batch_rows=st.integers(1, 6),
       bad_byte=st.booleans())
def test_malformed_csv_conserves_rows_or_fails_as_one_line(rows, batch_rows, bad_byte):
    """Any text in any shape: every row read is accepted or quarantined with a reason, or the file
    is rejected with one `EventFileError` line naming it; no other exception."""
    header = "event_id,timestamp,profile_id,event_type,offer_id,placement_id,channel,value,propensity,decision_id"
    data = ("\n".join([header, *(",".join(r) for r in rows)]) + "\n").encode()
    if bad_byte and rows:
        data = data[:-1] + b"\xff\n"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.csv"
        path.write_bytes(data)
        try:
            with EventStage(Path(tmp) / "stage", memory_limit_mib=256) as stage:
                read = 0
                for batch in read_events_batches(path, batch_rows=batch_rows):
                    typed, reasons = coerce_event_types(batch)
                    read += len(batch)
                    stage_events(stage, typed, reasons, offer_ids={"o-001"}, placement_ids=["web-banner"],
                                 settings=ValidationConfig(), now=pd.Timestamp("2026-10-01T00:00:00Z"))
                accepted, quarantined = stage.counts()
                reasons = pa.Table.from_batches(list(stage.quarantine_batches("h"))).column("reasons").to_pylist()
        except EventFileError as exc:
            assert str(exc).startswith(f"{path}: ") and "\n" not in str(exc)
            return
    assert accepted + quarantined == read == stage.rows
    assert len(reasons) == quarantined and all(reasons)


def test_clicks_on_logged_decisions_join_their_display_and_bad_ones_are_quarantined(project_dir):
    """docs/data-contract.md, "Clicks on offerflow's decisions": ingestion validates the displays of
    the project's decision log with the events, so a click naming its decision joins its display,
    and a click with an unknown offer, on no display, or in the future is quarantined with its
    reason; logged displays the events file carries too (same event ids) are read once; displays
    after the events' last (valid) time wait for a later run; with `data.decision_log_displays:
    false` the log is not read and the good click has no display."""
    from datetime import datetime, timedelta, timezone

    from offerflow.core.schema import EVENT_SCHEMA
    from offerflow.decisioning.decision_log import log_decisions
    from offerflow.decisioning.engine import build_engine

    config = load_config(project_dir / "offerflow.yaml")
    engine = build_engine(config)
    decision = engine.decide(engine.profiles["profile_id"].iat[0], ["web-sidebar"])
    log_decisions([decision], config.paths.decision_log)
    now = datetime.fromisoformat(decision.decided_at) + timedelta(seconds=1)  # the clicks' time, after the display
    logged = pd.concat([pd.read_parquet(p) for p in config.paths.logged_display_files()])
    shown = decision.placements[0].items[0].offer_id

    def click(event_id, offer, decision_id, at=now):
        return {"event_id": event_id, "timestamp": at, "profile_id": decision.profile_id, "event_type": "click",
                "offer_id": offer, "placement_id": "web-sidebar", "decision_id": decision_id}

    world = pd.read_parquet(project_dir / "data" / "events.parquet").iloc[:500]
    clicks = pd.DataFrame([click("c-ok", shown, decision.decision_id), click("c-offer", "o-nope", decision.decision_id),
                           click("c-none", shown, "dec-none"), click("c-late", shown, decision.decision_id,
                                                                      now + timedelta(days=1))])
    offers = load_catalog(config, build_docs=False)[1]

    def ingest(*parts, **data):
        events = pd.concat(parts, ignore_index=True)
        pa.Table.from_pandas(events, schema=EVENT_SCHEMA, preserve_index=False).to_pandas().to_parquet(
            project_dir / "data" / "loop.parquet", index=False)
        project = with_events(config, "loop.parquet")
        project = project.model_copy(update={"data": project.data.model_copy(update=data)})
        result = ingest_events(project, offers, "loop", now=now, build_docs=False)
        return result, pd.read_parquet(result.quarantine_path).set_index("event_id")["reasons"]

    rows = len(world) + len(logged) + len(clicks)
    for parts, in_events in (((world, clicks), 0), ((world, logged, clicks), len(logged))):
        result, reasons = ingest(*parts)
        assert result.counts() == {"rows": rows, "accepted": rows - 3, "quarantined": 3,
                                   "logged_displays": len(logged) - in_events, "logged_displays_in_events": in_events,
                                   "logged_displays_after_events": 0}
        accepted = pd.read_parquet(result.validated_path)
        assert set(logged["event_id"]) | {"c-ok"} <= set(accepted["event_id"]) and accepted["event_id"].is_unique
        assert reasons["c-offer"].startswith("offer_id: unknown offer 'o-nope'")
        assert reasons["c-none"] == (f"click: no matching display for decision 'dec-none' "
                                     f"(profile {decision.profile_id}, offer {shown})")
        assert reasons["c-late"].startswith("timestamp: in the future")
    result, _ = ingest(world, clicks.iloc[[3]])  # the world's events end before the decision: only a future click
    assert result.counts()["rows"] == len(world) + 1 and result.counts()["logged_displays_after_events"] == len(logged)
    result, reasons = ingest(world, clicks, decision_log_displays=False)
    assert result.counts()["rows"] == len(world) + len(clicks) and result.counts()["logged_displays"] == 0
    assert reasons["c-ok"].startswith(f"click: no matching display for decision '{decision.decision_id}'")
