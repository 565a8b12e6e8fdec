"""The model registry: registered names, the `@champion` models loaded for scoring, and every
promotion (the automatic one after training, by `core.promotion.should_promote`, and by hand).

Scoring (the `score-and-publish` flow) uses what the registry says is champion, not whatever was
trained last, so a hand promotion or a challenger that lost changes what is served. A promotion by
hand records who, when and why on the model version (tags) and on its training run, so the MLflow
UI shows the reason next to the metrics.
"""

from __future__ import annotations

import getpass
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd

from offerflow.ranking.ai_models import experiment_name
from offerflow.core.config import AIModelConfig, PropensityGoalConfig
from offerflow.core.promotion import should_promote
from offerflow.core.schema import PROFILE_ID
from offerflow.customer_ai.propensity import GoalScorer, PropensityModel
from offerflow.ranking.click_model import ClickModel
from offerflow.core.tracking import CHALLENGER, CHAMPION, RunRecord, Tracker, pinned_requirements
from offerflow.ranking.ai_models import RankingModelResult


class RegistryError(ValueError):
    """A registered model or version that does not exist; the message says which ones do."""


#: What a registered model needs to predict: LightGBM and the libraries offerflow's feature
#: encoding imports (its own code travels in the model, `Tracker.log_pyfunc`'s `code_paths`).
PREDICT_REQUIREMENTS = ["lightgbm", "scikit-learn", "pandas", "numpy", "pyarrow", "duckdb", "pydantic", "pyyaml"]
#: Rows of the training frame logged as a registered model's input example.
INPUT_EXAMPLE_ROWS = 5


def register_propensity(tracker: Tracker, model: PropensityModel, registered: str, goal: PropensityGoalConfig,
                        examples: pd.DataFrame) -> RunRecord:
    """Log a goal's model in the active run as an MLflow pyfunc (`GoalScorer`: a feature frame ->
    probability, score, percentile, bucket) and register it; `examples` give the input example."""
    example = _example_rows(examples, [PROFILE_ID, *model.feature_columns])
    scorer = GoalScorer(PropensityModel(model.booster, model.feature_columns, model.categories),
                        goal.buckets.medium_from, goal.buckets.high_from)
    return tracker.log_pyfunc(model.booster, scorer, registered, example, pinned_requirements(PREDICT_REQUIREMENTS),
                              _package_dir())


def register_click_model(tracker: Tracker, model: ClickModel, registered: str, frame: pd.DataFrame) -> RunRecord:
    """Log a click model in the active run as an MLflow pyfunc (`ClickModel.predict_pairs`: a
    profile x offer frame -> P(click) per row) and register it; `frame` gives the input example."""
    example = _example_rows(frame, model.feature_columns)
    bare = ClickModel(model.booster, model.feature_columns, model.categories, model.qualified_offers,
                      compile="never", base=model.base)
    return tracker.log_pyfunc(model.booster, bare.predict_pairs, registered, example,
                              pinned_requirements(PREDICT_REQUIREMENTS), _package_dir())


def describe_propensity(tracker: Tracker, registered: str, version: str | None, goal: PropensityGoalConfig,
                        population: str, metrics: dict[str, float]) -> None:
    """The registry's descriptions of a Customer AI model and of its new version: goal, window,
    population and holdout metrics."""
    what = "will not occur" if goal.goal.occurrence == "will_not_occur" else "occurs"
    model = (f"offerflow Customer AI ({goal.type}): P(goal {what} within {goal.outcome_window_days} days) per"
             f" profile. pyfunc: a feature frame -> probability, score, percentile, bucket.")
    tracker.describe_model(registered, version, model,
                           f"goal {goal.name}; outcome window {goal.outcome_window_days} days; population: {population};"
                           f" holdout {_metric_text(metrics)}")


