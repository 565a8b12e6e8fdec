"""Flows that write hold the project lock (`offerflow.core.project_lock`) for their whole run,
however they are started (the CLI, a deployment's schedule, Python): a second writer in the same
project waits up to the flow's `lock_wait_seconds` (when it has that parameter, else not at all),
then ends as `BadInput` with one line naming the holder, or, when its `skip_when_locked` parameter
is true (the 15-minute auto-optimization schedule, whose next run does the work), `Cancelled`."""

from __future__ import annotations

import functools
import inspect
from contextlib import ExitStack
from typing import Any, Callable

from prefect import get_run_logger
from prefect.states import Cancelled

from offerflow.core.config import load_config
from offerflow.core.paths import hold_project_lock
from offerflow.core.project_lock import ProjectLocked


def holds_project_lock(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a flow function whose `config_path` parameter names the project (below
    `reports_bad_input`, so that a locked project is bad input, not a crash)."""
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        config = load_config(bound.arguments["config_path"])
        wait = float(bound.arguments.get("lock_wait_seconds", 0.0))
        with ExitStack() as held:
            try:
                held.enter_context(hold_project_lock(config, f"offerflow flow {fn.__name__}", wait))
            except ProjectLocked as exc:
                if not bound.arguments.get("skip_when_locked", False):
                    raise
                # not a failure (no notification): another writer works on the project right now
                get_run_logger().warning("skipped: %s", exc)
                return Cancelled(message=f"skipped: {str(exc).splitlines()[0]}")
            return fn(*args, **kwargs)

    return wrapper
