"""`offerflow decide` and `offerflow.decide` answer without importing pandas (issue 16: importing it
was 0.2 s of the second a decision may take), nor DuckDB, scikit-learn, LightGBM, MLflow or
Prefect; and the engine they build (catalog rows, profiles as Arrow) decides as the one built from
DataFrames, which the batch decisions and tests pass."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from tests.cli_probe import SRC
from tests.flows.test_cli_fast import publish_formula_tables

#: Packages a decision for one profile does not need (duckdb: only to count caps from logged events).
NOT_NEEDED = ("pandas", "duckdb", "sklearn", "lightgbm", "mlflow", "prefect")
PROBE = f"""
import json, runpy, sys
how, args = sys.argv[1], json.loads(sys.argv[2])
if how == "cli":
    sys.argv = ["offerflow", *args]
    try:
        runpy.run_module("offerflow.cli", run_name="__main__")
    except SystemExit as exc:
        assert not exc.code, exc.code
else:
    import offerflow
    decision = offerflow.decide(*args, log=False, explain=True)
    print(json.dumps(decision.to_dict()))
sys.stderr.write("IMPORTED=" + json.dumps([m for m in {NOT_NEEDED!r} if m in sys.modules]) + "\\n")
"""
NOW = datetime(2026, 6, 1, 12, tzinfo=timezone.utc)


def probe(how: str, args: list, cwd: Path) -> tuple[dict, list[str]]:
    """(the decision printed as JSON, the NOT_NEEDED packages imported) of one fresh interpreter."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", PROBE, how, json.dumps(args)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=120)
    assert done.returncode == 0, done.stderr
    imported = next(line for line in done.stderr.splitlines() if line.startswith("IMPORTED="))
    return json.loads(done.stdout), json.loads(imported.removeprefix("IMPORTED="))


@pytest.fixture()
def published(project_dir: Path) -> Path:
    publish_formula_tables(project_dir)
    return project_dir / "offerflow.yaml"


@pytest.mark.parametrize("profile", ["known", "never-seen"])
def test_cli_decide_imports_no_pandas(published, profile):
    import pyarrow.parquet as pq

    if profile == "known":
        profile = str(pq.read_table(published.parent / "data/profiles.parquet").column("profile_id")[3])
    decision, imported = probe("cli", ["decide", "-p", profile, "-x", "web-banner", "-x", "web-sidebar", "--explain",
                                       "--json", "--no-log", "--config", str(published)], published.parent)
    assert imported == []
    assert [p["placement_id"] for p in decision["placements"]] == ["web-banner", "web-sidebar"]
    assert all(p["items"] and p["explanation"]["shown"] for p in decision["placements"])


def test_a_logged_decision_is_written_without_pandas(published):
    """The default `offerflow decide` appends its decision to the log: still no pandas, and the log
    holds what the decision shows, in the data contract's schemas."""
    import pyarrow.parquet as pq

    from offerflow.core.schema import DECISION_META_SCHEMA, EVENT_SCHEMA

    decision, imported = probe("cli", ["decide", "-p", "never-seen", "-x", "web-banner", "-x", "web-banner", "--json",
                                       "--config", str(published)], published.parent)
    assert imported == []
    log = published.parent / "data/outputs/decision_log"
    (events,) = [pq.read_table(p) for p in log.glob("decisions-*.parquet")]
    (meta,) = [pq.read_table(p) for p in (log / "meta").glob("decisions-*.parquet")]
    assert events.schema.equals(EVENT_SCHEMA) and meta.schema.equals(DECISION_META_SCHEMA)
    shown = [(p["placement_id"], i["offer_id"], i["rank"]) for p in decision["placements"] for i in p["items"]]
    assert list(zip(events["placement_id"].to_pylist(), events["offer_id"].to_pylist())) == [s[:2] for s in shown]
    labels = ["web-banner"] * len(decision["placements"][0]["items"]) + ["web-banner#2"] * len(decision["placements"][1]["items"])
    assert events["event_id"].to_pylist() == [f"{decision['decision_id']}-{label}-{rank}"
                                              for label, (_, _, rank) in zip(labels, shown)]
    assert meta["decision_id"].to_pylist() == [decision["decision_id"]] * 2 and meta["table_version"].null_count == 0


def test_library_decide_imports_no_pandas(published):
    decision, imported = probe("library", ["never-seen", ["web-sidebar", "web-banner"], 2, str(published)],
                               published.parent)
    assert imported == []
    assert decision["profile_id"] == "never-seen" and [p["placement_id"] for p in decision["placements"]] == [
        "web-sidebar", "web-banner"]
    assert all(1 <= len(p["items"]) <= 2 and p["explanation"] for p in decision["placements"])


def test_engine_from_frames_decides_as_the_one_from_rows_and_arrow(published):
    """The same decisions, explanations included, whatever form the catalog and profiles come in."""
    from offerflow.core.config import load_config
    from offerflow.decisioning.engine import DecisionEngine, build_engine
    from offerflow.ingest.catalog import load_offers, load_profiles

    config = load_config(published)
    served = build_engine(config, seed=7, now=NOW)
    assert isinstance(served.offer_rows, list) and not hasattr(served.profile_table, "iloc")
    frames = DecisionEngine(config, served.store, load_offers(config.path(config.data.offers)),
                            load_profiles(config.path(config.data.profiles)), seed=7,
                            caps=build_engine(config, now=NOW).caps)
    assert served.rule_schema == frames.rule_schema
    ids = [*served.profiles["profile_id"][:60], "never-seen"]
    answers = [[{**engine.decide(pid, ["web-banner", "web-sidebar"], now=NOW, explain=i % 3 == 0).to_dict(),
                 "decision_id": ""} for i, pid in enumerate(ids)] for engine in (served, frames)]
    assert answers[0] == answers[1]
