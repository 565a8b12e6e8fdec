"""What the decision service accepts as a request body: JSON only (any other content type is a 415
naming the one expected), with strict field types (a string "3" or "yes" is a 422 naming the field),
on the ASGI path and on `offerflow serve`'s protocol (the fast path hands such requests over)."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
import warnings

import pytest

from offerflow.decisioning.http_service import coalescing_http_protocol, create_app
from offerflow.ops.servers import free_port
from tests.unit.test_explanations import engine_of, project  # noqa: F401 (a fixture: a small published project)

with warnings.catch_warnings():  # as in tests/flows/test_service.py: httpx is what is installed
    warnings.filterwarnings("ignore", message=r"Using `httpx` with `starlette.testclient` is deprecated")
    from fastapi.testclient import TestClient

GOOD = json.dumps({"profile_id": "p1", "placements": ["web-sidebar"]})
NOT_JSON = [("text/plain", GOOD), ("text/plain; charset=utf-8", GOOD),
            ("application/x-www-form-urlencoded", "profile_id=p1&placements=web-sidebar")]
LOOSE = [({"items": "3"}, "items"), ({"items": 2.0}, "items"), ({"allow_duplicates": "yes"}, "allow_duplicates"),
         ({"explain": 1}, "explain")]


@pytest.fixture(scope="module")
def client(project, tmp_path_factory):
    engine = engine_of(project)
    with TestClient(create_app(engine.config, engine=engine, log_dir=tmp_path_factory.mktemp("log"))) as c:
        yield c


@pytest.fixture(scope="module")
def server(project, tmp_path_factory):
    """The service on uvicorn with `offerflow serve`'s protocol (decisions answered from the parser)."""
    import uvicorn

    engine = engine_of(project)
    app = create_app(engine.config, engine=engine, log_dir=tmp_path_factory.mktemp("served"))
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, port=port, http=coalescing_http_protocol(), access_log=False,
                                        log_level="warning"))
    threading.Thread(target=srv.run, daemon=True).start()
    deadline = time.monotonic() + 60
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield port
    srv.should_exit = True


def _post(port: int, content_type: str, body: str) -> tuple[int, dict]:
    """POST /decisions on a keep-alive connection (what the fast path takes), as (status, JSON)."""
    data = body.encode()
    head = f"POST /decisions HTTP/1.1\r\nhost: x\r\ncontent-type: {content_type}\r\ncontent-length: {len(data)}\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(head.encode() + data)
        raw = b""
        while b"\r\n\r\n" not in raw:
            raw += sock.recv(65536)
        status_and_headers, payload = raw.split(b"\r\n\r\n", 1)
        size = int(re.search(rb"content-length: (\d+)", status_and_headers).group(1))
        while len(payload) < size:
            payload += sock.recv(65536)
    return int(status_and_headers.split()[1]), json.loads(payload)


def _asgi(client, content_type: str, body: str) -> tuple[int, dict]:
    """The same through the ASGI app (`DecisionFastPath`, then FastAPI), as (status, JSON)."""
    resp = client.post("/decisions", content=body, headers={"content-type": content_type})
    return resp.status_code, resp.json()


@pytest.mark.parametrize(("content_type", "body"), NOT_JSON)
def test_a_body_that_is_not_json_is_a_415_naming_application_json(client, server, content_type, body):
    for status, answer in (_asgi(client, content_type, body), _post(server, content_type, body)):
        assert status == 415, answer
        assert "application/json" in answer["detail"] and content_type.split(";")[0] in answer["detail"]


@pytest.mark.parametrize(("extra", "field"), LOOSE)
def test_loose_values_are_a_422_naming_the_field(client, server, extra, field):
    body = json.dumps({**json.loads(GOOD), **extra})
    for status, answer in (_asgi(client, "application/json", body), _post(server, "application/json", body)):
        assert status == 422, answer
        assert [e["loc"] for e in answer["detail"]] == [["body", field]]


