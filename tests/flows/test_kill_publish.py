"""kill -9 at random moments of `offerflow run` never leaves placements serving a mix of runs (issue 16).

Slow (20 runs of the whole pipeline, each killed with its process group at a random moment, on one
Prefect server as `offerflow up` keeps one): `pytest -m slow tests/flows/test_kill_publish.py`.
The bench script `bench/kill_bench.py` does the same with 100 kills and prints the count.
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from kill_bench import consistency, kill_loop, make_project, prefect_server, run_to_end  # noqa: E402


@pytest.mark.slow
def test_twenty_kills_at_random_moments_leave_every_placement_on_one_complete_run(tmp_path):
    project = make_project(tmp_path / "kills", profiles=1_000, days=40, seed=16)
    with prefect_server(tmp_path / "prefect-server") as api_url:
        full_seconds = run_to_end(project, api_url)
        first = consistency(project)
        assert first["consistent"], first["problems"]

        results = kill_loop(project, kills=20, full_seconds=full_seconds, seed=16, api_url=api_url)

        assert [r for r in results if not r["consistent"]] == []
        assert any(not r["switched"] for r in results)  # some kills landed before the switch
        run_to_end(project, api_url)  # a run after all those kills completes and switches every placement
    final = consistency(project)
    assert final["consistent"] and final["run_id"] != first["run_id"], final
