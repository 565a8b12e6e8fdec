"""The decision log's columns (`DecisionColumns`): what the service buffers and writes."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pyarrow.parquet as pq
import pytest

from offerflow.core.schema import DECISION_META_SCHEMA, EVENT_SCHEMA
from offerflow.decisioning.decision_log import DecisionColumns, log_decisions
from offerflow.decisioning.decision_types import Decision, DecisionItem, PlacementDecision
from tests.unit.test_explanations import engine_of, project  # noqa: F401 (a fixture: a small published project)

AT = datetime(2026, 3, 1, 12, 30, 5, 123456, tzinfo=timezone.utc)


def _decision(k: int, at: datetime = AT) -> Decision:
    """Two placements: a ranked one (two items, the second without a propensity) and a fallback."""
    ranked = PlacementDecision("web-banner", "web", [DecisionItem("web-banner", "o-1", 1, 0.9, False, 0.8),
                                                     DecisionItem("web-banner", "o-2", 2, 0.5, False, None)],
                               "ai_model", "web-personalized", f"v{k}", 7, "ranking_table", "model")
    fallback = PlacementDecision("email-hero", "email", [DecisionItem("email-hero", "o-9", 1, None, True, 1.0)],
                                 "priority", None, None, None, "fallback", "fallback")
    return Decision(f"dec-{k}", f"p{k}", at.isoformat(), [ranked, fallback])


def test_columns_make_one_event_per_item_and_one_meta_row_per_placement():
    columns = DecisionColumns()
    for k, at in enumerate([AT, AT + timedelta(hours=1), AT.replace(microsecond=0)]):
        columns.add(_decision(k, at))
    events, meta = columns.tables()
    assert events.schema == EVENT_SCHEMA and meta.schema == DECISION_META_SCHEMA
    assert len(columns) == 3 and events.num_rows == 9 and meta.num_rows == 6
    first = events.slice(0, 3).to_pylist()
    assert [e["event_id"] for e in first] == ["dec-0-web-banner-1", "dec-0-web-banner-2", "dec-0-email-hero-1"]
    assert [e["offer_id"] for e in first] == ["o-1", "o-2", "o-9"]
    assert [e["channel"] for e in first] == ["web", "web", "email"]
    assert [e["propensity"] for e in first] == [0.8, None, 1.0]
    assert {e["event_type"] for e in first} == {"display"} and {e["value"] for e in first} == {None}
    assert events["timestamp"].to_pylist()[::3] == [AT, AT + timedelta(hours=1), AT.replace(microsecond=0)]
    assert events["decision_id"].to_pylist() == [f"dec-{k}" for k in range(3) for _ in range(3)]
    rows = meta.to_pylist()
    assert [(r["profile_id"], r["placement_id"], r["arm"]) for r in rows[:2]] == [
        ("p0", "web-banner", "model"), ("p0", "email-hero", "fallback")]
    assert (rows[0]["model_version"], rows[0]["table_version"], rows[1]["ai_model"]) == ("v0", 7, None)
    assert rows[2]["decided_at"] == AT + timedelta(hours=1)


def test_decision_times_with_other_offsets_or_none_are_read_as_before():
    naive, plus2 = datetime(2026, 3, 1, 12, 30, 5), datetime(2026, 3, 1, 14, 30, 5, tzinfo=timezone(timedelta(hours=2)))
    for at, expected in ((plus2, AT.replace(microsecond=0)), (naive, AT.replace(microsecond=0))):
        columns = DecisionColumns()
        columns.add(_decision(0, at))
        events, meta = columns.tables()
        assert meta["decided_at"].to_pylist() == [expected] * 2 and events["timestamp"][0].as_py() == expected


def test_a_failed_batch_put_back_comes_first_and_decisions_come_back_for_a_reload():
    failed, later = DecisionColumns(), DecisionColumns()
    failed.add(_decision(0))
    later.add(_decision(1))
    later.add(_decision(2))
    later.prepend(failed)
    events, meta = later.tables()
    assert len(later) == 3 and meta["decision_id"].to_pylist() == ["dec-0", "dec-0", "dec-1", "dec-1", "dec-2", "dec-2"]
    assert events["event_id"].to_pylist()[3:6] == ["dec-1-web-banner-1", "dec-1-web-banner-2", "dec-1-email-hero-1"]
    back = later.to_decisions()
    assert [d.decision_id for d in back] == ["dec-0", "dec-1", "dec-2"]
    assert [(p.placement_id, [i.offer_id for i in p.items], [i.fallback for i in p.items]) for p in back[1].placements] \
        == [("web-banner", ["o-1", "o-2"], [False, False]), ("email-hero", ["o-9"], [True])]
    assert back[2].decided_at == AT.isoformat() and back[2].profile_id == "p2"


@pytest.mark.parametrize("n", [1, 5])
def test_log_decisions_writes_the_columns(tmp_path, n):
    path = log_decisions([_decision(k) for k in range(n)], tmp_path)
    assert pq.read_table(path).num_rows == 3 * n
    assert pq.read_table(tmp_path / "meta" / path.name).num_rows == 2 * n


# Python 3.12+ warns about fork() in a process with threads; the child only writes to a pipe
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_decision_ids_are_distinct_version_4_uuids_across_batches_and_forks():
    import os
    import uuid

    from offerflow.decisioning.decision_types import _ID_BATCH, new_decision_id

    ids = [new_decision_id() for _ in range(2 * _ID_BATCH + 3)]  # three batches
    assert len(set(ids)) == len(ids)
    for decision_id in ids[:: _ID_BATCH // 4]:
        parsed = uuid.UUID(decision_id.removeprefix("dec-"))
        assert decision_id == "dec-" + parsed.hex and parsed.version == 4 and parsed.variant == uuid.RFC_4122
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child's next id is not one the parent hands out next
        os.write(write, new_decision_id().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 100).decode() != new_decision_id()


def test_a_placement_named_twice_gets_its_own_event_ids_after_a_failed_batch_too():
    """Two sets of slots of one placement in a request: the second's event ids say `#2`, so ingested
    back they are not quarantined as conflicting duplicates (and caps count both displays)."""
    twice = _decision(1)
    twice.placements.append(twice.placements[0])
    columns, earlier = DecisionColumns(), DecisionColumns()
    earlier.add(_decision(0))
    columns.add(twice)
    columns.prepend(earlier)
    ids = columns.tables()[0]["event_id"].to_pylist()
    assert len(ids) == len(set(ids)) == 8
    assert ids[3:] == ["dec-1-web-banner-1", "dec-1-web-banner-2", "dec-1-email-hero-1", "dec-1-web-banner#2-1",
                       "dec-1-web-banner#2-2"]
    assert set(columns.tables()[0]["placement_id"].to_pylist()) == {"web-banner", "email-hero"}


def _logged_event_ids(directory) -> list[str]:
    paths = sorted(directory.glob("decisions-*.parquet"))
    return [event_id for path in paths for event_id in pq.read_table(path)["event_id"].to_pylist()]


def test_http_cli_and_batch_log_unique_event_ids_for_a_placement_named_twice(project, tmp_path):
    import shutil
    import warnings

    from typer.testing import CliRunner

    from offerflow.cli import app
    from offerflow.core.config import load_config
    from offerflow.decisioning.http_service import create_app

    with warnings.catch_warnings():  # as in tests/flows/test_service.py: httpx is what is installed
        warnings.filterwarnings("ignore", message=r"Using `httpx` with `starlette.testclient` is deprecated")
        from fastapi.testclient import TestClient
    root = tmp_path / "copy"
    shutil.copytree(project, root)
    config = load_config(root / "offerflow.yaml")
    engine = engine_of(root)
    with TestClient(create_app(engine.config, engine=engine, log_dir=tmp_path / "http")) as client:
        body = {"profile_id": "p2", "placements": ["web-banner", "web-banner"], "allow_duplicates": True}
        assert client.post("/decisions", json=body).status_code == 200
    ids = _logged_event_ids(tmp_path / "http")
    assert len(ids) == len(set(ids)) == 4 and sum("-web-banner#2-" in i for i in ids) == 2
    runner = CliRunner()
    args = ["-x", "web-sidebar", "-x", "web-sidebar", "--allow-duplicates", "--config", str(root / "offerflow.yaml")]
    assert runner.invoke(app, ["decide", "-p", "p1", *args], catch_exceptions=False).exit_code == 0
    ids = _logged_event_ids(config.paths.decision_log)
    assert len(ids) == len(set(ids)) == 4 and sum("-web-sidebar#2-" in i for i in ids) == 2
    batch = runner.invoke(app, ["decide-batch", *args, "--json"], catch_exceptions=False)
    assert batch.exit_code == 0, batch.output
    ids = _logged_event_ids(config.paths.decision_log)
    assert len(ids) == len(set(ids)) == 4 + 4 * 2 * 2 and sum("-web-sidebar#2-" in i for i in ids) == 2 + 4 * 2
