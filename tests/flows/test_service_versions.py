"""New ranking versions under `offerflow serve`'s protocol: the store's manifest is checked at most
once per event-loop turn and every `FastDecider.VERSION_CHECK_S`, not per request."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from offerflow.core.config import load_config
from offerflow.core.store import RankingStore
from offerflow.decisioning.engine import build_engine
from offerflow.decisioning.http_service import coalescing_http_protocol, create_app

from bench.answer_bench import MemoryTransport

pytestmark = pytest.mark.flow


def _project(root: Path) -> Path:
    """Three profiles, three offers, a personalized table for web-banner (version 1)."""
    pd.DataFrame({"profile_id": ["p1", "p2", "p3"], "age": [30, 40, 50]}).to_parquet(root / "profiles.parquet")
    offers = [{"offer_id": f"o-{j}", "name": f"o-{j}", "priority": j, "placements": ["web-banner"],
               "fallback": j == 0} for j in range(3)]
    (root / "offers.yaml").write_text(yaml.safe_dump({"offers": offers}))
    (root / "offerflow.yaml").write_text(yaml.safe_dump({
        "project": "versions", "data": {"profiles": "profiles.parquet", "offers": "offers.yaml"},
        "placements": [{"id": "web-banner", "channel": "web", "items": 1,
                        "ranking": {"method": "ai_model", "ai_model": "clicks"}}],
        "ai_models": [{"name": "clicks", "type": "personalized", "placements": ["web-banner"],
                       "holdout_share": 0.0, "exploration_share": 0.0}],
        "store": {"path": "rankings"}}))
    _publish(RankingStore(root / "rankings"), "1")
    return root / "offerflow.yaml"


def _publish(store: RankingStore, model_version: str) -> None:
    table = pd.DataFrame({"profile_id": ["p1", "p1", "p2", "p2"], "rank": [1, 2, 1, 2],
                          "offer_id": ["o-1", "o-2", "o-2", "o-1"], "score": [0.9, 0.5, 0.8, 0.4]})
    store.publish("web-banner", table, {"kind": "ranking", "ranking_method": "ai_model", "ai_model": "clicks",
                                        "model_version": model_version})


def _request(profile_id: str) -> bytes:
    body = json.dumps({"profile_id": profile_id, "placements": ["web-banner"]}).encode()
    return (b"POST /decisions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n" % len(body)) + body


def test_the_manifest_is_checked_once_per_loop_turn_and_a_new_version_served_from_the_next(tmp_path):
    """Requests read in one loop turn share one stat of the manifest; with no minimum interval
    between checks (VERSION_CHECK_S = 0), a version published during a turn is served from the next
    turn on, one published between turns from the first request after it. With an interval, turns
    within it keep the last check's versions; the first turn after it serves the new one. Without
    the protocol (`answer`, the ASGI path), every request checks."""
    from uvicorn.config import Config
    from uvicorn.server import ServerState

    config = load_config(_project(tmp_path))
    store = RankingStore(config.path(config.store.path))
    app = create_app(config, engine=build_engine(config, seed=1), log_dir=tmp_path / "log")
    engine, decider = app.state.engine, app.state.fast_decider
    stats = []
    stamp = engine.store.manifest_stamp
    engine.store.manifest_stamp = lambda: stats.append(1) or stamp()

    async def turns() -> list[list[bytes]]:
        uv_config = Config(app, http=coalescing_http_protocol(), access_log=False)
        uv_config.load()
        connections = []
        for _ in range(4):
            protocol = coalescing_http_protocol()(config=uv_config, server_state=ServerState(), app_state={})
            transport = MemoryTransport()
            protocol.connection_made(transport)
            connections.append((protocol, transport))
        (a, _), (b, _), (c, _), (d, _) = connections
        decider.VERSION_CHECK_S = 0.0
        a.data_received(_request("p1"))
        b.data_received(_request("p2"))
        assert len(stats) == 1  # one check for both requests of the turn
        _publish(store, "2")  # during the turn: the turn's next request still has version 1
        c.data_received(_request("p1"))
        await asyncio.sleep(0)  # the turn ends
        d.data_received(_request("p2"))  # the next turn checks and serves version 2
        await asyncio.sleep(0)
        _publish(store, "3")
        a.data_received(_request("p1"))
        await asyncio.sleep(0)
        assert len(stats) == 3
        decider.VERSION_CHECK_S = 3600.0  # a turn within the interval of the last check: no stat
        _publish(store, "4")
        b.data_received(_request("p2"))
        await asyncio.sleep(0)
        assert len(stats) == 3
        decider.VERSION_CHECK_S = 0.0  # the interval has passed: the next turn checks
        c.data_received(_request("p1"))
        await asyncio.sleep(0)
        return [t.sent for _, t in connections]

    sent = asyncio.run(turns())
    versions = [[(json.loads(s.split(b"\r\n\r\n", 1)[1])["placements"][0]["table_version"]) for s in conn]
                for conn in sent]
    assert versions == [[1, 3], [1, 3], [1, 4], [2]]
    assert len(stats) == 4
    # no loop turns: every answer checks the manifest
    body = json.dumps({"profile_id": "p1", "placements": ["web-banner"]}).encode()
    headers = [(b"content-type", b"application/json")]
    assert json.loads(decider.answer(headers, body))["placements"][0]["table_version"] == 4
    _publish(store, "5")
    assert json.loads(decider.answer(headers, body))["placements"][0]["table_version"] == 5
    assert len(stats) == 6
