"""Hostile and careless requests to the HTTP decision service (issue 19): always 2xx or 4xx with a
one-line JSON answer, never a 500; oversized ids and bodies are refused and not echoed."""

from __future__ import annotations

import logging
import shutil
import warnings
from pathlib import Path

import pytest

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r"Using `httpx` with `starlette.testclient` is deprecated")
    from fastapi.testclient import TestClient

from offerflow.core.config import load_config
from offerflow.decisioning.http_guards import MAX_BODY_BYTES, MAX_ID_BYTES, check_id
from offerflow.decisioning.http_service import create_app

pytestmark = pytest.mark.flow

JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def project_copy(pipeline_run, tmp_path_factory) -> Path:
    project_dir, _ = pipeline_run
    return Path(shutil.copytree(project_dir, tmp_path_factory.mktemp("hostile") / "project"))


@pytest.fixture(scope="module")
def app(project_copy):
    config = load_config(project_copy / "offerflow.yaml")
    return create_app(config, admin_token="adm1n", log_dir=project_copy / "data/outputs/decision_log")


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def _one_line_json(resp) -> dict:
    assert "\n" not in resp.text and "Traceback" not in resp.text
    return resp.json()


@pytest.mark.parametrize(
    "body",
    [
        '{"profile_id": "p", "placements": ["web-banner"], "items": NaN}',
        '{"profile_id": "p", "placements": ["web-banner"], "items": Infinity}',
        '{"profile_id": "p", "placements": ["web-banner"], "items": -Infinity}',
        '{"profile_id": "p", "placements": ["web-banner"], "items": 1e400}',
        '{"profile_id": NaN, "placements": ["web-banner"]}',
        '{"profile_id": "p", "placements": ["web-banner"], "allow_duplicates": 1e400}',
        '{"profile_id": "\\ud800", "placements": ["web-banner"]}',
        '{"profile_id": "p", "placements": ["\\udfff"]}',
        '{"profile_id": "p", "placements": ["web-banner"], "\\ud800": 1}',
        '{"profile_id": "p", "placements": [NaN, Infinity, "\\udc00"]}',
        '{"profile_id": "p", "placements": ["web-banner"], "items": 1' + "0" * 5000 + "}",
        '{"profile_id": "p", "placements": {"a": NaN}}',
        "[NaN]",
        "NaN",
        '{"profile_id": "p", "placements": ["web-banner"]',
        "\udcff",
    ],
)
def test_hostile_decision_bodies_get_a_4xx_that_renders(client, body):
    resp = client.post("/decisions", content=body.encode("utf-8", "surrogatepass"), headers=JSON)
    assert 400 <= resp.status_code < 500, (resp.status_code, resp.text)
    assert "detail" in _one_line_json(resp)


def test_non_finite_items_is_a_422_naming_the_field(client):
    resp = client.post("/decisions", content=b'{"profile_id": "p", "placements": ["web-banner"], "items": NaN}',
                       headers=JSON)
    assert resp.status_code == 422
    (error,) = _one_line_json(resp)["detail"]
    assert error["loc"] == ["body", "items"] and error["input"] == "nan"


def test_lone_surrogate_ids_are_a_422(client):
    resp = client.post("/decisions", content=b'{"profile_id": "\\ud800", "placements": ["web-banner"]}', headers=JSON)
    assert resp.status_code == 422
    (error,) = _one_line_json(resp)["detail"]
    assert error["loc"] == ["body", "profile_id"] and "unicode" in error["msg"]
    assert error["input"] == "\\ud800"  # echoed as an escape, so the answer encodes
    with pytest.raises(ValueError, match="lone surrogate"):  # the model's own check, for Python callers
        check_id("\ud800")


def test_profile_id_over_the_limit_is_a_422_and_not_echoed_in_full(client, caplog):
    long_id = "é" * (MAX_ID_BYTES // 2 + 1)  # fewer characters than the limit, more bytes
    huge_id = "x" * 5_000
    with caplog.at_level(logging.DEBUG):
        for profile_id in (long_id, huge_id):
            resp = client.post("/decisions", json={"profile_id": profile_id, "placements": ["web-banner"]})
            assert resp.status_code == 422, resp.text
            assert profile_id not in resp.text and len(resp.text) < 1_000
            assert "256" in resp.text
    assert huge_id not in caplog.text and long_id not in caplog.text
    ok = client.post("/decisions", json={"profile_id": "é" * (MAX_ID_BYTES // 2), "placements": ["web-banner"]})
    assert ok.status_code == 200


def test_bodies_over_the_limit_are_a_413(client):
    padding = "x" * MAX_BODY_BYTES
    resp = client.post("/decisions", json={"profile_id": "p", "placements": ["web-banner"], "pad": padding})
    assert resp.status_code == 413
    assert _one_line_json(resp) == {"detail": f"request body is larger than {MAX_BODY_BYTES:,} bytes"}

    def chunks():  # no Content-Length: the limit holds while reading
        for _ in range(MAX_BODY_BYTES // 1024 + 2):
            yield b" " * 1024

    assert client.post("/decisions", content=chunks(), headers=JSON).status_code == 413
    assert client.post("/admin/caps/reset", content=chunks(), headers=JSON).status_code == 413
    assert client.post("/admin/caps/reset", content=b"x" * (MAX_BODY_BYTES + 1), headers=JSON).status_code == 413
    assert client.get("/health").status_code == 200


def test_a_broken_catalog_on_reload_is_a_409_and_the_old_engine_keeps_serving(app, client, project_copy):
    config = load_config(project_copy / "offerflow.yaml")
    offers = config.path(config.data.offers)
    good = offers.read_bytes()
    engine = app.state.engine
    auth = {"Authorization": "Bearer adm1n"}
    try:
        for broken in (b"offers: [\n  - {id: o-1\n", b"{"):
            offers.write_bytes(broken)
            resp = client.post("/admin/reload", headers=auth)
            assert resp.status_code == 409, resp.text
            detail = _one_line_json(resp)["detail"]
            assert detail.startswith("reload failed, the previous engine keeps serving: ")
            assert app.state.engine is engine
            decided = client.post("/decisions", json={"profile_id": "x", "placements": ["web-banner"]})
            assert decided.status_code == 200
        offers.unlink()
        resp = client.post("/admin/reload", headers=auth)
        assert resp.status_code == 409 and app.state.engine is engine
    finally:
        offers.write_bytes(good)
    assert client.post("/admin/reload", headers=auth).status_code == 200
    assert app.state.engine is not engine
