"""src/offerflow/prefect.yaml (shipped in the wheel): every flow has a deployment, every entrypoint is a Prefect flow that accepts the
deployment's parameters, every schedule parses, and the cadence matches what the issue asks."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
#: The directory holding the `offerflow` package: the deployments' entrypoints are relative to it.
CODE_DIR = REPO / "src"


@pytest.fixture(scope="module")
def deployments() -> list[dict]:
    return yaml.safe_load((CODE_DIR / "offerflow" / "prefect.yaml").read_text())["deployments"]


def _flow(entrypoint: str):
    from prefect.flows import load_flow_from_entrypoint

    return load_flow_from_entrypoint(str(CODE_DIR / entrypoint))


def test_every_entrypoint_is_a_flow_taking_its_parameters(deployments, tmp_path):
    from prefect import Flow

    seen = set()
    for d in deployments:
        flow = _flow(d["entrypoint"])
        assert isinstance(flow, Flow), d["entrypoint"]
        full = f"{flow.name}/{d['name']}"
        assert full not in seen, f"duplicate deployment {full}"
        seen.add(full)
        params = {k: v.replace("{{ $OFFERFLOW_PROJECT_DIR }}", str(tmp_path)) if isinstance(v, str) else v
                  for k, v in d["parameters"].items()}
        assert flow.validate_parameters(params)["config_path"] == str(tmp_path / "offerflow.yaml")
        assert d["work_pool"]["name"] == "offerflow-process"
    assert {"offerflow-pipeline/daily", "validate-data/hourly", "retrain-auto-optimization/every-15-minutes",
            "train-ranking-models/daily", "train-customer-ai/weekly", "score-and-publish/daily",
            "batch-decisions/daily", "evaluate-models/weekly"} <= seen


def test_every_project_flow_is_deployed(deployments):
    """Every flow that runs on a project file (a `config_path` parameter) has a deployment;
    subflows such as `score-partitions` run inside them."""
    import importlib
    import inspect

    from prefect import Flow

    deployed = {d["entrypoint"].split(":")[1] for d in deployments}
    project_flows = set()
    for path in (REPO / "src" / "offerflow" / "flows").glob("*.py"):
        module = importlib.import_module(f"offerflow.flows.{path.stem}")
        for name, obj in vars(module).items():
            if isinstance(obj, Flow) and obj.fn.__module__ == module.__name__ \
                    and "config_path" in inspect.signature(obj.fn).parameters:
                project_flows.add(name)
    assert len(project_flows) >= 8 and project_flows <= deployed


def test_schedules_parse_and_have_the_expected_cadence(deployments):
    import asyncio
    from datetime import datetime, timezone

    from prefect.server.schemas.schedules import CronSchedule

    gaps = {}
    monday = datetime(2026, 11, 2, tzinfo=timezone.utc)
    for d in deployments:
        for s in d["schedules"]:
            first, second = asyncio.run(CronSchedule(cron=s["cron"], timezone=s["timezone"]).get_dates(n=2, start=monday))
            gaps[f"{_flow(d['entrypoint']).name}/{d['name']}"] = ((second - first).total_seconds() / 3600,
                                                                  s.get("active", True))
    assert gaps["retrain-auto-optimization/every-15-minutes"] == (0.25, True)
    assert gaps["validate-data/hourly"] == (1, True)
    assert gaps["train-ranking-models/daily"] == (24, True)
    assert gaps["score-and-publish/daily"] == (24, True)
    assert gaps["train-customer-ai/weekly"] == (168, True)
    assert gaps["offerflow-pipeline/daily"] == (24, False)  # by hand; the split schedules run production


def test_flow_options_are_typed_so_the_ui_renders_a_form():
    from prefect.utilities.callables import parameter_schema

    for entrypoint, model in [("offerflow/flows/customer_ai.py:train_customer_ai", "CustomerAIOptions"),
                              ("offerflow/flows/ranking_models.py:train_ranking_models", "RankingModelOptions")]:
        schema = parameter_schema(_flow(entrypoint).fn).model_dump()
        assert schema["properties"]["options"]["$ref"].endswith(model) or model in str(schema["properties"]["options"])
        assert model in schema["definitions"]
        props = schema["definitions"][model]["properties"]
        assert {"overrides"} <= set(props)


def test_every_deployment_has_guard_rails(deployments):
    """One run at a time per deployment (a new one is cancelled while the last runs), a time limit
    and the failure hook on every deployed flow."""
    from offerflow.flows.guard_rails import notify_failure

    for d in deployments:
        assert d["concurrency_limit"] == {"limit": 1, "collision_strategy": "CANCEL_NEW"}, d["entrypoint"]
        flow = _flow(d["entrypoint"])
        assert flow.timeout_seconds and 60 <= flow.timeout_seconds <= 4 * 3600, d["entrypoint"]
        assert [hook.__name__ for hook in flow.on_failure_hooks] == [notify_failure.__name__], d["entrypoint"]
        assert [hook.__name__ for hook in flow.on_crashed_hooks] == [notify_failure.__name__], d["entrypoint"]
    every_15_minutes = next(d for d in deployments if d["name"] == "every-15-minutes")
    assert _flow(every_15_minutes["entrypoint"]).timeout_seconds < 15 * 60


def test_scheduled_writers_do_not_fail_on_each_other(deployments):
    """The daily and weekly writers start at the same minute as a 15-minute auto-optimization
    retrain (03:30, 05:00, Monday 02:00): both held the project lock without waiting, so one of the
    two ended `BadInput` and announced a failure. Now the daily/weekly ones wait longer than a
    retrain may run, and a retrain that meets a writer is skipped."""
    by_flow = {_flow(d["entrypoint"]).name: d for d in deployments}
    retrain = by_flow["retrain-auto-optimization"]
    assert retrain["parameters"].get("skip_when_locked") is True
    for name in ("offerflow-pipeline", "train-ranking-models", "train-customer-ai", "score-and-publish"):
        wait = by_flow[name]["parameters"].get("lock_wait_seconds", 0)
        assert wait > _flow(retrain["entrypoint"]).timeout_seconds, name
