"""Retrain the auto-optimization models and publish their posteriors: a flow cheap enough to run
every 15 minutes.

It reads the validated events snapshot, updates each model's daily offer statistics incrementally
(only the days since the last run are recomputed), fits the Beta posteriors over the rolling window,
logs the run to the model's MLflow experiment and publishes a new posterior table for each of its
placements. Personalized models and Customer AI are retrained by the daily pipeline.
"""

from __future__ import annotations

import uuid
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from offerflow.flows.guard_rails import guard_rails
from offerflow.flows.locking import holds_project_lock
from offerflow.flows.bad_input import reports_bad_input
from offerflow.core.paths import project_tracker
from offerflow.flows.pipeline import check_before_work, offer_stats_dir, published_together
from offerflow.ingest.catalog import load_offers
from offerflow.core.config import ProjectConfig
from offerflow.decisioning.switches import load_serving_config
from offerflow.core.features import open_events
from offerflow.ingest.snapshot import validated_events
from offerflow.ranking.publishing import publish_placement
from offerflow.models.ranking_training import train_ranking_model
from offerflow.ranking.ai_models import RankingModelResult
from offerflow.core.paths import ranking_store


@task(name="retrain-auto-optimization-model", cache_policy=NO_CACHE)
@reports_bad_input
def retrain_task(config: ProjectConfig, model_name: str, offers, tags: dict[str, str]) -> RankingModelResult:
    con = open_events(validated_events(config))
    return train_ranking_model(con, config.ai_model(model_name), None, offers, project_tracker(config),
                               config.tracking.experiment_prefix, config.seed, tags,
                               stats_dir=offer_stats_dir(config))


@task(name="publish-posteriors", retries=2, retry_delay_seconds=[1, 5], cache_policy=NO_CACHE)
def publish_task(config: ProjectConfig, placement_id: str, offers, model: RankingModelResult, run_id: str) -> int:
    """Stage the placement's posterior table for run `run_id` (`published_together` switches it)."""
    return publish_placement(ranking_store(config).publication(run_id), config.placement(placement_id), None,
                             offers, model, {"flow_run_id": run_id})


@flow(**guard_rails("retrain-auto-optimization"), log_prints=True)
@reports_bad_input
@holds_project_lock
def retrain_auto_optimization(config_path: str = "offerflow.yaml", lock_wait_seconds: float = 0.0,
                              skip_when_locked: bool = False) -> dict[str, Any]:
    """Update offer statistics, refit posteriors and publish them for every active auto-optimization model.
    A project another writer holds: wait up to `lock_wait_seconds`, then stop (`BadInput`), or end
    `Cancelled` with `skip_when_locked` (the 15-minute schedule: the next run does the work)."""
    config = check_before_work(load_serving_config(config_path), config_path)
    run_id = str(flow_run.get_id() or uuid.uuid4())
    validated_events(config)  # no validated snapshot yet: a clear error before any work
    offers = load_offers(config.path(config.data.offers), [p.id for p in config.placements])
    logger = get_run_logger()
    summary: dict[str, Any] = {"run_id": run_id, "models": {}}
    with published_together(config, run_id) as published:  # every placement switches at once, or none
        for model_cfg in config.ai_models:
            if model_cfg.type != "auto_optimization" or model_cfg.status != "active":
                continue
            result = retrain_task(config, model_cfg.name, offers, {"flow_run_id": run_id, "project": config.project},
                                  return_state=True).result()  # raises what a BadInput state carries
            summary["models"][model_cfg.name] = {"run_id": result.run_id, "metrics": result.metrics}
            logger.info("%s: %d displays in the window, %d of %d offers qualified", model_cfg.name,
                        result.metrics["displays"], result.metrics["offers_qualified"], result.metrics["offers_total"])
            for placement in config.placements_ranked_by(model_cfg.name, formulas=False):
                published[placement.id] = publish_task(config, placement.id, offers, result, run_id)
    summary["published"] = published
    lines = ["# auto-optimization retrain", "", "| model | displays | offers qualified |", "|---|---|---|"]
    lines += [f"| `{name}` | {int(m['metrics']['displays'])} | {int(m['metrics']['offers_qualified'])}"
              f" of {int(m['metrics']['offers_total'])} |" for name, m in summary["models"].items()]
    lines += ["", *[f"- published `{p}` version {v}" for p, v in summary["published"].items()]]
    create_markdown_artifact("\n".join(lines), key="auto-optimization-retrain",
                             description="Posteriors refit and published by this run")
    return summary
