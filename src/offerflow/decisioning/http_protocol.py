"""uvicorn's httptools protocol for `offerflow serve`: each response in one system call, and
well-formed decision requests answered straight from the HTTP parser.

`DecisionHttpProtocol` answers a ``POST /decisions`` (HTTP/1.1, keep-alive, no request in
progress on the connection) when its body is complete, by calling the app's `FastDecider` in the
parser callback: no ASGI scope, request task, receive/send coroutines or middleware (they cost
about as much CPU as the decision itself). The answer is byte for byte what the ASGI path sends
(uvicorn's default headers, then the same content type and length). Whatever the decider passes on
(a bad body, a wrong key, an unknown placement), any other request and any unusual one (HTTP/1.0,
``Connection: close``, ``Expect: 100-continue``, a body over the size limit, pipelined behind a
request in progress, an access log) goes through uvicorn's ASGI path unchanged, as if it had just
been parsed.

Imported by uvicorn itself (by import string, so `--workers N` can start it in each worker
process); nothing else imports this module, so the rest of the service does not need uvicorn.
"""

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from offerflow.decisioning.http_guards import MAX_BODY_BYTES

_log = logging.getLogger(__name__)
_JSON_HEAD = b"content-type: application/json\r\ncontent-length: %d\r\n\r\n"
_500 = (b"content-type: text/plain; charset=utf-8\r\ncontent-length: 21\r\nconnection: close\r\n\r\n"
        b"Internal Server Error")


