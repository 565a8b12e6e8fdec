"""The evaluation report as charts and a self-contained HTML page (charts inlined as PNG):
`figures` draws every chart of an `EvaluationResult`, `render_html` lays out the page and
`write_report` writes it. The numbers come from `offerflow.evaluation.report`."""

from __future__ import annotations

import base64
import html
import io
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from offerflow.core.config import ProjectConfig
from offerflow.evaluation.offpolicy import FIRST_ITEM_NOTE, Evaluation
from offerflow.evaluation.report import EvaluationResult
from offerflow.evaluation.slates import SLATE_NOTE


def _pct(x: float) -> str:
    return f"{x:+.0%}" if np.isfinite(x) else "n/a"


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
