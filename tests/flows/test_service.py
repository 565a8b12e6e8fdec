"""The HTTP decision service, in process (TestClient), on the project the session pipeline built."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pandas as pd
import pytest

with warnings.catch_warnings():
    # Starlette >= 1.x wants `httpx2` for its TestClient and warns when it falls back to `httpx`;
    # only httpx is installed here (and the test client works with it), so silence that one warning.
    warnings.filterwarnings("ignore", message=r"Using `httpx` with `starlette.testclient` is deprecated")
    from fastapi.testclient import TestClient

from offerflow.catalog import load_profiles
from offerflow.config import load_config
from offerflow.service import FLUSH_EVERY, build_engine, create_app
from offerflow.store import RankingStore

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
    assert body["decision_id"].startswith("dec-") and body["profile_id"] == known_profile
    (placement,) = body["placements"]
    assert placement["placement_id"] == "web-banner" and placement["source"] == "ranking_table"
    assert 1 <= len(placement["items"]) <= config.placement("web-banner").items
    assert [i["rank"] for i in placement["items"]] == list(range(1, len(placement["items"]) + 1))
    assert placement["table_version"] == RankingStore(config.path(config.store.path)).current_version("web-banner")


def test_two_placements_have_no_duplicate_offers_unless_allowed(client, known_profile):
    body = _decide(client, profile_id=known_profile, placements=["web-banner", "web-sidebar"]).json()
    offers = [i["offer_id"] for p in body["placements"] for i in p["items"]]
    assert len(offers) == len(set(offers)) and len(body["placements"]) == 2
    dup = _decide(client, profile_id=known_profile, placements=["web-banner", "web-banner"],
                  allow_duplicates=True).json()
    first, second = ([i["offer_id"] for i in p["items"]] for p in dup["placements"])
    assert first == second  # the same ranking twice when duplicates are allowed


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
    assert email["source"] in {"thompson_sampling", "non_personalized", "fallback"}


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
        assert list(log_dir.glob("*.parquet"))  # the N-th decision flushed the buffer
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
