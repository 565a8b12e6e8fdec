"""CPU of one decision request's answer in process, with the decision-log writer thread running.

    .venv/bin/python bench/answer_bench.py --workdir /tmp/lb   # a project built by load_bench/decision_bench

What `offerflow serve`'s fast path does per well-formed request, without sockets or the event loop:
`FastDecider.answer` (validation, engine, decision-log buffer, metrics, orjson) on single-placement
`web-banner` requests for random profiles, the engine frozen out of the collector's reach as a
server does, the writer thread flushing as in the service. Prints the CPU per answer of the calling
thread (the event loop's share) and of the process (the writer thread too), and the collections
per generation: figures that do not depend on who else uses the machine as much as wall time does.

`--turn K` feeds the same requests to `offerflow serve`'s HTTP protocol instead (`DecisionHttpProtocol`
on uvloop, 64 connections on in-memory transports), K requests per event-loop turn: the answer plus
the HTTP parsing, the protocol's callbacks and what it does once per turn, without the sockets.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
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
    parser.add_argument("--turn", type=int, default=0, help="Requests per event-loop turn through the protocol "
                                                              "(0: call the answer directly).")
    parser.add_argument("--caps", choices=["project", "embedded", "lmdb"], default="project",
                        help="The cap store: the project file's, embedded, or LMDB in a fresh scratch directory.")
    args = parser.parse_args()
    import pandas as pd
    from offerflow.core.config import load_config
    from offerflow.core.settings import CapsConfig
    from offerflow.decisioning.http_routes import freeze_long_lived
    from offerflow.decisioning.http_service import create_app

    config = load_config(args.workdir / "offerflow.yaml")
    if args.caps != "project":
        store = "embedded" if args.caps == "embedded" else f"lmdb://{tempfile.mkdtemp(prefix='answer-bench-caps-')}"
        config = config.model_copy(update={"caps": CapsConfig(store=store)})
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
        if args.turn:
            thread, process = _through_protocol(app, bodies, args.warmup, args.turn, count)
        else:
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
    if args.caps == "lmdb":
        shutil.rmtree(config.caps.store.removeprefix("lmdb://"), ignore_errors=True)
    print(json.dumps({"answers": n, "caps_store": args.caps, "thread_cpu_us_per_answer": round(thread / n * 1e6, 1),
                      "process_cpu_us_per_answer": round(process / n * 1e6, 1),
                      "collections_gen0_gen1_gen2": collections, "load_avg_1m": round(os.getloadavg()[0], 2)}))


class MemoryTransport:
    """What `offerflow serve`'s protocol asks of an asyncio transport, in memory: counts the bytes
    written and, with `keep`, keeps each write (one `send` each). Tests use it too."""

    def __init__(self, keep: bool = True) -> None:
        self.keep, self.sent, self.written = keep, [], 0

    def write(self, data: bytes) -> None:
        self.written += len(data)
        if self.keep:
            self.sent.append(bytes(data))

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str, default=None):
        return ("127.0.0.1", 8000) if name in ("peername", "sockname") else default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass


def _through_protocol(app, bodies: list[bytes], warmup: int, turn: int, count) -> tuple[float, float]:
    """CPU seconds (thread, process) of the requests after `warmup`, fed `turn` per loop turn."""
    import asyncio

    import uvloop
    from uvicorn.config import Config
    from uvicorn.server import ServerState

    from offerflow.decisioning.http_service import coalescing_http_protocol

    requests = [b"POST /decisions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: %d"
                b"\r\n\r\n%s" % (len(body), body) for body in bodies]

    async def drive() -> tuple[float, float]:
        config = Config(app, http=coalescing_http_protocol(), access_log=False)
        config.load()
        state = ServerState()
        connections = []
        for _ in range(64):
            protocol = coalescing_http_protocol()(config=config, server_state=state, app_state={})
            protocol.connection_made(MemoryTransport(keep=False))
            connections.append(protocol)
        started = None
        for lo in range(0, len(requests), turn):
            if lo >= warmup and started is None:
                gc.callbacks.append(count)
                started = time.thread_time(), time.process_time()
            for k, request in enumerate(requests[lo:lo + turn]):
                connections[(lo + k) % len(connections)].data_received(request)
            await asyncio.sleep(0)
        thread, process = time.thread_time() - started[0], time.process_time() - started[1]
        gc.callbacks.remove(count)
        if state.total_requests != len(requests):
            raise RuntimeError(f"{state.total_requests} of {len(requests)} requests answered")
        return thread, process

    return uvloop.run(drive())


if __name__ == "__main__":
    main()
