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
