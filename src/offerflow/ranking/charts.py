"""Charts and tables of a ranking model's training run: each offer's observed success rate in the
window against its Beta prior and posterior (what auto-optimization samples from).

The click model's calibration, lift, gains and importance charts are Customer AI's
(`customer_ai.charts`), drawn on the click model's holdout displays by `models.ranking_training`.
Figures are built with `matplotlib.figure.Figure` directly (no GUI backend, no pyplot state).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

#: The central share of each posterior the offer-rates chart draws as an interval.
CREDIBLE_MASS = 0.9


def offer_rates(posteriors: pd.DataFrame, mass: float = CREDIBLE_MASS) -> pd.DataFrame:
    """Per offer of a posteriors frame (`bandits.fit_posteriors`: offer_id, alpha, beta,
    displays, successes, qualified): the observed rate in the window, the prior's mean (the
    posterior minus the counts), the posterior's mean and its central `mass` interval.
    Rates are per display, in [0, 1]; an offer without displays has no observed rate (NaN)."""
    from scipy.stats import beta as beta_dist

    displays = posteriors["displays"].to_numpy(float)
    successes = posteriors["successes"].to_numpy(float)
    alpha, beta = posteriors["alpha"].to_numpy(float), posteriors["beta"].to_numpy(float)
    prior_alpha, prior_beta = alpha - successes, beta - (displays - successes)
    tail = (1.0 - mass) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        observed = np.where(displays > 0, successes / displays, np.nan)
    return pd.DataFrame({
        "offer_id": posteriors["offer_id"].astype(str).to_numpy(),
        "displays": displays.astype(np.int64), "successes": successes,
        "observed_rate": observed,
        "prior_mean": prior_alpha / (prior_alpha + prior_beta),
        "posterior_mean": alpha / (alpha + beta),
        "posterior_low": beta_dist.ppf(tail, alpha, beta),
        "posterior_high": beta_dist.ppf(1.0 - tail, alpha, beta),
        "qualified": posteriors["qualified"].to_numpy(bool),
    })


def permutation_importance(predict: Callable[[pd.DataFrame], np.ndarray], frame: pd.DataFrame, y: np.ndarray,
                           columns: list[str], seed: int, max_rows: int = 20_000) -> pd.Series:
    """Holdout AUC lost when each column is shuffled (its link to the outcome broken), per
    column, on at most `max_rows` rows. Unlike the trees' gain it measures the whole model, so
    a click model's interaction base (which the trees only correct) counts too."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    if len(frame) > max_rows:
        keep = np.sort(rng.choice(len(frame), max_rows, replace=False))
        frame, y = frame.iloc[keep], np.asarray(y)[keep]
    if len(np.unique(y)) < 2:
        return pd.Series(0.0, index=columns)
    reference = roc_auc_score(y, predict(frame))
    order = rng.permutation(len(frame))
    return pd.Series({c: reference - roc_auc_score(y, predict(frame.assign(**{c: frame[c].to_numpy()[order]})))
                      for c in columns})


def offer_rates_figure(table: pd.DataFrame, title: str) -> Figure:
    """Posterior mean and interval per offer (best first), the observed rate as a dot and the
    prior's mean as a dashed line; offers not yet qualified are drawn in grey."""
    table = table.sort_values("posterior_mean", ascending=False, kind="stable").reset_index(drop=True)
    fig = Figure(figsize=(7, max(3.0, 0.35 * len(table) + 1.2)))
    ax = fig.add_subplot()
    rows = np.arange(len(table))[::-1]
    colours = np.where(table["qualified"], "tab:blue", "tab:grey")
    error = np.vstack([table["posterior_mean"] - table["posterior_low"],
                       table["posterior_high"] - table["posterior_mean"]])
    for i, colour in enumerate(colours):
        ax.errorbar(table["posterior_mean"].iat[i], rows[i], xerr=error[:, i:i + 1], fmt="s", color=colour,
                    capsize=3, label=f"posterior mean, {CREDIBLE_MASS:.0%} interval" if i == 0 else None)
    ax.scatter(table["observed_rate"], rows, marker="o", color="tab:orange", zorder=3, label="observed rate")
    prior = table["prior_mean"].to_numpy()
    if len(prior) and np.allclose(prior, prior[0]):
        if prior[0] <= 1.5 * np.nanmax(table["posterior_high"]):
            ax.axvline(prior[0], color="grey", linestyle="--", label=f"prior mean {prior[0]:.3f}")
        else:  # a flat Beta(1, 1) prior (mean 0.5) would squeeze every offer into the left edge
            title = f"{title}\n(prior mean {prior[0]:.2f}, off the scale)"
    ax.set_yticks(rows, [f"{o} ({d:,})" for o, d in zip(table["offer_id"], table["displays"])])
    ax.set(xlabel="success rate per display", ylabel="offer (displays in the window)", title=title)
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    return fig
