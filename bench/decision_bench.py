"""Decision-service load benchmark: the real HTTP service on loopback, driven at a steady rate.

    .venv/bin/python bench/decision_bench.py --profiles 1000000 --rate 2000 --seconds 30 [--batch]

Builds a project of N seeded profiles and the demo catalog (with its caps), publishes a ranking
table of every profile for `web-banner` (the demo formula's scores, tagged as the AI model
`web-personalized` so the holdout path runs too) and for `web-sidebar`, starts `offerflow serve`
as a separate process (one uvicorn worker), and sends single-placement decisions from this process
(a uvloop client) over keep-alive connections at a fixed rate (open loop: latency counts from the
scheduled send time, so a slow server cannot hide its queue). Prints JSON: decisions/s,
p50/p95/p99 latency, errors, the 1-minute load average before and after, and the CPU the server
(with its children) and the client used, in total and per decision: on a shared machine the CPU
per decision is the figure that does not depend on who else is running. `--batch` also times
batch decisioning of every profile (both placements, with caps). `--explain` also times, in this
process, the same requests decided by two engines with the same seed, one asked to explain: the
explanation's cost per decision (`offerflow decide --explain`, `"explain": true`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def build_project(root: Path, n_profiles: int, seed: int) -> Path:
    """Profiles, catalog and project file, and the two published ranking tables."""
    from offerflow.ingest.catalog import load_offers
    from offerflow.core.config import load_config
    from offerflow.ranking.publishing import build_ranking_table
    from offerflow.core.store import RankingStore
    from offerflow.synthetic.world import demo_config_yaml, make_offers, make_profiles, write_offers_yaml

    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    profiles = make_profiles(n_profiles, rng).drop(columns=["activity"])
    profiles.to_parquet(data / "profiles.parquet", index=False)
    write_offers_yaml(make_offers(12, rng).drop(columns=["quality"]), data / "offers.yaml")
    (root / "offerflow.yaml").write_text(demo_config_yaml("data"))
    config = load_config(root / "offerflow.yaml")
    offers = load_offers(data / "offers.yaml", [p.id for p in config.placements])
    store = RankingStore(config.path(config.store.path))
    sidebar = config.placement("web-sidebar")
    for placement_id, extra in (("web-banner", {"ai_model": "web-personalized", "model_version": "bench"}),
                                ("web-sidebar", {})):
        placement = config.placement(placement_id).model_copy(update={"ranking": sidebar.ranking})
        table = build_ranking_table(placement, profiles, offers, None)
        store.publish(placement_id, table, {"kind": "ranking", "ranking_method": "ai_model" if extra else "formula",
                                            **extra})
    return root / "offerflow.yaml"


def wait_healthy(port: int, server: subprocess.Popen, log: Path, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError("the service exited: " + log.read_text(errors="replace")[-2000:])
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError("the service did not become healthy")


async def drive_raw(port: int, requests: list[bytes], rate: float, seconds: float, connections: int,
                    t0: float | None = None, phase: float = 0.0) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
    """Open-loop load: request k is due at t0 + (k + phase) / rate; each connection takes the next
    due one. Returns each request's latency from its due time (s), its HTTP status, the elapsed
    seconds and each request's send lag (s from its due time to its write: the generator's own
    share of the latency, a timer firing late or every connection busy). `requests` are whole
    HTTP requests (`http_requests`); `t0` (a `time.perf_counter` value, system-wide on Linux) lets
    several generator processes share one schedule.

    Kept cheap, since it shares the 2 cores with the server: request bytes are built before the
    clock starts and a response is read with two awaits (headers, then body)."""
    total = int(rate * seconds)
    latencies = np.full(total, np.nan)
    send_lags = np.full(total, np.nan)
    statuses = np.zeros(total, dtype=np.int32)
    counter = iter(range(total))
    t0 = time.perf_counter() + 0.2 if t0 is None else t0

    async def connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for k in counter:
                due = t0 + (k + phase) / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                send_lags[k] = time.perf_counter() - due
                writer.write(requests[k % len(requests)])
                head = await reader.readuntil(b"\r\n\r\n")
                at = head.lower().find(b"content-length:")
                length = int(head[at + 15:head.index(b"\r\n", at)]) if at >= 0 else 0
                await reader.readexactly(length)
                latencies[k] = time.perf_counter() - due
                statuses[k] = int(head[9:12])
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(connections)))
    return latencies, statuses, time.perf_counter() - max(started, t0), send_lags


def http_requests(bodies: list[bytes]) -> list[bytes]:
    return [b"POST /decisions HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body for body in bodies]


def summarize(latencies: np.ndarray, statuses: np.ndarray, elapsed: float, rate: float,
              send_lags: np.ndarray | None = None) -> dict:
    """Served rate and latency percentiles of the 200 answers; every other status counted; with
    `send_lags`, the generator's own lag before sending (p50/p99/max; included in the latencies)."""
    ok = statuses == 200
    ms = latencies[ok] * 1000
    lag = {} if send_lags is None else {f"send_lag_{name}_ms": round(float(value) * 1000, 2) for name, value in
                                        zip(("p50", "p99", "max"), np.nanpercentile(send_lags, [50, 99, 100]))}
    codes, counts = np.unique(statuses[~ok], return_counts=True)
    return {"requests": len(statuses), "ok": int(ok.sum()), "errors": int((~ok).sum()),
            "errors_by_status": {str(c): int(n) for c, n in zip(codes, counts)}, "target_rate": rate,
            "requests_per_s": round(len(statuses) / elapsed, 1), "decisions_per_s": round(int(ok.sum()) / elapsed, 1), "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p95_ms": round(float(np.percentile(ms, 95)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 2),
            "max_ms": round(float(ms.max()), 2), "elapsed_s": round(elapsed, 2), **lag}


async def drive(port: int, bodies: list[bytes], rate: float, seconds: float, connections: int) -> dict:
    """`drive_raw` from one process, summarized."""
    latencies, statuses, elapsed, send_lags = await drive_raw(port, http_requests(bodies), rate, seconds, connections)
    return summarize(latencies, statuses, elapsed, rate, send_lags)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of these processes so far (Linux /proc; children not included)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / ticks


def machine_busy_seconds() -> float:
    """CPU seconds the machine's processes have used so far, over every core (/proc/stat: user,
    nice and system time)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:4]
    return sum(int(v) for v in fields) / os.sysconf("SC_CLK_TCK")


def processes_cpu() -> dict[int, float]:
    """CPU seconds of every process so far, by pid, with those of its exited children it reaped
    (/proc/<pid>/stat: utime, stime, cutime, cstime)."""
    ticks, out = os.sysconf("SC_CLK_TCK"), {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(stat.parent.name)] = sum(int(v) for v in fields[11:15]) / ticks
    return out


def other_cpu_seconds(before: dict[int, float], after: dict[int, float], ours: set[int]) -> float:
    """What the processes other than `ours` (and this one) used between two `processes_cpu`
    readings: ~0 when a bench had the machine to itself."""
    ours = ours | {os.getpid()}
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items() if pid not in ours)


def wait_until_quiet(max_wait_s: float, busy_cores: float = 0.1, sample_s: float = 2.0) -> float:
    """Block until the machine used under `busy_cores` of CPU over `sample_s` (at most `max_wait_s`);
    returns the seconds waited. For a bench started while other jobs may still be running."""
    started = time.monotonic()
    while time.monotonic() - started < max_wait_s:
        before = machine_busy_seconds()
        time.sleep(sample_s)
        if (machine_busy_seconds() - before) / sample_s < busy_cores:
            break
    return round(time.monotonic() - started, 1)


def server_pids(root: int) -> list[int]:
    """The server process and its descendants (uvicorn's worker processes), from /proc."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        todo.extend(parents.get(pid, []))
    return pids


def run_load(port: int, bodies: list[bytes], rate: float, seconds: float, connections: int,
             server_pids: list[int]) -> dict:
    """`drive` on uvloop (when installed), with the CPU seconds used by the client and the server."""
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    client_before, server_before = time.process_time(), cpu_seconds(server_pids)
    figures = runner(drive(port, bodies, rate, seconds, connections))
    client_cpu, server_cpu = time.process_time() - client_before, cpu_seconds(server_pids) - server_before
    wall = figures["elapsed_s"]
    return {**figures, "client_cpu_s": round(client_cpu, 1), "server_cpu_s": round(server_cpu, 1),
            "client_cpu_pct": round(100 * client_cpu / wall), "server_cpu_pct": round(100 * server_cpu / wall),
            "server_cpu_us_per_decision": round(1e6 * server_cpu / figures["requests"]),
            "client_cpu_us_per_decision": round(1e6 * client_cpu / figures["requests"])}


def bench_batch(config_path: Path) -> dict:
    from offerflow.decisioning.batch import decide_batch
    from offerflow.core.config import load_config
    from offerflow.decisioning.engine import build_engine

    config = load_config(config_path)
    started = time.perf_counter()
    engine = build_engine(config, seed=1)
    loaded = time.perf_counter() - started
    result = decide_batch(engine, engine.profiles["profile_id"].to_numpy(), ["web-banner", "web-sidebar"], seed=1)
    capped_total = int((result.decisions["offer_id"].to_numpy(zero_copy_only=False) == "o-005").sum())
    return {"batch_profiles": result.profiles, "batch_placements": 2, "batch_items": result.decisions.num_rows,
            "batch_engine_load_s": round(loaded, 1), "batch_decide_s": round(result.seconds, 1),
            "batch_o005_shown": capped_total, "batch_o005_total_cap": 200_000, "batch_arms": result.arm_counts()}


def bench_explain(config_path: Path, n: int = 3000, seed: int = 7) -> dict:
    """Per-decision time of `engine.decide` without and with `explain=True`, in this process, on
    the same profiles (a third unknown to the tables: cold starts), two placements per request."""
    from offerflow.core.config import load_config
    from offerflow.decisioning.engine import build_engine

    config = load_config(config_path)
    plain, explaining = build_engine(config, seed=seed).preload(), build_engine(config, seed=seed).preload()
    rng = np.random.default_rng(seed)
    ids = plain.profiles["profile_id"].to_numpy()
    profiles = [str(p) if i % 3 else f"new-{i}" for i, p in enumerate(rng.choice(ids, size=n))]
    placements = ["web-banner", "web-sidebar"]
    explaining.decide(profiles[0], placements, explain=True)  # builds the explainer once
    wall, cpu = {}, {}  # CPU time too: on a shared machine it is the figure that does not count waiting
    for name, engine, explain in (("off", plain, False), ("on", explaining, True), ("off_again", plain, False)):
        started, started_cpu = time.perf_counter(), time.process_time()
        for profile_id in profiles:
            engine.decide(profile_id, placements, explain=explain).to_dict()
        wall[name] = (time.perf_counter() - started) / n * 1e6
        cpu[name] = (time.process_time() - started_cpu) / n * 1e6
    off, off_cpu = min(wall["off"], wall["off_again"]), min(cpu["off"], cpu["off_again"])
    return {"explain_decisions": n, "explain_placements": placements, "decide_us_explain_off": round(off, 1),
            "decide_us_explain_on": round(wall["on"], 1), "explain_overhead_us_per_decision": round(wall["on"] - off, 1),
            "decide_cpu_us_explain_off": round(off_cpu, 1), "decide_cpu_us_explain_on": round(cpu["on"], 1),
            "explain_overhead_cpu_us_per_decision": round(cpu["on"] - off_cpu, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", type=int, default=1_000_000)
    parser.add_argument("--rate", type=float, default=2000)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workdir", type=Path, default=None, help="Keep the project here (default: a temp dir).")
    parser.add_argument("--batch", action="store_true", help="Also time batch decisioning of every profile.")
    parser.add_argument("--explain", action="store_true", help="Also time explanations (in process).")
    args = parser.parse_args()
    root = args.workdir or Path(tempfile.mkdtemp(prefix="offerflow-decision-bench-"))
    started = time.perf_counter()
    config_path = root / "offerflow.yaml"
    if not config_path.exists():
        config_path = build_project(root, args.profiles, args.seed)
    setup_s = time.perf_counter() - started
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}  # this checkout's code
    server_log = (root / "server.log").open("wb")  # a file, not a pipe nobody drains
    server = subprocess.Popen([sys.executable, "-m", "offerflow.cli", "serve", "--config", str(config_path),
                               "--port", str(args.port)], env=env, stdout=server_log, stderr=subprocess.STDOUT)
    try:
        wait_healthy(args.port, server, root / "server.log")
        import pandas as pd

        ids = pd.read_parquet(root / "data/profiles.parquet", columns=["profile_id"])["profile_id"].to_numpy()
        rng = np.random.default_rng(args.seed)
        bodies = [json.dumps({"profile_id": str(pid), "placements": ["web-banner"]}).encode()
                  for pid in rng.choice(ids, size=min(len(ids), 200_000), replace=False)]
        pids = server_pids(server.pid)
        run_load(args.port, bodies, min(args.rate, 500), 3, args.connections, pids)  # warm-up
        load_before = os.getloadavg()[0]
        figures = run_load(args.port, bodies, args.rate, args.seconds, args.connections, pids)
        load_after = os.getloadavg()[0]
    finally:
        server.terminate()
        server.wait(timeout=30)
        server_log.close()
    out = {"profiles": args.profiles, "placement": "web-banner", "connections": args.connections,
           "cores": os.cpu_count(), "setup_s": round(setup_s, 1),
           "load_avg_1m_before": round(load_before, 2), "load_avg_1m_after": round(load_after, 2), **figures}
    if args.batch:
        out.update(bench_batch(config_path))
    if args.explain:
        out.update(bench_explain(config_path))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
