"""What every command shares: the Typer app and its groups, consoles, loading the project file,
one-line errors, and how flow runs look in the terminal (quiet, a progress bar, --verbose)."""

from __future__ import annotations

import atexit
import copy
import gc
import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

from typer._click import exceptions as click_errors  # the Click that Typer vendors (typer.core uses it)
import typer
import typer.main
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup


class CommandList(TyperGroup):
    """A group whose help lists each command with its first paragraph on one line: Typer's rich
    mode keeps a docstring's line breaks in that list, which then breaks mid-sentence in an
    80-column terminal. Every `offerflow` group uses it."""

    def format_help(self, ctx, formatter):
        for command in self.commands.values():
            if command.short_help is None and command.help:
                command.short_help = " ".join(command.help.strip().split("\n\n")[0].split())
        return super().format_help(ctx, formatter)


class _OneLineErrors(CommandList):
    """Every command: bad input that no command caught itself (`offerflow.ops.bad_input`) still
    ends as one `error:` line and exit 1, never a traceback; a usage error (an unknown option, a
    value out of range) is one `error:` line too, exit 2."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click_errors.NoArgsIsHelpError as exc:  # a group without a command: its help
            from typer import rich_utils

            rich_utils.rich_format_error(exc)
            sys.exit(exc.exit_code)
        except click_errors.ClickException as exc:
            command = getattr(exc, "ctx", None)
            hint = f" (see: {command.command_path} --help)" if command is not None else ""
            err.print(f"[red]error:[/red] {escape(exc.format_message())}{escape(hint)}", highlight=False)
            sys.exit(exc.exit_code)
        except typer.Abort:
            err.print("aborted")
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)  # an int is the code of an Exit raised by a command

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, click_errors.ClickException):
            raise  # --help, an exit code, a usage error: not bad input (and no import of every error type)
        except Exception as exc:
            from offerflow.ops.bad_input import BAD_INPUT_ERRORS

            if not isinstance(exc, BAD_INPUT_ERRORS):
                raise
            fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)


class _CommandLineApp(typer.Typer):
    """The `offerflow` app, run as a process (the script, `python -m offerflow.cli`): it builds the
    Click command of only the command argv names (`offerflow decide ...` builds `decide`, not the
    ~25 others: ~40 ms of a decision's start; no command, an unknown one or `--help` alone build them
    all, as Typer does), and leaves the heap to the process's exit (see `_skip_final_collection`).
    Tests that pass the app to Typer's CliRunner build every command, the same definitions."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        argv = kwargs.get("args", args[0] if args else None)
        atexit.unregister(_skip_final_collection)  # once, however many times the app runs
        atexit.register(_skip_final_collection)
        return typer.Typer.__call__(self.trimmed_to(sys.argv[1:] if argv is None else list(argv)), *args, **kwargs)

    def trimmed_to(self, argv: list[str]) -> typer.Typer:
        """A shallow copy registering only the command or group named by argv's first word (the
        group's options all are flags, so the first word not starting with '-' is the command)."""
        name = next((word for word in argv if not word.startswith("-")), None)
        commands = [c for c in self.registered_commands
                    if (c.name or typer.main.get_command_name(c.callback.__name__)) == name]
        groups = [g for g in self.registered_groups if g.name == name]
        if not commands and not groups:
            return self
        trimmed = copy.copy(self)
        trimmed.registered_commands, trimmed.registered_groups = commands, groups
        return trimmed


def _skip_final_collection() -> None:
    """At exit (an atexit hook, so it runs before the interpreter tears down its modules): the
    garbage collector ignores every object alive now, as `gc.freeze` documents. The interpreter's
    last collections would otherwise walk and free, object by object, the heap that pandas, pyarrow
    and pydantic built (~0.2 s CPU of a 1 s `offerflow decide`); the process's exit frees it at
    once. Other exit hooks still run (logging flushes its handlers) and nothing is written then."""
    gc.freeze()


app = _CommandLineApp(help="offerflow: rank marketing offers with machine learning, self-hosted.",
                       no_args_is_help=True, pretty_exceptions_enable=False, cls=_OneLineErrors)
rankings_app = typer.Typer(help="Published ranking tables: list versions, show one (metadata and first rows), roll back.",
                           no_args_is_help=True, cls=CommandList)
app.add_typer(rankings_app, name="rankings")
caps_app = typer.Typer(help="Frequency caps: show the counters, reset them.",
                       no_args_is_help=True, cls=CommandList)
