"""Read event datasets into the data contract (`offerflow.schema.EVENT_SCHEMA`), losing nothing.

Formats, chosen by file extension:

* ``.csv``: UTF-8 (a BOM is fine), comma-separated, RFC 4180 quoting, a header line naming the
  columns; an empty field is null. Parsed with pyarrow in 8 MiB chunks; a chunk where some line
  does not give exactly one row (wrong field count, blank line, quoted newline) is bisected and
  its failing part re-parsed with the `csv` module, so every physical line is accounted for
  (a record spanning lines gets the number of its first line; blank lines give no row).
* ``.parquet`` / ``.pq``: one file, or a directory read as one dataset (all ``*.parquet``/``*.pq``
  files below it in sorted order; names starting with ``_`` or ``.`` are skipped; Hive
  ``key=value`` directories become columns when the files lack them).
* ``.ndjson`` / ``.jsonl`` / ``.json``: one JSON object per line, either flat (keys are the
  contract's column names) or an XDM Experience Event (the line has ``eventType`` or
  ``_experience``), decided per line.

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
`coerce_event_types` (in `offerflow.event_coercion`, re-exported here) parses the types and
says, per row, what does not parse.

Whole-file problems raise `EventFileError`, one line ``"<path>: <problem>"``.

XDM mapping (one NDJSON line -> one or more rows):

=================  ==========================================================================
column             taken from
=================  ==========================================================================
event_id           ``_id``; with several rows per event ``<_id>#<k>``, k = 0-based row index
                   within the event (propositions in order, their items in order; a
                   proposition without items counts as one row)
timestamp          ``timestamp`` (raw string)
profile_id         ``identityMap[<identity_namespace>][0].id``, or the dotted ``profile_field``
event_type         ``decisioning.propositionDisplay`` -> display,
                   ``decisioning.propositionInteract`` -> click; otherwise
                   ``_experience.decisioning.propositionEventType`` ``interact == 1`` -> click,
                   ``display == 1`` -> display; any other ``eventType`` passes through as one
                   row with the eventType string (offer, placement, decision null)
offer_id           ``_experience.decisioning.propositions[].items[].id`` (one row per item)
placement_id       ``propositions[].scopeDetails.placement.id``, else ``propositions[].scope``
decision_id        ``propositions[].id``
channel            ``propositions[].scopeDetails.channel``, else ``channel`` (a name or an XDM
                   channel-type URI / ``{"_type": uri}``: ``.../channel-types/web`` -> web,
                   ``inApp`` -> in_app), else "web" when ``web.webPageDetails`` exists
value              the dotted ``value_field``, else ``commerce.order.priceTotal``, else
                   ``commerce.purchases.value``
propensity         ``items[].propensity``, else ``scopeDetails.propensity``, else null
=================  ==========================================================================

An interaction without propositions, or a proposition with no items, gives one row with a null
offer_id and ``_parse_error`` ``XDM: display event has no propositions`` /
``XDM: proposition 'dec-9' has no items``. Other XDM fields are not carried over.

``profile_field``/``value_field`` are dotted paths into NDJSON objects (XDM and flat lines; there
they win over the line's own ``profile_id``/``value``). For CSV and Parquet they name a column
whose values become ``profile_id``/``value`` (the column itself stays as an extra column); a file
that has both that column and a ``profile_id``/``value`` column is an error.
"""

from __future__ import annotations

import csv
import itertools
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from offerflow import xdm
from offerflow.event_coercion import NUMERIC_COLUMNS, coerce_event_types, numbers_or_raw
from offerflow.schema import EVENT_COLUMNS, REQUIRED_EVENT_COLUMNS

__all__ = ["ABSENT_COLUMNS", "EventFileError", "coerce_event_types", "read_events", "read_events_batches", "FORMATS",
           "MAX_LINE_BYTES", "PROVENANCE_COLUMNS", "SOURCE_FILE", "SOURCE_LINE", "PARSE_ERROR"]

SOURCE_FILE = "_source_file"
SOURCE_LINE = "_source_line"
PARSE_ERROR = "_parse_error"
PROVENANCE_COLUMNS: tuple[str, ...] = (SOURCE_FILE, SOURCE_LINE, PARSE_ERROR)
#: `frame.attrs` key: the contract columns the file lacked (filled with nulls).
ABSENT_COLUMNS = "absent_columns"
#: A CSV/NDJSON line longer than this becomes a row flagged in `_parse_error` (never held whole).
MAX_LINE_BYTES = 16 * 2**20
FORMATS = {
    ".csv": "csv", ".parquet": "parquet", ".pq": "parquet",
    ".ndjson": "ndjson", ".jsonl": "ndjson", ".json": "ndjson",
}

