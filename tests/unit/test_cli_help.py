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
