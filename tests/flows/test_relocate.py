"""A copied project is relocatable (issue 16): copied with `cp -r` and run while the original is
moved away, it reuses its task cache, loads its registered models from its own `mlruns/`, and
writes nothing where the original was."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from pathlib import Path

import pytest

from offerflow.core.config import load_config
from offerflow.core.paths import project_tracker
from offerflow.core.tracking import CHAMPION
from tests.flows.test_task_cache import EXPENSIVE, in_project, tables, task_states

pytestmark = pytest.mark.flow


def listing(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under `root`: relative path -> (size, mtime in ns)."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*") if p.is_file()}


def stored_text(db: Path) -> str:
    """Every value MLflow's SQLite database holds, as one text."""
    with sqlite3.connect(db) as con:
        return "\n".join(con.iterdump())


def test_a_copied_project_reuses_its_cache_loads_its_models_and_never_writes_into_the_original(pipeline_run, tmp_path):
    from offerflow.flows.pipeline import pipeline

    project, _ = pipeline_run
    assert in_project(project, pipeline).is_completed()  # the original is up to date: its steps are cached
    before = tables(project)
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(project), str(copy)], check=True)  # as a user copies a project
    away = project.with_name(project.name + "-away")
    project.rename(away)
    try:
        untouched = listing(away)
        state = in_project(copy, pipeline)
        assert state.is_completed(), state
        states = task_states(state)
        assert not project.exists(), sorted(str(p) for p in project.rglob("*"))[:20]  # nothing written where it was
        assert listing(away) == untouched
        for name in EXPENSIVE:
            assert states.get(name) and set(states[name]) == {"Cached"}, (name, states)
        assert tables(copy) == before

        tracker = project_tracker(load_config(copy / "offerflow.yaml"))
        champions = [m.name for m in tracker.client.search_registered_models() if CHAMPION in m.aliases]
        assert champions
        for name in champions:  # loads from the copy's mlruns/: the original's is gone
            assert tracker.load_lightgbm(f"models:/{name}@{CHAMPION}")is not None
        stored = stored_text(copy / "mlflow.db")
        assert str(copy / "mlruns") in stored and f"{project}{os.sep}" not in stored
    finally:
        away.rename(project)



def test_a_cached_result_is_re_rooted_in_the_copy_and_left_alone_elsewhere(tmp_path):
    from dataclasses import dataclass

    from offerflow.flows.caching import rebased

    @dataclass(frozen=True)
    class Result:
        path: Path
        uri: str
        rows: int

    old, new = tmp_path / "a", tmp_path / "b"
    value = (Result(old / "data/x.parquet", (old / "mlruns/1").as_uri(), 3), [str(old / "y")], {"z": tmp_path / "c"})
    moved = rebased(value, [old], new)
    assert moved == (Result(new / "data/x.parquet", (new / "mlruns/1").as_uri(), 3), [str(new / "y")],
                     {"z": tmp_path / "c"})
    assert rebased(moved, [old], new) is moved  # nothing under the old folder: the same object
