"""offerflow up / down: real servers on free ports, a deployment run by hand, exact shutdown."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from offerflow.ops import servers as ops
from offerflow.cli import app
from offerflow.core.config import load_config
from offerflow.core.store import RankingStore

REPO = Path(__file__).resolve().parents[2]


def _sleeper(project: Path, name: str) -> ops.ManagedProcess:
    """A process group (a shell and its child) recorded like `up` records its servers."""
    return ops._spawn(name, ["sh", "-c", "sleep 300 & wait"], os.environ, project, project)


def _live_members(pgid: int) -> list[int]:
    """Processes of a process group that still run (zombies left to an init that never reaps don't)."""
    out = subprocess.run(["ps", "-eo", "pid=,pgid=,stat="], capture_output=True, text=True).stdout
    return [int(pid) for pid, group, stat in (line.split() for line in out.splitlines())
            if int(group) == pgid and not stat.startswith("Z")]


def test_down_stops_exactly_the_recorded_process_groups(tmp_path):
    (tmp_path / ".prefect").mkdir()
    ours = _sleeper(tmp_path, "ours")
    bystander = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        # a recorded pid whose start time does not match is someone else's process now: never touched
        recycled = ops.ManagedProcess("recycled", bystander.pid, 1, "")
        state = ops.ServerState(str(tmp_path), "http://x", "http://y", [ours, recycled])
        ops._write_state(tmp_path, state)
        assert len(_live_members(ours.pid)) == 2  # the shell and its sleep
        stopped = ops.down(tmp_path, timeout_s=5)
        assert [p.name for p in stopped] == ["ours"]
        assert not ops.is_alive(ours)
        assert _live_members(ours.pid) == []
        assert bystander.poll() is None  # still running
        assert not ops.state_path(tmp_path).exists()
    finally:
        bystander.kill()
        bystander.wait()


def test_up_fails_in_one_line_when_a_port_is_taken(project_dir):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(app, ["up", "--config", str(project_dir / "offerflow.yaml"),
                                          "--prefect-port", str(port), "--mlflow-port", str(ops.free_port())])
    assert result.exit_code == 1
    assert f"port {port} on 127.0.0.1 is taken" in result.output and "--prefect-port" in result.output
    assert "Traceback" not in result.output
    assert not ops.state_path(project_dir).exists()  # nothing was started


def test_up_says_what_it_did_not_do():
    """`offerflow up --no-deploy` printed `deployments: none` and then `to run one: ... prefect
    deployment run 'offerflow-pipeline/daily'`, a deployment it had not registered; `--no-schedules`
    was not mentioned at all."""
    from offerflow.cli.servers import up_summary

    server = ops.ManagedProcess("prefect-server", 11, 1, "")
    bare = ops.ServerState("/p", "http://127.0.0.1:4200", "http://127.0.0.1:5000", [server])
    lines = up_summary(bare, schedules=False)
    assert "deployments: none (--no-deploy)" in lines
    assert "schedules:   off (--no-schedules): deployments run only by hand" in lines
    assert not any("deployment run" in line for line in lines)
    bare.deployments = ["offerflow-pipeline/daily", "validate-data/hourly"]
    lines = up_summary(bare, schedules=True)
    assert "to run one:  PREFECT_API_URL=http://127.0.0.1:4200/api prefect deployment run 'offerflow-pipeline/daily'" in lines
    assert not any(line.startswith("schedules:") for line in lines) and lines[-1] == "to stop:     offerflow down"


@pytest.mark.slow
def test_up_run_a_deployment_by_hand_and_down(project_dir):
    """~3 minutes on 2 cores: servers start (~20 s each), 8 deployments registered, the pipeline
    runs on the worker, and `down` leaves no process behind."""
    config_path = project_dir / "offerflow.yaml"
    prefect_port, mlflow_port = ops.free_port(), ops.free_port()
    runner = CliRunner()
    result = runner.invoke(app, ["up", "--config", str(config_path), "--prefect-port", str(prefect_port),
                                 "--mlflow-port", str(mlflow_port), "--no-schedules"])
    state = ops.read_state(project_dir)
    try:
        assert result.exit_code == 0, result.output
        assert f"http://127.0.0.1:{prefect_port}" in result.output
        assert f"http://127.0.0.1:{mlflow_port}" in result.output
        assert {"offerflow-pipeline/daily", "train-customer-ai/weekly", "score-and-publish/daily",
                "retrain-auto-optimization/every-15-minutes"} <= set(state.deployments)
        assert [p.name for p in state.processes] == ["prefect-server", "mlflow-server", "prefect-worker"]
        assert all(ops.is_alive(p) for p in state.processes)
        assert (project_dir / ".prefect" / "prefect.db").exists()  # the server's sqlite under the project

        env = {**ops.base_env(project_dir, REPO / "src"), **state.env()}
        run = subprocess.run([str(Path(sys.executable).parent / "prefect"), "deployment", "run",
                              "offerflow-pipeline/daily", "--watch", "--watch-timeout", "400"],
                             env=env, capture_output=True, text=True, timeout=450)
        assert run.returncode == 0 and "Completed" in run.stdout, run.stdout[-2000:] + run.stderr[-2000:]

        config = load_config(config_path)
        store = RankingStore(config.path(config.store.path))
        assert all(store.current_version(p.id) == 1 for p in config.placements)
        assert store.read_metadata("web-banner")["pipeline_run_id"]
        import httpx  # the MLflow server answers with the run the flow logged

        found = httpx.get(f"{state.mlflow_url}/api/2.0/mlflow/registered-models/search", timeout=30)
        names = {m["name"] for m in found.json()["registered_models"]}
        assert "offerflow-propensity-purchase_14d" in names
    finally:
        down = runner.invoke(app, ["down", "--config", str(config_path)])
    assert down.exit_code == 0, down.output
    assert all(not ops.is_alive(p) and _live_members(p.pid) == [] for p in state.processes)
    for port in (prefect_port, mlflow_port):
        assert not ops.port_in_use(port)
    assert not ops.state_path(project_dir).exists()
