"""Which ranking strategy helps most: one evaluation of a project, as numbers, charts and a
self-contained HTML page (charts inlined as PNG), and the same numbers and charts in MLflow.

`run_evaluation` puts together the off-policy estimates per placement (`strategies`,
`offpolicy`), the online holdout lift (`holdout`) and the serving decision per placement;
`write_report` renders it; `log_evaluation` records it as one MLflow run.
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from offerflow.core.config import ProjectConfig
from offerflow.evaluation.holdout import DecisionLogError, decision_outcomes, lift_table, traffic_allocation
from offerflow.evaluation.offpolicy import FIRST_ITEM_NOTE, Evaluation, ServingDecision, serving_decision
from offerflow.evaluation.slates import SLATE_NOTE
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


def run_evaluation(con: duckdb.DuckDBPyConnection, config: ProjectConfig, profiles: pd.DataFrame,
                   offers: pd.DataFrame, events_source: str, decision_log_dir: Path | None = None,
                   click_sources: list[Path] | None = None, placement_ids: list[str] | None = None) -> EvaluationResult:
    """Off-policy estimates for every placement with logged displays, holdout lift where the
    decision log has it, and per placement whether the best candidate should be served."""
    result = EvaluationResult(datetime.now(timezone.utc).isoformat(timespec="seconds"), events_source)
    for placement in config.placements:
        if placement_ids and placement.id not in placement_ids:
            continue
        try:
            add_offline(result, config, *evaluate_placement(con, config, placement.id, profiles, offers))
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
                                                             ev.promotion_min_lift, set(candidates.rankings))


def add_holdout(result: EvaluationResult, config: ProjectConfig, decision_log_dir: Path,
                click_sources: list[Path]) -> None:
    """Model-versus-holdout lift and traffic allocation from the decision log, or a note why not."""
    try:
        outcomes = decision_outcomes(decision_log_dir, click_sources)
    except DecisionLogError as exc:
        result.notes.append(f"no holdout report: {exc}")
        return
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
                   servable: set[str] | None = None) -> ServingDecision:
    """The best-estimated candidate that a placement can serve (`servable`: strategies with a
    ranking method; never the logged policy, nor random) against the current strategy."""
    if evaluation.too_few:
        return ServingDecision(False, f"not enough data to rank strategies: {evaluation.too_few}", {}, None, current)
    estimator = headline_estimator(evaluation, estimator)
    table = evaluation.table[(evaluation.table["estimator"] == estimator) & (evaluation.table["kind"] != "logged")]
    if current not in set(table["strategy"]):
        return ServingDecision(False, f"current strategy {current!r} has no estimate", {})
    if servable is not None:
        table = table[table["strategy"].isin(servable | {current})]
    best = table.sort_values("value", ascending=False, kind="stable").iloc[0]
    lift = evaluation.lift(best["strategy"], current, estimator)
    return serving_decision(best["strategy"], current, lift, min_lift, best["warnings"])


def _pct(x: float) -> str:
    return f"{x:+.0%}" if np.isfinite(x) else "n/a"


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


# --- charts -----------------------------------------------------------------------------------

def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def strategy_figure(evaluation: Evaluation):
    """Estimated first-item click rate per strategy and estimator, with intervals."""
    plt = _pyplot()
    table = evaluation.table
    strategies = list(dict.fromkeys(table["strategy"]))
    labels = [table.loc[table["strategy"] == s, "label"].iat[0] for s in strategies]
    fig, ax = plt.subplots(figsize=(8, 0.6 * len(strategies) + 1.5))
    colors = {"ips": "#1f77b4", "snips": "#ff7f0e", "dr": "#2ca02c"}
    for k, estimator in enumerate(["ips", "snips", "dr"]):
        rows = table[table["estimator"] == estimator].set_index("strategy")
        ys = [i + (k - 1) * 0.22 for i, s in enumerate(strategies) if s in rows.index]
        got = [s for s in strategies if s in rows.index]
        if not got:
            continue
        v = rows.loc[got, "value"].to_numpy()
        err = np.abs(np.vstack([v - rows.loc[got, "low"].to_numpy(), rows.loc[got, "high"].to_numpy() - v]))
        ax.errorbar(v, ys, xerr=err, fmt="o", color=colors[estimator], label=estimator.upper(), capsize=3)
    ax.set_yticks(range(len(strategies)), labels)
    ax.invert_yaxis()
    ax.set_xlabel(f"estimated click rate of the first item ({evaluation.confidence:.0%} interval)")
    ax.set_title(f"{evaluation.placement_id}: strategies on {evaluation.n:,} logged displays")
    ax.legend(loc="best", fontsize=8, framealpha=0.6)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def lift_figure(lift: pd.DataFrame, placement_id: str, model: str):
    """Daily lift of model over holdout traffic with its interval, and the overall lift."""
    plt = _pyplot()
    rows = lift[(lift["placement_id"] == placement_id) & (lift["ai_model"] == model)]
    daily = rows[rows["day"].notna()].sort_values("day")
    overall = rows[rows["day"].isna()].iloc[0]
    fig, ax = plt.subplots(figsize=(8, 3.5))
    days = pd.to_datetime(daily["day"])
    ax.fill_between(days, daily["lift_low"], daily["lift_high"], alpha=0.25, label="daily interval")
    ax.plot(days, daily["lift"], marker="o", label="daily lift")
    ax.axhline(overall["lift"], color="black", linestyle="--", label=f"overall {_pct(overall['lift'])}")
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_ylabel("lift over holdout")
    ax.set_title(f"{placement_id}: {model} vs random holdout")
    ax.legend(loc="upper left", fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig


def traffic_figure(traffic: pd.DataFrame, placement_id: str):
    """Decisions per day by arm (stacked)."""
    plt = _pyplot()
    rows = traffic[traffic["placement_id"] == placement_id]
    pivot = rows.pivot_table(index="day", columns="arm", values="decisions", aggfunc="sum", fill_value=0)
    fig, ax = plt.subplots(figsize=(8, 3))
    bottom = np.zeros(len(pivot))
    x = pd.to_datetime(pivot.index)
    for arm in pivot.columns:
        ax.bar(x, pivot[arm].to_numpy(), bottom=bottom, label=arm)
        bottom += pivot[arm].to_numpy()
    ax.set_ylabel("decisions")
    ax.set_title(f"{placement_id}: traffic allocation")
    ax.legend(fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig


def personalized_figure(result: EvaluationResult):
    """Per personalized model, how many offers it personalizes (qualified before the window)."""
    counts: dict[str, int] = {}
    for evaluation in result.offline.values():
        rows = evaluation.table[evaluation.table["kind"] == "personalized"]
        for row in rows.drop_duplicates("strategy").itertuples():
            counts[row.label] = int(row.offers_personalized)
    if not counts:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 0.5 * len(counts) + 1.2))
    ax.barh(list(counts), list(counts.values()))
    ax.set_xlabel("offers personalized")
    ax.set_title("Personalized models")
    fig.tight_layout()
    return fig


def figures(result: EvaluationResult) -> dict[str, Any]:
    """Every chart of the report, keyed by its artifact file name."""
    out: dict[str, Any] = {}
    for placement_id, evaluation in result.offline.items():
        out[f"strategies-{placement_id}.png"] = strategy_figure(evaluation)
    if not result.lift.empty:
        for (placement_id, model), _ in result.lift.groupby(["placement_id", "ai_model"]):
            out[f"lift-{placement_id}-{model}.png"] = lift_figure(result.lift, placement_id, model)
    if not result.traffic.empty:
        for placement_id in result.traffic["placement_id"].unique():
            out[f"traffic-{placement_id}.png"] = traffic_figure(result.traffic, placement_id)
    personalized = personalized_figure(result)
    if personalized is not None:
        out["personalized-offers.png"] = personalized
    return out


# --- HTML ---------------------------------------------------------------------------------------

def _png(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _table_html(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, border=0, classes="t", na_rep="", float_format=lambda v: f"{v:.4g}")


CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1000px;color:#222}
h1{font-size:1.5em}h2{border-bottom:1px solid #ccc;margin-top:2em}.summary li{margin:.4em 0}
.warn{color:#a33}.t{border-collapse:collapse;font-size:.85em}.t td,.t th{padding:3px 8px;border-bottom:1px solid #eee}
img{max-width:100%}.note{color:#555;font-size:.9em}"""


