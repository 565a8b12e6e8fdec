"""The HTTP decision service: the decision step behind a small FastAPI app.

`create_app(config)` answers ``POST /decisions`` with the same decisions as ``offerflow decide``,
reports the published ranking version of every placement on ``GET /health`` and rebuilds the
engine (profiles, offers, cap counters) on ``POST /admin/reload``. ``GET /admin/caps`` shows the
live cap counters and ``POST /admin/caps/reset`` clears them (both need the admin token). Newly published ranking versions need no
reload: the engine checks the store's manifest on every request (under `offerflow serve`, at most
once per event-loop turn and every 5 ms: `FastDecider.hold_versions`).

A well-formed ``POST /decisions`` is answered by `FastDecider`: the same `DecisionRequest` model
validates the body (a plain body, `http_models.plain_request`, is read without it), orjson encodes
the answer, and the request skips dependency solving and the
threadpool hops that cost ~1 ms of a ~0.1 ms decision. `DecisionFastPath`, a pure ASGI middleware
in front of FastAPI's routing, calls it; `offerflow serve`'s protocol (`http_protocol`) calls it
straight from the HTTP parser. Anything else (a bad body, a missing API key, an unknown placement)
goes on to the FastAPI route, which answers with its usual 4xx; the route also documents the
endpoint at /docs.

Decisions are buffered in memory as the decision log's columns and appended to it (as ``display``
events, see `decision_log`) by a background thread: as soon as `FLUSH_EVERY` are pending, every
`FLUSH_INTERVAL_S` seconds and on shutdown; request handling never writes.
"""

import asyncio
import gc
import logging
import os
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
import orjson
from pydantic import ValidationError

from offerflow.core.config import ProjectConfig
from offerflow.decisioning.decision_log import DecisionColumns, write_decision_log
from offerflow.decisioning.decision_types import Decision, DecisionError
from offerflow.decisioning.engine import DecisionEngine, build_engine
from offerflow.decisioning.http_guards import (MAX_BODY_BYTES, TOO_LARGE, WRONG_API_KEY, BodyTooLarge, declared_length,
                                               read_body, send_error, validation_error)
from offerflow.decisioning.http_models import DecisionRequest, plain_request
from offerflow.decisioning.http_docs import add_offline_docs
from offerflow.decisioning.loop_watch import LoopWatch, watch_from_env
from offerflow.decisioning.metrics import ServiceMetrics, add_metrics_route
from offerflow.decisioning.http_routes import (add_admin_routes, add_decision_routes, count_if_swapped,
                                               freeze_long_lived)

FLUSH_EVERY = 2000
FLUSH_INTERVAL_S = 2.0
_log = logging.getLogger(__name__)


