"""Bad input ends a flow run in one line, never with a traceback.

A broken project file, catalog or events file, a missing validated snapshot, a goal without
enough positives or an unknown segment is not a bug: the task or flow that meets it logs the
message once, without a traceback, and ends in a `Failed` state named `BadInput` whose message is
the error's first line (never retried). Calling the flow from Python raises the original
exception, which the CLI prints as its one-line `error:`.

Run by a worker, Prefect's engine raises the failed flow's exception once more after the run ended
and logs it to the flow run ("Engine execution exited with unexpected exception" and the whole
traceback): `_QuietEngineExit` drops that record for bad input already reported, so the run's log
holds the one error line.
"""

from __future__ import annotations

import functools
import inspect
import logging
import typing
from typing import Any, Callable

from prefect import get_run_logger
from prefect.states import Failed, State

from offerflow.ops.bad_input import BAD_INPUT_ERRORS

BAD_INPUT = "BadInput"
#: Set on the log record of a bad-input message: the CLI, which prints the error itself, keeps it
#: off the terminal (it stays in the Prefect run's logs).
BAD_INPUT_RECORD = "offerflow_bad_input"
__all__ = ["BAD_INPUT", "BAD_INPUT_ERRORS", "BAD_INPUT_RECORD", "bad_input", "reports_bad_input",
           "retry_unless_bad_input", "stop"]


def bad_input(exc: Exception) -> State:
    """The end of a task or flow on bad input: one log record with the message (only once, where it
    was met), and a `Failed` state carrying the exception."""
    if not getattr(exc, "_offerflow_reported", False):
        get_run_logger().error("%s", exc, extra={BAD_INPUT_RECORD: True})
        exc._offerflow_reported = True  # type: ignore[attr-defined]
    return Failed(name=BAD_INPUT, message=str(exc).splitlines()[0], data=exc)


def retry_unless_bad_input(task: Any, task_run: Any, state: State) -> bool:
    return state.name != BAD_INPUT


def stop(state: State) -> State:
    """The flow's final state when a step failed: the step's message and exception."""
    return Failed(name=state.name, message=state.message, data=state.result(raise_on_failure=False))


class _QuietEngineExit(logging.Filter):
    """On Prefect's flow-run logger: the engine's closing record of a run that ended on bad input
    (the exception it re-raises) is dropped when the message was logged already, else it becomes
    that one line, without the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, BAD_INPUT_ERRORS):
            return True
        if getattr(exc, "_offerflow_reported", False):
            return False
        record.msg, record.args, record.exc_info, record.exc_text = "%s", (str(exc),), None, None
        return True


class _QuietTaskFailure(logging.Filter):
    """On Prefect's task-run logger: "Task run failed with state: BadInput(...)" (with an empty
    `NoneType: None` traceback) repeats a message `bad_input` logged already, when bad input is met
    inside a task (e.g. an unreachable `compute.dask_address` in `train-propensity`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(f"Task run failed with state: {BAD_INPUT}(")


def quiet_engine_exit() -> None:
    """Install `_QuietEngineExit` on Prefect's flow-run logger and `_QuietTaskFailure` on its
    task-run logger, once per process."""
    for name, kind in (("prefect.flow_runs", _QuietEngineExit), ("prefect.task_runs", _QuietTaskFailure)):
        runs = logging.getLogger(name)
        if not any(isinstance(f, kind) for f in runs.filters):
            runs.addFilter(kind())


def reports_bad_input(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a flow or task function: bad input raised inside it (or by a task it called) becomes
    a `BadInput` failed state instead of an exception with a traceback in the logs."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        quiet_engine_exit()
        try:
            return fn(*args, **kwargs)
        except BAD_INPUT_ERRORS as exc:
            return bad_input(exc)

    # Prefect builds the flow's parameter model from the signature, whose annotations `from
    # __future__ import annotations` leaves as strings to resolve in the *wrapper's* module: give
    # the wrapper a signature with the real types.
    hints = typing.get_type_hints(fn)
    signature = inspect.signature(fn)
    wrapper.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[p.replace(annotation=hints.get(p.name, p.annotation)) for p in signature.parameters.values()],
        return_annotation=hints.get("return", signature.return_annotation))
    return wrapper
