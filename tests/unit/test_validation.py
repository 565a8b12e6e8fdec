"""Row-level quarantine and Great Expectations suites of `offerflow.ingest.validation`.

Every test works on a copy of the repository's ``great_expectations/`` folder in a temporary
directory, so the committed suites are exercised and never written to.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings as hyp_settings, strategies as st

from offerflow.core.config import ValidationConfig
from offerflow.core.schema import EVENT_COLUMNS
from offerflow.ingest.validation import ValidationReport, validate_events, write_quarantine

REPO_GX = Path(__file__).resolve().parents[2] / "great_expectations"
NOW = datetime(2024, 5, 10, 12, 0, tzinfo=timezone.utc)
T0 = pd.Timestamp("2024-05-10T09:00:00Z")
OFFERS = {"o1", "o2"}
PLACEMENTS = {"web-hero", "email-main"}


def copy_context(target: Path) -> Path:
    if REPO_GX.exists():
        shutil.copytree(REPO_GX, target, ignore=shutil.ignore_patterns("uncommitted"))
    return target


@pytest.fixture(scope="module")
def context_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_context(tmp_path_factory.mktemp("gx") / "great_expectations")


def event(event_id: str, **fields: object) -> dict[str, object]:
    row: dict[str, object] = {
        "event_id": event_id, "timestamp": T0, "profile_id": "p1", "event_type": "display",
        "offer_id": "o1", "placement_id": "web-hero", "channel": "web", "value": np.nan,
        "propensity": 0.5, "decision_id": "d1",
    }
    row.update(fields)
    return row


def frame(rows: list[dict[str, object]]) -> pd.DataFrame:
    out = pd.DataFrame(rows, columns=list(rows[0]) if rows else list(EVENT_COLUMNS))
    out["timestamp"] = pd.to_datetime(out["timestamp"], utc=True).astype("datetime64[us, UTC]")
    for column in ("value", "propensity"):
        out[column] = out[column].astype("float64")
    return out


def clean_rows() -> list[dict[str, object]]:
    """e1 display + e2 its click (decision d1), e3 a display without click, e4 a purchase."""
    return [
        event("e1"),
        event("e2", event_type="click", timestamp=T0 + pd.Timedelta(minutes=3), propensity=np.nan),
        event("e3", offer_id="o2", placement_id="email-main", channel="email", decision_id="d2"),
        event("e4", event_type="purchase", offer_id=None, placement_id=None, propensity=np.nan,
              value=25.0, decision_id=None),
    ]


def run(events: pd.DataFrame, context_dir: Path, **kwargs: object) -> ValidationReport:
    options: dict[str, object] = dict(
        offer_ids=OFFERS, placement_ids=PLACEMENTS, settings=ValidationConfig(),
        context_dir=context_dir, run_id="test-run", now=NOW, build_docs=False,
    )
    options.update(kwargs)
    report = validate_events(events, **options)  # type: ignore[arg-type]
    assert len(report.accepted) + len(report.quarantined) == len(events) == report.row_count
    return report


def reasons_of(report: ValidationReport) -> dict[str, str]:
    return dict(zip(report.quarantined["event_id"].astype(str), report.quarantined["reasons"]))


def test_clean_frame_is_fully_accepted(context_dir: Path) -> None:
    report = run(frame(clean_rows()), context_dir)
    assert report.success and not report.warnings
    assert report.quarantined.empty
    assert list(report.accepted.columns) == list(EVENT_COLUMNS)
    assert report.accepted["event_id"].tolist() == ["e1", "e2", "e3", "e4"]
    assert "PASSED" in report.summary() and "4 accepted, 0 quarantined" in report.summary()


BAD_ROWS = [
    ("e4", {"event_id": None}, "event_id: missing"),
    ("e4", {"profile_id": ""}, "profile_id: missing"),
    ("e4", {"event_type": None}, "event_type: missing"),
    ("e4", {"timestamp": pd.NaT}, "timestamp: missing or unparseable"),
    ("e4", {"timestamp": pd.Timestamp(NOW) + pd.Timedelta(minutes=11)},
     "timestamp: in the future (> now + 10 min)"),
    ("e3", {"offer_id": None}, "offer_id: missing for display/click"),
    ("e3", {"placement_id": ""}, "placement_id: missing for display/click"),
    ("e3", {"offer_id": "o9"}, "offer_id: unknown offer 'o9'"),
    ("e4", {"placement_id": "push-x"}, "placement_id: unknown placement 'push-x'"),
    ("e3", {"propensity": 0.0}, "propensity: not in (0, 1]"),
    ("e3", {"propensity": 1.5}, "propensity: not in (0, 1]"),
    ("e3", {"propensity": -0.2}, "propensity: not in (0, 1]"),
    ("e3", {"propensity": np.inf}, "propensity: not in (0, 1]"),
    ("e4", {"value": -3.0}, "value: negative"),
    ("e3", {"_parse_error": "line 3: invalid JSON"}, "line 3: invalid JSON"),
]


@pytest.mark.parametrize(("target", "change", "reason"), BAD_ROWS, ids=[r[2] for r in BAD_ROWS])
def test_each_bad_row_kind_is_quarantined_with_its_reason(
    context_dir: Path, target: str, change: dict[str, object], reason: str
) -> None:
    rows = clean_rows()
    if "_parse_error" in change:
        for row in rows:
            row["_parse_error"] = ""
    index = ["e1", "e2", "e3", "e4"].index(target)
    rows[index].update(change)
    report = run(frame(rows), context_dir)
    assert report.quarantined["reasons"].tolist() == [reason]
    assert report.quarantined["_source_line"].tolist() == [index + 1]
    assert len(report.accepted) == 3
    assert "_parse_error" not in report.accepted.columns


def test_null_value_and_propensity_are_not_logged_and_fine(context_dir: Path) -> None:
    rows = clean_rows()
    rows[2].update(propensity=np.nan, value=np.nan)
    assert run(frame(rows), context_dir).quarantined.empty


def test_future_tolerance_is_configurable(context_dir: Path) -> None:
    now = pd.Timestamp(NOW)
    rows = clean_rows()
    rows[3]["timestamp"] = now + pd.Timedelta(minutes=9)
    assert run(frame(rows), context_dir).quarantined.empty  # inside the default 10 min
    strict = ValidationConfig(future_tolerance_minutes=0)
    report = run(frame(rows), context_dir, settings=strict)
    assert reasons_of(report) == {"e4": "timestamp: in the future (> now + 0 min)"}
    rows[3]["timestamp"] = now
    assert run(frame(rows), context_dir, settings=strict).quarantined.empty


def test_window_bounds_with_date_only_end_including_that_day(context_dir: Path) -> None:
    rows = clean_rows()
    rows[2]["timestamp"] = pd.Timestamp("2024-05-09T23:59:59Z")
    rows[3]["timestamp"] = pd.Timestamp("2024-05-10T23:59:59Z")  # still the end day
    rows.append(dict(rows[3], event_id="e5", timestamp=pd.Timestamp("2024-05-11T00:00:00Z")))
    window = ValidationConfig(window_start="2024-05-10", window_end="2024-05-10")
    later = datetime(2024, 5, 12, tzinfo=timezone.utc)
    report = run(frame(rows), context_dir, settings=window, now=later)
    assert reasons_of(report) == {
        "e3": "timestamp: before window start", "e5": "timestamp: after window end",
    }
    exact = ValidationConfig(window_end="2024-05-10T12:00:00+02:00")  # = 10:00 UTC
    report = run(frame(rows), context_dir, settings=exact, now=later)
    assert set(reasons_of(report)) == {"e4", "e5"}
    with pytest.raises(ValueError, match="window_start"):
        run(frame(rows), context_dir, settings=ValidationConfig(window_start="last week"))


def test_a_row_with_several_problems_lists_all_reasons(context_dir: Path) -> None:
    rows = clean_rows()
    rows[2].update(profile_id=None, offer_id="o9", placement_id=None, propensity=2.0,
                   value=-1.0, timestamp=pd.NaT)
    report = run(frame(rows), context_dir, pre_reasons=pd.Series(["", "", "value: '-1' odd", ""]))
    assert reasons_of(report)["e3"] == "; ".join([
        "value: '-1' odd", "profile_id: missing", "timestamp: missing or unparseable",
        "placement_id: missing for display/click", "offer_id: unknown offer 'o9'",
        "propensity: not in (0, 1]", "value: negative",
    ])


def test_pre_reasons_are_merged_and_must_align(context_dir: Path) -> None:
    pre = pd.Series(["", "timestamp: unparseable 'yesterday'", "", None])
    report = run(frame(clean_rows()), context_dir, pre_reasons=pre)
    # e2 is quarantined by its parse reason; nothing else depends on it
    assert reasons_of(report) == {"e2": "timestamp: unparseable 'yesterday'"}
    with pytest.raises(ValueError, match="pre_reasons"):
        run(frame(clean_rows()), context_dir, pre_reasons=pd.Series([""]))


def test_identical_duplicates_keep_the_first_row(context_dir: Path) -> None:
    rows = clean_rows()
    events = frame(rows + [dict(rows[2]), dict(rows[2])])
    events["_source_file"] = "events.jsonl"
    events["_source_line"] = np.arange(10, 16)  # provenance differs, content is identical
    report = run(events, context_dir)
    assert report.accepted["event_id"].tolist() == ["e1", "e2", "e3", "e4"]
    assert report.quarantined["reasons"].tolist() == ["event_id: duplicate (identical row)"] * 2
    assert report.quarantined["_source_line"].tolist() == [14, 15]
    assert report.quarantined["_source_file"].tolist() == ["events.jsonl"] * 2


def test_conflicting_duplicates_quarantine_every_copy(context_dir: Path) -> None:
    rows = clean_rows()
    events = frame(rows + [dict(rows[3], value=30.0), dict(rows[3])])
    report = run(events, context_dir)
    assert report.accepted["event_id"].tolist() == ["e1", "e2", "e3"]
    assert report.quarantined["_source_line"].tolist() == [4, 5, 6]
    assert report.quarantined["reasons"].tolist() == [
        "event_id: duplicate with conflicting content",
        "event_id: duplicate with conflicting content",
        "event_id: duplicate (identical row); event_id: duplicate with conflicting content",
    ]
    assert report.accepted["event_id"].is_unique
    (warning,) = report.warnings
    assert warning.name == "expect_column_values_to_be_between(duplicate_event_id_rows)"
    assert warning.observed == "3 of 6 rows share their event_id with another row"


def test_click_needs_a_display_of_the_same_decision_and_offer(context_dir: Path) -> None:
    rows = clean_rows() + [
        event("e5", event_type="click", decision_id="d9", propensity=np.nan),
        event("e6", event_type="click", decision_id="d2", offer_id="o1", propensity=np.nan),
    ]
    report = run(frame(rows), context_dir)
    assert reasons_of(report) == {
        "e5": "click: no matching display for decision 'd9' (profile p1, offer o1)",
        "e6": "click: no matching display for decision 'd2' (profile p1, offer o1)",
    }


def test_click_of_a_quarantined_display_is_quarantined_too(context_dir: Path) -> None:
    rows = clean_rows()
    rows[0]["propensity"] = 7.0
    report = run(frame(rows), context_dir)
    assert reasons_of(report) == {
        "e1": "propensity: not in (0, 1]",
        "e2": "click: no matching display for decision 'd1' (profile p1, offer o1)",
    }


def test_click_without_decision_matches_a_display_within_24_hours_before(context_dir: Path) -> None:
    def click(event_id: str, hours: float, **fields: object) -> dict[str, object]:
        return event(event_id, event_type="click", decision_id=None, propensity=np.nan,
                     timestamp=T0 + pd.Timedelta(hours=hours), **fields)

    rows = clean_rows() + [
        click("c-same-instant", 0), click("c-23h", 23), click("c-25h", 25),
        click("c-before-display", -1), click("c-other-placement", 1, placement_id="email-main"),
        click("c-other-profile", 1, profile_id="p2"),
    ]
    report = run(frame(rows), context_dir, now=datetime(2024, 5, 12, tzinfo=timezone.utc))
    suffix = "(profile {p}, offer o1, placement {pl})"
    text = "click: no matching display within 24 h before it " + suffix
    assert reasons_of(report) == {
        "c-25h": text.format(p="p1", pl="web-hero"),
        "c-before-display": text.format(p="p1", pl="web-hero"),
        "c-other-placement": text.format(p="p1", pl="email-main"),
        "c-other-profile": text.format(p="p2", pl="web-hero"),
    }
    assert "click: no matching display within 24 h before it" in report.reason_counts()


def test_few_bad_rows_are_quarantined_but_many_fail_the_run(context_dir: Path) -> None:
    rows = [event(f"e{i}", event_type="purchase", offer_id=None, placement_id=None,
                  decision_id=None, propensity=np.nan) for i in range(200)]
    rows[0]["profile_id"] = None  # 0.5 % missing: below the 1 % "mostly" threshold
    report = run(frame(rows), context_dir)
    assert report.success and len(report.quarantined) == 1
    for row in rows[1:10]:
        row["profile_id"] = None  # 5 %: the export is broken
    report = run(frame(rows), context_dir)
    assert not report.success and len(report.quarantined) == 10
    (failure,) = report.critical_failures
    assert failure.name == "expect_column_values_to_not_be_null(profile_id)"
    assert failure.observed.startswith("10 of 200 values unexpected (5.00%)")


def test_row_count_drop_beyond_the_allowed_share_fails_critically(context_dir: Path) -> None:
    events = frame(clean_rows())
    assert run(events, context_dir, previous_row_count=8).success  # 4 >= ceil(8 * 0.5)
    report = run(events, context_dir, previous_row_count=10)
    assert not report.success and report.quarantined.empty
    (failure,) = report.critical_failures
    assert failure.name == "expect_column_values_to_be_between(rows)"
    assert failure.observed == "4 rows; at least 5 expected (previous run 10 rows, validation.max_row_drop_share 50%: check the file is complete or raise the setting)"
    summary = report.summary()
    assert "FAILED" in summary and "Critical failures:" in summary
    assert "4 rows; at least 5 expected (previous run 10 rows, validation.max_row_drop_share 50%: check the file is complete or raise the setting)" in summary
    assert failure.why in summary


def test_conversion_rate_above_one_fails_critically(context_dir: Path) -> None:
    rows = clean_rows() + [
        event("e5", event_type="click", timestamp=T0 + pd.Timedelta(minutes=4), propensity=np.nan),
    ]
    report = run(frame(rows), context_dir)
    assert report.quarantined.empty  # both clicks match the display of decision d1
    (failure,) = report.critical_failures
    assert failure.name == "expect_column_values_to_be_between(conversion_rate)"
    assert failure.observed == "offer o1: 2 clicks / 1 displays"
    assert "offer o1: 2 clicks / 1 displays" in report.summary()


@pytest.mark.parametrize("events", [frame([]), pd.DataFrame()], ids=["no rows", "no columns"])
def test_empty_frame_is_a_critical_no_events_failure(context_dir: Path, events: pd.DataFrame) -> None:
    report = run(events, context_dir)
    assert not report.success
    assert report.critical_failures[0].name == "no events"
    assert report.accepted.empty and list(report.accepted.columns) == list(EVENT_COLUMNS)
    assert "0 rows: 0 accepted, 0 quarantined" in report.summary()


def test_data_docs_are_built_for_every_run(tmp_path: Path) -> None:
    context = copy_context(tmp_path / "great_expectations")
    report = run(frame(clean_rows()), context, build_docs=True)
    assert report.data_docs_path is not None and report.data_docs_path.name == "index.html"
    assert report.data_docs_path.is_file()
    assert report.data_docs_path.is_relative_to(context / "uncommitted")
    assert f"Data Docs: {report.data_docs_path}" in report.summary()
    assert run(frame(clean_rows()), context).data_docs_path is None


def test_outcomes_carry_severity_and_why(context_dir: Path) -> None:
    report = run(frame(clean_rows()), context_dir)
    assert len(report.outcomes) == 17
    assert {o.severity for o in report.outcomes} == {"critical", "warning"}
    assert all(o.success and o.why.endswith(".") and o.observed for o in report.outcomes)
    names = {o.name: o.severity for o in report.outcomes}
    assert names["expect_column_values_to_be_in_set(offer_id)"] == "critical"
    assert names["expect_column_values_to_be_between(duplicate_event_id_rows)"] == "warning"
    assert names["expect_column_values_to_be_between(rows)"] == "critical"


def test_committed_suites_document_every_expectation() -> None:
    for name in ("events", "event_totals", "offer_conversion"):
        suite = json.loads((REPO_GX / "expectations" / f"{name}.json").read_text())
        assert suite["expectations"]
        for expectation in suite["expectations"]:
            assert expectation["meta"]["severity"] in {"critical", "warning"}
            assert len(expectation["meta"]["why"]) > 20
            if "mostly" in expectation["kwargs"]:
                assert "mostly=" in expectation["meta"]["threshold"]


def test_rerunning_rewrites_no_committed_file(tmp_path: Path) -> None:
    context = tmp_path / "great_expectations"  # starts empty, like a fresh project
    run(frame(clean_rows()), context)
    committed = {p: p.read_bytes() for p in context.rglob("*")
                 if p.is_file() and "uncommitted" not in p.parts}
    assert context / "expectations" / "events.json" in committed
    run(frame(clean_rows()), context, build_docs=True)
    assert {p: p.read_bytes() for p in committed} == committed


def test_provenance_and_quarantine_file(context_dir: Path, tmp_path: Path) -> None:
    rows = clean_rows()
    rows[3]["value"] = -1.0
    events = frame(rows)
    events["campaign"] = "spring"  # extra columns survive
    report = run(events, context_dir)
    assert list(report.accepted.columns) == [*EVENT_COLUMNS, "campaign"]
    warnings = {w.name: w.observed for w in report.warnings}  # kept, and said so
    assert warnings["expect_table_columns_to_match_set"] == "extra columns (kept): campaign"
    q = report.quarantined
    assert q[["_source_file", "_source_line", "run_id"]].values.tolist() == [["<memory>", 4, "test-run"]]
    path = write_quarantine(report, tmp_path / "quarantine")
    assert path == tmp_path / "quarantine" / "quarantine-test-run.parquet"
    written = pd.read_parquet(path)
    assert written["reasons"].tolist() == ["value: negative"]
    assert written["campaign"].tolist() == ["spring"]
    assert write_quarantine(run(frame(clean_rows()), context_dir), tmp_path / "none") is None


def test_raw_string_columns_are_coerced(context_dir: Path) -> None:
    events = frame(clean_rows())
    events["timestamp"] = ["2024-05-10T09:00:00Z", "2024-05-10T09:03:00+00:00", "yesterday",
                           "2024-05-10T09:00:00Z"]
    events["propensity"] = ["0.5", None, "0.5", "nan"]
    report = run(events, context_dir)
    assert reasons_of(report) == {
        "e3": "timestamp: missing or unparseable", "e4": "propensity: not a number",
    }
    assert str(report.accepted["timestamp"].dtype).startswith("datetime64")
    assert report.quarantined["timestamp"].tolist() == ["yesterday", "2024-05-10T09:00:00Z"]


ids = st.sampled_from(["e1", "e2", "e3", "e4", None, ""])
rows_strategy = st.lists(
    st.fixed_dictionaries({
        "event_id": ids,
        "timestamp": st.one_of(
            st.just(pd.NaT),
            st.integers(-3 * 24 * 60, 24 * 60).map(lambda m: pd.Timestamp(NOW) + pd.Timedelta(minutes=m)),
        ),
        "profile_id": st.sampled_from(["p1", "p2", None]),
        "event_type": st.sampled_from(["display", "click", "purchase", None, "bad type"]),
        "offer_id": st.sampled_from(["o1", "o2", "unknown", None]),
        "placement_id": st.sampled_from(["web-hero", "nowhere", None]),
        "channel": st.sampled_from(["web", None]),
        "value": st.sampled_from([np.nan, 0.0, 12.5, -1.0]),
        "propensity": st.sampled_from([np.nan, 0.0, 0.3, 1.0, 1.5, -0.1, np.inf]),
        "decision_id": st.sampled_from(["d1", "d2", None]),
    }),
    max_size=30,
)


@hyp_settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=rows_strategy)
def test_malformed_frames_conserve_rows(rows: list[dict[str, object]], context_dir: Path) -> None:
    report = run(frame(rows), context_dir)
    accepted = report.accepted
    assert accepted["event_id"].notna().all() and accepted["event_id"].is_unique
    assert accepted["offer_id"].dropna().isin(OFFERS).all()
    assert not ((accepted["propensity"] <= 0) | (accepted["propensity"] > 1)).any()
    assert (report.quarantined["reasons"].str.len() > 0).all()
    assert f"{len(accepted)} accepted, {len(report.quarantined)} quarantined" in report.summary()
    if not rows:
        assert report.critical_failures[0].name == "no events"


# -- streaming: batches staged one by one give the verdict of the whole frame ------------------


def staged_verdict(events: pd.DataFrame, cuts: list[int], tmp: Path) -> tuple[list, list, int, int]:
    """(accepted ids, quarantined (id, line, reasons), counts) with `events` staged in pieces."""
    from offerflow.ingest.staging import EventStage
    from offerflow.ingest.validation import stage_events

    with EventStage(tmp / "stage", memory_limit_mib=256) as stage:
        for start, stop in zip([0, *cuts], [*cuts, len(events)]):
            stage_events(stage, events.iloc[start:stop], offer_ids=OFFERS, placement_ids=PLACEMENTS,
                         settings=ValidationConfig(), now=pd.Timestamp(NOW))
        accepted = pa.Table.from_batches(list(stage.accepted_batches(sort=False))).to_pandas()
        quarantined = pa.Table.from_batches(list(stage.quarantine_batches("r"))).to_pandas()
        counts = stage.counts()
    assert counts == (len(accepted), len(quarantined)) and sum(counts) == len(events)
    return (accepted["event_id"].tolist(),
            list(zip(quarantined["event_id"], quarantined["_source_line"], quarantined["reasons"])), *counts)


@hyp_settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=rows_strategy, data=st.data())
def test_batches_give_the_verdict_of_one_frame(rows: list[dict[str, object]], data: st.DataObject) -> None:
    """Duplicates and clicks whose display sits in another batch are judged the same."""
    events = frame(rows) if rows else frame([event("e1")]).iloc[:0]
    events["_source_file"] = "f"
    events["_source_line"] = np.arange(1, len(events) + 1)
    cuts = sorted(set(data.draw(st.lists(st.integers(0, len(events)), max_size=4))))
    with tempfile.TemporaryDirectory() as tmp:
        assert staged_verdict(events, cuts, Path(tmp)) == staged_verdict(events, [], Path(tmp))


def test_cross_batch_duplicates_and_clicks(tmp_path: Path) -> None:
    rows = clean_rows() + [dict(clean_rows()[2]), event("e5", event_type="click", decision_id="d9",
                                                        propensity=np.nan)]
    events = frame(rows)
    accepted, quarantined, n_accepted, n_quarantined = staged_verdict(events, [1, 2, 4, 5], tmp_path)
    assert accepted == ["e1", "e2", "e3", "e4"]  # e2's display e1 was in the batch before
    assert quarantined == [
        ("e3", 5, "event_id: duplicate (identical row)"),
        ("e5", 6, "click: no matching display for decision 'd9' (profile p1, offer o1)"),
    ]


def test_large_deliveries_run_the_events_suite_on_a_sample(context_dir: Path) -> None:
    rows = [event(f"e{i}", event_type="purchase", offer_id=None, placement_id=None,
                  decision_id=None, propensity=np.nan) for i in range(400)]
    for row in rows[:40]:
        row["profile_id"] = None  # 10 %: fails the 1 % "mostly" in the sample too
    sampled = ValidationConfig().model_copy(update={"expectation_sample_rows": 100})
    report = run(frame(rows), context_dir, settings=sampled)
    assert 60 <= report.sample_rows <= 140 and report.row_count == 400
    assert report.quarantined_count == 40  # row checks still cover every row
    (failure,) = report.critical_failures
    assert failure.name == "expect_column_values_to_not_be_null(profile_id)"
    assert failure.observed.endswith(f"(in a sample of {report.sample_rows} of 400 rows)")
    assert f"column expectations evaluated on a sample of {report.sample_rows} rows" in report.summary()
    again = run(frame(rows), context_dir, settings=sampled)
    assert again.outcomes == report.outcomes  # the sample is deterministic