_CSV_CHUNK_BYTES = 8 * 2**20
_CSV_PYTHON_BELOW = 256 * 2**10  # a failing span this small is parsed line by line in Python
_NDJSON_PIECE_ROWS = 100_000
_BOM = b"\xef\xbb\xbf"


class EventFileError(ValueError):
    """A whole-file problem: one line naming the file and the problem."""


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


def _rename_reserved(names: list[str]) -> list[str]:
    return [f"{n}_in_file" if n in PROVENANCE_COLUMNS else n for n in names]


def _check_columns(
    label: str, names: Iterable[str], profile_field: str | None, value_field: str | None
) -> None:
    present = set(names)
    options = (("profile_field", profile_field, "profile_id"), ("value_field", value_field, "value"))
    for option, field, column in options:
        if field is not None and field != column and field in present and column in present:
            raise EventFileError(f"{label}: has both a {column} column and the {option} column '{field}'")
    required = [profile_field if c == "profile_id" and profile_field else c for c in REQUIRED_EVENT_COLUMNS]
    required += [value_field] if value_field else []
    missing = sorted(c for c in required if c not in present)
    if missing:
        raise EventFileError(f"{label}: missing required column(s): {', '.join(missing)}")


def _apply_field_options(
    frame: pd.DataFrame, profile_field: str | None, value_field: str | None
) -> pd.DataFrame:
    """Tabular files: copy the `profile_field`/`value_field` column into profile_id/value."""
    for field, column in ((profile_field, "profile_id"), (value_field, "value")):
        if field is not None and field != column and field in frame:
            frame[column] = frame[field]
    return frame


# --- CSV ---------------------------------------------------------------------------------------


def _csv_pieces(
    label: str, path: Path, profile_field: str | None, value_field: str | None
) -> Iterator[pd.DataFrame]:
    names, data_start = _csv_header(label, path)
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise EventFileError(f"{label}: duplicate column name(s): {', '.join(dupes)}")
    _check_columns(label, names, profile_field, value_field)
    parser = _CsvSpanParser(label, names, _rename_reserved(names))
    yield parser.flagged(0, "").iloc[:0].assign(**{SOURCE_FILE: pd.Series([], dtype="str")})
    for piece in _csv_spans(label, path, data_start, parser):
        piece[SOURCE_FILE] = label
        yield _apply_field_options(piece, profile_field, value_field)


def _csv_header(label: str, path: Path) -> tuple[list[str], int]:
    with open(path, "rb") as handle:
        line = handle.readline(MAX_LINE_BYTES + 1)
        rest_blank = not handle.read(2**16).strip()
    if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
        raise EventFileError(f"{label}: header {_too_long()}")
    skip = 3 if line.startswith(_BOM) else 0
    text = _decode(label, line[skip:], skip)
    if not text.strip():
        if rest_blank:
            raise EventFileError(f"{label}: empty file")
        raise EventFileError(f"{label}: line 1 is blank, expected the header line")
    return next(csv.reader([text.rstrip("\r\n")])), len(line)


def _csv_spans(label: str, path: Path, start: int, parser: _CsvSpanParser) -> Iterator[pd.DataFrame]:
    """Cut the data into spans of whole lines (quote-aware) and parse each; flag over-long lines."""
    with open(path, "rb") as handle:
        handle.seek(start)
        buffer, line, offset = b"", 2, start
        while True:
            data = handle.read(_CSV_CHUNK_BYTES)
            buffer = buffer + data if buffer else data
            # Only the first line of the buffer can have started in an earlier read, so only it
            # can be longer than MAX_LINE_BYTES (> read size).
            newline = buffer.find(b"\n", 0, MAX_LINE_BYTES + 2)
            if (newline if newline >= 0 else len(buffer)) > MAX_LINE_BYTES:
                yield parser.flagged(line, _too_long())
                skipped, buffer = _skip_line(handle, buffer)
                line, offset = line + 1, offset + skipped
                if data:
                    continue
            if not data:
                if buffer:
                    yield from parser.parse(buffer, line, offset)
                return
            cut = _cut_after_record(buffer)
            if cut:
                span, buffer = buffer[:cut], buffer[cut:]
                yield from parser.parse(span, line, offset)
                line, offset = line + span.count(b"\n"), offset + cut