def describe_click_model(tracker: Tracker, registered: str, version: str | None, model_cfg: AIModelConfig,
                         window: tuple[datetime, datetime] | None, rows: int, metrics: dict[str, float]) -> None:
    """The registry's descriptions of a personalized click model and of its new version: its
    placements, training window, training rows and holdout metrics."""
    model = (f"offerflow personalized ranking model for {', '.join(model_cfg.placements)}: P({model_cfg.success_event})"
             f" per profile x offer. pyfunc: a profile x offer feature frame -> P(click) per row.")
    span = f"{window[0]:%Y-%m-%d} to {window[1]:%Y-%m-%d}" if window else "unknown"
    tracker.describe_model(registered, version, model,
                           f"training window {span} ({model_cfg.training_window_days} days); {rows} training rows;"
                           f" holdout {_metric_text(metrics)}")


def _metric_text(metrics: dict[str, float]) -> str:
    shown = [f"{k} {metrics[k]:.4f}" for k in ("auc", "log_loss", "brier") if metrics.get(k) is not None]
    return ", ".join(shown) or "metrics unavailable"


def _example_rows(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """`INPUT_EXAMPLE_ROWS` rows of `columns`, those with the fewest missing values first, so that
    the logged example shows values rather than gaps."""
    missing = frame[columns].isna().sum(axis=1).to_numpy()
    order = missing.argsort(kind="stable")[:INPUT_EXAMPLE_ROWS]
    return frame[columns].iloc[order].reset_index(drop=True)


def _package_dir() -> Path:
    """The `offerflow` package directory (copied into every registered model)."""
    return Path(__file__).resolve().parents[1]


def propensity_model_name(experiment_prefix: str, goal: str) -> str:
    return f"{experiment_prefix}-propensity-{goal}"


def load_propensity_champion(tracker: Tracker, registered: str) -> tuple[PropensityModel, str] | None:
    """The `@champion` Customer AI model with its feature spec, or None when there is none yet."""
    version = tracker.alias_version(registered, CHAMPION)
    if version is None:
        return None
    run_id = tracker.version_run_id(registered, version)
    spec = tracker.load_run_dict(run_id, "feature_spec.json")
    booster = tracker.load_lightgbm(f"models:/{registered}@{CHAMPION}")
    metrics = {k.removeprefix("holdout_"): v for k, v in tracker.run_metrics(run_id).items()}
    return PropensityModel(booster, spec["feature_columns"], spec["categories"], metrics), version


def trained_outcomes_end(tracker: Tracker, registered: str, version: str) -> datetime | None:
    """The end of the last outcome window a Customer AI version learned from (its training run's
    latest `train_cutoffs` plus `outcome_window_days`), or None when its run does not say: a
    backtest as of an earlier date scores outcomes the model was trained on."""
    params = tracker.run_params(tracker.version_run_id(registered, version))
    cutoffs = re.findall(r"\d{4}-\d{2}-\d{2}", params.get("train_cutoffs", ""))
    window = params.get("outcome_window_days", "")
    if not cutoffs or not window.isdigit():
        return None
    return datetime.fromisoformat(max(cutoffs)).replace(tzinfo=timezone.utc) + timedelta(days=int(window))


def load_ranking_champion(tracker: Tracker, experiment_prefix: str,
                          model_cfg: AIModelConfig) -> RankingModelResult | None:
    """A personalized model's `@champion` click model and the posteriors of its training run
    (which offers it personalizes), or None when it has no champion yet."""
    registered = experiment_name(experiment_prefix, model_cfg.name)
    version = tracker.alias_version(registered, CHAMPION)
    if version is None:
        return None
    run_id = tracker.version_run_id(registered, version)
    spec = tracker.load_run_dict(run_id, "feature_spec.json")
    posteriors = pd.DataFrame(tracker.load_run_dict(run_id, "posteriors.json")["posteriors"])
    qualified = posteriors.loc[posteriors["qualified"].astype(bool), "offer_id"].tolist()
    metrics = tracker.run_metrics(run_id)
    holdout = {k.removeprefix("holdout_"): v for k, v in metrics.items() if k.startswith("holdout_")}
    click_model = ClickModel.from_spec(tracker.load_lightgbm(f"models:/{registered}@{CHAMPION}"), spec, qualified,
                                       holdout)
    if model_cfg.value_weighted and "value_weight" in posteriors:
        click_model.offer_weights = dict(zip(posteriors["offer_id"], posteriors["value_weight"]))
    params = tracker.run_params(run_id)
    window = None
    if "training_window_start" in params:
        window = (datetime.fromisoformat(params["training_window_start"]),
                  datetime.fromisoformat(params["training_window_end"]))
    return RankingModelResult(model_cfg.name, run_id, version, metrics, True, "registry champion",
                              kind=model_cfg.type, posteriors=posteriors, click_model=click_model, window=window)


@dataclass(frozen=True)
class ManualPromotion:
    model: str
    version: str
    previous_champion: str | None
    reason: str
    promoted_by: str
    promoted_at: str


def promote_by_hand(tracker: Tracker, registered: str, version: str, reason: str,
                    promoted_by: str | None = None) -> ManualPromotion:
    """Point `@champion` at `version`; the previous champion becomes `@challenger` and its training
    run's `promoted` tag False (with who replaced it, when and why). The reason, who and when go on
    the version (tags) and on its training run. Promoting the champion again records the reason,
    with no previous champion."""
    reason = reason.strip()
    if not reason:
        raise RegistryError("a promotion by hand needs a reason (--reason \"...\")")
    versions = tracker.model_versions(registered)
    if not versions:
        raise RegistryError(f"no registered model named {registered!r}")
    if str(version) not in versions:
        raise RegistryError(f"{registered} has no version {version} (versions: {', '.join(versions)})")
    version = str(version)
    previous = tracker.alias_version(registered, CHAMPION)
    previous = None if previous == version else previous
    record = ManualPromotion(registered, version, previous, reason, promoted_by or getpass.getuser(),
                             datetime.now(timezone.utc).isoformat(timespec="seconds"))
    tracker.set_alias(registered, CHAMPION, version)
    if previous is not None:
        tracker.set_alias(registered, CHALLENGER, previous)
        tracker.set_run_tags(tracker.version_run_id(registered, previous), {
            "promoted": "False", "replaced_by": f"version {version}, by hand by {record.promoted_by} at"
                                                f" {record.promoted_at}: {reason}"})
    tags = {"promotion_reason": reason, "promotion": "manual", "promoted_by": record.promoted_by,
            "promoted_at": record.promoted_at, "previous_champion": previous or ""}
    for key, value in tags.items():
        tracker.set_version_tag(registered, version, key, value)
    tracker.set_run_tags(tracker.version_run_id(registered, version),
                         {"promoted": "True", **{k: v for k, v in tags.items()}})
    return record


def holdout_metrics(tracker: Tracker, run_id: str) -> dict[str, float]:
    """A training run's holdout metrics, keyed as `classification_metrics` names them."""
    return {k.removeprefix("holdout_"): v for k, v in tracker.run_metrics(run_id).items()}


@dataclass(frozen=True)
class ChampionComparison:
    """The champion a new version is compared with: its version, its metrics (None: no champion
    to beat) and how they were obtained."""

    version: str | None
    metrics: dict[str, float] | None
    note: str = ""


def logged_champion(tracker: Tracker, registered: str, new_version: str | None) -> ChampionComparison:
    """The current `@champion` with the holdout metrics its own training run logged."""
    version = tracker.alias_version(registered, CHAMPION)
    if version is None or version == new_version:
        return ChampionComparison(version, None)
    return ChampionComparison(version, holdout_metrics(tracker, tracker.version_run_id(registered, version)))


def promote(tracker: Tracker, registered: str, version: str | None, metrics: dict[str, float],
            champion: ChampionComparison, metric: str, min_improvement: float) -> tuple[bool, str]:
    """The automatic promotion: apply `should_promote` against `champion`, point `@champion` (or
    `@challenger`) at the new version, and record why on the version and on the active run."""
    if version is None:
        return False, "model was not registered"
    decision = should_promote(metrics, champion.metrics, metric=metric, min_improvement=min_improvement)
    reason = f"{decision.reason} ({champion.note})" if champion.note else decision.reason
    tracker.set_alias(registered, CHAMPION if decision.promote else CHALLENGER, version)
    tracker.set_version_tag(registered, version, "promotion_reason", reason)
    tracker.set_tags({"promoted": str(decision.promote), "promotion_reason": reason,
                      "compared_with_champion": champion.version or ""})
    return decision.promote, reason
