"""Pydantic validation errors of a project file as one located line per mistake.

A misspelled key (`chanel:` for `channel:`) is two pydantic errors, the unknown key and the
required one it hides; they are told as one: `placements[0].chanel: unknown setting 'chanel'
(did you mean 'channel'?)`.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any


def format_location(loc: Sequence[Any]) -> str:
    """`('placements', 0, 'items')` -> `placements[0].items`."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def error_lines(errors: Sequence[dict[str, Any]], source: str) -> list[str]:
    """One `<source>: <location>: <message>` line per mistake, a misspelled required key once."""
    missing = {tuple(e["loc"]): e for e in errors if e["type"] == "missing" and e["loc"]}
    merged: dict[int, str] = {}
    for i, err in enumerate(errors):
        loc = tuple(err["loc"])
        if err["type"] != "extra_forbidden" or not loc or not isinstance(loc[-1], str):
            continue
        names = [k[-1] for k in missing if k[:-1] == loc[:-1] and isinstance(k[-1], str)]
        close = difflib.get_close_matches(loc[-1], names, n=1, cutoff=0.6)
        if close:
            missing.pop(loc[:-1] + (close[0],))
            merged[i] = f"unknown setting {loc[-1]!r} (did you mean {close[0]!r}?)"
    kept = {id(e) for e in missing.values()}
    lines = []
    for i, err in enumerate(errors):
        if err["type"] == "missing" and err["loc"] and id(err) not in kept:
            continue
        message = merged.get(i) or err["msg"].removeprefix("Value error, ")
        lines.append(f"{source}: {format_location(err['loc'])}: {message}")
    return lines
