"""One error line, never a traceback, from every command for every bad input (issue 19): a table of
bad inputs walked through the CLI. Exit 1 for bad input, 2 for a project-check mistake or a usage
error (docs/operations.md)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from offerflow.cli import app


def _sed(path: str, old: str, new: str):
    def mutate(project: Path) -> None:
        target = project / path
        assert old in target.read_text()
        target.write_text(target.read_text().replace(old, new, 1))  # one mistake: one line
    return mutate


def _write(path: str, content: bytes):
    return lambda project: (project / path).write_bytes(content)


def _nothing(project: Path) -> None:
    pass


BAD_FORMULA = _sed("offerflow.yaml", "offer.priority * 2", "offer.priority * ")
BAD_RULE = _sed("data/offers.yaml", "eligibility: profile.email_opt_in", "eligibility: profile.email_opt_in and")
CASES = {
    "missing config": (_nothing, ["decide", "-p", "p1", "-x", "web-banner", "--config", "nope.yaml"], 1,
                       "nope.yaml: project file not found"),
    "bad yaml": (_write("offerflow.yaml", b"placements: [\n"), ["decide-batch"], 1, "invalid YAML"),
    "bad yaml, check": (_write("offerflow.yaml", b"placements: [\n"), ["check"], 2, "invalid YAML"),
    "bad formula, decide": (BAD_FORMULA, ["decide", "-p", "p1", "-x", "web-sidebar"], 2,
                            "placements[2].ranking.formula: column 66"),
    "bad formula, decide-batch": (BAD_FORMULA, ["decide-batch"], 2, "placements[2].ranking.formula"),
    "bad eligibility rule": (BAD_RULE, ["decide", "-p", "p1", "-x", "web-banner"], 2, ".eligibility (offer"),
    "unknown goal": (_nothing, ["segment", "--goal", "nope"], 1, "unknown propensity goal 'nope'"),
    "unknown goal, batch": (_nothing, ["decide-batch", "--goal", "nope", "--bucket", "high"], 1, "goal 'nope'"),
    "unknown placement": (_nothing, ["decide", "-p", "p1", "-x", "nope"], 1, "unknown placement(s): nope"),
    "unknown placement, batch": (_nothing, ["decide-batch", "-x", "nope"], 1,
                                 "unknown placement(s): nope (known: email-hero, web-banner, web-sidebar)"),
    "unknown placement, show": (_nothing, ["rankings", "show", "nope"], 1, "no published ranking"),
    "unknown placement, revert": (_nothing, ["serving", "revert", "nope", "--reason", "x"], 1,
                                  "unknown placement 'nope'"),
    "bad profiles parquet": (_write("ids.parquet", b"{not json"), ["decide-batch", "--profiles-file", "ids.parquet"],
                             1, "ids.parquet: cannot read profile ids"),
    "bad profiles text": (_write("ids.txt", b"\xff\xfe"), ["decide-batch", "--profiles-file", "ids.txt"], 1,
                          "ids.txt: cannot read profile ids"),
    "profiles csv without ids": (_write("ids.csv", b"a,b\n1,2\n"), ["decide-batch", "--profiles-file", "ids.csv"], 1,
                                 "missing column profile_id"),
    "missing tables": (_nothing, ["rankings", "rollback", "web-banner"], 1, "no published ranking"),
    "missing profiles": (lambda p: (p / "data/profiles.parquet").unlink(), ["decide", "-p", "p1", "-x", "web-banner"],
                         2, "profiles file not found"),
    "bad catalog": (_write("data/offers.yaml", b"offers: [\n"), ["caps", "show"], 1, "cannot read offers"),
    "unknown offer, caps reset": (_nothing, ["caps", "reset", "--offer", "nope"], 1, "unknown offer 'nope'"),
    "missing events": (_nothing, ["evaluate", "--events", "nope.parquet"], 1, "events file not found"),
    "bad date": (_nothing, ["generate", "--out", "g", "--end-date", "2026-13-01"], 1, "--end-date"),
    "no validated events": (_nothing, ["score"], 1, "no validated events yet"),
    "value out of range": (_nothing, ["decide", "-p", "p1", "-x", "web-banner", "--items", "99"], 2, "--items"),
    "unknown option": (_nothing, ["rankings", "list", "--nope"], 2, "No such option: --nope"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_every_bad_input_is_one_error_line(project_dir, monkeypatch, case):
    mutate, args, code, message = CASES[case]
    mutate(project_dir)
    monkeypatch.chdir(project_dir)
    result = CliRunner().invoke(app, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == code, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert "Traceback" not in result.output
