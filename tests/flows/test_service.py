"""The HTTP decision service, in process (TestClient), on the project the session pipeline built."""

from __future__ import annotations

import shutil
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pytest

with warnings.catch_warnings():
    # Starlette >= 1.x wants `httpx2` for its TestClient and warns when it falls back to `httpx`;
    # only httpx is installed here (and the test client works with it), so silence that one warning.
    warnings.filterwarnings("ignore", message=r"Using `httpx` with `starlette.testclient` is deprecated")
    from fastapi.testclient import TestClient

from offerflow.ingest.catalog import load_profiles
from offerflow.core.config import load_config
from offerflow.decisioning.engine import build_engine
from offerflow.decisioning.http_models import DecisionOut
from offerflow.decisioning.http_service import FLUSH_EVERY, coalescing_http_protocol, create_app
from offerflow.core.schema import DECISION_META_SCHEMA
from offerflow.core.store import RankingStore

pytestmark = pytest.mark.flow


@pytest.fixture(scope="module")
def project(pipeline_run):
    project_dir, _ = pipeline_run
    config = load_config(project_dir / "offerflow.yaml")
    return config, build_engine(config)


@pytest.fixture(scope="module")
def client(project, tmp_path_factory):
    config, engine = project
    app = create_app(config, engine=engine, log_dir=tmp_path_factory.mktemp("decision_log"))
    with TestClient(app) as c:
        yield c


@pytest.fixture(scope="module")
def known_profile(project) -> str:
    config, _ = project
    store = RankingStore(config.path(config.store.path))
    return str(store.read_table("web-banner").column("profile_id")[0])


def _decide(client: TestClient, **body):
    return client.post("/decisions", json=body)


def test_decision_for_a_known_profile(client, project, known_profile):
    config, _ = project
    resp = _decide(client, profile_id=known_profile, placements=["web-banner"])
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert DecisionOut.model_validate(body).model_dump(exclude_unset=True) == body  # the documented schema (no explanation unasked)
    assert body["decision_id"].startswith("dec-") and body["profile_id"] == known_profile
    (placement,) = body["placements"]
    assert placement["placement_id"] == "web-banner"
    assert (placement["source"], placement["arm"]) in {("ranking_table", "model"), ("exploration", "model"),
                                                       ("random_holdout", "holdout")}
    assert 0 < placement["items"][0]["propensity"] <= 1
    assert 1 <= len(placement["items"]) <= config.placement("web-banner").items
    assert [i["rank"] for i in placement["items"]] == list(range(1, len(placement["items"]) + 1))
    assert placement["table_version"] == RankingStore(config.path(config.store.path)).current_version("web-banner")


def test_two_placements_have_no_duplicate_offers_unless_allowed(client, project):
    config, _ = project
    table = RankingStore(config.path(config.store.path)).read_table("web-banner").column("profile_id")
    profiles = sorted(set(table.to_pylist()))[10:40]  # fresh profiles: no cap counted for them yet
    for profile_id in profiles:
        body = _decide(client, profile_id=profile_id, placements=["web-banner", "web-sidebar"]).json()
        offers = [i["offer_id"] for p in body["placements"] for i in p["items"]]
        assert len(offers) == len(set(offers)) and len(body["placements"]) == 2
    compared = 0
    for profile_id in profiles:
        dup = _decide(client, profile_id=profile_id, placements=["web-banner", "web-banner"],
                      allow_duplicates=True).json()
        # Holdout and exploration draws are random per placement; only two rankings both read from
        # the table must agree, and they must then be the same offers (duplicates are allowed).
        if {(p["source"], p["arm"]) for p in dup["placements"]} == {("ranking_table", "model")}:
            first, second = ([i["offer_id"] for i in p["items"]] for p in dup["placements"])
            assert first == second
            compared += 1
    assert compared >= 5  # ~70% of 30 requests qualify; fewer than 5 has a chance below 1e-8


