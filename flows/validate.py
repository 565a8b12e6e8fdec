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

from flows.pipeline import _stop, load_catalog_task, validate_task
from offerflow.config import load_config


@flow(name="validate-data", log_prints=True)
def validate_data(config_path: str = "offerflow.yaml") -> dict[str, Any]:
    """Run the expectation suites on profiles, offers and events; quarantine bad event rows."""
    config = load_config(config_path)
    run_id = str(flow_run.get_id() or uuid.uuid4())
    catalog = load_catalog_task(config, return_state=True)
    if catalog.is_failed():
        return _stop(catalog)
    _, offers = catalog.result()
    validated = validate_task(config, offers, run_id, return_state=True)
    if validated.is_failed():
        return _stop(validated)
    ingestion = validated.result()
    counts = ingestion.counts()
    create_markdown_artifact(
        "# validation\n\n| rows | accepted | quarantined |\n|---|---|---|\n"
        f"| {counts['rows']} | {counts['accepted']} | {counts['quarantined']} |\n\n"
        f"Validated snapshot: `{ingestion.validated_path}`", key="validation-summary",
        description="Rows validated and quarantined by this run")
    return {"run_id": run_id, **counts, "validated_path": str(ingestion.validated_path),
            "quarantine_path": str(ingestion.quarantine_path or ""),
            "data_docs": str(ingestion.report.data_docs_path or "")}
