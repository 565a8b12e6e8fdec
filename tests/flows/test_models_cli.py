"""`offerflow models list/show`: the AI models next to what their last training saw."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from offerflow.cli import app
from tests.prefect_console import prefect_console  # noqa: F401 (a fixture)

pytestmark = pytest.mark.flow
runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_models_list_reports_training_and_quality(pipeline_run):
    project, summary = pipeline_run
    result = invoke("models", "list", "--config", str(project / "offerflow.yaml"), "--json")
    assert result.exit_code == 0, result.output
    models = {m["name"]: m for m in json.loads(result.output)}
    assert set(models) == {"web-personalized", "email-auto"}
    personalized, auto = models["web-personalized"], models["email-auto"]
    assert personalized["last_trained"] and auto["last_trained"]
    assert personalized["run_id"] == summary["ranking_models"]["web-personalized"]["run_id"]
    # Gini is 2 * AUC - 1 of the holdout the run logged.
    auc = summary["ranking_models"]["web-personalized"]["metrics"]["holdout_auc"]
    assert personalized["holdout_gini"] == pytest.approx(2 * auc - 1)
    assert personalized["champion_version"] is not None
    assert auto["holdout_gini"] is None  # auto-optimization has no classifier to score
    assert auto["metrics"]["offers_qualified"] >= 2
    for m in models.values():
        assert sum(m["traffic"].values()) == pytest.approx(1.0)
        assert m["optimization_metric"].startswith("click rate")

    table = runner.invoke(app, ["models", "list", "--config", str(project / "offerflow.yaml")],
                          env={"COLUMNS": "160"}, catch_exceptions=False)
    assert table.exit_code == 0 and "web-personalized" in table.output and "email-auto" in table.output


def test_models_show_lists_offers_best_first(pipeline_run):
    project, _ = pipeline_run
    result = runner.invoke(app, ["models", "show", "email-auto", "--config", str(project / "offerflow.yaml")],
                           env={"COLUMNS": "160"}, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "MLflow experiment: offerflow-ranking-email-auto" in result.output
    assert "o-fallback" not in result.output.split("offers as")[0]
    rates = [float(line.split("│")[4]) for line in result.output.splitlines()
             if line.startswith("│ o-")]
    assert rates and rates == sorted(rates, reverse=True)

    unknown = invoke("models", "show", "push-auto", "--config", str(project / "offerflow.yaml"))
    assert unknown.exit_code == 1
    assert "unknown AI model 'push-auto' (defined: web-personalized, email-auto)" in unknown.output


def test_models_retrain_publishes_new_posteriors(pipeline_run, tmp_path, prefect_console):
    import shutil

    from offerflow.core.store import RankingStore

    project = tmp_path / "project"
    shutil.copytree(pipeline_run[0], project)
    before = RankingStore(project / "data/rankings").current_version("email-hero")
    result = invoke("models", "retrain", "--config", str(project / "offerflow.yaml"))
    assert result.exit_code == 0, result.output
    assert f"published email-hero: version {before + 1}" in result.output
    assert "email-auto:" in result.output and "offers qualified" in result.output
    assert "INFO" not in result.output + prefect_console.getvalue()  # quiet: no Prefect step log lines

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "offerflow.yaml").write_text((project / "offerflow.yaml").read_text())
    (empty / "data").mkdir()
    shutil.copy(project / "data/offers.yaml", empty / "data/offers.yaml")
    shutil.copy(project / "data/profiles.parquet", empty / "data/profiles.parquet")  # the project check passes
    missing = invoke("models", "retrain", "--config", str(empty / "offerflow.yaml"))
    assert missing.exit_code == 1
    assert "no validated events yet; run the pipeline (offerflow run) first" in missing.output
