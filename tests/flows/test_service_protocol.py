"""`offerflow serve`'s HTTP protocol (`http_protocol.DecisionHttpProtocol`) on a real uvicorn server:
decision requests answered from the parser, everything else through the ASGI app, in order."""

from __future__ import annotations

import json
import socket
import threading
import time

import pandas as pd
import pytest

from offerflow.core.config import load_config
from offerflow.decisioning.engine import build_engine
from offerflow.decisioning.http_guards import MAX_BODY_BYTES
from offerflow.decisioning.http_service import coalescing_http_protocol, create_app
from offerflow.ops.servers import free_port

from bench.answer_bench import MemoryTransport as _RecordedTransport  # records each write (one send each)

pytestmark = pytest.mark.flow


@pytest.fixture(scope="module")
def server(pipeline_run, tmp_path_factory):
    """The service on uvicorn with `offerflow serve`'s protocol, keep-alive connections closed after
    1 s without a request (uvicorn's default is 5 s)."""
    import uvicorn

    project_dir, _ = pipeline_run
    config = load_config(project_dir / "offerflow.yaml")
    app = create_app(config, engine=build_engine(config, seed=3), log_dir=tmp_path_factory.mktemp("log"))
    port = free_port()
    served = uvicorn.Config(app, port=port, http=coalescing_http_protocol(), access_log=False, log_level="warning",
                            timeout_keep_alive=1)
    srv = uvicorn.Server(served)
    threading.Thread(target=srv.run, daemon=True).start()
    deadline = time.monotonic() + 60
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield app, port
    srv.should_exit = True


def _request(body: bytes, *headers: str) -> bytes:
    head = ["POST /decisions HTTP/1.1", "host: x", "content-type: application/json",
            f"content-length: {len(body)}", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def _responses(sock: socket.socket, n: int) -> list[tuple[int, dict[str, str], bytes]]:
    """Read `n` responses (each with a content-length) off the socket, in order."""
    data, out = b"", []
    while len(out) < n:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed after {len(out)} responses"
            data += chunk
        head, data = data.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines[1:])
        size = int(headers["content-length"])
        while len(data) < size:
            data += sock.recv(65536)
        out.append((int(lines[0].split()[1]), headers, data[:size]))
        data = data[size:]
    return out


def test_pipelined_requests_are_answered_in_order_by_the_right_path(server):
    app, port = server
    good = json.dumps({"profile_id": "p0000001", "placements": ["web-banner"]}).encode()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(_request(good) + _request(b'{"profile_id": "p1", "placements": [')
                     + _request(json.dumps({"profile_id": "p2", "placements": ["nowhere"]}).encode())
                     + _request(good) + _request(good, "connection: close"))
        answers = _responses(sock, 5)
        assert sock.recv(1) == b""  # closed after the `connection: close` request
    assert [status for status, _, _ in answers] == [200, 422, 404, 200, 200]
    assert json.loads(answers[2][2])["detail"].startswith("unknown placement(s): nowhere")
    fast, asgi = answers[0], answers[4]  # the last one went through the ASGI app (connection: close)
    assert set(fast[1]) == {"date", "server", "content-type", "content-length"}
    assert set(asgi[1]) == set(fast[1]) | {"connection"} and asgi[1]["content-type"] == fast[1]["content-type"]
    bodies = [json.loads(a[2]) for a in (answers[0], answers[3], answers[4])]
    assert {b["profile_id"] for b in bodies} == {"p0000001"} and len({b["decision_id"] for b in bodies}) == 3
    assert set(bodies[0]) == set(bodies[2]) and set(bodies[0]["placements"][0]) == set(bodies[2]["placements"][0])
    app.state.decision_log.flush()
    logged = pd.concat([pd.read_parquet(f) for f in app.state.decision_log.directory.glob("decisions-*.parquet")])
    assert {b["decision_id"] for b in bodies} <= set(logged["decision_id"])  # every answer is in the log


def test_bodies_over_the_limit_and_expect_continue(server):
    _, port = server
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(_request(b" " * (MAX_BODY_BYTES + 10)))
        [(status, _, body)] = _responses(sock, 1)
    assert status == 413 and b"larger than" in body
    good = json.dumps({"profile_id": "p0000002", "placements": ["web-banner"]}).encode()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        head = _request(b"", "expect: 100-continue")
        sock.sendall(head.replace(b"content-length: 0", f"content-length: {len(good)}".encode()))
        assert sock.recv(65536).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(good)
        [(status, _, body)] = _responses(sock, 1)
    assert status == 200 and json.loads(body)["profile_id"] == "p0000002"


def test_keep_alive_connections_close_after_the_timeout_without_a_request(server):
    """The keep-alive timer is armed once per idle spell (not per request): a connection that keeps
    asking stays open well past the timeout, one idle for the timeout is closed, as uvicorn does."""
    _, port = server
    good = json.dumps({"profile_id": "p0000003", "placements": ["web-banner"]}).encode()
    with socket.create_connection(("127.0.0.1", port)) as busy, socket.create_connection(("127.0.0.1", port)) as idle:
        idle.sendall(_request(good))
        assert _responses(idle, 1)[0][0] == 200
        started = time.monotonic()
        while time.monotonic() - started < 2.5:  # 2.5 timeouts of requests 0.4 s apart
            busy.sendall(_request(good))
            assert _responses(busy, 1)[0][0] == 200
            time.sleep(0.4)
        idle.settimeout(5)
        assert idle.recv(1) == b""  # closed by the server after 1 s idle
        busy.settimeout(0.3)
        with pytest.raises(TimeoutError):  # still open: its last answer was < 1 s ago
            busy.recv(1)
        busy.settimeout(5)
        waited = time.monotonic()
        assert busy.recv(1) == b"" and 0.2 < time.monotonic() - waited < 2.5


def test_the_answers_of_one_loop_turn_leave_together_at_its_end(server):
    """Two decision requests read in one loop turn are answered from the parser, and nothing is sent
    before the turn ends; then both answers leave in one send, in order. (Each answer sent as soon
    as it was made woke the client once per answer: worse tails and more CPU in the load bench.)"""
    import asyncio

    from uvicorn.config import Config
    from uvicorn.server import ServerState

    app, _ = server
    bodies = [json.dumps({"profile_id": p, "placements": ["web-banner"]}).encode() for p in ("p0000003", "p0000004")]

    async def one_turn() -> tuple[list[bytes], list[bytes]]:
        config = Config(app, http=coalescing_http_protocol(), access_log=False)
        config.load()
        protocol = coalescing_http_protocol()(config=config, server_state=ServerState(), app_state={})
        raw = _RecordedTransport()
        protocol.connection_made(raw)
        protocol.data_received(b"".join(_request(body) for body in bodies))
        during = list(raw.sent)
        await asyncio.sleep(0)  # the end of this loop turn
        return during, raw.sent

    during, after = asyncio.run(one_turn())
    assert during == [] and len(after) == 1
    answers = [json.loads(part.split(b"\r\n\r\n", 1)[1]) for part in after[0].split(b"HTTP/1.1 ")[1:]]
    assert [a["profile_id"] for a in answers] == ["p0000003", "p0000004"]
