"""An open-loop HTTP load generator that costs its machine little: the load bench's driver.

Request k is due at t0 + (k + phase) / rate and its latency counts from then (a late send, a busy
connection or a slow answer all count). One timer per process sends every request that is due on an
idle keep-alive connection (or queues it until one is free); each connection is an asyncio
`Protocol` that parses its answer's head and length from the bytes it receives, with no stream
reader and no task per connection.

Why not `decision_bench.drive_raw` (a coroutine per connection on asyncio streams, each sleeping
until its next request): uvloop rounds a timer's delay to whole milliseconds, so each sleep shorter
than 0.5 ms was a zero timer and the loop spun until the request was due. Its two generator
processes used ~70-110 µs of CPU per request (~0.3 of a core whatever the rate), on the 2 cores the
server needs. Here the timer fires at the next due request rounded up to the next millisecond, so
a request leaves up to ~1 ms after its due time (its send lag, counted in its latency) and the
process sleeps in between.
"""

from __future__ import annotations

import asyncio
import collections
import math
import time

import numpy as np


class _Connection(asyncio.Protocol):
    """One keep-alive connection of a `Schedule`: sends request k, reads its answer, asks for more."""

    def __init__(self, schedule: "Schedule") -> None:
        self.schedule, self.transport, self.k, self.buffer = schedule, None, -1, bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def send(self, k: int, request: bytes) -> None:
        self.k = k
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(buffer[:end]).lower()
        at = head.find(b"content-length:")
        line_end = head.find(b"\r\n", at)
        length = int(head[at + 15:line_end if line_end >= 0 else None]) if at >= 0 else 0
        if len(buffer) < end + 4 + length:
            return
        del buffer[:end + 4 + length]
        k, self.k = self.k, -1
        self.schedule.answered(self, k, int(head[9:12]))

    def connection_lost(self, exc: Exception | None) -> None:
        self.schedule.lost(exc)


class Schedule:
    """The requests of one generator process (see the module docstring); `run` drives them."""

    def __init__(self, requests: list[bytes], rate: float, seconds: float, t0: float, phase: float) -> None:
        self.requests, self.rate, self.t0, self.phase = requests, rate, t0, phase
        self.total = int(rate * seconds)
        self.latencies = np.full(self.total, np.nan)
        self.send_lags = np.full(self.total, np.nan)
        self.statuses = np.zeros(self.total, dtype=np.int32)
        self.next_k = self.left = 0
        self.idle: collections.deque[_Connection] = collections.deque()
        self.waiting: collections.deque[int] = collections.deque()  # due, no idle connection yet
        self.done: asyncio.Future | None = None

    def due(self, k: int) -> float:
        return self.t0 + (k + self.phase) / self.rate

    async def run(self, port: int, connections: int) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
        """Latencies from due times (s), statuses, elapsed seconds, send lags (s)."""
        loop = asyncio.get_running_loop()
        self.done, self.left = loop.create_future(), self.total
        opened = [await loop.create_connection(lambda: _Connection(self), "127.0.0.1", port)
                  for _ in range(connections)]
        self.idle.extend(protocol for _, protocol in opened)
        started = time.perf_counter()
        loop.call_later(max(0.0, self.t0 - started), self._tick, loop)
        try:
            if self.total:
                await self.done
        finally:
            for transport, _ in opened:
                transport.close()
        return self.latencies, self.statuses, time.perf_counter() - max(started, self.t0), self.send_lags

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        """Send what is due; come back when the next request is due (whole milliseconds, rounded up)."""
        now = time.perf_counter()
        while self.next_k < self.total and self.due(self.next_k) <= now:
            if self.idle:
                self._send(self.idle.popleft(), self.next_k)
            else:
                self.waiting.append(self.next_k)
            self.next_k += 1
        if self.next_k < self.total:
            loop.call_later(math.ceil((self.due(self.next_k) - time.perf_counter()) * 1000) / 1000, self._tick, loop)

    def _send(self, connection: _Connection, k: int) -> None:
        self.send_lags[k] = time.perf_counter() - self.due(k)
        connection.send(k, self.requests[k % len(self.requests)])

    def answered(self, connection: _Connection, k: int, status: int) -> None:
        self.latencies[k] = time.perf_counter() - self.due(k)
        self.statuses[k] = status
        self.left -= 1
        if self.waiting:
            self._send(connection, self.waiting.popleft())
        else:
            self.idle.append(connection)
        if self.left == 0 and not self.done.done():
            self.done.set_result(None)

    def lost(self, exc: Exception | None) -> None:
        if self.left and self.done is not None and not self.done.done():
            self.done.set_exception(ConnectionError(f"the server closed a connection with {self.left} answers "
                                                    f"to come ({exc!r})"))
