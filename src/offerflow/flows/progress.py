"""Progress of a long flow run, where Prefect shows it and where the CLI draws it.

Each step is announced once as a structured INFO record of the flow run's logger
(`step 3/9: train-propensity purchase_14d`, with the fields `offerflow_step`, `offerflow_steps`
and `offerflow_label` on the record), and the run's progress artifact (the progress bar of the
flow run in the Prefect UI) moves as steps finish. The CLI draws its rich progress bar from the
same records (`offerflow.cli.common.flow_progress`), so the flows know nothing about terminals;
`quiet_prefect_console` is the CLI's switch between quiet and --verbose.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from uuid import UUID

from prefect import get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.logging.configuration import setup_logging
from prefect.logging.handlers import PrefectConsoleHandler

from offerflow.flows.bad_input import BAD_INPUT, BAD_INPUT_RECORD

STEP, STEPS, LABEL = "offerflow_step", "offerflow_steps", "offerflow_label"
#: On a record the command line prints itself (a warning of the run's summary or of the project
#: check it ran before the flow): its quiet console skips it; Prefect's logs keep it.
CLI_PRINTS = "offerflow_cli_prints"


class StepProgress:
    """`total` steps of one flow run; `with progress.step("validate-events"): ...` around each."""

    def __init__(self, total: int, key: str, description: str) -> None:
        self.total = max(int(total), 1)
        self.done = 0
        self.artifact: UUID = create_progress_artifact(0.0, key=key, description=description)

    @contextmanager
    def step(self, label: str) -> Iterator[None]:
        number = min(self.done + 1, self.total)
        get_run_logger().info("step %d/%d: %s", number, self.total, label,
                              extra={STEP: number, STEPS: self.total, LABEL: label})
        yield
        self.done = number
        update_progress_artifact(self.artifact, round(100.0 * self.done / self.total, 1))


def summary_warning(message: str) -> None:
    """A warning of the flow run that its result also carries (the CLI prints it from there)."""
    get_run_logger().warning("%s", message, extra={CLI_PRINTS: True})


class _HideBadInput(logging.Filter):
    """The CLI prints bad input as its own one-line error: not twice, nor a third time in the
    engine's closing record of the task or flow run (`Finished in state BadInput(...)`); nor the
    warnings it prints itself (`CLI_PRINTS`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (getattr(record, BAD_INPUT_RECORD, False) or getattr(record, CLI_PRINTS, False)
                    or record.getMessage().startswith(f"Finished in state {BAD_INPUT}("))


def quiet_prefect_console(verbose: bool) -> None:
    """Prefect's terminal handler shows warnings and errors only, unless `verbose`; the loggers
    stay at INFO, so every record still reaches the flow run's logs in Prefect (structured, with
    flow and task run ids)."""
    if not any(isinstance(h, PrefectConsoleHandler) for h in logging.getLogger().handlers):
        setup_logging()
    for handler in logging.getLogger().handlers:
        if isinstance(handler, PrefectConsoleHandler):
            handler.setLevel(logging.INFO if verbose else logging.WARNING)
            for old in [f for f in handler.filters if isinstance(f, _HideBadInput)]:
                handler.removeFilter(old)
            if not verbose:
                handler.addFilter(_HideBadInput())
