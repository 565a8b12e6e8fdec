"""Row-level checks of an events batch for `offerflow.ingest.validation`: coercing a raw batch to
the contract types (`prepare_batch`) and collecting every reason a row is quarantined for
(`row_reasons`, vectorized masks rendered to text only for flagged rows)."""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from typing import Any

import numpy as np
import pandas as pd

from offerflow.ingest.file_readers import PARSE_ERROR
from offerflow.core.config import ValidationConfig
from offerflow.core.schema import EVENT_COLUMNS, INTERACTION_TYPES

_FLOAT_COLUMNS = ("value", "propensity")


# -- preparation -------------------------------------------------------------------------------


def to_utc(ts: pd.Timestamp) -> pd.Timestamp:
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def prepare_batch(original: pd.DataFrame, first_line: int = 1) -> tuple[pd.DataFrame, list[tuple[np.ndarray, str]]]:
    """Provenance columns added if missing (lines numbered from `first_line`); timestamp/value/
    propensity coerced if still raw."""
    frame = original.copy(deep=False)
    n = len(frame)
    if "_source_file" not in frame.columns:
        frame["_source_file"] = pd.Series("<memory>", index=frame.index, dtype="str")
    if "_source_line" not in frame.columns:
        frame["_source_line"] = np.arange(first_line, first_line + n, dtype="int64")
    notes: list[tuple[np.ndarray, str]] = []
    if "timestamp" in frame.columns:
        ts = frame["timestamp"]
        if isinstance(ts.dtype, pd.DatetimeTZDtype):
            if str(ts.dtype.tz) != "UTC":
                frame["timestamp"] = ts.dt.tz_convert("UTC")
        elif pd.api.types.is_datetime64_dtype(ts):
            frame["timestamp"] = ts.dt.tz_localize("UTC")
        else:
            frame["timestamp"] = pd.to_datetime(ts, errors="coerce", utc=True, format="ISO8601")
    for column in _FLOAT_COLUMNS:
        if column not in frame.columns:
            continue
        raw = frame[column]
        if pd.api.types.is_numeric_dtype(raw) and not pd.api.types.is_bool_dtype(raw):
            if raw.dtype != "float64":
                frame[column] = raw.astype("float64")
            continue
        number = pd.to_numeric(raw, errors="coerce").astype("float64")
        notes.append(((raw.notna() & number.isna()).to_numpy(bool), f"{column}: not a number"))
        frame[column] = number
    return frame, notes


def contract_column(frame: pd.DataFrame, name: str) -> pd.Series:
    """The column, or an all-null stand-in of the contract type when it is absent."""
    if name in frame.columns:
        return frame[name]
    if name == "timestamp":
        return pd.Series(pd.NaT, index=frame.index, dtype="datetime64[us, UTC]")
    if name in _FLOAT_COLUMNS:
        return pd.Series(np.nan, index=frame.index, dtype="float64")
    return pd.Series(None, index=frame.index, dtype="str")


def _mask(values: Any) -> np.ndarray:
    return np.asarray(pd.Series(values).to_numpy(dtype=bool, na_value=False), dtype=bool)


def _missing(series: pd.Series) -> np.ndarray:
    missing = series.isna().to_numpy(copy=True)
    if not (pd.api.types.is_numeric_dtype(series) or pd.api.types.is_datetime64_any_dtype(series)):
        missing |= _mask(series == "")
    return missing


def _text(series: pd.Series, positions: np.ndarray) -> np.ndarray:
    values = series.iloc[positions].astype(object)
    return values.where(values.notna(), "?").map(str).to_numpy(dtype=object)


def _window_bound(value: str, name: str, *, end: bool) -> tuple[pd.Timestamp, bool]:
    """(bound, inclusive). A date-only end bound becomes the next midnight, exclusive."""
    try:
        bound = to_utc(pd.Timestamp(value))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"validation.{name}: not an ISO date or datetime: {value!r}") from exc
    if end and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value.strip()):
        return bound + pd.Timedelta(days=1), False
    return bound, True


