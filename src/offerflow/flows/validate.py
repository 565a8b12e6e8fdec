"""Validate the event data on its own (`validate-data`): the catalog suites, then the events with
quarantine, writing the validated snapshot that the retraining flows read.

The pipeline's own tasks do the work; bad input ends the run `Failed` with the one-line reason,
and the last published ranking tables keep serving.
"""

from __future__ import annotations

import uuid
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from offerflow.flows.guard_rails import guard_rails
from offerflow.flows.bad_input import reports_bad_input, stop
from offerflow.flows.pipeline import load_catalog_task, validate_events
from offerflow.core.config import load_config


@flow(**guard_rails("validate-data"), log_prints=True)
@reports_bad_input
def validate_data(config_path: str = "offerflow.yaml", use_cache: bool = True) -> dict[str, Any]:
    """Run the expectation suites on profiles, offers and events; quarantine bad event rows."""
    config = load_config(config_path)
    run_id = str(flow_run.get_id() or uuid.uuid4())
    catalog = load_catalog_task(config, return_state=True)
    if catalog.is_failed():
        return stop(catalog)
    _, offers = catalog.result()
    validated = validate_events(config, offers, run_id, use_cache)
    if validated.is_failed():
        return stop(validated)
    ingestion = validated.result()
    counts = ingestion.counts()
    warnings = [f"{w.name}: {w.observed}" for w in ingestion.report.warnings]
    create_markdown_artifact(
        "# validation\n\n| rows | accepted | quarantined |\n|---|---|---|\n"
        f"| {counts['rows']} | {counts['accepted']} | {counts['quarantined']} |\n\n"
        f"Validated snapshot: `{ingestion.validated_path}`"
        + "".join(f"\n\n- warning: {w}" for w in warnings), key="validation-summary",
        description="Rows validated and quarantined by this run")
    return {"run_id": run_id, **counts, "validated_path": str(ingestion.validated_path),
            "quarantine_path": str(ingestion.quarantine_path or ""),
            "data_docs": str(ingestion.report.data_docs_path or ""), "warnings": warnings}
