"""CPU of one cap reserve (`reserve_request`, what `offerflow serve` does once per decision) in
each cap store: embedded (in process), LMDB (one write transaction) and Redis (one EVALSHA).

    .venv/bin/python bench/cap_reserve_bench.py --workdir /tmp/lb   # a project built by load_bench.py

The project's catalog and caps (the demo caps: a per-profile daily cap, a per-placement daily
decision cap, a monthly total), one `web-banner` placement of 3 offers drawn at random from its
candidates for a random profile, as the load bench's requests. The stores take turns (`--rounds`
rounds of `--reserves` each, so a slower spell of the machine falls on all of them) and each
round prints the caller thread's CPU per reserve, Redis's own CPU per reserve (its server
process, from /proc) and the wall time per reserve. Redis runs privately on a free port.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from decision_bench import cpu_seconds  # noqa: E402
from load_bench import start_redis  # noqa: E402


def requests(workdir: Path, n: int, seed: int, capped_only: bool = False) -> tuple[dict, list[tuple[list, str]]]:
    """The catalog's caps and `n` (request, profile) pairs: one `web-banner` placement of 3 offers
    (`capped_only`: 3 of which at least one has caps, so every reserve reaches the store)."""
    from offerflow.core.columns import column_values
    from offerflow.core.config import load_config
    from offerflow.ingest.catalog import load_offer_rows
    from offerflow.rules.capping import caps_of

    config = load_config(workdir / "offerflow.yaml")
    offers = load_offer_rows(config.path(config.data.offers), [p.id for p in config.placements])
    caps = caps_of(offers)
    ids = [str(o) for o in column_values(offers, "offer_id")]
    rng, work = random.Random(seed), []
    while len(work) < n:
        offers = rng.sample(ids, 3)
        if not capped_only or any(o in caps for o in offers):
            work.append(([(offers, [], "web-banner")], f"p{rng.randrange(1_000_000):07d}"))
    return caps, work


def one_round(store, work: list, server_pid: int | None) -> dict:
    now = datetime.now(timezone.utc)
    server_before = cpu_seconds([server_pid]) if server_pid else 0.0
    wall, cpu = time.perf_counter(), time.thread_time()
    for placements, profile in work:
        with store.lock:
            store.reserve_request(placements, profile, now)
    cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
    server = (cpu_seconds([server_pid]) - server_before) if server_pid else 0.0
    n = len(work)
    return {"caller_cpu_us": round(1e6 * cpu / n, 1), "server_cpu_us": round(1e6 * server / n, 1),
            "wall_us": round(1e6 * wall / n, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--reserves", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--capped-only", action="store_true", help="Every request has an offer with caps "
                                                                    "(default: 3 offers at random, ~58%% do).")
    args = parser.parse_args()
    from offerflow.rules.cap_store import RedisCapStore
    from offerflow.rules.capping import CapCounters
    from offerflow.rules.lmdb_caps import LmdbCapStore

    caps, work = requests(args.workdir, args.reserves * args.rounds, args.seed, args.capped_only)
    scratch = Path(tempfile.mkdtemp(prefix="cap-reserve-bench-"))
    redis, url = start_redis(scratch)
    try:
        stores = {"embedded": (CapCounters(caps), None), "lmdb": (LmdbCapStore(caps, scratch / "counters.lmdb"), None),
                  "redis": (RedisCapStore(caps, url, "bench"), redis.pid)}
        for store, _ in stores.values():  # first use: Redis loads its script, LMDB makes its databases
            store.reserve_request(*work[0][:1], "p-warm", datetime.now(timezone.utc))
        results: dict[str, list[dict]] = {name: [] for name in stores}
        for r in range(args.rounds):
            part = work[r * args.reserves:(r + 1) * args.reserves]
            for name, (store, pid) in stores.items():
                results[name].append(one_round(store, part, pid))
        print(json.dumps({"reserves_per_round": args.reserves, "capped_only": args.capped_only,
                          "load_avg_1m": round(os.getloadavg()[0], 2),
                          "lmdb_file_mib": round((scratch / "counters.lmdb" / "data.mdb").stat().st_blocks * 512
                                                 / 2**20, 1), **results}, indent=2))
    finally:
        redis.terminate()
        redis.wait(timeout=10)
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
