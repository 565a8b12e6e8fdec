"""Ingestion: read the project's datasets, validate the events, and keep a validated snapshot.

Events stream through in batches of `validation.batch_rows` rows (read -> type -> row checks ->
staged as Parquet), then the cross-row checks and the suites run in DuckDB over the staged
files, and the accepted rows and the quarantine are written from there in Arrow batches: peak
memory is about one batch plus DuckDB's cap (`validation.duckdb_memory_mib`), whatever the
file size. The stage lives in `<outputs>/validated/.stage-<run_id>/` and is removed afterwards.

With `data.decision_log_displays` (the default), the displays offerflow logged
(`<outputs>/decision_log/decisions-*.parquet`) are validated with the events, so a click that
names its decision joins its display and the loop closes; one the events file has too (same event
id) is read once.

The validated snapshot (`<outputs>/validated/events.parquet`, sorted by time and event id) is
what every later step reads; it is replaced atomically, so a failed run leaves the previous
snapshot (and everything published from it) untouched. Rejected rows go to
`<quarantine_dir>/quarantine-<run_id>.parquet` (written even when the run fails).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from offerflow.ingest.catalog import CatalogError, check_offers, check_profiles, read_offers, read_profiles
from offerflow.core.config import ProjectConfig
from offerflow.ingest.staging import EventStage
from offerflow.ingest.events import ABSENT_COLUMNS, coerce_event_types, read_events_batches
from offerflow.core.schema import EVENT_SCHEMA, PROPENSITY_FIELDS
from offerflow.ingest.validation import (ExpectationOutcome, ValidationReport, judge_events, quarantine_file,
                                  stage_events, validate_catalog)


class ValidationFailed(RuntimeError):
    """Critical expectations failed: the run stops before training. The message is one line per
    failed critical expectation (`ValidationReport.failure_lines`: the count, share, threshold and
    the setting that changes it), then the summary."""

    def __init__(self, summary: str, data_docs_path: Path | None = None, failures: list[str] | None = None) -> None:
        super().__init__("\n".join([*(failures or []), summary]))
        self.data_docs_path = data_docs_path
        self.failures = failures or []


@dataclass(frozen=True)
class IngestionResult:
    validated_path: Path
    quarantine_path: Path | None
    report: ValidationReport
    #: Logged displays: (among the rows, in the events file too: read once, after the events' end:
    #: left for a later run), `EventStage.logged_counts`.
    logged: tuple[int, int, int] = (0, 0, 0)

    def counts(self) -> dict[str, int]:
        return {"rows": self.report.row_count, "accepted": self.report.accepted_count,
                "quarantined": self.report.quarantined_count, "logged_displays": self.logged[0],
                "logged_displays_in_events": self.logged[1], "logged_displays_after_events": self.logged[2]}


def logged_displays_note(counts: dict[str, int]) -> str:
    """How many of the validated rows came from the decision log, for a run's summary line."""
    judged, in_events = counts.get("logged_displays", 0), counts.get("logged_displays_in_events", 0)
    later = counts.get("logged_displays_after_events", 0)
    if not judged and not in_events and not later:
        return ""
    also = f"; {in_events:,} more already in the events file, read once" if in_events else ""
    also += f"; {later:,} after the events' end, left for a later run" if later else ""
    return f" ({judged:,} of them displays from the decision log{also})"


