"""Training steps the flows call: fit, evaluate on a time holdout, log to MLflow, promote.

Each function takes only the part of the config it needs and returns a small result record; the
flows decide what to do with it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from offerflow.ranking.ai_models import RankingModelResult, experiment_name
from offerflow.ranking.bandits import fit_posteriors
from offerflow.ingest.catalog import offers_for_placement
from offerflow.core.config import AIModelConfig, PropensityGoalConfig
from offerflow.core.metrics import classification_metrics
from offerflow.core.features import event_time_range, events_fingerprint
from offerflow.ranking.offer_stats import OfferStatsStore, daily_stats, window_counts
from offerflow.core.promotion import TrainingResult, should_promote
from offerflow.customer_ai.goals import Population
from offerflow.customer_ai.goals import population as goal_population
from offerflow.customer_ai.propensity import (VALIDATION_SHARE, PropensityModel, build_examples, check_enough_examples,
                                  fit_propensity_model, plan_cutoffs, score_goal)
from offerflow.models.cluster import fit_click_model_with, fit_propensity_model_with
from offerflow.ranking.click_model import ClickModel, displays_per_profile, interaction_log, training_frame
from offerflow.core.partitions import in_sample, sample_share
from offerflow.core.schema import PROFILE_ID, PROPENSITY_FIELDS
from offerflow.core.tracking import CHALLENGER, CHAMPION, Tracker


def _holdout_metrics(tracker: Tracker, run_id: str) -> dict[str, float]:
    """A training run's holdout metrics, keyed as `classification_metrics` names them."""
    return {k.removeprefix("holdout_"): v for k, v in tracker.run_metrics(run_id).items()}


def _promote(tracker: Tracker, registered: str, version: str | None, metrics: dict[str, float],
             metric: str, min_improvement: float) -> tuple[bool, str]:
    """Apply the promotion rule against the current champion and set the registry alias."""
    if version is None:
        return False, "model was not registered"
    champion_version = tracker.alias_version(registered, CHAMPION)
    champion_metrics = None
    if champion_version is not None and champion_version != version:
        champion_metrics = _holdout_metrics(tracker, tracker.version_run_id(registered, champion_version))
    decision = should_promote(metrics, champion_metrics, metric=metric, min_improvement=min_improvement)
    tracker.set_alias(registered, CHAMPION if decision.promote else CHALLENGER, version)
    tracker.set_version_tag(registered, version, "promotion_reason", decision.reason)
    tracker.set_tags({"promoted": str(decision.promote), "promotion_reason": decision.reason})
    return decision.promote, decision.reason


def _log_propensity_diagnostics(tracker: Tracker, model: PropensityModel, y: np.ndarray,
                                probability: np.ndarray) -> None:
    """Lift, gains, calibration, score distribution and importance as PNGs + the lift table."""
    from offerflow.customer_ai import charts as diagnostics

    table = diagnostics.lift_table(y, probability)
    tracker.log_text(table.to_csv(index=False), "diagnostics/lift_by_decile.csv")
    tracker.log_metrics({"holdout_top_decile_lift": float(table["lift"].iat[0])})
    gain = model.booster.booster_.feature_importance(importance_type="gain")
    figures = {"calibration.png": diagnostics.calibration_figure(y, probability),
               "lift_by_decile.png": diagnostics.lift_figure(table),
               "cumulative_gains.png": diagnostics.gains_figure(table),
               "score_distribution.png": diagnostics.score_distribution_figure(y, probability),
               "feature_importance.png": diagnostics.importance_figure(model.feature_columns, gain)}
    for name, figure in figures.items():
        tracker.log_figure(figure, f"diagnostics/{name}")