class DecisionLogBuffer:
    """Decisions waiting to be appended to the decision log, as its columns (`DecisionColumns`);
    thread-safe.

    `add` only appends a decision's values to lists (and wakes the writer thread of `running` once
    `flush_every` are pending), so a request never waits for Parquet writing, and the writer thread
    does its work in Arrow, holding the interpreter only briefly."""

    def __init__(self, directory: Path, flush_every: int = FLUSH_EVERY,
                 interval_s: float = FLUSH_INTERVAL_S) -> None:
        self.directory, self.flush_every, self.interval_s = Path(directory), flush_every, interval_s
        self._pending = DecisionColumns()
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()  # one writer at a time, so files appear in decision order
        self._due = threading.Event()
        self._last_flush = self._last_absorb = time.monotonic()
        self._own_new: set[str] = set()  # files this buffer wrote since the last `absorb` call
        #: Called from the writer thread every `interval_s` with those names (`absorb_others`).
        self.absorb: Callable[[set[str]], Any] | None = None
        self.watch: LoopWatch | None = None  # opt-in diagnostics (`loop_watch`): flushes noted there

    def add(self, decision: Decision) -> bool:
        """Queue a decision; True when `flush_every` are pending (the writer thread has been woken)."""
        with self._lock:
            self._pending.add(decision)
            due = self._pending.decisions >= self.flush_every
        if due:
            self._due.set()
        return due

    def pending(self) -> int:
        with self._lock:
            return self._pending.decisions

    def flush(self) -> Path | None:
        """Write what is pending as one new Parquet file (None when nothing is pending)."""
        with self._flush_lock:
            return self._write_pending()

    def _write_pending(self) -> Path | None:
        with self._lock:
            batch, self._pending = self._pending, DecisionColumns()
            self._last_flush = time.monotonic()
            self._due.clear()
        if not batch.decisions:
            return None
        started, started_cpu = time.perf_counter(), time.thread_time()
        try:
            written = write_decision_log(*batch.tables(), self.directory)
        except Exception:  # keep the decisions for the next attempt rather than lose them
            _log.exception("writing %d decisions to %s failed", batch.decisions, self.directory)
            with self._lock:
                self._pending.prepend(batch)
            return None
        self._own_new.add(written.name)
        if self.watch is not None:
            self.watch.flushed(started, time.perf_counter(), batch.decisions, time.thread_time() - started_cpu)
        return written

    def absorb_others(self) -> None:
        """Hand `absorb` the names of the files this buffer wrote since its last call, so it can
        count the decision-log files of other processes (`CapCounters.absorb_logs`); under the
        flush lock, so every file of this buffer is named by then."""
        if self.absorb is None:
            return
        with self._flush_lock:
            own, self._own_new, self._last_absorb = self._own_new, set(), time.monotonic()
            try:
                self.absorb(own)
            except Exception:  # the next call tries again; decisions go on with the counts they have
                _log.exception("counting the decisions other processes logged in %s failed", self.directory)

    @contextmanager
    def held(self) -> Iterator[Any]:
        """Flush, then write nothing while inside; yields a function listing the decisions not in
        the log (those added since, as `DecisionColumns.to_decisions` gives them). A reload counts
        the log, then these, so no decision is lost from the cap counters or counted twice."""
        with self._flush_lock:
            self._write_pending()

            def unlogged() -> list[Decision]:
                with self._lock:
                    return self._pending.to_decisions()

            yield unlogged

    @contextmanager
    def running(self) -> Iterator[None]:
        """Write from a background thread while inside (when `flush_every` are pending, else every
        `interval_s`); flush once more on exit."""
        stop = threading.Event()

        def loop() -> None:
            while not stop.is_set():
                woken = self._due.wait(max(0.0, self.interval_s - (time.monotonic() - self._last_flush)))
                if woken or time.monotonic() - self._last_flush >= self.interval_s:
                    self.flush()
                if time.monotonic() - self._last_absorb >= self.interval_s:
                    self.absorb_others()

        thread = threading.Thread(target=loop, name="offerflow-decision-log", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            self._due.set()
            thread.join()
            self.flush()


class FastDecider:
    """The answer of a well-formed ``POST /decisions`` request, without FastAPI: the same
    `DecisionRequest` model validates the body, the same engine decides, orjson encodes. Used by
    `DecisionFastPath` (ASGI) and by `offerflow serve`'s protocol (`http_protocol`), which calls it
    straight from the HTTP parser. `service` is the FastAPI app (its `state` holds the engine)."""

    def __init__(self, service: FastAPI, buffer: "DecisionLogBuffer", api_key: str | None,
                 freeze_gc: bool = False) -> None:
        self.service, self.buffer, self.freeze_gc = service, buffer, freeze_gc
        self.api_key = None if api_key is None else api_key.encode()
        self._snapshot_loads = -1
        self.watch: LoopWatch | None = None  # opt-in diagnostics (`loop_watch`): answers noted there
        self._held: DecisionEngine | None = None  # the engine whose table versions this loop turn holds
        self._checked: tuple[DecisionEngine | None, float] = (None, 0.0)  # (engine, loop time) of the last check

    def key_ok(self, headers: list[tuple[bytes, bytes]]) -> bool:
        """True without an API key, or when the request's `X-API-Key` is it."""
        return self.api_key is None or any(name == b"x-api-key" and secrets.compare_digest(value, self.api_key)
                                           for name, value in headers)

    #: Under `offerflow serve`, the store's manifest is checked at the first request of a loop turn
    #: that starts this long after the previous check (one stat per turn was still ~0.4 a request
    #: at 3,000-4,000/s): a new version is served within this plus one loop turn of its switch.
    VERSION_CHECK_S = 0.005

    def hold_versions(self, loop: asyncio.AbstractEventLoop) -> None:
        """Serve one event-loop turn's requests from one reading of the ranking versions
        (`DecisionEngine.hold_versions`), read again when `VERSION_CHECK_S` has passed since the
        last check, until the turn ends. For a caller running in `loop` (`http_protocol`); `answer`
        alone checks on every request."""
        if self._held is None:
            loop.call_soon(self._release_versions)
            engine, now = self.service.state.engine, loop.time()
            last_engine, last_check = self._checked
            check = engine is not last_engine or now - last_check >= self.VERSION_CHECK_S
            self._held = engine
            engine.hold_versions(check)
            if check:
                self._checked = (engine, now)

    def _release_versions(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            held.release_versions()

    def answer(self, headers: list[tuple[bytes, bytes]], body: bytes) -> bytes | None:
        """The JSON answer of a well-formed request, or None to let the FastAPI route answer
        (not JSON, a validation error, a wrong API key, a `DecisionError`)."""
        json_body = True  # no content type: read as JSON, as the route does
        for name, value in headers:
            if name == b"content-type":
                json_body = value.startswith(b"application/json")
        if not (json_body and self.key_ok(headers)):
            return None
        state = self.service.state
        engine: DecisionEngine = state.engine
        started, watch = time.perf_counter(), self.watch
        started_cpu = time.thread_time() if watch is not None else 0.0
        try:
            data = orjson.loads(body)
            fields = plain_request(data)
            if fields is None:  # anything but the plain case: the model validates it
                request = DecisionRequest.model_validate(data)
                fields = (request.profile_id, request.placements, request.items, request.allow_duplicates,
                          request.explain)
            profile_id, placements, items, allow_duplicates, explain = fields
            decision = engine.decide(profile_id, placements, items=items, allow_duplicates=allow_duplicates,
                                     explain=explain)
        except (orjson.JSONDecodeError, ValidationError, DecisionError):
            return None
        if state.engine is not engine:  # a reload swapped engines meanwhile
            count_if_swapped(self.service, engine, decision)
        if self.freeze_gc and engine.snapshot_loads != self._snapshot_loads:  # a new table was read
            self._snapshot_loads = engine.snapshot_loads
            gc.freeze()  # O(1); its arrays are long-lived, see freeze_long_lived
        self.buffer.add(decision)
        state.metrics.observe(decision, time.perf_counter() - started, engine.caps)
        answer = orjson.dumps(decision)  # the dataclasses as `to_dict` (test_decision_hot_path)
        if watch is not None:
            watch.answered(started, time.perf_counter(), time.thread_time() - started_cpu)
        return answer


class DecisionFastPath:
    """ASGI middleware answering well-formed ``POST /decisions`` requests without FastAPI's routing.

    `decider` (a `FastDecider`) answers; when it returns None the request is passed on unchanged
    and the FastAPI route answers it, so error responses keep their format.
    """

    def __init__(self, app: Any, decider: FastDecider) -> None:
        self.app, self.decider = app, decider

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = declared_length(scope)
        fast = scope["path"] == "/decisions" and scope["method"] == "POST"
        if declared is not None and declared > MAX_BODY_BYTES:
            await send_error(send, 413, TOO_LARGE)
            return
        if not fast and declared is not None:  # the server holds the body to its declared length
            await self.app(scope, receive, send)
            return
        if fast and not self.decider.key_ok(scope["headers"]):  # the key first, as FastAPI cannot: it
            await send_error(send, 401, WRONG_API_KEY)         # parses the body before the dependencies
            return
        try:  # a decision request, or a body of unknown length (chunked): read it, up to the limit
            body = await read_body(receive)
        except BodyTooLarge:
            await send_error(send, 413, TOO_LARGE)
            return
        if body is None:  # client went away
            return
        answer = self.decider.answer(scope["headers"], body) if fast else None
        if answer is None:
            await self.app(scope, _replay(body, receive), send)
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(answer)).encode())]})
        await send({"type": "http.response.body", "body": answer})


