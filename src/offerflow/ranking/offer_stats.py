"""Daily offer statistics, kept up to date incrementally: what auto-optimization learns from.

An auto-optimization model only needs, per placement and offer, the displays, successes and
success value in its rolling window. Those are kept as one row per (day, placement, offer) in a
small Parquet file per model. An update recomputes only the days from the last watermark on (less
`lag_days`, so successes that arrive after their display's day are still counted) and reuses the
rest, so retraining reads a few hours of events instead of the whole window; posteriors are sums
over the window's days. If the events before the recomputed days are no longer what the stats were
built from (the snapshot was rebuilt with back-filled or deleted rows), the update rebuilds from
scratch: incremental never means stale.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from offerflow.core.features import EVENTS_VIEW, query_frame
from offerflow.core.schema import table_schema

STATS_SCHEMA = table_schema("day date32, placement_id string, offer_id string, displays int64, successes int64, "
                            "value float64")


@dataclass(frozen=True)
class StatsUpdate:
    """What an update did: `mode` is "full" or "incremental"; `since` is the first day recomputed."""

    mode: str
    since: datetime | None
    rows: int
    watermark: datetime | None


def daily_stats(con: duckdb.DuckDBPyConnection, placement_ids: list[str], success_event: str,
                since: datetime | None = None) -> pd.DataFrame:
    """Per (day, placement, offer): displays from `since` on, with the successes (the success event
    for the same decision and offer) and their summed value. Columns of `STATS_SCHEMA`."""
    marks = ", ".join("?" for _ in placement_ids)
    since_filter = "AND timestamp >= ?" if since is not None else ""
    params: list[object] = [success_event] + ([since] if since else []) + list(placement_ids) + ([since] if since else [])
    sql = f"""
        WITH s AS (SELECT decision_id, offer_id, SUM(IF(isfinite(value), value, 0)) AS value FROM {EVENTS_VIEW}
                   WHERE event_type = ? AND decision_id IS NOT NULL {since_filter}
                   GROUP BY decision_id, offer_id),
             d AS (SELECT decision_id, offer_id, placement_id, timestamp FROM {EVENTS_VIEW}
                   WHERE event_type = 'display' AND placement_id IN ({marks}) {since_filter})
        SELECT CAST(d.timestamp AS DATE) AS day, d.placement_id, d.offer_id,
               COUNT(*)::BIGINT AS displays, COUNT(s.decision_id)::BIGINT AS successes,
               COALESCE(SUM(s.value), 0)::DOUBLE AS value
        FROM d LEFT JOIN s ON d.decision_id = s.decision_id AND d.offer_id = s.offer_id
        GROUP BY ALL ORDER BY day, d.placement_id, d.offer_id"""
    frame = query_frame(con, sql, params)
    return pa.Table.from_pandas(frame, schema=STATS_SCHEMA, preserve_index=False).to_pandas()


def _display_count_before(con: duckdb.DuckDBPyConnection, placement_ids: list[str], before: datetime) -> int:
    marks = ", ".join("?" for _ in placement_ids)
    rows = con.sql(f"SELECT COUNT(*) FROM {EVENTS_VIEW} WHERE event_type = 'display' AND placement_id IN ({marks})"
                   " AND timestamp < ?", params=[*placement_ids, before]).fetchall()
    return int(rows[0][0])


def _latest_display(con: duckdb.DuckDBPyConnection, placement_ids: list[str]) -> datetime | None:
    marks = ", ".join("?" for _ in placement_ids)
    rows = con.sql(f"SELECT MAX(timestamp) FROM {EVENTS_VIEW} WHERE event_type = 'display'"
                   f" AND placement_id IN ({marks})", params=list(placement_ids)).fetchall()
    return rows[0][0]


class OfferStatsStore:
    """The daily stats of one model: `<directory>/stats.parquet` and `state.json`."""

    def __init__(self, directory: Path, placement_ids: list[str], success_event: str, lag_days: int = 1) -> None:
        self.directory = directory
        self.placement_ids = sorted(placement_ids)
        self.success_event = success_event
        self.lag_days = lag_days

    @property
    def _table(self) -> Path:
        return self.directory / "stats.parquet"

    @property
    def _state(self) -> Path:
        return self.directory / "state.json"

    def read(self) -> pd.DataFrame:
        if not self._table.exists():
            return STATS_SCHEMA.empty_table().to_pandas()
        return pq.read_table(self._table, schema=STATS_SCHEMA).to_pandas()

    def _load_state(self) -> dict | None:
        try:
            state = json.loads(self._state.read_text())
        except (FileNotFoundError, ValueError):
            return None
        same = (state.get("placement_ids") == self.placement_ids and state.get("success_event") == self.success_event
                and self._table.exists())
        return state if same else None

    def update(self, con: duckdb.DuckDBPyConnection, full: bool = False) -> StatsUpdate:
        """Bring the stats up to date with the events behind `con`; incremental when it can be."""
        state = None if full else self._load_state()
        since: datetime | None = None
        if state is not None and state.get("watermark"):
            watermark = datetime.fromisoformat(state["watermark"])
            since = datetime.combine(watermark.date() - timedelta(days=self.lag_days), datetime.min.time(),
                                     tzinfo=timezone.utc)
            if _display_count_before(con, self.placement_ids, since) != state["displays_before"].get(since.isoformat()):
                since, state = None, None  # history changed under us: rebuild
        fresh = daily_stats(con, self.placement_ids, self.success_event, since)
        if since is None:
            stats = fresh
        else:
            kept = self.read()
            kept = kept[pd.to_datetime(kept["day"]) < pd.Timestamp(since.date())]
            stats = pd.concat([kept, fresh], ignore_index=True) if len(kept) else fresh
        watermark = _latest_display(con, self.placement_ids)
        self._write(stats, watermark, con)
        return StatsUpdate("full" if since is None else "incremental", since, len(fresh), watermark)

    def _write(self, stats: pd.DataFrame, watermark: datetime | None, con: duckdb.DuckDBPyConnection) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pandas(stats.sort_values(["day", "placement_id", "offer_id"], kind="stable"),
                                     schema=STATS_SCHEMA, preserve_index=False)
        tmp = self._table.with_suffix(".tmp")
        pq.write_table(table, tmp)
        tmp.replace(self._table)
        displays_before = {}
        if watermark is not None:
            # The display count before the next update's first recomputed day: if it has changed
            # by then, the history was rewritten and the next update rebuilds.
            next_since = datetime.combine(watermark.date() - timedelta(days=self.lag_days), datetime.min.time(),
                                          tzinfo=timezone.utc)
            displays_before[next_since.isoformat()] = _display_count_before(con, self.placement_ids, next_since)
        state = {"placement_ids": self.placement_ids, "success_event": self.success_event,
                 "watermark": watermark.isoformat() if watermark else None, "displays_before": displays_before,
                 "updated_at": datetime.now(timezone.utc).isoformat()}
        tmp_state = self._state.with_suffix(".tmp")
        tmp_state.write_text(json.dumps(state))
        tmp_state.replace(self._state)


def window_counts(stats: pd.DataFrame, start: datetime, end: datetime) -> pd.DataFrame:
    """Displays, successes and value per offer over the days in [start, end)."""
    days = pd.to_datetime(stats["day"])
    inside = stats[(days >= pd.Timestamp(start.date())) & (days < pd.Timestamp(end.date()))]
    return (inside.groupby("offer_id", as_index=False)
                  .agg(displays=("displays", "sum"), successes=("successes", "sum"), value=("value", "sum")))
