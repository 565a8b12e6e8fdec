"""Scoring steps as MLflow runs. A Customer AI scoring run: the snapshot it read, how many profiles
it scored, and the drift of the model's features and of the score against the goal's previous
scoring run (`customer_ai.drift`: PSI in the previous run's fixed quantile bins). A publication
run: which ranking table version a placement got from which model version.

Each scoring run logs its own `distribution_profile` (`drift/profile.json`), the reference of the
next one; the drift table goes to `drift/psi.csv` and to metrics `psi_<feature>` (`psi_score` for
the score). The caller warns about the rows above its threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import duckdb
import pandas as pd

from offerflow.core.config import PropensityGoalConfig
from offerflow.core.features import events_dataset, safe_name
from offerflow.core.tracking import DatasetSummary, Tracker, run_stamp
from offerflow.core.schema import PROFILE_ID
from offerflow.customer_ai.drift import distribution_profile, drift_table, drifted
from offerflow.customer_ai.goals import population
from offerflow.customer_ai.propensity import PropensityModel, feature_sample
from offerflow.models.registry import propensity_model_name
from offerflow.ranking.ai_models import RankingModelResult

#: The tag that marks scoring runs among a goal's runs, and where their drift artifacts go.
STEP_TAG, SCORE_STEP = "offerflow.step", "score"
PROFILE_ARTIFACT, TABLE_ARTIFACT = "drift/profile.json", "drift/psi.csv"


@dataclass(frozen=True)
class ScoringRun:
    """What a scoring run recorded: its MLflow run, the drift table (empty for a goal's first
    scoring run: nothing to compare with) and its rows above the threshold."""

    run_id: str
    reference_run_id: str | None
    drift: pd.DataFrame
    drifted: pd.DataFrame
    threshold: float

    def warnings(self) -> list[str]:
        """One line per drifted column, for the progress output."""
        return [f"drift: {name} PSI {value:.3f} > {self.threshold} against scoring run {self.reference_run_id}"
                for name, value in zip(self.drifted["feature"], self.drifted["psi"])]


def track_scoring(tracker: Tracker, experiment_prefix: str, con: duckdb.DuckDBPyConnection, model: PropensityModel,
                  goal: PropensityGoalConfig, profiles: pd.DataFrame, scores: pd.DataFrame, as_of: datetime,
                  model_version: str | None, threshold: float, tags: dict[str, str] | None = None) -> ScoringRun:
    """Log the scoring of `goal` as of `as_of` (`scores`: one row per profile, `probability`) as a
    run of the goal's experiment (a child of the pipeline run when `tags` say so)."""
    experiment = propensity_model_name(experiment_prefix, goal.name)
    reference = tracker.latest_run(experiment, {STEP_TAG: SCORE_STEP})
    columns = {**feature_sample(con, model, goal, profiles, as_of).to_dict(orient="series"),
               "score": scores["probability"]}
    columns = {name: values.to_numpy(dtype=float, na_value=float("nan")) for name, values in columns.items()}
    previous = tracker.load_run_dict(reference["run_id"], PROFILE_ARTIFACT) if reference else {}
    table = drift_table(previous, columns)
    covered = population(con, goal, profiles[PROFILE_ID], as_of, scored=len(scores))
    run_tags = {**(tags or {}), STEP_TAG: SCORE_STEP, "goal": goal.name, "model_version": model_version or "",
                "compared_with_run": reference["run_id"] if reference else ""}
    with tracker.run(experiment, run_name=f"score-{goal.name}-{run_stamp()}", tags=run_tags) as run_id:
        tracker.log_input(events_dataset(con), "scoring")
        tracker.log_params({"as_of": as_of.date().isoformat(), "drift_psi_threshold": threshold,
                            "population": covered.describe()})
        tracker.log_metrics({"scored_profiles": float(len(scores)), **covered.as_metrics(),
                             **{f"psi_{safe_name(f)}": v for f, v in zip(table["feature"], table["psi"])}})
        tracker.log_dict(distribution_profile(columns), PROFILE_ARTIFACT)
        if len(table):
            tracker.log_text(table.to_csv(index=False), TABLE_ARTIFACT)
    return ScoringRun(run_id, reference["run_id"] if reference else None, table, drifted(table, threshold), threshold)


def track_publication(tracker: Tracker, experiment_prefix: str, placement_id: str, table_version: int,
                      model: RankingModelResult | None, dataset: DatasetSummary, tags: dict[str, str] | None = None) -> str:
    """Log the publication of a placement's ranking table as a run of `<prefix>-publishing` (a
    child of the pipeline run when `tags` say so): which table version, ranked by which model
    version, from which snapshot. Returns the run id."""
    run_tags = {**(tags or {}), STEP_TAG: "publish", "placement": placement_id}
    with tracker.run(f"{experiment_prefix}-publishing", run_name=f"publish-{placement_id}-{run_stamp()}",
                     tags=run_tags) as run_id:
        tracker.log_input(dataset, "scoring")
        tracker.log_params({"placement": placement_id, "table_version": table_version,
                            "ai_model": model.name if model else "", "model_kind": model.kind if model else "",
                            "model_version": (model.model_version or "") if model else "",
                            "model_run_id": model.run_id if model else ""})
    return run_id
