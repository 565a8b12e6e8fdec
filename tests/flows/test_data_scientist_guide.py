"""docs/data-scientists.md: every fenced bash and python block runs, in order, in a fresh project
(the bash lines as shell commands, the `mlflow ui` line as a server that must answer /health), and
the registry ends the way the page says."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from offerflow.ops.servers import free_port

REPO = Path(__file__).resolve().parents[2]
GUIDE = REPO / "docs" / "data-scientists.md"


def guide_blocks() -> list[tuple[str, str]]:
    return re.findall(r"```(bash|python)\n(.*?)```", GUIDE.read_text(), flags=re.S)


def _serve_and_check(command: str, cwd: Path, env: dict) -> None:
    """Start the UI on a free port, wait for /health, stop it."""
    port = free_port()
    argv = shlex.split(re.sub(r"--port \d+", f"--port {port}", command))
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, f"{command} exited with {proc.returncode}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    assert r.status == 200
                    return
            except OSError:
                assert time.monotonic() < deadline, f"{command}: no /health within 120 s"
                time.sleep(1)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def test_guide_has_the_promised_commands():
    text = "\n".join(code for _, code in guide_blocks())
    for needle in ("mlflow ui", "search_runs", "lift_by_decile.csv", "models:/offerflow-propensity-purchase_14d@champion",
                   "offerflow train --goal purchase_14d --set lightgbm.num_leaves=63", "offerflow promote --model"):
        assert needle in text


@pytest.mark.slow
def test_every_command_of_the_guide_runs(project_dir):
    """~2-3 minutes: the pipeline, a variant, a promotion by hand, the notebook snippets."""
    # a user's shell: not the MLflow URIs an earlier test's tracker left in this process's environment
    # (mlflow.set_tracking_uri / set_registry_uri set MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI)
    env = {**{k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")},
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(REPO)}
    outputs = []
    for kind, code in guide_blocks():
        if kind == "python":
            run = subprocess.run([sys.executable, "-c", code], cwd=project_dir, env=env, capture_output=True,
                                 text=True, timeout=300)
            assert run.returncode == 0, code + run.stderr[-3000:]
            outputs.append(run.stdout)
            continue
        for line in code.strip().splitlines():
            if line.startswith("mlflow ui"):
                _serve_and_check(line, project_dir, env)
                continue
            run = subprocess.run(line, shell=True, cwd=project_dir, env=env, capture_output=True, text=True,
                                 timeout=600)
            assert run.returncode == 0, line + run.stdout[-2000:] + run.stderr[-3000:]
            outputs.append(run.stdout)

    # the registry ends as the page says: version 2 (the num_leaves=63 variant) is champion by hand
    import mlflow

    uri = f"sqlite:///{project_dir / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    name = "offerflow-propensity-purchase_14d"
    champion = client.get_model_version_by_alias(name, "champion")
    assert str(champion.version) == "2" and champion.tags["promotion"] == "manual"
    assert champion.tags["promotion_reason"].startswith("num_leaves=63")
    assert client.get_run(champion.run_id).data.params["num_leaves"] == "63"
    assert client.get_run(champion.run_id).data.tags["promotion_reason"] == champion.tags["promotion_reason"]
    assert champion.tags["previous_champion"] in ("1", "")  # "" if the rule had promoted it already
    assert any("2 manual num_leaves=63" in output for output in outputs)  # section 7's check of the promotion
