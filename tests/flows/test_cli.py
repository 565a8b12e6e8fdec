"""The README's commands, run through the real CLI against a real pipeline run."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest
from typer.testing import CliRunner

from offerflow.cli import app

pytestmark = pytest.mark.flow
runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_decide_json_and_decision_log(pipeline_run):
    project, _ = pipeline_run
    config = str(project / "offerflow.yaml")
    result = invoke("decide", "--profile", "p0000002", "--placement", "web-banner", "--placement", "email-hero",
                    "--config", config, "--json")
    assert result.exit_code == 0, result.output
    decision = json.loads(result.output)
    assert [p["placement_id"] for p in decision["placements"]] == ["web-banner", "email-hero"]
    offers = [i["offer_id"] for p in decision["placements"] for i in p["items"]]
    assert len(offers) == len(set(offers))
    logged = pd.concat(pd.read_parquet(f) for f in (project / "data/outputs/decision_log").glob("*.parquet"))
    assert set(logged["decision_id"]) >= {decision["decision_id"]}
    assert set(logged["event_type"]) == {"display"}
    table = invoke("decide", "-p", "p0000002", "-x", "web-banner", "-x", "email-hero", "--config", config, "--no-log")
    assert "web-personalized v1" in table.output and "email-auto" in table.output  # posteriors: no registered version
    assert "vNone" not in table.output


def test_decide_unknown_placement_is_a_clear_error(pipeline_run):
    project, _ = pipeline_run
    result = invoke("decide", "-p", "p0000001", "-x", "push-hero", "--config", str(project / "offerflow.yaml"))
    assert result.exit_code == 1
    assert "unknown placement(s): push-hero" in result.output
    assert "Traceback" not in result.output


def test_rankings_list_and_rollback(pipeline_run, tmp_path):
    import shutil

    project, _ = pipeline_run
    copy = tmp_path / "p"
    shutil.copytree(project, copy)
    config = str(copy / "offerflow.yaml")
    listed = invoke("rankings", "list", "--config", config)
    assert listed.exit_code == 0 and "web-banner" in listed.output
    failed = invoke("rankings", "rollback", "web-banner", "--config", config)
    assert failed.exit_code == 1 and "web-banner" in failed.output  # only one version so far

    from offerflow.core.store import RankingStore

    store = RankingStore(copy / "data" / "rankings")
    store.publish("web-banner", store.read_table("web-banner"), {"kind": "ranking", "note": "republish"})
    rolled = invoke("rankings", "rollback", "web-banner", "--config", config)
    assert rolled.exit_code == 0 and "version 1 is current" in rolled.output


def test_rankings_show_prints_posterior_counts_as_counts(pipeline_run):
    """An auto-optimization table's clicks are counts (a float column, for value-weighted goals):
    they print as 45, not 45.0000; a missing model version reads 'none', not 'None'."""
    project, _ = pipeline_run
    shown = invoke("rankings", "show", "email-hero", "--rows", "3", "--config", str(project / "offerflow.yaml"))
    assert shown.exit_code == 0, shown.output
    rows = [line for line in shown.output.splitlines() if "o-" in line and "│" in line]
    assert rows and not any(re.search(r"│ +\d[\d,]*\.0000 +│", line) for line in rows), shown.output
    assert "None" not in shown.output


def test_bad_config_is_one_clear_message(tmp_path):
    (tmp_path / "offerflow.yaml").write_text("placements: []\n")
    result = invoke("run", "--config", str(tmp_path / "offerflow.yaml"))
    assert result.exit_code == 1
    assert "offerflow.yaml: placements: List should have at least 1 item" in result.output
    assert "Traceback" not in result.output


def test_serve_answers_over_real_http(pipeline_run):
    import socket
    import subprocess
    import sys
    import time

    import httpx

    project, _ = pipeline_run
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "offerflow.cli", "serve", "--config",
                               str(project / "offerflow.yaml"), "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except httpx.TransportError:
                assert server.poll() is None and time.monotonic() < deadline, server.stdout.read().decode()
                time.sleep(0.3)
        assert health.json()["placements"]["web-banner"] == 1
        answer = httpx.post(f"http://127.0.0.1:{port}/decisions", timeout=5,
                            json={"profile_id": "p0000002", "placements": ["web-banner"]})
        assert answer.status_code == 200 and answer.json()["placements"][0]["items"]
        bad = httpx.post(f"http://127.0.0.1:{port}/decisions", timeout=5, content=b"{not json",
                         headers={"content-type": "application/json"})
        assert bad.status_code == 422
    finally:
        server.terminate()
        server.wait(timeout=30)
        server.stdout.close()


def test_serve_refuses_several_workers_with_the_embedded_cap_store(project_dir):
    result = runner.invoke(app, ["serve", "--config", str(project_dir / "offerflow.yaml"), "--workers", "2"])
    assert result.exit_code == 1
    assert "caps.store: --workers 2 needs a shared cap store" in " ".join(result.output.split())
    assert "Traceback" not in result.output
