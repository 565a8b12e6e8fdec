"""Guard rails of the scheduled flows: a time limit per flow and a notification when a run fails.

`TIMEOUT_SECONDS` is each project flow's `timeout_seconds` (a run over it ends `TimedOut`, a
failed state); `notify_failure` is their `on_failure` and `on_crashed` hook (Prefect runs
`on_failure` hooks for failed states only, not for a run that crashed, e.g. on SIGTERM): one
JSON line with the flow, the run, its state and message, appended to the project's
`notifications.failure_file` and/or POSTed to `notifications.failure_webhook_url` (or the
`OFFERFLOW_FAILURE_FILE` / `OFFERFLOW_FAILURE_WEBHOOK_URL` environment variables). The
concurrency limit of one run per deployment is declared in prefect.yaml. See docs/operations.md.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from prefect.logging.loggers import flow_run_logger

from offerflow.core.config import ConfigError, load_config
from offerflow.core.notifications import FAILURE_FILE_ENV, FAILURE_WEBHOOK_ENV
from offerflow.ops.notifications import announce_failure, failure_targets

#: Flow name -> the longest a run may take, with room for a project ten times the demo's size.
TIMEOUT_SECONDS = {
    "offerflow-pipeline": 4 * 3600,
    "validate-data": 3600,
    "retrain-auto-optimization": 600,  # scheduled every 15 minutes: never runs into the next one
    "train-ranking-models": 3 * 3600,
    "train-customer-ai": 4 * 3600,
    "score-and-publish": 2 * 3600,
    "batch-decisions": 3600,
    "evaluate-models": 2 * 3600,
}


def failure_record(flow: Any, flow_run: Any, state: Any, project: str | None) -> dict[str, Any]:
    """What a failure notification says: which flow and run, the final state and its message."""
    return {"event": "offerflow.flow_run.failed", "project": project, "flow": flow.name,
            "flow_run_id": str(flow_run.id), "flow_run_name": flow_run.name,
            "deployment_id": str(flow_run.deployment_id) if flow_run.deployment_id else None,
            "state": state.name, "message": state.message, "at": datetime.now(timezone.utc).isoformat()}


def notify_failure(flow: Any, flow_run: Any, state: Any) -> None:
    """`on_failure` hook: announce the failed run where the project (or the environment) says.
    A project file that no longer loads still announces through the environment variables."""
    config_path = (flow_run.parameters or {}).get("config_path")
    settings, root, project, unreadable = None, Path.cwd(), None, False
    if config_path:
        try:
            config = load_config(config_path)
            settings, root, project = config.notifications, config.root, config.project
        except ConfigError:
            unreadable = True
    file, url = failure_targets(settings, root)
    if file is None and url is None:
        if unreadable:  # its `notifications:` may name a file or webhook nobody hears from now
            flow_run_logger(flow_run, flow).warning(
                "failure notification not sent: the project file does not load, so its notifications:"
                " settings are unknown; set %s or %s in the worker's environment (before `offerflow up`)"
                " to be told of such failures", FAILURE_FILE_ENV, FAILURE_WEBHOOK_ENV)
        return
    timeout = settings.webhook_timeout_seconds if settings else 10.0
    for problem in announce_failure(failure_record(flow, flow_run, state, project), file, url, timeout):
        flow_run_logger(flow_run, flow).warning("failure notification not delivered: %s", problem)


def guard_rails(name: str) -> dict[str, Any]:
    """The `@flow` options of a project flow: its name, time limit and failure hook (on a failed
    and on a crashed run)."""
    return {"name": name, "timeout_seconds": TIMEOUT_SECONDS[name], "on_failure": [notify_failure],
            "on_crashed": [notify_failure]}
