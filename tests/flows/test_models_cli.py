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


def test_a_personalized_model_that_cannot_be_trained_is_skipped_and_the_champion_keeps_ranking(
        pipeline_run, tmp_path, prefect_console):
    """A window without the success event (here: one no event has) cannot train a click model:
    that model alone is not trained, with a one-line warning, and its @champion stays. With no
    offer qualified in the window, the placement's table says so and decisions serve it at random
    (tests/flows/test_decisions.py). It used to end the run with LightGBM's ValueError."""
    import shutil

    import yaml

    from offerflow.core.store import RankingStore

    project = tmp_path / "project"
    shutil.copytree(pipeline_run[0], project)
    raw = yaml.safe_load((project / "offerflow.yaml").read_text())
    for model in raw["ai_models"]:
        if model["name"] == "web-personalized":
            model["success_event"] = "never-happens"
    (project / "offerflow.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    store = RankingStore(project / "data/rankings")
    before = store.read_metadata("web-banner")
    result = invoke("train", "--model", "web-personalized", "--config", str(project / "offerflow.yaml"), "--json")
    assert result.exit_code == 0, result.output
    trained = json.loads(result.output)["ranking_models"]["models"]["web-personalized"]
    assert trained["model_version"] == before["model_version"]  # the champion, not a new version
    assert trained["reason"].startswith("not trained: ranking model 'web-personalized': ")
    assert "successes in the window: too few to train a click model" in trained["reason"]
    assert f"the @champion (version {before['model_version']}) stays" in trained["reason"]
    # with --json the summary carries the reason; Prefect's terminal handler leaves it to the CLI
    assert "not trained" not in prefect_console.getvalue(), prefect_console.getvalue()
    after = store.read_metadata("web-banner")
    assert after["version"] == before["version"] + 1 and after["model_version"] == before["model_version"]
    assert after["offers_qualified"] == 0  # no success in the window: no offer qualifies