def render_html(result: EvaluationResult, charts: dict[str, Any], config: ProjectConfig) -> str:
    """The report as one HTML string with every chart inlined."""
    images = {name: _png(fig) for name, fig in charts.items()}

    def img(name: str) -> str:
        return (f'<img class="chart" alt="{html.escape(name)}" src="data:image/png;base64,{images[name]}">'
                if name in images else "")

    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>offerflow evaluation - "
             f"{html.escape(config.project)}</title><style>{CSS}</style></head><body>",
             f"<h1>Which strategy helps most - {html.escape(config.project)}</h1>",
             f"<p class='note'>Created {result.created} from {html.escape(result.events_source)}. "
             f"{FIRST_ITEM_NOTE}</p>", "<ul class='summary'>"]
    parts += [f"<li>{html.escape(line)}</li>" for line in result.summary] + ["</ul>"]
    parts += [f"<p class='warn'>{html.escape(note)}</p>" for note in result.notes]
    parts.append("<h2>Off-policy estimates</h2>")
    for placement_id, evaluation in result.offline.items():
        table = evaluation.table
        parts.append(f"<h3>{html.escape(placement_id)}</h3>{img(f'strategies-{placement_id}.png')}")
        window = result.candidates[placement_id]
        parts.append(f"<p class='note'>Current strategy: {html.escape(window.current)}.</p>")
        parts += [f"<p class='warn'>{html.escape(w)}</p>" for w in evaluation.warnings]
        shown = table.assign(warnings=table["warnings"].map("; ".join))[
            ["label", "kind", "estimator", "value", "low", "high", "ess", "effective_clicks", "warnings"]]
        parts.append(_table_html(shown))
        parts.append(_slate_html(evaluation, config))
    parts.append("<h2>Online: model versus random holdout</h2>")
    if result.lift.empty:
        parts.append("<p class='note'>No decision metadata with holdout traffic yet.</p>")
    else:
        for (placement_id, model), rows in result.lift.groupby(["placement_id", "ai_model"]):
            parts.append(f"<h3>{html.escape(placement_id)} - {html.escape(model)}</h3>")
            parts.append(img(f"lift-{placement_id}-{model}.png") + img(f"traffic-{placement_id}.png"))
            rows = rows.assign(day=rows["day"].map(lambda d: "overall" if pd.isna(d) else str(d)))
            parts.append(_table_html(rows.drop(columns=["placement_id", "ai_model"])))
    if "personalized-offers.png" in images:
        parts.append("<h2>Personalized models</h2>" + img("personalized-offers.png"))
    # After the load event every (inline) image has loaded: record their decoded sizes on the body,
    # so a headless browser's DOM dump shows whether the charts rendered.
    parts.append("<script>window.addEventListener('load', () => { document.body.dataset.charts = "
                 "[...document.images].map(i => (i.complete ? i.naturalWidth : 0) + 'x' + "
                 "(i.complete ? i.naturalHeight : 0)).join(','); });</script></body></html>")
    return "\n".join(parts)


