"""A deployment run by a real worker that ends on bad input: its logs in the Prefect API hold the
one error line and no traceback, and the failure hook announced it. Also checks that `prefect
deploy` accepts the guard rails of prefect.yaml (one run at a time per deployment)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from offerflow.cli import app
from offerflow.ops import servers as ops

REPO = Path(__file__).resolve().parents[2]


def flow_run_of(api: str, deployment: str) -> dict:
    flow, name = deployment.split("/")
    deployments = httpx.post(f"{api}/deployments/filter", json={"deployments": {"name": {"any_": [name]}},
                                                                  "flows": {"name": {"any_": [flow]}}}, timeout=30)
    (found,) = deployments.json()
    runs = httpx.post(f"{api}/flow_runs/filter", json={"flow_runs": {"deployment_id": {"any_": [found["id"]]}}},
                      timeout=30).json()
    assert len(runs) == 1, runs
    return {**runs[0], "deployment": found}


def run_logs(api: str, flow_run_id: str) -> list[dict]:
    logs = httpx.post(f"{api}/logs/filter", json={"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 200},
                      timeout=30)
    return logs.json()


@pytest.mark.slow
def test_a_worker_run_ending_on_bad_input_logs_one_line(project_dir):
    """~2-3 minutes on 2 cores: `offerflow up`, one deployment run on the worker, `offerflow down`."""
    config_path, offers_path = project_dir / "offerflow.yaml", project_dir / "data/offers.yaml"
    raw = yaml.safe_load(config_path.read_text())
    config_path.write_text(yaml.safe_dump({**raw, "notifications": {"failure_file": "failures.jsonl"}}, sort_keys=False))
    catalog = yaml.safe_load(offers_path.read_text())
    for offer in catalog["offers"]:
        offer["fallback"] = False
    offers_path.write_text(yaml.safe_dump(catalog, sort_keys=False))
    expected = f"{offers_path}: placement 'web-banner' has no fallback offer"
    runner = CliRunner()
    up = runner.invoke(app, ["up", "--config", str(config_path), "--prefect-port", str(ops.free_port()),
                             "--mlflow-port", str(ops.free_port()), "--no-schedules"])
    state = ops.read_state(project_dir)
    try:
        assert up.exit_code == 0, up.output
        env = {**ops.base_env(project_dir, REPO), **state.env()}
        subprocess.run([str(Path(sys.executable).parent / "prefect"), "deployment", "run", "validate-data/hourly",
                        "--watch", "--watch-timeout", "300"], env=env, capture_output=True, text=True, timeout=360)
        run = flow_run_of(state.api_url, "validate-data/hourly")
        limit = run["deployment"].get("global_concurrency_limit") or {}
        assert limit.get("limit") == 1, run["deployment"]
        assert run["deployment"]["concurrency_options"]["collision_strategy"] == "CANCEL_NEW", run["deployment"]
        assert run["state"]["type"] == "FAILED" and run["state"]["name"] == "BadInput", run["state"]
        logs = run_logs(state.api_url, run["id"])
        messages = [log["message"] for log in logs]
        assert sum(m.startswith(expected) for m in messages) == 1, "\n".join(messages)
        assert not any("Traceback" in m or "Engine execution exited" in m for m in messages), messages
        errors = [log["message"] for log in logs if log["level"] >= 40]
        # the one line, and Prefect's own final-state line naming it
        assert errors[0].startswith(expected), errors
        assert all(m.startswith("Finished in state BadInput") for m in errors[1:]), errors
        notified = (project_dir / "failures.jsonl").read_text().splitlines()
        assert len(notified) == 1 and expected in notified[0] and run["id"] in notified[0]
    finally:
        down = runner.invoke(app, ["down", "--config", str(config_path)])
    assert down.exit_code == 0, down.output
