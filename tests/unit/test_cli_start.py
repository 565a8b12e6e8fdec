"""How the command line starts (issue 16: `offerflow decide` in under a second): it builds only the
command argv names, leaves its heap to the process's exit, and `decide` loads without OpenBLAS
threads, pydantic's plugin search or cyclic garbage collection."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from pathlib import Path

import typer

from offerflow.cli import app
from offerflow.cli.common import one_shot


def test_a_command_line_builds_only_the_command_it_names_as_the_whole_app_does():
    whole = typer.main.get_command(app)
    for name, command in whole.commands.items():
        trimmed = typer.main.get_command(app.trimmed_to(["-v", name, "--json"]))
        assert list(trimmed.commands) == [name]
        again = trimmed.commands[name]
        assert again.help == command.help and [p.opts for p in again.params] == [p.opts for p in command.params]
        assert [p.opts for p in trimmed.params] == [p.opts for p in whole.params]  # --verbose, completion
    for argv in ([], ["--help"], ["-v"], ["decid"], ["--help", "rankingz"]):
        assert app.trimmed_to(argv) is app, argv


def test_the_command_line_leaves_its_heap_to_the_process_exit():
    """`_skip_final_collection` runs at exit (before an exit hook registered earlier, atexit being
    last in, first out): the interpreter's last collections skip what the command built."""
    probe = ("import atexit, gc, sys\n"
             "atexit.register(lambda: sys.stderr.write(f'FROZEN={gc.get_freeze_count()}'))\n"
             "from offerflow.cli import app\n"
             "app(['check', '--help'], prog_name='offerflow')\n")
    src = Path(__file__).resolve().parents[2] / "src"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert int(done.stderr.rsplit("FROZEN=", 1)[1]) > 10_000, done.stderr



def test_one_shot_loads_without_blas_threads_plugin_search_or_collection_and_gives_the_process_back(monkeypatch):
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    monkeypatch.setenv("PYDANTIC_DISABLE_PLUGINS", "logfire")  # a setting already made wins
    frozen = gc.get_freeze_count()
    try:
        with one_shot():
            assert os.environ["OPENBLAS_NUM_THREADS"] == "1" and not gc.isenabled()
            assert os.environ["PYDANTIC_DISABLE_PLUGINS"] == "logfire"
            kept = [[] for _ in range(1000)]
        assert gc.isenabled() and gc.get_freeze_count() >= frozen + len(kept)
        assert "OPENBLAS_NUM_THREADS" not in os.environ and os.environ["PYDANTIC_DISABLE_PLUGINS"] == "logfire"
    finally:
        gc.unfreeze()
