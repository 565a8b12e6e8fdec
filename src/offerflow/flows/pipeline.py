"""The whole offerflow pipeline as one Prefect flow:

validate events -> train Customer AI goals -> score profiles -> train ranking models
-> score and stage one ranking table per placement -> switch them all together (one manifest).

Every step is a call into the `offerflow` library; this file only wires them, names the tasks
Prefect shows, retries I/O, and stops the run when validation fails.

Bad input (an unreadable events file, a broken catalog, failed critical expectations) is not a
bug: the task logs the message once, without a traceback, and returns a `Failed` state named
`BadInput` (never retried); the flow then ends `Failed` with that message, and calling
`pipeline()` raises the original exception, which `offerflow run` prints as its error
(flows/bad_input.py).

Validation, training and publishing are cached on their inputs' fingerprints (flows/caching.py):
a re-run on unchanged data reuses their results (`Cached`) and publishes nothing new.
"""

from __future__ import annotations

import shlex
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.states import State

from offerflow.flows import caching
from offerflow.flows.guard_rails import guard_rails
from offerflow.flows.bad_input import BAD_INPUT, bad_input, reports_bad_input, retry_unless_bad_input, stop
from offerflow.flows.caching import InputFingerprints
from offerflow.flows.locking import holds_project_lock
from offerflow.flows.progress import StepProgress, summary_warning
from offerflow.ingest.catalog import CatalogError
from offerflow.core.config import ProjectConfig
from offerflow.core.overrides import VariantOptions, variant
from offerflow.decisioning.switches import load_serving_config
from offerflow.core.features import events_dataset, open_events
from offerflow.ingest.events import EventFileError
from offerflow.core.fingerprints import FileFingerprints, frame_fingerprint
from offerflow.ingest.snapshot import (IngestionResult, ValidationFailed, ingest_events, load_catalog, logged_displays_note,
                                       validated_events, validated_run_id)
from offerflow.ranking.publishing import publish_placement
from offerflow.customer_ai.propensity import history_too_short
from offerflow.core.promotion import TrainingResult
from offerflow.ranking.ai_models import RankingModelResult
from offerflow.models.customer_ai_training import enrich_profiles, score_propensity, scoring_date, train_propensity
from offerflow.models.scoring_runs import track_publication, track_scoring
from offerflow.models.ranking_training import train_ranking_model
from offerflow.models.project_check import require_valid_project
from offerflow.core.paths import project_tracker, ranking_store
from offerflow.core.tracking import PARENT_RUN_TAG, lineage_tags, run_stamp


__all__ = ["BAD_INPUT", "pipeline"]


# What each cached task's result depends on (flows/caching.py adds the project and code version).
def _validation_inputs(inputs: dict[str, Any], files: FileFingerprints) -> dict[str, Any]:
    config: ProjectConfig = inputs["config"]
    return {"events": files.of(config.path(config.data.events)), "data": config.data,
            "logged_displays": ([files.of(p) for p in config.paths.logged_display_files()]
                                if config.data.decision_log_displays else None),
            "offer_ids": sorted(map(str, inputs["offers"]["offer_id"])),
            "placements": [p.id for p in config.placements], "validation": config.validation,
            # future timestamps are judged against the clock: a validation is reused on its UTC day only
            "day": datetime.now(timezone.utc).date().isoformat()}


def _propensity_inputs(inputs: dict[str, Any], files: FileFingerprints) -> dict[str, Any]:
    config: ProjectConfig = inputs["config"]
    return {"events": files.of(inputs["events_path"]), "profiles": frame_fingerprint(inputs["profiles"]),
            "goal": config.goal(inputs["goal_name"]),
            "seed": config.seed, "tracking": config.tracking, "outputs": config.data.outputs_dir,
            "dask": config.compute.dask_address}


def _ranking_inputs(inputs: dict[str, Any], files: FileFingerprints) -> dict[str, Any]:
    config: ProjectConfig = inputs["config"]
    return {"events": files.of(inputs["events_path"]), "profiles": frame_fingerprint(inputs["profiles"]),
            "offers": frame_fingerprint(inputs["offers"]), "model": config.ai_model(inputs["model_name"]),
            "seed": config.seed, "tracking": config.tracking, "dask": config.compute.dask_address}


