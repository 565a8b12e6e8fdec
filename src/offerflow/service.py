"""The HTTP decision service: the decision step behind a small FastAPI app.

`create_app(config)` answers ``POST /decisions`` with the same decisions as ``offerflow decide``,
reports the published ranking version of every placement on ``GET /health`` and rebuilds the
engine (profiles, offers, cap counters) on ``POST /admin/reload``. ``GET /admin/caps`` shows the
live cap counters and ``POST /admin/caps/reset`` clears them (both need the admin token). Newly published ranking versions need no
reload: the engine checks the store's CURRENT version on every request.

Handlers are plain ``def``: FastAPI runs them in its threadpool. Decisions are buffered in memory
and appended to the decision log (as ``display`` events, see `log_decisions`) every
`FLUSH_EVERY` decisions, every `FLUSH_INTERVAL_S` seconds (a background thread) and on shutdown.
"""

import json
import logging
import secrets
import threading
import time
from datetime import datetime, timezone
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from offerflow.config import ProjectConfig
from offerflow.capping import write_cap_reset
from offerflow.decisioning import (MAX_ITEMS, Decision, DecisionEngine, DecisionError, build_engine,
                                   cap_resets_path, log_decisions)

FLUSH_EVERY = 500
FLUSH_INTERVAL_S = 2.0
MAX_PLACEMENTS = 10
_log = logging.getLogger(__name__)


class DecisionRequest(BaseModel):
    """Which offers to show one profile in one or more placements (filled in request order)."""

    model_config = ConfigDict(extra="forbid")
    profile_id: str = Field(min_length=1, description="Profile id.")
    placements: list[Annotated[str, Field(min_length=1)]] = Field(
        min_length=1, max_length=MAX_PLACEMENTS, description="Placement ids, in the order to fill them.")
    items: int | None = Field(default=None, ge=1, le=MAX_ITEMS,
                              description="Items per placement (default: the placement's own count).")
    allow_duplicates: bool = Field(default=False, description="Allow an offer in several placements.")


class DecisionItemOut(BaseModel):
    placement_id: str
    offer_id: str
    rank: int
    score: float | None
    fallback: bool
    propensity: float | None


class PlacementDecisionOut(BaseModel):
    placement_id: str
    channel: str
    items: list[DecisionItemOut]
    ranking_method: str
    ai_model: str | None
    model_version: str | None
    table_version: int | None
    source: str = Field(description="ranking_table | thompson_sampling | non_personalized | random_holdout | fallback")
    arm: str = Field(description="model | holdout | non_personalized | fallback")


class DecisionOut(BaseModel):
    decision_id: str
    profile_id: str
    decided_at: str
    placements: list[PlacementDecisionOut]


class HealthOut(BaseModel):
    status: str
    placements: dict[str, int | None] = Field(description="Current published version per placement.")


class ErrorOut(BaseModel):
    detail: str


class CapResetRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    offer_id: str | None = Field(default=None, description="Only this offer (default: every offer).")


class CapResetOut(BaseModel):
    status: str
    offer_id: str | None
    counters_cleared: int


