"""A decision batch's output tables: the decisions dataset, its display events and the metadata rows.

`decisioning.batch` decides as matrices and hands over, per chunk and placement, flat NumPy columns
(row, rank, offer id, score, fallback, propensity, arm code); `result_tables` turns them into Arrow
tables. Values repeated on many rows (placement, channel, arm, event type) are built as dictionary
arrays and decoded by Arrow, and per-profile values are taken from one Arrow array per batch, so no
column is converted from a Python object array row by row.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from offerflow.core.schema import DECISION_META_SCHEMA, EVENT_SCHEMA
from offerflow.decisioning.decision_log import event_placements

#: One row per decided item (rank 1..items per decision and placement).
BATCH_DECISION_SCHEMA = pa.schema([
    pa.field("decision_id", pa.string(), nullable=False),
    pa.field("decided_at", pa.timestamp("us", tz="UTC"), nullable=False),
    pa.field("profile_id", pa.string(), nullable=False),
    pa.field("placement_id", pa.string(), nullable=False),
    pa.field("rank", pa.int16(), nullable=False),
    pa.field("offer_id", pa.string(), nullable=False),
    pa.field("score", pa.float64()),
    pa.field("fallback", pa.bool_(), nullable=False),
    pa.field("propensity", pa.float64()),
    pa.field("arm", pa.string(), nullable=False),
])
ARM_CODES = np.array(["model", "holdout", "non_personalized", "fallback"], dtype=object)
MODEL, HOLDOUT, NON_PERSONALIZED, FALLBACK = range(4)


@dataclass(frozen=True)
class BatchResult:
    decisions: pa.Table  # BATCH_DECISION_SCHEMA
    events: pa.Table     # display events, EVENT_SCHEMA
    meta: pa.Table       # DECISION_META_SCHEMA
    profiles: int
    seconds: float
    #: placement -> table version the batch decided with (one manifest); explanations use the same
    versions: Mapping[str, int] = field(default_factory=dict)
    #: profile ids not in the profiles table (decided as unknown profiles: non-personalized)
    unknown_profiles: int = 0

    def arm_counts(self) -> dict[str, int]:
        """Decisions (per placement) by traffic arm."""
        counts = pc.value_counts(self.meta["arm"]).to_pylist()
        return {c["values"]: c["counts"] for c in counts}


def decision_ids(run: str, n: int) -> pa.Array:
    """`dec-<run>-<row, zero-padded to 8 digits or more>` for rows 0..n-1."""
    digits = pc.utf8_lpad(pc.cast(pa.array(np.arange(n, dtype=np.int64)), pa.string()), max(8, len(str(n))), "0")
    return pc.binary_join_element_wise(pa.scalar(f"dec-{run}"), digits, "-")


def _repeated(codes: np.ndarray, values: Sequence[Any], type_: pa.DataType = pa.string()) -> pa.Array:
    """values[codes] as a plain Arrow array (decoded from a dictionary array: no per-row Python)."""
    dictionary = pa.DictionaryArray.from_arrays(pa.array(np.asarray(codes, dtype=np.int32)), pa.array(values, type_))
    return pc.cast(dictionary, type_)


def result_tables(plans: Sequence[Any], parts: list[dict[str, np.ndarray]], ids: np.ndarray, run: str,
                  now: datetime, started: float, versions: Mapping[str, int], unknown_profiles: int = 0) -> BatchResult:
    """The batch's tables from its parts (one per chunk and placement, placements in `plans` order)."""
    n_plans = len(plans)
    columns = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}
    placement_of = np.concatenate([np.full(len(p["row"]), i % n_plans, dtype=np.int64)
                                   for i, p in enumerate(parts)]) if parts else np.zeros(0, np.int64)
    rows = pa.array(columns.get("row", np.zeros(0, np.int64)))
    placement_ids = [p.placement_id for p in plans]
    instant = np.datetime64(now.astimezone(timezone.utc).replace(tzinfo=None), "us")
    timestamp = pa.array(np.full(len(rows), instant), type=pa.timestamp("us", tz="UTC"))
    decision = decision_ids(run, len(ids)).take(rows)
    placement = _repeated(placement_of, placement_ids)
    rank = pa.array(columns.get("rank", np.zeros(0, np.int16)), type=pa.int16())
    propensity = pa.array(columns.get("propensity", np.zeros(0)), type=pa.float64(), from_pandas=True)
    decisions = pa.table({
        "decision_id": decision, "decided_at": timestamp, "profile_id": pa.array(ids, type=pa.string()).take(rows),
        "placement_id": placement, "rank": rank, "offer_id": pa.array(columns.get("offer_id", []), type=pa.string()),
        "score": pa.array(columns.get("score", np.zeros(0)), type=pa.float64(), from_pandas=True),
        "fallback": pa.array(columns.get("fallback", np.zeros(0, bool))),
        "propensity": propensity,
        "arm": _repeated(columns.get("arm", np.zeros(0, np.int64)), ARM_CODES.tolist())}, schema=BATCH_DECISION_SCHEMA)
    labels = event_placements(placement_ids)  # a placement named twice: `<id>#2` in the second's event ids
    labelled = placement if labels == placement_ids else _repeated(placement_of, labels)
    event_id = pc.binary_join_element_wise(decision, labelled, pc.cast(rank, pa.string()), "-")
    events = pa.table({"event_id": event_id, "timestamp": timestamp, "profile_id": decisions["profile_id"],
                       "event_type": _repeated(np.zeros(len(rows), np.int32), ["display"]),
                       "offer_id": decisions["offer_id"], "placement_id": placement,
                       "channel": _repeated(placement_of, [p.placement.channel for p in plans]),
                       "value": pa.nulls(len(rows), pa.float64()),
                       "propensity": propensity, "decision_id": decision}, schema=EVENT_SCHEMA)
    meta = _meta(decisions, placement_of, plans)
    return BatchResult(decisions, events, meta, len(ids), time.perf_counter() - started, dict(versions),
                       unknown_profiles)


def _meta(decisions: pa.Table, placement_of: np.ndarray, plans: Sequence[Any]) -> pa.Table:
    """One DECISION_META_SCHEMA row per decision and placement (its rank-1 row), by decision id."""
    first = pc.equal(decisions["rank"], 1)
    firsts = decisions.filter(first)
    order = pc.sort_indices(firsts, sort_keys=[("decision_id", "ascending")])
    meta = firsts.take(order)
    plan_index = placement_of[first.to_numpy(zero_copy_only=False)][order.to_numpy()]

    def per_placement(value: Any, type_: pa.DataType) -> pa.Array:
        return pa.array([value(p) for p in plans], type=type_).take(pa.array(plan_index, type=pa.int64()))

    return pa.table({
        "decision_id": meta["decision_id"], "decided_at": meta["decided_at"], "profile_id": meta["profile_id"],
        "placement_id": meta["placement_id"],
        "ai_model": per_placement(lambda p: p.meta.get("ai_model"), pa.string()),
        "model_version": per_placement(lambda p: None if p.meta.get("model_version") is None
                                       else str(p.meta["model_version"]), pa.string()),
        "table_version": per_placement(lambda p: p.snap.version if p.snap else None, pa.int64()),
        "ranking_method": per_placement(lambda p: p.placement.ranking.method, pa.string()),
        "arm": meta["arm"]}, schema=DECISION_META_SCHEMA)
