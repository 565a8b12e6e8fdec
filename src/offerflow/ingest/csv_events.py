"""Read a CSV event file for `offerflow.ingest.events`, every physical line accounted for.

UTF-8 (a BOM is fine), comma-separated, RFC 4180 quoting, a header line naming the columns; an
empty field is null. Parsed with pyarrow in 8 MiB chunks; a chunk where some line does not give
exactly one row (wrong field count, blank line, quoted newline) is bisected and its failing part
re-parsed with the `csv` module, so every physical line is accounted for (a record spanning lines
gets the number of its first line, the header being line 1; blank lines give no row). A line with
the wrong number of fields is kept (missing fields null, ``_parse_error`` says so); a line longer
than `offerflow.ingest.file_readers.MAX_LINE_BYTES` becomes a flagged row without being held in memory.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pcsv

from offerflow.ingest import file_readers as event_files
from offerflow.ingest.file_readers import (
    _BOM,
    PARSE_ERROR,
    SOURCE_FILE,
    SOURCE_LINE,
    EventFileError,
    _apply_field_options,
    _check_columns,
    _decode,
    _rename_reserved,
    _too_long,
    wrong_separator,
)

_CSV_CHUNK_BYTES = 8 * 2**20
_CSV_PYTHON_BELOW = 256 * 2**10  # a failing span this small is parsed line by line in Python


def _csv_pieces(
    label: str, path: Path, profile_field: str | None, value_field: str | None
) -> Iterator[pd.DataFrame]:
    names, data_start = _csv_header(label, path)
    wrong = wrong_separator(names)
    if wrong:
        raise EventFileError(f"{label}: {wrong}: event CSV files must be comma-separated")
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
        line = handle.readline(event_files.MAX_LINE_BYTES + 1)
        rest_blank = not handle.read(2**16).strip()
    if len(line) > event_files.MAX_LINE_BYTES and not line.endswith(b"\n"):
        raise EventFileError(f"{label}: header {_too_long()}")
    skip = 3 if line.startswith(_BOM) else 0
    text = _decode(label, line[skip:], skip)
    if not text.strip():
        if rest_blank:
            raise EventFileError(f"{label}: empty file")
        raise EventFileError(f"{label}: line 1 is blank, expected the header line")
    try:
        return next(csv.reader([text.rstrip("\r\n")])), len(line)
    except csv.Error as exc:  # e.g. a header field over the csv module's 128 KiB limit
        raise EventFileError(f"{label}: line 1 (the header): {exc}") from None


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
            newline = buffer.find(b"\n", 0, event_files.MAX_LINE_BYTES + 2)
            if (newline if newline >= 0 else len(buffer)) > event_files.MAX_LINE_BYTES:
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