def code_version() -> str:
    """The git commit of the offerflow checkout (with `+dirty` if it has local changes), or
    `unknown` outside a git checkout: a tag that says which code trained a model."""
    import subprocess

    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def _champion_on_holdout(tracker: Tracker, registered: str, holdout: pd.DataFrame,
                         new_version: str | None) -> tuple[str | None, dict[str, float] | None, str]:
    """The current champion re-scored on THIS run's holdout (so both models are compared on the
    same examples): (champion version, its metrics or None, a note for the promotion reason)."""
    from offerflow.models.champions import load_propensity_champion

    loaded = load_propensity_champion(tracker, registered)
    if loaded is None or loaded[1] == new_version:
        return None, None, ""
    champion, version = loaded
    missing = [c for c in champion.feature_columns if c not in holdout.columns]
    if missing:
        return version, None, f"champion v{version} uses features this goal no longer builds ({', '.join(missing[:3])})"
    metrics = classification_metrics(holdout["label"].to_numpy(), champion.predict(holdout))
    return version, metrics, f"champion v{version} re-scored on this run's holdout"


def train_propensity(con: duckdb.DuckDBPyConnection, goal: PropensityGoalConfig, profiles: pd.DataFrame,
                     tracker: Tracker, experiment_prefix: str, seed: int,
                     tags: dict[str, str] | None = None,
                     dask_address: str | None = None) -> tuple[PropensityModel, TrainingResult]:
    """Train one Customer AI goal, evaluate it on the time holdout, log and register it.

    With `dask_address` (`compute.dask_address`) the model trains with lightgbm.dask on that
    cluster (MLflow param `trainer`); the snapshots are built here either way.

    The new model becomes `@champion` only if it beats the current champion on the same holdout
    (the champion is re-scored on this run's holdout) by `goal.promotion_min_auc_gain`.
    """
    first, last = event_time_range(con)
    plan = plan_cutoffs(first, last, goal)
    examples = build_examples(con, goal, profiles, plan.train)
    check_enough_examples(examples, goal)
    model, trainer = fit_propensity_model_with(examples, goal.lightgbm, seed, dask_address)
    covered = goal_population(con, goal, profiles[PROFILE_ID], plan.scoring)
    holdout = build_examples(con, goal, profiles, [plan.holdout])
    holdout_y, holdout_p = holdout["label"].to_numpy(), model.predict(holdout)
    metrics = classification_metrics(holdout_y, holdout_p)
    model.holdout_metrics = metrics
    warnings = []
    if metrics["auc"] < goal.poor_auc:
        warnings.append(f"model quality is poor: holdout AUC {metrics['auc']:.3f} < {goal.poor_auc}")
    registered = f"{experiment_prefix}-propensity-{goal.name}"
    goal_json = json.dumps(goal.model_dump(mode="json"), sort_keys=True)
    run_tags = {**(tags or {}), "goal": goal.name, "goal_type": goal.type, "dataset_version": events_fingerprint(con),
                "git_commit": code_version(), "goal_config": goal_json}
    with tracker.run(f"{experiment_prefix}-propensity-{goal.name}", run_name=f"train-{goal.name}",
                     tags=run_tags) as run_id:
        tracker.log_params({"outcome_window_days": goal.outcome_window_days,
                            "lookback_days": goal.lookback_days,
                            "train_cutoffs": [c.date().isoformat() for c in plan.train],
                            "holdout_cutoff": plan.holdout.date().isoformat(),
                            "n_train_examples": len(examples), "n_features": len(model.feature_columns),
                            "train_positives": int(examples["label"].sum()),
                            "best_iteration": model.n_trees, "trainer": trainer,
                            # early stopping validates on profiles that never train it
                            "validation_split": f"held-out profiles ({VALIDATION_SHARE:.0%})",
                            "n_train_cutoffs": len(plan.train),
                            "eligible_active_within_days": goal.eligible_active_within_days,
                            "population": covered.describe(),
                            **goal.lightgbm.model_dump()})
        tracker.log_metrics({f"holdout_{k}": v for k, v in metrics.items()})
        tracker.log_metrics(covered.as_metrics())
        tracker.log_dict({"feature_columns": model.feature_columns, "categories": model.categories},
                         "feature_spec.json")
        tracker.log_dict(json.loads(goal_json), "goal_config.json")
        if warnings:
            tracker.set_tags({"quality_warning": "; ".join(warnings)})
        _log_propensity_diagnostics(tracker, model, holdout_y, holdout_p)
        champion_version, champion_metrics, note = _champion_on_holdout(tracker, registered, holdout, None)
        if champion_metrics is not None:
            tracker.log_metrics({f"champion_holdout_{k}": v for k, v in champion_metrics.items()})
        record = tracker.log_lightgbm(model.booster, registered, input_example=None)
        promoted, reason = _promote_propensity(tracker, registered, record.model_version, metrics,
                                               champion_version, champion_metrics, note, goal.promotion_min_auc_gain)
    return model, TrainingResult(goal.name, run_id, record.model_version, metrics, promoted, reason, warnings,
                                 population=covered.as_dict())


