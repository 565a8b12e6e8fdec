"""The FastAPI routes of the HTTP decision service: ``POST /decisions`` (what the fast path passes
on, and its /docs entry), ``GET /health`` and the admin routes (reload, cap state and reset), with
their API-key and bearer-token checks. `create_app` in `http_service` assembles them."""

import gc
import logging
import secrets
import threading
import time
from datetime import datetime, timezone
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
import orjson

from offerflow.core.config import ProjectConfig
from offerflow.core.store import StoreError
from offerflow.rules.capping import write_cap_reset
from offerflow.decisioning.decision_types import Decision, DecisionError
from offerflow.decisioning.engine import DecisionEngine, build_engine
from offerflow.decisioning.http_guards import MAX_BODY_BYTES, WRONG_API_KEY, clip, require_json
from offerflow.decisioning.http_models import (CapResetOut, CapResetRequest, CapRuleStateOut, DecisionOut,
                                               DecisionRequest, ErrorOut, HealthOut, PublishedRankingOut)
from offerflow.decisioning.rankings_view import published_ranking

_log = logging.getLogger(__name__)


def count_if_swapped(service: FastAPI, engine: DecisionEngine, decision: Decision) -> None:
    """A decision the old engine made while a reload swapped engines (it waited for the cap lock)
    also counts in the new engine's caps."""
    current = service.state.engine
    if current is not engine:
        current.count_decisions([decision])


def freeze_long_lived(unfreeze: bool = False) -> None:
    """Move what exists now (the engine: profile index, eligibility, tables) out of the garbage
    collector's reach. A full collection otherwise walks it every few thousand decisions, ~120 ms
    with 1M profiles, and that pause was the service's p99. `unfreeze` first releases what an
    earlier freeze kept (after a reload, so the old engine can be collected)."""
    if unfreeze:
        gc.unfreeze()
    gc.collect()
    gc.freeze()


def add_decision_routes(app: FastAPI, config: ProjectConfig, buffer: Any, api_key: str | None) -> None:
    """``POST /decisions`` (checked against `api_key` when set), ``GET /health`` and the
    `DecisionError` handler (unknown placement: 404, else 422). `buffer`: the `DecisionLogBuffer`."""

    async def check_api_key(key: Annotated[str | None, Depends(APIKeyHeader(name="X-API-Key",
                                                                             auto_error=False))]) -> None:
        # async: no I/O, and a sync dependency costs a threadpool round trip per request (~6% of the
        # server's CPU when 1% of the requests, the malformed ones, came this way)
        if api_key is not None and (key is None or not secrets.compare_digest(key.encode(), api_key.encode())):
            raise HTTPException(401, WRONG_API_KEY)

    @app.exception_handler(DecisionError)
    async def decision_error(_: Request, exc: DecisionError) -> JSONResponse:  # async: no threadpool hop
        status = 404 if str(exc).startswith("unknown placement") or "no published table" in str(exc) else 422
        return JSONResponse({"detail": str(exc)}, status_code=status)

    @app.post("/decisions", response_model=DecisionOut, dependencies=[Depends(check_api_key), Depends(require_json)],
              responses={401: {"model": ErrorOut}, 404: {"model": ErrorOut, "description": "Unknown placement"},
                         413: {"model": ErrorOut, "description": f"The body is over {MAX_BODY_BYTES:,} bytes"},
                         415: {"model": ErrorOut, "description": "The body is not JSON (Content-Type must be "
                                                                 "application/json)"}},
              summary="Decide which offers to show a profile")
    async def decide(request: DecisionRequest):
        # Well-formed requests are answered by DecisionFastPath; this route documents the endpoint
        # and answers what the fast path passed on (mostly errors), with the same result.
        current: DecisionEngine = app.state.engine
        started = time.perf_counter()
        decision = current.decide(request.profile_id, request.placements, items=request.items,
                                  allow_duplicates=request.allow_duplicates, explain=request.explain)
        count_if_swapped(app, current, decision)
        buffer.add(decision)
        app.state.metrics.observe(decision, time.perf_counter() - started, current.caps)
        # Serialized directly: the dataclasses already have the response's shape.
        return Response(orjson.dumps(decision.to_dict()), media_type="application/json")

    @app.get("/rankings/{placement_id}", response_model=PublishedRankingOut, response_model_exclude_none=True,
             dependencies=[Depends(check_api_key)], responses={401: {"model": ErrorOut}, 404: {"model": ErrorOut}},
             summary="The published ranking of a placement (per profile, or every offer's posterior)")
    def ranking(placement_id: str, profile_id: str | None = None,
                limit: Annotated[int, Query(ge=1, le=1000)] = 100):
        # the table as published: eligibility, caps and fallbacks are applied by POST /decisions
        return published_ranking(app.state.engine, [p.id for p in config.placements], placement_id,
                                 profile_id, limit)

    @app.get("/health", response_model=HealthOut, summary="Liveness and the current ranking versions")
    def health():
        return {"status": "ok", "placements": _versions(app, config)}


