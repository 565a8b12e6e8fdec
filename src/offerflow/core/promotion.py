"""When a newly trained model replaces the champion: one pure, tested rule, and what a training run
reports (`TrainingResult`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class PromotionDecision:
    promote: bool
    reason: str


def should_promote(candidate: Mapping[str, float], champion: Mapping[str, float] | None,
                   metric: str = "auc", min_improvement: float = 0.0,
                   higher_is_better: bool = True) -> PromotionDecision:
    """Promote when there is no champion, or the candidate beats it by more than `min_improvement`
    on `metric` measured on the same holdout. A candidate without the metric is never promoted."""
    value = candidate.get(metric)
    if value is None or not math.isfinite(value):
        return PromotionDecision(False, f"candidate has no finite {metric}")
    if champion is None:
        return PromotionDecision(True, f"no champion yet; candidate {metric}={value:.4f}")
    incumbent = champion.get(metric)
    if incumbent is None or not math.isfinite(incumbent):
        return PromotionDecision(True, f"champion has no finite {metric}; candidate {metric}={value:.4f}")
    gain = (value - incumbent) if higher_is_better else (incumbent - value)
    verdict = gain > min_improvement
    comparison = "beats" if verdict else "does not beat"
    return PromotionDecision(verdict, f"candidate {metric}={value:.4f} {comparison} champion "
                                      f"{metric}={incumbent:.4f} by more than {min_improvement:g}")


@dataclass
class TrainingResult:
    name: str
    run_id: str
    model_version: str | None
    metrics: dict[str, float]
    promoted: bool
    reason: str
    warnings: list[str] = field(default_factory=list)
    #: Customer AI: who the goal scores as of the end of the data (`goals.Population.as_dict`).
    population: dict[str, object] | None = None
