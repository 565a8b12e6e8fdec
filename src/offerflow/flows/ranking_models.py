"""Train the offer-ranking AI models on their own (`train-ranking-models`) and publish their
placements, daily for personalized models, or one variant by hand (`offerflow train --model`).

Reads the validated events snapshot and the enriched profiles (Customer AI scores) the last
pipeline or `train-customer-ai` run wrote; the pipeline's training and publishing tasks do the work.
A personalized variant that does not beat the champion is recorded as `@challenger` and the
placement keeps being scored by the champion.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from offerflow.flows.guard_rails import guard_rails
from offerflow.flows.locking import holds_project_lock
from offerflow.flows.bad_input import reports_bad_input
from offerflow.flows.options import RankingModelOptions
from offerflow.flows.pipeline import (check_before_work, load_project_catalog, publish_task, published_together,
                                     train_ranking, training_run)
from offerflow.flows.progress import StepProgress
from offerflow.ingest.catalog import load_profiles
from offerflow.decisioning.switches import load_serving_config



@flow(**guard_rails("train-ranking-models"), log_prints=True)
@reports_bad_input
@holds_project_lock
def train_ranking_models(config_path: str = "offerflow.yaml", options: RankingModelOptions = RankingModelOptions(),
                         use_cache: bool = True, lock_wait_seconds: float = 0.0) -> dict[str, Any]:
    """Train the selected ranking models and publish the placements they rank (waiting up to
    `lock_wait_seconds` for another writer of the project)."""
    config = check_before_work(load_serving_config(config_path), config_path)
    names = options.models or [m.name for m in config.ai_models if m.status == "active"]
    config, events_path, run_id, tags = training_run(config, "ai_models", names, options)
    profiles, offers = load_project_catalog(config)
    enriched_path = config.paths.enriched_profiles
    if enriched_path.exists():  # personalized models and formulas read Customer AI scores
        profiles = load_profiles(enriched_path)
    logger = get_run_logger()
    summary: dict[str, Any] = {"run_id": run_id, "models": {}, "published": {}}
    progress = StepProgress(len(names), key="ranking-models-progress", description="Models trained by this run")
    with published_together(config, run_id) as published:  # every placement switches at once, or none
        for name in names:
            with progress.step(f"train ranking model {name}"):
                result = train_ranking(config, events_path, name, profiles, offers, tags, use_cache)
            summary["models"][name] = {"kind": result.kind, "metrics": result.metrics, "run_id": result.run_id,
                                       "model_version": result.model_version, "promoted": result.promoted,
                                       "reason": result.reason}
            logger.info("%s (%s): %d offers qualified, version %s, promoted=%s %s", name, result.kind,
                        result.metrics["offers_qualified"], result.model_version, result.promoted, result.reason)
            for placement in config.placements_ranked_by(name):  # ranked by it, or a formula reading `ai_score`
                published[placement.id] = publish_task(config, placement.id, profiles, offers, result, run_id,
                                                       use_cache)
    summary["published"] = published
    lines = ["# ranking models", "", "| model | kind | offers qualified | promoted |", "|---|---|---|---|"]
    lines += [f"| `{n}` | {m['kind']} | {int(m['metrics']['offers_qualified'])} | {m['promoted']} |"
              for n, m in summary["models"].items()]
    lines += ["", *[f"- published `{p}` version {v}" for p, v in summary["published"].items()]]
    create_markdown_artifact("\n".join(lines), key="ranking-models-training",
                             description="Ranking models trained and tables published by this run")
    return summary
