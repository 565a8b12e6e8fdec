"""`offerflow check`, and the check every training or publishing command runs before any work: a
planted typo in a formula, an eligibility rule or a goal condition is one located line, exit 2, in
well under 2 s, with no Prefect server started and nothing trained or published. Also
`offerflow rankings show`."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from offerflow.cli import app
from tests.cli_probe import errors, heavy, offerflow

TYPO_FORMULA = "if(offer.category == profile.favorite_category, offer.priority * , offer.priority)"


def plant_typos(project: Path) -> tuple[str, ...]:
    """A typo in the formula, in an eligibility rule and in the goal condition; their lines."""
    config_path, offers_path = project / "offerflow.yaml", project / "data/offers.yaml"
    raw = yaml.safe_load(config_path.read_text())
    raw["placements"][2]["ranking"]["formula"] = TYPO_FORMULA
    raw["propensity_goals"][0]["goal"]["all_of"][0]["field"] = "evnt_type"
    config_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    catalog = yaml.safe_load(offers_path.read_text())
    catalog["offers"][1]["eligibility"] = "profile.age >= 18 and"
    offers_path.write_text(yaml.safe_dump(catalog, sort_keys=False))
    offer = catalog["offers"][1]["offer_id"]
    return ("error: offerflow.yaml: placements[2].ranking.formula: column 66: unexpected ','",
            f"error: offers.yaml: offers[1].eligibility (offer {offer!r}): column 22: unexpected end of expression",
            "error: offerflow.yaml: propensity_goals[0].goal.all_of[0].field: unknown event field 'evnt_type'")


def test_check_passes_on_the_demo_project_quickly_without_prefect(project_dir):
    done, wall, cpu = offerflow("check", "--config", str(project_dir / "offerflow.yaml"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok: 1 formula, ") and done.stdout.rstrip().endswith(" rules, 1 goal condition")
    assert heavy(done) == []
    assert cpu < 2.0, (wall, cpu)


def test_check_reports_each_planted_typo_once_located_exit_2(project_dir):
    expected = plant_typos(project_dir)
    done, wall, cpu = offerflow("check", "--config", str(project_dir / "offerflow.yaml"))
    assert done.returncode == 2
    lines = errors(done)
    assert len(lines) == 3, lines
    assert lines[0] == expected[0] and lines[1].startswith(expected[1].rsplit(":", 1)[0]), lines
    assert lines[2].startswith(expected[2]), lines
    assert heavy(done) == [] and cpu < 2.0, (wall, cpu)

    as_json, _, _ = offerflow("check", "--json", "--config", str(project_dir / "offerflow.yaml"))
    report = json.loads(as_json.stdout)
    assert as_json.returncode == 2 and report["ok"] is False and len(report["problems"]) == 3


@pytest.mark.parametrize("command", [["run"], ["train"], ["train", "--model", "web-personalized"],
                                     ["models", "retrain"], ["score"]])
def test_training_and_publishing_commands_check_first(project_dir, command):
    expected = plant_typos(project_dir)
    done, wall, cpu = offerflow(*command, "--config", str(project_dir / "offerflow.yaml"))
    assert done.returncode == 2, done.stderr
    lines = errors(done)
    assert len(lines) == 3 and lines[0] == expected[0], lines
    assert "Traceback" not in done.stderr
    assert heavy(done) == [], "a Prefect server or a model library was started before the check"
    assert cpu < 2.0, (wall, cpu)
    assert not (project_dir / "data/rankings").exists(), "something was published"
    assert not (project_dir / "mlflow.db").exists() and not (project_dir / "mlruns").exists()
    assert not (project_dir / "data/outputs").exists()


def test_one_typo_kind_at_a_time_is_caught(project_dir):
    config = project_dir / "offerflow.yaml"
    offers = project_dir / "data/offers.yaml"
    original_config, original_offers = config.read_text(), offers.read_text()
    expected = plant_typos(project_dir)
    planted_config, planted_offers = config.read_text(), offers.read_text()
    for which, (config_text, offers_text) in enumerate([
            (planted_config.replace("evnt_type", "event_type"), original_offers),
            (original_config, planted_offers),
            (original_config.replace("field: event_type", "field: evnt_type"), original_offers)]):
        config.write_text(config_text)
        offers.write_text(offers_text)
        done, _, _ = offerflow("run", "--config", str(config))
        lines = errors(done)
        assert done.returncode == 2 and len(lines) == 1, lines
        assert lines[0].startswith(expected[which].rsplit(":", 1)[0] if which == 1 else expected[which]), lines


def test_rankings_show_prints_the_current_table_head_and_metadata(project_dir):
    from offerflow.core.config import load_config
    from offerflow.core.paths import ranking_store

    store = ranking_store(load_config(project_dir / "offerflow.yaml"))
    table = pd.DataFrame({"profile_id": ["p1", "p1", "p2"], "rank": pd.array([1, 2, 1], dtype="int16"),
                          "offer_id": ["o-001", "o-002", "o-003"], "score": [0.9, 0.5, 0.7]})
    store.publish("web-sidebar", table, {"kind": "ranking", "ranking_method": "formula"})
    store.publish("web-sidebar", table.iloc[:2], {"kind": "ranking", "ranking_method": "formula"})
    runner = CliRunner()
    config = str(project_dir / "offerflow.yaml")
    shown = runner.invoke(app, ["rankings", "show", "web-sidebar", "--rows", "1", "--config", config])
    assert shown.exit_code == 0, shown.output
    assert "web-sidebar version 2 (current)" in shown.output and "ranking_method: formula" in shown.output
    assert "first 1 of 2 rows" in shown.output and "o-001" in shown.output and "o-002" not in shown.output
    older = runner.invoke(app, ["rankings", "show", "web-sidebar", "--version", "1", "--json", "--config", config])
    record = json.loads(older.output)
    assert record["metadata"]["version"] == 1 and len(record["rows"]) == 3
    missing = runner.invoke(app, ["rankings", "show", "web-banner", "--config", config])
    assert missing.exit_code == 1 and "no published ranking for placement 'web-banner'" in missing.output
    assert "show" in runner.invoke(app, ["rankings", "--help"]).output
