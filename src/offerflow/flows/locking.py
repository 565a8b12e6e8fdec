"""Flows that write hold the project lock (`offerflow.core.project_lock`) for their whole run,
however they are started (the CLI, a deployment's schedule, Python): a second writer in the same
project waits up to the flow's `lock_wait_seconds` (when it has that parameter, else not at all),
then ends as `BadInput` with one line naming the holder."""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

from offerflow.core.config import load_config
from offerflow.core.paths import hold_project_lock


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
        with hold_project_lock(config, f"offerflow flow {fn.__name__}", wait):
            return fn(*args, **kwargs)

    return wrapper
