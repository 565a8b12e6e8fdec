"""Score and publish with the registry's champions, daily, without training anything.

Customer AI goals are scored with their `@champion` models on the validated events (new events
move profiles between buckets), the enriched profiles are refreshed, and every placement ranked by
priority, a formula or a personalized model is re-published (personalized placements with the
`@champion` click model). Auto-optimization placements are left to `retrain-auto-optimization`,
which refits and publishes their posteriors every few minutes.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from offerflow.flows.guard_rails import guard_rails
from offerflow.flows.locking import holds_project_lock
from offerflow.flows.bad_input import reports_bad_input
from offerflow.core.paths import project_tracker
from offerflow.flows.pipeline import check_before_work, load_project_catalog, publish_task, published_together
from offerflow.customer_ai.segments import with_latest_scores
from offerflow.models.registry import load_propensity_champion, load_ranking_champion, propensity_model_name
from offerflow.ranking.ai_models import profile_dependent_placements
from offerflow.core.config import ProjectConfig
from offerflow.decisioning.switches import load_serving_config
from offerflow.core.features import open_events
from offerflow.ingest.snapshot import validated_events
from offerflow.models.customer_ai_training import enrich_profiles, score_propensity, scoring_date
from offerflow.models.scoring_runs import track_scoring
from offerflow.core.tracking import lineage_tags
@task(name="score-customer-ai", cache_policy=NO_CACHE)
@reports_bad_input
def score_goal_task(config: ProjectConfig, events_path: Path, goal_name: str, profiles):
    """Scores of one goal by its `@champion` (None when the goal has no champion yet)."""
    goal = config.goal(goal_name)
    loaded = load_propensity_champion(project_tracker(config), propensity_model_name(config.tracking.experiment_prefix,
                                                                              goal_name))
    if loaded is None:
        get_run_logger().warning("%s: no @champion yet; train it first (offerflow train --goal %s)",
                                 goal_name, goal_name)
        return None
    model, version = loaded
    con = open_events(events_path)
    scores, _ = score_propensity(con, model, goal, profiles, None, version, config.paths.propensity_scores(goal.name))
    scoring = track_scoring(project_tracker(config), config.tracking.experiment_prefix, con, model, goal, profiles,
                            scores, scoring_date(con), version, config.tracking.drift_psi_threshold,
                            lineage_tags(SCORING_FLOW))
    for warning in scoring.warnings():
        get_run_logger().warning("%s: %s", goal_name, warning)
    return scores


@task(name="load-ranking-champion", retries=2, retry_delay_seconds=[1, 5], cache_policy=NO_CACHE)
def load_ranking_champion_task(config: ProjectConfig, model_name: str):
    return load_ranking_champion(project_tracker(config), config.tracking.experiment_prefix, config.ai_model(model_name))


#: The flow name, also the `mlflow.source.name` of its MLflow runs.
SCORING_FLOW = "score-and-publish"


@flow(**guard_rails(SCORING_FLOW), log_prints=True)
@reports_bad_input
@holds_project_lock
def score_and_publish(config_path: str = "offerflow.yaml", use_cache: bool = True,
                      lock_wait_seconds: float = 0.0) -> dict[str, Any]:
    """Score Customer AI with the champions and re-publish the placements that depend on profiles
    (waiting up to `lock_wait_seconds` for another writer of the project)."""
    config = check_before_work(load_serving_config(config_path), config_path)
    events_path = validated_events(config)
    run_id = str(flow_run.get_id() or uuid.uuid4())
    logger = get_run_logger()
    profiles, offers = load_project_catalog(config)
    goals = [goal.name for goal in config.propensity_goals]
    fresh = {goal: score_goal_task(config, events_path, goal, profiles, return_state=True).result() for goal in goals}
    scores = with_latest_scores(goals, config.paths.propensity_scores, fresh)  # no champion: the latest batch
    enriched = enrich_profiles(profiles, scores, config.paths.enriched_profiles)
    targets, skipped = profile_dependent_placements(config)
    with published_together(config, run_id) as published:  # every placement switches at once, or none
        for placement, model_cfg in targets:
            model = None
            if model_cfg is not None:  # ranked by the model, or a formula reading its `ai_score`
                model = load_ranking_champion_task(config, model_cfg.name)
                if model is None:
                    skipped[placement.id] = f"{model_cfg.name} has no @champion yet"
                    continue
            published[placement.id] = publish_task(config, placement.id, enriched, offers, model, run_id, use_cache)
    for placement, why in skipped.items():
        logger.info("%s not re-published: %s", placement, why)
    lines = ["# score and publish", "", f"Customer AI goals scored: {', '.join(scores) or 'none'}", "",
             *[f"- published `{p}` version {v}" for p, v in published.items()],
             *[f"- skipped `{p}`: {why}" for p, why in skipped.items()]]
    create_markdown_artifact("\n".join(lines), key="score-and-publish",
                             description="Scores refreshed and ranking tables published by this run")
    return {"run_id": run_id, "scored": sorted(scores), "published": published, "skipped": skipped}