app.add_typer(caps_app, name="caps")
models_app = typer.Typer(help="The project's AI models: configuration, last training, quality.",
                         no_args_is_help=True, cls=CommandList)
app.add_typer(models_app, name="models")
# emoji=False: an id such as ':fire:' prints as written (and rich's emoji table is not loaded).
console = Console(soft_wrap=True, emoji=False)
err = Console(stderr=True, soft_wrap=True, emoji=False)  # an error stays one line, however long its path

ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="Project file.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON (for another program).")]


def print_json(data: Any) -> None:
    """A command's result for another program: JSON on stdout, nothing else."""
    print(json.dumps(data, indent=2, default=str))


def fail(message: str) -> None:
    """The one-line `error: <message>` on stderr (exit 1): bad input, never a traceback."""
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False, markup=True)
    raise typer.Exit(code=1)


def load_project(config_path: Path):
    from offerflow.core.config import ConfigError
    from offerflow.decisioning.switches import load_serving_config

    try:
        return load_serving_config(config_path)
    except ConfigError as exc:
        fail(str(exc))


def project_check(config_path: Path, project, strict: bool = False, warnings: bool = True):
    """The project check (`offerflow.models.project_check`): formulas, rules and goal conditions
    against the catalog and the profiles' schema; an unreadable catalog is one problem line. Imports
    neither Prefect nor MLflow nor LightGBM. Without `warnings`: mistakes only (no data sampled)."""
    from offerflow.ingest.catalog import CatalogError
    from offerflow.models.project_check import CheckResult, check_project

    try:
        return check_project(project, config_path.name, strict, warnings)
    except CatalogError as exc:
        return CheckResult(problems=[str(exc)])


def report_problems(problems: list[str]) -> None:
    """Each mistake as one `error:` line on stderr, then exit 2."""
    for line in problems:
        err.print(f"[red]error:[/red] {escape(line)}", highlight=False, markup=True)
    raise typer.Exit(code=2)


def report_warnings(warnings: list[str]) -> None:
    """Each warning as one `warning:` line on stderr."""
    from rich.markup import escape

    for line in warnings:
        err.print(f"[yellow]warning:[/yellow] {escape(line)}", highlight=False, markup=True)


def check_before_work(config_path: Path, project, strict: bool = False, warnings: bool = True) -> None:
    """Before a command trains, scores, publishes or decides: the project check, exit 2 on a mistake (or,
    with `strict`, a warning), before any Prefect server starts (~0.1 s). Commands that only read
    published tables pass `warnings=False`: mistakes only, the data is not sampled."""
    result = project_check(config_path, project, strict, warnings)
    if not result.ok:
        report_problems(result.problems)
    report_warnings(result.warnings)


def prepare_prefect_environment(project_dir: Path) -> None:
    """Embedded defaults: a Prefect home inside the project, no analytics, a patient ephemeral
    server start (10-20 s on 2 cores), no MLflow telemetry. Explicit settings win."""
    os.environ.setdefault("PREFECT_HOME", str((project_dir / ".prefect").resolve()))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    use_running_server(project_dir)


def use_running_server(project_dir: Path) -> None:
    """A flow command runs its flow on the Prefect server `offerflow up` started for this project,
    when it still runs (and PREFECT_API_URL is not set already), and says so on stderr; otherwise
    Prefect starts a temporary server for the run."""
    from offerflow.ops.servers import is_alive, read_state

    state = read_state(project_dir)
    if "PREFECT_API_URL" in os.environ or state is None:
        return
    if any(p.name == "prefect-server" and is_alive(p) for p in state.processes):
        os.environ["PREFECT_API_URL"] = state.api_url
        err.print(f"using the running Prefect server {state.prefect_url} (offerflow up)", highlight=False)


def run_pipeline(config_path: Path, use_cache: bool = True, strict: bool = False, wait_seconds: float = 0.0) -> dict:
    """Run the pipeline flow (imports Prefect only here, never at import time), holding the project
    lock from before Prefect starts (a locked project fails at once)."""
    from offerflow.core.paths import hold_project_lock
    from offerflow.core.project_lock import ProjectLocked

    config = load_project(config_path)
    check_before_work(config_path, config, strict)
    try:
        with hold_project_lock(config, f"offerflow run --config {config_path}", wait_seconds):
            return _pipeline_flow(config, config_path, use_cache, strict)
    except ProjectLocked as exc:
        fail(str(exc))