def _replay(body: bytes, receive: Any) -> Any:
    """An ASGI `receive` that yields the already-read body once, then defers to the real one."""
    sent = False

    async def replayed() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


def create_app(config: ProjectConfig, *, engine: DecisionEngine | None = None, admin_token: str | None = None,
               api_key: str | None = None, log_dir: Path | None = None, freeze_gc: bool = False,
               fast_path: bool = True) -> FastAPI:
    """The decision service of one project (see the module docstring). `freeze_gc`: keep the
    engine out of the garbage collector's reach (`freeze_long_lived`; for a server process of its
    own, as `run_server` makes: it acts on the whole process). `fast_path=False` leaves
    `DecisionFastPath` out, for `serving_app` to put in front of everything."""
    buffer = DecisionLogBuffer(log_dir if log_dir is not None else
                               config.path(config.data.outputs_dir) / "decision_log")

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if freeze_gc:
            freeze_long_lived()
        watch = watch_from_env()  # None unless OFFERFLOW_LOOP_WATCH is set
        if watch is not None:
            buffer.watch = app.state.fast_decider.watch = watch.start(asyncio.get_running_loop())
        try:
            with buffer.running():
                yield
        finally:
            if watch is not None:
                watch.stop()

    app = FastAPI(title="offerflow decision service", version="0.1.0", lifespan=lifespan, docs_url=None,
                  redoc_url=None, description=(
        "Which marketing offers to show a profile, right now, in one or more placements. Answers come "
        "from the published ranking tables (personalized rankings, or Thompson sampling for "
        "auto-optimized placements), filtered by each offer's eligibility rule, with the placement's "
        "fallback offer when nothing is eligible. Every decision is logged as `display` events."))
    app.state.engine = (engine if engine is not None else build_engine(config)).preload()
    app.state.decision_log = buffer
    app.state.metrics = ServiceMetrics()
    add_metrics_route(app, app.state.metrics)
    add_offline_docs(app)
    app.add_exception_handler(RequestValidationError, validation_error)
    add_decision_routes(app, config, buffer, api_key)
    add_admin_routes(app, config, buffer, admin_token, freeze_gc)
    app.state.fast_decider = FastDecider(app, buffer, api_key, freeze_gc)

    def every_interval(own: set[str]) -> None:  # from the writer thread, every FLUSH_INTERVAL_S
        app.state.metrics.flush()  # so a worker that stopped getting requests shows its last counts too
        absorb_other_decisions(app, buffer.directory, own, config.paths.cap_resets)

    buffer.absorb = every_interval
    if fast_path:
        app.add_middleware(DecisionFastPath, decider=app.state.fast_decider)
    return app


