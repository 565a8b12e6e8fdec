"""Evaluating models: classification quality on a holdout (AUC, log loss, Brier, PR-AUC, Gini)."""

from __future__ import annotations

import numpy as np


def classification_metrics(y_true: np.ndarray, probability: np.ndarray) -> dict[str, float]:
    """Holdout metrics of predicted probabilities against 0/1 outcomes.

    Args:
        y_true: array-like, shape (n,), 0/1 outcomes.
        probability: array-like, shape (n,), predicted probability of outcome 1.
    Returns:
        auc, gini (2*auc-1), pr_auc, log_loss, brier, base_rate, n.
    """
    from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

    y = np.asarray(y_true).astype(int)
    p = np.clip(np.asarray(probability, dtype=float), 1e-7, 1 - 1e-7)
    both_classes = 0 < y.sum() < len(y)
    auc = float(roc_auc_score(y, p)) if both_classes else float("nan")
    return {
        "auc": auc,
        "gini": 2 * auc - 1,
        "pr_auc": float(average_precision_score(y, p)) if both_classes else float("nan"),
        "log_loss": float(log_loss(y, p, labels=[0, 1])),
        "brier": float(brier_score_loss(y, p)),
        "base_rate": float(y.mean()) if len(y) else float("nan"),
        "n": float(len(y)),
    }
