"""Reading event files: every format, the XDM mapping, whole-file errors, nothing lost."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from offerflow.ingest import csv_events as event_csv, file_readers as event_files
from offerflow.ingest.events import EventFileError, coerce_event_types, read_events, read_events_batches
from offerflow.core.schema import EVENT_COLUMNS

PROVENANCE = ["_source_file", "_source_line", "_parse_error"]
HEADER = ",".join(EVENT_COLUMNS)


def frame(n: int = 3, **overrides) -> pd.DataFrame:
    data = {
        "event_id": [f"e{i}" for i in range(n)],
        "timestamp": [f"2026-10-01T08:00:{i % 60:02d}Z" for i in range(n)],
        "profile_id": [f"p{i % 7}" for i in range(n)],
        "event_type": ["display", "click", "purchase"][:n] if n <= 3 else ["display"] * n,
        "offer_id": [f"o{i % 5}" for i in range(n)],
        "placement_id": ["web-banner"] * n,
        "channel": ["web"] * n,
        "value": [float(i) + 0.5 for i in range(n)],
        "propensity": [0.25] * n,
        "decision_id": [f"d{i}" for i in range(n)],
    }
    data.update(overrides)
    return pd.DataFrame(data)


def write(path: Path, content: str | bytes) -> Path:
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def csv_text(*rows: str, header: str = HEADER) -> str:
    return "\n".join([header, *rows]) + "\n"


def row(i: int = 0, **fields) -> str:
    values = {c: v for c, v in zip(EVENT_COLUMNS, frame(1).iloc[0].tolist())} | {"event_id": f"e{i}"} | fields
    return ",".join("" if values[c] is None else str(values[c]) for c in EVENT_COLUMNS)


def ndjson(path: Path, *objects) -> Path:
    lines = [o if isinstance(o, str) else json.dumps(o) for o in objects]
    return write(path, "\n".join(lines) + "\n")


def xdm_event(event_id="e-123", event_type="decisioning.propositionDisplay", items=("offer-42",), **extra):
    event = {
        "_id": event_id,
        "timestamp": "2026-10-01T08:15:02Z",
        "eventType": event_type,
        "identityMap": {"ECID": [{"id": "4711"}], "Email": [{"id": "a@example.com"}]},
        "_experience": {"decisioning": {
            "propositionEventType": {"display": 1},
            "propositions": [{"id": "dec-9", "scope": "web-banner",
                              "scopeDetails": {"placement": {"id": "web-banner-id"}},
                              "items": [{"id": i} for i in items]}],
        }},
    }
    event.update(extra)
    return event


# --- round trips -------------------------------------------------------------------------------


def test_csv_round_trip(tmp_path):
    source = frame()
    path = tmp_path / "events.csv"
    source.to_csv(path, index=False)
    got = read_events(path)
    assert list(got.columns) == [*EVENT_COLUMNS, *PROVENANCE]
    pd.testing.assert_frame_equal(got[list(EVENT_COLUMNS)], source, check_dtype=False)
    assert got["timestamp"].dtype == "str" and got["value"].dtype == "float64"
    assert got["_source_file"].tolist() == [str(path)] * 3
    assert got["_source_line"].tolist() == [2, 3, 4] and got["_source_line"].dtype == "int64"
    assert got["_parse_error"].tolist() == ["", "", ""]


def test_parquet_round_trip_keeps_types_as_stored(tmp_path):
    source = frame(timestamp=pd.to_datetime(["2026-10-01T08:00:00Z"] * 3, utc=True).as_unit("us"))
    source.to_parquet(tmp_path / "events.parquet", index=False)
    got = read_events(str(tmp_path / "events.parquet"))
    assert list(got.columns) == [*EVENT_COLUMNS, *PROVENANCE]
    pd.testing.assert_frame_equal(got[list(EVENT_COLUMNS)], source, check_dtype=False)
    assert str(got["timestamp"].dtype) == "datetime64[us, UTC]"
    assert got["_source_line"].tolist() == [1, 2, 3]
    (tmp_path / "x.pq").write_bytes((tmp_path / "events.parquet").read_bytes())
    assert len(read_events(tmp_path / "x.pq")) == 3


def test_flat_ndjson_round_trip(tmp_path):
    records = frame().to_dict("records")
    records[0]["profile_id"] = 4711  # a JSON number id becomes the string "4711"
    for name in ("events.ndjson", "events.jsonl", "events.json"):
        got = read_events(ndjson(tmp_path / name, *records))
        assert list(got.columns) == [*EVENT_COLUMNS, *PROVENANCE]
        assert got["profile_id"].tolist() == ["4711", "p1", "p2"]
        assert got["value"].tolist() == [0.5, 1.5, 2.5] and got["value"].dtype == "float64"
        assert got["_source_line"].tolist() == [1, 2, 3]


def test_extra_columns_kept_after_contract_columns_missing_optional_columns_null(tmp_path):
    text = "loyalty,event_id,timestamp,profile_id,event_type,score\ngold,e1,2026-10-01T08:00:00Z,p1,purchase,7\n"
    got = read_events(write(tmp_path / "e.csv", text))
    assert list(got.columns) == [*EVENT_COLUMNS, "loyalty", "score", *PROVENANCE]
    assert got.loc[0, "loyalty"] == "gold" and got.loc[0, "score"] == "7"
    assert got[["offer_id", "decision_id"]].isna().all().all() and got["value"].dtype == "float64"
    pd.DataFrame({"zz": [1], **frame(1)}).to_parquet(tmp_path / "e.parquet")
    assert list(read_events(tmp_path / "e.parquet").columns) == [*EVENT_COLUMNS, "zz", *PROVENANCE]
    got = read_events(ndjson(tmp_path / "e.ndjson", {"event_id": "e1", "b": 1, "a": {"x": 1}}, {"c": "z"}))
    assert list(got.columns) == [*EVENT_COLUMNS, "b", "a", "c", *PROVENANCE]
    assert got["a"].tolist()[0] == {"x": 1} and got["c"].tolist()[1] == "z"


def test_file_columns_with_provenance_names_are_renamed(tmp_path):
    text = csv_text(row(0) + ",old.csv", header=HEADER + ",_source_file")
    got = read_events(write(tmp_path / "e.csv", text))
    assert got.loc[0, "_source_file_in_file"] == "old.csv"
    assert got.loc[0, "_source_file"] == str(tmp_path / "e.csv")


# --- XDM ---------------------------------------------------------------------------------------


def test_xdm_display_single_item(tmp_path):
    got = read_events(ndjson(tmp_path / "x.ndjson", xdm_event()))
    first = got.iloc[0]
    mapped = ["event_id", "timestamp", "profile_id", "event_type", "offer_id", "placement_id", "decision_id"]
    assert first[mapped].tolist() == [
        "e-123", "2026-10-01T08:15:02Z", "4711", "display", "offer-42", "web-banner-id", "dec-9",
    ]
    assert first[["channel", "value", "propensity"]].isna().all() and first["_parse_error"] == ""
    assert len(got) == 1 and list(got.columns) == [*EVENT_COLUMNS, *PROVENANCE]


def test_xdm_interact_and_proposition_event_type(tmp_path):
    interact = xdm_event("e-1", "decisioning.propositionInteract")
    by_flag = xdm_event("e-2", "web.webinteraction.linkClicks")
    by_flag["_experience"]["decisioning"]["propositionEventType"] = {"interact": 1}
    page_view = xdm_event("e-3", "web.webpagedetails.pageViews")  # display == 1 from the fixture
    got = read_events(ndjson(tmp_path / "x.ndjson", interact, by_flag, page_view))
    assert got["event_type"].tolist() == ["click", "click", "display"]


def test_xdm_multi_item_propositions_give_one_row_per_item_with_unique_ids(tmp_path):
    event = xdm_event(items=("o1", "o2"))
    event["_experience"]["decisioning"]["propositions"].append(
        {"id": "dec-10", "scope": "email-hero", "items": [{"id": "o3", "propensity": 0.3}],
         "scopeDetails": {"channel": {"_type": "https://ns.adobe.com/xdm/channel-types/email"}, "propensity": 0.9}}
    )
    got = read_events(ndjson(tmp_path / "x.ndjson", event))
    assert got["event_id"].tolist() == ["e-123#0", "e-123#1", "e-123#2"]
    assert got["offer_id"].tolist() == ["o1", "o2", "o3"]
    assert got["placement_id"].tolist() == ["web-banner-id", "web-banner-id", "email-hero"]
    assert got["decision_id"].tolist() == ["dec-9", "dec-9", "dec-10"]
    assert got["channel"].tolist()[2] == "email" and got["propensity"].tolist()[2] == 0.3
    assert got["_source_line"].tolist() == [1, 1, 1]


def test_xdm_purchase_passes_through_and_channel_inferred(tmp_path):
    purchase = {"_id": "e-9", "timestamp": "2026-10-02T10:00:00Z", "eventType": "commerce.purchases",
                "identityMap": {"ECID": [{"id": "4711"}]},
                "commerce": {"purchases": {"value": 1}, "order": {"priceTotal": 59.9}},
                "web": {"webPageDetails": {"URL": "https://example.com"}}}
    bare = {"_id": "e-10", "eventType": "commerce.purchases", "commerce": {"purchases": {"value": 2}},
            "channel": {"_type": "https://ns.adobe.com/xdm/channel-types/inApp"}}
    got = read_events(ndjson(tmp_path / "x.ndjson", purchase, bare))
    assert got["event_type"].tolist() == ["commerce.purchases", "commerce.purchases"]
    assert got["value"].tolist() == [59.9, 2.0] and got["channel"].tolist() == ["web", "in_app"]
    assert got[["offer_id", "placement_id", "decision_id"]].isna().all().all()


def test_xdm_identity_namespace_profile_field_value_field(tmp_path):
    event = xdm_event(_tenant={"crm": {"id": "CRM-1"}, "amount": "12.5"})
    path = ndjson(tmp_path / "x.ndjson", event)
    assert read_events(path, identity_namespace="Email").loc[0, "profile_id"] == "a@example.com"
    assert pd.isna(read_events(path, identity_namespace="Phone").loc[0, "profile_id"])
    got = read_events(path, profile_field="_tenant.crm.id", value_field="_tenant.amount")
    assert got.loc[0, "profile_id"] == "CRM-1" and got.loc[0, "value"] == 12.5
    assert read_events(path, profile_field="identityMap.Email.0.id").loc[0, "profile_id"] == "a@example.com"


def test_xdm_missing_propositions_or_items_keep_a_flagged_row(tmp_path):
    no_props = xdm_event("e-1")
    no_props["_experience"]["decisioning"]["propositions"] = []
    no_items = xdm_event("e-2", items=())
    no_item_id = xdm_event("e-3")
    no_item_id["_experience"]["decisioning"]["propositions"][0]["items"] = [{"name": "x"}]
    got = read_events(ndjson(tmp_path / "x.ndjson", no_props, no_items, no_item_id))
    assert got["event_id"].tolist() == ["e-1", "e-2", "e-3"] and got["offer_id"].isna().all()
    assert got["_parse_error"].tolist() == [
        "XDM: display event has no propositions",
        "XDM: proposition 'dec-9' has no items",
        "XDM: proposition 'dec-9' item 0 has no id",
    ]


def test_mixed_xdm_and_flat_lines(tmp_path):
    got = read_events(ndjson(tmp_path / "x.ndjson", xdm_event(), frame(1).to_dict("records")[0]))
    assert got["event_id"].tolist() == ["e-123", "e0"]


def test_nested_value_in_a_contract_field_is_flagged(tmp_path):
    got = read_events(ndjson(tmp_path / "x.ndjson", {"event_id": {"a": 1}, "value": True}))
    assert got.loc[0, "_parse_error"] == "event_id: expected a scalar, got a JSON object"
    assert got.loc[0, "value"] == "true"  # kept as text: the validator says it is not a number


# --- whole-file errors -------------------------------------------------------------------------


def error_of(path, **kwargs) -> str:
    with pytest.raises(EventFileError) as info:
        read_events(path, **kwargs)
    return str(info.value)


def test_file_not_found_and_unknown_format(tmp_path):
    assert error_of(tmp_path / "events.csv") == f"{tmp_path / 'events.csv'}: file not found"
    assert error_of(write(tmp_path / "events.txt", "x")) == (
        f"{tmp_path / 'events.txt'}: unknown format '.txt' (expected .csv, .parquet, .ndjson)"
    )
    no_extension = write(tmp_path / "events", "x")
    assert error_of(no_extension) == f"{no_extension}: unknown format (no extension) (expected .csv, .parquet, .ndjson)"


@pytest.mark.parametrize("name", ["events.csv", "events.ndjson", "events.parquet"])
def test_empty_file(tmp_path, name):
    assert error_of(write(tmp_path / name, b"")) == f"{tmp_path / name}: empty file"


def test_blank_files_are_empty(tmp_path):
    assert error_of(write(tmp_path / "e.csv", "\n\n")).endswith(": empty file")
    assert error_of(write(tmp_path / "e.ndjson", "\n  \n")).endswith(": empty file")


@pytest.mark.parametrize(("separator", "name"), [(";", "semicolons"), ("\t", "tabs"), ("|", "'|'")])
def test_a_csv_split_by_another_separator_says_so(tmp_path, separator, name):
    header = separator.join(["event_id", "timestamp", "profile_id", "event_type"])
    path = write(tmp_path / "events.csv", f"{header}\ne1{separator}2026-11-01T00:00:00Z{separator}p1{separator}buy\n")
    assert error_of(path) == (f"{path}: the header is one column split by {name}, not commas: "
                              "event CSV files must be comma-separated")


def test_missing_required_columns(tmp_path):
    path = write(tmp_path / "events.csv", "event_id,event_type\ne1,display\n")
    assert error_of(path) == f"{path}: missing required column(s): profile_id, timestamp"
    frame(1).drop(columns=["timestamp"]).to_parquet(tmp_path / "events.parquet")
    parquet = tmp_path / "events.parquet"
    assert error_of(parquet) == f"{parquet}: missing required column(s): timestamp"
    full = write(tmp_path / "full.csv", csv_text(row()))
    assert error_of(full, profile_field="crm_id") == f"{full}: missing required column(s): crm_id"
    assert error_of(full, value_field="amount") == f"{full}: missing required column(s): amount"


def test_not_a_parquet_file(tmp_path):
    path = write(tmp_path / "events.parquet", "event_id,timestamp\n")
    assert error_of(path) == f"{path}: not a Parquet file"
    good = tmp_path / "good.parquet"
    frame().to_parquet(good)
    data = good.read_bytes()
    broken = write(tmp_path / "broken.parquet", data[:4] + b"\0" * 200 + data[-8:])
    assert error_of(broken).startswith(f"{broken}: corrupt Parquet file (")


def test_not_utf8_reports_the_byte_offset(tmp_path):
    header = HEADER + "\n"
    good = row(0) + "\n"
    path = write(tmp_path / "events.csv", (header + good).encode() + b"e1,\xff\n")
    offset = len(header) + len(good) + 3
    assert error_of(path) == f"{path}: not UTF-8 text (invalid byte 0xff at byte offset {offset})"
    # on a line that is also malformed (the slow path) and in the header
    path = write(tmp_path / "b.csv", (header + good).encode() + b"\xfe\n" + good.encode())
    assert error_of(path).endswith(f"not UTF-8 text (invalid byte 0xfe at byte offset {len(header) + len(good)})")
    path = write(tmp_path / "c.csv", b"\xef\xbb\xbfevent_id,\xc3(\n")
    assert error_of(path).endswith("not UTF-8 text (invalid byte 0xc3 at byte offset 12)")
    line = json.dumps({"event_id": "e1"}) + "\n"
    path = write(tmp_path / "events.ndjson", line.encode() + b'{"event_id": "\xff"}\n')
    assert error_of(path) == f"{path}: not UTF-8 text (invalid byte 0xff at byte offset {len(line) + 14})"


def test_other_whole_file_errors(tmp_path):
    path = write(tmp_path / "d.csv", "event_id,timestamp,profile_id,event_type,event_id\n")
    assert error_of(path) == f"{path}: duplicate column name(s): event_id"
    path = write(tmp_path / "a.json", '[{"event_id": "e1"},\n{"event_id": "e2"}]\n')
    assert error_of(path) == f"{path}: a JSON array, not NDJSON (expected one JSON object per line)"
    both = write(tmp_path / "both.csv", csv_text(row() + ",c1", header=HEADER + ",crm_id"))
    assert error_of(both, profile_field="crm_id") == (
        f"{both}: has both a profile_id column and the profile_field column 'crm_id'"
    )
    (tmp_path / "empty_dir").mkdir()
    assert error_of(tmp_path / "empty_dir") == f"{tmp_path / 'empty_dir'}: no Parquet files in directory"


# --- nothing lost ------------------------------------------------------------------------------


def test_header_only_csv_is_an_empty_frame_with_the_file_columns(tmp_path):
    got = read_events(write(tmp_path / "e.csv", HEADER + ",extra\n"))
    assert got.empty and list(got.columns) == [*EVENT_COLUMNS, "extra", *PROVENANCE]
    assert got["value"].dtype == "float64" and got["_source_line"].dtype == "int64"
    batches = list(read_events_batches(tmp_path / "e.csv"))
    assert len(batches) == 1 and list(batches[0].columns) == list(got.columns)


def test_csv_truncated_last_line_and_bad_lines_are_kept_with_their_line_numbers(tmp_path):
    text = csv_text(row(0), "", row(1), row(2) + ",surplus", "e3,2026-10-01T08:00:00Z,p1").rstrip("\n")
    got = read_events(write(tmp_path / "e.csv", text))
    assert got["event_id"].tolist() == ["e0", "e1", "e2", "e3"]
    assert got["_source_line"].tolist() == [2, 4, 5, 6]
    assert got["_parse_error"].tolist() == [
        "", "", "CSV: expected 10 fields, got 11", "CSV: expected 10 fields, got 3",
    ]
    assert got.loc[3, "profile_id"] == "p1" and got.loc[3, ["event_type", "offer_id"]].isna().all()


def test_csv_quoted_newline_crlf_and_bom(tmp_path):
    text = "\ufeff" + csv_text(row(0), row(1, offer_id='"multi\nline"'), row(2)).replace("\n", "\r\n")
    got = read_events(write(tmp_path / "e.csv", text))
    assert got["offer_id"].tolist()[1] == "multi\r\nline"
    assert got["_source_line"].tolist() == [2, 3, 5] and got["event_id"].tolist() == ["e0", "e1", "e2"]


def test_csv_stray_carriage_return_keeps_the_row_text(tmp_path):
    got = read_events(write(tmp_path / "e.csv", csv_text(row(0), row(1, offer_id="a\rb"), row(2))))
    assert got["_source_line"].tolist() == [2, 3, 4] and got["offer_id"].tolist()[1] == "a\rb"
    assert got["_parse_error"].tolist() == ["", "CSV: new-line character seen in unquoted field", ""]


def test_non_numeric_value_keeps_the_raw_strings(tmp_path):
    text = csv_text(row(0, value="1.5"), row(1, value="abc"), row(2, value=""))
    got = read_events(write(tmp_path / "e.csv", text))
    assert got["value"].tolist()[:2] == ["1.5", "abc"] and pd.isna(got["value"].tolist()[2])
    assert got["propensity"].dtype == "float64"


def test_invalid_json_line_is_kept_with_parse_error(tmp_path):
    lines = [{"event_id": "e1"}, "", '{"event_id": "e2" "x": 1}', "42", {"event_id": "e3"}]
    path = ndjson(tmp_path / "e.ndjson", *lines)
    got = read_events(path)
    assert got["_source_line"].tolist() == [1, 3, 4, 5]
    assert got["_parse_error"].tolist() == [
        "", "invalid JSON: Expecting ',' delimiter (column 19)", "not a JSON object (got a JSON number)", "",
    ]
    assert got.loc[1, list(EVENT_COLUMNS)].isna().all()


def test_line_longer_than_the_limit_is_flagged_not_held(tmp_path, monkeypatch):
    monkeypatch.setattr(event_files, "MAX_LINE_BYTES", 2048)
    monkeypatch.setattr(event_csv, "_CSV_CHUNK_BYTES", 512)
    long = "x" * 5000
    got = read_events(write(tmp_path / "e.csv", csv_text(row(0), row(1, offer_id=long), row(2))))
    assert got["event_id"].tolist()[0::2] == ["e0", "e2"] and got["_source_line"].tolist() == [2, 3, 4]
    assert got["_parse_error"].tolist() == ["", "line longer than 2048 bytes", ""]
    assert got.loc[1, list(EVENT_COLUMNS)].isna().all()
    got = read_events(ndjson(tmp_path / "e.ndjson", {"event_id": "e0"}, {"event_id": long}, {"event_id": "e2"}))
    assert got["_source_line"].tolist() == [1, 2, 3]
    assert got["_parse_error"].tolist() == ["", "line longer than 2048 bytes", ""]


def test_a_real_line_over_16_mib(tmp_path):
    huge = "x" * (17 * 2**20)
    got = read_events(ndjson(tmp_path / "e.ndjson", {"event_id": huge}, {"event_id": "e1"}))
    assert got["_parse_error"].tolist() == ["line longer than 16 MiB", ""]
    assert got["_source_line"].tolist() == [1, 2]
    got = read_events(write(tmp_path / "e.csv", csv_text(row(0, offer_id=huge), row(1))))
    assert got["_parse_error"].tolist() == ["line longer than 16 MiB", ""]
    assert got["_source_line"].tolist() == [2, 3]
    assert pd.isna(got["event_id"].iloc[0]) and got["event_id"].iloc[1] == "e1"


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from(["ok", "ok", "ok", "blank", "short", "long", "quoted", "huge"]), max_size=60))
def test_csv_line_numbers_survive_chunking(kinds):
    """Any mix of good and bad lines, cut into tiny chunks: every row has its physical line."""
    lines, expected, line = [], [], 2
    for i, kind in enumerate(kinds):
        if kind == "blank":
            lines.append("")
        elif kind == "quoted":
            lines.append(row(i, offer_id=f'"a,\n{i}"'))
            expected.append((f"e{i}", line, ""))
        elif kind == "huge":
            lines.append(row(i, offer_id="x" * 1600))
            expected.append((None, line, "line longer than 1500 bytes"))
        else:
            fields = {"short": ",".join(row(i).split(",")[:4]), "long": row(i) + ",x", "ok": row(i)}[kind]
            lines.append(fields)
            problem = {"short": "CSV: expected 10 fields, got 4", "long": "CSV: expected 10 fields, got 11"}
            problem = problem.get(kind, "")
            expected.append((f"e{i}", line, problem))
        line += lines[-1].count("\n") + 1
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as patch:
        patch.setattr(event_csv, "_CSV_CHUNK_BYTES", 700)
        patch.setattr(event_files, "MAX_LINE_BYTES", 1500)
        patch.setattr(event_csv, "_CSV_PYTHON_BELOW", 300)
        path = write(Path(tmp) / "e.csv", csv_text(*lines))
        got = read_events(path)
        ids = [None if pd.isna(v) else v for v in got["event_id"]]
        assert list(zip(ids, got["_source_line"], got["_parse_error"])) == expected


def test_parquet_directory_is_one_dataset(tmp_path):
    root = tmp_path / "events"
    (root / "date=2026-10-01").mkdir(parents=True)
    (root / "date=2026-10-02").mkdir()
    frame(2).to_parquet(root / "date=2026-10-01" / "part-0.parquet", index=False)
    frame(3).assign(date="kept-from-file").to_parquet(root / "date=2026-10-02" / "part-0.parquet", index=False)
    frame(1).to_parquet(root / "_ignored.parquet")
    got = read_events(root)
    assert len(got) == 5 and got["_source_line"].tolist() == [1, 2, 1, 2, 3]
    assert got["_source_file"].tolist()[0] == str(root / "date=2026-10-01" / "part-0.parquet")
    assert got["date"].tolist() == ["2026-10-01"] * 2 + ["kept-from-file"] * 3
    frame(1).drop(columns=["profile_id"]).to_parquet(root / "bad.parquet")
    assert error_of(root) == f"{root / 'bad.parquet'}: missing required column(s): profile_id"


# --- coerce_event_types ------------------------------------------------------------------------


def test_coerce_event_types_reasons():
    timestamps = ["2026-10-01T08:15:02Z", "2026-13-01", "2026-10-01 08:00:00", "2026-10-01T10:00:00+02:00",
                  None, "2026-10-01T08:00:00.1234567Z"]
    raw = frame(6, timestamp=timestamps,
                value=["1.5", "abc", "2", "nan", None, "x"], propensity=["0.5", "0.1", "x", "1e-3", "0", "1"])
    raw.index = [10, 11, 12, 13, 14, 14]  # a non-unique index is kept as is
    typed, reasons = coerce_event_types(raw)
    assert reasons.tolist() == [
        "",
        "timestamp: unparseable '2026-13-01'; value: not a number 'abc'",
        "timestamp: no timezone '2026-10-01 08:00:00'; propensity: not a number 'x'",
        "",
        "",
        "value: not a number 'x'",
    ]
    assert reasons.index.tolist() == raw.index.tolist() and typed.index.tolist() == raw.index.tolist()
    assert str(typed["timestamp"].dtype) == "datetime64[us, UTC]"
    ts = typed["timestamp"].tolist()
    assert ts[0] == pd.Timestamp("2026-10-01T08:15:02Z") and ts[3] == pd.Timestamp("2026-10-01T08:00:00Z")
    assert pd.isna(ts[1]) and pd.isna(ts[2]) and pd.isna(ts[4])
    assert typed["value"].dtype == "float64" and typed["value"].tolist()[0] == 1.5
    assert typed["value"].isna().tolist() == [False, True, False, True, True, True]  # "nan" is a float


def test_coerce_event_types_clean_frames_and_parquet_types():
    typed, reasons = coerce_event_types(frame(3, profile_id=[1, 2, None]))
    assert (reasons == "").all() and typed["profile_id"].dtype == "str"
    assert typed["profile_id"].tolist()[:2] == ["1.0", "2.0"] and pd.isna(typed["profile_id"].iloc[2])
    naive = frame(2, timestamp=pd.to_datetime(["2026-10-01 08:00:00", None]))
    assert coerce_event_types(naive)[1].tolist() == ["timestamp: no timezone '2026-10-01 08:00:00'", ""]
    aware = frame(1, timestamp=pd.to_datetime(["2026-10-01T10:00:00+02:00"]))
    assert coerce_event_types(aware)[0]["timestamp"].tolist() == [pd.Timestamp("2026-10-01T08:00:00Z")]


def test_epoch_numbers_are_refused_saying_they_are_numbers():
    """Epoch seconds or milliseconds (CSV text or a Parquet int64 column): the unit is a guess."""
    for column in (["1574553663979", "1574553663.5", "soon"], pd.array([1574553663979, 1574553663, 7], "int64")):
        typed, reasons = coerce_event_types(frame(3, timestamp=column))
        assert typed["timestamp"].isna().all()
        assert reasons.tolist()[:2] == [f"timestamp: a number, not a date-time '{column[0]}'",
                                        f"timestamp: a number, not a date-time '{column[1]}'"]
    assert reasons.tolist()[2] == "timestamp: a number, not a date-time '7'"
    assert coerce_event_types(frame(1, timestamp=["soon"]))[1].tolist() == ["timestamp: unparseable 'soon'"]


def test_coerce_after_read_agrees_with_the_reader(tmp_path):
    path = write(tmp_path / "e.csv", csv_text(row(0), row(1, value=" 2 "), row(2, timestamp="2026-10-01")))
    got = read_events(path)
    assert got["value"].dtype == "float64"  # " 2 " parses as a float: not a bad value
    assert coerce_event_types(got)[1].tolist() == ["", "", "timestamp: no timezone '2026-10-01'"]


# --- batches -----------------------------------------------------------------------------------


def big_table(n: int) -> pa.Table:
    i = np.arange(n)
    text = lambda prefix, values: pa.array(np.char.add(prefix, values.astype(str)))  # noqa: E731
    return pa.table({
        "event_id": text("e", i),
        "timestamp": pa.array(1_790_000_000_000_000 + i * 1_000_000, pa.timestamp("us", tz="UTC")),
        "profile_id": text("p", i % 9973),
        "event_type": pa.array(np.where(i % 10 == 0, "click", "display")),
        "offer_id": text("o", i % 50),
        "placement_id": pa.array(["web-banner"] * n),
        "channel": pa.array(["web"] * n),
        "value": pa.array((i % 100) / 4.0),
        "propensity": pa.array((i % 10) / 10.0),
        "decision_id": text("d", i % 1000),
        "extra": pa.array(i % 3),
    })


@pytest.mark.parametrize("suffix", ["parquet", "csv"])
def test_batches_concatenate_to_read_events(tmp_path, suffix):
    path = tmp_path / f"big.{suffix}"
    table = big_table(250_000)
    if suffix == "parquet":
        pq.write_table(table, path, row_group_size=60_000)
    else:
        pcsv.write_csv(table.set_column(1, "timestamp", pa.array(
            pd.Series(table["timestamp"].to_pandas()).dt.strftime("%Y-%m-%dT%H:%M:%SZ"))), path)
    whole = read_events(path)
    batches = list(read_events_batches(path, batch_rows=70_000))
    assert [len(b) for b in batches] == [70_000, 70_000, 70_000, 40_000]
    pd.testing.assert_frame_equal(pd.concat(batches, ignore_index=True), whole)
    assert whole["_source_line"].iloc[-1] == 250_000 + (suffix == "csv")


def test_ndjson_batches_and_bad_batch_rows(tmp_path):
    path = ndjson(tmp_path / "e.ndjson", *frame(5).to_dict("records"), xdm_event(items=("a", "b")))
    batches = list(read_events_batches(path, batch_rows=2))
    assert [len(b) for b in batches] == [2, 2, 2, 1]
    pd.testing.assert_frame_equal(pd.concat(batches, ignore_index=True), read_events(path))
    with pytest.raises(ValueError, match="batch_rows"):
        next(read_events_batches(path, batch_rows=0))