# -- row-level checks --------------------------------------------------------------------------


class RowReasons:
    """(mask, text) pairs; text is a string or a function of the flagged positions. The
    strings are only built for flagged rows, in `render`."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.items: list[tuple[np.ndarray, str | Callable[[np.ndarray], np.ndarray]]] = []

    def add(self, mask: np.ndarray, text: str | Callable[[np.ndarray], np.ndarray]) -> None:
        mask = np.asarray(mask, dtype=bool)
        if mask.any():
            self.items.append((mask, text))

    def flagged(self) -> np.ndarray:
        out = np.zeros(self.n, dtype=bool)
        for mask, _ in self.items:
            out |= mask
        return out

    def render(self, positions: np.ndarray) -> np.ndarray:
        out = np.full(len(positions), "", dtype=object)
        for mask, text in self.items:
            selected = mask[positions]
            if not selected.any():
                continue
            values = text if isinstance(text, str) else text(positions[selected])
            current = out[selected]
            out[selected] = np.where(current == "", values, current + "; " + values)
        return out


def row_reasons(
    frame: pd.DataFrame,
    coerce_reasons: list[tuple[np.ndarray, str]],
    pre_reasons: pd.Series | None,
    *,
    offer_ids: Collection[str],
    placement_ids: Collection[str],
    settings: ValidationConfig,
    now: pd.Timestamp,
) -> RowReasons:
    n = len(frame)
    col = {name: contract_column(frame, name) for name in EVENT_COLUMNS}
    reasons = RowReasons(n)

    if PARSE_ERROR in frame.columns:
        parse_error = frame[PARSE_ERROR]
        reasons.add(~_missing(parse_error), lambda p: _text(parse_error, p))
    if pre_reasons is not None:
        if len(pre_reasons) != n:
            raise ValueError(f"pre_reasons has {len(pre_reasons)} entries for {n} events")
        pre = pd.Series(pre_reasons).reset_index(drop=True)
        reasons.add(~_missing(pre), lambda p: _text(pre, p))
    for mask, text in coerce_reasons:
        reasons.add(mask, text)

    missing = {name: _missing(col[name]) for name in
               ("event_id", "profile_id", "event_type", "offer_id", "placement_id", "decision_id")}
    for name in ("event_id", "profile_id", "event_type"):
        reasons.add(missing[name], f"{name}: missing")

    ts = col["timestamp"]
    nat = ts.isna().to_numpy()
    reasons.add(nat, "timestamp: missing or unparseable")
    tolerance = settings.future_tolerance_minutes
    reasons.add(_mask(ts > now + pd.Timedelta(minutes=tolerance)),
                f"timestamp: in the future (> now + {tolerance} min)")
    if settings.window_start:
        start, _ = _window_bound(settings.window_start, "window_start", end=False)
        reasons.add(_mask(ts < start), "timestamp: before window start")
    if settings.window_end:
        end, inclusive = _window_bound(settings.window_end, "window_end", end=True)
        reasons.add(_mask(ts > end if inclusive else ts >= end), "timestamp: after window end")

    event_type = col["event_type"]
    interaction = _mask(event_type.isin(list(INTERACTION_TYPES)))
    offer, placement = col["offer_id"], col["placement_id"]
    reasons.add(interaction & missing["offer_id"], "offer_id: missing for display/click")
    reasons.add(interaction & missing["placement_id"], "placement_id: missing for display/click")
    reasons.add(~missing["offer_id"] & ~_mask(offer.isin(list(offer_ids))),
                lambda p: "offer_id: unknown offer '" + _text(offer, p) + "'")
    reasons.add(~missing["placement_id"] & ~_mask(placement.isin(list(placement_ids))),
                lambda p: "placement_id: unknown placement '" + _text(placement, p) + "'")

    propensity = col["propensity"]
    reasons.add(_mask((propensity <= 0) | (propensity > 1)), "propensity: not in (0, 1]")
    reasons.add(_mask(col["value"] < 0), "value: negative")
    return reasons
