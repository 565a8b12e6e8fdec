"""Table helpers of the ranking store (`offerflow.core.store`): conforming a table to its kind's
schema, sorting a ranking table by (profile_id, rank) and the k-way merge of sorted ranking parts
into one Parquet file. Only `offerflow.core.store` uses them."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from offerflow.core.schema import POSTERIOR_SCHEMA, RANKING_SCHEMA
from offerflow.core.store_files import StoreError

if TYPE_CHECKING:
    import pandas as pd

KIND_SCHEMAS: dict[str, pa.Schema] = {"ranking": RANKING_SCHEMA, "posterior": POSTERIOR_SCHEMA}


def _castable(source: pa.DataType, target: pa.DataType) -> bool:
    """Strings from any string type, numbers from any number (the safe cast then checks the values);
    all-null columns pass here to fail the null check with a clearer message."""
    source = source.value_type if pa.types.is_dictionary(source) else source
    if pa.types.is_null(source) or source == target:
        return True
    if pa.types.is_string(target):
        return source in (pa.large_string(), pa.string_view())
    numeric = (pa.types.is_integer, pa.types.is_floating)
    return any(f(target) for f in numeric) and any(f(source) for f in numeric)


def conform(table: pa.Table | pd.DataFrame, kind: str) -> pa.Table:
    """`table` with exactly the columns and types of the kind's schema, or StoreError."""
    schema = KIND_SCHEMAS[kind]
    pd = sys.modules.get("pandas")  # a DataFrame exists only once something imported pandas
    if pd is not None and isinstance(table, pd.DataFrame):
        try:
            table = pa.Table.from_pandas(table, preserve_index=False)
        except (pa.ArrowException, TypeError, ValueError) as exc:
            raise StoreError(f"{kind} table: cannot convert the DataFrame to Arrow: {exc}".split("\n")[0]) from None
    elif not isinstance(table, pa.Table):
        raise StoreError(f"{kind} table: expected a pyarrow Table or pandas DataFrame, got {type(table).__name__}")
    names = table.column_names
    missing, extra = [n for n in schema.names if n not in names], [n for n in names if n not in schema.names]
    if missing or extra or len(set(names)) != len(names):
        raise StoreError(f"{kind} table: columns {names} do not match {schema.names} "
                         f"(missing {missing}, unexpected {extra})")
    columns = []
    for fld in schema:
        column = table.column(fld.name)
        if not _castable(column.type, fld.type):
            raise StoreError(f"{kind} table: column '{fld.name}' has type {column.type}, expected {fld.type}")
        try:
            column = column.cast(fld.type, safe=True)
        except pa.ArrowException as exc:
            reason = str(exc).split("\n")[0] or type(exc).__name__
            raise StoreError(f"{kind} table: column '{fld.name}' cannot be cast to {fld.type}: {reason}") from None
        if column.null_count:
            raise StoreError(f"{kind} table: column '{fld.name}' has {column.null_count} null values")
        if pa.types.is_floating(fld.type) and (nans := pc.sum(pc.is_nan(column)).as_py() or 0):
            raise StoreError(f"{kind} table: column '{fld.name}' has {nans} NaN values")
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=schema)


def _ordered(table: pa.Table) -> np.ndarray:
    """Shape (n - 1,): True where row i + 1 comes strictly after row i in (profile_id, rank)."""
    n, pid, rank = table.num_rows, table.column("profile_id"), table.column("rank")
    p0, p1, r0, r1 = pid.slice(0, n - 1), pid.slice(1), rank.slice(0, n - 1), rank.slice(1)
    return pc.or_(pc.greater(p1, p0), pc.and_(pc.equal(p1, p0), pc.greater(r1, r0))).to_numpy(zero_copy_only=False)


