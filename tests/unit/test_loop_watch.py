"""The opt-in event-loop watch of a serving worker (`loop_watch`): blocks found and explained."""

from __future__ import annotations

import asyncio
import gc
import json
import time

from offerflow.decisioning.loop_watch import WATCH_ENV, LoopWatch, watch_from_env


def _spin(cpu_s: float) -> None:
    """Hold the loop for `cpu_s` seconds of this thread's CPU (however long that takes on a busy machine)."""
    started = time.thread_time()
    while time.thread_time() - started < cpu_s:
        pass


def test_a_busy_callback_and_a_full_collection_are_found_and_told_apart(tmp_path):
    async def run() -> dict:
        watch = LoopWatch(tmp_path).start(asyncio.get_running_loop())
        await asyncio.sleep(0.02)
        started = time.perf_counter()
        _spin(0.015)
        watch.answered(started, time.perf_counter(), 0.015)
        await asyncio.sleep(0.02)
        garbage = [[i] for i in range(400_000)]
        await asyncio.sleep(0.02)  # building it blocks too: the collection gets a loop turn of its own
        gc.collect()
        del garbage
        await asyncio.sleep(0.02)
        return watch.stop()

    report = asyncio.run(run())
    assert report == json.loads(next(tmp_path.glob("loop-watch-*.json")).read_text())
    assert report["answers"] == 1 and report["answers_by_cpu_ms"][">=5"] == 1 and report["slow_answers"] == 1
    spun = [b for b in report["longest"] if b["loop_cpu_ms"] >= 14 and b["gc_ms"] == 0]
    assert spun and spun[0]["blocked_ms"] >= 10 and spun[0]["cause"] == "slow answer"
    collected = [b for b in report["longest"] if b["gc_ms"] > 0 and b["cause"].startswith("gc gen2")]
    assert collected and report["gc"]["gen2"]["count"] >= 1
    assert report["blocked"][">=10ms"] >= 2


def test_off_unless_the_environment_names_a_directory(monkeypatch, tmp_path):
    monkeypatch.delenv(WATCH_ENV, raising=False)
    assert watch_from_env() is None
    monkeypatch.setenv(WATCH_ENV, str(tmp_path))
    assert watch_from_env().directory == tmp_path
