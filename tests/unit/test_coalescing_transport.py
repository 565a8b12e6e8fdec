"""`http_protocol._CoalescingTransport`: writes of one loop turn leave in one send, in order; a
fast-path answer leaves at once unless something of this turn is still waiting."""

from __future__ import annotations

from offerflow.decisioning.http_protocol import _CoalescingTransport


class _Transport:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.sent.append(data)

    def is_closing(self) -> bool:
        return False


class _Loop:
    def __init__(self) -> None:
        self.soon: list = []

    def call_soon(self, callback) -> None:
        self.soon.append(callback)

    def run_turn(self) -> None:
        callbacks, self.soon = self.soon, []
        for callback in callbacks:
            callback()


def test_writes_of_a_turn_are_joined_and_an_answer_goes_at_once_behind_them():
    raw, loop = _Transport(), _Loop()
    transport = _CoalescingTransport(raw, loop)
    transport.write_now(b"answer-1")
    assert raw.sent == [b"answer-1"] and not loop.soon  # sent now, nothing scheduled
    transport.write(b"head-2 ")
    transport.write(b"body-2")
    transport.write_now(b"answer-3")  # behind what is pending: the same send, in order
    assert raw.sent == [b"answer-1"]
    loop.run_turn()
    assert raw.sent == [b"answer-1", b"head-2 body-2answer-3"]
    transport.write_now(b"answer-4")
    assert raw.sent[-1] == b"answer-4" and len(raw.sent) == 3
