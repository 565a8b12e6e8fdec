"""CPU of one decision request's answer in process, with the decision-log writer thread running.

    .venv/bin/python bench/answer_bench.py --workdir /tmp/lb   # a project built by load_bench/decision_bench

What `offerflow serve`'s fast path does per well-formed request, without sockets or the event loop:
`FastDecider.answer` (validation, engine, decision-log buffer, metrics, orjson) on single-placement
`web-banner` requests for random profiles, the engine frozen out of the collector's reach as a
server does, the writer thread flushing as in the service. Prints the CPU per answer of the calling
thread (the event loop's share) and of the process (the writer thread too), and the collections
per generation: figures that do not depend on who else uses the machine as much as wall time does.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True, help="A project built by load_bench.py (1M profiles).")
    parser.add_argument("--requests", type=int, default=30_000)
    parser.add_argument("--warmup", type=int, default=2_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    import pandas as pd
    from offerflow.core.config import load_config
    from offerflow.decisioning.http_routes import freeze_long_lived
    from offerflow.decisioning.http_service import create_app

    config = load_config(args.workdir / "offerflow.yaml")
    ids = pd.read_parquet(args.workdir / "data/profiles.parquet", columns=["profile_id"])["profile_id"].to_numpy()
    picked = np.random.default_rng(args.seed).choice(ids, args.requests, replace=False)
    bodies = [json.dumps({"profile_id": str(p), "placements": ["web-banner"]}).encode() for p in picked]
    app = create_app(config, log_dir=Path(tempfile.mkdtemp(prefix="offerflow-answer-bench-")))
    decider, headers = app.state.fast_decider, [(b"content-type", b"application/json")]
    freeze_long_lived()
    collections = [0, 0, 0]

    def count(phase: str, info: dict) -> None:
        if phase == "stop":
            collections[info["generation"]] += 1

    with app.state.decision_log.running():
        for body in bodies[:args.warmup]:
            decider.answer(headers, body)
        gc.callbacks.append(count)
        thread, process = time.thread_time(), time.process_time()
        for body in bodies[args.warmup:]:
            if decider.answer(headers, body) is None:
                raise RuntimeError("a request was passed on to the FastAPI route")
        thread, process = time.thread_time() - thread, time.process_time() - process
        gc.callbacks.remove(count)
    n = len(bodies) - args.warmup
    print(json.dumps({"answers": n, "thread_cpu_us_per_answer": round(thread / n * 1e6, 1),
                      "process_cpu_us_per_answer": round(process / n * 1e6, 1),
                      "collections_gen0_gen1_gen2": collections, "load_avg_1m": round(os.getloadavg()[0], 2)}))


if __name__ == "__main__":
    main()
