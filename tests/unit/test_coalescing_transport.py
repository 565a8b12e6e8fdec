"""`http_protocol._CoalescingTransport`: the writes of one loop turn, fast-path answers included,
leave in one send per connection at the end of the turn, in order."""

from __future__ import annotations

from offerflow.decisioning.http_protocol import _CoalescingTransport


class _Transport:
    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.sent.append(data)

    def is_closing(self) -> bool:
        return self.closing


class _Loop:
    def __init__(self) -> None:
        self.soon: list = []

    def call_soon(self, callback) -> None:
        self.soon.append(callback)

    def run_turn(self) -> None:
        callbacks, self.soon = self.soon, []
        for callback in callbacks:
            callback()


def test_the_writes_of_a_turn_leave_together_at_its_end_in_order():
    raw, loop = _Transport(), _Loop()
    transport = _CoalescingTransport(raw, loop)
    transport.write(b"answer-1")
    assert raw.sent == [] and len(loop.soon) == 1  # nothing sent before the end of the turn
    transport.write(b"head-2 ")
    transport.write(b"body-2")
    assert len(loop.soon) == 1  # one flush per turn, however many writes
    loop.run_turn()
    assert raw.sent == [b"answer-1head-2 body-2"]
    transport.write(b"answer-3")
    loop.run_turn()
    assert raw.sent == [b"answer-1head-2 body-2", b"answer-3"]


def test_a_closing_connection_gets_nothing_and_asks_the_real_transport():
    raw, loop = _Transport(), _Loop()
    transport = _CoalescingTransport(raw, loop)
    transport.write(b"answer")
    raw.closing = True
    assert transport.is_closing()
    loop.run_turn()
    assert raw.sent == []