def _promote_propensity(tracker: Tracker, registered: str, version: str | None, metrics: dict[str, float],
                        champion_version: str | None, champion_metrics: dict[str, float] | None, note: str,
                        min_gain: float) -> tuple[bool, str]:
    """Apply the promotion rule to metrics from the same holdout; set the alias, record why."""
    if version is None:
        return False, "model was not registered"
    decision = should_promote(metrics, champion_metrics, metric="auc", min_improvement=min_gain)
    reason = f"{decision.reason} ({note})" if note else decision.reason
    tracker.set_alias(registered, CHAMPION if decision.promote else CHALLENGER, version)
    tracker.set_version_tag(registered, version, "promotion_reason", reason)
    tracker.set_tags({"promoted": str(decision.promote), "promotion_reason": reason,
                      "compared_with_champion": champion_version or ""})
    return decision.promote, reason


def score_propensity(con: duckdb.DuckDBPyConnection, model: PropensityModel, goal: PropensityGoalConfig,
                     profiles: pd.DataFrame, as_of: datetime | None, model_version: str | None,
                     out_dir: Path) -> tuple[pd.DataFrame, Path]:
    """Score every eligible profile as of a date and write it as a new Parquet batch.

    Batches are never overwritten: `scores-<as-of date>-b<batch number>.parquet`, so the newest
    scores of the latest date sort last and older batches (and backtests) stay readable.
    """
    if as_of is None:
        as_of = pd.Timestamp(event_time_range(con)[1]).ceil("D").to_pydatetime()
    scores = score_goal(con, model, goal, profiles, as_of)
    scores = scores.assign(model_version=model_version or "", score_date=as_of.date().isoformat())
    out_dir.mkdir(parents=True, exist_ok=True)
    batch = 1 + max((int(m.group(1)) for f in out_dir.glob("scores-*.parquet")
                     if (m := re.search(r"-b(\d+)\.parquet$", f.name))), default=0)
    path = out_dir / f"scores-{as_of.date().isoformat()}-b{batch:05d}.parquet"
    tmp = out_dir / f".{path.name}.tmp"
    scores.assign(batch=batch).to_parquet(tmp, index=False)
    tmp.replace(path)
    return scores.assign(batch=batch), path


@dataclass
class AsOfScoring:
    """A scoring run as of a date: where the batch went and how it did against what happened next."""

    goal: str
    as_of: str
    path: Path
    profiles: int
    model: str  # "v3" (registry champion) or "refit before <date>"
    backtest: dict[str, float] | None  # None when there are no events after the as-of date
    run_id: str | None = None
    population: Population | None = None  # eligible, scored, excluded with the reason


def fit_propensity_before(con: duckdb.DuckDBPyConnection, goal: PropensityGoalConfig, profiles: pd.DataFrame,
                          until: datetime, seed: int) -> PropensityModel:
    """A model trained only on what was known at `until`: every training label window ends
    before it, so scoring as of `until` and comparing with what happened next is a fair backtest."""
    first, _ = event_time_range(con)
    plan = plan_cutoffs(first, until, goal)
    examples = build_examples(con, goal, profiles, plan.train)
    check_enough_examples(examples, goal)
    return fit_propensity_model(examples, goal.lightgbm, seed)


