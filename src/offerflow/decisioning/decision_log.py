"""The decision log: decisions as `display` events in the data contract plus one metadata row per
placement (`DECISION_META_SCHEMA`), appended as Parquet files, and where a project keeps them."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from offerflow.core.schema import DECISION_META_SCHEMA, EVENT_SCHEMA
from offerflow.decisioning.decision_types import Decision

def decisions_to_events(decisions: Sequence[Decision]) -> pa.Table:
    """Decisions as `display` events in the data contract, ready for the next ingestion.

    Built column by column (no per-row DataFrame work: the service writes these from a background
    thread that shares the interpreter with request handling)."""
    event_id, timestamp, profile_id, offer_id, placement_id, channel, propensity, decision_id = ([] for _ in range(8))
    for d in decisions:
        at = datetime.fromisoformat(d.decided_at)
        for p in d.placements:
            for item in p.items:
                event_id.append(f"{d.decision_id}-{p.placement_id}-{item.rank}")
                timestamp.append(at)
                profile_id.append(d.profile_id)
                offer_id.append(item.offer_id)
                placement_id.append(p.placement_id)
                channel.append(p.channel)
                propensity.append(item.propensity)
                decision_id.append(d.decision_id)
    n = len(event_id)
    return pa.Table.from_pydict({"event_id": event_id, "timestamp": timestamp, "profile_id": profile_id,
                                 "event_type": ["display"] * n, "offer_id": offer_id, "placement_id": placement_id,
                                 "channel": channel, "value": [None] * n, "propensity": propensity,
                                 "decision_id": decision_id}, schema=EVENT_SCHEMA)


def decisions_to_meta(decisions: Sequence[Decision]) -> pa.Table:
    """One `DECISION_META_SCHEMA` row per (decision, placement): who, where, which model and arm."""
    rows = [(d, datetime.fromisoformat(d.decided_at), p) for d in decisions for p in d.placements]
    return pa.Table.from_pydict({
        "decision_id": [d.decision_id for d, _, _ in rows], "decided_at": [at for _, at, _ in rows],
        "profile_id": [d.profile_id for d, _, _ in rows], "placement_id": [p.placement_id for _, _, p in rows],
        "ai_model": [p.ai_model for _, _, p in rows],
        "model_version": [None if p.model_version is None else str(p.model_version) for _, _, p in rows],
        "table_version": [p.table_version for _, _, p in rows],
        "ranking_method": [p.ranking_method for _, _, p in rows], "arm": [p.arm for _, _, p in rows]},
        schema=DECISION_META_SCHEMA)


def write_decision_log(events: pa.Table, meta: pa.Table, directory: Path) -> Path:
    """Append display events and their decision metadata as two new Parquet files with one name
    (`decisions-*.parquet` and `meta/decisions-*.parquet`); the metadata is written first, so every
    logged display has its row. Files are never rewritten; each appears atomically (rename)."""
    name = f"decisions-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}.parquet"
    for table, folder in ((meta, directory / "meta"), (events, directory)):
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{name}.tmp"
        pq.write_table(table, tmp)
        tmp.replace(folder / name)
    return directory / name


def log_decisions(decisions: Sequence[Decision], directory: Path, chunk: int = 250) -> Path:
    """Append decisions to the decision log (display events + metadata; see `write_decision_log`).

    The columns are built `chunk` decisions at a time with the GIL released between chunks: the
    service writes from a background thread, and one 2,000-decision batch built in one go held
    the interpreter for ~20 ms, a pause for every request in flight."""
    events, meta = [], []
    for start in range(0, max(len(decisions), 1), chunk):
        part = decisions[start:start + chunk]
        events.append(decisions_to_events(part))
        meta.append(decisions_to_meta(part))
        time.sleep(0)  # releases the GIL: a waiting request handler runs now, not after the batch
    return write_decision_log(pa.concat_tables(events), pa.concat_tables(meta), directory)