def load_catalog(config: ProjectConfig, *, run_id: str = "catalog",
                 build_docs: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Profiles and offers, checked against the configured placements.

    The `profiles`, `offers` and `placements` expectation suites run first (their results go to
    the Data Docs), then the catalog checks, which raise a `CatalogError` with every problem; a
    critical expectation that fails where those checks pass raises one too.
    """
    profiles_path, offers_path = config.path(config.data.profiles), config.path(config.data.offers)
    placement_ids = [p.id for p in config.placements]
    raw_profiles = read_profiles(profiles_path)
    offers = read_offers(offers_path)
    outcomes = validate_catalog(raw_profiles, offers, placement_ids,
                                context_dir=config.path(config.validation.great_expectations_dir),
                                run_id=run_id, build_docs=build_docs)
    profiles = check_profiles(raw_profiles, str(profiles_path))
    # Rules may use Customer AI scores, which exist only after training: check them against the
    # columns the pipeline will add (all missing for now).
    with_scores = profiles.assign(**{
        f"propensity.{goal.name}.{field}": pd.Series(None, index=profiles.index,
                                                     dtype="float64" if kind == "number" else "string")
        for goal in config.propensity_goals for field, kind in PROPENSITY_FIELDS.items()})
    check_offers(offers, placement_ids, source=str(offers_path), profiles=with_scores)
    failed = [o for o in outcomes if not o.success and o.severity == "critical"]
    if failed:
        raise CatalogError("catalog expectations failed: " + "; ".join(f"{o.name} ({o.observed})" for o in failed))
    return profiles, offers


def validated_events(config: ProjectConfig) -> Path:
    """The validated events snapshot the training and scoring flows read; FileNotFoundError with a
    one-line message when no pipeline run has written one yet."""
    path = config.paths.validated_events
    if not path.exists():
        raise FileNotFoundError(f"{path}: no validated events yet; run the pipeline (offerflow run) first")
    return path


def validated_run_id(config: ProjectConfig) -> str | None:
    """The run that wrote the current validated snapshot (None before the first one)."""
    try:
        return str(json.loads((config.paths.validated / "last_run.json").read_text())["run_id"])
    except (FileNotFoundError, KeyError, ValueError):
        return None


def missing_columns_warning(columns: list[str]) -> ExpectationOutcome:
    """A warning naming the optional event columns the file lacked (read as all nulls)."""
    return ExpectationOutcome(
        "optional event columns present", "warning", False,
        "A column missing from the export reads as all nulls: propensities, values or decision ids"
        " then silently drop out of evaluation and training.",
        f"missing optional column(s), filled with nulls: {', '.join(columns)}")


def _previous_row_count(state_file: Path) -> int | None:
    try:
        return int(json.loads(state_file.read_text())["row_count"])
    except (FileNotFoundError, KeyError, ValueError):
        return None


def ingest_events(config: ProjectConfig, offers: pd.DataFrame, run_id: str,
                  now: datetime | None = None, build_docs: bool = True) -> IngestionResult:
    """Read, type, validate and quarantine the events in batches; write the validated snapshot.

    Raises `ValidationFailed` (with a readable summary) when a critical expectation fails; the
    quarantine file is still written so the bad rows can be inspected. Raises `EventFileError`
    for a whole-file problem, before anything is written.
    """
    settings = config.validation
    out_dir = config.paths.validated
    state_file = out_dir / "last_run.json"
    now_ts = pd.Timestamp(now if now is not None else datetime.now(timezone.utc))
    now_ts = now_ts.tz_localize("UTC") if now_ts.tzinfo is None else now_ts.tz_convert("UTC")
    checks = dict(offer_ids=set(offers["offer_id"]), placement_ids=[p.id for p in config.placements],
                  settings=settings)
    safe_run = re.sub(r"[^A-Za-z0-9._-]", "_", run_id) or "run"
    absent: set[str] | None = None  # optional columns missing from every batch
    with EventStage(out_dir / f".stage-{safe_run}", memory_limit_mib=settings.duckdb_memory_mib) as stage:
        for batch in read_events_batches(config.path(config.data.events), batch_rows=settings.batch_rows):
            batch_absent = set(batch.attrs.get(ABSENT_COLUMNS, ()))
            absent = batch_absent if absent is None else absent & batch_absent
            typed, reasons = coerce_event_types(batch)
            stage_events(stage, typed, reasons, now=now_ts, **checks)
            del batch, typed, reasons
        if config.data.decision_log_displays:
            _stage_logged_displays(stage, config.paths.logged_display_files(), settings.batch_rows, now_ts, checks)
        report = judge_events(
            stage, **checks, context_dir=config.path(settings.great_expectations_dir), run_id=run_id,
            previous_row_count=_previous_row_count(state_file), build_docs=build_docs)
        if absent:
            report = replace(report, outcomes=[*report.outcomes, missing_columns_warning(
                [c for c in EVENT_SCHEMA.names if c in absent])])
        quarantine_path = None
        if report.quarantined_count:
            quarantine_path = quarantine_file(config.paths.quarantine, run_id)
            quarantine_path.parent.mkdir(parents=True, exist_ok=True)
            partial = quarantine_path.with_suffix(".parquet.partial")
            stage.write(stage.quarantine_batches(run_id), partial)
            partial.replace(quarantine_path)
        if not report.success:
            raise ValidationFailed(report.summary(), report.data_docs_path,
                                   report.failure_lines(config.path(config.data.events).name))
        path = out_dir / "events.parquet"
        tmp = out_dir / f".events-{safe_run}.parquet.tmp"
        written = stage.write(stage.accepted_batches(sort=True), tmp, schema=EVENT_SCHEMA)
        assert written == report.accepted_count, "accepted rows lost while writing the snapshot"
        tmp.replace(path)
        logged = stage.logged_counts()
    state_file.write_text(json.dumps({"run_id": run_id, "row_count": report.row_count,
                                      "accepted": report.accepted_count,
                                      "quarantined": report.quarantined_count}))
    return IngestionResult(path, quarantine_path, report, logged)


def _stage_logged_displays(stage: EventStage, files: list[Path], batch_rows: int, now: pd.Timestamp,
                           checks: dict) -> None:
    """Stage the decision log's display files as logged batches (`EventStage`), file by file."""
    for path in files:
        for batch in read_events_batches(path, batch_rows=batch_rows):
            typed, reasons = coerce_event_types(batch)
            stage_events(stage, typed, reasons, now=now, logged=True, **checks)
