"""The rows of a few ids from a Parquet file, for one-shot reads (`offerflow decide`): the file's
row-group statistics pick the groups that may hold them, one thread decodes those, a filter keeps
the ids' rows. The ranking store writes its tables sorted by profile in 32,768-row groups, so one
profile is one group; a profiles file written in another order still reads whole, then filtered.

`pyarrow.dataset` (what `pq.read_table(filters=...)` goes through) gives the same rows; importing
and planning it cost ~15-20 ms of a ~1 s command, more than the read itself."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from offerflow.core.columns import empty_table


def _groups_that_may_hold(file: pq.ParquetFile, column: int, low: str, high: str) -> list[int]:
    groups = []
    for i in range(file.metadata.num_row_groups):
        stats = file.metadata.row_group(i).column(column).statistics
        if stats is None or not stats.has_min_max or not (stats.max < low or stats.min > high):
            groups.append(i)
    return groups


def read_rows_of(path: Path | str, column: str, ids: pa.Array) -> tuple[pa.Table, int]:
    """(the rows whose `column` is in `ids`, the file's row count). Raises what pyarrow raises
    for an unreadable file and KeyError when the file has no such column."""
    file = pq.ParquetFile(path)
    index = file.schema_arrow.get_field_index(column)
    if index < 0:
        raise KeyError(column)
    if len(ids) == 0:
        return empty_table(file.schema_arrow), file.metadata.num_rows
    low, high = pc.min(ids).as_py(), pc.max(ids).as_py()
    table = file.read_row_groups(_groups_that_may_hold(file, index, low, high), use_threads=False)
    return table.filter(pc.is_in(table.column(column), value_set=ids)), file.metadata.num_rows