def score_propensity_as_of(con: duckdb.DuckDBPyConnection, model: PropensityModel, goal: PropensityGoalConfig,
                           profiles: pd.DataFrame, as_of: datetime, model_label: str, out_dir: Path,
                           tracker: Tracker | None = None, experiment_prefix: str = "offerflow") -> AsOfScoring:
    """Score as of `as_of` (features from earlier events only), write a new batch, and backtest it
    against the goal events in the outcome window after `as_of`; logged as a `score-...` MLflow run."""
    from offerflow.customer_ai.propensity import backtest_scores

    scores, path = score_propensity(con, model, goal, profiles, as_of, model_label, out_dir)
    _, last = event_time_range(con)
    backtest = backtest_scores(con, goal, scores, as_of) if last > as_of else None
    covered = goal_population(con, goal, profiles[PROFILE_ID], as_of, scored=len(scores))
    result = AsOfScoring(goal.name, as_of.date().isoformat(), path, len(scores), model_label, backtest,
                         population=covered)
    if tracker is not None:
        with tracker.run(f"{experiment_prefix}-propensity-{goal.name}", run_name=f"score-{goal.name}-{result.as_of}",
                         tags={"goal": goal.name, "as_of": result.as_of, "model": model_label,
                               "dataset_version": events_fingerprint(con)}) as run_id:
            tracker.log_params({"as_of": result.as_of, "scores_path": str(path), "model": model_label,
                                "eligible_active_within_days": goal.eligible_active_within_days,
                                "population": covered.describe()})
            tracker.log_metrics({"scored_profiles": float(len(scores)), **covered.as_metrics(),
                                 **{f"backtest_{k}": v for k, v in (backtest or {}).items()}})
        result.run_id = run_id
    return result


def enrich_profiles(profiles: pd.DataFrame, scores: dict[str, pd.DataFrame], path: Path | None = None) -> pd.DataFrame:
    """Profiles with `propensity.<goal>.{probability,score,percentile,bucket}` columns, readable by
    eligibility rules and formulas as `profile.propensity.<goal>.score`; written to `path` if given
    (the decision step reads current attributes from there)."""
    out = profiles
    for goal, table in scores.items():
        cols = table[["profile_id", *PROPENSITY_FIELDS]]
        out = out.merge(cols.rename(columns={c: f"propensity.{goal}.{c}" for c in cols.columns
                                             if c != "profile_id"}), on="profile_id", how="left")
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        out.to_parquet(path.with_suffix(".tmp"), index=False)
        path.with_suffix(".tmp").replace(path)
    return out


def ranking_window(con: duckdb.DuckDBPyConnection, model_cfg: AIModelConfig) -> tuple[datetime, datetime]:
    """The rolling training window [start, end): the `training_window_days` days up to the end of
    the day of the last event."""
    _, last = event_time_range(con)
    end = pd.Timestamp(last).ceil("D").to_pydatetime()
    return end - timedelta(days=model_cfg.training_window_days), end


def model_offers(offers: pd.DataFrame, placements: list[str]) -> pd.DataFrame:
    """The regular offers of any of the placements, once each."""
    return pd.concat([offers_for_placement(offers, p) for p in placements]).drop_duplicates("offer_id")


