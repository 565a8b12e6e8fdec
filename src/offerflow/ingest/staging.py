"""Event batches staged on disk, and the checks that need every row at once, in DuckDB.

Validation streams: each batch gets its row-level reasons in pandas (`offerflow.ingest.validation`) and
is written here as one Parquet file, so at most one batch is in Python memory. The cross-row
checks then run as SQL over the staged files, with DuckDB's memory capped and spilling to the
stage directory:

* duplicate event ids: later copies of an identical row (``event_id: duplicate (identical
  row)``), and every row of an id whose rows differ (``event_id: duplicate with conflicting
  content``). Content is every contract column (typed) and every extra column;
* clicks that have no accepted display of the same ``(decision_id, offer_id)`` or, without a
  decision id, of the same profile, offer and placement at most 24 h before them (an ASOF join);
* the per-offer conversion table, the row counts, the reason counts and the sample that the
  Great Expectations suites run on.

The accepted rows and the quarantine are then written from SQL in Arrow batches, never as one
frame. Staged row layout: ``_row`` (0-based input position), the contract columns typed as in
`EVENT_SCHEMA` (all nullable), ``raw.<column>`` (text as it came in, for ``timestamp``/``value``/
``propensity`` when the input was not already typed), ``extra.<name>`` (every other input column,
as text), ``_source_file``, ``_source_line``, ``_parse_error`` and ``_reasons`` (the row-level
reasons, "" when none).

Batches staged as *logged* (the displays offerflow's decision log holds) join the events, less
those whose event id the events have too (an export that carries offerflow's displays under their
logged ids has each display once) and those after the events' last timestamp: the log is written
as decisions are made, an export comes later, so a display after its end waits for the run whose
export reaches it (read now, it would end the data before the clicks and purchases that follow it).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from offerflow.core.schema import EVENT_COLUMNS, EVENT_SCHEMA

RAW_COLUMNS = ("timestamp", "value", "propensity")
CLICK_MATCH_HOURS = 24
DUPLICATE_IDENTICAL = "event_id: duplicate (identical row)"
DUPLICATE_CONFLICTING = "event_id: duplicate with conflicting content"
#: Reason kinds: quoted values and "(profile ...)" details removed, so counts group by kind.
REASON_DETAIL_PATTERN = r" ?'[^']*'| ?\(profile [^)]*\)"
_STAGE_FIELDS = [pa.field(f.name, f.type) for f in EVENT_SCHEMA]  # all nullable while staged
_OUTPUT_BATCH_ROWS = 262_144


def q(name: str) -> str:
    """A quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def _missing(column: str) -> str:
    return f"({q(column)} IS NULL OR {q(column)} = '')"


def _text_array(series: pd.Series) -> pa.Array:
    text = series if series.dtype == "str" else series.astype("str")
    return pa.Array.from_pandas(text, type=pa.string())


