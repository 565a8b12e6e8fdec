"""What the demo produces, as digests that a refactoring must not change.

Runs `offerflow demo` (fixed seed) in an empty folder, then `offerflow decide-batch` for every
profile, and digests every table the run leaves behind: the published ranking tables, the Customer
AI scores, the offer statistics, the enriched profiles, the batch decisions and the decision log.
Columns that hold run ids, decision ids or wall-clock times are dropped (they differ on every run
by design); rows are sorted, so only content counts.

    python bench/demo_snapshot.py --out /tmp/before.json            # run the demo, write digests
    python bench/demo_snapshot.py --out /tmp/after.json
    python bench/demo_snapshot.py --compare /tmp/before.json /tmp/after.json   # exit 1 if they differ
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

#: Columns that differ on every run by design.
VOLATILE = {"decision_id", "run_id", "pipeline_run_id", "timestamp", "published_at", "decided_at", "created_at",
            "trained_at", "scored_at", "logged_at", "event_id"}
TABLE_GLOBS = ("data/rankings/*/v*/table.parquet", "data/outputs/propensity/**/*.parquet",
               "data/outputs/offer_stats/*/stats.parquet", "data/outputs/profiles_enriched.parquet",
               "data/outputs/batch_decisions/*.parquet", "data/outputs/decision_log/**/*.parquet")


def table_digest(path: Path) -> dict:
    """Digest of a Parquet file's content without volatile columns, independent of row order."""
    table = pq.read_table(path)
    keep = [name for name in table.column_names if name not in VOLATILE
            and not pa.types.is_timestamp(table.schema.field(name).type)]
    frame = table.select(sorted(keep)).to_pandas()
    frame = frame.astype({c: str for c in frame.columns if frame[c].dtype == object})
    frame = frame.sort_values(list(frame.columns), kind="stable").reset_index(drop=True) if len(frame) else frame
    digest = hashlib.sha256(frame.to_csv(index=False).encode()).hexdigest()
    return {"rows": len(frame), "columns": sorted(keep), "sha256": digest}


def _normalise(relative: str) -> str:
    """Dates and uuids in file names change from run to run."""
    relative = re.sub(r"\d{8}T\d{6}(-[0-9a-f]{8})?", "<stamp>", relative)
    relative = re.sub(r"\d{4}-\d{2}-\d{2}", "<date>", relative)
    return re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "<uuid>", relative)


def snapshot(project: Path) -> dict[str, dict]:
    env = {**os.environ, "PREFECT_HOME": str(project / ".prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120", "MLFLOW_DISABLE_TELEMETRY": "true"}
    offerflow = [sys.executable, "-m", "offerflow.cli"]
    subprocess.run([*offerflow, "demo", "--project", str(project)], cwd=project, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run([*offerflow, "decide-batch", "--json"], cwd=project, env=env, check=True, stdout=subprocess.DEVNULL)
    out: dict[str, dict] = {}
    for pattern in TABLE_GLOBS:
        for path in sorted(project.glob(pattern)):
            out[_normalise(str(path.relative_to(project)))] = table_digest(path)
    return out


def compare(before: dict, after: dict) -> list[str]:
    problems = [f"only before: {k}" for k in sorted(set(before) - set(after))]
    problems += [f"only after: {k}" for k in sorted(set(after) - set(before))]
    problems += [f"differs: {k} ({before[k]['rows']} -> {after[k]['rows']} rows)"
                 for k in sorted(set(before) & set(after)) if before[k] != after[k]]
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="write the digests of a fresh demo run here")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"))
    args = parser.parse_args()
    if args.compare:
        before, after = (json.loads(p.read_text()) for p in args.compare)
        problems = compare(before, after)
        print("\n".join(problems) if problems else f"identical: {len(before)} tables")
        raise SystemExit(1 if problems else 0)
    with tempfile.TemporaryDirectory(prefix="offerflow-demo-snapshot-") as tmp:
        digests = snapshot(Path(tmp))
    text = json.dumps(digests, indent=1, sort_keys=True)
    if args.out:
        args.out.write_text(text)
    print(f"{len(digests)} tables digested" + (f" -> {args.out}" if args.out else ""))


if __name__ == "__main__":
    main()
