"""Open-loop load benchmark of `offerflow serve`: one or several workers, embedded, LMDB or Redis caps.

    .venv/bin/python bench/load_bench.py --rate 4000 --seconds 30                            # 1 worker, embedded caps
    .venv/bin/python bench/load_bench.py --rate 8000 --seconds 30 --workers 2 --caps lmdb    # shared LMDB caps
    .venv/bin/python bench/load_bench.py --rate 8000 --seconds 30 --workers 2 --redis        # shared Redis caps

Builds the decision bench's project (`decision_bench.build_project`: N seeded profiles, the demo
catalog with its caps, published tables), starts `offerflow serve --workers W` (with `--redis`
(`--caps redis`): a private redis-server on a free port, `caps.store` pointing at it; with
`--caps lmdb`: `caps.store: lmdb`, its file emptied before the run) and drives it from `--clients`
generator processes (uvloop, keep-alive connections) sharing one schedule: request k is due at
t0 + k / rate and its latency counts from then, so a slow server cannot hide its queue. 1% of the
requests are malformed (expected: 422). Prints JSON: served rate, p50/p95/p99 of the valid answers,
errors by status, the CPU the server processes (workers and Redis) and the generators used per
decision (and each server process's CPU seconds: how the workers share the load), the 1-minute
load average before and after, `other_cpu_s`: the CPU every other process of the machine took
during the run (a run that had the machine to itself shows ~0; `--wait-quiet S` waits for that
first), `cap_violations`: counters of the decision log above their cap's
limit afterwards (must be 0), and the decisions answered (warm-up included) next to those in the
decision log once the server has stopped (SIGTERM; equal when a graceful stop lost none).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from decision_bench import (REPO, build_project, cpu_seconds, http_requests, other_cpu_seconds,  # noqa: E402
                            processes_cpu, server_pids, summarize, wait_healthy, wait_until_quiet)
from open_loop import Schedule  # noqa: E402

MALFORMED = [b'{"profile_id": "p1", "placements": ', b'{"placements": ["web-banner"]}',
             b'{"profile_id": 7, "placements": "web-banner", "items": 99}']


def request_bodies(profiles_path: Path, seed: int, n: int = 100_000, malformed_share: float = 0.01) -> list[bytes]:
    """Single-placement decision bodies for random profiles, every 1/`malformed_share`-th malformed."""
    import pandas as pd

    ids = pd.read_parquet(profiles_path, columns=["profile_id"])["profile_id"].to_numpy()
    rng = np.random.default_rng(seed)
    bodies = [json.dumps({"profile_id": str(pid), "placements": ["web-banner"]}).encode()
              for pid in rng.choice(ids, size=min(len(ids), n), replace=False)]
    every = round(1 / malformed_share)
    for k in range(0, len(bodies), every):
        bodies[k] = MALFORMED[(k // every) % len(MALFORMED)]
    return bodies


def generator(args: tuple) -> tuple[np.ndarray, np.ndarray, float, float, np.ndarray, dict | None]:
    """One generator process: its share of the schedule; returns latencies, statuses, elapsed, CPU s,
    send lags and, with `watch`, its own event loop's blocked intervals (`loop_watch`). A generator's
    own stall counts as latency in an open loop, so it keeps the collector away: what the process
    inherited (the parent's frames and imports) is frozen and collection is off while it drives
    (the requests it makes are freed by reference counting)."""
    port, requests, rate, seconds, connections, t0, phase, watch = args
    import uvloop

    async def run() -> tuple:
        from offerflow.decisioning.loop_watch import LoopWatch

        watching = LoopWatch().start(asyncio.get_running_loop()) if watch else None
        figures = await Schedule(requests, rate, seconds, t0, phase).run(port, connections)
        return (*figures, None if watching is None else _watch_summary(watching.stop()))

    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        started = time.process_time()
        latencies, statuses, elapsed, send_lags, blocked = uvloop.run(run())
    finally:
        gc.enable()
        gc.unfreeze()
    return latencies, statuses, elapsed, time.process_time() - started, send_lags, blocked


def _watch_summary(report: dict) -> dict:
    """The counts of a `loop_watch` report, without its per-interval details."""
    return {k: report[k] for k in ("seconds", "blocked", "blocked_ms_total", "causes", "gc")}


def drive_processes(port: int, bodies: list[bytes], rate: float, seconds: float, connections: int,
                    clients: int, pool, watch: bool = False) -> dict:
    """`clients` generator processes, each at rate / clients, interleaved on one schedule."""
    requests = http_requests(bodies)
    t0 = time.perf_counter() + 1.0
    jobs = [(port, requests[i::clients], rate / clients, seconds, max(1, connections // clients), t0, i / clients,
             watch) for i in range(clients)]
    results = pool.map(generator, jobs)
    figures = summarize(np.concatenate([r[0] for r in results]), np.concatenate([r[1] for r in results]),
                        max(r[2] for r in results), rate, np.concatenate([r[4] for r in results]))
    figures["client_cpu_s"] = round(sum(r[3] for r in results), 1)
    if watch:
        figures["client_loop_watch"] = [r[5] for r in results]
    return figures


def start_redis(root: Path) -> tuple[subprocess.Popen, str]:
    from offerflow.ops.servers import free_port, redis_argv

    port = free_port()
    proc = subprocess.Popen(redis_argv(port, root), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    time.sleep(0.5)
    return proc, f"redis://127.0.0.1:{port}/0"


def cap_violations(config_path: Path) -> int:
    """Counters of the decision log (and events) above their rule's limit: 0 when caps held."""
    import pyarrow as pa
    import pyarrow.compute as pc
    from offerflow.core.config import load_config
    from offerflow.ingest.catalog import load_offers
    from offerflow.rules.capping import caps_of, count_cap_events

    config = load_config(config_path)
    caps = caps_of(load_offers(config.path(config.data.offers), [p.id for p in config.placements]))
    families = [r.family for rules in caps.values() for r in rules]
    counts = count_cap_events(families, sorted(caps), None, config.paths.decision_log, datetime.now(timezone.utc))
    over = 0
    for offer_id, rules in caps.items():
        for rule in rules:
            frame = counts[rule.family]  # a DataFrame, or (since `offerflow decide` left pandas) an Arrow table
            table = frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(frame, preserve_index=False)
            over_limit = pc.and_(pc.equal(table["offer_id"], offer_id), pc.greater(table["n"], rule.limit))
            over += pc.sum(over_limit).as_py() or 0
    return over


def logged_decisions(config_path: Path) -> int:
    """Decisions in the decision log (one metadata row per single-placement decision), after the
    server stopped: equal to the decisions answered when a graceful stop lost none."""
    import pyarrow.parquet as pq
    from offerflow.core.config import load_config

    meta = load_config(config_path).paths.decision_log / "meta"
    return sum(pq.read_metadata(path).num_rows for path in meta.glob("decisions-*.parquet"))


def serve(config_path: Path, port: int, workers: int, log: Path, watch_dir: Path | None = None) -> subprocess.Popen:
    """`offerflow serve` of this checkout; with `watch_dir`, each worker's `loop_watch` report goes there."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
    if watch_dir is not None:
        from offerflow.decisioning.loop_watch import WATCH_ENV

        env[WATCH_ENV] = str(watch_dir)
    return subprocess.Popen([sys.executable, "-m", "offerflow.cli", "serve", "--config", str(config_path),
                             "--port", str(port), "--workers", str(workers)], env=env,
                            stdout=log.open("wb"), stderr=subprocess.STDOUT)


def wait_workers(port: int, server: subprocess.Popen, log: Path, workers: int, timeout_s: float = 600) -> None:
    """Until every worker has loaded its engine (uvicorn logs one line per worker)."""
    wait_healthy(port, server, log, timeout_s)
    deadline = time.monotonic() + timeout_s
    while log.read_text(errors="replace").count("Application startup complete") < workers:
        if time.monotonic() > deadline or server.poll() is not None:
            raise RuntimeError("not every worker started: " + log.read_text(errors="replace")[-2000:])
        time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", type=int, default=1_000_000)
    parser.add_argument("--rate", type=float, default=4000, help="Requests per second offered (open loop).")
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--connections", type=int, default=64, help="Keep-alive connections, over all generators.")
    parser.add_argument("--clients", type=int, default=2, help="Load generator processes.")
    parser.add_argument("--workers", type=int, default=1, help="`offerflow serve --workers`.")
    parser.add_argument("--caps", choices=["embedded", "lmdb", "redis"], default="embedded",
                        help="The cap store (--workers > 1 needs lmdb or redis).")
    parser.add_argument("--redis", action="store_true", help="The same as --caps redis.")
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workdir", type=Path, default=None, help="Reuse a project built here (a fresh log each run).")
    parser.add_argument("--loop-watch", action="store_true",
                        help="Report each worker's and generator's event-loop blocks >= 2 ms and their causes "
                             "(offerflow.decisioning.loop_watch; the worker's whole run, warm-up included).")
    parser.add_argument("--wait-quiet", type=float, default=0, metavar="S",
                        help="Before the measured run, wait up to S seconds for other processes to use under a "
                             "tenth of a core (the JSON's other_cpu_s says what they took during the run).")
    args = parser.parse_args()
    root = args.workdir or Path(tempfile.mkdtemp(prefix="offerflow-load-bench-"))
    config_path = root / "offerflow.yaml"
    if not config_path.exists():
        build_project(root, args.profiles, args.seed)
    base = config_path.read_text().split("\ncaps:\n")[0]
    redis, caps = None, "redis" if args.redis else args.caps
    if caps == "redis":
        redis, url = start_redis(root)
        base += f"\ncaps:\n  store: {url}\n"
    elif caps == "lmdb":
        base += "\ncaps:\n  store: lmdb\n"
    config_path.write_text(base)
    from offerflow.core.config import load_config

    paths = load_config(config_path).paths
    shutil.rmtree(paths.decision_log, ignore_errors=True)  # caps count this run only
    shutil.rmtree(paths.outputs / "caps" / "counters.lmdb", ignore_errors=True)
    watch_dir = root / "loop-watch" if args.loop_watch else None
    if watch_dir is not None:
        shutil.rmtree(watch_dir, ignore_errors=True)
    server = serve(config_path, args.port, args.workers, root / "server.log", watch_dir)
    ctx = multiprocessing.get_context("fork")
    try:
        wait_workers(args.port, server, root / "server.log", args.workers)
        bodies = request_bodies(root / "data/profiles.parquet", args.seed)
        pids = server_pids(server.pid) + ([redis.pid] if redis else [])
        with ctx.Pool(args.clients) as pool:
            warm = drive_processes(args.port, bodies, min(args.rate, 1000), 3, args.connections, args.clients, pool)
            waited = wait_until_quiet(args.wait_quiet) if args.wait_quiet else 0.0
            load_before, by_pid = os.getloadavg()[0], {pid: cpu_seconds([pid]) for pid in pids}
            everyone = processes_cpu()
            figures = drive_processes(args.port, bodies, args.rate, args.seconds, args.connections, args.clients, pool,
                                      args.loop_watch)
            other_cpu = other_cpu_seconds(everyone, processes_cpu(), {*pids, *(p.pid for p in pool._pool)})
            by_pid = {pid: round(cpu_seconds([pid]) - cpu, 2) for pid, cpu in by_pid.items()}
            server_cpu, load_after = sum(by_pid.values()), os.getloadavg()[0]
    finally:
        server.terminate()
        server.wait(timeout=60)
        if redis is not None:
            redis.terminate()
            redis.wait(timeout=10)
    wall, n = figures["elapsed_s"], figures["requests"]
    print(json.dumps({"profiles": args.profiles, "workers": args.workers, "cap_store": caps,
                      "clients": args.clients, "connections": args.connections, "cores": os.cpu_count(), **figures,
                      "server_cpu_s": round(server_cpu, 1), "server_cpu_s_by_process": by_pid,
                      "server_cpu_pct": round(100 * server_cpu / wall),
                      "server_cpu_us_per_decision": round(1e6 * server_cpu / n),
                      "client_cpu_us_per_decision": round(1e6 * figures["client_cpu_s"] / n),
                      "load_avg_1m_before": round(load_before, 2), "load_avg_1m_after": round(load_after, 2),
                      "other_cpu_s": round(other_cpu, 1),
                      "waited_for_quiet_s": waited, "cap_violations": cap_violations(config_path),
                      "answered_decisions": warm["ok"] + figures["ok"], "logged_decisions": logged_decisions(config_path),
                      **({} if watch_dir is None else {"server_loop_watch": [
                          json.loads(p.read_text()) for p in sorted(watch_dir.glob("loop-watch-*.json"))]})},
                     indent=2))


if __name__ == "__main__":
    main()