def model_identity(model: RankingModelResult | None) -> dict[str, Any] | None:
    """What a published table depends on of its model: the training run, the version, the posteriors."""
    if model is None:
        return None
    return {"name": model.name, "kind": model.kind, "run_id": model.run_id, "version": model.model_version,
            "promoted": model.promoted, "posteriors": frame_fingerprint(model.posteriors)}


def _publish_inputs(inputs: dict[str, Any], files: FileFingerprints) -> dict[str, Any]:
    config: ProjectConfig = inputs["config"]
    return {"placement": config.placement(inputs["placement_id"]), "profiles": frame_fingerprint(inputs["profiles"]),
            "offers": frame_fingerprint(inputs["offers"]), "model": model_identity(inputs["model"]),
            "store": config.store, "strict": config.strict}


def _snapshot_intact(config: ProjectConfig) -> Any:
    """A cached validation is trusted while the snapshot is still the one it wrote."""
    return lambda result: result.validated_path.exists() and validated_run_id(config) == result.report.run_id


def _still_current(config: ProjectConfig, placement_id: str) -> Any:
    """A cached publication is trusted while its version is still the placement's current one."""
    store = ranking_store(config)
    return lambda version: store.current_version(placement_id) == version


def _record_data_docs(path: Path | None) -> None:
    """The Data Docs path as text: a browser does not follow a file:// link from the Prefect UI (an
    http page), and the site is a folder on the machine that ran the flow; its pages load no CDN."""
    if path is not None:
        get_run_logger().info("Data Docs: %s", path)
        create_markdown_artifact(
            f"Data Docs of this run, on the machine that ran it (open in a browser there, no network "
            f"needed):\n\n`{path.resolve()}`\n\nTo view them from elsewhere, serve the folder: "
            f"`python -m http.server --bind 127.0.0.1 --directory {shlex.quote(str(path.resolve().parent))} 8010`",
            key="data-docs", description="Great Expectations validation results of this run")


@task(name="load-catalog", retries=2, retry_delay_seconds=[1, 5], retry_condition_fn=retry_unless_bad_input,
      cache_policy=NO_CACHE)
def load_catalog_task(config: ProjectConfig):
    try:
        return load_catalog(config)
    except CatalogError as exc:
        return bad_input(exc)


# One retry, never on bad input: with retries=0 Prefect logs a returned failed state once more,
# with an empty traceback ("NoneType: None").
@task(name="validate-events", retries=1, retry_delay_seconds=[5], retry_condition_fn=retry_unless_bad_input,
      cache_policy=InputFingerprints(depends_on=_validation_inputs))
def validate_task(config: ProjectConfig, offers, run_id: str) -> IngestionResult:
    try:
        result = ingest_events(config, offers, run_id)
    except ValidationFailed as exc:
        _record_data_docs(exc.data_docs_path)
        return bad_input(exc)
    except EventFileError as exc:
        return bad_input(exc)
    logger = get_run_logger()
    logger.info("validated %s", result.counts())
    _record_data_docs(result.report.data_docs_path)
    for warning in result.report.warnings:
        summary_warning(f"expectation warning: {warning.name} ({warning.observed})")
    return result


@task(name="train-propensity", cache_policy=InputFingerprints(depends_on=_propensity_inputs))
@reports_bad_input
def train_propensity_task(config: ProjectConfig, events_path: Path, goal_name: str, profiles, tags):
    goal = config.goal(goal_name)
    con = open_events(events_path)
    model, result = train_propensity(con, goal, profiles, project_tracker(config), config.tracking.experiment_prefix,
                                     config.seed, tags, dask_address=config.compute.dask_address)
    scores, path = score_propensity(con, model, goal, profiles, None, result.model_version,
                                    config.paths.propensity_scores(goal.name))
    scoring = track_scoring(project_tracker(config), config.tracking.experiment_prefix, con, model, goal, profiles,
                            scores, scoring_date(con), result.model_version, config.tracking.drift_psi_threshold, tags)
    for warning in [*result.warnings, *scoring.warnings()]:
        get_run_logger().warning("%s: %s", goal.name, warning)
    return result, scores, path


