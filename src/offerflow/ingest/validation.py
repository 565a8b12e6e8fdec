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

import math
import os
import re
import tempfile
from collections.abc import Collection, Iterable
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from offerflow.core.config import ValidationConfig
from offerflow.ingest.staging import EventStage
from offerflow.core.schema import EVENT_COLUMNS
from offerflow.ingest.file_readers import PROVENANCE_COLUMNS
from offerflow.ingest.offline_docs import make_site_offline
from offerflow.ingest.row_checks import contract_column, prepare_batch, row_reasons, to_utc
from offerflow.ingest.validation_report import ExpectationOutcome, ValidationReport, expectation_outcomes

__all__ = ["ExpectationOutcome", "ValidationReport", "judge_events",
           "quarantine_file", "stage_events", "validate_catalog", "validate_events", "write_quarantine"]

_NO_EVENTS_WHY = (
    "An empty delivery means the export failed upstream; validating or training on it would"
    " silently drop every offer's history."
)


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
    return to_utc(pd.Timestamp(now if now is not None else datetime.now(timezone.utc)))


def stage_events(
    stage: EventStage,
    events: pd.DataFrame,
    pre_reasons: pd.Series | None = None,
    *,
    offer_ids: Collection[str],
    placement_ids: Collection[str],
    settings: ValidationConfig,
    now: pd.Timestamp,
    logged: bool = False,
) -> None:
    """Row-level checks of one batch (vectorized), then the batch goes to the stage (`logged`:
    displays of the decision log, `EventStage`)."""
    original = events.reset_index(drop=True)
    frame, coerce_reasons = prepare_batch(original, first_line=stage.staged_rows + 1)
    reasons = row_reasons(frame, coerce_reasons, pre_reasons, offer_ids=offer_ids,
                           placement_ids=placement_ids, settings=settings, now=now)
    text = np.full(len(frame), "", dtype=object)
    flagged = np.flatnonzero(reasons.flagged())
    text[flagged] = reasons.render(flagged)
    typed = pd.DataFrame({name: contract_column(frame, name) for name in EVENT_COLUMNS}, index=frame.index)
    internal = set(PROVENANCE_COLUMNS)
    extras = [c for c in frame.columns if c not in EVENT_COLUMNS and c not in internal]
    for name in [*extras, *PROVENANCE_COLUMNS]:
        if name in frame.columns:
            typed[name] = frame[name]
    stage.add(original, typed, text, extras, logged=logged)


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
    run = {"run_id": run_id, "build_docs": build_docs}
    sample_rows, events_outcomes = _events_suite(context, stage, offer_ids, placement_ids, settings, **run)
    outcomes += events_outcomes
    outcomes += _totals_suite(context, stage, settings, previous_row_count, **run)
    outcomes += _conversion_suite(context, stage, **run)

    docs = _offline_docs(context) if build_docs else None
    return ValidationReport(outcomes, docs, n, accepted_count, quarantined_count, stage.reason_counts(),
                            run_id, sample_rows)


def _events_suite(context: Any, stage: EventStage, offer_ids: Collection[str], placement_ids: Collection[str],
                  settings: ValidationConfig, *, run_id: str, build_docs: bool) -> tuple[int, list[ExpectationOutcome]]:
    """The `events` suite on (a sample of) the staged rows: (rows evaluated, outcomes)."""
    from offerflow.ingest import expectations as gxs

    n = stage.rows
    sample = stage.sample(settings.expectation_sample_rows)
    sampled = len(sample) < n
    target = gxs.ensure_target(context, gxs.EVENTS_SUITE, gxs.events_expectations())
    parameters = {"offer_ids": sorted(map(str, offer_ids)), "placement_ids": sorted(map(str, placement_ids)),
                  **gxs.mostly_parameters(settings)}
    result = gxs.run(target, sample, parameters=parameters, run_id=run_id, build_docs=build_docs)
    suffix = f" (in a sample of {len(sample)} of {n} rows)" if sampled else ""
    return len(sample), [replace(o, observed=o.observed + suffix) if "unexpected" in o.observed else o
                         for o in expectation_outcomes(target, result, {}, settings)]


def _totals_suite(context: Any, stage: EventStage, settings: ValidationConfig, previous_row_count: int | None,
                  *, run_id: str, build_docs: bool) -> list[ExpectationOutcome]:
    """The `event_totals` suite on the exact counts: row count versus the last run, duplicate ids."""
    from offerflow.ingest import expectations as gxs

    n = stage.rows
    min_rows = 1
    if previous_row_count is not None:
        min_rows = max(1, math.ceil(previous_row_count * (1 - settings.max_row_drop_share) - 1e-9))
    row_note = f"{n} rows; at least {min_rows} expected" + (
        f" (previous run {previous_row_count} rows, validation.max_row_drop_share {settings.max_row_drop_share:.0%}:"
        " check the file is complete or raise the setting)"
        if previous_row_count is not None else ""
    )
    duplicates = stage.duplicate_id_rows()
    totals = pd.DataFrame({"rows": [n], "duplicate_event_id_rows": [duplicates]}, dtype="int64")
    target = gxs.ensure_target(context, gxs.TOTALS_SUITE, gxs.totals_expectations())
    result = gxs.run(target, totals, parameters={"min_row_count": min_rows}, run_id=run_id,
                     build_docs=build_docs)
    return expectation_outcomes(target, result, {
        "expect_column_values_to_be_between(rows)": row_note,
        "expect_column_values_to_be_between(duplicate_event_id_rows)":
            f"{duplicates} of {n} rows share their event_id with another row",
    })


def _conversion_suite(context: Any, stage: EventStage, *, run_id: str, build_docs: bool) -> list[ExpectationOutcome]:
    """The `offer_conversion` suite on the per-offer table of the accepted rows."""
    from offerflow.ingest import expectations as gxs

    rates = stage.conversion_table()
    over = rates[rates["conversion_rate"] > 1]
    conversion_note = "; ".join(
        f"offer {r.offer_id}: {r.clicks} clicks / {r.displays} displays" for r in over.itertuples()
    ) or f"{len(rates)} offers, all at most 1"
    target = gxs.ensure_target(context, gxs.CONVERSION_SUITE, gxs.conversion_expectations())
    result = gxs.run(target, rates, parameters={}, run_id=run_id, build_docs=build_docs)
    return expectation_outcomes(target, result, {"expect_column_values_to_be_between(conversion_rate)": conversion_note})


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
        outcomes += [replace(o, name=f"{name}: {o.name}") for o in expectation_outcomes(target, result, {})]
    if build_docs:
        _offline_docs(context)
    return outcomes


def _offline_docs(context: Any) -> Path | None:
    """The Data Docs index, its pages rewritten to load local copies of their CDN assets."""
    from offerflow.ingest import expectations as gxs

    docs = gxs.docs_index(context)
    if docs is not None:
        make_site_offline(docs.parent)
    return docs


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