def _skip_line(handle: Any, buffer: bytes) -> tuple[int, bytes]:
    """Drop the (over-long) first line: (bytes skipped including its newline, what follows it)."""
    newline = buffer.find(b"\n")
    if newline >= 0:
        return newline + 1, buffer[newline + 1 :]
    skipped = len(buffer)
    while data := handle.read(_CSV_CHUNK_BYTES):
        newline = data.find(b"\n")
        if newline >= 0:
            return skipped + newline + 1, data[newline + 1 :]
        skipped += len(data)
    return skipped, b""


def _cut_after_record(buffer: bytes, end: int | None = None) -> int:
    """Index just after the last newline in buffer[:end] that is outside quotes (0 if none).

    `buffer` starts at a record boundary, so an even number of ``"`` before a newline means the
    newline ends a record (RFC 4180 quoting; ``""`` inside a quoted value counts twice).
    """
    cut = buffer.rfind(b"\n", 0, len(buffer) if end is None else end) + 1
    if cut == 0 or buffer.find(b'"', 0, cut) < 0:
        return cut
    quotes = buffer.count(b'"', 0, cut)
    position = cut
    while quotes % 2:  # inside a quoted value: step back a line
        previous = buffer.rfind(b"\n", 0, position - 1) + 1
        if previous == 0:
            return cut  # no even place (a stray quote): cut at the last newline anyway
        quotes -= buffer.count(b'"', previous, position)
        position = previous
    return position