@task(name="train-ranking-model", cache_policy=InputFingerprints(depends_on=_ranking_inputs))
@reports_bad_input
def train_ranking_task(config: ProjectConfig, events_path: Path, model_name: str, profiles, offers, tags):
    con = open_events(events_path)
    return train_ranking_model(con, config.ai_model(model_name), profiles, offers, project_tracker(config),
                               config.tracking.experiment_prefix, config.seed, tags,
                               stats_dir=offer_stats_dir(config), dask_address=config.compute.dask_address)


@task(name="publish-ranking", retries=2, retry_delay_seconds=[1, 5], cache_policy=InputFingerprints(depends_on=_publish_inputs))
def publish_whole_task(config: ProjectConfig, placement_id: str, profiles, offers, model, run_id: str) -> int:
    """Stage the placement's new table for run `run_id` (`published_together` switches it)."""
    return publish_placement(ranking_store(config).publication(run_id), config.placement(placement_id), profiles,
                             offers, model, {"pipeline_run_id": run_id}, strict=config.strict)


@task(name="switch-placements", retries=2, retry_delay_seconds=[1, 5], cache_policy=NO_CACHE)
def switch_task(config: ProjectConfig, versions: dict[str, int], run_id: str) -> dict[str, int]:
    """Switch every staged placement at once: one new manifest (`RankingStore.commit`)."""
    return ranking_store(config).commit(versions, run_id).versions()


@contextmanager
def published_together(config: ProjectConfig, run_id: str,
                       progress: StepProgress | None = None) -> Iterator[dict[str, int]]:
    """Collect placement -> staged version in the body (`publish_task`); when it ends without an
    error, switch them all with one manifest (a `progress` step of its own). An error or a kill
    before that leaves every placement on its previous version (the staged ones are orphans the
    next run removes)."""
    staged: dict[str, int] = {}
    with ranking_store(config).staging(run_id):
        yield staged
        with progress.step("switch every placement") if progress is not None else nullcontext():
            if staged:
                switch_task(config, staged, run_id)


def publish_task(config: ProjectConfig, placement_id: str, profiles, offers, model, run_id: str,
                 use_cache: bool = True) -> int:
    """Score and stage one placement for run `run_id`, inside `published_together`: as one table
    (cached on its inputs), or in profile partitions (on a Dask cluster with
    `compute.dask_address`, see flows/scale_out.py) when `compute` asks for it."""
    from offerflow.flows.scale_out import publish_partitioned, uses_partitions

    posterior = model is not None and model.kind == "auto_optimization"  # one row per offer: no partitions
    if profiles is not None and not posterior and uses_partitions(config, len(profiles)):
        return publish_partitioned(config, placement_id, profiles, offers, model, run_id)
    return caching.result(publish_whole_task, config, placement_id, profiles, offers, model, run_id,
                          use_cache=use_cache, intact=_still_current(config, placement_id))


def check_before_work(config: ProjectConfig, config_path: str, strict: bool = False) -> ProjectConfig:
    """`config`, once every formula, eligibility rule and goal condition parsed and type-checked
    (`models.project_check`): a mistake ends the run as `BadInput`, one located line each, before
    anything trains or publishes. `strict` (or `strict: true` in the project file) makes the
    check's warnings, and publishing's, errors; the config returned carries it."""
    if strict:
        config = config.model_copy(update={"strict": True})
    for warning in require_valid_project(config, Path(config_path).name).warnings:
        summary_warning(warning)  # the CLI printed its own check's first
    return config


def training_run(config: ProjectConfig, section: str, names: list[str], options: VariantOptions):
    """What a training flow starts from: the config with the run's variant of `names` in `section`
    applied, the validated events, the flow run's id and the MLflow tags of its runs."""
    config = variant(config, section, names, options.overrides)
    run_id = str(flow_run.get_id() or uuid.uuid4())
    tags = {"flow_run_id": run_id, "project": config.project, **options.variant_tags(),
            **lineage_tags(flow_run.get_flow_name() or "offerflow")}
    return config, validated_events(config), run_id, tags