def test_opted_out_profile_gets_the_email_fallback(client, project):
    config, _ = project
    profiles = load_profiles(config.path(config.data.outputs_dir) / "profiles_enriched.parquet")
    opted_out = profiles.loc[~profiles.email_opt_in.astype(bool), "profile_id"].iat[0]
    (placement,) = _decide(client, profile_id=str(opted_out), placements=["email-hero"]).json()["placements"]
    assert placement["source"] == "fallback"
    assert [(i["offer_id"], i["fallback"]) for i in placement["items"]] == [("o-fallback", True)]


def test_unknown_profile_gets_a_non_personalized_answer(client):
    body = _decide(client, profile_id="nobody-ever", placements=["web-banner", "email-hero"]).json()
    web, email = body["placements"]
    assert web["source"] == "non_personalized" and web["items"]
    assert email["source"] in {"thompson_sampling", "exploration", "random_too_few_qualified", "non_personalized",
                               "fallback"}


def test_request_errors(client, known_profile):
    resp = _decide(client, profile_id=known_profile, placements=["nowhere"])
    assert resp.status_code == 404 and resp.json()["detail"].startswith("unknown placement(s): nowhere")
    assert _decide(client, profile_id=known_profile, placements=["web-banner"], items=31).status_code == 422
    assert _decide(client, profile_id=known_profile, placements=[]).status_code == 422
    assert _decide(client, profile_id=known_profile, placements=["web-banner"], extra=1).status_code == 422
    assert _decide(client, placements=["web-banner"]).status_code == 422
    assert _decide(client, profile_id=known_profile, placements="web-banner").status_code == 422
    raw = client.post("/decisions", content=b"{not json", headers={"content-type": "application/json"})
    assert raw.status_code == 422


def test_api_key(project, known_profile, tmp_path):
    config, engine = project
    with TestClient(create_app(config, engine=engine, api_key="s3cret", log_dir=tmp_path)) as c:
        body = {"profile_id": known_profile, "placements": ["web-banner"]}
        assert c.post("/decisions", json=body).status_code == 401
        assert c.post("/decisions", json=body, headers={"X-API-Key": "wrong"}).status_code == 401
        assert c.post("/decisions", json=body, headers={"X-API-Key": "s3cret"}).status_code == 200


def test_health_and_admin_reload(project, client, tmp_path):
    config, engine = project
    store = RankingStore(config.path(config.store.path))
    expected = {p.id: store.current_version(p.id) for p in config.placements}
    assert client.get("/health").json() == {"status": "ok", "placements": expected}
    assert client.post("/admin/reload").status_code == 403  # no admin token configured
    app = create_app(config, engine=engine, admin_token="adm1n", log_dir=tmp_path)
    with TestClient(app) as c:
        assert c.post("/admin/reload").status_code == 401
        assert c.post("/admin/reload", headers={"Authorization": "Bearer nope"}).status_code == 401
        resp = c.post("/admin/reload", headers={"Authorization": "Bearer adm1n"})
        assert resp.status_code == 200 and resp.json() == {"status": "reloaded", "placements": expected}
        assert app.state.engine is not engine  # rebuilt and swapped
        assert c.post("/decisions", json={"profile_id": "x", "placements": ["web-banner"]}).status_code == 200


def test_openapi_docs(client):
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    assert spec["info"]["title"] and spec["info"]["description"]
    assert {"/decisions", "/health", "/admin/reload"} <= set(spec["paths"])


def test_decisions_are_logged_as_display_events(project, known_profile, tmp_path):
    config, engine = project
    log_dir = tmp_path / "log"
    app = create_app(config, engine=engine, log_dir=log_dir)
    ids = []
    with TestClient(app) as c:
        for _ in range(FLUSH_EVERY):
            ids.append(c.post("/decisions", json={"profile_id": known_profile, "placements": ["web-banner"]})
                       .json()["decision_id"])
        # the N-th decision woke the writer thread (requests never write themselves)
        deadline = time.monotonic() + 10
        # (on a slow machine the interval flush may write an earlier file first: wait until all are out)
        while (not list(log_dir.glob("*.parquet")) or app.state.decision_log.pending()) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert list(log_dir.glob("*.parquet")) and app.state.decision_log.pending() == 0
        c.post("/decisions", json={"profile_id": "late", "placements": ["web-sidebar"]})
    # shutdown flushed the rest
    events = pd.concat([pd.read_parquet(p) for p in sorted(log_dir.glob("*.parquet"))])
    assert set(events["event_type"]) == {"display"}
    assert set(ids) <= set(events["decision_id"]) and events["decision_id"].nunique() == FLUSH_EVERY + 1
    assert "late" in set(events["profile_id"])


