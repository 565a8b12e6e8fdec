"""What purging an old window of the LMDB cap store costs the requests: the request that first sees
the new window, and the reserves another worker makes meanwhile (they wait for LMDB's write mutex).

    .venv/bin/python bench/cap_purge_bench.py --old 1000000

Writes `--old` per-profile counters of yesterday's window (a daily per-profile cap, as after a
busy day), then another process (spawned: a second worker) reserves today's counters in a loop,
timing each reserve, for `--baseline` seconds with nothing else writing and then while this
process (a worker that decided yesterday) makes its first request of the new day and the old
counters are deleted. Prints that
request's time, how long until the old counters were gone (polled with read transactions every
10 ms), the purge transactions (when the store has a purge thread: their count and the longest
time one held the mutex) and the other worker's reserve times in both phases. Run it with
PYTHONPATH pointing at another checkout's src to measure that code (the purge is timed from the
outside, so a store that purges inside the request is measured the same way).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

CAPS_SPEC = {"event": "display", "scope": "per_profile", "limit": 3, "reset": "daily"}
TODAY = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(hours=12)


def _caps() -> dict:
    from offerflow.rules.capping import CapRule

    return {"o-1": (CapRule(**CAPS_SPEC),)}


def _other_caps() -> dict:
    """The other worker's offer: a per-profile cap that never resets (its window has nothing older,
    so that worker purges nothing itself; its reserves only wait for the writer mutex)."""
    from offerflow.rules.capping import CapRule

    return {"o-2": (CapRule(event="display", scope="per_profile", limit=1_000_000, reset="never"),)}


def fill(path: Path, n: int) -> None:
    """`n` per-profile counters of yesterday's window, 100,000 a transaction."""
    from offerflow.rules.lmdb_caps import LmdbCapStore

    store, caps = LmdbCapStore(_caps(), path), _caps()
    family, yesterday = caps["o-1"][0].family, TODAY - timedelta(days=1)
    for lo in range(0, n, 100_000):
        keys = [store.key(family, yesterday, "o-1", "web", f"old-{k:07d}").encode()
                for k in range(lo, min(n, lo + 100_000))]
        with store._write() as txn:
            for key in keys:
                txn.put(key, (1).to_bytes(8, "little"))


def other_worker(path: str, phase, stop, out) -> None:
    """A second worker: reserves today's counters in a loop; each reserve's wall time, by phase."""
    import random

    from offerflow.rules.lmdb_caps import LmdbCapStore

    store, rng = LmdbCapStore(_other_caps(), Path(path)), random.Random(1)
    store.reserve(["o-2"], "web", "warm", TODAY)
    times: dict[int, list[float]] = {0: [], 1: []}
    while not stop.is_set():
        profile = f"new-{rng.randrange(100_000):06d}"
        started = time.perf_counter()
        store.reserve(["o-2"], "web", profile, TODAY)
        times[phase.value].append(time.perf_counter() - started)
    out.put({p: _summary(t) for p, t in times.items()})


def _summary(times: list[float]) -> dict:
    if not times:
        return {"reserves": 0}
    ordered = sorted(times)
    return {"reserves": len(times), "median_us": round(1e6 * ordered[len(ordered) // 2], 1),
            "p99_9_us": round(1e6 * ordered[int(len(ordered) * 0.999)], 1),
            "max_ms": round(1e3 * ordered[-1], 3), "over_1ms": sum(t > 1e-3 for t in times)}


def entries(env, db) -> int:
    with env.begin(db=db) as txn:
        return txn.stat(db)["entries"]


def old_left(store) -> bool:
    """Whether any counter of o-1's family is older than today's window (one read transaction)."""
    head = store.key(_caps()["o-1"][0].family, TODAY, "", "", "").split("\x1f")[0].encode()
    prefix = head[:head.index(b":", 2) + 1]
    with store.env.begin(db=store.counters) as txn:
        cursor = txn.cursor()
        return bool(cursor.set_range(prefix)) and cursor.key() < head


def run(path: Path, baseline_s: float) -> dict:
    ctx = multiprocessing.get_context("spawn")
    phase, stop, out = ctx.Value("i", 0), ctx.Event(), ctx.Queue()
    worker = ctx.Process(target=other_worker, args=(str(path), phase, stop, out), daemon=True)
    worker.start()
    try:
        return _first_request_and_purge(path, phase, stop, out, worker, baseline_s)
    finally:
        stop.set()  # the worker never outlives this process's bench, even on an error


def _first_request_and_purge(path: Path, phase, stop, out, worker, baseline_s: float) -> dict:
    from offerflow.rules import lmdb_caps
    from offerflow.rules.lmdb_caps import LmdbCapStore

    time.sleep(1.0 + baseline_s)  # its start-up, then the baseline phase
    store = LmdbCapStore(_caps(), path)  # this process: a worker started yesterday, whose clock passes midnight
    store.reserve(["o-1"], "web", "yesterday", TODAY - timedelta(days=1))
    purger = lmdb_caps.purger() if hasattr(lmdb_caps, "purger") else None
    if purger is not None:  # nothing older than yesterday: done at once
        purger.wait(60)
    phase.value = 1
    started = time.perf_counter()
    store.reserve(["o-1"], "web", "first-of-the-day", TODAY)
    request_s = time.perf_counter() - started
    left_after_request = entries(store.env, store.counters)  # old and today's (both workers')
    while old_left(store) and time.perf_counter() - started < 600:
        time.sleep(0.01)  # polled until the old ones are gone
    purge_s = time.perf_counter() - started
    if purger is not None:
        purger.wait(60)
    stop.set()
    other = out.get(timeout=120)
    worker.join(timeout=60)
    figures = {"first_request_ms": round(1e3 * request_s, 2), "entries_after_first_request": left_after_request,
               "old_gone_after_s": round(purge_s, 2), "other_worker_baseline": other[0],
               "other_worker_while_purging": other[1]}
    if purger is not None:
        figures.update(purge_transactions=purger.transactions, purge_deleted=purger.deleted,
                       purge_longest_txn_ms=round(1e3 * purger.longest_s, 3),
                       purge_mean_txn_ms=round(1e3 * purger.held_s / max(1, purger.transactions), 3),
                       purge_chunk=lmdb_caps.PURGE_CHUNK, purge_pause_ms=1e3 * lmdb_caps.PURGE_PAUSE_S)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", type=int, default=1_000_000, help="Old per-profile counters to purge.")
    parser.add_argument("--baseline", type=float, default=3.0, help="Seconds of the other worker alone first.")
    args = parser.parse_args()
    import offerflow

    scratch = Path(tempfile.mkdtemp(prefix="cap-purge-bench-"))
    try:
        path = scratch / "counters.lmdb"
        started = time.perf_counter()
        fill(path, args.old)
        filled_s = time.perf_counter() - started
        load_before = os.getloadavg()
        figures = run(path, args.baseline)
        print(json.dumps({"utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
                          "code": str(Path(offerflow.__file__).resolve().parents[1]), "old_counters": args.old,
                          "fill_s": round(filled_s, 1), "load_avg_before": [round(x, 2) for x in load_before],
                          "load_avg_after": [round(x, 2) for x in os.getloadavg()], **figures}, indent=2))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
