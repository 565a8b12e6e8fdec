"""The load bench's open-loop generator (`bench/open_loop.py`): every request answered and counted
once, its latency from its due time, so a queue behind a slow server shows in the latencies."""

from __future__ import annotations

import asyncio
import time

import numpy as np

from bench.open_loop import Schedule


class _SlowServer(asyncio.Protocol):
    """Answers each request `delay_s` after it arrived (one at a time per connection): 200, or 422
    for a body that says so."""

    delay_s = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        status = b"422 Unprocessable Entity" if b"bad" in data else b"200 OK"
        body = b'{"ok": true}'
        answer = b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(body)
        asyncio.get_running_loop().call_later(self.delay_s, self.transport.write, answer + body)


def _drive(delay_s: float, rate: float, seconds: float, connections: int, bodies: list[bytes]):
    async def run():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(type("Server", (_SlowServer,), {"delay_s": delay_s}), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        requests = [b"POST /decisions HTTP/1.1\r\ncontent-length: %d\r\n\r\n%s" % (len(b), b) for b in bodies]
        try:
            return await Schedule(requests, rate, seconds, time.perf_counter() + 0.05, 0.0).run(port, connections)
        finally:
            server.close()

    return asyncio.run(run())


def test_every_request_is_answered_once_with_its_status():
    latencies, statuses, elapsed, send_lags = _drive(0.002, 200, 0.5, 4, [b"good"] * 9 + [b"bad"])
    assert len(statuses) == 100 and not np.isnan(latencies).any() and not np.isnan(send_lags).any()
    assert (statuses == 200).sum() == 90 and (statuses == 422).sum() == 10
    assert latencies.min() >= 0.002 and (send_lags >= 0).all() and 0.45 < elapsed < 2


def test_latency_counts_from_the_due_time_so_a_queue_shows():
    """One connection, answers after 20 ms, a request due every 5 ms: the requests wait for the
    connection, and that wait is in their latency (the last of 20 is due at 95 ms, answered ~400 ms)."""
    latencies, statuses, _, send_lags = _drive(0.02, 200, 0.1, 1, [b"good"])
    assert (statuses == 200).all() and len(statuses) == 20
    assert latencies[-1] > 0.25 and send_lags[-1] > 0.2  # the queue is the generator's: counted
    assert np.all(np.diff(latencies) > 0.005)  # each waits 15 ms more than the one before
