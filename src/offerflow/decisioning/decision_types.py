"""The data types of a decision: the request limits, the error, and what `DecisionEngine.decide`
returns (a `Decision` of one `PlacementDecision` per requested placement, each of `DecisionItem`s)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

MAX_ITEMS = 30
#: `source` of an auto-optimized placement whose eligible offers hold fewer than two qualified ones:
#: the model does not rank them, they are served in a uniformly random order (arm `non_personalized`).
RANDOM_TOO_FEW_QUALIFIED = "random_too_few_qualified"


class DecisionError(ValueError):
    """A request that cannot be answered (unknown placement, bad item count)."""


@dataclass(frozen=True)
class DecisionItem:
    placement_id: str
    offer_id: str
    rank: int
    score: float | None
    fallback: bool = False
    propensity: float | None = None


@dataclass(frozen=True)
class PlacementDecision:
    placement_id: str
    channel: str
    items: list[DecisionItem]
    ranking_method: str
    ai_model: str | None
    model_version: str | None
    table_version: int | None
    #: ranking_table | thompson_sampling | exploration | random_too_few_qualified | non_personalized
    #: | random_holdout | fallback
    source: str
    arm: str = "non_personalized"  # model | holdout | non_personalized | fallback


@dataclass(frozen=True)
class Decision:
    decision_id: str
    profile_id: str
    decided_at: str
    placements: list[PlacementDecision] = field(default_factory=list)

    def offer_ids(self) -> list[str]:
        return [item.offer_id for p in self.placements for item in p.items]

    def to_dict(self) -> dict[str, Any]:
        """As plain JSON-ready values (built directly: `dataclasses.asdict` deep-copies, slowly)."""
        return {"decision_id": self.decision_id, "profile_id": self.profile_id, "decided_at": self.decided_at,
                "placements": [{"placement_id": p.placement_id, "channel": p.channel,
                                "items": [{"placement_id": i.placement_id, "offer_id": i.offer_id, "rank": i.rank,
                                           "score": i.score, "fallback": i.fallback, "propensity": i.propensity}
                                          for i in p.items],
                                "ranking_method": p.ranking_method, "ai_model": p.ai_model,
                                "model_version": p.model_version, "table_version": p.table_version,
                                "source": p.source, "arm": p.arm} for p in self.placements]}


@dataclass(frozen=True)
class PosteriorArrays:
    """A posterior table as arrays, cached per published version."""

    version: int
    offer_ids: list[str]
    alpha: np.ndarray
    beta: np.ndarray
    qualified: np.ndarray  # the offers Thompson sampling ranks (`bandits.sampled_offers`)
    means: np.ndarray
    in_placement: np.ndarray  # offers of the table that the catalog still lists for the placement
    weights: np.ndarray | None = None  # value per success of value-weighted models (None: all 1)
