"""Parse the raw event columns into the contract types, saying per row what does not parse.

Split from `offerflow.ingest.events` (which re-exports `coerce_event_types` and uses the number rule
when it reads): readers keep raw strings, these functions type them, vectorized.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from offerflow.core.schema import EVENT_COLUMNS

NUMERIC_COLUMNS: tuple[str, ...] = ("value", "propensity")
ID_COLUMNS: tuple[str, ...] = tuple(c for c in EVENT_COLUMNS if c not in ("timestamp", *NUMERIC_COLUMNS))
_NUMBER = r"^\s*[+-]?\d+(?:\.\d*)?\s*$"
_TZ_SUFFIX = r"[Tt ]\d{2}(?::?\d{2}){0,2}(?:[.,]\d+)?\s*(?:[Zz]|[+-]\d{2}(?::?\d{2})?)\s*$"
_REASON_CHARS = 100


def coerce_event_types(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """Parse the contract types; return (typed frame, per-row reasons, "" when the row is fine).

    ``timestamp`` -> datetime64[us, UTC] (ISO 8601 with ``Z`` or an offset, converted to UTC;
    naive or unparseable values become NaT with a reason), ``value``/``propensity`` -> float64
    (non-numbers become NaN with a reason), id columns -> str. Null values are left null without
    a reason: whether a column may be null is the validator's rule. Vectorized.
    """
    index, frame = frame.index, frame.reset_index(drop=True)
    out = frame.copy()
    reasons = pd.Series("", index=frame.index, dtype="str")
    if "timestamp" in frame:
        out["timestamp"], problems = _parse_timestamps(frame["timestamp"])
        reasons = _add_reasons(reasons, problems)
    for name in NUMERIC_COLUMNS:
        if name in frame:
            out[name], bad = _parse_floats(frame[name])
            reasons = _add_reasons(reasons, _quoted(f"{name}: not a number", frame[name], bad))
    for name in ID_COLUMNS:
        if name in frame and frame[name].dtype != "str":
            out[name] = frame[name].astype("str")
    out.index = reasons.index = index
    return out, reasons



def numbers_or_raw(column: pd.Series) -> pd.Series:
    """float64 when every non-null value parses as a float, else the raw values (as str)."""
    if column.dtype == "float64":
        return column
    if pd.api.types.is_integer_dtype(column.dtype) or pd.api.types.is_float_dtype(column.dtype):
        return column.astype("float64")
    if not pd.api.types.is_string_dtype(column.dtype) and column.dtype != object:
        return column
    parsed, bad = _parse_floats(column)
    return column.astype("str") if bad.any() else parsed


def _parse_floats(column: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """(float64 values, mask of non-null values that are not numbers); Python ``float()`` rules."""
    if pd.api.types.is_float_dtype(column.dtype) or pd.api.types.is_integer_dtype(column.dtype):
        return column.astype("float64"), np.zeros(len(column), dtype=bool)
    if pd.api.types.is_bool_dtype(column.dtype):
        return pd.Series(np.nan, index=column.index), column.notna().to_numpy()
    if column.dtype == "str":  # fast path: pyarrow's parser accepts a subset of float()'s
        try:
            values = pc.cast(pa.Array.from_pandas(column), pa.float64()).to_numpy(zero_copy_only=False)
            return pd.Series(values, index=column.index), np.zeros(len(column), bool)
        except pa.ArrowInvalid:
            pass
    present = column.notna().to_numpy()
    parsed = {value: _to_float(value) for value in pd.unique(column[present])}
    if not parsed:
        return pd.Series(np.nan, index=column.index), present
    floats = column.map(parsed).astype("float64")
    nan_text = [value for value, number in parsed.items() if np.isnan(number) and _is_nan(value)]
    return floats, present & floats.isna().to_numpy() & ~column.isin(nan_text).to_numpy()


def _to_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (str, int, float, np.number)):
        return np.nan
    try:
        return float(value)
    except ValueError:
        return np.nan


def _is_nan(value: Any) -> bool:
    return isinstance(value, (str, float)) and str(value).strip().lower() in ("nan", "+nan", "-nan")


def _parse_timestamps(column: pd.Series) -> tuple[pd.Series, pd.Series]:
    """(datetime64[us, UTC] values, reasons for the bad rows only) for a raw timestamp column."""
    empty = pd.Series(dtype="str")
    dtype = column.dtype
    if isinstance(dtype, pd.DatetimeTZDtype):
        return column.dt.tz_convert("UTC").dt.as_unit("us"), empty
    present = column.notna().to_numpy()
    if pd.api.types.is_datetime64_dtype(dtype):
        nat = pd.Series(pd.NaT, index=column.index, dtype="datetime64[us, UTC]")
        return nat, _quoted("timestamp: no timezone", column.astype("str"), present)
    text = column if dtype == "str" else column.astype("str")
    arrow = pa.Array.from_pandas(text)
    try:  # fast path: pyarrow only accepts ISO 8601 with a zone offset
        return pc.cast(arrow, pa.timestamp("us", tz="UTC")).to_pandas().set_axis(column.index), empty
    except pa.ArrowInvalid:
        pass
    parsed = pd.to_datetime(text, errors="coerce", utc=True, format="ISO8601")
    has_zone = pc.fill_null(pc.match_substring_regex(arrow, _TZ_SUFFIX), False).to_numpy(zero_copy_only=False)
    unparseable = present & parsed.isna().to_numpy()
    # epoch seconds or milliseconds: which one is a guess, so the row is refused, saying what it is
    number = unparseable & pc.fill_null(pc.match_substring_regex(arrow, _NUMBER), False).to_numpy(zero_copy_only=False)
    naive = present & ~unparseable & ~has_zone
    bad = unparseable | naive
    reasons = pd.concat([_quoted("timestamp: unparseable", text, unparseable & ~number),
                         _quoted("timestamp: a number, not a date-time", text, number),
                         _quoted("timestamp: no timezone", text, naive)])
    return parsed.where(~bad).dt.as_unit("us"), reasons


def _quoted(prefix: str, raw: pd.Series, mask: np.ndarray) -> pd.Series:
    """``prefix 'raw'`` for the masked rows (raw cut at 100 characters)."""
    shown = raw[mask].astype("str")
    long = shown.str.len() > _REASON_CHARS
    shown = shown.where(~long, shown.str.slice(0, _REASON_CHARS) + "...")
    return prefix + " '" + shown + "'"


def _add_reasons(reasons: pd.Series, new: pd.Series) -> pd.Series:
    """`reasons` with `new` (reasons for some rows, by index) appended, "; "-separated."""
    if len(new):
        current = reasons.loc[new.index]
        reasons = reasons.copy()
        reasons.loc[new.index] = current.where(current == "", current + "; ") + new
    return reasons
