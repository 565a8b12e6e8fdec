"""Lineage in MLflow after one pipeline run: one parent run, a child run per step (training,
scoring, publishing) with the
validated snapshot as its input and MLflow's standard source tags, distinct run names, registered
models and versions with descriptions, and a scoring run that records its drift reference."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from offerflow.core.config import load_config
from offerflow.core.tracking import resolve_tracking_uri

pytestmark = pytest.mark.flow


@pytest.fixture(scope="module")
def mlflow_view(pipeline_run):
    project_dir, summary = pipeline_run
    config = load_config(project_dir / "offerflow.yaml")
    uri = resolve_tracking_uri(config.tracking.uri, config.root)
    return MlflowClient(tracking_uri=uri, registry_uri=uri), summary


def test_one_parent_run_with_a_child_per_step(mlflow_view):
    client, summary = mlflow_view
    parents = client.search_runs([client.get_experiment_by_name("offerflow-pipeline").experiment_id])
    # other tests may run the session's pipeline again: each run is one more parent, none a child
    assert summary["mlflow_run_id"] in [r.info.run_id for r in parents]
    assert not any("mlflow.parentRunId" in r.data.tags for r in parents)
    parent = client.get_run(summary["mlflow_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["mlflow.source.name"] == "offerflow-pipeline"
    assert parent.inputs.dataset_inputs, "the parent run records the validated snapshot"

    experiments = [e.experiment_id for e in client.search_experiments()]
    children = client.search_runs(experiments, filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    names = [c.data.tags["mlflow.runName"] for c in children]
    expected = {f"train-{goal}" for goal in summary["propensity"]} | {f"score-{goal}" for goal in summary["propensity"]}
    expected |= {f"train-{model}" for model in summary["ranking_models"]}
    expected |= {f"publish-{placement}" for placement in summary["published"]}
    assert {n.rsplit("-", 2)[0] for n in names} == expected
    assert len(set(names)) == len(names), "run names are distinct"
    assert {summary["propensity"]["purchase_14d"]["run_id"],
            summary["ranking_models"]["web-personalized"]["run_id"]} <= {c.info.run_id for c in children}
    [web] = [c for c in children if c.data.tags["mlflow.runName"].startswith("publish-web-banner-")]
    assert web.data.params["table_version"] == str(summary["published"]["web-banner"])
    assert web.data.params["model_run_id"] == summary["ranking_models"]["web-personalized"]["run_id"]
    for child in children:
        tags = child.data.tags
        assert tags["mlflow.source.name"] == "offerflow-pipeline" and tags["mlflow.source.type"] == "JOB"
        assert len(tags.get("mlflow.source.git.commit", "")) == 40  # the tests run from a git checkout
        inputs = child.inputs.dataset_inputs
        assert inputs and inputs[0].dataset.name == "validated-events" and inputs[0].dataset.digest
        assert '"num_rows": ' in inputs[0].dataset.profile and inputs[0].tags[0].value in {"training", "scoring"}


def test_first_scoring_run_has_nothing_to_compare_with_but_records_its_distribution(mlflow_view):
    client, summary = mlflow_view
    experiment = client.get_experiment_by_name("offerflow-propensity-purchase_14d").experiment_id
    [scoring] = client.search_runs([experiment], filter_string="tags.`offerflow.step` = 'score'")
    assert scoring.data.tags["compared_with_run"] == "" and scoring.data.metrics["scored_profiles"] > 0
    assert not any(k.startswith("psi_") for k in scoring.data.metrics)
    # whom it covered, as docs/customer-ai.md "Who is scored" says every score-... run logs
    metrics = scoring.data.metrics
    assert metrics["population_scored"] == metrics["population_eligible"] == metrics["scored_profiles"]
    assert metrics["population_excluded"] == metrics["population_profiles"] - metrics["population_eligible"]
    assert " scored of " in scoring.data.params["population"]
    profile = client.download_artifacts(scoring.info.run_id, "drift/profile.json")
    assert '"score"' in Path(profile).read_text()


def test_registered_models_and_versions_are_described(mlflow_view):
    client, summary = mlflow_view
    for name in ["offerflow-propensity-purchase_14d", "offerflow-ranking-web-personalized"]:
        assert client.get_registered_model(name).description.startswith("offerflow ")
        version = client.get_model_version(name, "1")
        assert "holdout auc 0." in version.description
    goal = client.get_model_version("offerflow-propensity-purchase_14d", "1").description
    assert "goal purchase_14d; outcome window 14 days; population:" in goal