class _CoalescingTransport:
    """A transport whose writes made in one event-loop turn leave in one `send` call, at the end of
    the turn.

    uvicorn writes a response's status line and headers, then its body: two system calls, and on
    loopback each one runs the receiving side's TCP work too. Joined, a small decision answer costs
    one. A fast-path answer waits for the end of the turn too: the loop answers every request that
    arrived (one turn reads every ready connection), then sends the answers one after the other, so
    a load generator is woken once per batch rather than once per answer, in the middle of the
    batch (the first answer of a turn waits for the last one, ~0.15-0.3 ms each). Sending each
    answer as soon as it was made (round 3) measured worse in 4 of 4 alternated pairs at
    3,000-4,000/s: p99 60 ms-4 s against 12-646 ms, ~10% more server CPU per decision and ~20%
    more generator CPU (docs/decisioning.md, round 4). Everything but writing and closing is
    passed to the real transport."""

    def __init__(self, transport: Any, loop: Any) -> None:
        self._transport, self._loop, self._pending = transport, loop, []

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(bytes(data))

    def is_closing(self) -> bool:  # asked after every answer: not through __getattr__
        return self._transport.is_closing()

    def writelines(self, lines: Any) -> None:
        for data in lines:
            self.write(data)

    def _flush(self) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            if not self._transport.is_closing():
                self._transport.write(data)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._pending.clear()
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, writing through `_CoalescingTransport`, with a keep-alive
    timer armed once per idle spell rather than once per request.

    uvicorn arms a new `call_later` timer after every response and cancels it when the next request's
    data arrives: ~5% of the server's CPU at 2,500 requests/s. Here a response notes when the
    connection went idle and arms a timer only when none is armed; when it fires, it closes the
    connection if it has been idle for `timeout_keep_alive` since, else waits for the rest (a busy
    connection's timer lapses, the next response arms one). Same rule: a keep-alive connection is
    closed after `timeout_keep_alive` seconds without a request."""

    _idle_since: float | None = None  # loop time the last response completed (None: a request is in)
    _keep_alive_timer: Any = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_CoalescingTransport(transport, asyncio.get_running_loop()))

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self._keep_alive_timer is not None:
            self._keep_alive_timer.cancel()
            self._keep_alive_timer = None

    def _unset_keepalive_if_required(self) -> None:
        self._idle_since = None

    def on_response_complete(self) -> None:
        """uvicorn's, with the keep-alive timer described in the class docstring."""
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:
            self._idle_since = None
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
            return
        self._idle_since = self.loop.time()
        if self._keep_alive_timer is None:
            self._keep_alive_timer = self.loop.call_later(self.timeout_keep_alive, self._keep_alive_check)

    def _keep_alive_check(self) -> None:
        self._keep_alive_timer = None
        if self._idle_since is None:  # busy: the response that ends this request arms the next timer
            return
        left = self._idle_since + self.timeout_keep_alive - self.loop.time()
        if left > 0:
            self._keep_alive_timer = self.loop.call_later(left, self._keep_alive_check)
        else:
            self.timeout_keep_alive_handler()


def find_decider(app: Any) -> Any:
    """The `FastDecider` behind an ASGI app (through uvicorn's wrappers and `DecisionFastPath`),
    None when there is none (then every request takes the ASGI path)."""
    for _ in range(10):
        if app is None:
            return None
        decider = getattr(app, "decider", None) or getattr(getattr(app, "state", None), "fast_decider", None)
        if decider is not None:
            return decider
        app = getattr(app, "app", None)
    return None


class DecisionHttpProtocol(CoalescingHttpToolsProtocol):
    """`CoalescingHttpToolsProtocol` answering well-formed decision requests from the parser (see
    the module docstring). `_fast` holds the body of the request being read on the fast path."""

    _decider: Any = None
    _fast: bytearray | None = None
    _ok_heads: tuple[Any, bytes] = (None, b"")  # uvicorn's default headers and the 200 head made of them

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._decider = None if self.access_log or self.limit_concurrency is not None else find_decider(self.app)

    def on_message_begin(self) -> None:
        """uvicorn's, less the ASGI scope (a dict of ten entries and a copy of the app state per
        request): `_begin_asgi` makes it for a request that takes the ASGI path."""
        self.url, self.expect_100_continue, self.headers = b"", False, []

    def _begin_asgi(self) -> None:
        """uvicorn's `on_message_begin`, keeping the URL and headers parsed so far."""
        url, headers, expect_100_continue = self.url, self.headers, self.expect_100_continue
        super().on_message_begin()
        self.url, self.headers, self.expect_100_continue = url, headers, expect_100_continue
        self.scope["headers"] = headers

    def on_headers_complete(self) -> None:
        parser = self.parser
        if (self._decider is not None and self.url == b"/decisions" and parser.get_method() == b"POST"
                and not self.expect_100_continue and parser.get_http_version() == "1.1"
                and parser.should_keep_alive() and not parser.should_upgrade() and not self.pipeline
                and (self.cycle is None or self.cycle.response_complete)):
            self._fast = bytearray()
            return
        self._fast = None
        self._begin_asgi()
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self._fast is None:
            super().on_body(body)
            return
        self._fast += body
        if len(self._fast) > MAX_BODY_BYTES:  # the ASGI path answers 413
            self._to_asgi()

    def on_message_complete(self) -> None:
        if self._fast is None:
            super().on_message_complete()
            return
        body, self._fast = bytes(self._fast), None
        try:
            self._decider.hold_versions(self.loop)  # one stat of the store's manifest per loop turn
            answer = self._decider.answer(self.headers, body)
        except Exception:  # as uvicorn does for an app's exception: log it, 500, close
            _log.exception("Exception in the decision fast path")
            self.transport.write(b"".join([STATUS_LINE[500], *self._default_headers(), _500]))
            self.transport.close()
            return
        if answer is None:
            self._fast = bytearray(body)
            self._to_asgi()
            super().on_message_complete()
            return
        self.transport.write(self._ok_head() + _JSON_HEAD % len(answer) + answer)  # at the end of the loop turn
        self.on_response_complete()

    def shutdown(self) -> None:
        """A graceful shutdown lets a request whose body is still arriving finish, as uvicorn does."""
        if self._fast is not None:
            self._to_asgi()
        super().shutdown()

    def _ok_head(self) -> bytes:
        """The status line and uvicorn's default headers of a 200, made again only when uvicorn
        replaces its default headers (once a second, for the date)."""
        headers = self.server_state.default_headers
        cached = DecisionHttpProtocol._ok_heads
        if cached[0] is not headers:
            cached = DecisionHttpProtocol._ok_heads = (headers, b"".join([STATUS_LINE[200], *self._default_headers()]))
        return cached[1]

    def _default_headers(self) -> list[bytes]:
        return [b"%s: %s\r\n" % (name, value) for name, value in self.server_state.default_headers]

    def _to_asgi(self) -> None:
        """Hand the request read so far to uvicorn's ASGI path, as if it had just been parsed."""
        body, self._fast = bytes(self._fast or b""), None
        self._begin_asgi()
        super().on_headers_complete()
        if body:
            super().on_body(body)
