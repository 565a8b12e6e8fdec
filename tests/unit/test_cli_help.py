"""The command line's help lists only commands that exist (issue 16: `rankings show` was listed
and missing)."""

from __future__ import annotations

import re

import typer

import offerflow.cli
from offerflow.cli import app


def test_every_command_the_help_lists_exists():
    commands = typer.main.get_command(app).commands
    listed = set()
    for line in offerflow.cli.__doc__.splitlines():
        if m := re.match(r"\s+offerflow (\S+)(?: / (\S+))?\s", line):
            listed |= {name for name in m.groups() if name}
    assert listed and listed <= set(commands), listed - set(commands)
    assert {"list", "show", "rollback"} <= set(commands["rankings"].commands)
    assert "check" in commands


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
    import subprocess
    import sys
    from pathlib import Path

    probe = ("import atexit, gc, sys\n"
             "atexit.register(lambda: sys.stderr.write(f'FROZEN={gc.get_freeze_count()}'))\n"
             "from offerflow.cli import app\n"
             "app(['check', '--help'], prog_name='offerflow')\n")
    src = Path(__file__).resolve().parents[2] / "src"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert int(done.stderr.rsplit("FROZEN=", 1)[1]) > 10_000, done.stderr
