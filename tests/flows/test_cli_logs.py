"""The terminal is quiet by default and `--verbose` prints every step; Prefect keeps the structured
step records and the progress artifact either way. Runs the pipeline again on the session's
project, where every expensive step is `Cached`, so each run takes seconds."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

import offerflow.flows.pipeline  # noqa: F401  (Prefect's console handler binds to the stderr pytest captures)
from offerflow.cli import app
from offerflow.core.config import load_config
from tests.prefect_console import drain, prefect_console  # noqa: F401 (a fixture)

pytestmark = pytest.mark.flow
runner = CliRunner()


def last_run_logs():
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, LogFilter, LogFilterFlowRunId
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()
    with get_client(sync_client=True) as client:
        run = client.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=1)[0]
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])))
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[run.id])))
    return [log.message for log in logs], artifacts


def test_quiet_by_default_verbose_prints_every_step(pipeline_run, prefect_console):
    project, _ = pipeline_run
    config_path = str(project / "offerflow.yaml")
    config = load_config(config_path)
    steps = 3 + len(config.propensity_goals) + len([m for m in config.ai_models if m.status == "active"]) \
        + len(config.placements)

    quiet = runner.invoke(app, ["run", "--config", config_path])
    terminal = quiet.output + drain(prefect_console)
    assert quiet.exit_code == 0, quiet.output
    assert "published web-banner: version 1" in quiet.output
    assert "step 1/" not in terminal and "Finished in state" not in terminal and "INFO" not in terminal, terminal
    logs, artifacts = last_run_logs()  # Prefect has the whole story, with the steps as records
    assert f"step 1/{steps}: load catalog" in logs and f"step 2/{steps}: validate events" in logs, logs
    assert f"step {steps - 1}/{steps}: score and stage {config.placements[-1].id}" in logs
    assert f"step {steps}/{steps}: switch every placement" in logs  # all placements at once (one manifest)
    (bar,) = [a for a in artifacts if a.type == "progress"]
    assert bar.data == 100.0

    verbose = runner.invoke(app, ["--verbose", "run", "--config", config_path])
    terminal = verbose.output + drain(prefect_console)
    assert verbose.exit_code == 0, verbose.output
    for number in (1, 2, steps):
        assert f"step {number}/{steps}: " in terminal, terminal
    assert "Finished in state Cached" in terminal  # what --verbose adds: each task's end, here reused
