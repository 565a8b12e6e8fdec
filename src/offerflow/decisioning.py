"""The decision step: which offers for this profile in these placements, right now.

For each requested placement, in request order: read the published ranking (a per-profile ranked
list, or auto-optimization posteriors to Thompson-sample), drop offers whose eligibility rule is
false for the profile's current attributes, drop offers already chosen for an earlier placement of
the same request (unless duplicates are allowed), keep the top items, and fall back to the
placement's fallback offer when nothing is left. A profile the table has never seen gets the
placement's non-personalized ranking (priority). Every decision can be logged as `display` events
in the data contract, with the propensity of what was shown, so the next training run learns from it.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from offerflow.bandits import first_choice_probability, thompson_select
from offerflow.catalog import fallback_offer, offers_for_placement
from offerflow.config import ProjectConfig
from offerflow.rules import Expression, parse_expression, schema_from_frames
from offerflow.schema import EVENT_SCHEMA, PROFILE_ID
from offerflow.store import RankingStore

MAX_ITEMS = 30


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
    source: str  # ranking_table | thompson_sampling | non_personalized | fallback


@dataclass(frozen=True)
class Decision:
    decision_id: str
    profile_id: str
    decided_at: str
    placements: list[PlacementDecision] = field(default_factory=list)

    def offer_ids(self) -> list[str]:
        return [item.offer_id for p in self.placements for item in p.items]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class DecisionEngine:
    """Answers decision requests from the published ranking tables of one project."""

    def __init__(self, config: ProjectConfig, store: RankingStore, offers: pd.DataFrame,
                 profiles: pd.DataFrame, seed: int | None = None) -> None:
        self.config = config
        self.store = store
        self.offers = offers.set_index("offer_id", drop=False)
        self.profiles = profiles.reset_index(drop=True)
        # Per-request lookups without pandas: id -> row position, and each column as a NumPy array.
        self._profile_pos = {pid: i for i, pid in enumerate(self.profiles[PROFILE_ID].astype(str))}
        self._profile_columns = [(f"profile.{c}", self.profiles[c].to_numpy(dtype=object))
                                 for c in self.profiles.columns]
        schema = schema_from_frames(profiles=self.profiles, offers=offers)
        self._rules: dict[str, Expression] = {
            oid: parse_expression(rule, schema, kind="rule", source=f"offer {oid!r} eligibility")
            for oid, rule in zip(offers["offer_id"], offers["eligibility"]) if isinstance(rule, str)}
        self._offer_values = {oid: {f"offer.{c}": v for c, v in row.items() if c != "placements"}
                              for oid, row in self.offers.to_dict(orient="index").items()}
        self._by_priority = {p.id: offers_for_placement(offers, p.id)
                             .sort_values(["priority", "offer_id"], ascending=[False, True])["offer_id"].tolist()
                             for p in config.placements}
        self._snapshots: dict[str, Any] = {}
        self._posteriors: dict[str, _Posteriors] = {}
        # First-choice probabilities of Thompson sampling, per (table version, eligible offers).
        self._choice_probabilities: dict[tuple[str, int, bytes], np.ndarray] = {}
        self._rng = np.random.default_rng(seed)

    def _profile_values(self, profile_id: str) -> dict[str, Any] | None:
        pos = self._profile_pos.get(profile_id)
        if pos is None:
            return None
        return {name: (None if _is_missing(column[pos]) else column[pos]) for name, column in self._profile_columns}

    def _eligible(self, offer_id: str, profile_values: dict[str, Any] | None) -> bool:
        rule = self._rules.get(offer_id)
        if rule is None:
            return True
        if profile_values is None:
            profile_values = {}
        return bool(rule.evaluate_one({**profile_values, **self._offer_values[offer_id]}))

    def _snapshot(self, placement_id: str):
        """The current published table, reloaded when a new version has been published."""
        current = self.store.current_version(placement_id)
        cached = self._snapshots.get(placement_id)
        if current is None:
            return None
        if cached is None or cached.version != current:
            self._snapshots[placement_id] = cached = self.store.snapshot(placement_id)
        return cached

    def decide(self, profile_id: str, placement_ids: Sequence[str], items: int | None = None,
               allow_duplicates: bool = False) -> Decision:
        """Decide for one profile across placements (filled in request order)."""
        if not placement_ids:
            raise DecisionError("at least one placement is required")
        if items is not None and not 1 <= items <= MAX_ITEMS:
            raise DecisionError(f"items must be between 1 and {MAX_ITEMS}, got {items}")
        known = {p.id for p in self.config.placements}
        unknown = [p for p in placement_ids if p not in known]
        if unknown:
            raise DecisionError(f"unknown placement(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        profile_values = self._profile_values(profile_id)
        used: set[str] = set()
        results = []
        for placement_id in placement_ids:
            result = self._decide_placement(profile_id, placement_id, profile_values, items, used)
            if not allow_duplicates:
                used.update(i.offer_id for i in result.items)
            results.append(result)
        return Decision(f"dec-{uuid.uuid4().hex}", profile_id, datetime.now(timezone.utc).isoformat(), results)

    def _decide_placement(self, profile_id: str, placement_id: str, profile_values: dict[str, Any] | None,
                          items: int | None, used: set[str]) -> PlacementDecision:
        placement = self.config.placement(placement_id)
        n_items = items or placement.items
        snap = self._snapshot(placement_id)
        meta = snap.metadata if snap is not None else {}
        info = dict(channel=placement.channel, ranking_method=placement.ranking.method, ai_model=meta.get("ai_model"),
                    model_version=meta.get("model_version"), table_version=snap.version if snap else None)
        chosen: list[DecisionItem] = []
        source = "non_personalized"
        if snap is not None and snap.kind == "posterior":
            chosen, source = self._thompson(placement_id, snap, profile_values, n_items, used), "thompson_sampling"
        else:
            offer_ids, scores = (snap.lookup(profile_id) if snap is not None else (np.array([]), np.array([])))
            if len(offer_ids):
                source = "ranking_table"
            else:  # never seen by the table: non-personalized ranking by priority
                offer_ids = np.asarray(self._by_priority[placement_id], dtype=object)
                scores = self.offers.loc[offer_ids, "priority"].to_numpy(float) if len(offer_ids) else scores
            for offer_id, score in zip(offer_ids, scores):
                if len(chosen) == n_items:
                    break
                if offer_id in used or not self._eligible(offer_id, profile_values):
                    continue
                chosen.append(DecisionItem(placement_id, str(offer_id), len(chosen) + 1, float(score)))
        if not chosen:
            chosen = [DecisionItem(placement_id, fallback_offer(self.offers.reset_index(drop=True), placement_id),
                                   1, None, fallback=True, propensity=1.0)]
            source = "fallback"
        return PlacementDecision(placement_id=placement_id, items=chosen, source=source, **info)

    def _posterior_arrays(self, placement_id: str, snap: Any) -> _Posteriors:
        cached = self._posteriors.get(placement_id)
        if cached is None or cached.version != snap.version:
            post = snap.posteriors
            alpha, beta = post["alpha"].to_numpy(float), post["beta"].to_numpy(float)
            cached = _Posteriors(snap.version, post["offer_id"].astype(str).tolist(), alpha, beta,
                                 post["qualified"].to_numpy(bool), alpha / (alpha + beta))
            self._posteriors[placement_id] = cached
        return cached

    def _thompson(self, placement_id: str, snap: Any, profile_values: dict[str, Any] | None,
                  n_items: int, used: set[str]) -> list[DecisionItem]:
        post = self._posterior_arrays(placement_id, snap)
        eligible = np.array([oid not in used and oid in self._offer_values and self._eligible(oid, profile_values)
                             for oid in post.offer_ids], dtype=bool)
        model = self.config.ai_model(snap.metadata["ai_model"])
        key = (placement_id, snap.version, eligible.tobytes())
        probabilities = self._choice_probabilities.get(key)
        if probabilities is None:
            if len(self._choice_probabilities) > 10_000:
                self._choice_probabilities.clear()
            probabilities = first_choice_probability(post.alpha, post.beta, post.qualified, eligible,
                                                     model.exploration_share, self._rng, draws=4000)
            self._choice_probabilities[key] = probabilities
        selection = thompson_select(post.alpha, post.beta, post.qualified, eligible, n_items,
                                    model.exploration_share, self._rng, first_probabilities=probabilities)
        return [DecisionItem(placement_id, post.offer_ids[j], r + 1, float(post.means[j]),
                             propensity=selection.propensity if r == 0 else None)
                for r, j in enumerate(selection.indices)]


@dataclass(frozen=True)
class _Posteriors:
    """A posterior table as arrays, cached per published version."""

    version: int
    offer_ids: list[str]
    alpha: np.ndarray
    beta: np.ndarray
    qualified: np.ndarray
    means: np.ndarray


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA


def decisions_to_events(decisions: Sequence[Decision]) -> pa.Table:
    """Decisions as `display` events in the data contract, ready for the next ingestion."""
    rows = []
    for decision in decisions:
        for placement in decision.placements:
            for item in placement.items:
                rows.append({"event_id": f"{decision.decision_id}-{placement.placement_id}-{item.rank}",
                             "timestamp": pd.Timestamp(decision.decided_at), "profile_id": decision.profile_id,
                             "event_type": "display", "offer_id": item.offer_id,
                             "placement_id": placement.placement_id, "channel": placement.channel,
                             "value": None, "propensity": item.propensity, "decision_id": decision.decision_id})
    frame = pd.DataFrame(rows, columns=EVENT_SCHEMA.names)
    return pa.Table.from_pandas(frame, schema=EVENT_SCHEMA, preserve_index=False)


def log_decisions(decisions: Sequence[Decision], directory: Path) -> Path:
    """Append decisions to the decision log (one new Parquet file per call, never rewritten)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"decisions-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}.parquet"
    tmp = path.with_suffix(".tmp")
    pq.write_table(decisions_to_events(decisions), tmp)
    tmp.replace(path)
    return path
