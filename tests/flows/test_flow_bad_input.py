"""Bad input to the single-purpose flows (Customer AI, ranking models, scoring, batch decisions,
auto-optimization, validation) ends the run `Failed`/`BadInput` with a one-line message that the
logs carry once, never a traceback; and a missing optional event column is a named warning in the
validation result and its artifact."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from offerflow.core.config import load_config
from offerflow.ingest.events import EventFileError
from offerflow.ingest.snapshot import ingest_events, load_catalog

pytestmark = pytest.mark.flow


def flows():
    from offerflow.flows.auto_optimization import retrain_auto_optimization
    from offerflow.flows.customer_ai import train_customer_ai
    from offerflow.flows.decisions import batch_decisions
    from offerflow.flows.evaluate import evaluate_models
    from offerflow.flows.ranking_models import train_ranking_models
    from offerflow.flows.scoring import score_and_publish
    from offerflow.flows.validate import validate_data

    return {"train-customer-ai": train_customer_ai, "train-ranking-models": train_ranking_models,
            "score-and-publish": score_and_publish, "batch-decisions": batch_decisions,
            "retrain-auto-optimization": retrain_auto_optimization, "validate-data": validate_data,
            "evaluate-models": evaluate_models}


def run_logs(state) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()
    with get_client(sync_client=True) as client:
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[state.state_details.flow_run_id])))
    return [log.message for log in logs]


def assert_bad_input(state, expected: str) -> None:
    assert state.is_failed() and state.name == "BadInput", state
    assert expected in state.message and "\n" not in state.message, state.message
    logs = run_logs(state)
    # logged once where it was met (and named in Prefect's own "Finished in state" line)
    assert sum(expected in m and not m.startswith("Finished in state") for m in logs) == 1, logs
    assert not any("Traceback" in m or "NoneType: None" in m for m in logs), logs


def test_bad_config_is_one_line_in_every_flow(tmp_path, prefect_harness):
    config = tmp_path / "offerflow.yaml"
    config.write_text("placements:\n  - id: web-banner\n    channel: telepathy\n")
    for name, flow in flows().items():
        state = flow(config_path=str(config), return_state=True)
        assert_bad_input(state, "offerflow.yaml: placements[0].channel:")
    missing = flows()["train-customer-ai"](config_path=str(tmp_path / "nope.yaml"), return_state=True)
    assert_bad_input(missing, "nope.yaml: project file not found")


def test_unknown_goal_or_model_is_one_line(project_dir, prefect_harness):
    from offerflow.flows.options import CustomerAIOptions, RankingModelOptions

    config = str(project_dir / "offerflow.yaml")
    state = flows()["train-customer-ai"](config_path=config, options=CustomerAIOptions(goals=["nope"]),
                                         return_state=True)
    assert_bad_input(state, "unknown propensity goal 'nope' (defined: purchase_14d)")
    state = flows()["train-ranking-models"](config_path=config, options=RankingModelOptions(models=["nope"]),
                                            return_state=True)
    assert_bad_input(state, "unknown AI model 'nope' (defined: web-personalized, email-auto)")


@pytest.mark.slow  # eight flow runs: ~14 s at load 3-4
def test_missing_validated_events_and_bad_catalog_are_one_line(project_dir, prefect_harness):
    config = str(project_dir / "offerflow.yaml")
    snapshot = project_dir / "data/outputs/validated/events.parquet"
    for name in ("train-customer-ai", "train-ranking-models", "score-and-publish", "retrain-auto-optimization"):
        state = flows()[name](config_path=config, return_state=True)
        assert_bad_input(state, f"{snapshot}: no validated events yet; run the pipeline (offerflow run) first")

    # a snapshot to read, and a catalog whose fallback offer is no longer a fallback
    snapshot.parent.mkdir(parents=True)
    shutil.copy(project_dir / "data/events.parquet", snapshot)
    offers_path = project_dir / "data/offers.yaml"
    catalog = yaml.safe_load(offers_path.read_text())
    for offer in catalog["offers"]:
        offer["fallback"] = False
    offers_path.write_text(yaml.safe_dump(catalog, sort_keys=False))
    for name in ("train-customer-ai", "train-ranking-models", "batch-decisions", "validate-data"):
        state = flows()[name](config_path=config, return_state=True)
        assert_bad_input(state, f"{offers_path}: placement 'web-banner' has no fallback offer")


def test_evaluate_without_events_or_with_a_bad_catalog_is_one_line(project_dir, prefect_harness):
    evaluate = flows()["evaluate-models"]
    config = str(project_dir / "offerflow.yaml")
    state = evaluate(config_path=config, events=str(project_dir / "nope.parquet"), return_state=True)
    assert_bad_input(state, f"{project_dir / 'nope.parquet'}: events file not found")
    offers_path = project_dir / "data/offers.yaml"
    catalog = yaml.safe_load(offers_path.read_text())
    for offer in catalog["offers"]:
        offer["fallback"] = False
    offers_path.write_text(yaml.safe_dump(catalog, sort_keys=False))
    state = evaluate(config_path=config, return_state=True)
    assert_bad_input(state, f"{offers_path}: placement 'web-banner' has no fallback offer")
    (project_dir / "data/events.parquet").unlink()  # no validated snapshot either: nothing to evaluate
    state = evaluate(config_path=config, return_state=True)
    assert_bad_input(state, f"{project_dir / 'data/events.parquet'}: events file not found")
    with pytest.raises(EventFileError, match="events file not found"):  # from Python: the exception itself
        evaluate(config_path=config)


def test_unknown_segment_file_is_one_line(pipeline_run):
    project, _ = pipeline_run
    state = flows()["batch-decisions"](config_path=str(project / "offerflow.yaml"),
                                       profiles_file=str(project / "nobody.csv"), return_state=True)
    assert_bad_input(state, f"{project / 'nobody.csv'}: profiles file not found")


def test_missing_optional_column_is_a_named_warning(project_dir):
    config = load_config(project_dir / "offerflow.yaml")
    events = config.path(config.data.events)
    pq.write_table(pq.read_table(events).drop_columns(["propensity", "decision_id"]), events)
    _, offers = load_catalog(config, build_docs=False)
    result = ingest_events(config, offers, "missing-columns", build_docs=False)
    (warning,) = [w for w in result.report.warnings if w.name == "optional event columns present"]
    assert warning.observed == "missing optional column(s), filled with nulls: propensity, decision_id"
    assert "optional event columns present: missing optional column(s)" in result.report.summary()
    assert result.report.accepted_count == pq.read_metadata(events).num_rows  # a warning, nothing quarantined


def test_missing_optional_column_reaches_the_validation_artifact(project_dir, prefect_harness):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    events = project_dir / "data/events.parquet"
    pq.write_table(pq.read_table(events).drop_columns(["channel"]), events)
    state = flows()["validate-data"](config_path=str(project_dir / "offerflow.yaml"), return_state=True)
    assert state.is_completed(), state
    warning = "optional event columns present: missing optional column(s), filled with nulls: channel"
    assert warning in state.result()["warnings"]
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])))
    assert any(warning in (a.data or "") for a in artifacts), [a.data for a in artifacts]
    assert any("missing optional column(s), filled with nulls: channel" in m for m in run_logs(state))


def test_a_typo_stops_every_training_and_publishing_flow_before_any_work(project_dir, prefect_harness):
    """The project check runs first in the pipeline, ranking-model, scoring, Customer AI and
    auto-optimization flows: one located line per mistake, `BadInput`, nothing written."""
    from offerflow.flows.pipeline import pipeline

    config_path, offers_path = project_dir / "offerflow.yaml", project_dir / "data/offers.yaml"
    raw = yaml.safe_load(config_path.read_text())
    raw["placements"][2]["ranking"]["formula"] = \
        "if(offer.category == profile.favorite_category, offer.priority * , offer.priority)"
    raw["propensity_goals"][0]["goal"]["all_of"][0]["field"] = "evnt_type"
    config_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    catalog = yaml.safe_load(offers_path.read_text())
    catalog["offers"][0]["eligibility"] = "profile.agee >= 18"
    offers_path.write_text(yaml.safe_dump(catalog, sort_keys=False))
    others = [f"offers.yaml: offers[0].eligibility (offer {catalog['offers'][0]['offer_id']!r}): column 1:"
              " unknown name 'profile.agee'", "offerflow.yaml: propensity_goals[0].goal.all_of[0].field:"
              " unknown event field 'evnt_type'"]
    names = ("train-customer-ai", "train-ranking-models", "score-and-publish", "retrain-auto-optimization")
    for flow in (pipeline, *(flows()[name] for name in names)):
        state = flow(config_path=str(config_path), return_state=True)
        assert_bad_input(state, "offerflow.yaml: placements[2].ranking.formula: column 66: unexpected ','")
        logs = run_logs(state)
        assert all(sum(line in m for m in logs if not m.startswith("Finished in state")) == 1 for line in others), logs
    assert not (project_dir / "data/rankings").exists()
    # nothing written but the project lock each flow held while it checked (core/project_lock.py)
    assert [p.name for p in (project_dir / "data/outputs").iterdir()] == ["offerflow.lock"]


def test_a_failed_run_is_announced_by_the_failure_hook(project_dir, prefect_harness, monkeypatch):
    """The flows' `on_failure` hook appends one JSON line to the project's `notifications.failure_file`;
    when the project file itself is broken, to `OFFERFLOW_FAILURE_FILE`."""
    import json

    config_path = project_dir / "offerflow.yaml"
    raw = yaml.safe_load(config_path.read_text())
    config_path.write_text(yaml.safe_dump({**raw, "notifications": {"failure_file": "logs/failures.jsonl"}},
                                          sort_keys=False))
    state = flows()["train-ranking-models"](config_path=str(config_path), return_state=True)
    assert state.name == "BadInput"
    (record,) = [json.loads(line) for line in (project_dir / "logs/failures.jsonl").read_text().splitlines()]
    assert record["flow"] == "train-ranking-models" and record["state"] == "BadInput"
    assert record["message"] == state.message and record["project"] == raw.get("project", "offerflow")
    assert record["flow_run_id"] == str(state.state_details.flow_run_id)

    monkeypatch.setenv("OFFERFLOW_FAILURE_FILE", str(project_dir / "env-failures.jsonl"))
    config_path.write_text("placements: [\n")
    state = flows()["batch-decisions"](config_path=str(config_path), return_state=True)
    (record,) = [json.loads(line) for line in (project_dir / "env-failures.jsonl").read_text().splitlines()]
    assert record["flow"] == "batch-decisions" and "invalid YAML" in record["message"] and record["project"] is None
    completed = flows()["validate-data"](config_path=str(tmp_config(project_dir, raw)), return_state=True)
    assert completed.is_completed() and len((project_dir / "env-failures.jsonl").read_text().splitlines()) == 1


def test_a_failure_that_cannot_be_announced_says_so_in_the_run_log(tmp_path, prefect_harness, monkeypatch):
    """A project file that no longer loads hides its `notifications:`: the failed run announced
    nothing and said nothing about it (a scheduled run then failed unheard)."""
    monkeypatch.delenv("OFFERFLOW_FAILURE_FILE", raising=False)
    monkeypatch.delenv("OFFERFLOW_FAILURE_WEBHOOK_URL", raising=False)
    config_path = tmp_path / "offerflow.yaml"
    config_path.write_text("placements: [\n")
    state = flows()["validate-data"](config_path=str(config_path), return_state=True)
    assert_bad_input(state, "invalid YAML")
    (warning,) = [m for m in run_logs(state) if m.startswith("failure notification not sent")]
    assert "OFFERFLOW_FAILURE_FILE" in warning and "OFFERFLOW_FAILURE_WEBHOOK_URL" in warning


class _Killed(BaseException):
    """What the engine meets when a run is stopped from outside (SIGTERM, Ctrl-C): not an Exception."""


def test_a_crashed_run_is_announced_too(tmp_path, prefect_harness):
    """docs/operations.md: "Bad input, a timeout and a crash all notify". Prefect runs `on_failure`
    hooks for failed states only; a run killed by SIGTERM ends `Crashed` and announced nothing."""
    import json

    from prefect import flow

    from offerflow.flows.guard_rails import guard_rails

    config_path = tmp_path / "offerflow.yaml"
    config_path.write_text(yaml.safe_dump({"placements": [{"id": "web-banner", "channel": "web"}],
                                           "notifications": {"failure_file": "failures.jsonl"}}))

    @flow(**guard_rails("validate-data"))
    def killed(config_path: str) -> None:
        raise _Killed()

    with pytest.raises(_Killed):
        killed(config_path=str(config_path))
    (record,) = [json.loads(line) for line in (tmp_path / "failures.jsonl").read_text().splitlines()]
    assert record["state"] == "Crashed" and record["flow"] == "validate-data", record


def tmp_config(project_dir: Path, raw: dict) -> Path:
    path = project_dir / "ok.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.mark.slow  # waits for the 20 s connect timeout
def test_an_unreachable_dask_scheduler_is_one_line(project_dir, prefect_harness):
    """docs/scaling.md: "an unreachable scheduler is one line". It ended the run with the whole
    traceback of the connection attempt (395 lines from `offerflow run`)."""
    import socket

    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{free.getsockname()[1]}"
    config_path = project_dir / "offerflow.yaml"
    config_path.write_text(config_path.read_text() + f"compute:\n  dask_address: {address}\n")
    snapshot = project_dir / "data/outputs/validated/events.parquet"
    snapshot.parent.mkdir(parents=True)
    shutil.copy(project_dir / "data/events.parquet", snapshot)
    state = flows()["train-customer-ai"](config_path=str(config_path), return_state=True)
    assert_bad_input(state, f"cannot reach the Dask scheduler at {address}")