class _CsvSpanParser:
    """Parse a span of whole CSV lines to a frame with the exact physical line of every row."""

    def __init__(self, label: str, names: list[str], columns: list[str]) -> None:
        self.label, self.names, self.columns = label, names, columns
        self.convert = pcsv.ConvertOptions(
            column_types={n: pa.string() for n in names}, strings_can_be_null=True, null_values=[""]
        )

    def parse(self, span: bytes, first_line: int, offset: int) -> Iterator[pd.DataFrame]:
        table = self._arrow(span, offset)
        lines = span.count(b"\n") + (not span.endswith(b"\n"))
        bare_cr = b"\r" in span and span.count(b"\r") != span.count(b"\r\n")  # pyarrow ends lines there
        if table is not None and table.num_rows == lines and not bare_cr:  # one row per line
            frame = table.rename_columns(self.columns).to_pandas()
            frame[SOURCE_LINE] = np.arange(first_line, first_line + lines, dtype="int64")
            yield frame
            return
        middle = _cut_after_record(span, len(span) // 2) if len(span) > _CSV_PYTHON_BELOW else 0
        if not middle:
            yield self._python(span, first_line, offset)
            return
        yield from self.parse(span[:middle], first_line, offset)
        yield from self.parse(span[middle:], first_line + span.count(b"\n", 0, middle), offset + middle)

    def flagged(self, line: int, problem: str) -> pd.DataFrame:
        data = {**dict.fromkeys(self.columns, [None]), SOURCE_LINE: [line], PARSE_ERROR: [problem]}
        return pd.DataFrame(data).astype(dict.fromkeys(self.columns, "str"))

    def _arrow(self, span: bytes, offset: int) -> pa.Table | None:
        """pyarrow's parse, or None when it fails (a row with the wrong field count, bad bytes)."""
        read = pcsv.ReadOptions(column_names=self.names, block_size=len(span) + 1, use_threads=False)
        try:
            return pcsv.read_csv(pa.BufferReader(span), read_options=read, convert_options=self.convert)
        except pa.ArrowInvalid as exc:
            if "utf8" in str(exc).lower():
                _decode(self.label, span, offset)
            return None

    def _python(self, span: bytes, first_line: int, offset: int) -> pd.DataFrame:
        """The slow, exact path: the csv module, record by record, over physical lines."""
        lines = _decode(self.label, span, offset).split("\n")
        if lines[-1] == "":
            lines.pop()
        expected = len(self.names)
        rows: list[list[str | None]] = []
        numbers: list[int] = []
        problems: list[str] = []
        reader = csv.reader((ln + "\n" for ln in lines), strict=False)
        consumed = 0
        while True:
            try:
                record = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:  # keep the text, naively split, rather than nothing
                record = "\n".join(lines[consumed : reader.line_num]).split(",")
                problem = f"CSV: {str(exc).split(' - ')[0]}"
            else:
                problem = ""
            start, consumed = first_line + consumed, reader.line_num
            if not record and not problem:
                continue  # a blank line is not a row
            if len(record) != expected and not problem:
                problem = f"CSV: expected {expected} fields, got {len(record)}"
            fields = [f if f != "" else None for f in record[:expected]]
            rows.append(fields + [None] * (expected - len(fields)))
            numbers.append(start)
            problems.append(problem)
        if rows:
            frame = pd.DataFrame(rows, columns=self.columns, dtype="str")
        else:
            frame = self.flagged(0, "").iloc[:0][self.columns].copy()
        frame[SOURCE_LINE] = np.asarray(numbers, dtype="int64")
        frame[PARSE_ERROR] = pd.Series(problems, dtype="str")
        return frame


def _too_long() -> str:
    limit = MAX_LINE_BYTES
    shown = f"{limit // 2**20} MiB" if limit % 2**20 == 0 else f"{limit} bytes"
    return f"line longer than {shown}"


def _decode(label: str, data: bytes, offset: int) -> str:
    """UTF-8 text, or `EventFileError` naming the first invalid byte's file offset."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        byte = data[exc.start]
        raise EventFileError(
            f"{label}: not UTF-8 text (invalid byte 0x{byte:02x} at byte offset {offset + exc.start})"
        ) from None


# --- Parquet -----------------------------------------------------------------------------------


def _parquet_pieces(label: str, path: Path, profile_field: str | None, value_field: str | None,
                    batch_rows: int | None) -> Iterator[pd.DataFrame]:
    if path.is_dir():
        files = sorted(
            p for p in path.rglob("*")
            if p.is_file() and p.suffix.lower() in (".parquet", ".pq")
            and not any(part.startswith(("_", ".")) for part in p.relative_to(path).parts)
        )
        if not files:
            raise EventFileError(f"{label}: no Parquet files in directory")
        relative = [f.relative_to(path) for f in files]
        targets = [(os.path.join(label, str(r)), f, _hive_keys(r)) for r, f in zip(relative, files)]
    else:
        targets = [(label, path, {})]
    for name, file, keys in targets:  # every file's columns are checked before any row is read
        _check_columns(name, [*_parquet_schema(name, file).names, *keys], profile_field, value_field)
    for name, file, keys in targets:
        start = 1
        try:
            with pq.ParquetFile(file) as handle:
                empty = handle.schema_arrow.empty_table()  # the columns, even for a file without rows
                # Lazily, one row group at a time (`[empty, *rest]` here used to decode the whole
                # file, 3.6 GiB for 28.7M events, before the first batch).
                rest = [handle.read()] if batch_rows is None else (
                    batch for group in range(handle.num_row_groups)
                    for batch in handle.iter_batches(batch_size=batch_rows, row_groups=[group]))
                for chunk in itertools.chain([empty], rest):
                    frame = _parquet_frame(chunk, keys)
                    frame[SOURCE_FILE] = name
                    frame[SOURCE_LINE] = np.arange(start, start + len(frame), dtype="int64")
                    start += len(frame)
                    yield _apply_field_options(frame, profile_field, value_field)
        except (pa.ArrowException, OSError) as exc:
            raise EventFileError(f"{name}: corrupt Parquet data ({_first_line(exc)})") from None


def _parquet_schema(label: str, file: Path) -> pa.Schema:
    size = file.stat().st_size
    if size == 0:
        raise EventFileError(f"{label}: empty file")
    with open(file, "rb") as handle:
        head = handle.read(4)
        handle.seek(max(size - 4, 0))
        tail = handle.read(4)
    if size < 12 or head != b"PAR1" or tail != b"PAR1":
        raise EventFileError(f"{label}: not a Parquet file")
    try:
        return pq.read_schema(file)
    except (pa.ArrowException, OSError) as exc:
        raise EventFileError(f"{label}: corrupt Parquet file ({_first_line(exc)})") from None


def _parquet_frame(chunk: pa.Table | pa.RecordBatch, keys: dict[str, str]) -> pd.DataFrame:
    table = pa.Table.from_batches([chunk]) if isinstance(chunk, pa.RecordBatch) else chunk
    for i, field in enumerate(table.schema):
        if pa.types.is_dictionary(field.type):  # plain values, not pandas categoricals
            table = table.set_column(i, field.name, table.column(i).cast(field.type.value_type))
    table = table.rename_columns(_rename_reserved(table.column_names))
    frame = table.to_pandas(ignore_metadata=True)
    for key, value in keys.items():
        if key not in frame:
            frame[key] = pd.Series(value, index=frame.index, dtype="str")
    return frame


def _hive_keys(relative: Path) -> dict[str, str]:
    return dict(part.split("=", 1) for part in relative.parts[:-1] if "=" in part)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


# --- NDJSON ------------------------------------------------------------------------------------


def _ndjson_pieces(label: str, path: Path, namespace: str, profile_path: tuple[str, ...] | None,
                   value_path: tuple[str, ...] | None) -> Iterator[pd.DataFrame]:
    rows = _RowBuilder(label)
    seen_content = False
    with open(path, "rb") as handle:
        line_no, offset = 0, 0
        while raw := handle.readline(MAX_LINE_BYTES + 1):
            line_no += 1
            start, offset = offset, offset + len(raw)
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                while (more := handle.readline(_CSV_CHUNK_BYTES)) and not more.endswith(b"\n"):
                    offset += len(more)
                offset += len(more)
                seen_content = True
                rows.error(line_no, _too_long())
                continue
            if raw[:1] != b"{":  # the rare lines: BOM, blank, a JSON array instead of NDJSON
                if line_no == 1 and raw.startswith(_BOM):
                    raw, start = raw[3:], start + 3
                if not raw.strip():
                    continue
                if not seen_content and raw.lstrip().startswith(b"["):
                    raise EventFileError(
                        f"{label}: a JSON array, not NDJSON (expected one JSON object per line)"
                    )
            seen_content = True
            try:
                obj = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                rows.error(line_no, _json_problem(label, raw, start, exc))
                continue
            if type(obj) is not dict:
                rows.error(line_no, f"not a JSON object (got a JSON {_json_kind(obj)})")
            elif xdm.is_xdm(obj):
                for row in xdm.map_event(obj, identity_namespace=namespace, profile_path=profile_path,
                                         value_path=value_path):
                    rows.add(row, line_no)
            else:
                rows.flat(obj, line_no, profile_path, value_path)
            if rows.count >= _NDJSON_PIECE_ROWS:
                yield rows.frame()
                rows = _RowBuilder(label)
    if not seen_content:
        raise EventFileError(f"{label}: empty file")
    if rows.count:
        yield rows.frame()


def _json_problem(label: str, raw: bytes, start: int, exc: orjson.JSONDecodeError) -> str:
    text = _decode(label, raw, start)  # invalid UTF-8 is a whole-file problem
    try:
        json.loads(text)
    except json.JSONDecodeError as std:
        return f"invalid JSON: {std.msg} (column {std.colno})"
    return f"invalid JSON: {exc.msg} (column {exc.colno})"


def _json_kind(obj: Any) -> str:
    return {list: "array", str: "string", bool: "boolean", type(None): "null"}.get(type(obj), "number")


class _RowBuilder:
    """NDJSON rows as tuples (contract columns, then `_parse_error`), their lines, and extras."""

    _FIELDS = (*EVENT_COLUMNS, PARSE_ERROR)

    def __init__(self, label: str) -> None:
        self.label = label
        self.rows: list[tuple[Any, ...]] = []
        self.lines: list[int] = []
        self.extras: dict[str, list[tuple[int, Any]]] = {}

    @property
    def count(self) -> int:
        return len(self.rows)

    def add(self, row: tuple[Any, ...], line: int) -> None:
        self.rows.append(row)
        self.lines.append(line)

    def error(self, line: int, problem: str) -> None:
        self.add((None,) * len(EVENT_COLUMNS) + (problem,), line)

    def flat(self, obj: dict[str, Any], line: int, profile_path: tuple[str, ...] | None,
             value_path: tuple[str, ...] | None) -> None:
        problems = []
        values = []
        for name in EVENT_COLUMNS:
            if name == "profile_id" and profile_path is not None:
                value = xdm.get_path(obj, profile_path)
            elif name == "value" and value_path is not None:
                value = xdm.get_path(obj, value_path)
            else:
                value = obj.get(name)
            if isinstance(value, (dict, list)):
                problems.append(xdm.nested_problem(name, value))
            values.append(xdm.as_number(value) if name in NUMERIC_COLUMNS else xdm.as_text(value))
        for key in [k for k in obj if k not in _CONTRACT_SET]:
            name = f"{key}_in_file" if key in PROVENANCE_COLUMNS else key
            self.extras.setdefault(name, []).append((self.count, obj[key]))
        values.append("; ".join(problems))
        self.add(tuple(values), line)

    def frame(self) -> pd.DataFrame:
        data: dict[str, Any] = dict(zip(self._FIELDS, map(list, zip(*self.rows))))
        for name, entries in self.extras.items():
            column: list[Any] = [None] * self.count
            for index, value in entries:
                column[index] = value
            data[name] = column
        data[SOURCE_LINE] = np.asarray(self.lines, dtype="int64")
        data[SOURCE_FILE] = self.label
        return pd.DataFrame(data)


_CONTRACT_SET = frozenset(EVENT_COLUMNS)
