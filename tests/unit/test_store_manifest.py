"""The ranking store's manifest: stage every placement, switch them together or not at all (issue 16)."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from offerflow.core import store_manifest
from offerflow.core.store import RankingStore, StoreError
from tests.unit.test_store import RANKING, posterior_frame, ranking_table

PLACEMENTS = ("web-banner", "web-sidebar", "email-hero")


@pytest.fixture
def store(tmp_path: Path) -> RankingStore:
    return RankingStore(tmp_path / "rankings", keep_versions=2)


def run(store: RankingStore, run_id: str, score: float, fail_before_switch: bool = False) -> dict[str, int]:
    """One run: stage a table per placement (tagged with the run), then switch them all."""
    with store.staging(run_id):
        staged = {}
        for placement in PLACEMENTS:
            if placement == "email-hero":
                staged[placement] = store.stage(placement, posterior_frame(), {"kind": "posterior", "run": run_id},
                                                run_id)
            else:
                staged[placement] = store.stage(placement, ranking_table(20, score=score),
                                                {**RANKING, "run": run_id}, run_id)
        if fail_before_switch:
            raise RuntimeError("boom")
        store.commit(staged, run_id)
    return staged


def serving_runs(store: RankingStore) -> set[str]:
    """The run tag of every placement's table, each read at the version the one manifest names."""
    manifest = store.manifest()
    return {store.read_metadata(p, manifest.version(p))["run"] for p in PLACEMENTS}


def test_staged_versions_serve_only_once_switched_all_together(store):
    run(store, "r1", 1.0)
    manifest = store.manifest()
    assert manifest.run_id == "r1" and manifest.versions() == {p: 1 for p in PLACEMENTS}
    assert {e["run_id"] for e in manifest.placements.values()} == {"r1"}
    assert manifest.placements["web-banner"]["row_count"] == 60
    with store.staging("r2"):
        staged = {p: store.stage(p, ranking_table(20, score=2.0), {**RANKING, "run": "r2"}, "r2")
                  for p in PLACEMENTS[:2]}
        assert staged == {"web-banner": 2, "web-sidebar": 2}
        # staged, not serving: readers, versions() and rollback targets still see run r1 only
        assert serving_runs(store) == {"r1"} and store.current_version("web-banner") == 1
        assert store.versions("web-banner") == [1] and store.read_table("web-banner")["score"][0].as_py() == 1.0
        store.commit(staged, "r2")
    assert store.manifest().versions() == {"web-banner": 2, "web-sidebar": 2, "email-hero": 1}
    assert store.read_table("web-sidebar")["score"][0].as_py() == 2.0
    assert store.commit(staged, "r3").run_id == "r2"  # nothing changes: no new manifest


@pytest.mark.parametrize("where", ["before_switch", "manifest_replace"])
def test_a_run_failing_before_its_switch_leaves_every_placement_on_its_previous_version(store, monkeypatch, where):
    run(store, "r1", 1.0)
    before = (store.root / "MANIFEST.json").read_bytes()
    if where == "manifest_replace":  # the switch itself fails: between the temporary file and os.replace
        real_replace = os.replace

        def failing_replace(src, dst):
            if Path(dst).name == "MANIFEST.json":
                raise OSError("disk full")
            real_replace(src, dst)
        monkeypatch.setattr(store_manifest.os, "replace", failing_replace)
    with pytest.raises((RuntimeError, OSError)):
        run(store, "r2", 2.0, fail_before_switch=where == "before_switch")
    monkeypatch.undo()
    assert (store.root / "MANIFEST.json").read_bytes() == before
    assert serving_runs(store) == {"r1"} and all(store.current_version(p) == 1 for p in PLACEMENTS)
    assert (store.root / "web-banner" / "v000002").is_dir()  # the failed run's orphan, named in no manifest
    assert store.versions("web-banner") == [1]
    with pytest.raises(StoreError, match="no version before 1"):
        store.rollback("web-banner")
    # the next run removes the orphans and never reuses their numbers
    assert run(store, "r3", 3.0) == {p: 3 for p in PLACEMENTS}
    assert not (store.root / "web-banner" / "v000002").exists()
    assert serving_runs(store) == {"r3"} and store.versions("web-banner") == [1, 3]
    assert not list(store.root.glob("MANIFEST.json.tmp-*"))


KILLED_RUN = """
import sys, time
from pathlib import Path
from offerflow.core.store import RankingStore
from tests.unit.test_store import RANKING, ranking_table
store = RankingStore(Path(sys.argv[1]))
with store.staging("killed"):
    store.stage("web-banner", ranking_table(20, score=9.0), RANKING, "killed")
    print("staged", flush=True)
    time.sleep(60)
"""


