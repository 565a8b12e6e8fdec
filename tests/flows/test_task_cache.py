"""Task caching keyed on input data fingerprints: a re-run on unchanged data skips the expensive
tasks (state `Cached`) and changes no output; changed events rerun them; a cached result whose
outputs were replaced since is recomputed."""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from offerflow.core.config import load_config
from offerflow.core.store import RankingStore

pytestmark = pytest.mark.flow

EXPENSIVE = ("validate-events", "train-propensity", "train-ranking-model", "publish-ranking")


def task_states(flow_state, timeout_s: float = 30.0) -> dict[str, list[str]]:
    """Task name -> the state names of its runs in the flow run that ended in `flow_state`.

    Prefect 3 records task runs from their events, after the flow has returned: a run can be read
    without its state yet, or not at all. So the runs are read until every one has a final state
    and two reads in a row agree."""
    import time

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    flow_run = FlowRunFilter(id=FlowRunFilterId(any_=[flow_state.state_details.flow_run_id]))
    previous, deadline = None, time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_task_runs(flow_run_filter=flow_run)
            settled = all(run.state is not None and run.state.is_final() for run in runs)
            states: dict[str, list[str]] = defaultdict(list)
            for run in sorted(runs, key=lambda r: str(r.id)):
                states[run.name.rsplit("-", 1)[0]].append(run.state.name if run.state is not None else "None")
            if (settled and dict(states) == previous) or time.monotonic() > deadline:
                return dict(states)
            previous = dict(states)
            time.sleep(0.2)


def in_project(project: Path, fn, **kwargs):
    cwd = os.getcwd()
    os.chdir(project)
    try:
        return fn(config_path=str(project / "offerflow.yaml"), return_state=True, **kwargs)
    finally:
        os.chdir(cwd)


def tables(project: Path) -> dict[str, tuple[int, str]]:
    config = load_config(project / "offerflow.yaml")
    store = RankingStore(config.path(config.store.path))
    out = {}
    for placement in config.placements:
        version = store.current_version(placement.id)
        table = config.path(config.store.path) / placement.id / f"v{version:06d}" / "table.parquet"
        out[placement.id] = (version, hashlib.sha256(table.read_bytes()).hexdigest())
    return out


def test_pipeline_rerun_on_unchanged_data_is_cached_and_changes_nothing(pipeline_run):
    from offerflow.flows.pipeline import pipeline

    project, first = pipeline_run
    log = project / "data/outputs/decision_log"  # decisions other tests logged in the session's project
    aside = log.with_name("decision_log-aside")  # are new input to validation: set them aside meanwhile
    if log.exists():
        log.rename(aside)
    try:
        if aside.exists():  # a test may have run the pipeline with them: settle on the session's inputs first
            in_project(project, pipeline)
        before = tables(project)
        snapshot = (project / "data/outputs/validated/events.parquet").read_bytes()
        state = in_project(project, pipeline)
    finally:
        if aside.exists():
            aside.rename(log)
    assert state.is_completed(), state
    states = task_states(state)
    for name in EXPENSIVE:
        assert states.get(name) and set(states[name]) == {"Cached"}, (name, states)
    assert states["load-catalog"] == ["Completed"]  # cheap, and where a broken catalog is caught
    second = state.result()
    assert second["published"] == first["published"]
    assert {k: v["model_version"] for k, v in second["propensity"].items()} == \
        {k: v["model_version"] for k, v in first["propensity"].items()}
    assert tables(project) == before
    assert (project / "data/outputs/validated/events.parquet").read_bytes() == snapshot
    assert (project / "data/outputs/task_cache").is_dir()


def test_changed_events_rerun_validation(project_dir, prefect_harness):
    from offerflow.flows.validate import validate_data

    events = project_dir / "data" / "events.parquet"
    original = pq.read_table(events)
    first = in_project(project_dir, validate_data)
    assert task_states(first)["validate-events"] == ["Completed"]
    second = in_project(project_dir, validate_data)
    assert task_states(second)["validate-events"] == ["Cached"]
    assert second.result()["accepted"] == first.result()["accepted"] == original.num_rows

    pq.write_table(original.slice(0, original.num_rows - 500), events)  # 500 fewer events
    third = in_project(project_dir, validate_data)
    assert task_states(third)["validate-events"] == ["Completed"]
    assert third.result()["rows"] == original.num_rows - 500


def test_a_failure_is_not_recorded_as_a_cached_result(project_dir, prefect_harness):
    """Bad input twice: the second run's validation runs once and fails, without first finishing
    `Cached` with the first run's failure (what a worker's log showed before the step failed)."""
    from offerflow.flows.validate import validate_data

    (project_dir / "data" / "events.parquet").write_bytes(b"not parquet at all" * 10)
    for _ in range(2):
        assert task_states(in_project(project_dir, validate_data))["validate-events"] == ["BadInput"]
    assert not [p for p in (project_dir / "data/outputs/task_cache").iterdir() if len(p.name) == 32]


@pytest.mark.slow  # five validation runs: ~45 s on a busy 2-core machine
def test_a_replaced_snapshot_is_not_trusted_and_the_cache_can_be_switched_off(project_dir, prefect_harness):
    from offerflow.flows.validate import validate_data

    events = project_dir / "data" / "events.parquet"
    snapshot = project_dir / "data/outputs/validated/events.parquet"
    original_bytes = events.read_bytes()
    original = pq.read_table(events)
    in_project(project_dir, validate_data)
    pq.write_table(original.slice(0, original.num_rows - 500), events)
    assert task_states(in_project(project_dir, validate_data))["validate-events"] == ["Completed"]
    assert pq.read_metadata(snapshot).num_rows == original.num_rows - 500

    # Back to the first events: their cached validation wrote a snapshot that the second run has
    # replaced since, so it is recomputed (and the cache record replaced) rather than trusted.
    events.write_bytes(original_bytes)
    assert sorted(task_states(in_project(project_dir, validate_data))["validate-events"]) == ["Cached", "Completed"]
    assert pq.read_metadata(snapshot).num_rows == original.num_rows
    assert task_states(in_project(project_dir, validate_data))["validate-events"] == ["Cached"]

    off = in_project(project_dir, validate_data, use_cache=False)
    assert task_states(off)["validate-events"] == ["Completed"]