def _pipeline_flow(config, config_path: Path, use_cache: bool, strict: bool) -> dict:
    prepare_prefect_environment(config.root)
    from offerflow.ingest.catalog import CatalogError
    from offerflow.ingest.events import EventFileError
    from offerflow.customer_ai.goals import GoalError
    from offerflow.ingest.snapshot import ValidationFailed
    from offerflow.ranking.degenerate import DegenerateExpression

    from offerflow.flows.pipeline import pipeline

    try:
        with flow_progress("pipeline"):
            return pipeline(config_path=str(config_path), use_cache=use_cache, strict=strict)
    except DegenerateExpression as exc:
        report_problems(str(exc).splitlines())
    except (ValidationFailed, EventFileError, CatalogError, GoalError, FileNotFoundError) as exc:
        fail(str(exc))


_verbosity_state = {"verbose": False}
_STEP, _STEPS, _LABEL = "offerflow_step", "offerflow_steps", "offerflow_label"  # see flows/progress.py


class _StepBar(logging.Handler):
    """Moves a rich progress bar on the flows' step records (see flows/progress.py)."""

    def __init__(self, progress) -> None:
        super().__init__(logging.INFO)
        self.progress, self.bar = progress, None

    def emit(self, record: logging.LogRecord) -> None:
        step = getattr(record, _STEP, None)
        if step is None:
            return
        total, label = getattr(record, _STEPS), getattr(record, _LABEL)
        if self.bar is None:
            self.bar = self.progress.add_task(label, total=total)
        self.progress.update(self.bar, completed=step - 1, total=total, description=label)


@contextmanager
def flow_progress(what: str) -> Iterator[None]:
    """Around a flow call: the quiet console, and on a terminal a progress bar of the flow's steps
    (with --verbose the step log lines are the progress)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from offerflow.flows.progress import quiet_prefect_console

    verbose = _verbosity_state["verbose"]
    quiet_prefect_console(verbose)
    progress = Progress(TextColumn(f"{what}: [bold]{{task.description}}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=err, transient=True, disable=verbose or not err.is_terminal)
    handler = _StepBar(progress)
    runs = logging.getLogger("prefect.flow_runs")
    runs.addHandler(handler)
    try:
        with progress:
            yield
    finally:
        runs.removeHandler(handler)


_ONE_SHOT_ENVIRONMENT = {"OPENBLAS_NUM_THREADS": "1", "PYDANTIC_DISABLE_PLUGINS": "__all__"}


@contextmanager
def one_shot() -> Iterator[None]:
    """Around the work of a command that starts, answers and exits (`decide`, `decide-batch`): no
    OpenBLAS thread pool (deciding does no linear algebra, and the pool's idle thread spins ~80 ms
    CPU once numpy is imported), no search for pydantic plugins (offerflow uses none, and finding
    out reads every installed package's entry points, ~20 ms), settings already made winning; and no
    cyclic garbage collection while it works: the ~200 collections importing pandas and pyarrow
    triggers cost ~60 ms CPU and free next to nothing, and a 100,000-profile `decide-batch` builds
    arrays, not cycles (same peak memory). After, what was built is frozen (`gc.freeze`: later
    collections skip it, instead of the first one walking it all) and collection is enabled again."""
    added = {name: value for name, value in _ONE_SHOT_ENVIRONMENT.items() if name not in os.environ}
    os.environ.update(added)
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()
        for name in added:  # a caller in the same process (a test) gets its environment back
            os.environ.pop(name, None)


def project_engine(config_path: Path, check: bool = False, profile_ids: list[str] | None = None):
    """The project and its decision engine (for `profile_ids` only, when given: reads only their
    rows); with `check`, the project check's mistakes first (no warnings: the engine reads published
    tables, and `offerflow check` or the next run says what the data makes of the rules)."""
    from offerflow.ingest.catalog import CatalogError
    from offerflow.decisioning.engine import build_engine
    from offerflow.rules.expressions import ExpressionError

    config = load_project(config_path)
    if check:
        check_before_work(config_path, config, warnings=False)
    try:
        return config, build_engine(config, profile_ids=profile_ids)
    except (CatalogError, ExpressionError) as exc:  # a bad eligibility rule: one line, not 57 (issue 19)
        fail(str(exc))


@app.callback()
def _verbosity(verbose: Annotated[bool, typer.Option("--verbose", "-v",
                                                     help="Print every step's log (quiet by default).")] = False) -> None:
    """Quiet by default: the terminal shows warnings, errors and a progress bar; --verbose prints
    every step's log as well. Prefect keeps the flow runs' full logs either way."""
    _verbosity_state["verbose"] = verbose
    for name in ("mlflow", "alembic", "great_expectations"):
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)
