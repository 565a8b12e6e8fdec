"""Exact per-row SHAP contributions of a LightGBM model, computed once per distinct tree path.

Path-dependent TreeSHAP (what LightGBM's `pred_contrib` computes) sees a row only through the
decisions it would take at every split of a tree: two rows that fall on the same side of every
threshold of a tree get the same contributions from that tree. So, tree by tree, rows are grouped
by the interval each used feature falls in between that tree's thresholds (categorical features:
by category; missing values in a group of their own), LightGBM computes the contributions of that
single tree for one representative row per group, and the rows get their group's values. A tree
with 31 leaves splits a million profiles into a few hundred groups, so almost all of the cost of
TreeSHAP goes away and what is left is NumPy gathers. The result equals plain `pred_contrib` up to
float rounding in the order trees are summed (tested).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Above this many possible groups, group with np.unique instead of a direct lookup table.
_LOOKUP_LIMIT = 1 << 24


@dataclass(frozen=True)
class TreeSplits:
    """The split points one tree uses, per feature index."""

    numeric: dict[int, np.ndarray]  # feature -> sorted distinct thresholds
    categorical: tuple[int, ...]  # features split by category sets
    zero_is_missing: frozenset[int]  # features whose splits treat 0 as missing


def tree_splits(booster) -> list[TreeSplits]:
    """Every tree's thresholds, from `Booster.dump_model()` (one tree per iteration: binary)."""
    trees = []
    for info in booster.dump_model()["tree_info"]:
        numeric: dict[int, set[float]] = {}
        categorical: set[int] = set()
        zero: set[int] = set()
        stack = [info["tree_structure"]]
        while stack:
            node = stack.pop()
            if "split_feature" not in node:
                continue
            feature = int(node["split_feature"])
            if node["decision_type"] == "==":
                categorical.add(feature)
            else:
                numeric.setdefault(feature, set()).add(float(node["threshold"]))
                if node.get("missing_type") == "Zero":
                    zero.add(feature)
            stack += [node["left_child"], node["right_child"]]
        trees.append(TreeSplits({f: np.array(sorted(t)) for f, t in numeric.items()},
                                tuple(sorted(categorical)), frozenset(zero)))
    return trees


class _Binned:
    """Each feature's interval between all of the model's thresholds on it, computed once.

    Column f of `bins` holds 0..m_f (interval between the m_f sorted model-wide thresholds),
    m_f + 1 for missing and m_f + 2 for exact zero; a categorical column holds its code + 1
    (0 = missing). A tree's own grouping is then a small lookup per feature instead of a search.
    """

    def __init__(self, X: np.ndarray, trees: list[TreeSplits]) -> None:
        self.thresholds: dict[int, np.ndarray] = {}
        numeric = {f for t in trees for f in t.numeric}
        categorical = {f for t in trees for f in t.categorical}
        self.bins = np.zeros((len(X), X.shape[1]), dtype=np.int32, order="F")
        for f in numeric:
            every = np.unique(np.concatenate([t.numeric[f] for t in trees if f in t.numeric]))
            column = X[:, f]
            part = np.searchsorted(every, column, side="left").astype(np.int32)
            part[np.isnan(column)] = len(every) + 1
            part[column == 0] = len(every) + 2
            self.bins[:, f] = part
            self.thresholds[f] = every
        self.category_radix: dict[int, int] = {}
        for f in categorical:
            column = X[:, f]
            finite = column[~np.isnan(column)]
            if len(finite) and (finite.min() < 0 or np.any(finite != np.floor(finite))):
                raise ValueError(f"feature {f}: categorical codes must be non-negative integers")
            self.bins[:, f] = np.where(np.isnan(column), 0, column + 1).astype(np.int32)
            self.category_radix[f] = int(finite.max()) + 2 if len(finite) else 1

    def tree_lookup(self, feature: int, splits: TreeSplits) -> np.ndarray:
        """Model-wide bin -> this tree's group part (0 missing, 1 zero-as-missing, 2.. interval)."""
        every, mine = self.thresholds[feature], splits.numeric[feature]
        upper = np.concatenate([[-np.inf], every])  # bin b holds values in (every[b-1], every[b]]
        lookup = np.empty(len(every) + 3, dtype=np.int64)
        lookup[: len(every) + 1] = np.searchsorted(mine, upper, side="right") + 2
        lookup[len(every) + 1] = 0
        lookup[len(every) + 2] = 1 if feature in splits.zero_is_missing else np.searchsorted(mine, 0.0) + 2
        return lookup

    def group_codes(self, splits: TreeSplits, rows: slice) -> tuple[np.ndarray, int]:
        """A group code per row (same code = same decisions in this tree) and the number of codes."""
        code = np.zeros(rows.stop - rows.start, dtype=np.int64)
        size = 1
        for feature in splits.numeric:
            lookup = self.tree_lookup(feature, splits)
            code = code * (len(splits.numeric[feature]) + 3) + lookup[self.bins[rows, feature]]
            size *= len(splits.numeric[feature]) + 3
        for feature in splits.categorical:
            code = code * self.category_radix[feature] + self.bins[rows, feature]
            size *= self.category_radix[feature]
        return code, size


def _groups(code: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(one representative row per group, group index of every row)."""
    if size <= _LOOKUP_LIMIT:
        seen = np.zeros(size, dtype=np.int64)
        seen[code] = 1
        present = np.flatnonzero(seen)
        seen[present] = np.arange(len(present))
        inverse = seen[code]
    else:
        _, inverse = np.unique(code, return_inverse=True)
    representative = np.empty(int(inverse.max()) + 1 if len(inverse) else 0, dtype=np.int64)
    representative[inverse] = np.arange(len(code))
    return representative, inverse


def grouped_contributions(booster, X: np.ndarray, n_trees: int | None = None,
                          chunk_rows: int = 1 << 19) -> np.ndarray:
    """The same array as `booster.predict(X, num_iteration=n_trees, pred_contrib=True)`.

    Args:
        booster: a binary `lightgbm.Booster`.
        X: array, shape (n_rows, n_features), float64; categoricals as training-time codes.
        n_trees: trees to use (default: all).
        chunk_rows: rows grouped at a time (keeps the working set in cache).
    Returns:
        array, shape (n_rows, n_features + 1): SHAP values in log-odds, last column the base value.
    """
    X = np.ascontiguousarray(X, dtype=np.float64)
    trees = tree_splits(booster)[: n_trees or None]
    binned = _Binned(X, trees)
    out = np.zeros((len(X), X.shape[1] + 1))
    for start in range(0, len(X), chunk_rows):
        rows = slice(start, min(start + chunk_rows, len(X)))
        block = np.zeros((rows.stop - rows.start, X.shape[1] + 1), order="F")
        for t, splits in enumerate(trees):
            code, size = binned.group_codes(splits, rows)
            representative, inverse = _groups(code, size)
            per_group = booster.predict(X[rows][representative], start_iteration=t, num_iteration=1,
                                        pred_contrib=True)
            # Only the features this tree splits on (and the base) get a non-zero contribution.
            for f in (*splits.numeric, *splits.categorical, X.shape[1]):
                block[:, f] += per_group[inverse, f]
        out[rows] = block
    return out
