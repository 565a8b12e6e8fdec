"""What every event-file reader shares: provenance columns, the line limit, whole-file errors.

The base of `offerflow.ingest.events` and its format readers (`offerflow.ingest.csv_events`,
`offerflow.ingest.parquet_events`, `offerflow.ingest.ndjson_events`); it imports none of them, so there is no
import cycle. The readers look `MAX_LINE_BYTES` up here when they run, so one setting (or one
test's monkeypatch) changes every format.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from offerflow.core.schema import REQUIRED_EVENT_COLUMNS

if TYPE_CHECKING:
    import pandas as pd

SOURCE_FILE = "_source_file"
SOURCE_LINE = "_source_line"
PARSE_ERROR = "_parse_error"
PROVENANCE_COLUMNS: tuple[str, ...] = (SOURCE_FILE, SOURCE_LINE, PARSE_ERROR)
#: A CSV/NDJSON line longer than this becomes a row flagged in `_parse_error` (never held whole).
MAX_LINE_BYTES = 16 * 2**20
_BOM = b"\xef\xbb\xbf"


class EventFileError(ValueError):
    """A whole-file problem: one line naming the file and the problem."""


def wrong_separator(names: list[str]) -> str | None:
    """A CSV header read as one column that holds another separator: what to say instead of which
    columns are missing (e.g. 'the header is one column split by semicolons, not commas')."""
    for separator, name in ((";", "semicolons"), ("\t", "tabs"), ("|", "'|'")):
        if len(names) == 1 and str(names[0]).count(separator) >= 2:
            return f"the header is one column split by {name}, not commas"
    return None


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


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