def load_project_catalog(config: ProjectConfig):
    """(profiles, offers), raising the catalog's `CatalogError` when it is bad input (a task that
    returned a failed state does not raise when called directly)."""
    return load_catalog_task(config, return_state=True).result()


def validate_events(config: ProjectConfig, offers, run_id: str, use_cache: bool = True) -> State:
    """The validation task's final state, cached while the snapshot it wrote is current."""
    return caching.call(validate_task, config, offers, run_id, use_cache=use_cache, intact=_snapshot_intact(config))


def train_goal(config: ProjectConfig, events_path: Path, goal_name: str, profiles, tags, use_cache: bool = True):
    """(result, scores, scores path) of one Customer AI goal, cached while its scores file exists."""
    return caching.result(train_propensity_task, config, events_path, goal_name, profiles, tags,
                          use_cache=use_cache, intact=lambda r: Path(r[2]).exists())


def train_ranking(config: ProjectConfig, events_path: Path, model_name: str, profiles, offers, tags,
                  use_cache: bool = True) -> RankingModelResult:
    result = caching.result(train_ranking_task, config, events_path, model_name, profiles, offers, tags,
                            use_cache=use_cache)
    if result.reason.startswith("not trained"):  # this model alone; the run goes on
        summary_warning(f"{model_name}: {result.reason}")
    return result


def offer_stats_dir(config: ProjectConfig) -> Path:
    """Where the daily offer statistics of each AI model are kept between runs."""
    return config.paths.offer_stats



def _summary_markdown(summary: dict[str, Any]) -> str:
    lines = ["# offerflow pipeline run", "", "| step | result |", "|---|---|"]
    v = summary["validation"]
    lines.append(f"| validation | {v['accepted']} accepted, {v['quarantined']} quarantined of {v['rows']}"
                 f"{logged_displays_note(v)} |")
    if v.get("data_docs"):
        lines.append(f"| Data Docs | `{v['data_docs']}` |")
    for warning in v.get("warnings", []):
        lines.append(f"| validation warning | {warning} |")
    for name, r in summary["propensity"].items():
        lines.append(f"| propensity `{name}` | AUC {r['metrics']['auc']:.3f}, v{r['model_version']},"
                     f" promoted={r['promoted']} |")
    for name, reason in summary.get("propensity_skipped", {}).items():
        lines.append(f"| propensity `{name}` | skipped: {reason} |")
    for name, r in summary["ranking_models"].items():
        auc = r["metrics"].get("holdout_auc")
        lines.append(f"| ranking model `{name}` | {r['kind']}, {int(r['metrics']['offers_qualified'])} offers"
                     f" qualified" + (f", AUC {auc:.3f}" if auc is not None else "") + " |")
    for placement, version in summary["published"].items():
        lines.append(f"| published `{placement}` | version {version} |")
    return "\n".join(lines)


#: The flow name, also the `mlflow.source.name` of its MLflow runs.
PIPELINE_FLOW = "offerflow-pipeline"


@flow(**guard_rails(PIPELINE_FLOW), log_prints=True)
@reports_bad_input
@holds_project_lock
def pipeline(config_path: str = "offerflow.yaml", use_cache: bool = True, strict: bool = False,
             lock_wait_seconds: float = 0.0) -> dict[str, Any]:
    """Validate, train, score and publish for the project described by `config_path`
    (`use_cache=False` recomputes every step even when its inputs did not change; `strict` makes
    formulas and rules that rank nothing errors). The run holds the project lock (core/project_lock.py):
    another writing command in the project makes it wait up to `lock_wait_seconds`, then stop.

    The run is one parent MLflow run (experiment `<prefix>-pipeline`); every step that trains or
    scores starts a child run of it in its own experiment (docs/data-scientists.md, lineage)."""
    config = check_before_work(load_serving_config(config_path), config_path, strict)
    run_id = str(flow_run.get_id() or uuid.uuid4())
    tracker = project_tracker(config)
    with tracker.parent_run(f"{config.tracking.experiment_prefix}-pipeline", f"pipeline-{run_stamp()}", PIPELINE_FLOW,
                            {"pipeline_run_id": run_id, "project": config.project}) as parent:
        tags = {"pipeline_run_id": run_id, "project": config.project, **lineage_tags(PIPELINE_FLOW, parent.run_id)}
        outcome = _pipeline_steps(config, run_id, tags, use_cache)
        if isinstance(outcome, State):  # stopped on bad input
            parent.status = "FAILED"
        else:
            tracker.set_run_tags(parent.run_id, {f"published.{p}": v for p, v in outcome["published"].items()})
            outcome["mlflow_run_id"] = parent.run_id
    return outcome


