"""A batch-decisions run as one library call: the engine, the segment, the decisions, the files.

The `batch-decisions` flow (for deployments and schedules) wraps the same steps in tasks;
`offerflow decide-batch` calls `run_batch_decisions` directly, so a decision batch on published
tables starts no Prefect server.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from offerflow.core.config import ProjectConfig
from offerflow.decisioning.batch_explain import explain_batch
from offerflow.decisioning.batch import BatchResult, decide_batch, segment_profile_ids, write_batch
from offerflow.decisioning.engine import build_engine


def batch_summary(result: BatchResult, placements: list[str], path: Path, run_id: str) -> dict[str, Any]:
    """What a batch run reports: profiles (and how many of them the profiles table does not have:
    decided as unknown profiles), placements, items, the decisions file, the arms, seconds."""
    return {"run_id": run_id, "profiles": result.profiles, "unknown_profiles": result.unknown_profiles,
            "placements": placements,
            "items": result.decisions.num_rows, "decisions_path": str(path), "arms": result.arm_counts(),
            "seconds": round(result.seconds, 3)}


def run_batch_decisions(config: ProjectConfig, placements: list[str] | None = None, profiles_file: str | None = None,
                        goal: str | None = None, bucket: str | None = None, items: int | None = None,
                        allow_duplicates: bool = False, run_id: str | None = None,
                        explain: bool = False) -> dict[str, Any]:
    """Decide for a segment (a profile-id file, or a Customer AI goal + bucket; default: everyone) in
    `placements` (default: all), write `<outputs>/batch_decisions/<run_id>.parquet` and append to the
    decision log; returns `batch_summary`. `explain`: the decisions also get `why` and `explanation`
    columns (`batch_explain`). Raises SegmentError, DecisionError, CatalogError."""
    run_id = run_id or str(uuid.uuid4())
    engine = build_engine(config, seed=config.seed)
    profile_ids = segment_profile_ids(engine.profiles, profiles_file=profiles_file, goal=goal, bucket=bucket)
    chosen = placements or [p.id for p in config.placements]
    result = decide_batch(engine, profile_ids, chosen, items=items, allow_duplicates=allow_duplicates,
                          seed=config.seed)
    if explain:
        result = explain_batch(engine, result, allow_duplicates, items)
    path = write_batch(result, config.paths.batch_decisions / f"{run_id}.parquet", config.paths.decision_log)
    return batch_summary(result, chosen, path, run_id)
