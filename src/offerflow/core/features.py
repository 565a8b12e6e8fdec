"""Point-in-time features from events, and the encoding of attribute columns for LightGBM.

Every feature for a cut-off date is computed from events strictly before it, in DuckDB over the
validated events snapshot (Parquet), so the event data never has to fit in pandas at once.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import uuid
import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa

if TYPE_CHECKING:
    import duckdb

    from offerflow.core.tracking import DatasetSummary

EVENTS_VIEW = "events"
#: DuckDB's memory cap for the queries over the events: beyond it, aggregations and sorts spill to
#: a temporary directory, so 10 million profiles' features fit next to the Python process.
EVENTS_MEMORY_MIB = 4096
#: The DuckDB variable that keeps where `open_events` read the events (for `events_dataset`).
_SOURCE_VARIABLE = "offerflow_events_source"


def open_events(path: Path, memory_limit_mib: int = EVENTS_MEMORY_MIB) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the events Parquet file(s) as view `events`; it spills
    to its own temporary directory (removed with the connection) beyond `memory_limit_mib`."""
    import duckdb  # on use: the project check and the decision commands import this module, not DuckDB

    con = duckdb.connect()
    spill = tempfile.mkdtemp(prefix="offerflow-duckdb-")
    weakref.finalize(con, shutil.rmtree, spill, ignore_errors=True)
    con.execute(f"SET memory_limit = '{int(memory_limit_mib)}MB'")
    con.execute(f"SET temp_directory = {_sql_str(spill)}")
    con.execute("SET TimeZone = 'UTC'")
    source = str(path / "*.parquet") if Path(path).is_dir() else str(path)
    con.execute(f"CREATE VIEW {EVENTS_VIEW} AS SELECT * FROM read_parquet({_sql_str(source)})")
    con.execute(f"SET VARIABLE {_SOURCE_VARIABLE} = {_sql_str(Path(path).resolve().as_uri())}")
    return con


def query_frame(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[object] = ()) -> pd.DataFrame:
    """Run a query and return its result as pandas, through Arrow (typed, no copies per row)."""
    return con.sql(sql, params=list(params) or None).to_arrow_table().to_pandas()


@contextmanager
def profile_filter(con: duckdb.DuckDBPyConnection, profile_ids: Sequence[str] | pd.Series | None,
                   column: str = "profile_id") -> Iterator[str]:
    """A SQL condition keeping the rows of `profile_ids` (all rows when None), usable in queries
    on `con` inside the block: the ids are registered as a table for a semi-join, so a sample
    of profiles costs one scan of the events and its memory, not a frame of every profile."""
    if profile_ids is None:
        yield "TRUE"
        return
    name = f"_profiles_{uuid.uuid4().hex[:12]}"
    ids = pd.Series(profile_ids, copy=False).to_numpy(dtype=object)
    con.register(name, pa.table({"profile_id": pa.array(ids, type=pa.string())}))
    try:
        yield f"{column} IN (SELECT profile_id FROM {name})"
    finally:
        con.unregister(name)


def event_time_range(con: duckdb.DuckDBPyConnection) -> tuple[datetime, datetime]:
    """First and last event timestamp (UTC)."""
    first, last = con.execute(f"SELECT min(timestamp), max(timestamp) FROM {EVENTS_VIEW}").fetchall()[0]
    if first is None:
        raise ValueError("the events dataset is empty")
    return pd.Timestamp(first).tz_convert("UTC").to_pydatetime(), pd.Timestamp(last).tz_convert("UTC").to_pydatetime()


def events_fingerprint(con: duckdb.DuckDBPyConnection) -> str:
    """A short content version of the events dataset (row count, time span and a hash of the event
    ids): tagged on every training run, so a model says which data it learned from."""
    count, first, last, ids = con.execute(
        f"SELECT count(*), min(timestamp), max(timestamp), bit_xor(hash(event_id)) FROM {EVENTS_VIEW}").fetchall()[0]
    span = f"{pd.Timestamp(first):%Y%m%d}-{pd.Timestamp(last):%Y%m%d}" if count else "empty"
    return f"{count}-{span}-{int(ids or 0):016x}"


