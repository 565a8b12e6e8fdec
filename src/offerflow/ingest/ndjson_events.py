"""Read an NDJSON event file (flat lines or XDM Experience Events) for `offerflow.ingest.events`.

``.ndjson`` / ``.jsonl`` / ``.json``: one JSON object per line, either flat (keys are the
contract's column names) or an XDM Experience Event (the line has ``eventType`` or
``_experience``), decided per line. A key missing from a line is a null, not a missing column. A
line that is not valid JSON becomes a row with null contract columns and ``_parse_error`` set, and
a line longer than `offerflow.ingest.file_readers.MAX_LINE_BYTES` becomes such a row without being held in
memory. ``_source_line`` is the 1-based physical line.

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

``profile_field``/``value_field`` are dotted paths into the objects (XDM and flat lines; there
they win over the line's own ``profile_id``/``value``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd

from offerflow.ingest import file_readers as event_files, xdm
from offerflow.ingest.coercion import NUMERIC_COLUMNS
from offerflow.ingest.file_readers import (
    _BOM,
    PARSE_ERROR,
    PROVENANCE_COLUMNS,
    SOURCE_FILE,
    SOURCE_LINE,
    EventFileError,
    _decode,
    _too_long,
)
from offerflow.core.schema import EVENT_COLUMNS

_NDJSON_PIECE_ROWS = 100_000
_SKIP_BYTES = 8 * 2**20  # read size while skipping the rest of an over-long line


def _ndjson_pieces(label: str, path: Path, namespace: str, profile_path: tuple[str, ...] | None,
                   value_path: tuple[str, ...] | None) -> Iterator[pd.DataFrame]:
    rows = _RowBuilder(label)
    seen_content = False
    with open(path, "rb") as handle:
        line_no, offset = 0, 0
        while raw := handle.readline(event_files.MAX_LINE_BYTES + 1):
            line_no += 1
            start, offset = offset, offset + len(raw)
            if len(raw) > event_files.MAX_LINE_BYTES and not raw.endswith(b"\n"):
                while (more := handle.readline(_SKIP_BYTES)) and not more.endswith(b"\n"):
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
    except RecursionError:  # nested deeper than orjson's 1,024 levels and Python's stack (fuzzing found it)
        pass
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
