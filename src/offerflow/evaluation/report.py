"""Which ranking strategy helps most: one evaluation of a project, as numbers, and the same numbers
and charts in MLflow.

`run_evaluation` puts together the off-policy estimates per placement (`strategies`,
`offpolicy`), the online holdout lift (`holdout`) and the serving decision per placement;
`evaluation_json` and `summary_sentences` give its numbers and plain-language lines;
`report_html.write_report` renders it as charts and an HTML page; `log_evaluation` records it as
one MLflow run.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from offerflow.core.config import ProjectConfig
from offerflow.evaluation.holdout import (DecisionLogError, decision_outcomes, events_end, lift_table, observed_only,
                                         traffic_allocation)
from offerflow.evaluation.offpolicy import Evaluation, ServingDecision, serving_decision
from offerflow.evaluation.strategies import PlacementCandidates, evaluate_placement

EXPERIMENT_SUFFIX = "evaluation"


@dataclass
class EvaluationResult:
    created: str
    events_source: str
    offline: dict[str, Evaluation] = field(default_factory=dict)
    candidates: dict[str, PlacementCandidates] = field(default_factory=dict)
    serving: dict[str, ServingDecision] = field(default_factory=dict)
    lift: pd.DataFrame = field(default_factory=pd.DataFrame)
    traffic: pd.DataFrame = field(default_factory=pd.DataFrame)
    notes: list[str] = field(default_factory=list)
    summary: list[str] = field(default_factory=list)


def load_evaluation_catalog(config: ProjectConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Profiles (enriched with Customer AI scores when the pipeline wrote them, since formulas and
    rules may read them) and the offer catalog; both were validated by the pipeline."""
    from offerflow.ingest.catalog import load_offers, load_profiles

    enriched = config.path(config.data.outputs_dir) / "profiles_enriched.parquet"
    profiles = load_profiles(enriched if enriched.exists() else config.path(config.data.profiles))
    return profiles, load_offers(config.path(config.data.offers), [p.id for p in config.placements])


def run_evaluation(con: duckdb.DuckDBPyConnection | None, config: ProjectConfig, profiles: pd.DataFrame,
                   offers: pd.DataFrame, events_source: str, decision_log_dir: Path | None = None,
                   click_sources: list[Path] | None = None, placement_ids: list[str] | None = None,
                   evaluate_one: Callable[[str], tuple[Evaluation, PlacementCandidates]] | None = None,
                   ) -> EvaluationResult:
    """Off-policy estimates for every placement with logged displays, holdout lift where the
    decision log has it, and per placement whether the best candidate should be served.

    `evaluate_one(placement_id)` evaluates one placement (ValueError: no estimate, noted); the
    default is `strategies.evaluate_placement` on `con`; the flow passes one that runs it as a task."""
    if evaluate_one is None:
        def evaluate_one(placement_id: str) -> tuple[Evaluation, PlacementCandidates]:
            return evaluate_placement(con, config, placement_id, profiles, offers)

    result = EvaluationResult(datetime.now(timezone.utc).isoformat(timespec="seconds"), events_source)
    for placement in config.placements:
        if placement_ids and placement.id not in placement_ids:
            continue
        try:
            add_offline(result, config, *evaluate_one(placement.id))
        except ValueError as exc:
            result.notes.append(f"{placement.id}: no off-policy estimate: {exc}")
    if decision_log_dir is not None:
        add_holdout(result, config, decision_log_dir, click_sources or [])
    result.summary = summary_sentences(result, config)
    return result


def add_offline(result: EvaluationResult, config: ProjectConfig, evaluation: Evaluation,
                candidates: PlacementCandidates) -> None:
    """Record a placement's estimates and its serving decision."""
    ev = config.evaluation
    result.offline[evaluation.placement_id] = evaluation
    result.candidates[evaluation.placement_id] = candidates
    result.serving[evaluation.placement_id] = decide_serving(evaluation, candidates.current, ev.headline_estimator,
                                                             ev.promotion_min_lift, set(candidates.rankings),
                                                             candidates.skipped.get(candidates.current))


def add_holdout(result: EvaluationResult, config: ProjectConfig, decision_log_dir: Path,
                click_sources: list[Path]) -> None:
    """Model-versus-holdout lift and traffic allocation from the decision log, or a note why not."""
    try:
        outcomes = decision_outcomes(decision_log_dir, click_sources)
        outcomes, late = observed_only(outcomes, events_end(click_sources, decision_log_dir))
    except DecisionLogError as exc:
        result.notes.append(f"no holdout report: {exc}")
        return
    if late:
        result.notes.append(late)
    result.lift = lift_table(outcomes, config.evaluation.confidence)
    result.traffic = traffic_allocation(outcomes)


def headline_estimator(evaluation: Evaluation, preferred: str) -> str:
    """The configured headline estimator, or SNIPS when it has no estimate on this placement (DR
    without a reward model: nothing before the window to train one on)."""
    table = evaluation.table
    available = set(table.loc[table["kind"] != "logged", "estimator"]) if len(table) else set()
    if preferred in available:
        return preferred
    return next((e for e in ("snips", "ips", "dr") if e in available), preferred)