class EventStage:
    """Staged event batches in `directory` (created; removed by `close`) and one DuckDB database.

    `memory_limit_mib` caps DuckDB; joins, sorts and aggregations beyond it spill to the
    directory. Use as a context manager.
    """

    def __init__(self, directory: Path, *, memory_limit_mib: int = 3072, threads: int = 2) -> None:
        self.directory = Path(directory)
        if self.directory.exists():
            shutil.rmtree(self.directory)
        self.directory.mkdir(parents=True)
        self.staged_rows = 0  # rows added so far, logged ones included (they number `_row`)
        self.events_rows = 0  # of which from the events
        self._judged_rows: int | None = None
        self.files: list[Path] = []
        self.logged_files: list[Path] = []
        self.extras: dict[str, None] = {}  # ordered set of extra input columns
        self.present: set[str] = set()  # contract columns that some batch had
        self._memory = memory_limit_mib
        self._threads = threads
        self._con: duckdb.DuckDBPyConnection | None = None

    def __enter__(self) -> "EventStage":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None
        shutil.rmtree(self.directory, ignore_errors=True)

    # -- staging -------------------------------------------------------------------------------

    @property
    def rows(self) -> int:
        """The rows judged: every staged row of the events, and the logged ones that the events
        neither carry nor end before (counting those runs the cross-row checks: stage everything first)."""
        if not self.logged_files:
            return self.staged_rows
        if self._judged_rows is None:
            self._judged_rows = self._scalar("SELECT count(*) FROM staged")
        return self._judged_rows

    def logged_counts(self) -> tuple[int, int, int]:
        """Logged displays: (judged, read once already as rows of the events, after the events' end)."""
        if not self.logged_files or not self.files:
            return 0, 0, self.staged_rows - self.events_rows
        judged = self.rows - self.events_rows
        in_events = self._scalar(f"SELECT count(*) FROM {self._parquet(self.logged_files)} "
                                 f"WHERE event_id IN (SELECT event_id FROM {self._parquet(self.files)})")
        return judged, in_events, self.staged_rows - self.events_rows - judged - in_events

    def add(self, original: pd.DataFrame, typed: pd.DataFrame, reasons: np.ndarray,
            extras: list[str], logged: bool = False) -> None:
        """Stage one batch: `typed` has the contract columns typed (absent ones as nulls) and
        the provenance columns; `original` the same rows as they came in; `reasons` the
        row-level reasons ("" for none); `extras` the non-contract input columns; `logged`:
        displays of the decision log (module docstring)."""
        if self._con is not None:
            raise RuntimeError("cannot add batches after the cross-row checks ran")
        n = len(typed)
        self.present.update(c for c in EVENT_COLUMNS if c in original.columns)
        self.extras.update(dict.fromkeys(extras))
        arrays: dict[str, pa.Array] = {"_row": pa.array(np.arange(self.staged_rows, self.staged_rows + n,
                                                                  dtype="int64"))}
        for field in _STAGE_FIELDS:
            column = typed[field.name]
            if field.type == pa.string():
                arrays[field.name] = _text_array(column)
            else:
                arrays[field.name] = pa.Array.from_pandas(column).cast(field.type, safe=False)
        for name in RAW_COLUMNS:
            raw = original[name] if name in original.columns else None
            typed_already = raw is None or (
                pd.api.types.is_datetime64_any_dtype(raw) if name == "timestamp"
                else pd.api.types.is_numeric_dtype(raw) and not pd.api.types.is_bool_dtype(raw))
            arrays[f"raw.{name}"] = (pa.nulls(n, pa.string()) if typed_already else _text_array(raw))
        for name in extras:
            arrays[f"extra.{name}"] = _text_array(typed[name])
        arrays["_source_file"] = _text_array(typed["_source_file"])
        arrays["_source_line"] = pa.array(typed["_source_line"].to_numpy(dtype="int64"))
        parse_error = typed["_parse_error"] if "_parse_error" in typed.columns else pd.Series("", index=typed.index)
        arrays["_parse_error"] = _text_array(parse_error.fillna("").astype("str"))
        arrays["_reasons"] = pa.array(reasons, type=pa.string())
        files = self.logged_files if logged else self.files
        path = self.directory / f"{'logged' if logged else 'batch'}-{len(files):05d}.parquet"
        pq.write_table(pa.table(arrays), path, compression="zstd")
        files.append(path)
        self.staged_rows += n
        self.events_rows += 0 if logged else n

    # -- cross-row checks ----------------------------------------------------------------------

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            self._con = self._check()
        return self._con

    def _check(self) -> duckdb.DuckDBPyConnection:
        con = self._connect_staged()
        self._flag_duplicates(con)
        self._flag_clicks(con)
        self._combine_flags(con)
        return con

    def _connect_staged(self) -> duckdb.DuckDBPyConnection:
        """A configured connection with the ``staged`` view (or empty table) over the batch files."""
        con = duckdb.connect(str(self.directory / "stage.duckdb"))
        spill = self.directory / "spill"
        for setting in ("SET TimeZone = 'UTC'", f"SET memory_limit = '{self._memory}MB'",
                        f"SET temp_directory = '{str(spill).replace(chr(39), chr(39) * 2)}'",
                        f"SET threads = {self._threads}", "SET preserve_insertion_order = false"):
            con.execute(setting)
        if self.files and self.logged_files:
            events = self._parquet(self.files)
            con.execute(f"""
                CREATE VIEW staged AS SELECT * FROM {events}
                UNION ALL BY NAME
                SELECT * FROM {self._parquet(self.logged_files)} logged
                WHERE logged.timestamp <= (SELECT max(timestamp) FILTER (WHERE _reasons = '') FROM {events})
                  AND (logged.event_id IS NULL
                       OR logged.event_id NOT IN (SELECT event_id FROM {events} WHERE event_id IS NOT NULL))""")
        elif self.files:
            con.execute(f"CREATE VIEW staged AS SELECT * FROM {self._parquet(self.files)}")
        else:  # no batch at all: an empty table with the staged layout
            empty = pa.schema([pa.field("_row", pa.int64()), *_STAGE_FIELDS,
                               *[pa.field(f"raw.{c}", pa.string()) for c in RAW_COLUMNS],
                               pa.field("_source_file", pa.string()), pa.field("_source_line", pa.int64()),
                               pa.field("_parse_error", pa.string()), pa.field("_reasons", pa.string())])
            con.register("empty_stage", empty.empty_table())
            con.execute("CREATE TABLE staged AS SELECT * FROM empty_stage")
        return con

    def _flag_duplicates(self, con: duckdb.DuckDBPyConnection) -> None:
        """Tables ``duplicate_ids`` and ``flags_duplicates`` (identical / conflicting copies)."""
        content = ", ".join(q(c) for c in [*EVENT_COLUMNS, *(f"extra.{e}" for e in self.extras)])
        con.execute(f"""
            CREATE TABLE duplicate_ids AS
            SELECT event_id, count(*) AS copies FROM staged WHERE NOT {_missing('event_id')}
            GROUP BY event_id HAVING count(*) > 1""")
        con.execute(f"""
            CREATE TABLE flags_duplicates AS
            WITH copies AS (
                SELECT _row, event_id,
                       row_number() OVER (PARTITION BY {content} ORDER BY _row) AS copy,
                       dense_rank() OVER (PARTITION BY event_id ORDER BY {content}) AS variant
                FROM staged WHERE event_id IN (SELECT event_id FROM duplicate_ids)),
            variants AS (SELECT event_id, max(variant) AS n FROM copies GROUP BY event_id)
            SELECT _row, concat_ws('; ', CASE WHEN copy > 1 THEN '{DUPLICATE_IDENTICAL}' END,
                                         CASE WHEN n > 1 THEN '{DUPLICATE_CONFLICTING}' END) AS reason
            FROM copies JOIN variants USING (event_id) WHERE copy > 1 OR n > 1""")

    @staticmethod
    def _flag_clicks(con: duckdb.DuckDBPyConnection) -> None:
        """Table ``flags_clicks``: clicks without a matching display."""
        # Clicks are judged against displays that passed every other check.
        con.execute("""
            CREATE VIEW good_displays AS
            SELECT decision_id, offer_id, profile_id, placement_id, timestamp FROM staged
            WHERE event_type = 'display' AND _reasons = ''
              AND _row NOT IN (SELECT _row FROM flags_duplicates)""")
        clicks = f"event_type = 'click' AND NOT {_missing('offer_id')}"
        con.execute(f"""
            CREATE TABLE flags_clicks AS
            SELECT c._row, 'click: no matching display for decision ''' || c.decision_id
                   || ''' (profile ' || coalesce(c.profile_id, '?') || ', offer ' || c.offer_id || ')' AS reason
            FROM staged c
            WHERE {clicks} AND NOT {_missing('decision_id')}
              AND NOT EXISTS (SELECT 1 FROM good_displays d
                              WHERE d.decision_id = c.decision_id AND d.offer_id = c.offer_id)""")
        con.execute(f"""
            INSERT INTO flags_clicks
            WITH c AS (SELECT _row, profile_id, offer_id, placement_id, timestamp FROM staged
                       WHERE {clicks} AND {_missing('decision_id')}),
            keyed AS (SELECT * FROM c WHERE NOT {_missing('profile_id')} AND NOT {_missing('placement_id')}
                      AND timestamp IS NOT NULL),
            matched AS (
                SELECT k._row FROM keyed k ASOF JOIN good_displays d
                  ON k.profile_id = d.profile_id AND k.offer_id = d.offer_id
                 AND k.placement_id = d.placement_id AND k.timestamp >= d.timestamp
                WHERE k.timestamp - d.timestamp <= INTERVAL {CLICK_MATCH_HOURS} HOUR)
            SELECT _row, 'click: no matching display within {CLICK_MATCH_HOURS} h before it (profile '
                   || coalesce(profile_id, '?') || ', offer ' || offer_id || ', placement '
                   || coalesce(placement_id, '?') || ')'
            FROM c WHERE _row NOT IN (SELECT _row FROM matched)""")

    @staticmethod
    def _combine_flags(con: duckdb.DuckDBPyConnection) -> None:
        """Table ``flags`` (all reasons per row) and view ``judged`` (staged rows with their reasons)."""
        con.execute("""
            CREATE TABLE flags AS
            SELECT _row, string_agg(reason, '; ' ORDER BY step) AS reason FROM (
                SELECT _row, reason, 0 AS step FROM flags_duplicates
                UNION ALL SELECT _row, reason, 1 AS step FROM flags_clicks) GROUP BY _row""")
        con.execute("""
            CREATE VIEW judged AS
            SELECT s.*, concat_ws('; ', nullif(s._reasons, ''), f.reason) AS reasons
            FROM staged s LEFT JOIN flags f USING (_row)""")

    # -- figures -------------------------------------------------------------------------------

    def counts(self) -> tuple[int, int]:
        """(accepted, quarantined) rows."""
        quarantined = self._scalar("SELECT count(*) FROM staged WHERE _reasons <> ''") + self._scalar(
            "SELECT count(*) FROM flags f JOIN staged s USING (_row) WHERE s._reasons = ''")
        return self.rows - quarantined, quarantined

    def duplicate_id_rows(self) -> int:
        """Rows whose event id some other row also has (every copy counts)."""
        return self._scalar("SELECT coalesce(sum(copies), 0) FROM duplicate_ids")

    def reason_counts(self) -> pd.Series:
        """Quarantined rows per reason kind, most frequent first (ties by name)."""
        pattern = REASON_DETAIL_PATTERN.replace("'", "''")
        frame = self._frame(f"""
            SELECT trim(regexp_replace(r, '{pattern}', '', 'g')) AS kind, count(*) AS rows
            FROM (SELECT unnest(string_split(reasons, '; ')) AS r FROM judged WHERE reasons <> '')
            GROUP BY kind ORDER BY rows DESC, kind""")
        return pd.Series(frame["rows"].to_numpy(dtype="int64"), index=frame["kind"].astype(str).tolist(),
                         dtype="int64")

    def conversion_table(self) -> pd.DataFrame:
        """Per offer of the accepted rows: displays, clicks and clicks / displays (0 without clicks)."""
        frame = self._frame("""
            SELECT offer_id, count(*) FILTER (WHERE event_type = 'display') AS displays,
                   count(*) FILTER (WHERE event_type = 'click') AS clicks
            FROM judged WHERE reasons = '' AND event_type IN ('display', 'click') AND offer_id IS NOT NULL
            GROUP BY offer_id ORDER BY offer_id""")
        frame = frame.astype({"displays": "int64", "clicks": "int64"})
        with np.errstate(divide="ignore", invalid="ignore"):
            rate = frame["clicks"].to_numpy(float) / frame["displays"].to_numpy(float)
        return frame.assign(conversion_rate=np.where(frame["clicks"] == 0, 0.0, rate))

    def sample(self, rows: int) -> pd.DataFrame:
        """Every row when there are at most `rows`, else a deterministic pseudo-random sample of
        about `rows` (a hash of the row position): the input columns, typed, for the
        expectation suite."""
        columns = [q(c) for c in EVENT_COLUMNS if c in self.present]
        columns += [f"{q('extra.' + e)} AS {q(e)}" for e in self.extras]
        where = "" if self.rows <= rows else f"WHERE hash(_row) % {-(-self.rows // rows)} = 0"
        if not columns:
            return pd.DataFrame(index=pd.RangeIndex(self._scalar(f"SELECT count(*) FROM staged {where}")))
        return self._frame(f"SELECT {', '.join(columns)} FROM staged {where} ORDER BY _row")

    # -- outputs -------------------------------------------------------------------------------

    def accepted_batches(self, *, sort: bool) -> Iterator[pa.RecordBatch]:
        """The accepted rows with the contract columns: sorted by time and id when `sort`, else
        in input order with the extra columns (text) after them."""
        if sort:
            sql = (f"SELECT {', '.join(map(q, EVENT_COLUMNS))} FROM judged WHERE reasons = ''"
                   " ORDER BY timestamp, event_id")
        else:
            extras = [f"{q('extra.' + e)} AS {q(e)}" for e in self.extras]
            sql = (f"SELECT {', '.join([*map(q, EVENT_COLUMNS), *extras])} FROM judged"
                   " WHERE reasons = '' ORDER BY _row")
        yield from self._batches(sql)

    def quarantine_batches(self, run_id: str) -> Iterator[pa.RecordBatch]:
        """The quarantined rows as they came in (contract columns as text), in input order, with
        their extra columns, provenance, ``reasons`` and ``run_id``."""
        columns = []
        for name in EVENT_COLUMNS:
            if name == "timestamp":
                typed = "strftime(timestamp, '%Y-%m-%dT%H:%M:%S.%fZ')"
            else:
                typed = f"CAST({q(name)} AS VARCHAR)"
            raw = f"{q('raw.' + name)}, " if name in RAW_COLUMNS else ""
            columns.append(f"coalesce({raw}{typed}) AS {q(name)}")
        reserved = {*EVENT_COLUMNS, "_source_file", "_source_line", "_parse_error", "reasons", "run_id"}
        columns += [f"{q('extra.' + e)} AS {q(e + '_in_file' if e in reserved else e)}" for e in self.extras]
        columns += ["_source_file", "_source_line", "_parse_error", "reasons",
                    "'" + run_id.replace("'", "''") + "' AS run_id"]
        yield from self._batches(f"SELECT {', '.join(columns)} FROM judged WHERE reasons <> '' ORDER BY _row")

    def write(self, batches: Iterator[pa.RecordBatch], path: Path, schema: pa.Schema | None = None) -> int:
        """Write `batches` to one Parquet file at `path` (zstd); returns the rows written."""
        written = 0
        writer = None
        try:
            for batch in batches:
                table = pa.Table.from_batches([batch])
                if schema is not None:
                    table = table.cast(schema)
                if writer is None:
                    writer = pq.ParquetWriter(path, table.schema, compression="zstd")
                writer.write_table(table)
                written += table.num_rows
        finally:
            if writer is not None:
                writer.close()
        return written

    # -- helpers -------------------------------------------------------------------------------

    @staticmethod
    def _parquet(files: list[Path]) -> str:
        listed = ", ".join("'" + str(f).replace("'", "''") + "'" for f in files)
        return f"read_parquet([{listed}], union_by_name = true)"

    def _scalar(self, sql: str) -> int:
        return int(self.con.execute(sql).fetchall()[0][0])

    def _frame(self, sql: str) -> pd.DataFrame:
        return self.con.sql(sql).to_arrow_table().to_pandas()

    def _batches(self, sql: str) -> Iterator[pa.RecordBatch]:
        reader: Any = self.con.sql(sql).to_arrow_reader(_OUTPUT_BATCH_ROWS)
        yielded = False
        for batch in reader:
            if batch.num_rows:
                yielded = True
                yield batch
        if not yielded:  # no rows: one empty batch keeps the columns
            yield pa.RecordBatch.from_pylist([], schema=reader.schema)