def absorb_other_decisions(app: FastAPI, log_dir: Path, own: set[str], resets_path: Path) -> None:
    """The decisions other processes logged since the service counted its caps (`offerflow decide`
    beside a running service), into its embedded counters; a shared store (Redis) has them already."""
    caps = app.state.engine.caps
    if not caps.shared:
        caps.absorb_logs(log_dir, own, resets_path)


def serving_app(config: ProjectConfig, *, admin_token: str | None = None, api_key: str | None = None) -> Any:
    """The ASGI app a server runs: `DecisionFastPath` in front of the FastAPI app rather than inside
    its middleware stack, so a decision skips Starlette's error and telemetry middleware too (they
    took ~15% of a decision's CPU in front of the fast path); everything else reaches FastAPI."""
    app = create_app(config, admin_token=admin_token, api_key=api_key, freeze_gc=True, fast_path=False)
    return DecisionFastPath(app, app.state.fast_decider)


PROTOCOL = "offerflow.decisioning.http_protocol:DecisionHttpProtocol"
#: What `run_server` hands its worker processes (uvicorn's workers build the app from an import string).
SERVE_CONFIG_ENV, ADMIN_TOKEN_ENV, API_KEY_ENV = "OFFERFLOW_SERVE_CONFIG", "OFFERFLOW_ADMIN_TOKEN", "OFFERFLOW_API_KEY"


