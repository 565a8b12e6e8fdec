"""The data types of a decision: the request limits, the error, and what `DecisionEngine.decide`
returns (a `Decision` of one `PlacementDecision` per requested placement, each of `DecisionItem`s), and the
`PlacementPlan` a decision in one placement starts from."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import cached_property
from typing import Any

import numpy as np

MAX_ITEMS = 30
#: `source` of an auto-optimized placement whose eligible offers hold fewer than two qualified ones:
#: the model does not rank them, they are served in a uniformly random order (arm `non_personalized`).
RANDOM_TOO_FEW_QUALIFIED = "random_too_few_qualified"


_ID_BATCH = 4096
_ids: list[str] = []
_ids_lock = threading.Lock()
_fork_hook: list[bool] = []


def new_decision_id() -> str:
    """``dec-`` and the hex of a random version-4 UUID, as ``uuid.uuid4().hex`` gives, made
    `_ID_BATCH` at a time from `os.urandom` (a request takes one from the list: no lock, no
    per-id arithmetic)."""
    try:
        return _ids.pop()  # atomic: two threads never get the same id
    except IndexError:
        pass
    with _ids_lock:
        if not _ids:
            if not _fork_hook:  # a forked child must not hand out the ids its parent will
                os.register_at_fork(after_in_child=_ids.clear)
                _fork_hook.append(True)
            _ids.extend(_id_batch(_ID_BATCH))
        return _ids.pop()


def _id_batch(n: int) -> list[str]:
    raw = np.frombuffer(os.urandom(16 * n), dtype=np.uint8).reshape(n, 16).copy()
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40  # version 4
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80  # RFC 4122 variant
    text = raw.tobytes().hex()
    return ["dec-" + text[i:i + 32] for i in range(0, 32 * n, 32)]


#: (start, end, text) of the UTC second `iso_text` formatted last; the text without fraction and offset.
_second: tuple[datetime, datetime, str] | None = None
_ONE_SECOND = timedelta(seconds=1)


def iso_text(now: datetime) -> str:
    """`now.isoformat()`, with the date and time of day of a UTC time formatted once a second and
    only the microseconds per call (isoformat was ~4% of a decision's CPU)."""
    global _second
    if now.tzinfo is not timezone.utc:
        return now.isoformat()
    second = _second  # one read: another thread may replace it
    if second is None or not second[0] <= now < second[1]:
        start = now.replace(microsecond=0)
        second = _second = (start, start + _ONE_SECOND, start.isoformat()[:-6])  # less "+00:00"
    micro = now.microsecond
    return f"{second[2]}.{micro:06d}+00:00" if micro else second[2] + "+00:00"


class DecisionError(ValueError):
    """A request that cannot be answered (unknown placement, bad item count)."""


# The three result types are frozen dataclasses with an `__init__` of their own (init=False), the
# generated one's signature, that fills the instance's `__dict__` at once: a frozen dataclass's
# generated `__init__` sets each field through `object.__setattr__`, ~4x slower, and a decision
# makes one per item, per placement and per request (~5% of its CPU).


@dataclass(frozen=True, init=False)
class DecisionItem:
    placement_id: str
    offer_id: str
    rank: int
    score: float | None
    fallback: bool = False
    propensity: float | None = None

    def __init__(self, placement_id: str, offer_id: str, rank: int, score: float | None, fallback: bool = False,
                 propensity: float | None = None) -> None:
        self.__dict__.update(placement_id=placement_id, offer_id=offer_id, rank=rank, score=score, fallback=fallback,
                             propensity=propensity)


@dataclass(frozen=True, init=False)
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
    #: why these offers (`explain.Explainer`; JSON-ready), only when the request asked for it
    explanation: dict[str, Any] | None = None

    def __init__(self, placement_id: str, channel: str, items: list[DecisionItem], ranking_method: str,
                 ai_model: str | None, model_version: str | None, table_version: int | None, source: str,
                 arm: str = "non_personalized", explanation: dict[str, Any] | None = None) -> None:
        self.__dict__.update(placement_id=placement_id, channel=channel, items=items, ranking_method=ranking_method,
                             ai_model=ai_model, model_version=model_version, table_version=table_version,
                             source=source, arm=arm)
        if explanation is not None:  # else read from the class: orjson then writes no "explanation", as `to_dict`
            self.__dict__["explanation"] = explanation

    @property
    def model_label(self) -> str | None:
        """`<ai model> v<registered version>`, the name alone for auto-optimization (its posteriors
        are no registered model: the table version says which), None without an AI model."""
        if self.ai_model is None:
            return None
        return self.ai_model if self.model_version is None else f"{self.ai_model} v{self.model_version}"


@dataclass(frozen=True, init=False)
class Decision:
    decision_id: str
    profile_id: str
    decided_at: str
    placements: list[PlacementDecision] = field(default_factory=list)

    def __init__(self, decision_id: str, profile_id: str, decided_at: str,
                 placements: list[PlacementDecision] | None = None) -> None:
        self.__dict__.update(decision_id=decision_id, profile_id=profile_id, decided_at=decided_at,
                             placements=[] if placements is None else placements)

    def offer_ids(self) -> list[str]:
        return [item.offer_id for p in self.placements for item in p.items]

    def to_dict(self) -> dict[str, Any]:
        """As plain JSON-ready values (built directly: `dataclasses.asdict` deep-copies, slowly).
        `orjson.dumps(decision)` writes the same JSON without making them (it reads each instance's
        `__dict__`, which holds the fields in this order and no `explanation` when it is None)."""
        placements = [{"placement_id": p.placement_id, "channel": p.channel,
                       "items": [{"placement_id": i.placement_id, "offer_id": i.offer_id, "rank": i.rank,
                                  "score": i.score, "fallback": i.fallback, "propensity": i.propensity}
                                 for i in p.items],
                       "ranking_method": p.ranking_method, "ai_model": p.ai_model,
                       "model_version": p.model_version, "table_version": p.table_version,
                       "source": p.source, "arm": p.arm} for p in self.placements]
        for out, p in zip(placements, self.placements):
            if p.explanation is not None:
                out["explanation"] = p.explanation
        return {"decision_id": self.decision_id, "profile_id": self.profile_id, "decided_at": self.decided_at,
                "placements": placements}


@dataclass(frozen=True)
class PlacementPlan:
    """What deciding in one placement needs, read once per request (or per batch): the placement,
    its item count, the published table and the AI model serving it, the candidate offers and the
    fallback. `DecisionEngine.decide` and `decide_batch` both start from it."""

    placement_id: str
    placement: Any
    n_items: int
    snapshot: Any  # the current published table (None: nothing published)
    metadata: dict[str, Any]
    model: Any  # the AI model config serving the table (None: not an AI model)
    candidates: list[str]  # the placement's offers, highest priority first
    fallback: str
    #: share of traffic shown a random order: a personalized model's `exploration_share`, or for
    #: Thompson sampling that of the model that published the posteriors
    exploration_share: float

    @property
    def posterior(self) -> bool:
        """Whether the table holds auto-optimization posteriors (Thompson-sampled)."""
        return self.snapshot is not None and self.snapshot.kind == "posterior"

    @cached_property  # asked on every decision; the plan is made once per table version
    def too_few_qualified(self) -> bool:
        """A personalized model's table, from a model that qualified fewer than two offers: every
        offer scores as the worst qualified one (`ClickModel.score_matrix`), so it ranks nothing and
        the placement is served in a random order, as auto-optimization's is."""
        return (self.model is not None and not self.posterior and self.metadata.get("ai_model_type") == "personalized"
                and self.metadata.get("offers_qualified", 2) < 2)

    @property
    def holdout_share(self) -> float:
        return self.model.holdout_share if self.model is not None else 0.0

    def description(self) -> dict[str, Any]:
        """The `PlacementDecision` fields that describe the plan rather than the chosen items."""
        return dict(channel=self.placement.channel, ranking_method=self.placement.ranking.method,
                    ai_model=self.metadata.get("ai_model"), model_version=self.metadata.get("model_version"),
                    table_version=self.snapshot.version if self.snapshot else None)

    def described(self) -> tuple[str, str | None, str | None, int | None]:
        """`description()`'s ranking_method, ai_model, model_version and table_version, positionally
        (made once: the plan is made once per table version)."""
        return self._described

    @cached_property
    def _described(self) -> tuple[str, str | None, str | None, int | None]:
        return (self.placement.ranking.method, self.metadata.get("ai_model"), self.metadata.get("model_version"),
                self.snapshot.version if self.snapshot else None)


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
    #: the training window's counts behind each posterior (a fitted prior and sharpening are not counts)
    displays: np.ndarray
    successes: np.ndarray
    weights: np.ndarray | None = None  # value per success of value-weighted models (None: all 1)