def test_json_bodies_still_decide_and_the_schema_documents_415_and_types(client, server):
    for content_type in ("application/json", "application/json; charset=utf-8"):
        assert _post(server, content_type, GOOD)[0] == 200
        assert client.post("/decisions", content=GOOD, headers={"content-type": content_type}).status_code == 200
    assert client.post("/decisions", content=GOOD).status_code == 200  # no content type: read as JSON, as before
    spec = client.get("/openapi.json").json()
    assert "application/json" in spec["paths"]["/decisions"]["post"]["responses"]["415"]["description"]
    request = spec["components"]["schemas"]["DecisionRequest"]["properties"]
    assert "JSON integer" in request["items"]["description"] and "true or false" in request["explain"]["description"]


def test_every_field_of_the_schema_is_described_and_the_examples_are_answered(client):
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    ours = [name for name in schemas if name not in ("HTTPValidationError", "ValidationError")]  # FastAPI's own
    undocumented = [f"{m}.{f}" for m in ours for f, field in schemas[m].get("properties", {}).items()
                    if not field.get("description")]
    assert not undocumented
    caps = spec["paths"]["/admin/caps"]["get"]
    assert caps["responses"]["200"]["content"]["application/json"]["schema"]["items"]["$ref"].endswith(
        "/CapRuleStateOut")
    assert caps["parameters"][0]["description"]
    for path, method in (("/admin/reload", "post"), ("/admin/caps", "get"), ("/admin/caps/reset", "post")):
        assert {"401", "403"} <= set(spec["paths"][path][method]["responses"]), path  # wrong token / none set
    assert "413" in spec["paths"]["/decisions"]["post"]["responses"]
    examples = schemas["DecisionRequest"]["examples"]
    assert examples
    for example in examples:  # what /docs offers to send: valid, and answered (p0000001 is unknown here)
        assert client.post("/decisions", json=example).status_code == 200


@pytest.mark.parametrize(("content_type", "body"), [("text/plain", '{"offer_id": "o-1"}'),
                                                    ("application/x-www-form-urlencoded", "offer_id=o-1")])
def test_a_cap_reset_that_is_not_json_is_a_415_as_for_decisions(project, tmp_path, content_type, body):
    engine = engine_of(project)
    auth = {"Authorization": "Bearer adm1n"}
    with TestClient(create_app(engine.config, engine=engine, admin_token="adm1n", log_dir=tmp_path)) as c:
        refused = c.post("/admin/caps/reset", content=body, headers={**auth, "content-type": content_type})
        assert refused.status_code == 415 and "application/json" in refused.json()["detail"]  # was a 422
        assert c.post("/admin/caps/reset", content=body, headers={"content-type": content_type}).status_code == 401
        assert c.post("/admin/caps/reset", json={"offer_id": "o-1"}, headers=auth).json()["offer_id"] == "o-1"


def test_a_wrong_api_key_is_a_401_whatever_the_body(project, tmp_path):
    """The key is checked before the body: a malformed body without the key got a 422 (FastAPI
    parses the body before its dependencies), telling a caller without the key how it parses."""
    engine = engine_of(project)
    with TestClient(create_app(engine.config, engine=engine, api_key="s3cret", log_dir=tmp_path)) as c:
        for headers in ({}, {"X-API-Key": "wrong"}):
            for body, content_type in ((b'{"profile_id": ', "application/json"), (b"p1", "text/plain")):
                refused = c.post("/decisions", content=body, headers={**headers, "content-type": content_type})
                assert (refused.status_code, refused.json()) == (401, {"detail": "missing or wrong X-API-Key header"})
        key = {"X-API-Key": "s3cret"}
        assert c.post("/decisions", content=b'{"profile_id": ', headers={**key, "content-type": "application/json"}
                      ).status_code == 422
        assert c.post("/decisions", json={"profile_id": "p1", "placements": ["web-banner"]}, headers=key).status_code == 200


def test_the_cap_state_rows_read_offer_first_and_match_their_documented_model(project, tmp_path):
    from offerflow.decisioning.http_models import CapRuleStateOut
    from offerflow.rules.capping import CapCounters, CapRule

    engine = engine_of(project, caps=CapCounters({"o-2": (CapRule(event="display", limit=2, reset="daily"),)}))
    with TestClient(create_app(engine.config, engine=engine, admin_token="adm1n", log_dir=tmp_path)) as c:
        rows = c.get("/admin/caps", headers={"Authorization": "Bearer adm1n"}).json()
    assert rows and all(list(row)[:2] == ["offer_id", "rule"] for row in rows)
    assert all(set(row) == set(CapRuleStateOut.model_fields) for row in rows)
