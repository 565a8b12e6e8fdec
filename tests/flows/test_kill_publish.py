"""kill -9 at random moments of `offerflow run` never leaves placements serving a mix of runs (issue 16).

Slow (each run starts its own Prefect server and trains everything): `pytest -m slow tests/flows/test_kill_publish.py`.
The bench script `bench/kill_bench.py` does the same with 100 kills and prints the count.
"""

import sys
from pathlib import Path

import pytest

from tests.conftest import make_project

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from kill_bench import consistency, kill_loop, run_to_end  # noqa: E402


@pytest.mark.slow
def test_twenty_kills_at_random_moments_leave_every_placement_on_one_complete_run(tmp_path, world_dir):
    project = make_project(tmp_path, world_dir)
    full_seconds = run_to_end(project)
    first = consistency(project)
    assert first["consistent"], first["problems"]

    results = kill_loop(project, kills=20, full_seconds=full_seconds, seed=16)

    assert [r for r in results if not r["consistent"]] == []
    assert any(not r["switched"] for r in results)  # some kills landed before the switch
    run_to_end(project)  # a run after all those kills completes and switches every placement
    final = consistency(project)
    assert final["consistent"] and final["run_id"] != first["run_id"], final