def decide_serving(evaluation: Evaluation, current: str, estimator: str, min_lift: float,
                   servable: set[str] | None = None, current_skipped: str | None = None) -> ServingDecision:
    """The best-estimated candidate that a placement can serve (`servable`: strategies with a
    ranking method; never the logged policy, nor random) against the current strategy
    (`current_skipped`: why it was not estimated, if it was not)."""
    if evaluation.too_few:
        return ServingDecision(False, f"not enough data to rank strategies: {evaluation.too_few}", {}, None, current)
    estimator = headline_estimator(evaluation, estimator)
    table = evaluation.table[(evaluation.table["estimator"] == estimator) & (evaluation.table["kind"] != "logged")]
    if current not in set(table["strategy"]):
        why = f" ({current} skipped: {current_skipped})" if current_skipped else ""
        return ServingDecision(False, f"current strategy {current!r} has no estimate{why}", {})
    if servable is not None:
        table = table[table["strategy"].isin(servable | {current})]
    best = table.sort_values("value", ascending=False, kind="stable").iloc[0]
    lift = evaluation.lift(best["strategy"], current, estimator)
    return serving_decision(best["strategy"], current, lift, min_lift, best["warnings"])


def _rate(row: pd.Series, level: str) -> str:
    """A click rate with its interval, e.g. '0.39% (95% CI 0.21% to 0.66%)'."""
    return f"{row['value']:.2%} ({level} CI {row['low']:.2%} to {row['high']:.2%})"


def _offline_sentences(placement_id: str, evaluation: Evaluation, config: ProjectConfig) -> list[str]:
    ev = config.evaluation
    estimator = headline_estimator(evaluation, ev.headline_estimator)
    table = evaluation.table
    table = table[(table["estimator"] == estimator) & (table["kind"] != "logged")] if len(table) else table
    basis = f"based on {evaluation.n:,} displays and {evaluation.clicks:,} clicks (off-policy, {estimator.upper()})"
    level = f"{evaluation.confidence:.0%}"
    if table.empty:
        return [f"On {placement_id}, no strategy could be estimated ({evaluation.n:,} displays)."]
    ranked = table.sort_values("value", ascending=False, kind="stable")
    best = ranked.iloc[0]
    if evaluation.too_few:
        listed = "; ".join(f"{row['label']} {_rate(row, level)}" for _, row in ranked.iterrows())
        return [f"On {placement_id}, {evaluation.too_few}. Estimated first-item click rates, {basis}: {listed}."]
    baseline = ev.baseline_strategy if ev.baseline_strategy in set(table["strategy"]) else "priority"
    if baseline not in set(table["strategy"]):
        return [f"On {placement_id}, {best['label']} has the highest estimate, {_rate(best, level)}, {basis}."]
    base = table[table["strategy"] == baseline].iloc[0]
    if best["strategy"] == baseline:
        return [f"On {placement_id}, no strategy is estimated to beat {baseline} ({_rate(best, level)}, {basis})."]
    lift = evaluation.lift(best["strategy"], baseline, estimator)
    if not all(np.isfinite([lift["lift"], lift["low"], lift["high"]])):
        return [f"On {placement_id}, {best['label']} is estimated at {_rate(best, level)} and {baseline} at "
                f"{_rate(base, level)}, {basis}; no relative lift: {baseline}'s estimate is too close to 0."]
    word = "better" if lift["lift"] >= 0 else "worse"
    return [f"On {placement_id}, {best['label']} converts {abs(lift['lift']):.0%} {word} than {baseline} "
            f"({level} CI {lift['low']:.0%} to {lift['high']:.0%}), {basis}: {_rate(best, level)} against "
            f"{_rate(base, level)}."]


def summary_sentences(result: EvaluationResult, config: ProjectConfig) -> list[str]:
    """The plain-language lines at the top of the report (never 'nan%')."""
    ev = config.evaluation
    out = []
    for placement_id, evaluation in result.offline.items():
        out += _offline_sentences(placement_id, evaluation, config)
        decision = result.serving.get(placement_id)
        if decision is not None:
            out.append(f"Serving decision for {placement_id}: "
                       f"{'switch' if decision.serve_candidate else 'keep the current strategy'} - {decision.reason}.")
    if not result.lift.empty:
        overall = result.lift[result.lift["day"].isna()]
        for row in overall.itertuples():
            if np.isfinite([row.lift, row.lift_low, row.lift_high]).all():
                out.append(f"On {row.placement_id}, {row.ai_model} traffic converts {abs(row.lift):.0%} "
                           f"{'better' if row.lift >= 0 else 'worse'} than its random holdout "
                           f"({ev.confidence:.0%} CI {row.lift_low:.0%} to {row.lift_high:.0%}, p={row.p_value:.3g}), "
                           f"based on {row.displays_model + row.displays_holdout:,} decisions.")
    return out


