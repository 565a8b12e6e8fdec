"""The project lock (issue 19): a second writer in the same project waits up to its timeout, then
stops with one line naming the holder; the lock goes with its holder, even on kill -9."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from offerflow.core.config import load_config
from offerflow.core.paths import hold_project_lock
from offerflow.core.project_lock import ProjectLocked, lock_holder, project_lock

SRC = Path(__file__).resolve().parents[2] / "src"
HOLD = """
import sys, time
from offerflow.core.project_lock import project_lock
with project_lock(sys.argv[1], "offerflow run --config offerflow.yaml"):
    print("held", flush=True)
    time.sleep(600)
"""


ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}


@contextmanager
def held_elsewhere(path: Path) -> Iterator[subprocess.Popen]:
    """Another process holding the lock at `path` until the block ends (or it is killed)."""
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        assert process.stdout.readline().strip() == "held"
        yield process
    finally:
        process.kill()
        process.wait()
        process.stdout.close()


@pytest.fixture()
def holder(tmp_path):
    """(process, lock path): another process holds the lock."""
    path = tmp_path / "data/outputs/offerflow.lock"
    with held_elsewhere(path) as process:
        yield process, path


def test_a_second_writer_stops_with_one_line_naming_the_holder(holder):
    process, path = holder
    with pytest.raises(ProjectLocked) as locked:
        with project_lock(path, "offerflow run"):
            pass
    message = str(locked.value)
    assert "\n" not in message
    assert f"locked by offerflow run --config offerflow.yaml (pid {process.pid} on {socket.gethostname()}, started 20" \
        in message and "still running now" in message
    assert lock_holder(path)["pid"] == process.pid


def test_a_second_writer_waits_up_to_its_timeout_and_gets_the_lock_when_the_holder_is_killed(holder):
    process, path = holder
    started = time.monotonic()
    with pytest.raises(ProjectLocked, match="after waiting 0.6 s"):
        with project_lock(path, "offerflow run", timeout_seconds=0.6, poll_seconds=0.05):
            pass
    assert time.monotonic() - started >= 0.6
    process.send_signal(signal.SIGKILL)  # flock goes with the process, whatever killed it
    process.wait()
    with project_lock(path, "offerflow run", timeout_seconds=5):
        assert lock_holder(path)["pid"] == os.getpid()
    assert lock_holder(path) == {}  # released: nothing names a holder


def test_the_lock_is_reentrant_in_one_process(tmp_path):
    path = tmp_path / "offerflow.lock"
    with project_lock(path, "offerflow run"):
        with project_lock(path, "offerflow flow pipeline"):
            assert lock_holder(path)["command"] == "offerflow run"
        assert lock_holder(path)["command"] == "offerflow run"  # still held by the outer block
    with project_lock(path, "again"):
        pass


def test_offerflow_run_on_a_locked_project_is_one_error_line(project_dir):
    config = load_config(project_dir / "offerflow.yaml")
    with hold_project_lock(config, "offerflow run --config offerflow.yaml"):
        done = subprocess.run([sys.executable, "-m", "offerflow.cli", "run", "--config", str(project_dir / "offerflow.yaml")],
                              capture_output=True, text=True, env=ENV, timeout=300, cwd=project_dir)
    assert done.returncode == 1, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"error: {config.paths.lock}: the project is locked by offerflow run --config offerflow.yaml"
                           f" (pid {os.getpid()} on ")


@pytest.mark.flow
def test_the_pipeline_flow_holds_the_lock_when_not_started_by_the_cli(project_dir, prefect_harness):
    """As a deployment would start it: the flow itself meets the lock and ends as bad input."""
    from offerflow.flows.pipeline import pipeline

    config = load_config(project_dir / "offerflow.yaml")
    with held_elsewhere(config.paths.lock) as other:
        with pytest.raises(ProjectLocked, match=f"pid {other.pid} on .* after waiting 0.2 s"):
            pipeline(config_path=str(project_dir / "offerflow.yaml"), lock_wait_seconds=0.2)
    assert not config.paths.rankings.exists() and not config.paths.validated.exists()  # nothing done


@pytest.mark.flow
def test_the_scheduled_retrain_is_skipped_not_failed_and_the_daily_writers_wait(project_dir, prefect_harness):
    """prefect.yaml's 15-minute retrain (`skip_when_locked`) ends `Cancelled` on a locked project,
    without a failure notification; the daily/weekly writers honour `lock_wait_seconds`."""
    import yaml

    from offerflow.flows.auto_optimization import retrain_auto_optimization
    from offerflow.flows.customer_ai import train_customer_ai
    from offerflow.flows.ranking_models import train_ranking_models
    from offerflow.flows.scoring import score_and_publish

    config_path = project_dir / "offerflow.yaml"
    raw = yaml.safe_load(config_path.read_text())
    config_path.write_text(yaml.safe_dump({**raw, "notifications": {"failure_file": "failures.jsonl"}}, sort_keys=False))
    config = load_config(config_path)
    with held_elsewhere(config.paths.lock) as other:
        state = retrain_auto_optimization(config_path=str(config_path), skip_when_locked=True, return_state=True)
        assert state.is_cancelled() and state.message.startswith(f"skipped: {config.paths.lock}: the project is locked"), state
        assert not (project_dir / "failures.jsonl").exists()
        for flow in (train_ranking_models, train_customer_ai, score_and_publish):
            with pytest.raises(ProjectLocked, match=f"pid {other.pid} on .* after waiting 0.2 s"):
                flow(config_path=str(config_path), lock_wait_seconds=0.2)
    assert not config.paths.rankings.exists()  # nothing done
