"""Read event datasets into the data contract (`offerflow.core.schema.EVENT_SCHEMA`), losing nothing.

Formats, chosen by file extension, each read by its own module (see its docstring):

* ``.csv``: `offerflow.ingest.csv_events` (pyarrow in chunks, the `csv` module where a line is odd).
* ``.parquet`` / ``.pq``, or a directory of them read as one dataset: `offerflow.ingest.parquet_events`.
* ``.ndjson`` / ``.jsonl`` / ``.json``: one JSON object per line, flat or an XDM Experience
  Event, decided per line: `offerflow.ingest.ndjson_events` (its docstring has the XDM mapping table).

What they share (provenance column names, `MAX_LINE_BYTES`, `EventFileError`, the column checks)
lives in `offerflow.ingest.file_readers`; this module dispatches on the format and gives every frame the
layout below. Callers import from here.

The frame returned has the `EVENT_COLUMNS` in order, then every other column the file had (kept,
in file order), then ``_source_file`` (the path as given; for a directory dataset the path of the
file inside it), ``_source_line`` (int64: the 1-based physical line in CSV/NDJSON, the CSV header
being line 1; the 0-based row number + 1 in Parquet) and ``_parse_error`` (str, "" when fine;
present for every format, always "" for Parquet). A
file column that has one of these three names is renamed ``<name>_in_file``. Optional contract
columns the file does not have are filled with nulls and named in ``frame.attrs[ABSENT_COLUMNS]``
(CSV and Parquet; an NDJSON key missing from a line is a null, not a missing column), so that
validation can warn about them.

Reading does not judge rows (`offerflow` validation does, and quarantines them), so nothing is
dropped or silently coerced: ``timestamp`` stays the raw string (CSV/NDJSON) or as stored
(Parquet); ``value``/``propensity`` are float64 only when every value in the frame (or batch)
parses as a float (Python ``float()`` rules), else the raw strings. A CSV line with the wrong
number of fields is kept (missing fields null, ``_parse_error`` says so), an NDJSON line that is
not valid JSON becomes a row with null contract columns and ``_parse_error`` set, and a line
longer than `MAX_LINE_BYTES` becomes such a row without being held in memory.
`coerce_event_types` (in `offerflow.ingest.coercion`, re-exported here) parses the types and
says, per row, what does not parse.

Whole-file problems raise `EventFileError`, one line ``"<path>: <problem>"``.

``profile_field``/``value_field`` are dotted paths into NDJSON objects (XDM and flat lines; there
they win over the line's own ``profile_id``/``value``). For CSV and Parquet they name a column
whose values become ``profile_id``/``value`` (the column itself stays as an extra column); a file
that has both that column and a ``profile_id``/``value`` column is an error.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from offerflow.ingest import xdm
from offerflow.ingest.coercion import NUMERIC_COLUMNS, coerce_event_types, numbers_or_raw
from offerflow.ingest.csv_events import _csv_pieces
from offerflow.ingest.file_readers import (
    MAX_LINE_BYTES,
    PARSE_ERROR,
    PROVENANCE_COLUMNS,
    SOURCE_FILE,
    SOURCE_LINE,
    EventFileError,
)
from offerflow.ingest.ndjson_events import _ndjson_pieces
from offerflow.ingest.parquet_events import _parquet_pieces
from offerflow.core.schema import EVENT_COLUMNS

__all__ = ["ABSENT_COLUMNS", "EventFileError", "coerce_event_types", "read_events", "read_events_batches", "FORMATS",
           "MAX_LINE_BYTES", "PROVENANCE_COLUMNS", "SOURCE_FILE", "SOURCE_LINE", "PARSE_ERROR"]

#: `frame.attrs` key: the contract columns the file lacked (filled with nulls).
ABSENT_COLUMNS = "absent_columns"
FORMATS = {
    ".csv": "csv", ".parquet": "parquet", ".pq": "parquet",
    ".ndjson": "ndjson", ".jsonl": "ndjson", ".json": "ndjson",
}


def read_events(
    path: str | Path,
    *,
    identity_namespace: str = "ECID",
    profile_field: str | None = None,
    value_field: str | None = None,
) -> pd.DataFrame:
    """The whole event file (or Parquet directory) as one frame; see the module docstring."""
    pieces = list(_raw_pieces(path, identity_namespace, profile_field, value_field, None))
    rows = [p for p in pieces if len(p)] or pieces[:1]  # no rows: keep the file's columns
    return _finalize(pd.concat(rows, ignore_index=True) if len(rows) > 1 else (rows or [None])[0])


def read_events_batches(
    path: str | Path,
    *,
    batch_rows: int = 1_000_000,
    identity_namespace: str = "ECID",
    profile_field: str | None = None,
    value_field: str | None = None,
) -> Iterator[pd.DataFrame]:
    """`read_events` lazily, in frames of at most `batch_rows` rows (one empty frame for no rows).

    Whole-file checks (existence, header, required columns) happen on the first ``next()``;
    a problem found further in (e.g. invalid UTF-8) raises `EventFileError` after earlier batches.
    ``value``/``propensity`` are float64 or raw strings per batch.
    """
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be at least 1, got {batch_rows}")
    raw = _raw_pieces(path, identity_namespace, profile_field, value_field, batch_rows)
    emitted = False
    for batch in _rebatch(raw, batch_rows):
        emitted = True
        yield _finalize(batch)
    if not emitted:
        yield _finalize(None)


# --- format dispatch and the shared frame layout -----------------------------------------------


def _raw_pieces(path: str | Path, namespace: str, profile_field: str | None, value_field: str | None,
                batch_rows: int | None) -> Iterator[pd.DataFrame]:
    label = str(path)
    path = Path(path)
    if not path.exists():
        raise EventFileError(f"{label}: file not found")
    if path.is_dir():
        return _parquet_pieces(label, path, profile_field, value_field, batch_rows)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        shown = f"'{path.suffix}'" if path.suffix else "(no extension)"
        raise EventFileError(f"{label}: unknown format {shown} (expected .csv, .parquet, .ndjson)")
    if path.stat().st_size == 0:
        raise EventFileError(f"{label}: empty file")
    if fmt == "csv":
        return _csv_pieces(label, path, profile_field, value_field)
    if fmt == "parquet":
        return _parquet_pieces(label, path, profile_field, value_field, batch_rows)
    return _ndjson_pieces(label, path, namespace, xdm.split_path(profile_field), xdm.split_path(value_field))


def _rebatch(pieces: Iterable[pd.DataFrame], rows: int) -> Iterator[pd.DataFrame]:
    buffer: list[pd.DataFrame] = []
    count, template, emitted = 0, None, False
    for piece in pieces:
        if not len(piece):
            template = piece if template is None else template
            continue
        buffer.append(piece)
        count += len(piece)
        while count >= rows:
            joined = pd.concat(buffer, ignore_index=True) if len(buffer) > 1 else buffer[0]
            yield joined.iloc[:rows]
            emitted = True
            rest = joined.iloc[rows:]
            buffer, count = ([rest] if len(rest) else []), len(rest)
    if count:
        yield pd.concat(buffer, ignore_index=True) if len(buffer) > 1 else buffer[0]
    elif not emitted and template is not None:
        yield template


def _finalize(raw: pd.DataFrame | None) -> pd.DataFrame:
    """Raw columns -> contract columns in order, extras, provenance; numbers decided here."""
    raw = pd.DataFrame() if raw is None else raw.reset_index(drop=True)
    n = len(raw)
    out: dict[str, Any] = {}
    for name in EVENT_COLUMNS:
        if name not in raw:
            dtype = "float64" if name in NUMERIC_COLUMNS else "str"
            out[name] = pd.Series(np.nan, index=raw.index, dtype=dtype)
        elif name in NUMERIC_COLUMNS:
            out[name] = numbers_or_raw(raw[name])
        elif raw[name].dtype == object:
            out[name] = raw[name].astype("str")
        else:
            out[name] = raw[name]
    for name in raw.columns:
        if name not in out and name not in PROVENANCE_COLUMNS:
            out[name] = raw[name]
    for name, dtype in ((SOURCE_FILE, "str"), (SOURCE_LINE, "int64")):
        out[name] = (raw[name] if name in raw else pd.Series([], dtype=dtype)).astype(dtype)
    errors = raw[PARSE_ERROR] if PARSE_ERROR in raw else pd.Series("", index=raw.index, dtype="str")
    out[PARSE_ERROR] = errors.fillna("").astype("str")
    frame = pd.DataFrame(out, index=pd.RangeIndex(n))
    frame.attrs[ABSENT_COLUMNS] = [name for name in EVENT_COLUMNS if name not in raw]
    return frame