def _pipeline_steps(config: ProjectConfig, run_id: str, tags: dict[str, str], use_cache: bool) -> dict[str, Any] | State:
    """The pipeline's steps, in order; a failed state when validation stops the run."""
    active = [m for m in config.ai_models if m.status == "active"]
    progress = StepProgress(3 + len(config.propensity_goals) + len(active) + len(config.placements),
                            key="pipeline-progress", description="Steps of this pipeline run done")
    with progress.step("load catalog"):
        catalog = load_catalog_task(config, return_state=True)
    if catalog.is_failed():
        return stop(catalog)
    profiles, offers = catalog.result()
    with progress.step("validate events"):
        validated = validate_events(config, offers, run_id, use_cache)
    if validated.is_failed():
        return stop(validated)
    ingestion = validated.result()
    events_path = ingestion.validated_path
    snapshot = events_dataset(open_events(events_path))
    project_tracker(config).log_input(snapshot, "validated snapshot", tags[PARENT_RUN_TAG])

    propensity: dict[str, TrainingResult] = {}
    scores = {}
    skipped: dict[str, str] = {}
    for goal in config.propensity_goals:
        with progress.step(f"train Customer AI goal {goal.name}"):
            if (reason := history_too_short(events_path, goal)) is not None:  # this goal alone; the run goes on
                summary_warning(reason)
                skipped[goal.name] = reason
                continue
            result, goal_scores, _ = train_goal(config, events_path, goal.name, profiles, tags, use_cache)
        propensity[goal.name], scores[goal.name] = result, goal_scores
    enriched = enrich_profiles(profiles, scores, config.paths.enriched_profiles)

    ranking: dict[str, RankingModelResult] = {}
    for model in active:
        with progress.step(f"train ranking model {model.name}"):
            ranking[model.name] = train_ranking(config, events_path, model.name, enriched, offers, tags, use_cache)

    with published_together(config, run_id, progress) as published:  # every placement switches at once, or none
        for placement in config.placements:
            model = ranking.get(placement.ranking.ai_model) if placement.ranking.ai_model else None
            with progress.step(f"score and stage {placement.id}"):
                published[placement.id] = publish_task(config, placement.id, enriched, offers, model, run_id,
                                                       use_cache)
    for placement in config.placements:  # switched: each publication is a child run of the pipeline's
        model = ranking.get(placement.ranking.ai_model) if placement.ranking.ai_model else None
        track_publication(project_tracker(config), config.tracking.experiment_prefix, placement.id,
                          published[placement.id], model, snapshot, tags)
    summary = _summary(run_id, ingestion, propensity, skipped, ranking, published)
    create_markdown_artifact(_summary_markdown(summary), key="pipeline-summary",
                             description="What this pipeline run validated, trained and published")
    return summary


def _summary(run_id: str, ingestion: IngestionResult, propensity: dict[str, TrainingResult], skipped: dict[str, str],
             ranking: dict[str, RankingModelResult], published: dict[str, int]) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "validation": {**ingestion.counts(), "data_docs": str(ingestion.report.data_docs_path or ""),
                       "warnings": [f"{w.name}: {w.observed}" for w in ingestion.report.warnings]},
        "propensity": {k: {"metrics": v.metrics, "model_version": v.model_version, "promoted": v.promoted,
                           "reason": v.reason, "run_id": v.run_id, "population": v.population}
                       for k, v in propensity.items()},
        "propensity_skipped": skipped,
        "ranking_models": {k: {"kind": v.kind, "metrics": v.metrics, "model_version": v.model_version,
                               "run_id": v.run_id, "reason": v.reason} for k, v in ranking.items()},
        "published": published,
    }