def test_orphans_of_a_killed_run_are_removed_and_a_live_run_s_staged_versions_are_not(store):
    run(store, "r1", 1.0)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2]), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(store.root)], stdout=subprocess.PIPE, env=env)
    try:
        assert proc.stdout.readline().strip() == b"staged"
        with store.staging("live"):  # while the other run is alive, its staged version 2 is kept
            assert store.stage("web-banner", ranking_table(5), RANKING, "live") == 3
            assert (store.root / "web-banner" / "v000002").is_dir()
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)  # the kernel released its staging lock
            assert store.stage("web-sidebar", ranking_table(5), RANKING, "live") == 2
            assert store.stage("web-banner", ranking_table(5), RANKING, "live") == 4
            # the dead run's version 2 is gone; this live run's own version 3 is kept
            assert not (store.root / "web-banner" / "v000002").exists()
            assert (store.root / "web-banner" / "v000003").is_dir()
            store.commit({"web-banner": 4, "web-sidebar": 2}, "live")
    finally:
        proc.kill()
        proc.communicate(timeout=10)
    assert store.manifest().versions() == {"web-banner": 4, "web-sidebar": 2, "email-hero": 1}
    store.publish("web-banner", ranking_table(5), RANKING)  # v3 (staged, never switched, run ended) goes
    assert store.versions("web-banner") == [4, 5] and not (store.root / "web-banner" / "v000003").exists()


def test_readers_never_see_two_runs_at_once_while_runs_switch(store):
    run(store, "r0", 0.0)
    stop, seen, errors = threading.Event(), set(), []

    def read() -> None:
        while not stop.is_set():
            try:
                runs = serving_runs(store)
            except StoreError as exc:  # a version pruned between the manifest and its table: read again
                assert "has no version" in str(exc)
                continue
            if len(runs) != 1:
                errors.append(runs)
            seen.update(runs)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(1, 15):
            run(store, f"r{i}", float(i))
            time.sleep(0.002)
    finally:
        stop.set()
        reader.join()
    assert not errors and len(seen) > 2


def test_single_placement_paths_switch_one_entry_and_copy_the_others(store):
    run(store, "r1", 1.0)
    run(store, "r2", 2.0)
    assert store.publish("web-banner", ranking_table(3, score=7.0), RANKING) == 3
    manifest = store.manifest()
    assert manifest.versions() == {"web-banner": 3, "web-sidebar": 2, "email-hero": 2}
    assert manifest.placements["web-sidebar"]["run_id"] == "r2" and manifest.run_id.startswith("publish-")
    assert store.rollback("web-banner") == 2
    assert store.manifest().versions() == {"web-banner": 2, "web-sidebar": 2, "email-hero": 2}
    assert store.manifest().run_id.startswith("rollback-")
    assert store.versions("web-banner") == [2, 3]  # keep_versions=2: version 1 was pruned


def test_a_store_written_before_manifests_loads_and_migrates(store):
    run(store, "r1", 1.0)
    run(store, "r2", 2.0)
    (store.root / "MANIFEST.json").unlink()  # as an older offerflow left it: a CURRENT file per placement
    for placement, version in (("web-banner", 1), ("web-sidebar", 2), ("email-hero", 2)):
        (store.root / placement / "CURRENT").write_text(f"{version}\n")
    assert store.manifest().versions() == {"web-banner": 1, "web-sidebar": 2, "email-hero": 2}
    assert store.versions("web-banner") == [1, 2] and store.placements() == sorted(PLACEMENTS)
    assert store.read_metadata("web-banner")["run"] == "r1" and store.snapshot("email-hero").kind == "posterior"
    assert store.rollback("web-sidebar") == 1  # the first switch writes the manifest, keeping every placement
    written = json.loads((store.root / "MANIFEST.json").read_text())
    assert {p: e["version"] for p, e in written["placements"].items()} == {"web-banner": 1, "web-sidebar": 1,
                                                                          "email-hero": 2}
    assert store.publish("web-banner", ranking_table(3), RANKING) == 3  # numbering goes on


def test_a_damaged_manifest_is_a_one_line_error(store):
    run(store, "r1", 1.0)
    (store.root / "MANIFEST.json").write_text('{"format": 1, "placements": {"web-banner": {"version": "x"}}}')
    with pytest.raises(StoreError, match=r"MANIFEST.json: not a ranking store manifest \(placements.web-banner"):
        store.read_table("web-banner")
    with pytest.raises(StoreError, match="cannot switch placement 'web-banner' to version 9: not staged"):
        RankingStore(store.root.parent / "other").commit({"web-banner": 9}, "r9")


def test_verify_names_what_serves_broken(store):
    run(store, "r1", 1.0)
    assert store.verify() == []
    parquet = store.root / "web-sidebar" / "v000001" / "table.parquet"
    parquet.write_bytes(parquet.read_bytes()[:-40])  # a torn table
    problems = store.verify()
    assert len(problems) == 1 and problems[0].startswith("placement 'web-sidebar' version 1: unreadable")
