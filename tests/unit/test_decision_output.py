"""What `offerflow decide`, `decide-batch` and `GET /rankings` show a person or a program: true model
names before any run, readable explanations of random orders, whole-number counts, and unknown
profile ids counted (on the small published project of `test_explanations`)."""

from __future__ import annotations

import io
import json
import shutil
import warnings
from pathlib import Path

import pytest
import yaml
from rich.console import Console
from typer.testing import CliRunner

from offerflow.cli import app
from offerflow.cli import decisions as decisions_cli
from offerflow.decisioning.http_service import create_app
from tests.unit.test_explanations import NOW, engine_of, project  # noqa: F401 (a fixture: a small published project)

with warnings.catch_warnings():  # as in tests/flows/test_service.py: httpx is what is installed
    warnings.filterwarnings("ignore", message=r"Using `httpx` with `starlette.testclient` is deprecated")
    from fastapi.testclient import TestClient

WIDE = {"COLUMNS": "200"}


@pytest.fixture()
def copy(project, tmp_path) -> Path:
    """The project copied: these commands write to its outputs."""
    return Path(shutil.copytree(project, tmp_path / "copy"))


def test_decide_before_any_run_names_the_model_and_says_it_has_not_published(copy):
    raw = yaml.safe_load((copy / "offerflow.yaml").read_text())
    raw["store"]["path"] = "no-tables-yet"
    (copy / "offerflow.yaml").write_text(yaml.safe_dump(raw))
    args = ["decide", "-p", "p1", "-x", "web-banner", "-x", "web-sidebar", "--no-log",
            "-c", str(copy / "offerflow.yaml")]
    done = CliRunner().invoke(app, args, catch_exceptions=False, env=WIDE)
    assert done.exit_code == 0, done.output
    rows = [line for line in done.output.splitlines() if "web-banner" in line]
    assert rows and all("web-personalized (not published yet)" in row for row in rows)
    assert not any(line.rstrip(" │").endswith("ai_model") for line in done.output.splitlines())
    assert any("web-sidebar" in line and "formula" in line for line in done.output.splitlines())


def test_offers_a_random_order_did_not_draw_are_one_row_of_the_table_and_each_in_the_json(project, monkeypatch):
    for seed in range(200):  # a holdout decision (30% of them): a uniformly random order
        placement = engine_of(project, seed=seed).decide("p2", ["web-banner"], items=1, now=NOW,
                                                         explain=True).placements[0]
        if placement.source == "random_holdout":
            break
    explanation = placement.explanation
    undrawn = [o["offer_id"] for o in explanation["not_shown"] if o["reason"] == "lower_rank"]
    assert len(undrawn) == 2 and all("not drawn by the random order of 3 offers left" in o["text"]
                                     for o in explanation["not_shown"] if o["reason"] == "lower_rank")
    wide = Console(width=200, file=io.StringIO())
    monkeypatch.setattr(decisions_cli, "console", wide)
    decisions_cli.print_explanation("web-banner", explanation)
    out = wide.file.getvalue()
    assert "2 other eligible offers not drawn by the random order of 3 offers left: " + ", ".join(undrawn) in out
    assert "rule failed" in out and "o-3" in out  # other reasons keep their own rows
    assert not any(line.startswith(f"│ {undrawn[0]} ") for line in out.splitlines())


def test_rankings_give_posterior_counts_as_whole_numbers(project, tmp_path):
    engine = engine_of(project)
    with TestClient(create_app(engine.config, engine=engine, log_dir=tmp_path)) as client:
        resp = client.get("/rankings/email-hero")
    assert resp.status_code == 200
    offers = resp.json()["offers"]
    assert {o["offer_id"]: o["successes"] for o in offers} == {"o-1": 40, "o-2": 9, "o-3": 25, "o-5": 1}
    assert all(type(o["successes"]) is int and type(o["displays"]) is int for o in offers)
    assert '"successes":40,' in resp.text or '"successes":40}' in resp.text


def test_decide_batch_counts_profile_ids_the_profiles_table_does_not_have(copy):
    ids = copy / "ids.txt"
    ids.write_text("p1\np2\nnobody\nghost\n")
    args = ["decide-batch", "-x", "web-sidebar", "-c", str(copy / "offerflow.yaml")]
    summary = json.loads(CliRunner().invoke(app, [*args, "--profiles-file", str(ids), "--json"],
                                            catch_exceptions=False).output)
    assert (summary["profiles"], summary["unknown_profiles"]) == (4, 2)
    line = CliRunner().invoke(app, [*args, "--profiles-file", str(ids)], catch_exceptions=False, env=WIDE).output
    assert line.startswith("decided 4 profiles (2 not in the profiles table: decided as unknown profiles) in ")
    everyone = json.loads(CliRunner().invoke(app, [*args, "--json"], catch_exceptions=False).output)
    assert (everyone["profiles"], everyone["unknown_profiles"]) == (4, 0)