def sorted_ranking(table: pa.Table) -> pa.Table:
    """The ranking table sorted by (profile_id, rank); StoreError on bad or duplicate ranks."""
    if table.num_rows and pc.min(table.column("rank")).as_py() < 1:
        raise StoreError("ranking table: column 'rank' must be >= 1")
    if table.num_rows < 2 or _ordered(table).all():
        return table
    table = table.sort_by([("profile_id", "ascending"), ("rank", "ascending")])
    bad = np.flatnonzero(~_ordered(table))
    if bad.size:
        row = table.slice(int(bad[0]), 1).to_pylist()[0]
        raise StoreError(f"ranking table: {bad.size} duplicate (profile_id, rank) pairs, "
                         f"e.g. profile '{row['profile_id']}' rank {row['rank']}")
    return table


#: Rows per Parquet row group of a table written whole. Ranking tables are sorted by profile, so each
#: group's min/max statistics let a read of a few profiles (`offerflow decide`) decode one group.
ROW_GROUP_ROWS = 32_768


def write_table(table: pa.Table, path: Path) -> int:
    pq.write_table(table, path, row_group_size=ROW_GROUP_ROWS)
    return table.num_rows


def _key(table: pa.Table, row: int) -> tuple[str, int]:
    return table.column("profile_id")[row].as_py(), table.column("rank")[row].as_py()


def merge_sorted_parts(parts: list[Path], path: Path, batch_rows: int) -> int:
    """K-way merge of sorted ranking parts into one Parquet file at `path`, round by round.

    A round takes, from every part's buffered batch, the rows whose profile_id is <= the smallest
    last-buffered profile_id among parts with unread batches (nothing later can sort before it),
    sorts those rows (a few batches) and appends them as a row group. Returns the row count."""
    readers = [pq.ParquetFile(p).iter_batches(batch_size=batch_rows) for p in parts]
    buffers: list[pa.Table | None] = [None] * len(parts)
    pending = [True] * len(parts)  # the part may have unread batches
    written, last = 0, None
    with pq.ParquetWriter(path, RANKING_SCHEMA) as writer:
        while True:
            for i, reader in enumerate(readers):
                while pending[i] and (buffers[i] is None or buffers[i].num_rows == 0):
                    batch = next(reader, None)
                    if batch is None:
                        pending[i] = False
                    else:
                        buffers[i] = conform(pa.Table.from_batches([batch]), "ranking")
                        if buffers[i].num_rows and pc.min(buffers[i].column("rank")).as_py() < 1:
                            raise StoreError(f"ranking part {parts[i]}: column 'rank' must be >= 1")
            live = [b for b in buffers if b is not None and b.num_rows]
            if not live:
                break
            bounds = [b.column("profile_id")[-1] for b, more in zip(buffers, pending)
                      if more and b is not None and b.num_rows]
            bound = min(bounds, key=lambda s: s.as_py()) if bounds else None
            taken = []
            for i, buffer in enumerate(buffers):
                if buffer is None or buffer.num_rows == 0:
                    continue
                if bound is None:
                    n_take = buffer.num_rows
                else:  # rows are sorted: the first row past the bound ends the take
                    n_take = int(pc.sum(pc.less_equal(buffer.column("profile_id"), bound)).as_py() or 0)
                taken.append(buffer.slice(0, n_take))
                buffers[i] = buffer.slice(n_take)
            chunk = pa.concat_tables(taken).combine_chunks()
            chunk = chunk.sort_by([("profile_id", "ascending"), ("rank", "ascending")])
            if chunk.num_rows == 0:
                continue
            bad = np.flatnonzero(~_ordered(chunk)) if chunk.num_rows > 1 else np.empty(0, int)
            first = _key(chunk, 0)
            if bad.size or (last is not None and first <= last):
                pid, rank = _key(chunk, int(bad[0]) + 1) if bad.size else first
                raise StoreError(f"ranking parts: profile '{pid}' rank {rank} is duplicated or out of order "
                                 "(each part must be sorted by profile_id, rank, and hold its own profiles)")
            writer.write_table(chunk, row_group_size=ROW_GROUP_ROWS)
            written += chunk.num_rows
            last = _key(chunk, chunk.num_rows - 1)
    return written
