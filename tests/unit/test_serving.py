"""Serving switches: recorded next to the ranking store, applied by `load_serving_config`, ignored when the
project file changed since, reverted by a person with a reason; the CLI shows and reverts them."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from offerflow.core.config import RankingMethod, load_config
from offerflow.decisioning.switches import load_serving_config
from offerflow.decisioning.switches import (ServingError, apply_serving, load_history, record_revert, record_switch,
                               serving_path, serving_status)
from offerflow.synthetic.world import demo_config_yaml

FORMULA = RankingMethod(method="formula", formula="offer.discount_pct")
EVIDENCE = {"lift": 0.4, "low": 0.15, "high": 0.6, "candidate": 0.11, "baseline": 0.08, "n": 9000.0}


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    path = tmp_path / "offerflow.yaml"
    path.write_text(demo_config_yaml("data"))
    return path


def test_a_switch_changes_what_load_config_says_the_placement_serves(project: Path) -> None:
    written = load_serving_config(project)
    assert written.placement("email-hero").ranking.method == "ai_model"
    record = record_switch(written, "email-hero", "formula-discount", FORMULA, "beats email-auto", EVIDENCE, "run1")
    assert record["version"] == 1 and record["replaces"] == {"method": "ai_model", "ai_model": "email-auto"}
    assert serving_path(written) == project.parent / "data/rankings/_serving/assignments.json"
    effective = load_serving_config(project)
    assert effective.placement("email-hero").ranking == FORMULA
    assert effective.placement("web-banner").ranking == written.placement("web-banner").ranking
    assert load_config(project).placement("email-hero").ranking.method == "ai_model"
    # a second switch, from the already switched config, still records the file's ranking as replaced
    record_switch(effective, "email-hero", "priority", RankingMethod(), "priority beats the formula", EVIDENCE, "run2")
    assert load_serving_config(project).placement("email-hero").ranking.method == "priority"
    assert load_history(written)[-1]["replaces"] == {"method": "ai_model", "ai_model": "email-auto"}
    # a later evaluation that finds the file's own ranking best switches back: recorded as a revert
    back = record_switch(load_serving_config(project), "email-hero", "email-auto",
                         RankingMethod(method="ai_model", ai_model="email-auto"), "email-auto beats priority",
                         EVIDENCE, "run3")
    assert back["action"] == "revert" and back["version"] == 3
    assert not {s.placement_id: s for s in serving_status(written)}["email-hero"].switched
    assert load_serving_config(project) == written


def test_editing_the_project_file_after_a_switch_wins(project: Path) -> None:
    record_switch(load_serving_config(project), "email-hero", "priority", RankingMethod(), "why", EVIDENCE, None)
    project.write_text(project.read_text().replace("ranking: {method: ai_model, ai_model: email-auto}",
                                                   "ranking: {method: formula, formula: \"offer.priority\"}"))
    config = load_serving_config(project)
    assert config.placement("email-hero").ranking.formula == "offer.priority"
    status = {s.placement_id: s for s in serving_status(load_config(project))}
    assert not status["email-hero"].switched and "now ranks email-hero by formula" in status["email-hero"].stale


def test_revert_needs_a_reason_and_restores_the_file(project: Path) -> None:
    written = load_config(project)
    with pytest.raises(ServingError, match="nothing to revert"):
        record_revert(written, "email-hero", "no reason needed?")
    record_switch(written, "email-hero", "priority", RankingMethod(), "why", EVIDENCE, None)
    with pytest.raises(ServingError, match="needs a reason"):
        record_revert(written, "email-hero", "  ")
    with pytest.raises(ServingError, match="unknown placement 'push'"):
        record_revert(written, "push", "x")
    record = record_revert(written, "email-hero", "holdout lift dropped", by="ana")
    assert record["action"] == "revert" and record["by"] == "ana" and record["reverted_version"] == 1
    assert load_serving_config(project).placement("email-hero").ranking.method == "ai_model"
    assert apply_serving(written) == written


def test_a_switch_the_project_cannot_serve_is_refused(project: Path) -> None:
    bad = RankingMethod(method="ai_model", ai_model="web-personalized")  # lists only web-banner
    with pytest.raises(ServingError, match="does not list placement 'email-hero'"):
        record_switch(load_serving_config(project), "email-hero", "web-personalized", bad, "why", EVIDENCE, None)
    assert not serving_path(load_serving_config(project)).exists()


def test_a_corrupt_history_is_a_one_line_error(project: Path) -> None:
    from offerflow.cli import app

    path = serving_path(load_config(project))
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    result = CliRunner().invoke(app, ["serving", "list", "--config", str(project)])
    assert result.exit_code == 1
    assert "assignments.json: unreadable serving history" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_cli_lists_and_reverts(project: Path) -> None:
    from offerflow.cli import app

    record_switch(load_serving_config(project), "email-hero", "formula-discount", FORMULA, "formula beats email-auto",
                  EVIDENCE, "run1")
    runner = CliRunner()
    listed = runner.invoke(app, ["serving", "list", "--config", str(project), "--json"])
    assert listed.exit_code == 0, listed.output
    assert '"switched": true' in listed.output and "offer.discount_pct" in listed.output
    missing = runner.invoke(app, ["serving", "revert", "web-banner", "--reason", "x", "--config", str(project)])
    assert missing.exit_code == 1 and "nothing to revert" in missing.output
    reverted = runner.invoke(app, ["serving", "revert", "email-hero", "--reason", "marketing asked",
                                   "--no-publish", "--config", str(project)])
    assert reverted.exit_code == 0, reverted.output
    assert "serves ai_model: email-auto again" in reverted.output
    run_id = load_history(load_serving_config(project))[-1]["mlflow_run_id"]
    import mlflow

    run = mlflow.MlflowClient(f"sqlite:///{project.parent / 'mlflow.db'}").get_run(run_id)
    assert run.data.tags["serving.reason"] == "marketing asked"
    assert run.data.tags["serving.placement"] == "email-hero"
    assert load_serving_config(project).placement("email-hero").ranking.method == "ai_model"


def test_rollback_refuses_a_version_of_another_ranking_than_the_placement_serves(project: Path) -> None:
    """After an evaluation switched email-hero to a formula and `serving revert` put its Thompson
    model back, `rankings rollback email-hero` made the formula's table current again while
    `serving list` said email-auto: decisions then said `ai_model` (model "not published yet") and
    "ranked by priority" over the formula's scores."""
    import json

    from offerflow.cli import app
    from offerflow.core.paths import ranking_store
    from tests.unit.test_store import posterior_frame, ranking_table

    store = ranking_store(load_config(project))
    model = {"kind": "posterior", "ranking_method": "ai_model", "ai_model": "email-auto"}
    store.publish("email-hero", posterior_frame(), model)
    store.publish("email-hero", ranking_table(5, k=1), {"kind": "ranking", "ranking_method": "formula"})
    store.publish("email-hero", posterior_frame(), model)
    runner = CliRunner()
    refused = runner.invoke(app, ["rankings", "rollback", "email-hero", "--config", str(project)])
    assert refused.exit_code == 1, refused.output
    assert "to version 2: it was ranked by a formula, and the placement serves ai_model: email-auto" in refused.output
    assert store.current_version("email-hero") == 3
    done = runner.invoke(app, ["rankings", "rollback", "email-hero", "--version", "1", "--json", "--config", str(project)])
    assert done.exit_code == 0 and json.loads(done.output) == {"placement_id": "email-hero", "current": 1}
