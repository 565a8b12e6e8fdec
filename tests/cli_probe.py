"""Runs `offerflow <args>` in a fresh interpreter, as a user would, and reports what the command
imported: a command that reads must not start Prefect (nor load MLflow, LightGBM or FastAPI when it
does not need them)."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
HEAVY_PACKAGES = ("prefect", "mlflow", "lightgbm", "fastapi")
# Runs the CLI and reports which heavy packages the command imported.
PROBE = f"""
import json, sys
from offerflow.cli import app
code = 0
try:
    app(sys.argv[1:], prog_name="offerflow")
except SystemExit as exc:
    code = exc.code
heavy = sorted({{m.split(".")[0] for m in sys.modules}} & {set(HEAVY_PACKAGES)!r})
sys.stderr.write("HEAVY=" + json.dumps(heavy) + "\\n")
sys.exit(code)
"""


def offerflow(*args: str, cwd: Path | None = None) -> tuple[subprocess.CompletedProcess, float, float]:
    """(completed process, wall seconds, CPU seconds) of `offerflow <args>` in a fresh interpreter."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, env=env, timeout=120,
                          cwd=cwd)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return done, wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def errors(done: subprocess.CompletedProcess) -> list[str]:
    """stderr without the probe's own line."""
    return [line for line in done.stderr.splitlines() if not line.startswith("HEAVY=")]


def heavy(done: subprocess.CompletedProcess) -> list[str]:
    """The heavy packages (HEAVY_PACKAGES) the command imported."""
    return json.loads(next(line for line in done.stderr.splitlines() if line.startswith("HEAVY="))[6:])