def fit_placement_posteriors(stats: pd.DataFrame, offers: pd.DataFrame, model_cfg: AIModelConfig, start: datetime,
                             end: datetime) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """Beta posteriors from the daily offer statistics of the window: pooled over the model's
    placements, and per placement (each from its own displays over its own offers, or the pooled
    ones restricted to its offers when the model pools placements).

    An offer qualifies on its whole history in `stats` (up to `end`), not on the window alone: an
    offer that Thompson sampling stopped showing keeps its place in the model instead of falling
    back to "new" and to exploration traffic every time its displays leave the window.
    """
    def fit(frame: pd.DataFrame, candidates: pd.DataFrame) -> pd.DataFrame:
        ids = candidates[["offer_id"]]
        counts = ids.merge(window_counts(frame, start, end), on="offer_id", how="left").fillna(0)
        posteriors = fit_posteriors(counts, model_cfg.min_displays, model_cfg.min_successes, model_cfg.value_weighted)
        history = ids.merge(window_counts(frame, datetime(1970, 1, 1), end), on="offer_id", how="left").fillna(0)
        qualified = set(history.loc[(history["displays"] >= model_cfg.min_displays)
                                    & (history["successes"] >= model_cfg.min_successes), "offer_id"])
        return posteriors.assign(qualified=posteriors["offer_id"].isin(qualified))

    pooled = fit(stats, model_offers(offers, model_cfg.placements))
    per_placement = {}
    for placement in model_cfg.placements:
        candidates = offers_for_placement(offers, placement)
        if model_cfg.pool_placements:
            per_placement[placement] = pooled[pooled["offer_id"].isin(candidates["offer_id"])].reset_index(drop=True)
        else:
            per_placement[placement] = fit(stats[stats["placement_id"] == placement], candidates)
    return pooled, per_placement


def fit_personalized_model(con: duckdb.DuckDBPyConnection, model_cfg: AIModelConfig, profiles: pd.DataFrame,
                           offers: pd.DataFrame, qualified: list[str], seed: int, start: datetime, end: datetime,
                           dask_address: str | None = None) -> tuple[ClickModel, str, int, int]:
    """The click model of a personalized model on the window's displays: (model, trainer,
    training rows, displays in the window)."""
    log, displays = _training_displays(con, model_cfg, start, end)
    frame = training_frame(log, profiles, model_offers(offers, model_cfg.placements))
    click_model, trainer = fit_click_model_with(frame, model_cfg.lightgbm, qualified, seed, dask_address,
                                                ips=model_cfg.ips_weighting)
    return click_model, trainer, len(frame), displays


def _load_champion_click_model(tracker: Tracker, registered: str, qualified: list[str]) -> tuple[ClickModel, str]:
    version = tracker.alias_version(registered, CHAMPION)
    run_id = tracker.version_run_id(registered, version)
    spec = tracker.load_run_dict(run_id, "feature_spec.json")
    booster = tracker.load_lightgbm(f"models:/{registered}@{CHAMPION}")
    return ClickModel(booster, spec["feature_columns"], spec["categories"], qualified,
                      _holdout_metrics(tracker, run_id)), version


def _training_displays(con: duckdb.DuckDBPyConnection, model_cfg: AIModelConfig, start: datetime,
                        end: datetime) -> tuple[pd.DataFrame, int]:
    """The interaction log a personalized model trains on, and the displays in its window: every
    display, or beyond `max_training_displays` those of a stable hash sample of profiles (picked
    from the per-profile counts, so the full log never has to be loaded)."""
    per_profile = displays_per_profile(con, model_cfg.placements, start, end)
    displays = int(per_profile["displays"].sum())
    share = sample_share(model_cfg.max_training_displays, displays)
    sample = None if share >= 1.0 else per_profile.loc[in_sample(per_profile[PROFILE_ID], share), PROFILE_ID]
    return interaction_log(con, model_cfg.placements, start, end, model_cfg.success_event, profile_ids=sample), displays


