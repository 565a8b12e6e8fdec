"""Validate an events frame before anything learns from it: two layers, one report.

1. **Row checks**, streamed: `stage_events` checks one batch at a time (vectorized
   pandas/numpy masks, no per-row Python loop) and stages it on disk (`EventStage`); after the
   last batch, the checks that need every row (duplicate event ids, clicks without a display)
   run in DuckDB over the staged files (`offerflow.ingest.staging`). Every row collects *all* its
   reasons (``"; "``-joined: its own first, then duplicates, then clicks); a row with at least
   one reason is quarantined, every other row is accepted. ``accepted + quarantined == input``
   is asserted on every run. Memory is one batch plus DuckDB's capped working set.
2. **Dataset-level expectations** with Great Expectations (`judge_events`; suites ``events``,
   ``event_totals`` and ``offer_conversion`` in the ``great_expectations/`` file context, see
   `offerflow.ingest.expectations`). They say whether the delivery *as a whole* is usable: a failed
   ``critical`` expectation fails the run (``report.success`` is False), a ``warning`` is
   reported only. ``events`` runs on every row up to ``expectation_sample_rows`` rows, beyond
   that on a deterministic sample of about that many (the shares of its ``mostly``
   expectations are then estimates, and the report says so); ``event_totals`` (row count
   versus the last run, duplicate ids) and ``offer_conversion`` run on exact aggregates of all
   rows. Data Docs are rebuilt on every run.

`validate_events` runs both on one in-memory frame and returns the accepted and quarantined
rows as frames; `offerflow.ingest.snapshot` streams a file through the same functions.
The two layers agree: where an expectation tolerates a share of bad rows (``mostly=0.99``),
the row checks quarantine exactly those rows, so the accepted rows are clean either way.

Policies worth knowing:

* Duplicate event ids: when every row of an id has identical content (provenance columns
  aside), the first is kept and the later ones are quarantined as
  ``event_id: duplicate (identical row)``. When the rows of an id differ, there is no way to
  know which one is right, so *all* of them are quarantined as
  ``event_id: duplicate with conflicting content`` (a later identical copy in such a group
  carries both reasons).
* Clicks must follow an *accepted* display: same ``(decision_id, offer_id)``, or, when the
  click has no ``decision_id``, same profile, offer and placement at most 24 h before the click.
* The per-offer conversion rate (clicks / displays <= 1) is computed on the *accepted* rows:
  orphan clicks are already quarantined, what remains above 1 is clicks logged repeatedly.
* A non-empty ``_parse_error`` and ``pre_reasons`` entries are used verbatim as reasons.
* A null ``value`` or ``propensity`` means "not logged" and is fine; a propensity outside
  (0, 1] or a negative value is not.
* Window bounds are ISO dates or datetimes (UTC unless they carry an offset); a date-only
  ``window_end`` includes that whole day.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa

from offerflow.core.config import ValidationConfig
from offerflow.ingest.staging import EventStage
from offerflow.core.schema import EVENT_COLUMNS, INTERACTION_TYPES

PROVENANCE_COLUMNS = ("_source_file", "_source_line")
PARSE_ERROR_COLUMN = "_parse_error"
_FLOAT_COLUMNS = ("value", "propensity")
_NO_EVENTS_WHY = (
    "An empty delivery means the export failed upstream; validating or training on it would"
    " silently drop every offer's history."
)


@dataclass(frozen=True)
class ExpectationOutcome:
    name: str
    severity: Literal["critical", "warning"]
    success: bool
    why: str
    observed: str


@dataclass(frozen=True, eq=False)
class ValidationReport:
    """What validation found. `accepted`/`quarantined` are frames only for `validate_events`
    (in memory); the streaming path writes them to files and keeps the counts."""

    outcomes: list[ExpectationOutcome]
    data_docs_path: Path | None
    row_count: int
    accepted_count: int
    quarantined_count: int
    quarantine_reasons: pd.Series
    run_id: str = ""
    sample_rows: int | None = None
    accepted: pd.DataFrame | None = None
    quarantined: pd.DataFrame | None = None

    @property
    def critical_failures(self) -> list[ExpectationOutcome]:
        return [o for o in self.outcomes if not o.success and o.severity == "critical"]

    @property
    def warnings(self) -> list[ExpectationOutcome]:
        return [o for o in self.outcomes if not o.success and o.severity == "warning"]

    @property
    def success(self) -> bool:
        return not self.critical_failures

    def reason_counts(self) -> pd.Series:
        """Quarantined rows per reason kind (quoted values and "(profile ...)" stripped)."""
        return self.quarantine_reasons

    def summary(self) -> str:
        status = "PASSED" if self.success else "FAILED"
        run = f" {self.run_id}" if self.run_id else ""
        lines = [
            f"Event validation{run}: {status} ({len(self.critical_failures)} critical,"
            f" {len(self.warnings)} warning expectations failed)",
            f"  {self.row_count} rows: {self.accepted_count} accepted,"
            f" {self.quarantined_count} quarantined",
        ]
        if self.sample_rows is not None and self.sample_rows < self.row_count:
            lines.append(f"  column expectations evaluated on a sample of {self.sample_rows} rows")
        counts = self.reason_counts()
        if len(counts):
            lines.append("Quarantined rows by reason:")
            lines += [f"  {count:>9}  {kind}" for kind, count in counts.items()]
        for title, failed in (("Critical failures:", self.critical_failures),
                              ("Warnings:", self.warnings)):
            if failed:
                lines.append(title)
                lines += [f"  - {o.name}: {o.observed}\n      why: {o.why}" for o in failed]
        if self.data_docs_path is not None:
            lines.append(f"Data Docs: {self.data_docs_path}")
        return "\n".join(lines)


def validate_events(
    events: pd.DataFrame,
    *,
    offer_ids: Collection[str],
    placement_ids: Collection[str],
    settings: ValidationConfig,
    context_dir: Path,
    run_id: str,
    now: datetime | None = None,
    previous_row_count: int | None = None,
    pre_reasons: pd.Series | None = None,
    build_docs: bool = True,
) -> ValidationReport:
    """Split an in-memory `events` frame into accepted and quarantined rows and run the suites.

    The same code as the streaming path (one batch, staged in a temporary directory), with the
    accepted rows (contract columns, then extra columns as text, input order) and the quarantined
    rows returned as frames. `events` has the contract columns with `timestamp` as datetime64
    (UTC, NaT allowed) and `value`/`propensity` as floats; raw strings are coerced as a fallback.
    `pre_reasons` are per-row parse reasons ("" = fine), aligned by position.
    """
    with tempfile.TemporaryDirectory(prefix="offerflow-validate-") as tmp, \
            EventStage(Path(tmp) / "stage", memory_limit_mib=512) as stage:
        now_ts = _now(now)
        stage_events(stage, events, pre_reasons, offer_ids=offer_ids, placement_ids=placement_ids,
                     settings=settings, now=now_ts)
        report = judge_events(stage, offer_ids=offer_ids, placement_ids=placement_ids, settings=settings,
                              context_dir=context_dir, run_id=run_id,
                              previous_row_count=previous_row_count, build_docs=build_docs)
        accepted = _to_pandas(stage.accepted_batches(sort=False))
        quarantined = _to_pandas(stage.quarantine_batches(run_id))
    assert len(accepted) + len(quarantined) == report.row_count, "row conservation violated"
    return replace(report, accepted=accepted, quarantined=quarantined)


def _to_pandas(batches: Iterable[pa.RecordBatch]) -> pd.DataFrame:
    return pa.Table.from_batches(list(batches)).to_pandas()


def _now(now: datetime | None) -> pd.Timestamp:
    return _utc(pd.Timestamp(now if now is not None else datetime.now(timezone.utc)))


def stage_events(
    stage: EventStage,
    events: pd.DataFrame,
    pre_reasons: pd.Series | None = None,
    *,
    offer_ids: Collection[str],
    placement_ids: Collection[str],
    settings: ValidationConfig,
    now: pd.Timestamp,
) -> None:
    """Row-level checks of one batch (vectorized), then the batch goes to the stage."""
    original = events.reset_index(drop=True)
    frame, coerce_reasons = _prepare(original, first_line=stage.rows + 1)
    reasons = _row_reasons(frame, coerce_reasons, pre_reasons, offer_ids=offer_ids,
                           placement_ids=placement_ids, settings=settings, now=now)
    text = np.full(len(frame), "", dtype=object)
    flagged = np.flatnonzero(reasons.flagged())
    text[flagged] = reasons.render(flagged)
    typed = pd.DataFrame({name: _column(frame, name) for name in EVENT_COLUMNS}, index=frame.index)
    internal = {*PROVENANCE_COLUMNS, PARSE_ERROR_COLUMN}
    extras = [c for c in frame.columns if c not in EVENT_COLUMNS and c not in internal]
    for name in [*extras, *PROVENANCE_COLUMNS, PARSE_ERROR_COLUMN]:
        if name in frame.columns:
            typed[name] = frame[name]
    stage.add(original, typed, text, extras)


def judge_events(
    stage: EventStage,
    *,
    offer_ids: Collection[str],
    placement_ids: Collection[str],
    settings: ValidationConfig,
    context_dir: Path,
    run_id: str,
    previous_row_count: int | None = None,
    build_docs: bool = True,
) -> ValidationReport:
    """The cross-row checks (in the stage's DuckDB) and the expectation suites, after every
    batch was staged: the `events` suite on (a sample of) the rows, `event_totals` on the exact
    counts, `offer_conversion` on the per-offer table of the accepted rows."""
    from offerflow.ingest import expectations as gxs

    os.environ["GX_ANALYTICS_ENABLED"] = "false"
    n = stage.rows
    accepted_count, quarantined_count = stage.counts()
    assert accepted_count + quarantined_count == n, "row conservation violated"

    outcomes: list[ExpectationOutcome] = []
    if n == 0:
        outcomes.append(ExpectationOutcome("no events", "critical", False, _NO_EVENTS_WHY, "0 rows"))
    context = gxs.open_context(Path(context_dir))

    sample = stage.sample(settings.expectation_sample_rows)
    sampled = len(sample) < n
    target = gxs.ensure_target(context, gxs.EVENTS_SUITE, gxs.events_expectations())
    parameters = {"offer_ids": sorted(map(str, offer_ids)), "placement_ids": sorted(map(str, placement_ids))}
    result = gxs.run(target, sample, parameters=parameters, run_id=run_id, build_docs=build_docs)
    suffix = f" (in a sample of {len(sample)} of {n} rows)" if sampled else ""
    outcomes += [replace(o, observed=o.observed + suffix) if "unexpected" in o.observed else o
                 for o in _outcomes(target, result, {})]

    min_rows = 1
    if previous_row_count is not None:
        min_rows = max(1, math.ceil(previous_row_count * (1 - settings.max_row_drop_share) - 1e-9))
    row_note = f"{n} rows; at least {min_rows} expected" + (
        f" (previous run {previous_row_count} rows, max drop {settings.max_row_drop_share:.0%})"
        if previous_row_count is not None else ""
    )
    duplicates = stage.duplicate_id_rows()
    totals = pd.DataFrame({"rows": [n], "duplicate_event_id_rows": [duplicates]}, dtype="int64")
    target = gxs.ensure_target(context, gxs.TOTALS_SUITE, gxs.totals_expectations())
    result = gxs.run(target, totals, parameters={"min_row_count": min_rows}, run_id=run_id,
                     build_docs=build_docs)
    outcomes += _outcomes(target, result, {
        "expect_column_values_to_be_between(rows)": row_note,
        "expect_column_values_to_be_between(duplicate_event_id_rows)":
            f"{duplicates} of {n} rows share their event_id with another row",
    })

    rates = stage.conversion_table()
    over = rates[rates["conversion_rate"] > 1]
    conversion_note = "; ".join(
        f"offer {r.offer_id}: {r.clicks} clicks / {r.displays} displays" for r in over.itertuples()
    ) or f"{len(rates)} offers, all at most 1"
    target = gxs.ensure_target(context, gxs.CONVERSION_SUITE, gxs.conversion_expectations())
    result = gxs.run(target, rates, parameters={}, run_id=run_id, build_docs=build_docs)
    outcomes += _outcomes(target, result, {"expect_column_values_to_be_between(conversion_rate)": conversion_note})

    docs = gxs.docs_index(context) if build_docs else None
    return ValidationReport(outcomes, docs, n, accepted_count, quarantined_count, stage.reason_counts(),
                            run_id, len(sample))


def validate_catalog(
    profiles: pd.DataFrame,
    offers: pd.DataFrame,
    placement_ids: Collection[str],
    *,
    context_dir: Path,
    run_id: str,
    build_docs: bool = True,
) -> list[ExpectationOutcome]:
    """The `profiles` suite on the profiles table as stored, `offers` on the normalized catalog
    (`offerflow.ingest.catalog.normalize_offers`) and `placements` on one row per configured placement.
    """
    from offerflow.ingest import expectations as gxs

    context = gxs.open_context(Path(context_dir))
    placements = offers[["offer_id", "placements", "fallback"]].explode("placements")
    regular = placements.loc[~placements["fallback"], "placements"].value_counts()
    fallback = placements.loc[placements["fallback"], "placements"].value_counts()
    ids = list(placement_ids)
    tables = {
        gxs.PROFILES_SUITE: (profiles, gxs.profiles_expectations()),
        gxs.OFFERS_SUITE: (pd.DataFrame({
            "offer_id": offers["offer_id"], "priority": offers["priority"],
            "placement_count": offers["placements"].map(len).astype("int64")}), gxs.offers_expectations()),
        gxs.PLACEMENTS_SUITE: (pd.DataFrame({
            "placement_id": ids,
            "regular_offers": regular.reindex(ids, fill_value=0).to_numpy(dtype="int64"),
            "fallback_offers": fallback.reindex(ids, fill_value=0).to_numpy(dtype="int64")}),
            gxs.placements_expectations()),
    }
    outcomes: list[ExpectationOutcome] = []
    for name, (table, expectations) in tables.items():
        target = gxs.ensure_target(context, name, expectations)
        result = gxs.run(target, table, parameters={}, run_id=run_id, build_docs=build_docs)
        outcomes += [replace(o, name=f"{name}: {o.name}") for o in _outcomes(target, result, {})]
    return outcomes


def quarantine_file(directory: Path, run_id: str) -> Path:
    safe_run = re.sub(r"[^A-Za-z0-9._-]", "_", run_id) or "run"
    return Path(directory) / f"quarantine-{safe_run}.parquet"


def write_quarantine(report: ValidationReport, directory: Path) -> Path | None:
    """Write an in-memory report's quarantined rows to `directory/quarantine-<run_id>.parquet`
    (atomically); None when nothing was quarantined."""
    if report.quarantined is None or report.quarantined.empty:
        return None
    path = quarantine_file(directory, report.run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".parquet.partial")
    report.quarantined.to_parquet(partial, index=False)
    os.replace(partial, path)
    return path


# -- preparation -------------------------------------------------------------------------------


def _utc(ts: pd.Timestamp) -> pd.Timestamp:
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _prepare(original: pd.DataFrame, first_line: int = 1) -> tuple[pd.DataFrame, list[tuple[np.ndarray, str]]]:
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


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
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
        bound = _utc(pd.Timestamp(value))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"validation.{name}: not an ISO date or datetime: {value!r}") from exc
    if end and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value.strip()):
        return bound + pd.Timedelta(days=1), False
    return bound, True


# -- row-level checks --------------------------------------------------------------------------


class _Reasons:
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


def _row_reasons(
    frame: pd.DataFrame,
    coerce_reasons: list[tuple[np.ndarray, str]],
    pre_reasons: pd.Series | None,
    *,
    offer_ids: Collection[str],
    placement_ids: Collection[str],
    settings: ValidationConfig,
    now: pd.Timestamp,
) -> _Reasons:
    n = len(frame)
    col = {name: _column(frame, name) for name in EVENT_COLUMNS}
    reasons = _Reasons(n)

    if PARSE_ERROR_COLUMN in frame.columns:
        parse_error = frame[PARSE_ERROR_COLUMN]
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


# -- outcomes --------------------------------------------------------------------------------


def _outcomes(target: Any, result: Any, observed_notes: dict[str, str]) -> list[ExpectationOutcome]:
    from offerflow.ingest.expectations import exception_message

    order = {e.id: i for i, e in enumerate(target.validation_definition.suite.expectations)}
    outcomes = []
    for item in sorted(result.results, key=lambda r: order.get(r.expectation_config.id, len(order))):
        config = item.expectation_config
        meta = config.meta or {}
        severity = str(meta.get("severity") or getattr(config.severity, "value", "critical"))
        column = config.kwargs.get("column")
        name = f"{config.type}({column})" if column else config.type
        observed = _observed(item, exception_message(item))
        if name in observed_notes and exception_message(item) is None:
            observed = observed_notes[name]
        outcomes.append(ExpectationOutcome(
            name, "warning" if severity == "warning" else "critical", bool(item.success),
            str(meta.get("why", "")), observed,
        ))
    return outcomes


def _observed(item: Any, error: str | None) -> str:
    if error:
        return f"could not be evaluated: {error}"
    result = item.result or {}
    if item.expectation_config.type == "expect_column_to_exist":
        return "column present" if item.success else "column missing"
    if "unexpected_count" in result:
        percent = result.get("unexpected_percent") or 0.0
        text = (f"{result['unexpected_count']} of {result.get('element_count')} values"
                f" unexpected ({percent:.2f}%)")
        sample = [c["value"] for c in result.get("partial_unexpected_counts") or []][:5]
        return text + (f", e.g. {sample}" if sample else "")
    mismatched = (result.get("details") or {}).get("mismatched") or {}
    problems = []
    if mismatched.get("missing"):
        problems.append(f"missing columns: {', '.join(map(str, mismatched['missing']))}")
    if mismatched.get("unexpected"):
        problems.append(f"extra columns (kept): {', '.join(map(str, mismatched['unexpected']))}")
    if problems:
        return "; ".join(problems)
    if "observed_value" in result:
        return f"observed {result['observed_value']}"
    return "ok" if item.success else "failed"
