"""Drift between scoring runs: the population stability index (PSI) of each model feature and of
the score, against the distribution the previous scoring run recorded.

A run records, per column, the inner edges of `DRIFT_BINS` quantile bins of its own values and
the share of rows in each bin (plus one bin for missing values): its `distribution_profile`. The
next run counts its values in those fixed bins and compares the shares:
PSI = sum((actual - expected) * ln(actual / expected)), shares floored at `SHARE_FLOOR`.
A common reading: < 0.1 stable, 0.1-0.2 moderate shift, > 0.2 a shift worth a look.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

DRIFT_BINS = 10
#: Empty bins count as this share, so that PSI stays finite.
SHARE_FLOOR = 1e-4
DRIFT_COLUMNS = ["feature", "psi", "bins", "reference_rows", "rows"]


def bin_shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Share of `values` in each bin cut by the inner `edges` (len(edges) + 1 bins, a value on an
    edge goes right), then the share of missing (non-finite) values: shape (len(edges) + 2,)."""
    values = np.asarray(values, dtype=float)
    finite = np.isfinite(values)
    counts = np.bincount(np.searchsorted(edges, values[finite], side="right"), minlength=len(edges) + 1)
    counts = np.append(counts, (~finite).sum()).astype(float)
    return counts / max(counts.sum(), 1.0)


def psi(expected: np.ndarray, actual: np.ndarray, floor: float = SHARE_FLOOR) -> float:
    """Population stability index of `actual` bin shares against `expected` ones (same bins)."""
    e = np.clip(np.asarray(expected, dtype=float), floor, None)
    a = np.clip(np.asarray(actual, dtype=float), floor, None)
    return float(np.sum((a - e) * np.log(a / e)))


def distribution_profile(columns: Mapping[str, np.ndarray], bins: int = DRIFT_BINS) -> dict[str, dict[str, Any]]:
    """Per column: the inner edges of its `bins` quantile bins (ties merged), the share of rows in
    each bin (`bin_shares`) and its row count; columns with no finite value are left out."""
    profile = {}
    for name, values in columns.items():
        values = np.asarray(values, dtype=float)
        finite = values[np.isfinite(values)]
        if not len(finite):
            continue
        edges = np.unique(np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1]))
        profile[name] = {"edges": edges.tolist(), "shares": bin_shares(values, edges).tolist(), "rows": int(len(values))}
    return profile


def drift_table(reference: Mapping[str, Mapping[str, Any]], columns: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """PSI of each column of `columns` that `reference` (a previous `distribution_profile`) has,
    in the reference's bins; rows sorted by PSI, largest first (`DRIFT_COLUMNS`)."""
    rows = []
    for name, ref in reference.items():
        if name not in columns:
            continue
        values = np.asarray(columns[name], dtype=float)
        shares = bin_shares(values, np.asarray(ref["edges"], dtype=float))
        rows.append({"feature": name, "psi": psi(np.asarray(ref["shares"]), shares), "bins": len(shares),
                     "reference_rows": int(ref["rows"]), "rows": int(len(values))})
    table = pd.DataFrame(rows, columns=DRIFT_COLUMNS)
    return table.sort_values("psi", ascending=False, kind="stable").reset_index(drop=True)


def drifted(table: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """The rows of a `drift_table` whose PSI is above `threshold`."""
    return table[table["psi"] > threshold].reset_index(drop=True)