def train_ranking_model(con: duckdb.DuckDBPyConnection, model_cfg: AIModelConfig, profiles: pd.DataFrame | None,
                        offers: pd.DataFrame, tracker: Tracker, experiment_prefix: str, seed: int,
                        tags: dict[str, str] | None = None, stats_dir: Path | None = None,
                        dask_address: str | None = None) -> RankingModelResult:
    """Train an auto-optimization (posteriors) or personalized (click model) ranking model.

    With `dask_address` (`compute.dask_address`) the click model trains with lightgbm.dask on that
    cluster (`cluster_training.fit_click_model_with`); the run's `trainer` parameter records which.

    Per-offer counts come from the daily offer statistics: kept under `stats_dir/<model>` and
    updated incrementally when given (cheap enough for auto-optimization every 15 minutes),
    otherwise computed for the window.
    """
    start, end = ranking_window(con, model_cfg)
    stats_update = None
    if stats_dir is not None:
        stats_store = OfferStatsStore(stats_dir / model_cfg.name, model_cfg.placements, model_cfg.success_event)
        stats_update = stats_store.update(con)
        stats = stats_store.read()
    else:
        stats = daily_stats(con, model_cfg.placements, model_cfg.success_event)  # whole history: qualification
    posteriors, per_placement = fit_placement_posteriors(stats, offers, model_cfg, start, end)
    counts = model_offers(offers, model_cfg.placements)[["offer_id"]].merge(
        window_counts(stats, start, end), on="offer_id", how="left").fillna(0)
    qualified = posteriors.loc[posteriors["qualified"], "offer_id"].tolist()
    experiment = experiment_name(experiment_prefix, model_cfg.name)
    with tracker.run(experiment, run_name=f"train-{model_cfg.name}",
                     tags={**(tags or {}), "ai_model": model_cfg.name, "type": model_cfg.type}) as run_id:
        tracker.log_params({"type": model_cfg.type, "placements": model_cfg.placements,
                            "training_window_start": start.isoformat(), "training_window_end": end.isoformat(),
                            "min_displays": model_cfg.min_displays, "min_successes": model_cfg.min_successes,
                            "exploration_share": model_cfg.exploration_share,
                            "success_event": model_cfg.success_event, "value_weighted": model_cfg.value_weighted,
                            "n_displays": int(counts["displays"].sum()),
                            "pool_placements": model_cfg.pool_placements,
                            "stats_update": stats_update.mode if stats_update else "window"})
        metrics = {"displays": float(counts["displays"].sum()), "successes": float(counts["successes"].sum()),
                   "success_value": float(counts["value"].sum()),
                   "offers_qualified": float(len(qualified)), "offers_total": float(len(posteriors))}
        tracker.log_dict({"posteriors": posteriors.to_dict(orient="records")}, "posteriors.json")
        tracker.log_dict({p: frame.to_dict(orient="records") for p, frame in per_placement.items()},
                         "placement_posteriors.json")
        result = RankingModelResult(model_cfg.name, run_id, None, metrics, False, "", kind=model_cfg.type,
                                    posteriors=posteriors, window=(start, end), placement_posteriors=per_placement)
        if model_cfg.type == "personalized":
            click_model, trainer, rows, displays = fit_personalized_model(con, model_cfg, profiles, offers, qualified,
                                                                          seed, start, end, dask_address)
            metrics.update({f"holdout_{k}": v for k, v in click_model.holdout_metrics.items()})
            metrics["offers_personalized"] = float(len(qualified))
            best = getattr(click_model.booster, "best_iteration_", None)  # a Booster from lightgbm.dask has none
            tracker.log_params({"best_iteration": best if best is not None
                                else int(click_model.holdout_metrics.get("best_iteration", 0)),
                                "trainer": trainer, "training_rows": rows, "displays_in_window": displays,
                                "ips_weighting": model_cfg.ips_weighting,
                                **model_cfg.lightgbm.model_dump()})
            tracker.log_dict({"feature_columns": click_model.feature_columns,
                              "categories": click_model.categories}, "feature_spec.json")
            registered = experiment
            record = tracker.log_lightgbm(click_model.booster, registered)
            result.model_version = record.model_version
            result.promoted, result.reason = _promote(tracker, registered, record.model_version,
                                                      click_model.holdout_metrics, "auc", 0.0)
            if not result.promoted:
                # The challenger is recorded, but placements keep being scored by the champion.
                click_model, result.model_version = _load_champion_click_model(tracker, registered, qualified)
            if model_cfg.value_weighted:  # rank by click probability x value of a success
                click_model.offer_weights = dict(zip(posteriors["offer_id"], posteriors["value_weight"]))
            result.click_model = click_model
        tracker.log_metrics(metrics)
        result.metrics = metrics
    return result