def test_new_ranking_version_is_served_without_reload(pipeline_run, tmp_path, known_profile):
    project_dir, _ = pipeline_run
    copy = Path(shutil.copytree(project_dir, tmp_path / "project"))
    config = load_config(copy / "offerflow.yaml")
    with TestClient(create_app(config, log_dir=tmp_path / "log")) as c:
        def version() -> int:
            body = c.post("/decisions", json={"profile_id": known_profile, "placements": ["web-banner"]}).json()
            return body["placements"][0]["table_version"]

        before = version()
        store = RankingStore(config.path(config.store.path), config.store.keep_versions)
        metadata = {**store.read_metadata("web-banner"), "kind": "ranking"}
        published = store.publish("web-banner", store.read_table("web-banner"), metadata)
        assert published == before + 1
        assert version() == before + 1
        assert c.get("/health").json()["placements"]["web-banner"] == before + 1


def test_decision_metadata_is_logged_next_to_the_displays(project, tmp_path):
    config, engine = project
    with TestClient(create_app(config, engine=engine, log_dir=tmp_path)) as c:
        ids = [c.post("/decisions", json={"profile_id": f"p{i:07d}", "placements": ["web-banner", "email-hero"]})
               .json()["decision_id"] for i in range(100, 160)]
    meta = pd.concat([pd.read_parquet(p) for p in (tmp_path / "meta").glob("decisions-*.parquet")])
    assert list(meta.columns) == DECISION_META_SCHEMA.names and len(meta) == 120
    # non_personalized: an email-hero profile whose eligible offers hold fewer than two qualified ones
    # is served at random, not by the model (docs/decisioning.md)
    assert set(meta["decision_id"]) == set(ids)
    assert set(meta["arm"]) <= {"model", "holdout", "non_personalized", "fallback"}
    assert set(meta.loc[meta.placement_id == "web-banner", "arm"]) <= {"model", "holdout", "fallback"}
    events = pd.concat([pd.read_parquet(p) for p in tmp_path.glob("decisions-*.parquet")])
    assert events.loc[events.event_id.str.endswith("-1"), "propensity"].between(0, 1, inclusive="right").all()


def test_admin_cap_state_and_reset(pipeline_run, tmp_path):
    project_dir, _ = pipeline_run
    copy = Path(shutil.copytree(project_dir, tmp_path / "project"))
    config = load_config(copy / "offerflow.yaml")
    app = create_app(config, admin_token="adm1n", log_dir=tmp_path / "log")
    auth = {"Authorization": "Bearer adm1n"}
    with TestClient(app) as c:
        assert c.get("/admin/caps").status_code == 401
        assert c.post("/admin/caps/reset", json={}).status_code == 401
        engine = app.state.engine
        now = datetime.now(timezone.utc)
        for _ in range(3):  # o-001: at most 3 displays per profile and day
            engine.caps.record(["o-001"], "web-banner", "p0000007", now)
        state = {r["offer_id"]: r for r in c.get("/admin/caps", params={"profile_id": "p0000007"}, headers=auth).json()}
        assert state["o-001"]["capped"] and state["o-001"]["count"] == 3
        for _ in range(20):
            body = c.post("/decisions", json={"profile_id": "p0000007", "placements": ["web-banner", "web-sidebar"],
                                              "items": 5}).json()
            assert "o-001" not in [i["offer_id"] for p in body["placements"] for i in p["items"]]
        assert c.post("/admin/caps/reset", json={"offer_id": "o-999"}, headers=auth).status_code == 404
        reset = c.post("/admin/caps/reset", json={"offer_id": "o-001"}, headers=auth)
        assert reset.status_code == 200 and reset.json()["counters_cleared"] >= 1
        assert datetime.fromisoformat(reset.json()["reset_at"]) >= now
        state = {r["offer_id"]: r for r in c.get("/admin/caps", params={"profile_id": "p0000007"}, headers=auth).json()}
        assert not state["o-001"]["capped"]
    assert (copy / "data/outputs/caps/resets.json").exists()  # a reload does not count the old events again


