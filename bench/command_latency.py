"""Wall time of the commands that read, as a user runs them (a fresh `offerflow` process each time).

    .venv/bin/python bench/command_latency.py --profiles 100000 --repeats 5

Builds a project of N seeded profiles with published ranking tables (decision_bench's project:
the demo catalog with its caps, web-banner and web-sidebar published) and, as `offerflow run`
leaves it, the profiles the decision step reads (`outputs/profiles_enriched.parquet`, written by
`enrich_profiles`: sorted by id; `--raw-profiles` leaves it out, so `decide` reads the generated
file, one row group), then times, median of
`--repeats` runs each: `offerflow decide` (one profile, one placement; targets < 1 s) with
`--no-log`, and as a user runs it by default, appending to the decision log (`decide-logged`:
from its second run the cap counters are counted from the log's files, with DuckDB), and
`offerflow decide-batch` of every profile in both placements (targets < 5 s for 100,000), after
one untimed run of each: an installed offerflow has its bytecode compiled (pip compiles a wheel's
modules; a source checkout writes `__pycache__` on first use), so PYTHONDONTWRITEBYTECODE is
dropped from the commands' environment and the warm-up writes the caches. Prints
JSON: per command the median wall and CPU time and every run's wall time in seconds, the targets, and the 1-minute load average
before and after (on a shared machine the wall time depends on who else is running).
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import bench_parser  # noqa: E402
from decision_bench import build_project  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TARGETS_S = {"decide": 1.0, "decide-logged": 1.0, "decide-batch": 5.0}


def wall(args: list[str], cwd: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one `offerflow <args>` process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "offerflow.cli", *args], cwd=cwd, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return seconds, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def write_enriched_profiles(config_path: Path) -> None:
    """The profiles file a pipeline run writes for the decision step (no propensity goals here)."""
    import pandas as pd
    from offerflow.core.config import load_config
    from offerflow.models.customer_ai_training import enrich_profiles

    config = load_config(config_path)
    enrich_profiles(pd.read_parquet(config.path(config.data.profiles)), {}, config.paths.enriched_profiles)


def main() -> None:
    args = bench_parser(__doc__, profiles=100_000, repeats=5, seed=7, raw_profiles=False,
                        helps={"raw_profiles": "no enriched profiles: decide reads the generated file"}).parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = build_project(Path(tmp), args.profiles, args.seed)
        if not args.raw_profiles:
            write_enriched_profiles(config)
        load_before = os.getloadavg()[0]
        commands = {"decide": ["decide", "-p", "p0000001", "-x", "web-banner", "--no-log"],
                    "decide-logged": ["decide", "-p", "p0000001", "-x", "web-banner"],
                    "decide-batch": ["decide-batch", "-x", "web-banner", "-x", "web-sidebar"]}
        result = {}
        for name, command in commands.items():
            wall(command + ["--config", str(config)], config.parent)  # warm-up: bytecode and file caches
            runs = [wall(command + ["--config", str(config)], config.parent) for _ in range(args.repeats)]
            result[name] = {"median_s": round(statistics.median(w for w, _ in runs), 3),
                            "median_cpu_s": round(statistics.median(c for _, c in runs), 3),
                            "runs_s": [round(w, 3) for w, _ in runs], "target_s": TARGETS_S[name]}
    print(json.dumps({"profiles": args.profiles, "enriched_profiles": not args.raw_profiles,
                      "repeats": args.repeats, **result,
                      "load_1min_before": load_before, "load_1min_after": os.getloadavg()[0]}, indent=2))


if __name__ == "__main__":
    main()
