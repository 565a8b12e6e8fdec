"""What adding a batch's decisions to the shared cap store costs `decide-batch`: one batch of every
profile of a project (both web placements, seed 1, as `decision_bench.py --batch`), on a fresh copy
of the project's data with `caps.store: lmdb` and an empty store.

    .venv/bin/python bench/batch_caps_bench.py --workdir /tmp/lb-cpu18

Copies the project file and `data/` but its outputs (no decision log, no cap store) to a scratch
directory, so every run starts from the same empty store and the project itself is not changed.
Prints the batch's decide time, the time spent adding to the store (`_Caps.record`, when the code
has it), and the store's counts afterwards per family. Run it with PYTHONPATH pointing at another
checkout's src to time that code; alternate the two for an A/B. `--other-worker`: another process
reserves in the same store in a loop meanwhile (`cap_purge_bench.other_worker`), 2 s alone and
then during the batch, and its reserve times are printed (what a running service's worker waits
for the writer mutex while the batch adds its counts).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from decision_bench import bench_batch  # noqa: E402


def copy_project(workdir: Path, scratch: Path) -> Path:
    """The project file and its data (profiles, catalog, published tables), not its outputs."""
    shutil.copy(workdir / "offerflow.yaml", scratch / "offerflow.yaml")
    shutil.copytree(workdir / "data", scratch / "data", ignore=shutil.ignore_patterns("outputs"))
    text = (scratch / "offerflow.yaml").read_text()
    if "store: lmdb" not in text:
        (scratch / "offerflow.yaml").write_text(text + "\ncaps:\n  store: lmdb\n")
    return scratch / "offerflow.yaml"


def start_other_worker(config_path: Path) -> tuple:
    """A process reserving in the project's LMDB store in a loop: 2 s alone, then phase 1."""
    import multiprocessing

    from cap_purge_bench import other_worker
    from offerflow.core.config import load_config

    config = load_config(config_path)
    path = config.caps.lmdb_path(config.path(config.data.outputs_dir))
    ctx = multiprocessing.get_context("spawn")
    phase, stop, out = ctx.Value("i", 0), ctx.Event(), ctx.Queue()
    worker = ctx.Process(target=other_worker, args=(str(path), phase, stop, out), daemon=True)
    worker.start()
    time.sleep(3.0)  # its start-up, then 2 s alone
    phase.value = 1
    return worker, stop, out


def stop_other_worker(worker, stop, out) -> dict:
    stop.set()
    times = out.get(timeout=120)
    worker.join(timeout=60)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True, help="A project built by decision_bench.py.")
    parser.add_argument("--other-worker", action="store_true", help="Time another worker's reserves meanwhile.")
    args = parser.parse_args()
    import offerflow
    from offerflow.core.config import load_config
    from offerflow.decisioning import batch
    from offerflow.decisioning.engine import build_engine
    from offerflow.rules.shared_caps import family_name

    timing = {"record_s": 0.0, "chunks": 0}
    if hasattr(batch._Caps, "record"):
        record = batch._Caps.record

        def timed(self, *args):
            started = time.perf_counter()
            record(self, *args)
            timing["record_s"] += time.perf_counter() - started
            timing["chunks"] += 1

        batch._Caps.record = timed
    scratch = Path(tempfile.mkdtemp(prefix="batch-caps-bench-"))
    try:
        config_path = copy_project(args.workdir, scratch)
        load_before = os.getloadavg()
        other = start_other_worker(config_path) if args.other_worker else None
        figures = bench_batch(config_path)
        other_times = stop_other_worker(*other) if other else None
        engine = build_engine(load_config(config_path))
        counts = {family_name(f): int(engine.caps.counts_frame(f)["n"].sum()) for f in engine.caps.families}
        print(json.dumps({"utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
                          "code": str(Path(offerflow.__file__).resolve().parents[1]),
                          "load_avg_before": [round(x, 2) for x in load_before],
                          "load_avg_after": [round(x, 2) for x in os.getloadavg()],
                          "batch_profiles": figures["batch_profiles"], "batch_items": figures["batch_items"],
                          "batch_decide_s": figures["batch_decide_s"], "record_s": round(timing["record_s"], 2),
                          "record_chunks": timing["chunks"], "store_counts_after": counts,
                          **({"other_worker_alone": other_times[0], "other_worker_during_batch": other_times[1]}
                             if other_times else {})}, indent=2))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