class DecisionLogBuffer:
    """Decisions waiting to be appended to the decision log; thread-safe."""

    def __init__(self, directory: Path, flush_every: int = FLUSH_EVERY,
                 interval_s: float = FLUSH_INTERVAL_S) -> None:
        self.directory, self.flush_every, self.interval_s = Path(directory), flush_every, interval_s
        self._pending: list[Decision] = []
        self._lock = threading.Lock()
        self._last_flush = time.monotonic()

    def add(self, decision: Decision, flush: bool = True) -> bool:
        """Queue a decision; flush now if `flush_every` are pending (else return True: flush is due)."""
        with self._lock:
            self._pending.append(decision)
            due = len(self._pending) >= self.flush_every
        if due and flush:
            self.flush()
        return due

    def flush_if_due(self) -> None:
        if time.monotonic() - self._last_flush >= self.interval_s:
            self.flush()

    def flush(self) -> Path | None:
        """Write what is pending as one new Parquet file (None when nothing is pending)."""
        with self._lock:
            batch, self._pending = self._pending, []
            self._last_flush = time.monotonic()
        if not batch:
            return None
        try:
            return log_decisions(batch, self.directory)
        except Exception:  # keep the decisions for the next attempt rather than lose them
            _log.exception("writing %d decisions to %s failed", len(batch), self.directory)
            with self._lock:
                self._pending[:0] = batch
            return None

    @contextmanager
    def running(self) -> Iterator[None]:
        """Flush every `interval_s` from a background thread while inside; flush once more on exit."""
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(self.interval_s / 4):
                self.flush_if_due()

        thread = threading.Thread(target=loop, name="offerflow-decision-log", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            self.flush()


def create_app(config: ProjectConfig, *, engine: DecisionEngine | None = None, admin_token: str | None = None,
               api_key: str | None = None, log_dir: Path | None = None) -> FastAPI:
    """The decision service of one project (see the module docstring)."""
    buffer = DecisionLogBuffer(log_dir if log_dir is not None else
                               config.path(config.data.outputs_dir) / "decision_log")
    reload_lock = threading.Lock()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        with buffer.running():
            yield

    app = FastAPI(title="offerflow decision service", version="0.1.0", lifespan=lifespan, description=(
        "Which marketing offers to show a profile, right now, in one or more placements. Answers come "
        "from the published ranking tables (personalized rankings, or Thompson sampling for "
        "auto-optimized placements), filtered by each offer's eligibility rule, with the placement's "
        "fallback offer when nothing is eligible. Every decision is logged as `display` events."))
    app.state.engine = engine if engine is not None else build_engine(config)
    app.state.decision_log = buffer

    def check_api_key(key: Annotated[str | None, Depends(APIKeyHeader(name="X-API-Key", auto_error=False))]) -> None:
        if api_key is not None and (key is None or not secrets.compare_digest(key.encode(), api_key.encode())):
            raise HTTPException(401, "missing or wrong X-API-Key header")

    def check_admin(creds: Annotated[HTTPAuthorizationCredentials | None,
                                     Depends(HTTPBearer(auto_error=False))]) -> None:
        if admin_token is None:
            raise HTTPException(403, "no admin token is configured for this service")
        if creds is None or not secrets.compare_digest(creds.credentials.encode(), admin_token.encode()):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    def versions() -> dict[str, int | None]:
        store = app.state.engine.store
        return {p.id: store.current_version(p.id) for p in config.placements}

    @app.exception_handler(DecisionError)
    def decision_error(_: Request, exc: DecisionError) -> JSONResponse:
        status = 404 if str(exc).startswith("unknown placement") else 422
        return JSONResponse({"detail": str(exc)}, status_code=status)

    @app.post("/decisions", response_model=DecisionOut, dependencies=[Depends(check_api_key)],
              responses={401: {"model": ErrorOut}, 404: {"model": ErrorOut, "description": "Unknown placement"}},
              summary="Decide which offers to show a profile")
    async def decide(request: DecisionRequest):
        # async: a decision takes well under a millisecond of CPU, less than a threadpool hop costs.
        current: DecisionEngine = app.state.engine
        decision = current.decide(request.profile_id, request.placements, items=request.items,
                                  allow_duplicates=request.allow_duplicates)
        if buffer.add(decision, flush=False):
            await run_in_threadpool(buffer.flush)  # Parquet writing stays off the event loop
        # Serialized directly: the dataclasses already have the response's shape.
        return Response(json.dumps(decision.to_dict(), separators=(",", ":")), media_type="application/json")

    @app.get("/health", response_model=HealthOut, summary="Liveness and the current ranking versions")
    def health():
        return {"status": "ok", "placements": versions()}

    @app.post("/admin/reload", response_model=HealthOut, dependencies=[Depends(check_admin)],
              responses={401: {"model": ErrorOut}, 403: {"model": ErrorOut}},
              summary="Reload profiles and offers (new ranking versions need no reload)")
    def reload():
        with reload_lock:
            buffer.flush()  # so the new engine's cap counters include every decision made so far
            app.state.engine = build_engine(config)  # built first, then swapped in one assignment
        return {"status": "reloaded", "placements": versions()}

    @app.get("/admin/caps", dependencies=[Depends(check_admin)], responses={401: {"model": ErrorOut}},
             summary="Cap state: per offer and rule, the current count, the window and whether it is capped")
    def caps_state(profile_id: str | None = None):
        return app.state.engine.caps.state(profile_id=profile_id)

    @app.post("/admin/caps/reset", response_model=CapResetOut, dependencies=[Depends(check_admin)],
              responses={401: {"model": ErrorOut}, 404: {"model": ErrorOut}},
              summary="Reset cap counters (one offer or all); events before now stop counting")
    def caps_reset(request: CapResetRequest | None = None):
        offer_id = request.offer_id if request is not None else None
        engine: DecisionEngine = app.state.engine
        if offer_id is not None and offer_id not in engine.offers.index:
            raise HTTPException(404, f"unknown offer {offer_id!r}")
        with engine.caps.lock:
            write_cap_reset(cap_resets_path(config), offer_id, datetime.now(timezone.utc))
            cleared = engine.caps.reset(offer_id)
        return {"status": "reset", "offer_id": offer_id, "counters_cleared": cleared}

    return app


def run_server(config: ProjectConfig, host: str = "127.0.0.1", port: int = 8000,
               admin_token: str | None = None, api_key: str | None = None) -> None:
    """Serve the decision service with uvicorn (one worker; blocks until stopped)."""
    import uvicorn

    uvicorn.run(create_app(config, admin_token=admin_token, api_key=api_key), host=host, port=port, workers=1)