def test_a_running_service_counts_what_other_processes_decide_in_its_caps(pipeline_run, tmp_path):
    """`offerflow decide` beside a running service (embedded cap store): the decisions it logs reach
    the service's counters within the writer thread's interval, so the service does not show an
    offer over its cap (o-001: 3 displays a day per profile) that the other process reached."""
    from offerflow.decisioning.decision_log import log_decisions
    from offerflow.decisioning.http_service import FLUSH_INTERVAL_S

    project_dir, _ = pipeline_run
    config = load_config(Path(shutil.copytree(project_dir, tmp_path / "project")) / "offerflow.yaml")
    shutil.rmtree(config.paths.decision_log, ignore_errors=True)  # what other tests decided in the session's project
    app = create_app(config, admin_token="adm1n", log_dir=config.paths.decision_log)
    with TestClient(app) as c:
        other = build_engine(config)  # another process's engine, as `offerflow decide` builds it
        shows = lambda decision: "o-001" in [i.offer_id for p in decision.placements for i in p.items]  # noqa: E731
        profile = next(p for p in other.profiles["profile_id"][:200] if shows(other.decide(p, ["web-banner"], items=9)))
        other = build_engine(config)  # that probe was not logged: start the count again
        for _ in range(3):
            decision = other.decide(profile, ["web-banner"], items=9)
            assert shows(decision)
            log_decisions([decision], config.paths.decision_log)
        started, count = time.monotonic(), 0
        while count < 3 and time.monotonic() - started < 4 * FLUSH_INTERVAL_S:
            state = c.get("/admin/caps", params={"profile_id": profile}, headers={"Authorization": "Bearer adm1n"})
            count = {r["offer_id"]: r for r in state.json()}["o-001"]["count"]
            time.sleep(0.1)
        assert count == 3, f"the service counted {count} of the 3 displays decided beside it"
        for _ in range(5):
            body = c.post("/decisions", json={"profile_id": profile, "placements": ["web-banner"], "items": 9}).json()
            assert "o-001" not in [i["offer_id"] for p in body["placements"] for i in p["items"]]