def events_dataset(con: duckdb.DuckDBPyConnection) -> DatasetSummary:
    """The events snapshot a run reads, as MLflow records a run's input (`Tracker.log_input`):
    its file, a digest of its content version, its rows and its first and last event."""
    import hashlib

    from offerflow.core.tracking import DatasetSummary  # here: the project check imports this module

    version = events_fingerprint(con)
    count, first, last = con.execute(f"SELECT count(*), min(timestamp), max(timestamp) FROM {EVENTS_VIEW}").fetchall()[0]
    uri = con.execute(f"SELECT getvariable('{_SOURCE_VARIABLE}')").fetchall()[0][0] or EVENTS_VIEW
    iso = (lambda t: pd.Timestamp(t).tz_convert("UTC").isoformat() if t is not None else "")
    return DatasetSummary("validated-events", uri, hashlib.sha256(version.encode()).hexdigest()[:16], int(count),
                          iso(first), iso(last), version)


def _sql_str(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def sql_timestamp(value: datetime) -> str:
    """A UTC timestamp literal for DuckDB SQL."""
    return f"TIMESTAMPTZ {_sql_str(pd.Timestamp(value).isoformat())}"


def safe_name(text: str) -> str:
    """A column-name-safe version of an event type (`commerce.purchases` -> `commerce_purchases`)."""
    return re.sub(r"[^0-9a-zA-Z]+", "_", text).strip("_").lower() or "event"


def interaction_features(con: duckdb.DuckDBPyConnection, cutoff: datetime,
                         lookback_days: Sequence[int], event_types: Sequence[str],
                         value_event_types: Sequence[str] = ("purchase",),
                         active_day_channels: Sequence[str] = (),
                         profile_ids: Sequence[str] | pd.Series | None = None,
                         history_event_types: Sequence[str] = ()) -> pd.DataFrame:
    """Per profile, from events before `cutoff`: counts per type and window, days since last, value,
    and whole-history recency / frequency / tenure / gaps / value of `history_event_types`.

    Returns one row per profile with any event before the cut-off (only those of `profile_ids`
    when given), sorted by profile id, with the columns of `interaction_features_sql`.
    """
    with profile_filter(con, profile_ids) as keep:
        sql = interaction_features_sql(cutoff, lookback_days, event_types, value_event_types,
                                       active_day_channels, keep, history_event_types)
        return query_frame(con, f"{sql} ORDER BY profile_id")


def write_interaction_features(con: duckdb.DuckDBPyConnection, path: Path, cutoff: datetime,
                               lookback_days: Sequence[int], event_types: Sequence[str],
                               value_event_types: Sequence[str] = ("purchase",),
                               active_day_channels: Sequence[str] = (), where: str = "TRUE",
                               history_event_types: Sequence[str] = ()) -> int:
    """`interaction_features` of the profiles matching the SQL condition `where`, written by DuckDB
    to a Parquet file sorted by profile id; returns its rows. Nothing passes through Python, and
    DuckDB spills beyond its memory cap, so this works for tens of millions of profiles."""
    sql = interaction_features_sql(cutoff, lookback_days, event_types, value_event_types, active_day_channels, where,
                                   history_event_types)
    (rows,), = con.execute(f"COPY ({sql} ORDER BY profile_id) TO {_sql_str(str(path))} (FORMAT parquet)").fetchall()
    return int(rows)


def interaction_features_sql(cutoff: datetime, lookback_days: Sequence[int], event_types: Sequence[str],
                             value_event_types: Sequence[str] = ("purchase",),
                             active_day_channels: Sequence[str] = (), where: str = "TRUE",
                             history_event_types: Sequence[str] = ()) -> str:
    """The query behind `interaction_features`: one row per profile matching `where` (a SQL
    condition on the events) with any event before the cut-off, in no particular order. Columns:
    `count_<type>_<L>d`, `days_since_<type>` (NaN if never), `value_<type>_<L>d` and, per channel
    in `active_day_channels`, `active_days_<channel>_<L>d`: days with any event on that channel
    (how often a profile comes back, without the noise of how many offers one visit showed).

    Rates: `per_day_<type>_<L>d` (events per observed day) and `active_share_<channel>_<L>d`
    (share of observed days active on the channel), where the observed days of a window are the
    part of it after the first event of the dataset (at least one day). Training snapshots at
    early cut-offs see less history than the scoring date does; a raw count over a window longer
    than the history means something else at every cut-off, a rate means the same thing.

    Whole history (`history_event_types`, the goal's events: sparse repeat behaviour such as
    purchases, where a customer buys a few times a year and every window is mostly empty):
    `count_<type>_all` (events), `days_<type>_all` (distinct days with one: frequency),
    `days_since_first_<type>` (tenure), `mean_gap_<type>` (days between first and last over the
    gaps between those days; NaN below two days), `last_gap_<type>` (days between the last two
    events), `recency_gap_ratio_<type>` (days since the last over the mean gap: "overdue"),
    `rate_<type>_all` (days with one per day since the profile's first event), `value_<type>_all`
    and `mean_value_<type>` (monetary value). Plus, for every profile, `days_since_first_event` and
    `days_since_last_event` (any type). These are the statistics the BG/NBD and Pareto/NBD
    models condition on (frequency, recency, age), so the model can learn the same signal.
    """
    cutoff_sql = sql_timestamp(cutoff)
    history = list(dict.fromkeys(history_event_types))
    selects = [f"date_diff('second', min(timestamp), {cutoff_sql}) / 86400.0 AS days_since_first_event",
               f"date_diff('second', max(timestamp), {cutoff_sql}) / 86400.0 AS days_since_last_event",
               *_window_selects(cutoff_sql, lookback_days, event_types, value_event_types),
               *_history_selects(cutoff_sql, history)]
    sql = (f"SELECT profile_id, {', '.join(selects)} FROM {EVENTS_VIEW} "
           f"WHERE timestamp < {cutoff_sql} AND ({where}) GROUP BY profile_id")
    if active_day_channels:
        sql = _with_active_days(sql, cutoff_sql, lookback_days, active_day_channels, where)
    # Days of data before the cut-off: from the dataset's first event (point in time: an event
    # before the cut-off), so a window is clipped to what could have been observed.
    observed = (f"(SELECT date_diff('second', min(timestamp), {cutoff_sql}) / 86400.0 FROM {EVENTS_VIEW}"
                f" WHERE timestamp < {cutoff_sql})")
    rates = _rate_selects(lookback_days, event_types, active_day_channels, history)
    return f"SELECT f.*, {', '.join(rates)} FROM ({sql}) f, (SELECT {observed} AS hist)"


def _window_selects(cutoff_sql: str, lookback_days: Sequence[int], event_types: Sequence[str],
                    value_event_types: Sequence[str]) -> list[str]:
    """Per event type: counts (and values) per lookback window, and days since the last one."""
    selects = []
    for event_type in event_types:
        name, quoted = safe_name(event_type), _sql_str(event_type)
        for days in lookback_days:
            since = f"{cutoff_sql} - INTERVAL {int(days)} DAY"
            selects.append(f"count(*) FILTER (WHERE event_type = {quoted} AND timestamp >= {since})"
                           f" AS count_{name}_{int(days)}d")
            if event_type in value_event_types:
                selects.append(f"coalesce(sum(value) FILTER (WHERE event_type = {quoted} AND timestamp >= {since}), 0)"
                               f" AS value_{name}_{int(days)}d")
        selects.append(f"date_diff('second', max(timestamp) FILTER (WHERE event_type = {quoted}), {cutoff_sql})"
                       f" / 86400.0 AS days_since_{name}")
    return selects


def _history_selects(cutoff_sql: str, history: Sequence[str]) -> list[str]:
    """Whole-history aggregates per event type of `history` (frequency, tenure, gaps, value)."""
    selects = []
    for event_type in history:
        name, only = safe_name(event_type), f"FILTER (WHERE event_type = {_sql_str(event_type)})"
        selects += [f"count(*) {only} AS count_{name}_all",
                    f"count(DISTINCT CAST(timestamp AS DATE)) {only} AS days_{name}_all",
                    f"date_diff('second', min(timestamp) {only}, {cutoff_sql}) / 86400.0 AS days_since_first_{name}",
                    f"date_diff('second', (max(timestamp, 2) {only})[2], max(timestamp) {only}) / 86400.0"
                    f" AS last_gap_{name}",
                    f"coalesce(sum(value) {only}, 0) AS value_{name}_all",
                    f"avg(value) {only} AS mean_value_{name}"]
    return selects


def _with_active_days(sql: str, cutoff_sql: str, lookback_days: Sequence[int],
                      active_day_channels: Sequence[str], where: str) -> str:
    """`sql` (one row per profile) joined with the active days per channel and window."""
    # Days active per channel: first one row per (profile, channel, day) with the day's last
    # event time (a day counts for a window if that is inside it), then plain filtered counts;
    # much cheaper than count(DISTINCT day) per window and channel.
    longest = max(int(d) for d in lookback_days)
    channels = ", ".join(_sql_str(c) for c in active_day_channels)
    counts = ", ".join(
        f"count(*) FILTER (WHERE channel = {_sql_str(c)} AND last_ts >= {cutoff_sql} - INTERVAL {int(d)} DAY)"
        f" AS active_days_{safe_name(c)}_{int(d)}d" for c in active_day_channels for d in lookback_days)
    days = (f"SELECT profile_id, {counts} FROM (SELECT profile_id, channel, max(timestamp) AS last_ts"
            f" FROM {EVENTS_VIEW} WHERE timestamp < {cutoff_sql} AND timestamp >= {cutoff_sql} - INTERVAL {longest} DAY"
            f" AND channel IN ({channels}) AND ({where}) GROUP BY profile_id, channel, CAST(timestamp AS DATE)) GROUP BY profile_id")
    names = [f"active_days_{safe_name(c)}_{int(d)}d" for c in active_day_channels for d in lookback_days]
    return (f"SELECT h.*, {', '.join(f'coalesce(a.{n}, 0) AS {n}' for n in names)}"
            f" FROM ({sql}) h LEFT JOIN ({days}) a USING (profile_id)")


def _rate_selects(lookback_days: Sequence[int], event_types: Sequence[str],
                  active_day_channels: Sequence[str], history: Sequence[str]) -> list[str]:
    """Rates over the observed days (`hist`) and the gap statistics of the whole history."""
    rates = [f"count_{safe_name(t)}_{int(d)}d / greatest(least({int(d)}, hist), 1.0) AS per_day_{safe_name(t)}_{int(d)}d"
             for t in event_types for d in lookback_days]
    rates += [f"active_days_{safe_name(c)}_{int(d)}d / greatest(least({int(d)}, hist), 1.0)"
              f" AS active_share_{safe_name(c)}_{int(d)}d" for c in active_day_channels for d in lookback_days]
    for event_type in history:
        n = safe_name(event_type)
        gap = f"(days_since_first_{n} - days_since_{n}) / nullif(days_{n}_all - 1, 0)"
        rates += [f"{gap} AS mean_gap_{n}",
                  f"days_since_{n} / nullif({gap}, 0) AS recency_gap_ratio_{n}",
                  f"days_{n}_all / greatest(days_since_first_event, 1.0) AS rate_{n}_all"]
    return rates


def categories_of(frame: pd.DataFrame, columns: Sequence[str]) -> dict[str, list[str]]:
    """Sorted category values of the given string/bool columns (fixed at training time)."""
    return {c: sorted(map(str, pd.unique(frame[c].dropna()))) for c in columns}


def categorical_columns(frame: pd.DataFrame, exclude: Sequence[str] = ()) -> list[str]:
    """Columns LightGBM should treat as categorical: strings and booleans."""
    return [c for c in frame.columns if c not in exclude
            and (pd.api.types.is_bool_dtype(frame[c]) or not pd.api.types.is_numeric_dtype(frame[c]))]


def encode(frame: pd.DataFrame, categories: Mapping[str, Sequence[str]]) -> pd.DataFrame:
    """Cast categorical columns to pandas categories with the training-time values.

    Values not seen at training time become missing rather than a new code, so LightGBM treats
    them like any unknown value instead of confusing them with another category.
    """
    out = frame.copy()
    for column, values in categories.items():
        out[column] = pd.Categorical.from_codes(category_codes(out[column], values), categories=list(values))
    return out


def category_codes(column: pd.Series, categories: Sequence[str]) -> np.ndarray:
    """Positions of the values in the training-time category list; -1 for unknown or missing."""
    text = column.astype("string")
    codes = pd.Index(list(categories), dtype=object).get_indexer(text.astype(object))
    codes[text.isna().to_numpy()] = -1
    return codes


def feature_matrix(frame: pd.DataFrame, columns: Sequence[str],
                   categories: Mapping[str, Sequence[str]]) -> np.ndarray:
    """The columns as a float matrix in LightGBM's own encoding of pandas categoricals.

    A categorical column becomes its code in the training-time category list (unknown or missing
    values become NaN, as `encode` + LightGBM's pandas path would make them); other columns are
    cast to float. Predicting on this matrix gives exactly the predictions on `encode(frame)`.
    """
    out = np.empty((len(frame), len(columns)))
    for j, column in enumerate(columns):
        if column in categories:
            codes = category_codes(frame[column], categories[column])
            out[:, j] = np.where(codes < 0, np.nan, codes)
        else:
            out[:, j] = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    return out
