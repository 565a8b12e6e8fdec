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


def test_the_command_lists_read_each_summary_as_one_paragraph():
    """A docstring's line breaks are not the terminal's: at 200 columns each command's summary
    fits on its row, unbroken, in every group's list."""
    from typer.testing import CliRunner

    runner = CliRunner()
    commands = typer.main.get_command(app).commands
    for group in [None, *(name for name, c in commands.items() if hasattr(c, "commands"))]:
        shown = runner.invoke(app, [*([group] if group else []), "--help"], env={"COLUMNS": "200"}, terminal_width=200)
        assert shown.exit_code == 0, shown.output
        listed = (commands[group] if group else typer.main.get_command(app)).commands.values()
        for command in listed:
            summary = " ".join((command.help or "").strip().split("\n\n")[0].split())
            assert summary[:100] in " ".join(shown.output.split("│")), (group, command.name, shown.output)
