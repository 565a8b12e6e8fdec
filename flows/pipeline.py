"""The whole offerflow pipeline as one Prefect flow:

validate events -> train Customer AI goals -> score profiles -> train ranking models
-> score and publish one ranking table per placement.

Every step is a call into the `offerflow` library; this file only wires them, names the tasks
Prefect shows, retries I/O, and stops the run when validation fails.

Bad input (an unreadable events file, a broken catalog, failed critical expectations) is not a
bug: the task logs the message once, without a traceback, and returns a `Failed` state named
`BadInput` (never retried); the flow then ends `Failed` with that message, and calling
`pipeline()` raises the original exception, which `offerflow run` prints as its error.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.states import Failed, State

from offerflow.catalog import CatalogError

from offerflow.config import ProjectConfig, load_config
from offerflow.features import open_events
from offerflow.events import EventFileError
from offerflow.ingestion import IngestionResult, ValidationFailed, ingest_events, load_catalog
from offerflow.publishing import publish_placement
from offerflow.store import RankingStore
from offerflow.tracking import Tracker, resolve_tracking_uri
from offerflow.training import (RankingModelResult, TrainingResult, enrich_profiles, score_propensity,
                                train_propensity, train_ranking_model)


BAD_INPUT = "BadInput"


def _bad_input(exc: Exception) -> State:
    """The task's end on bad input: one log record with the message, no traceback."""
    get_run_logger().error("%s", exc)
    return Failed(name=BAD_INPUT, message=str(exc).splitlines()[0], data=exc)


def _retry_unless_bad_input(task, task_run, state: State) -> bool:
    return state.name != BAD_INPUT


def _stop(state: State) -> State:
    """The flow's final state when a step failed: the step's message and exception."""
    return Failed(name=state.name, message=state.message, data=state.result(raise_on_failure=False))


def _record_data_docs(path: Path | None) -> None:
    if path is not None:
        get_run_logger().info("Data Docs: %s", path)
        create_link_artifact(link=path.resolve().as_uri(), link_text="Data Docs", key="data-docs",
                             description="Great Expectations validation results of this run")


@task(name="load-catalog", retries=2, retry_delay_seconds=[1, 5], retry_condition_fn=_retry_unless_bad_input,
      cache_policy=NO_CACHE)
def load_catalog_task(config: ProjectConfig):
    try:
        return load_catalog(config)
    except CatalogError as exc:
        return _bad_input(exc)


# One retry, never on bad input: with retries=0 Prefect logs a returned failed state once more,
# with an empty traceback ("NoneType: None").
@task(name="validate-events", retries=1, retry_delay_seconds=[5], retry_condition_fn=_retry_unless_bad_input,
      cache_policy=NO_CACHE)
def validate_task(config: ProjectConfig, offers, run_id: str) -> IngestionResult:
    try:
        result = ingest_events(config, offers, run_id)
    except ValidationFailed as exc:
        _record_data_docs(exc.data_docs_path)
        return _bad_input(exc)
    except EventFileError as exc:
        return _bad_input(exc)
    logger = get_run_logger()
    logger.info("validated %s", result.counts())
    _record_data_docs(result.report.data_docs_path)
    for warning in result.report.warnings:
        logger.warning("expectation warning: %s (%s)", warning.name, warning.observed)
    return result


@task(name="train-propensity", cache_policy=NO_CACHE)
def train_propensity_task(config: ProjectConfig, events_path: Path, goal_name: str, profiles, tags):
    goal = next(g for g in config.propensity_goals if g.name == goal_name)
    con = open_events(events_path)
    model, result = train_propensity(con, goal, profiles, _tracker(config), config.tracking.experiment_prefix,
                                     config.seed, tags)
    scores, path = score_propensity(con, model, goal, profiles, None, result.model_version,
                                    config.path(config.data.outputs_dir) / "propensity" / goal.name)
    for warning in result.warnings:
        get_run_logger().warning("%s: %s", goal.name, warning)
    return result, scores, path


@task(name="train-ranking-model", cache_policy=NO_CACHE)
def train_ranking_task(config: ProjectConfig, events_path: Path, model_name: str, profiles, offers, tags):
    con = open_events(events_path)
    return train_ranking_model(con, config.ai_model(model_name), profiles, offers, _tracker(config),
                               config.tracking.experiment_prefix, config.seed, tags,
                               stats_dir=offer_stats_dir(config))


