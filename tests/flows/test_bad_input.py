"""Bad input through the real CLI: a failed run says why in one message, exits 1, and leaves the
published rankings and the validated snapshot exactly as the last good run left them."""

from __future__ import annotations

import math
import random
import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

import offerflow.flows.pipeline  # noqa: F401  (see below)
from offerflow.cli import app
from offerflow.core.store import RankingStore
from tests.prefect_console import drain, prefect_console  # noqa: F401 (a fixture)

# Importing the flow imports Prefect, which binds its console log handler to the sys.stderr of that
# moment. Done inside the first `runner.invoke`, that is the runner's stream, closed when the invoke
# returns: every later run would then log "--- Logging error ---" into the output. Importing it here
# keeps Prefect's logs out of `result.output`, which then holds only what the CLI itself prints.

pytestmark = pytest.mark.flow

PLACEMENTS = ("web-banner", "email-hero", "web-sidebar")
runner = CliRunner()  # Click >= 8.2: result.output holds stdout and stderr interleaved


def run_cli(project: Path):
    return runner.invoke(app, ["run", "--config", str(project / "offerflow.yaml")])


def flat(text: str) -> str:
    """The output with rich's wrapping at 80 columns undone (see test_error_is_one_line): rich
    breaks after a space or, inside a word longer than the line, anywhere."""
    return text.replace("\n", "")


def last_flow_run() -> tuple[object, list[str]]:
    """The most recent flow run and every log message Prefect recorded for it (and its tasks)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()
    with get_client(sync_client=True) as client:
        run = client.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=1)[0]
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])))
    return run, [log.message for log in logs]


def published(project: Path) -> dict[str, int | None]:
    store = RankingStore(project / "data" / "rankings")
    return {p: store.current_version(p) for p in PLACEMENTS}


def no_click_displays(events: pd.DataFrame) -> pd.Index:
    """Displays that no click refers to, so quarantining one cannot orphan a click."""
    clicks = events[events["event_type"] == "click"]
    by_decision = set(zip(clicks["decision_id"], clicks["offer_id"]))
    by_profile = set(zip(clicks["profile_id"], clicks["offer_id"], clicks["placement_id"]))
    displays = events[events["event_type"] == "display"]
    keep = [i for i, d, o, p, x in zip(displays.index, displays["decision_id"], displays["offer_id"],
                                          displays["profile_id"], displays["placement_id"])
            if (d, o) not in by_decision and (p, o, x) not in by_profile]
    return pd.Index(keep)


def cheaper_models(config_path: Path) -> None:
    """Fewer, coarser trees and no interaction base for the models of the run that goes on: that run
    is here to show the bad rows quarantined and every placement published, and model quality is
    tested elsewhere (the default settings cost most of this test's time in that retraining)."""
    config = yaml.safe_load(config_path.read_text())
    fast = {"learning_rate": 0.3, "n_estimators": 40, "early_stopping_rounds": 5}
    for goal in config["propensity_goals"]:
        goal["lightgbm"] = fast
    for model in config["ai_models"]:
        if model["type"] == "personalized":
            model.update(interaction_base=False, lightgbm=fast)
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))