def _json_value(value: Any) -> Any:
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_json_value(v) for v in value]
    if isinstance(value, pd.Timestamp | datetime):
        return value.isoformat()
    return None if value is pd.NA or value is pd.NaT else value


def _records(frame: pd.DataFrame, columns: list[str]) -> list[dict[str, Any]]:
    present = [c for c in columns if c in frame.columns]
    return [{c: _json_value(v) for c, v in row.items()} for row in frame[present].to_dict(orient="records")]


ESTIMATE_COLUMNS = ["strategy", "label", "kind", "estimator", "value", "raw", "low", "high", "ess", "n", "clicks",
                    "effective_clicks", "warnings"]


def evaluation_json(result: EvaluationResult, config: ProjectConfig) -> dict[str, Any]:
    """Every estimate with its interval, per placement, as JSON-ready values (non-finite -> null):
    the first-item table, the whole-slate table, warnings, and the holdout lift rows."""
    placements = {}
    for placement_id, evaluation in result.offline.items():
        slates = evaluation.slates
        placements[placement_id] = {
            "window_start": _json_value(evaluation.start), "window_end": _json_value(evaluation.end),
            "displays": evaluation.n, "clicks": evaluation.clicks, "confidence": evaluation.confidence,
            "headline_estimator": headline_estimator(evaluation, config.evaluation.headline_estimator),
            "too_few_to_rank": evaluation.too_few, "warnings": list(evaluation.warnings),
            "estimates": _records(evaluation.table, ESTIMATE_COLUMNS),
            "slates": _records(slates.table, ESTIMATE_COLUMNS) if slates is not None else None,
            "slate_note": evaluation.slate_note}
    lift = _records(result.lift.assign(day=result.lift["day"].astype(str).where(result.lift["day"].notna(), None)),
                    list(result.lift.columns)) if not result.lift.empty else []
    return {"placements": placements, "holdout_lift": lift}


def evaluation_metrics(result: EvaluationResult) -> dict[str, float]:
    """MLflow metrics: one per placement x strategy x estimator (value, low, high) and ESS."""
    metrics: dict[str, float] = {}
    for placement_id, evaluation in result.offline.items():
        for row in evaluation.table.itertuples():
            key = f"{placement_id}.{row.strategy}.{row.estimator}"
            metrics.update({key: row.value, f"{key}.low": row.low, f"{key}.high": row.high})
            metrics[f"{placement_id}.{row.strategy}.ess"] = row.ess
        if evaluation.slates is not None:
            for row in evaluation.slates.table.itertuples():
                key = f"{placement_id}.{row.strategy}.slate_{row.estimator}"
                metrics.update({key: row.value, f"{key}.low": row.low, f"{key}.high": row.high})
    overall = result.lift[result.lift["day"].isna()] if not result.lift.empty else result.lift
    for row in overall.itertuples():
        key = f"{row.placement_id}.{row.ai_model}.holdout_lift"
        metrics.update({key: row.lift, f"{key}.low": row.lift_low, f"{key}.high": row.lift_high})
    return {k: float(v) for k, v in metrics.items() if v is not None and np.isfinite(v)}


def log_evaluation(tracker: Any, config: ProjectConfig, result: EvaluationResult, report_path: Path,
                   charts: dict[str, Any], tags: dict[str, str] | None = None) -> str:
    """One MLflow run per evaluation: metrics, charts, the report, and each serving decision with
    its evidence. Returns the run id."""
    experiment = f"{config.tracking.experiment_prefix}-{EXPERIMENT_SUFFIX}"
    with tracker.run(experiment, run_name="evaluate", tags={**(tags or {}), "project": config.project}) as run_id:
        ev = config.evaluation
        tracker.log_params({"window_days": ev.window_days, "reward_model_days": ev.reward_model_days,
                            "bootstrap_samples": ev.bootstrap_samples, "confidence": ev.confidence,
                            "headline_estimator": ev.headline_estimator,
                            "promotion_min_lift": ev.promotion_min_lift, "events": result.events_source})
        tracker.log_metrics(evaluation_metrics(result))
        for name, figure in charts.items():
            tracker.log_figure(figure, f"charts/{name}")
        tracker.log_artifact(report_path, "report")
        serving = {p: {"serve_candidate": d.serve_candidate, "reason": d.reason, "evidence": dict(d.evidence),
                       "current": result.candidates[p].current} for p, d in result.serving.items()}
        tracker.log_dict({"serving_decisions": serving, "summary": result.summary, "notes": result.notes},
                         "serving_decisions.json")
        tracker.set_tags({f"serving.{p}": ("switch: " if d.serve_candidate else "keep: ") + d.reason
                          for p, d in result.serving.items()})
        if not result.lift.empty:
            tracker.log_text(result.lift.to_csv(index=False), "holdout_lift.csv")
        tracker.log_text(json.dumps(result.summary, indent=2), "summary.json")
    return run_id