def _versions(app: FastAPI, config: ProjectConfig) -> dict[str, int | None]:
    """The current published ranking version of every placement (None: nothing published)."""
    store = app.state.engine.store
    return {p.id: store.current_version(p.id) for p in config.placements}


def add_admin_routes(app: FastAPI, config: ProjectConfig, buffer: Any, admin_token: str | None,
                     freeze_gc: bool) -> None:
    """``POST /admin/reload``, ``GET /admin/caps`` and ``POST /admin/caps/reset``, each needing the
    bearer `admin_token` (403 when none is configured)."""
    reload_lock = threading.Lock()

    def check_admin(creds: Annotated[HTTPAuthorizationCredentials | None,
                                     Depends(HTTPBearer(auto_error=False))]) -> None:
        if admin_token is None:
            raise HTTPException(403, "no admin token is configured for this service")
        if creds is None or not secrets.compare_digest(creds.credentials.encode(), admin_token.encode()):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    @app.post("/admin/reload", response_model=HealthOut, dependencies=[Depends(check_admin)],
              responses={401: {"model": ErrorOut}, 403: {"model": ErrorOut},
                         409: {"model": ErrorOut, "description": "The new catalog or profiles are broken"}},
              summary="Reload profiles and offers (new ranking versions need no reload)")
    def reload():
        # Requests go on with the old engine while the new one is built (seconds for 1M profiles).
        # The new engine counts caps from the log (everything decided before the hold), then the
        # decisions made since; it is swapped in under the old engine's cap lock, so none is missed.
        with reload_lock, buffer.held() as unlogged:
            try:
                engine = build_engine(config).preload()
            except (ValueError, OSError, StoreError) as exc:  # a broken catalog, profiles file, store...
                message = clip(" ".join(str(exc).split()), 1000) or type(exc).__name__
                _log.warning("reload failed, the previous engine keeps serving: %s", message)
                return JSONResponse({"detail": f"reload failed, the previous engine keeps serving: {message}"},
                                    status_code=409)
            old: DecisionEngine = app.state.engine
            with old.caps.lock:
                engine.count_decisions(unlogged())
                app.state.engine = engine
            if freeze_gc:
                freeze_long_lived(unfreeze=True)
        return {"status": "reloaded", "placements": _versions(app, config)}

    @app.get("/admin/caps", response_model=list[CapRuleStateOut], dependencies=[Depends(check_admin)],
             responses={401: {"model": ErrorOut}, 403: {"model": ErrorOut}},
             summary="Cap state: per offer and rule, the current count, the window and whether it is capped")
    def caps_state(profile_id: Annotated[str | None, Query(description="Show this profile's per-profile counts "
                                                                       "(default: the largest counter).")] = None):
        # the rows as the cap store gives them (offer_id first); the response model documents them
        return JSONResponse(app.state.engine.caps.state(profile_id=profile_id))

    @app.post("/admin/caps/reset", response_model=CapResetOut,
              dependencies=[Depends(check_admin), Depends(require_json)],
              responses={401: {"model": ErrorOut}, 403: {"model": ErrorOut},
                         404: {"model": ErrorOut, "description": "Unknown offer"},
                         415: {"model": ErrorOut, "description": "The body is not JSON (Content-Type must be "
                                                                 "application/json)"}},
              summary="Reset cap counters (one offer or all); events before now stop counting")
    def caps_reset(request: CapResetRequest | None = None):
        offer_id = request.offer_id if request is not None else None
        engine: DecisionEngine = app.state.engine
        if offer_id is not None and offer_id not in engine.offers.index:
            raise HTTPException(404, f"unknown offer {offer_id!r}")
        with engine.caps.lock:
            at = write_cap_reset(config.paths.cap_resets, offer_id, datetime.now(timezone.utc))
            cleared = engine.caps.reset(offer_id)
        return {"status": "reset", "offer_id": offer_id, "reset_at": at.isoformat(), "counters_cleared": cleared}
