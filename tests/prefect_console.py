"""What Prefect's terminal handler prints during a test, for tests that check the terminal stays
quiet (`from tests.prefect_console import prefect_console`: pytest finds the fixture there).

Prefect's console handler writes to the stderr of the moment Prefect was imported, which no
capture fixture sees, so the fixture points the handler's rich Console at a buffer."""

from __future__ import annotations

import io
import logging

import pytest


@pytest.fixture()
def prefect_console():
    import offerflow.flows.pipeline  # noqa: F401  (sets Prefect's logging up, handler included)
    from prefect.logging.handlers import PrefectConsoleHandler

    (handler,) = [h for h in logging.getLogger().handlers if isinstance(h, PrefectConsoleHandler)]
    buffer = io.StringIO()
    previous = handler.console.file  # it prints through a rich Console on that stream
    handler.console.file = buffer
    yield buffer
    handler.console.file = previous


def drain(buffer: io.StringIO) -> str:
    """What was printed since the last drain."""
    text = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return text
