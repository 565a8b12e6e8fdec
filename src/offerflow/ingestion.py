"""Ingestion: read the project's datasets, validate the events, and keep a validated snapshot.

The validated snapshot (`<outputs>/validated/events.parquet`) is what every later step reads; it
is replaced atomically, so a failed run leaves the previous snapshot (and everything published
from it) untouched. Rejected rows go to `<quarantine_dir>/quarantine-<run_id>.parquet`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from offerflow.catalog import load_offers, load_profiles
from offerflow.config import ProjectConfig
from offerflow.events import coerce_event_types, read_events
from offerflow.schema import EVENT_SCHEMA, PROPENSITY_FIELDS
from offerflow.validation import ValidationReport, validate_events, write_quarantine


class ValidationFailed(RuntimeError):
    """Critical expectations failed: the run stops before training. The message is the summary."""


@dataclass(frozen=True)
class IngestionResult:
    validated_path: Path
    quarantine_path: Path | None
    report: ValidationReport

    def counts(self) -> dict[str, int]:
        return {"rows": self.report.row_count, "accepted": len(self.report.accepted),
                "quarantined": len(self.report.quarantined)}


def load_catalog(config: ProjectConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Profiles and offers, checked against the configured placements."""
    profiles = load_profiles(config.path(config.data.profiles))
    # Rules may use Customer AI scores, which exist only after training: check them against the
    # columns the pipeline will add (all missing for now).
    with_scores = profiles.assign(**{
        f"propensity.{goal.name}.{field}": pd.Series(None, index=profiles.index,
                                                     dtype="float64" if kind == "number" else "string")
        for goal in config.propensity_goals for field, kind in PROPENSITY_FIELDS.items()})
    offers = load_offers(config.path(config.data.offers), [p.id for p in config.placements], profiles=with_scores)
    return profiles, offers


def validated_dir(config: ProjectConfig) -> Path:
    return config.path(config.data.outputs_dir) / "validated"


def _previous_row_count(state_file: Path) -> int | None:
    try:
        return int(json.loads(state_file.read_text())["row_count"])
    except (FileNotFoundError, KeyError, ValueError):
        return None


def ingest_events(config: ProjectConfig, offers: pd.DataFrame, run_id: str,
                  now: datetime | None = None, build_docs: bool = True) -> IngestionResult:
    """Read, type, validate and quarantine the events; write the validated snapshot.

    Raises `ValidationFailed` (with a readable summary) when a critical expectation fails; the
    quarantine file is still written so the bad rows can be inspected.
    """
    raw = read_events(config.path(config.data.events))
    typed, reasons = coerce_event_types(raw)
    out_dir = validated_dir(config)
    state_file = out_dir / "last_run.json"
    report = validate_events(
        typed, offer_ids=set(offers["offer_id"]), placement_ids=[p.id for p in config.placements],
        settings=config.validation, context_dir=config.path(config.validation.great_expectations_dir),
        run_id=run_id, now=now or datetime.now(timezone.utc), previous_row_count=_previous_row_count(state_file),
        pre_reasons=reasons, build_docs=build_docs)
    quarantine_path = write_quarantine(report, config.path(config.data.quarantine_dir))
    if not report.success:
        raise ValidationFailed(report.summary())
    out_dir.mkdir(parents=True, exist_ok=True)
    accepted = report.accepted[list(EVENT_SCHEMA.names)].sort_values(["timestamp", "event_id"], kind="stable")
    path = out_dir / "events.parquet"
    tmp = out_dir / f".events-{run_id}.parquet.tmp"
    pq.write_table(pa.Table.from_pandas(accepted, schema=EVENT_SCHEMA, preserve_index=False), tmp,
                   compression="zstd")
    tmp.replace(path)
    state_file.write_text(json.dumps({"run_id": run_id, "row_count": report.row_count,
                                      "accepted": len(report.accepted),
                                      "quarantined": len(report.quarantined)}))
    return IngestionResult(path, quarantine_path, report)
