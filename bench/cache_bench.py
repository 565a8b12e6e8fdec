"""What task caching saves: the pipeline flow run cold, re-run on unchanged data (every expensive
task `Cached`), and re-run with `use_cache=False`; plus the cost of fingerprinting the events file
(first content hash, then the memo hit).

    python bench/cache_bench.py --profiles 20000 [--days 60] [--workdir /tmp/ofcache]

Runs the real flow against a temporary Prefect server (started once, not timed). Prints one JSON
document with wall seconds per run, whether the published table bytes stayed identical, and the
load average (the machine is shared: seconds are noisy).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import bench_parser  # noqa: E402
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


def table_digests(project: Path) -> dict[str, str]:
    """Per placement (in the config's order): "v<current version>:<first 12 hex digits of the
    SHA-256 of that version's table.parquet>"."""
    from offerflow.core.config import load_config
    from offerflow.core.store import RankingStore

    config = load_config(project / "offerflow.yaml")
    root = config.path(config.store.path)
    store = RankingStore(root)
    current = {placement.id: store.current_version(placement.id) for placement in config.placements}
    digest = {pid: hashlib.sha256((root / pid / f"v{v:06d}" / "table.parquet").read_bytes()).hexdigest()
              for pid, v in current.items()}
    return {pid: f"v{v}:{digest[pid][:12]}" for pid, v in current.items()}


def main() -> None:
    args = bench_parser(__doc__.splitlines()[0], raw=False, profiles=20_000, days=60,
                        workdir=Path("/tmp/offerflow-cache-bench")).parse_args()

    from offerflow.core.fingerprints import FileFingerprints
    from offerflow.synthetic.world import WorldSpec, demo_config_yaml, generate_world

    shutil.rmtree(args.workdir, ignore_errors=True)
    project = args.workdir / "project"
    files = generate_world(WorldSpec(profiles=args.profiles, days=args.days, seed=7, end_date=date(2026, 11, 1)),
                           project / "data")
    (project / "offerflow.yaml").write_text(demo_config_yaml("data"))
    shutil.copytree(ROOT / "great_expectations", project / "great_expectations",
                    ignore=shutil.ignore_patterns("uncommitted"))
    os.environ["PREFECT_HOME"] = str(args.workdir / "prefect-home")

    memo = args.workdir / "memo.json"
    start = time.perf_counter()
    FileFingerprints(memo).of(files.events)
    first_hash = time.perf_counter() - start
    start = time.perf_counter()
    FileFingerprints(memo).of(files.events)
    memo_hit = time.perf_counter() - start

    from prefect.testing.utilities import prefect_test_harness

    from offerflow.flows.pipeline import pipeline

    runs = {}
    with prefect_test_harness(server_startup_timeout=180):
        os.chdir(project)
        for name, use_cache in (("cold", True), ("unchanged_cached", True), ("unchanged_no_cache", False)):
            start = time.perf_counter()
            pipeline(config_path=str(project / "offerflow.yaml"), use_cache=use_cache)
            runs[name] = {"seconds": round(time.perf_counter() - start, 1), "tables": table_digests(project)}
    print(json.dumps({
        "profiles": args.profiles, "events": files.event_count,
        "events_file_mib": round(files.events.stat().st_size / 2**20, 1),
        "fingerprint_events_first_s": round(first_hash, 3), "fingerprint_events_memo_s": round(memo_hit, 4),
        "runs": runs,
        "cached_tables_identical": runs["cold"]["tables"] == runs["unchanged_cached"]["tables"],
        "load_average": os.getloadavg(),
    }, indent=2))


if __name__ == "__main__":
    main()
