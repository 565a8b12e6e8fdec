"""Charts and tables a data scientist reads to judge a propensity model (logged to MLflow as PNGs).

Figures are built with `matplotlib.figure.Figure` directly, so no GUI backend or global pyplot
state is involved.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure


def lift_table(y_true: np.ndarray, probability: np.ndarray, bins: int = 10, unit: str = "profiles") -> pd.DataFrame:
    """Deciles by score (1 = highest): rows (named `unit`: profiles, or displays for a click
    model), positives, mean score, rate, lift over the base rate, and cumulative share of all
    positives captured (gains). `mean_score` against `rate` is the calibration by decile."""
    y = np.asarray(y_true, dtype=float)
    order = np.argsort(-np.asarray(probability), kind="stable")
    decile = np.empty(len(y), dtype=int)
    decile[order] = np.arange(len(y)) * bins // max(len(y), 1) + 1
    table = (pd.DataFrame({"decile": decile, "y": y, "p": probability})
               .groupby("decile").agg(**{unit: ("y", "size")}, positives=("y", "sum"), mean_score=("p", "mean")))
    base = y.mean() if len(y) else np.nan
    table["rate"] = table["positives"] / table[unit]
    table["lift"] = table["rate"] / base
    table["cumulative_gain"] = table["positives"].cumsum() / max(y.sum(), 1)
    return table.reset_index()


def calibration_figure(y_true: np.ndarray, probability: np.ndarray, bins: int = 10) -> Figure:
    edges = np.quantile(probability, np.linspace(0, 1, bins + 1))
    which = np.clip(np.searchsorted(edges, probability, side="right") - 1, 0, bins - 1)
    frame = pd.DataFrame({"bin": which, "y": y_true, "p": probability}).groupby("bin").mean()
    fig = Figure(figsize=(5, 5))
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect")
    ax.plot(frame["p"], frame["y"], marker="o", label="model")
    ax.set(xlabel="mean predicted probability", ylabel="observed rate", title="Calibration (holdout)")
    ax.legend()
    return fig


def lift_figure(table: pd.DataFrame) -> Figure:
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    ax.bar(table["decile"], table["lift"])
    ax.axhline(1.0, color="grey", linestyle="--")
    ax.set(xlabel="decile (1 = highest scores)", ylabel="lift over base rate", title="Lift by decile (holdout)")
    return fig


def gains_figure(table: pd.DataFrame) -> Figure:
    fig = Figure(figsize=(5, 5))
    ax = fig.add_subplot()
    share = np.concatenate([[0], table["decile"] / table["decile"].max()])
    ax.plot(share, np.concatenate([[0], table["cumulative_gain"]]), marker="o", label="model")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="random")
    ax.set(xlabel="share of profiles contacted", ylabel="share of positives captured",
           title="Cumulative gains (holdout)")
    ax.legend()
    return fig


def score_distribution_figure(y_true: np.ndarray, probability: np.ndarray) -> Figure:
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    y = np.asarray(y_true).astype(bool)
    bins = np.linspace(0, 1, 41)
    for mask, label in ((~y, "did not reach goal"), (y, "reached goal")):
        if mask.any():  # a density of no scores divides by zero (a holdout without positives)
            ax.hist(probability[mask], bins=bins, alpha=0.6, label=label, density=True)
    ax.set(xlabel="predicted probability", ylabel="density", title="Score distribution (holdout)")
    ax.legend()
    return fig


def importance_figure(names: Sequence[str], gain: np.ndarray, top: int = 20, xlabel: str = "total gain") -> Figure:
    order = np.argsort(gain)[::-1][:top][::-1]
    fig = Figure(figsize=(6, max(3, 0.3 * len(order))))
    ax = fig.add_subplot()
    ax.barh([names[i] for i in order], gain[order])
    ax.set(xlabel=xlabel, title="Feature importance")
    fig.tight_layout()
    return fig
