"""Batch decisioning as a Prefect flow: decide for every profile of a segment, write the results.
(`offerflow decide-batch` runs the same steps without Prefect: `decisioning/batch_runs.py`.)

The segment is a file of profile ids (one per line, or a CSV/Parquet with a `profile_id` column) or
a Customer AI bucket (`goal` + `bucket`: profiles whose `propensity.<goal>.bucket` is low, medium
or high); with `explain`, each decided item also says why (`batch_explain`). The flow writes one
decisions dataset (`<outputs>/batch_decisions/<run>.parquet`) and appends the displays and their
metadata to the decision log, where cap counters and the next training run find them.
"""

from __future__ import annotations

import uuid
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from offerflow.flows.guard_rails import guard_rails
from offerflow.flows.bad_input import reports_bad_input, retry_unless_bad_input
from offerflow.decisioning.batch import decide_batch, segment_profile_ids, write_batch
from offerflow.decisioning.batch_explain import explain_batch
from offerflow.decisioning.batch_runs import batch_summary
from offerflow.decisioning.switches import load_serving_config
from offerflow.decisioning.engine import build_engine


@task(name="load-decision-engine", retries=2, retry_delay_seconds=[1, 5], cache_policy=NO_CACHE,
      retry_condition_fn=retry_unless_bad_input)
@reports_bad_input
def load_engine_task(config):
    return build_engine(config, seed=config.seed)


@task(name="decide-segment", cache_policy=NO_CACHE)
@reports_bad_input
def decide_task(engine, profile_ids, placements: list[str], items: int | None, allow_duplicates: bool,
                explain: bool = False):
    result = decide_batch(engine, profile_ids, placements, items=items, allow_duplicates=allow_duplicates,
                          seed=engine.config.seed)
    return explain_batch(engine, result, allow_duplicates, items) if explain else result


@task(name="write-decisions", retries=2, retry_delay_seconds=[1, 5], cache_policy=NO_CACHE)
def write_task(result, config, run_id: str):
    return write_batch(result, config.paths.batch_decisions / f"{run_id}.parquet",
                       config.paths.decision_log)


@flow(**guard_rails("batch-decisions"), log_prints=True)
@reports_bad_input
def batch_decisions(config_path: str = "offerflow.yaml", placements: list[str] | None = None,
                    profiles_file: str | None = None, goal: str | None = None, bucket: str | None = None,
                    items: int | None = None, allow_duplicates: bool = False, explain: bool = False) -> dict[str, Any]:
    """Decide for a segment (a profile-id file, or a Customer AI goal + bucket; default: everyone).
    `explain`: the decisions dataset also gets `why` and `explanation` columns (`batch_explain`)."""
    config = load_serving_config(config_path)
    run_id = str(flow_run.get_id() or uuid.uuid4())
    engine = load_engine_task(config, return_state=True).result()  # raises what a BadInput state carries
    profile_ids = segment_profile_ids(engine.profiles, profiles_file=profiles_file, goal=goal, bucket=bucket)
    chosen = placements or [p.id for p in config.placements]
    result = decide_task(engine, profile_ids, chosen, items, allow_duplicates, explain, return_state=True).result()
    path = write_task(result, config, run_id)
    summary = batch_summary(result, chosen, path, run_id)
    get_run_logger().info("decided %s profiles x %s placements in %.1f s -> %s", result.profiles, len(chosen),
                          result.seconds, path)
    return summary
