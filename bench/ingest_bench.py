"""Event ingestion throughput and memory: reading alone, and reading + validating (the pipeline's
validate step: row checks, DuckDB cross-row checks, Great Expectations, quarantine, snapshot).

    python bench/ingest_bench.py --world /tmp/w1m [--format parquet|csv] [--limit-rows N]
                                 [--workdir /tmp/ofi] [--no-docs]

`--world` is a directory written by `offerflow generate`. `--limit-rows` takes the first N events
(written to the workdir as the chosen format); `--format csv` converts the events to CSV first.
Each measurement runs in a fresh child process, so its peak RSS (VmHWM) is that stage's alone.
Prints one JSON document: rows, wall seconds, rows/s and peak RSS per stage, and the ratio
read+validate / read.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import bench_parser, status_mib  # noqa: E402


def _child(stage: str, project: Path) -> dict:
    """Runs inside the child process: one stage, its figures as a dict."""
    from offerflow.core.config import load_config
    from offerflow.ingest.events import read_events_batches
    from offerflow.ingest.snapshot import ingest_events, load_catalog

    config = load_config(project / "offerflow.yaml")
    _, offers = load_catalog(config)
    start = time.perf_counter()
    if stage == "read":
        rows = 0
        for batch in read_events_batches(config.path(config.data.events), batch_rows=config.validation.batch_rows):
            rows += len(batch)
        out: dict = {"rows": rows}
    else:
        result = ingest_events(config, offers, uuid.uuid4().hex, build_docs=os.environ.get("BENCH_DOCS") == "1")
        out = result.counts()
        out["sampled_rows"] = result.report.sample_rows
    seconds = time.perf_counter() - start
    out.update(seconds=round(seconds, 2), rows_per_second=round(out["rows"] / seconds),
               peak_rss_mib=round(status_mib("VmHWM"), 1))
    return out


def _prepare(world: Path, work: Path, fmt: str, limit: int | None) -> int:
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    from offerflow.synthetic.world import demo_config_yaml

    if work.exists():
        shutil.rmtree(work)
    (work / "data").mkdir(parents=True)
    repo_gx = Path(__file__).resolve().parents[1] / "great_expectations"
    shutil.copytree(repo_gx, work / "great_expectations", ignore=shutil.ignore_patterns("uncommitted"))
    for name in ("profiles.parquet", "offers.yaml"):
        shutil.copy(world / name, work / "data" / name)
    source = pq.ParquetFile(world / "events.parquet")
    target = work / "data" / f"events.{fmt}"
    rows = 0
    writer = None
    for batch in source.iter_batches(batch_size=500_000):
        if limit is not None and rows >= limit:
            break
        if limit is not None:
            batch = batch.slice(0, limit - rows)
        if writer is None:
            writer = (pq.ParquetWriter(target, batch.schema, compression="zstd") if fmt == "parquet"
                      else pcsv.CSVWriter(target, batch.schema))
        writer.write_batch(batch)
        rows += batch.num_rows
    if writer is not None:
        writer.close()
    config = demo_config_yaml("data").replace("data/events.parquet", f"data/events.{fmt}")
    (work / "offerflow.yaml").write_text(config)
    return rows


def main() -> None:
    args = bench_parser(__doc__, world={"type": Path, "required": True},
                        format={"choices": ("parquet", "csv"), "default": "parquet"}, limit_rows=int,
                        workdir=Path("/tmp/offerflow-ingest-bench"), no_docs=False,
                        child={"choices": ("read", "ingest"), "help": argparse.SUPPRESS},
                        helps={"no_docs": "Skip building Data Docs."}).parse_args()
    if args.child:
        print(json.dumps(_child(args.child, args.workdir)))
        return
    rows = _prepare(args.world, args.workdir, args.format, args.limit_rows)
    env = {**os.environ, "BENCH_DOCS": "0" if args.no_docs else "1"}
    stages = {}
    for stage in ("read", "ingest"):
        done = subprocess.run([sys.executable, __file__, "--child", stage, "--world", str(args.world),
                               "--workdir", str(args.workdir)], capture_output=True, text=True, env=env)
        if done.returncode != 0:
            sys.exit(f"{stage} failed:\n{done.stderr}")
        stages[stage] = json.loads(done.stdout.strip().splitlines()[-1])
        print(json.dumps({stage: stages[stage]}), file=sys.stderr, flush=True)
    read, ingest = stages["read"], stages["ingest"]
    print(json.dumps({
        "events": rows, "format": args.format,
        "read": read, "read_and_validate": ingest,
        "validate_over_read_seconds": round(ingest["seconds"] / read["seconds"], 2),
        "validate_over_read_peak_rss": round(ingest["peak_rss_mib"] / read["peak_rss_mib"], 2),
    }, indent=2))


if __name__ == "__main__":
    main()
