"""Train Customer AI (the propensity goals) on its own, weekly, or a variant by hand.

Reads the validated events snapshot the pipeline (or `validate-data`) wrote, trains each selected
goal with the pipeline's own task (fit, time holdout, MLflow run, registry, promotion rule), scores
every eligible profile and refreshes the enriched profiles that rules, formulas and personalized
models read. `options.overrides` trains a variant (`lightgbm.num_leaves: 63`) without touching
`offerflow.yaml`; the variant is tagged in MLflow and promoted only if the rule says so.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from offerflow.flows.guard_rails import guard_rails
from offerflow.flows.locking import holds_project_lock
from offerflow.flows.bad_input import reports_bad_input
from offerflow.flows.options import CustomerAIOptions
from offerflow.flows.pipeline import check_before_work, load_project_catalog, train_goal, training_run
from offerflow.flows.progress import StepProgress, summary_warning
from offerflow.flows.scoring import score_goal_task
from offerflow.core.config import load_config
from offerflow.core.overrides import describe_overrides
from offerflow.customer_ai.segments import with_latest_scores
from offerflow.customer_ai.propensity import history_too_short
from offerflow.models.customer_ai_training import enrich_profiles



@flow(**guard_rails("train-customer-ai"), log_prints=True)
@reports_bad_input
@holds_project_lock
def train_customer_ai(config_path: str = "offerflow.yaml", options: CustomerAIOptions = CustomerAIOptions(),
                      use_cache: bool = True, lock_wait_seconds: float = 0.0) -> dict[str, Any]:
    """Train the selected Customer AI goals on the validated events, score profiles, refresh them
    (a goal whose events, profiles and settings did not change since it was trained is `Cached`;
    another writer of the project is waited for up to `lock_wait_seconds`)."""
    config = check_before_work(load_config(config_path), config_path)
    goals = options.goals or [g.name for g in config.propensity_goals]
    config, events_path, run_id, tags = training_run(config, "propensity_goals", goals, options)
    profiles, _ = load_project_catalog(config)
    summary: dict[str, Any] = {"run_id": run_id, "goals": {}, "skipped": {}}
    scores = {}
    progress = StepProgress(len(goals), key="customer-ai-progress", description="Goals trained by this run")
    for name in goals:
        with progress.step(f"train Customer AI goal {name}"):
            if (skipped := history_too_short(events_path, config.goal(name))) is not None:
                summary_warning(skipped)  # this goal alone; the others train
                summary["skipped"][name] = skipped
                continue
            result, scores[name], path = train_goal(config, events_path, name, profiles, tags, use_cache)
        summary["goals"][name] = {"metrics": result.metrics, "model_version": result.model_version,
                                  "promoted": result.promoted, "reason": result.reason, "run_id": result.run_id,
                                  "scores_path": str(path), "population": result.population}
        get_run_logger().info("%s: holdout AUC %.3f, version %s, promoted=%s (%s)", name, result.metrics["auc"],
                              result.model_version, result.promoted, result.reason)
        if not result.promoted:  # a challenger is recorded; profiles keep the champion's scores
            scores[name] = score_goal_task(config, events_path, name, profiles, return_state=True).result()
    # goals not retrained keep their latest scores
    scores = with_latest_scores([g.name for g in config.propensity_goals], config.paths.propensity_scores, scores)
    enrich_profiles(profiles, scores, config.paths.enriched_profiles)
    lines = ["# Customer AI training", "", "| goal | AUC | version | promoted | reason | eligible | scored | excluded |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| `{g}` | {r['metrics']['auc']:.3f} | {r['model_version']} | {r['promoted']} | {r['reason']} | "
              + _population_cells(r["population"]) + " |" for g, r in summary["goals"].items()]
    lines += [f"| `{g}` | skipped | | | {reason} | | | |" for g, reason in summary["skipped"].items()]
    if options.overrides:
        lines += ["", f"Variant: `{describe_overrides(options.overrides)}`"]
    create_markdown_artifact("\n".join(lines), key="customer-ai-training",
                             description="Customer AI goals trained by this run")
    return summary


def _population_cells(population: dict[str, Any] | None) -> str:
    """`eligible | scored | excluded (reason)` cells of the artifact's table."""
    if not population:  # a result cached before populations were recorded
        return " | | "
    excluded = "; ".join(f"{n:,} {reason}" for reason, n in population["excluded"].items() if n) or "none"
    return f"{population['eligible']:,} | {population['scored']:,} | {excluded}"
