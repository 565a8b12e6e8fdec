"""The project's AI models as a user sees them: what each is configured to do, next to what its
last training run saw and how good it was (`offerflow models list/show`).

Every AI model has its own MLflow experiment, `<prefix>-ranking-<name>`; a personalized model is
also registered under that name with `@champion` / `@challenger` aliases.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import pandas as pd

from offerflow.core.config import AIModelConfig, PlacementConfig, ProjectConfig
from offerflow.core.promotion import TrainingResult
from offerflow.core.tracking import CHAMPION, Tracker
from offerflow.ranking.click_model import ClickModel


def experiment_name(prefix: str, model_name: str) -> str:
    """The MLflow experiment (and registered model) of a ranking AI model."""
    return f"{prefix}-ranking-{model_name}"


def optimization_metric(model: AIModelConfig) -> str:
    """What the model optimizes, in words: e.g. 'click rate (clicks / displays)'."""
    if model.value_weighted:
        return f"{model.success_event} value per display (sum of {model.success_event} value / displays)"
    return f"{model.success_event} rate ({model.success_event}s / displays)"


def traffic_split(model: AIModelConfig) -> dict[str, float]:
    """Configured shares of the model's decisions: served by the model, explored at random, and
    held out at random to measure lift (see the evaluation report)."""
    holdout = float(model.holdout_share)
    exploration = float(model.exploration_share) * (1.0 - holdout)
    return {"model": round(1.0 - holdout - exploration, 4), "exploration": round(exploration, 4),
            "holdout": round(holdout, 4)}


def serving_state(model: AIModelConfig, metrics: dict[str, float]) -> tuple[str, dict[str, float]]:
    """What the model's placements are served by now, in words, and the traffic shares that follow.

    A model needs at least two qualified offers to rank: with fewer (too few displays or successes)
    its placements are served in a uniformly random order, and every decision says so
    (`source: random_too_few_qualified`). With `new_offers: empirical_bayes` Thompson sampling
    ranks every offer from the start, with no exploration share."""
    if model.samples_every_offer:
        return "model", traffic_split(model.model_copy(update={"exploration_share": 0.0}))
    qualified = metrics.get("offers_qualified")
    if qualified is not None and qualified < 2:  # personalized too: every offer scores as the worst qualified
        return (f"random: {int(qualified)} of {int(metrics.get('offers_total', 0))} offers qualified"
                f" (needs 2 with at least {model.min_displays} displays and {model.min_successes} successes)"),\
            {"model": 0.0, "exploration": 0.0, "holdout": 0.0, "random": 1.0}
    if model.type == "auto_optimization" and qualified is not None and qualified >= metrics.get("offers_total", 0):
        # every offer qualified: nothing new, so no exploration traffic (bandits.thompson_select)
        return "model", traffic_split(model.model_copy(update={"exploration_share": 0.0}))
    return "model", traffic_split(model)


@dataclass(frozen=True)
class ModelOverview:
    name: str
    type: str
    status: str
    description: str
    placements: list[str]
    optimization_metric: str
    training_window_days: int
    experiment: str
    traffic: dict[str, float]
    last_trained: str | None = None
    run_id: str | None = None
    champion_version: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    serving: str = "model"

    @property
    def holdout_gini(self) -> float | None:
        auc = self.metrics.get("holdout_auc")
        return None if auc is None else 2.0 * auc - 1.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "holdout_gini": self.holdout_gini}


def overview(config: ProjectConfig, tracker: Tracker | None) -> list[ModelOverview]:
    """One record per configured AI model; training facts are empty when it never trained."""
    out = []
    for model in config.ai_models:
        experiment = experiment_name(config.tracking.experiment_prefix, model.name)
        last = tracker.latest_run(experiment) if tracker is not None else None
        champion = tracker.alias_version(experiment, CHAMPION) if (tracker and model.type == "personalized") else None
        metrics = last["metrics"] if last else {}
        serving, traffic = serving_state(model, metrics)
        out.append(ModelOverview(
            name=model.name, type=model.type, status=model.status, description=model.description,
            placements=list(model.placements), optimization_metric=optimization_metric(model),
            training_window_days=model.training_window_days, experiment=experiment, traffic=traffic,
            last_trained=last["started"] if last else None, run_id=last["run_id"] if last else None,
            champion_version=champion, metrics=metrics, serving=serving))
    return out


def offer_table(tracker: Tracker, run_id: str) -> pd.DataFrame:
    """Per offer, what the training run saw: displays, successes, posterior mean, qualified."""
    posteriors = pd.DataFrame(tracker.load_run_dict(run_id, "posteriors.json")["posteriors"])
    if posteriors.empty:
        return posteriors
    posteriors["rate"] = posteriors["alpha"] / (posteriors["alpha"] + posteriors["beta"])
    return posteriors.sort_values("rate", ascending=False, kind="stable").reset_index(drop=True)


@dataclass
class RankingModelResult(TrainingResult):
    kind: str = "personalized"
    #: Posteriors over every placement of the model together (what `models show` lists and what
    #: decides which offers a personalized model personalizes).
    posteriors: pd.DataFrame | None = None
    click_model: ClickModel | None = None
    window: tuple[datetime, datetime] | None = None
    #: Auto-optimization: the posteriors each placement serves (its own displays, or the pooled
    #: ones with `pool_placements: true`); None for a result that only has pooled posteriors.
    placement_posteriors: dict[str, pd.DataFrame] | None = None

    def posteriors_for(self, placement_id: str) -> pd.DataFrame | None:
        """The posteriors a placement's table publishes."""
        if self.placement_posteriors and placement_id in self.placement_posteriors:
            return self.placement_posteriors[placement_id]
        return self.posteriors


def profile_dependent_placements(config: ProjectConfig) -> tuple[list[tuple[PlacementConfig, AIModelConfig | None]],
                                                                 dict[str, str]]:
    """What score-and-publish re-publishes after profiles are re-scored: each placement whose table
    depends on profiles, with the personalized model whose `@champion` ranks it (or whose
    `ai_score` its formula reads; None for priority and plain formulas), and the placements left
    to another flow, with the reason."""
    publish: list[tuple[PlacementConfig, AIModelConfig | None]] = []
    skipped: dict[str, str] = {}
    for placement in config.placements:
        model = config.ai_model(placement.ranking.ai_model) if placement.ranking.ai_model else None
        if model is not None and model.type != "personalized":
            skipped[placement.id] = "auto-optimization: published by retrain-auto-optimization"
        else:
            publish.append((placement, model))
    return publish, skipped