def test_publishing_under_load_drops_no_request(pipeline_run, tmp_path):
    """A real uvicorn server on loopback, four client threads, a new version published mid-stream."""
    import socket
    import threading

    import httpx
    import uvicorn

    project_dir, _ = pipeline_run
    copy = Path(shutil.copytree(project_dir, tmp_path / "project"))
    config = load_config(copy / "offerflow.yaml")
    store = RankingStore(config.path(config.store.path), config.store.keep_versions)
    before = store.current_version("web-banner")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # the protocol `offerflow serve` runs: header and body of an answer leave in one send
    server = uvicorn.Server(uvicorn.Config(create_app(config, log_dir=tmp_path / "log"), host="127.0.0.1",
                                           port=port, log_level="warning", http=coalescing_http_protocol(),
                                           access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        threading.Event().wait(0.05)
    stop = threading.Event()
    seen: list[list[tuple[int, int]]] = [[] for _ in range(4)]

    def client(k: int) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as http:
            i = 0
            while not stop.is_set():
                r = http.post("/decisions", json={"profile_id": f"p{(k * 500 + i) % 3000 + 1:07d}",
                                                  "placements": ["web-banner"]})
                version = r.json()["placements"][0]["table_version"] if r.status_code == 200 else -1
                seen[k].append((r.status_code, version))
                i += 1

    workers = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    try:
        for w in workers:
            w.start()
        while min(len(s) for s in seen) < 50:
            threading.Event().wait(0.05)
        published = store.publish("web-banner", store.read_table("web-banner"),
                                  {**store.read_metadata("web-banner"), "kind": "ranking"})
        counts = [len(s) for s in seen]
        while min(len(s) - c for s, c in zip(seen, counts)) < 50:
            threading.Event().wait(0.05)
        # over one keep-alive connection: what the fast path passes on is answered by the route
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as http:
            bad_json = http.post("/decisions", content=b'{"profile_id": "p0000001", "placements": [',
                                 headers={"content-type": "application/json"})
            nowhere = http.post("/decisions", json={"profile_id": "p0000001", "placements": ["nowhere"]})
            extra = http.post("/decisions", json={"profile_id": "p0000001", "placements": ["web-banner"], "x": 1})
            good = http.post("/decisions", json={"profile_id": "p0000001", "placements": ["web-banner"]})
        assert (bad_json.status_code, nowhere.status_code, extra.status_code, good.status_code) == (422, 404, 422, 200)
        assert nowhere.json()["detail"].startswith("unknown placement(s): nowhere")
        assert good.json()["placements"][0]["table_version"] == published
    finally:
        stop.set()
        for w in workers:
            w.join()
        server.should_exit = True
        thread.join()
    assert published == before + 1
    for responses in seen:
        assert {status for status, _ in responses} == {200}
        versions = [v for _, v in responses]
        assert set(versions) <= {before, published} and versions == sorted(versions)  # never back to the old one
        assert versions[-1] == published


def test_reload_under_load_counts_every_decision_in_the_new_caps(pipeline_run, tmp_path):
    """Engines rebuilt twice while three clients decide: the final engine's cap counters hold every
    decision made before, during and after each rebuild, exactly once (o-002's total decision cap)."""
    import socket
    import threading

    import httpx
    import uvicorn

    project_dir, _ = pipeline_run
    copy = Path(shutil.copytree(project_dir, tmp_path / "project"))
    config = load_config(copy / "offerflow.yaml")
    app = create_app(config, admin_token="adm1n", log_dir=copy / "data/outputs/decision_log")
    rule = next(r for r in app.state.engine.caps.caps["o-002"] if r.event == "decision")
    placements = ["web-banner", "web-sidebar"]
    before = {p: app.state.engine.caps.count(rule, "o-002", p, "") for p in placements}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           http=coalescing_http_protocol(), access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        threading.Event().wait(0.05)
    stop = threading.Event()
    answers: list[list[dict]] = [[] for _ in range(3)]

    def client(k: int) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as http:
            i = 0
            while not stop.is_set():
                r = http.post("/decisions", json={"profile_id": f"p{(k * 700 + i) % 3000 + 1:07d}",
                                                  "placements": placements})
                answers[k].append(r.json() if r.status_code == 200 else {"status": r.status_code})
                i += 1

    workers = [threading.Thread(target=client, args=(k,)) for k in range(3)]
    engines = []
    try:
        for w in workers:
            w.start()
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as admin:
            for _ in range(2):
                while sum(map(len, answers)) < 100 * (len(engines) + 1):
                    threading.Event().wait(0.02)
                engines.append(app.state.engine)
                assert admin.post("/admin/reload", headers={"Authorization": "Bearer adm1n"}).status_code == 200
        total = sum(map(len, answers))
        while sum(map(len, answers)) < total + 100:
            threading.Event().wait(0.02)
    finally:
        stop.set()
        for w in workers:
            w.join()
        server.should_exit = True
        thread.join()
    final = app.state.engine
    assert final is not engines[0] and final is not engines[1] and len(set(map(id, engines))) == 2
    decided = [a for answers_k in answers for a in answers_k]
    assert all("status" not in a for a in decided) and len(decided) >= 300
    for p in placements:
        shown = sum(i["offer_id"] == "o-002" for a in decided for pd_ in a["placements"] if pd_["placement_id"] == p
                    for i in pd_["items"])
        assert final.caps.count(rule, "o-002", p, "") == before[p] + shown, p
