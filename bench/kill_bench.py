"""kill -9 at random moments of `offerflow run`: does every placement still serve a complete version
from one run after each kill?

    python bench/kill_bench.py [--kills 100] [--profiles 1000] [--days 40] [--seed 16]
                               [--workdir /tmp/offerflow-kill-bench] [--ephemeral]
                               [--budget-s SECONDS]

Builds a seeded project and starts one Prefect server for the whole bench (as `offerflow up`
does: `offerflow run` uses a server named by PREFECT_API_URL instead of starting its own). It runs
`offerflow run --no-cache` to the end once (its wall time T). Then `--kills` times, each run
continuing from the state the previous one left: starts `offerflow run --no-cache` in its own
process group and sends SIGKILL to the whole group (the CLI and anything it started) at a moment
drawn uniformly from [0, 1.1 T], so kills land in every step, the manifest switch included. After
each kill it checks the ranking store (`consistency`): a manifest naming every placement, every
entry switched by the same run and staged by that run, every table readable, whole (sha256) and
with the row count the manifest and metadata.json say. Finally one more run must end cleanly.
`--ephemeral` makes every run start (and lose) its own temporary Prefect server, as a plain
`offerflow run` does without `offerflow up` (about 20-40 s more per run).
`--budget-s` stops killing once that many seconds of kills have passed (the JSON says how many ran).
Prints one JSON document: the count of consistent states, how many kills left the previous run
serving or the killed run's switch done, seconds, and the load average (the machine is shared).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any, Iterator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import bench_parser  # noqa: E402


def run_env(api_url: str | None = None) -> dict[str, str]:
    """The environment of an `offerflow` subprocess: this checkout's code, the project's own
    Prefect home (an inherited PREFECT_HOME or API URL would share another server), and the
    bench's Prefect server when `api_url` names it."""
    import offerflow

    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_HOME", "PREFECT_API_URL")}
    src = str(Path(offerflow.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    env.update(MLFLOW_DISABLE_TELEMETRY="true", PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1",
               GX_ANALYTICS_ENABLED="false", PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180")
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


@contextmanager
def prefect_server(home: Path, timeout: float = 300) -> Iterator[str]:
    """A Prefect server (no scheduler) on a free local port for the block's runs; its API URL. It
    runs in a process group of its own, so killing a run never kills it; stopped at the end."""
    from offerflow.ops.servers import free_port

    port = free_port()
    env = {**run_env(), "PREFECT_HOME": str(home), "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false"}
    home.mkdir(parents=True, exist_ok=True)
    with open(home / "server.log", "ab") as log:
        proc = subprocess.Popen([str(Path(sys.executable).parent / "prefect"), "server", "start", "--host",
                                 "127.0.0.1", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    try:
        _wait_healthy(f"{url}/health", proc, timeout)
        yield url
    finally:
        _stop_group(proc)


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float) -> None:
    from offerflow.ops.servers import answers

    if answers(url, timeout, lambda: proc.poll() is None) is None:
        assert proc.poll() is None, f"the Prefect server exited (rc={proc.returncode}) during start-up"
        raise AssertionError(f"the Prefect server did not answer {url} within {timeout:.0f} s")


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the server's process group, SIGKILL it after 20 s."""
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=wait)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def start_run(project: Path, api_url: str | None = None) -> subprocess.Popen:
    """`offerflow run --no-cache` in `project`, in a process group of its own."""
    return subprocess.Popen([sys.executable, "-m", "offerflow.cli", "run", "--no-cache"], cwd=project,
                            env=run_env(api_url), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)


def run_to_end(project: Path, api_url: str | None = None, timeout: float = 1800) -> float:
    """Run the pipeline to its end; its wall seconds (AssertionError with the output if it fails)."""
    started = time.monotonic()
    proc = start_run(project, api_url)
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"offerflow run failed (rc={proc.returncode}):\n{out.decode()[-3000:]}"
    return time.monotonic() - started


def kill_run_at(project: Path, delay: float, api_url: str | None = None) -> int | None:
    """Start a run and SIGKILL its process group after `delay` seconds; its exit code if it ended first."""
    proc = start_run(project, api_url)
    try:
        proc.communicate(timeout=delay)
        return proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return None
    finally:
        try:  # whatever the run started (its Prefect server) goes with it
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def consistency(project: Path) -> dict[str, Any]:
    """Whether every placement of the project serves a complete version from one run."""
    from offerflow.core.config import load_config
    from offerflow.core.store import RankingStore, StoreError

    config = load_config(project / "offerflow.yaml")
    store = RankingStore(config.path(config.store.path))
    try:
        manifest = store.manifest()
        problems = store.verify()
    except StoreError as exc:
        return {"consistent": False, "problems": [str(exc)], "run_id": None}
    entries = manifest.placements
    missing = [p.id for p in config.placements if p.id not in entries]
    runs = {e.get("run_id") for e in entries.values()} | {e.get("staged_by") for e in entries.values()}
    if missing:
        problems.append(f"no version serves placement(s) {', '.join(missing)}")
    if len(runs) != 1:
        problems.append(f"placements serve versions of more than one run: {sorted(map(str, runs))}")
    return {"consistent": not problems, "problems": problems, "run_id": manifest.run_id,
            "versions": manifest.versions()}


def kill_loop(project: Path, kills: int, full_seconds: float, seed: int, api_url: str | None = None,
              budget_s: float | None = None) -> list[dict[str, Any]]:
    """`kills` runs killed at random moments, the store checked after each; fewer when the next one
    would start after `budget_s` seconds."""
    rng = random.Random(seed)
    results: list[dict[str, Any]] = []
    started = time.monotonic()
    for i in range(kills):
        if budget_s is not None and time.monotonic() - started > budget_s:
            break
        before = consistency(project)["run_id"]
        delay = rng.uniform(0, 1.1 * full_seconds)
        rc = kill_run_at(project, delay, api_url)
        state = consistency(project)
        state.update(kill=i, delay_s=round(delay, 2), ended_before_kill=rc is not None,
                     switched=state["run_id"] != before)
        results.append(state)
    return results


def make_project(workdir: Path, profiles: int, days: int, seed: int) -> Path:
    from offerflow.synthetic.world import WorldSpec, demo_config_yaml, generate_world

    shutil.rmtree(workdir, ignore_errors=True)
    project = workdir / "project"
    generate_world(WorldSpec(profiles=profiles, offers=12, days=days, seed=seed, end_date=date(2026, 11, 1)),
                   project / "data")
    (project / "offerflow.yaml").write_text(demo_config_yaml("data"))
    gx = ROOT / "great_expectations"
    if gx.exists():
        shutil.copytree(gx, project / "great_expectations", ignore=shutil.ignore_patterns("uncommitted"))
    return project


@contextmanager
def bench_server(workdir: Path, ephemeral: bool) -> Iterator[str | None]:
    """The bench's one Prefect server (its API URL), or None: every run starts its own."""
    if ephemeral:
        yield None
        return
    with prefect_server(workdir / "prefect-server") as url:
        yield url


def main() -> None:
    args = bench_parser(__doc__.splitlines()[0], raw=False, kills=100, profiles=1_000, days=40, seed=16,
                        workdir=Path("/tmp/offerflow-kill-bench"), ephemeral=False, budget_s=float).parse_args()
    project = make_project(args.workdir, args.profiles, args.days, args.seed)
    started = time.monotonic()
    cpu = os.times()
    with bench_server(args.workdir, args.ephemeral) as api_url:
        full = run_to_end(project, api_url)
        results = kill_loop(project, args.kills, full, args.seed, api_url, args.budget_s)
        final = run_to_end(project, api_url)
    after = consistency(project)
    children_cpu = (os.times().children_user + os.times().children_system) - (cpu.children_user + cpu.children_system)
    print(json.dumps({
        "kills": len(results), "consistent": sum(r["consistent"] for r in results),
        "previous_run_kept": sum(not r["switched"] for r in results),
        "killed_run_switched": sum(r["switched"] and not r["ended_before_kill"] for r in results),
        "ended_before_kill": sum(r["ended_before_kill"] for r in results),
        "final_run_consistent": after["consistent"], "full_run_s": round(full, 1), "final_run_s": round(final, 1),
        "total_s": round(time.monotonic() - started, 1), "children_cpu_s": round(children_cpu, 1),
        "one_prefect_server": not args.ephemeral, "profiles": args.profiles, "days": args.days,
        "load_average": os.getloadavg(), "problems": [r for r in results if not r["consistent"]],
    }, indent=2, default=str))


if __name__ == "__main__":
    main()