def coalescing_http_protocol() -> type:
    """The protocol `offerflow serve` runs (`http_protocol.DecisionHttpProtocol`): one write per
    answer, well-formed decision requests answered from the HTTP parser."""
    from offerflow.decisioning.http_protocol import DecisionHttpProtocol

    return DecisionHttpProtocol


def serve_app() -> Any:
    """The app of one worker process of `run_server(workers=N)`: the project file, the admin
    token and the API key come from the environment the parent set."""
    from offerflow.decisioning.switches import load_serving_config

    return serving_app(load_serving_config(os.environ[SERVE_CONFIG_ENV]), admin_token=os.environ.get(ADMIN_TOKEN_ENV),
                       api_key=os.environ.get(API_KEY_ENV))


def run_server(config: ProjectConfig, host: str = "127.0.0.1", port: int = 8000, admin_token: str | None = None,
               api_key: str | None = None, access_log: bool = False, workers: int = 1,
               config_path: Path | None = None) -> None:
    """Serve the decision service with uvicorn (blocks until stopped). The access log is off by
    default: every decision is in the decision log already, and a log line per request costs ~7% of
    the service's CPU. `workers` > 1 starts that many processes, each on a socket of its own
    (SO_REUSEPORT, `http_workers`: the kernel spreads the connections), each with its own
    engine (tables re-read on a version switch) and the project's shared cap store, each appending
    its own decision-log files; it needs `caps.store` to be LMDB or Redis (`config_path`: the project
    file they load)."""
    import uvicorn

    if workers == 1:
        uvicorn.run(serving_app(config, admin_token=admin_token, api_key=api_key), host=host, port=port, workers=1,
                    http=PROTOCOL, loop="uvloop", access_log=access_log)
        return
    if not config.caps.shared or config_path is None:
        raise ValueError(f"--workers {workers} needs a shared cap store: set caps.store to lmdb (this machine) or "
                         "a Redis URL in the project file; the embedded store counts caps in one process")
    from offerflow.rules.cap_store import RedisCapStore
    from offerflow.rules.lmdb_caps import open_env

    lmdb_path = config.caps.lmdb_path(config.paths.outputs)
    if lmdb_path is not None:  # one clear error here, not one per worker
        open_env(lmdb_path, config.caps.lmdb_map_mib)
    else:
        RedisCapStore({}, config.caps.redis_url or "", config.project).ping()
    os.environ[SERVE_CONFIG_ENV] = str(Path(config_path).resolve())
    for name, value in ((ADMIN_TOKEN_ENV, admin_token), (API_KEY_ENV, api_key)):
        if value is not None:
            os.environ[name] = value
    from offerflow.decisioning.http_workers import ReusePortWorkers

    ReusePortWorkers(uvicorn.Config(f"{__name__}:serve_app", factory=True, host=host, port=port, workers=workers,
                                    http=PROTOCOL, loop="uvloop", access_log=access_log)).run()
