"""Which ranking strategy helps most, as one Prefect flow (`evaluate-models`):

per placement, off-policy estimates of every candidate strategy trained before the evaluation
window -> holdout lift from the decision log -> HTML report -> one MLflow run -> where the
promotion rule says so, the placement switches to the winner (recorded and re-published).

Every step is a call into the `offerflow` library; this file only wires them and names the tasks.
Bad input (a broken project file or catalog, no events to evaluate) ends the run `BadInput` in one
line (flows/bad_input.py).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from offerflow.flows.progress import StepProgress
from offerflow.flows.guard_rails import guard_rails
from offerflow.flows.bad_input import reports_bad_input, retry_unless_bad_input
from offerflow.core.config import ProjectConfig
from offerflow.decisioning.switches import load_serving_config
from offerflow.ingest.events import EventFileError
from offerflow.core.features import open_events
from offerflow.evaluation.report import (EvaluationResult, evaluation_json, load_evaluation_catalog, log_evaluation,
                                          run_evaluation)
from offerflow.evaluation.report_html import write_report
from offerflow.decisioning.switches import apply_serving_decisions
from offerflow.evaluation.strategies import evaluate_placement
from offerflow.core.paths import project_tracker
from offerflow.core.tracking import lineage_tags


def evaluation_inputs(config: ProjectConfig, events: str | None = None) -> tuple[Path, Path]:
    """The events to evaluate on (the validated snapshot when the pipeline has written one) and
    the decision-log directory; an events file that does not exist is bad input, named here."""
    if events:
        events_path = Path(events)
    else:
        snapshot = config.paths.validated_events
        events_path = snapshot if snapshot.exists() else config.path(config.data.events)
    if not events_path.exists():
        raise EventFileError(f"{events_path}: events file not found")
    return events_path, config.paths.decision_log


@task(name="load-catalog", retries=2, retry_delay_seconds=[1, 5], cache_policy=NO_CACHE,
      retry_condition_fn=retry_unless_bad_input)
@reports_bad_input
def load_catalog_task(config: ProjectConfig):
    return load_evaluation_catalog(config)


@task(name="evaluate-placement", cache_policy=NO_CACHE)
def evaluate_placement_task(config: ProjectConfig, events_path: Path, placement_id: str, profiles, offers):
    try:
        return evaluate_placement(open_events(events_path), config, placement_id, profiles, offers)
    except ValueError as exc:
        get_run_logger().warning("%s: no off-policy estimate: %s", placement_id, exc)
        return str(exc)


@task(name="write-report", cache_policy=NO_CACHE)
def write_report_task(config: ProjectConfig, result: EvaluationResult):
    out_dir = config.paths.evaluation_reports
    return write_report(result, config, out_dir)


@task(name="log-evaluation", retries=2, retry_delay_seconds=[1, 5], cache_policy=NO_CACHE)
def log_evaluation_task(config: ProjectConfig, result: EvaluationResult, report_path: Path, charts, tags) -> str:
    tracker = project_tracker(config)
    return log_evaluation(tracker, config, result, report_path, charts, tags)


@task(name="switch-serving", cache_policy=NO_CACHE)  # no retries: a switch is recorded once
def switch_serving_task(config: ProjectConfig, result: EvaluationResult, run_id: str, profiles, offers):
    tracker = project_tracker(config)
    return apply_serving_decisions(config, result, run_id, profiles, offers, tracker)


@flow(**guard_rails("evaluate-models"), log_prints=True)
@reports_bad_input
def evaluate_models(config_path: str = "offerflow.yaml", events: str | None = None,
                    decision_log: str | None = None) -> dict[str, Any]:
    """Evaluate every placement's candidate strategies; write the report and log it to MLflow."""
    config = load_serving_config(config_path)
    events_path, decision_log_dir = evaluation_inputs(config, events)
    if decision_log:
        decision_log_dir = Path(decision_log)
    progress = StepProgress(3 + len(config.placements), key="evaluation-progress",
                            description="Steps of this evaluation")
    with progress.step("load catalog"):
        profiles, offers = load_catalog_task(config, return_state=True).result()  # raises what a BadInput carries

    def evaluate_one(placement_id: str):
        with progress.step(f"evaluate {placement_id}"):
            outcome = evaluate_placement_task(config, events_path, placement_id, profiles, offers)
        if isinstance(outcome, str):
            raise ValueError(outcome)
        return outcome

    result = run_evaluation(None, config, profiles, offers, str(events_path), decision_log_dir, [events_path],
                            evaluate_one=evaluate_one)
    with progress.step("write the report"):
        report_path, charts = write_report_task(config, result)
    with progress.step("log to MLflow, switch serving"):
        run_id = log_evaluation_task(config, result, report_path, charts,
                                     {"flow_run_id": str(flow_run.get_id() or uuid.uuid4()),
                                      **lineage_tags("evaluate-models")})
        switched = switch_serving_task(config, result, run_id, profiles, offers) if any(
            d.serve_candidate for d in result.serving.values()) else {}
    for placement_id, done in switched.items():
        print(f"{placement_id} now serves {done['strategy']} (serving version {done['serving_version']}"
              + (f", table version {done['table_version']})" if done["table_version"] else
                 f"; published at the next scoring run: {done['not_published']})"))
    create_markdown_artifact("# offerflow evaluation\n\n" + "\n".join(f"- {line}" for line in result.summary)
                             + f"\n\nReport: `{report_path}`", key="evaluation-summary",
                             description="Which ranking strategy helps most")
    print(f"report: {report_path}")
    return {"report": str(report_path), "mlflow_run_id": run_id, "summary": result.summary, "notes": result.notes,
            "serving": {p: {"serve_candidate": d.serve_candidate, "reason": d.reason, "candidate": d.candidate,
                            "current": d.current, "switched": switched.get(p)}
                        for p, d in result.serving.items()},
            **evaluation_json(result, config)}