@task(name="publish-ranking", retries=2, retry_delay_seconds=[1, 5], cache_policy=NO_CACHE)
def publish_whole_task(config: ProjectConfig, placement_id: str, profiles, offers, model, run_id: str) -> int:
    store = RankingStore(config.path(config.store.path), config.store.keep_versions)
    return publish_placement(store, config.placement(placement_id), profiles, offers, model,
                             {"pipeline_run_id": run_id})


def publish_task(config: ProjectConfig, placement_id: str, profiles, offers, model, run_id: str) -> int:
    """Score and publish one placement: as one table, or in profile partitions (on a Dask cluster
    with `compute.dask_address`, see flows/scale_out.py) when `compute` asks for it."""
    from flows.scale_out import publish_partitioned, uses_partitions

    posterior = model is not None and model.kind == "auto_optimization"  # one row per offer: no partitions
    if uses_partitions(config) and profiles is not None and not posterior:
        return publish_partitioned(config, placement_id, profiles, offers, model, run_id)
    return publish_whole_task(config, placement_id, profiles, offers, model, run_id)


def offer_stats_dir(config: ProjectConfig) -> Path:
    """Where the daily offer statistics of each AI model are kept between runs."""
    return config.path(config.data.outputs_dir) / "offer_stats"


def _tracker(config: ProjectConfig) -> Tracker:
    return Tracker(resolve_tracking_uri(config.tracking.uri, config.root), config.path(config.tracking.artifact_root))


def _summary_markdown(summary: dict[str, Any]) -> str:
    lines = ["# offerflow pipeline run", "", "| step | result |", "|---|---|"]
    v = summary["validation"]
    lines.append(f"| validation | {v['accepted']} accepted, {v['quarantined']} quarantined of {v['rows']} |")
    if v.get("data_docs"):
        lines.append(f"| Data Docs | `{v['data_docs']}` |")
    for name, r in summary["propensity"].items():
        lines.append(f"| propensity `{name}` | AUC {r['metrics']['auc']:.3f}, v{r['model_version']},"
                     f" promoted={r['promoted']} |")
    for name, r in summary["ranking_models"].items():
        auc = r["metrics"].get("holdout_auc")
        lines.append(f"| ranking model `{name}` | {r['kind']}, {int(r['metrics']['offers_qualified'])} offers"
                     f" qualified" + (f", AUC {auc:.3f}" if auc is not None else "") + " |")
    for placement, version in summary["published"].items():
        lines.append(f"| published `{placement}` | version {version} |")
    return "\n".join(lines)


@flow(name="offerflow-pipeline", log_prints=True)
def pipeline(config_path: str = "offerflow.yaml") -> dict[str, Any]:
    """Validate, train, score and publish for the project described by `config_path`."""
    config = load_config(config_path)
    run_id = str(flow_run.get_id() or uuid.uuid4())
    tags = {"pipeline_run_id": run_id, "project": config.project}
    catalog = load_catalog_task(config, return_state=True)
    if catalog.is_failed():
        return _stop(catalog)
    profiles, offers = catalog.result()
    validated = validate_task(config, offers, run_id, return_state=True)
    if validated.is_failed():
        return _stop(validated)
    ingestion = validated.result()
    events_path = ingestion.validated_path

    propensity: dict[str, TrainingResult] = {}
    scores = {}
    for goal in config.propensity_goals:
        result, goal_scores, _ = train_propensity_task(config, events_path, goal.name, profiles, tags)
        propensity[goal.name], scores[goal.name] = result, goal_scores
    enriched = enrich_profiles(profiles, scores, config.path(config.data.outputs_dir) / "profiles_enriched.parquet")

    ranking: dict[str, RankingModelResult] = {}
    for model in config.ai_models:
        if model.status == "active":
            ranking[model.name] = train_ranking_task(config, events_path, model.name, enriched, offers, tags)

    published = {}
    for placement in config.placements:
        model = ranking.get(placement.ranking.ai_model) if placement.ranking.ai_model else None
        published[placement.id] = publish_task(config, placement.id, enriched, offers, model, run_id)

    summary = {
        "run_id": run_id,
        "validation": {**ingestion.counts(), "data_docs": str(ingestion.report.data_docs_path or "")},
        "propensity": {k: {"metrics": v.metrics, "model_version": v.model_version, "promoted": v.promoted,
                           "reason": v.reason, "run_id": v.run_id} for k, v in propensity.items()},
        "ranking_models": {k: {"kind": v.kind, "metrics": v.metrics, "model_version": v.model_version,
                               "run_id": v.run_id} for k, v in ranking.items()},
        "published": published,
    }
    create_markdown_artifact(_summary_markdown(summary), key="pipeline-summary",
                             description="What this pipeline run validated, trained and published")
    return summary