def _slate_html(evaluation: Evaluation, config: ProjectConfig) -> str:
    """The whole-slate (position-aware) estimates of a multi-item placement, or why there are none."""
    items = config.placement(evaluation.placement_id).items
    if items == 1:
        return ""
    head = f"<h4>Whole slates ({items} slots): expected clicks per decision</h4>"
    slates = evaluation.slates
    if slates is None:
        return head + (f"<p class='note'>No slate estimate: {html.escape(evaluation.slate_note or 'not computed')}. "
                       "The estimates above are for the first item only.</p>")
    table = slates.table.assign(warnings=slates.table["warnings"].map("; ".join))[
        ["label", "kind", "estimator", "value", "low", "high", "ess", "warnings"]]
    theta = ", ".join(f"{t:.2f}" for t in slates.position_weights) if np.isfinite(slates.position_weights).all() else "n/a"
    notes = "".join(f"<p class='warn'>{html.escape(w)}</p>" for w in slates.warnings)
    return (head + f"<p class='note'>{html.escape(SLATE_NOTE)} Based on {slates.n:,} decisions; observed / "
            f"predicted clicks per slot (DR position weights): {theta}. Strategies ranked by Thompson sampling "
            "are evaluated on the first item only.</p>" + notes + _table_html(table))


def write_report(result: EvaluationResult, config: ProjectConfig, out_dir: Path) -> tuple[Path, dict[str, Any]]:
    """Write `report-<time>.html` and `latest.html`; returns the path and the charts."""
    charts = figures(result)
    page = render_html(result, charts, config)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"report-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}.html"
    path.write_text(page, encoding="utf-8")
    (out_dir / "latest.html").write_text(page, encoding="utf-8")
    return path, charts


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
