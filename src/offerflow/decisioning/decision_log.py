"""The decision log: decisions as `display` events in the data contract plus one metadata row per
placement (`DECISION_META_SCHEMA`), appended as Parquet files, and where a project keeps them."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from offerflow.core.columns import arrow_array
from offerflow.core.schema import DECISION_META_SCHEMA, EVENT_SCHEMA
from offerflow.decisioning.decision_types import Decision, DecisionItem, PlacementDecision

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


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


def event_placements(placement_ids: Sequence[str]) -> list[str]:
    """The placement part of the event ids of one decision's placements, in request order: the id,
    then `<id>#2`, `<id>#3`... for a placement named again in the same request (another set of slots
    of that placement, filled after the earlier ones), so every display keeps a unique event id
    (`<decision>-<placement>[#n]-<rank>`; its `placement_id` column stays the placement's id)."""
    seen: dict[str, int] = {}
    labels = []
    for placement_id in placement_ids:
        seen[placement_id] = n = seen.get(placement_id, 0) + 1
        labels.append(placement_id if n == 1 else f"{placement_id}#{n}")
    return labels


class DecisionColumns:
    """Decisions as the decision log's columns, appended a decision at a time (`add`), made into the
    two tables at once (`tables`).

    The service adds each decision as it answers it: a few list appends on the event loop, no object
    kept per decision (a list of decisions waiting for the writer thread held ~12 tracked objects
    each: young-generation collections walked them, and building columns from them in the writer
    thread held the interpreter for ~17 ms a 2,000-decision batch, taken from request handling at
    every GIL hand-off). `tables` does its work in Arrow: the event rows' decision columns are
    taken from their placement's row, event ids joined, timestamps parsed from `decided_at`."""

    def __init__(self) -> None:
        self.decisions = 0
        # one row per (decision, placement): DECISION_META_SCHEMA's columns, and the channel
        self.decision_id: list[str] = []
        self.decided_at: list[str] = []
        self.profile_id: list[str] = []
        self.placement_id: list[str] = []
        self.channel: list[str] = []
        self.ai_model: list[str | None] = []
        self.model_version: list[str | None] = []
        self.table_version: list[int | None] = []
        self.ranking_method: list[str] = []
        self.arm: list[str] = []
        # one row per item shown: its placement row above, offer, rank and propensity
        self.row: list[int] = []
        self.offer_id: list[str] = []
        self.rank: list[int] = []
        self.propensity: list[float | None] = []
        # placement rows of a placement named again in its request -> its event-id label (rare)
        self.repeats: dict[int, str] = {}

    def __len__(self) -> int:
        return self.decisions

    def add(self, d: Decision) -> None:
        self.decisions += 1
        if len(d.placements) > 1 and len({p.placement_id for p in d.placements}) < len(d.placements):
            self._note_repeats(d)  # a placement named twice (rare): its second set's event-id label
        for p in d.placements:
            row = len(self.decision_id)
            self.decision_id.append(d.decision_id)
            self.decided_at.append(d.decided_at)
            self.profile_id.append(d.profile_id)
            self.placement_id.append(p.placement_id)
            self.channel.append(p.channel)
            self.ai_model.append(p.ai_model)
            self.model_version.append(None if p.model_version is None else str(p.model_version))
            self.table_version.append(p.table_version)
            self.ranking_method.append(p.ranking_method)
            self.arm.append(p.arm)
            for item in p.items:
                self.row.append(row)
                self.offer_id.append(item.offer_id)
                self.rank.append(item.rank)
                self.propensity.append(item.propensity)

    def _note_repeats(self, d: Decision) -> None:
        first = len(self.decision_id)
        ids = [p.placement_id for p in d.placements]
        for k, (placement_id, label) in enumerate(zip(ids, event_placements(ids))):
            if label != placement_id:
                self.repeats[first + k] = label

    def prepend(self, earlier: DecisionColumns) -> None:
        """Put `earlier`'s decisions before this one's (a batch whose write failed, tried again)."""
        offset = len(earlier.decision_id)
        for name, values in vars(self).items():
            if isinstance(values, list):
                setattr(self, name, getattr(earlier, name) + (values if name != "row" else [r + offset for r in values]))
        self.repeats = {**earlier.repeats, **{row + offset: label for row, label in self.repeats.items()}}
        self.decisions += earlier.decisions

    def to_decisions(self) -> list[Decision]:
        """The decisions as the log keeps them: offers, ranks, propensities, versions and arms (no
        scores or sources; an item is a fallback when its placement's arm is). For a reload, which
        counts what is not in the log yet against the caps."""
        items: list[list[DecisionItem]] = [[] for _ in self.decision_id]
        for row, offer_id, rank, propensity in zip(self.row, self.offer_id, self.rank, self.propensity):
            items[row].append(DecisionItem(self.placement_id[row], offer_id, rank, None,
                                           self.arm[row] == "fallback", propensity))
        decisions: dict[str, Decision] = {}
        for row, decision_id in enumerate(self.decision_id):
            decision = decisions.get(decision_id)
            if decision is None:
                decision = decisions[decision_id] = Decision(decision_id, self.profile_id[row], self.decided_at[row])
            decision.placements.append(PlacementDecision(
                self.placement_id[row], self.channel[row], items[row], self.ranking_method[row], self.ai_model[row],
                self.model_version[row], self.table_version[row], "", self.arm[row]))
        return list(decisions.values())

    def tables(self) -> tuple[pa.Table, pa.Table]:
        """(display events in EVENT_SCHEMA, metadata in DECISION_META_SCHEMA), in the order added.
        Arrays are built with `arrow_array`: `offerflow decide` logs its decision without pandas."""
        decided_at = _timestamps(self.decided_at, DECISION_META_SCHEMA.field("decided_at").type)
        meta = pa.Table.from_arrays(
            [decided_at if field.name == "decided_at" else arrow_array(getattr(self, field.name), field.type)
             for field in DECISION_META_SCHEMA], schema=DECISION_META_SCHEMA)
        rows, n = arrow_array(self.row, pa.int64()), len(self.row)
        decision_id, placement_id = meta["decision_id"].take(rows), meta["placement_id"].take(rows)
        rank = arrow_array(self.rank, pa.int64()).cast(pa.string())
        labels = placement_id
        if self.repeats:
            labels = arrow_array([self.repeats.get(r, p) for r, p in enumerate(self.placement_id)], pa.string()).take(rows)
        columns = {
            "event_id": pc.binary_join_element_wise(decision_id, labels, rank, arrow_array(["-"] * n, pa.string())),
            "timestamp": decided_at.take(rows), "profile_id": meta["profile_id"].take(rows),
            "event_type": arrow_array(["display"] * n, pa.string()), "offer_id": arrow_array(self.offer_id, pa.string()),
            "placement_id": placement_id, "channel": arrow_array(self.channel, pa.string()).take(rows),
            "value": pa.nulls(n, pa.float64()), "propensity": arrow_array(self.propensity, pa.float64()),
            "decision_id": decision_id}
        return pa.Table.from_arrays([columns[name] for name in EVENT_SCHEMA.names], schema=EVENT_SCHEMA), meta


def _timestamps(texts: list[str], type_: pa.DataType) -> pa.Array:
    """ISO-8601 texts as timestamps, parsed by Arrow; texts without a zone offset (a caller's naive
    `now`) as `datetime.fromisoformat` reads them, taken as UTC, as before."""
    try:
        return arrow_array(texts, pa.string()).cast(type_)
    except pa.ArrowInvalid:
        moments = [datetime.fromisoformat(text) for text in texts]
        micros = [(m if m.tzinfo else m.replace(tzinfo=timezone.utc)) - _EPOCH for m in moments]
        return arrow_array([m // timedelta(microseconds=1) for m in micros], pa.int64()).view(type_)


def log_decisions(decisions: Sequence[Decision], directory: Path) -> Path:
    """Append decisions to the decision log (display events + metadata; see `write_decision_log`)."""
    columns = DecisionColumns()
    for decision in decisions:
        columns.add(decision)
    return write_decision_log(*columns.tables(), directory)