@pytest.fixture()
def in_project(project_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(project_dir)
    return project_dir


def test_cli_output_includes_stderr():
    import typer

    probe = typer.Typer()

    @probe.command()
    def fail() -> None:
        typer.echo("to stderr", err=True)
        raise typer.Exit(1)

    result = CliRunner().invoke(probe, [])
    assert result.exit_code == 1 and "to stderr" in result.output


@pytest.fixture()
def after_a_good_run(pipeline_run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the session's project after its good pipeline run (projects are relocatable: the
    copy serves, tracks and caches on its own), so the test starts from published rankings."""
    project = tmp_path / "project"
    shutil.copytree(pipeline_run[0], project, ignore=shutil.ignore_patterns(".prefect", "decision_log"))
    monkeypatch.chdir(project)
    return project


def test_bad_input_never_replaces_good_output(after_a_good_run: Path, prefect_harness, prefect_console):
    project = after_a_good_run
    events_path = project / "data" / "events.parquet"
    offers_path = project / "data" / "offers.yaml"
    validated = project / "data" / "outputs" / "validated" / "events.parquet"
    quarantine_dir = project / "data" / "quarantine"
    good_events = events_path.read_bytes()
    good_offers = offers_path.read_text()
    good_table = pq.read_table(events_path)
    n_rows = good_table.num_rows

    versions = published(project)
    assert all(v is not None for v in versions.values()), versions
    snapshot = validated.read_bytes()
    assert sorted(quarantine_dir.glob("*.parquet")) == []  # the seeded world is clean

    def assert_untouched() -> None:
        assert published(project) == versions
        assert validated.read_bytes() == snapshot

    def fails(*expected: str) -> str:
        result = run_cli(project)
        output = flat(result.output)
        assert result.exit_code == 1, result.output
        assert "error:" in output
        assert "Traceback" not in result.output
        for text in expected:
            assert text in output, result.output
        # Prefect recorded the failure, with the message and without a traceback
        run, logs = last_flow_run()
        assert run.state.is_failed() and run.state.name == "BadInput", run.state
        assert run.state.message == expected[0].splitlines()[0] or expected[0] in run.state.message
        assert any(expected[0] in message for message in logs), logs
        assert not any("Traceback" in message or "NoneType: None" in message for message in logs), logs
        assert_untouched()
        events_path.write_bytes(good_events)
        offers_path.write_text(good_offers)
        return output

    # (a) random bytes where the Parquet events should be
    events_path.write_bytes(random.Random(0).randbytes(4096))
    fails(f"{events_path}: not a Parquet file")

    # (b) events without the profile_id column
    pq.write_table(good_table.drop_columns(["profile_id"]), events_path)
    fails(f"{events_path}: missing required column(s): profile_id")

    # (c) a catalog whose only fallback offer is no longer a fallback
    catalog = yaml.safe_load(good_offers)
    for offer in catalog["offers"]:
        if offer["offer_id"] == "o-fallback":
            offer["fallback"] = False
    offers_path.write_text(yaml.safe_dump(catalog, sort_keys=False))
    output = fails(f"{offers_path}: placement 'web-banner' has no fallback offer")
    for placement in PLACEMENTS:
        assert f"placement '{placement}' has no fallback offer" in output

    # (d) 60% of the rows gone since the last run (max_row_drop_share 0.5)
    kept = n_rows - math.ceil(n_rows * 0.6)
    pq.write_table(good_table.slice(0, kept), events_path)
    # the first line (the flow run's message) names the expectation and the counts, the summary follows
    fails(f"{events_path.name}: expect_column_values_to_be_between(rows): {kept} rows; at least"
          f" {math.ceil(n_rows * 0.5)} expected (previous run {n_rows} rows, validation.max_row_drop_share 50%:"
          " check the file is complete or raise the setting)",
          "Event validation", "FAILED", "Critical failures:")
    assert sorted(quarantine_dir.glob("*.parquet")) == []  # a row-count failure quarantines nothing

    # (e) a few bad rows: they are quarantined with their reasons, the run goes on
    events = good_table.to_pandas()
    candidates = list(no_click_displays(events))
    assert len(candidates) >= 5
    dup_rows, unknown_row, zero_row = candidates[:3], candidates[3], candidates[4]
    events.loc[unknown_row, "offer_id"] = "o-nope"
    events.loc[zero_row, "propensity"] = 0.0
    bad = pd.concat([events, events.loc[dup_rows]], ignore_index=True)
    pq.write_table(pa.Table.from_pandas(bad, schema=good_table.schema, preserve_index=False), events_path)
    cheaper_models(project / "offerflow.yaml")
    drain(prefect_console)
    result = run_cli(project)
    assert result.exit_code == 0, result.output
    # the duplicates' expectation warning is printed once, by the run's summary: Prefect's terminal
    # handler leaves it to the CLI (the flow run's logs keep it)
    assert flat(result.output).count("validation warning: expect_column_values_to_be_between(duplicate_event_id_rows)"
                                     ": 6 of") == 1, result.output
    assert "expectation warning" not in drain(prefect_console)
    assert any("expectation warning: expect_column_values_to_be_between(duplicate_event_id_rows)" in m
               for m in last_flow_run()[1])
    files = sorted(quarantine_dir.glob("*.parquet"))
    assert len(files) == 1
    quarantined = pd.read_parquet(files[0])
    expected = sorted([(events.at[i, "event_id"], "event_id: duplicate (identical row)") for i in dup_rows]
                      + [(events.at[unknown_row, "event_id"], "offer_id: unknown offer 'o-nope'"),
                         (events.at[zero_row, "event_id"], "propensity: not in (0, 1]")])
    assert sorted(zip(quarantined["event_id"], quarantined["reasons"])) == expected
    accepted = pq.read_table(validated)
    assert accepted.num_rows + len(quarantined) == len(bad) == n_rows + 3
    assert set(accepted.column("event_id").to_pylist()) == set(events["event_id"]) - {
        events.at[unknown_row, "event_id"], events.at[zero_row, "event_id"]}
    assert all(published(project)[p] == versions[p] + 1 for p in PLACEMENTS)


def test_error_is_one_line(in_project: Path, prefect_harness, prefect_console):
    events_path = in_project / "data" / "events.parquet"
    events_path.write_bytes(b"not parquet at all, just some text" * 10)
    result = run_cli(in_project)
    assert result.exit_code == 1
    assert len(f"error: {events_path}: not a Parquet file") > 80  # long enough to show the wrapping
    assert result.output == f"error: {events_path}: not a Parquet file\n"
    # the same bad input again: the same line (Prefect records a returned failure under the task's
    # cache key; it came back as a `Cached` result, then an AttributeError and a traceback)
    again = run_cli(in_project)
    assert (again.exit_code, again.output) == (1, result.output)
    # and Prefect's terminal handler adds nothing: not the error, not "Finished in state BadInput(...)"
    assert prefect_console.getvalue() == "", prefect_console.getvalue()



def test_a_run_that_fails_midway_says_what_serves(in_project: Path, prefect_harness, prefect_console):
    """Not bad input: the store cannot take web-sidebar's table (a file where its folder goes) after
    the other placements were staged. `offerflow run` ended in a third traceback (the CLI's own,
    after Prefect's) and never said that nothing had been switched."""
    cheaper_models(in_project / "offerflow.yaml")
    obstacle = in_project / "data" / "rankings" / "web-sidebar"
    obstacle.parent.mkdir(parents=True)
    obstacle.write_text("not a folder")
    result = run_cli(in_project)
    assert result.exit_code == 1, result.output
    assert flat(result.output).endswith(
        f"error: the run failed: FileExistsError: [Errno 17] File exists: '{obstacle}'; nothing was switched:"
        " every placement serves the version it served before the run (offerflow rankings list)")
    assert "Traceback" not in result.output and published(in_project) == dict.fromkeys(PLACEMENTS)
