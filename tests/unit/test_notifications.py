"""Failure notifications: where they go (project settings, environment), the JSON line in the file,
the POST to a webhook, and problems reported instead of raised."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from offerflow.core.config import ConfigError, parse_config
from offerflow.core.notifications import NotificationsConfig
from offerflow.ops.notifications import announce_failure, failure_targets

RECORD = {"event": "offerflow.flow_run.failed", "flow": "validate-data", "state": "BadInput", "message": "x: y"}


def test_targets_resolve_against_the_project_and_the_environment_wins(tmp_path):
    settings = NotificationsConfig(failure_file=Path("logs/failures.jsonl"), failure_webhook_url="http://h/x")
    assert failure_targets(settings, tmp_path, environ={}) == (tmp_path / "logs/failures.jsonl", "http://h/x")
    env = {"OFFERFLOW_FAILURE_FILE": "/var/f.jsonl", "OFFERFLOW_FAILURE_WEBHOOK_URL": "https://e/y"}
    assert failure_targets(settings, tmp_path, environ=env) == (Path("/var/f.jsonl"), "https://e/y")
    assert failure_targets(None, tmp_path, environ={}) == (None, None)


def test_a_bad_webhook_url_is_a_located_config_error():
    raw = {"placements": [{"id": "web", "channel": "web"}], "notifications": {"failure_webhook_url": "ftp://x"}}
    with pytest.raises(ConfigError, match=r"offerflow.yaml: notifications.failure_webhook_url: .*http"):
        parse_config(raw, source="offerflow.yaml", root=Path("."))


def test_the_file_gets_one_json_line_per_failure(tmp_path):
    path = tmp_path / "logs/failures.jsonl"
    assert announce_failure(RECORD, path, None) == []
    assert announce_failure({**RECORD, "flow": "batch-decisions"}, path, None) == []
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["flow"] for r in lines] == ["validate-data", "batch-decisions"] and lines[0] == RECORD


def test_the_webhook_is_posted_the_record_and_failures_come_back_as_problems(tmp_path):
    received: list[bytes] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            received.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(204 if self.path == "/ok" else 500)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        assert announce_failure(RECORD, None, f"{base}/ok") == []
        assert json.loads(received[0]) == RECORD
        assert announce_failure(RECORD, None, f"{base}/broken") == [f"webhook {base}/broken: HTTP 500"]
    finally:
        server.shutdown()
        server.server_close()
    problems = announce_failure(RECORD, tmp_path / "ok.jsonl", f"{base}/ok", timeout_s=2)
    assert len(problems) == 1 and problems[0].startswith(f"webhook {base}/ok: ConnectError")
    (tmp_path / "blocker").write_text("")
    problems = announce_failure(RECORD, tmp_path / "blocker" / "f.jsonl", None)
    assert len(problems) == 1 and problems[0].startswith(f"failure file {tmp_path / 'blocker' / 'f.jsonl'}")
