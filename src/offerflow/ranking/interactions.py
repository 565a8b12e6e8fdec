"""A pairwise-interaction base for the personalized click model: a Poly2-style logistic regression
over one-hot profile levels crossed with one-hot offer levels, whose logit LightGBM starts from.

Gradient-boosted trees find a pairwise profile x offer interaction only by splitting on both
attributes in the same tree, and with weak signal (a 2% click rate) they rarely do: on
bench/external_world.py (clicks driven by region x category, income x price, age x category...)
trees alone stop at about 90% of the oracle's click rate. A logistic regression on every
(profile level, offer level) pair represents those interactions directly; the trees then fit what
it leaves (`init_score`), and a prediction is sigmoid(base logit + trees' raw score).

Levels: each categorical column's training-time categories plus one for unknown/missing; each
numeric column cut into quantile bins of the training rows plus one for missing. Profile columns
are the `p_` ones; the others (`offer_id`, `o_<attribute>`) are the offer's. The columns of the
design are: the intercept, one per entry of each side (main effects) and one per (profile entry,
offer entry), the offer id left out of the crosses (`UNCROSSED`).

Numeric columns also enter as one standardized value (signed log1p, then z-score) per side, so
that a slope (age x category, income x price) costs one weight per level it meets rather than one
per pair of bins. Scoring a profile x offer block needs no cross-joined rows: with the sparse side
matrices Xp (profiles x profile entries) and Xo (offers x offer entries), the logit is
``intercept + Xp main_p + (Xo main_o)^T + Xp W Xo^T``, a sparse product.

Regularisation: one L2 strength for every weight spends the same prior on blocks that carry the
clicks (region x category) as on the many that carry nothing (device x price), and with a few
thousand clicks the noise of the empty blocks cost about 3 points of the oracle's click rate on
bench/external_world.py. So the L2 is per block and learnt: after a first fit, each block's prior
scale is the root mean square of its weights (automatic relevance determination, a few rounds),
the round and the overall strength are chosen by validation log-loss, and the chosen model is
fitted once more on the training and validation rows (`fit_interaction_base`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

#: Quantile bins per numeric column (besides its slope).
NUMERIC_BINS = 1
#: Columns left out of the crosses (main effect only).
UNCROSSED = ("offer_id",)
#: Inverse L2 strengths tried; the one with the lowest weighted log-loss on the validation rows wins.
C_GRID = (0.03, 0.1, 0.3, 1.0)
#: Rounds of per-block L2 scales after the first fit (`fit_interaction_base`); 0: one L2 for all weights.
RELEVANCE_ROUNDS = 3
#: Floor of a block's prior scale relative to the overall one (a block is shrunk, never removed).
MIN_BLOCK_SCALE = 1e-3


@dataclass(frozen=True)
class InteractionBase:
    """The fitted base. `columns` are click-model feature columns (in `feature_matrix` encoding:
    categorical codes, NaN when unknown), `levels[j]` how many levels column j has (missing
    included), `edges` the inner bin edges and `scales` the (mean, sd) of signed log1p of the
    numeric columns. Each side (profile, offer) is a vector: its columns' one-hot levels, then
    one standardized value per numeric column (a slope). `main` has one weight per entry of the
    profile vector then of the offer vector, `cross` shape (profile width, offer width)."""

    columns: list[str]
    profile_side: list[bool]
    levels: list[int]
    edges: dict[str, list[float]]
    scales: dict[str, list[float]]
    intercept: float
    main: np.ndarray
    cross: np.ndarray
    c: float = 1.0

    def _side(self, profile: bool) -> list[int]:
        return [j for j, p in enumerate(self.profile_side) if p == profile]

    def width(self, profile: bool) -> int:
        """Entries of a side's vector: its levels plus one per numeric column."""
        which = self._side(profile)
        return int(sum(self.levels[j] for j in which) + sum(self.columns[j] in self.edges for j in which))

    def _entries(self, matrix: np.ndarray, positions: list[int], profile: bool) -> tuple[np.ndarray, np.ndarray]:
        """The side's vector per row as (indices, values), each shape (n, columns + numeric columns);
        `positions[k]` is where the side's k-th column is in `matrix`."""
        which = self._side(profile)
        idx, val, offset = [], [], 0
        for j, pos in zip(which, positions):
            x = matrix[:, pos]
            missing = np.isnan(x)
            column = self.columns[j]
            if column in self.edges:
                level = np.searchsorted(np.asarray(self.edges[column]), x, side="right")
            else:
                level = np.where(missing, 0, x).astype(np.int64)
            idx.append(offset + np.where(missing, self.levels[j] - 1, level))
            val.append(np.ones(len(x)))
            offset += self.levels[j]
        for j, pos in zip(which, positions):
            if self.columns[j] in self.scales:
                idx.append(np.full(len(matrix), offset))
                val.append(standardized(matrix[:, pos], *self.scales[self.columns[j]]))
                offset += 1
        return np.stack(idx, axis=1).astype(np.int64), np.stack(val, axis=1)

    def _sides(self, matrix: np.ndarray, feature_columns: list[str]) -> tuple[tuple, tuple]:
        return tuple(self._entries(matrix, [feature_columns.index(self.columns[j]) for j in self._side(side)], side)
                     for side in (True, False))

    def logit_rows(self, matrix: np.ndarray, feature_columns: list[str]) -> np.ndarray:
        """Base logit per row of a feature matrix with the click model's `feature_columns`, shape (n,)."""
        (pi, pv), (oi, ov) = self._sides(matrix, feature_columns)
        cross = (self.cross[pi[:, :, None], oi[:, None, :]] * pv[:, :, None] * ov[:, None, :]).sum(axis=(1, 2))
        main_o = self.main[self.width(True) + oi]
        return self.intercept + (self.main[pi] * pv).sum(axis=1) + (main_o * ov).sum(axis=1) + cross

    def logit_matrix(self, profile_block: np.ndarray, profile_columns: list[str], offer_block: np.ndarray,
                     offer_columns: list[str]) -> np.ndarray:
        """Base logit of every profile x offer pair, shape (n_profiles, n_offers), from the profile
        and offer feature matrices (columns named by `profile_columns` / `offer_columns`)."""
        p = self._entries(profile_block, [profile_columns.index(self.columns[j]) for j in self._side(True)], True)
        o = self._entries(offer_block, [offer_columns.index(self.columns[j]) for j in self._side(False)], False)
        wp = self.width(True)
        xp, xo = _sparse(*p, wp), _sparse(*o, self.width(False))
        per_offer = (xo @ self.cross.T).T  # (profile width, offers)
        main_p, main_o = xp @ self.main[:wp], xo @ self.main[wp:]
        return self.intercept + main_p[:, None] + main_o[None, :] + np.asarray(xp @ per_offer)

    def design(self, matrix: np.ndarray, feature_columns: list[str], cross_scale: float = 1.0,
               uncrossed: tuple[str, ...] = ()) -> Any:
        """The sparse design: both sides' vectors, then every profile entry x offer entry (times
        `cross_scale`; none for the `uncrossed` columns), shape (n, wp + wo + wp * wo) for side
        widths wp and wo."""
        from scipy import sparse

        (pi, pv), (oi, ov) = self._sides(matrix, feature_columns)
        wp, wo = self.width(True), self.width(False)
        n = len(matrix)
        keep_p, keep_o = (self._crossed(side, uncrossed) for side in (True, False))
        crosses = (pi[:, keep_p, None] * wo + oi[:, None, keep_o]).reshape(n, -1)
        indices = np.concatenate([pi, wp + oi, wp + wo + crosses], axis=1)
        products = cross_scale * (pv[:, keep_p, None] * ov[:, None, keep_o]).reshape(n, -1)
        values = np.concatenate([pv, ov, products], axis=1)
        k = indices.shape[1]
        return sparse.csr_matrix((values.ravel(), indices.ravel(), np.arange(0, n * k + 1, k)),
                                 shape=(n, wp + wo + wp * wo))

    def _crossed(self, profile: bool, uncrossed: tuple[str, ...]) -> np.ndarray:
        """Which entries of a side's (indices, values) take part in crosses (see `_entries`)."""
        which = self._side(profile)
        levels = [self.columns[j] not in uncrossed for j in which]
        slopes = [self.columns[j] not in uncrossed for j in which if self.columns[j] in self.scales]
        return np.asarray(levels + slopes, dtype=bool)

    def _owners(self, profile: bool) -> list[str]:
        """Which column each entry of a side's vector belongs to (a numeric column's slope apart)."""
        which = self._side(profile)
        owners = [self.columns[j] for j in which for _ in range(self.levels[j])]
        return owners + [f"{self.columns[j]} (slope)" for j in which if self.columns[j] in self.scales]

    def design_blocks(self) -> np.ndarray:
        """A block id per column of `design`, shape (wp + wo + wp * wo,): one block per side entry's
        column (main effects) and one per (profile column, offer column) pair of crosses."""
        po, oo = self._owners(True), self._owners(False)
        names = po + oo + [f"{a} x {b}" for a in po for b in oo]
        return pd.factorize(pd.Series(names))[0]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (what `feature_spec.json` stores)."""
        return {"columns": self.columns, "profile_side": self.profile_side, "levels": self.levels,
                "edges": self.edges, "scales": self.scales, "intercept": self.intercept,
                "main": self.main.tolist(), "cross": self.cross.tolist(), "c": self.c}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> InteractionBase | None:
        if not data:
            return None
        layout = cls(list(data["columns"]), [bool(s) for s in data["profile_side"]], [int(v) for v in data["levels"]],
                     {k: [float(e) for e in v] for k, v in data["edges"].items()},
                     {k: [float(e) for e in v] for k, v in data["scales"].items()}, float(data["intercept"]),
                     np.asarray(data["main"], dtype=float), np.zeros((0, 0)), float(data.get("c", 1.0)))
        cross = np.asarray(data["cross"], dtype=float).reshape(layout.width(True), layout.width(False))
        return replace(layout, cross=cross)


def standardized(x: np.ndarray, mean: float, sd: float) -> np.ndarray:
    """(signed log1p(x) - mean) / sd, clipped to [-4, 4]; 0 where x is missing."""
    z = (np.sign(x) * np.log1p(np.abs(x)) - mean) / sd
    return np.where(np.isnan(z), 0.0, np.clip(z, -4.0, 4.0))


def _sparse(indices: np.ndarray, values: np.ndarray, width: int) -> Any:
    from scipy import sparse

    n, k = indices.shape
    return sparse.csr_matrix((values.ravel(), indices.ravel(), np.arange(0, n * k + 1, k)), shape=(n, width))


def base_layout(matrix: np.ndarray, feature_columns: list[str], categories: dict[str, list[str]],
                bins: int = NUMERIC_BINS) -> InteractionBase:
    """An unfitted base (zero weights) for the columns: categorical levels from `categories`,
    numeric bins and scales from the quantiles and moments of `matrix` (the training rows)."""
    levels, edges, scales = [], {}, {}
    for j, column in enumerate(feature_columns):
        if column in categories:
            levels.append(len(categories[column]) + 1)
            continue
        x = matrix[:, j][np.isfinite(matrix[:, j])]
        inner = np.unique(np.quantile(x, np.linspace(0, 1, bins + 1)[1:-1])) if len(x) else np.array([])
        edges[column] = [float(e) for e in inner]
        levels.append(len(inner) + 2)  # bins, plus missing
        logged = np.sign(x) * np.log1p(np.abs(x))
        scales[column] = [float(logged.mean()) if len(x) else 0.0, float(logged.std()) if len(x) and logged.std() > 0 else 1.0]
    side = [c.startswith("p_") for c in feature_columns]
    layout = InteractionBase(list(feature_columns), side, levels, edges, scales, 0.0, np.zeros(0), np.zeros((0, 0)))
    wp, wo = layout.width(True), layout.width(False)
    return replace(layout, main=np.zeros(wp + wo), cross=np.zeros((wp, wo)))


def fit_interaction_base(matrix: np.ndarray, feature_columns: list[str], categories: dict[str, list[str]],
                         y: np.ndarray, weights: np.ndarray, cut_train: int, cut_valid: int,
                         grid: tuple[float, ...] = C_GRID, seed: int = 0, cross_scale: float = 1.0,
                         uncrossed: tuple[str, ...] = UNCROSSED, bins: int = NUMERIC_BINS,
                         relevance_rounds: int = RELEVANCE_ROUNDS, refit: bool = True) -> InteractionBase | None:
    """The base fitted on rows [0, cut_train) with its L2 strengths chosen on [cut_train, cut_valid)
    (weighted log-loss); None when the columns hold no profile x offer pair or a class is missing.

    Round 0 fits one L2 strength for every weight (the best of `grid`). Each of the
    `relevance_rounds` after it rescales every block of weights (`design_blocks`: one column's main
    effects, or one profile column x one offer column's crosses) by the root mean square of that
    block's weights in the round before (a per-block prior scale, as in automatic relevance
    determination), so blocks the data finds weak are shrunk harder and strong ones less, and
    refits over `grid`. The round and strength with the lowest validation loss win; with `refit`,
    the base is then fitted again with them on rows [0, cut_valid), train and validation rows
    (`BaseChoice.refit`).

    Args:
        matrix: shape (n_rows, n_features), `feature_matrix` of the click model's training frame.
        y: 0/1 successes, shape (n_rows,); weights: training weight per row (`display_weights`).
    """
    choice = choose_interaction_base(matrix, feature_columns, categories, y, weights, cut_train, cut_valid, grid,
                                     seed, cross_scale, uncrossed, bins, relevance_rounds)
    if choice is None:
        return None
    return choice.refit(matrix, feature_columns, y, weights, cut_valid) if refit and cut_valid > cut_train else choice.base


@dataclass(frozen=True)
class BaseChoice:
    """The base chosen on the validation rows (`base`, fitted on the training rows only) and what
    refitting it on more rows needs: its per-column prior scale and design settings."""

    base: InteractionBase
    scale: np.ndarray
    cross_scale: float
    uncrossed: tuple[str, ...]
    seed: int

    def refit(self, matrix: np.ndarray, feature_columns: list[str], y: np.ndarray, weights: np.ndarray,
              rows: int) -> InteractionBase:
        """The same base (strength, block scales, levels) fitted on rows [0, rows)."""
        base = self.base
        design = base.design(matrix, feature_columns, self.cross_scale, self.uncrossed).tocsc()
        _, c, intercept, coef = _fit_over_grid(design, self.scale, y, weights, rows, rows, (base.c,), self.seed)
        return _with_weights(base, intercept, coef, self.cross_scale, c)


def choose_interaction_base(matrix: np.ndarray, feature_columns: list[str], categories: dict[str, list[str]],
                            y: np.ndarray, weights: np.ndarray, cut_train: int, cut_valid: int,
                            grid: tuple[float, ...] = C_GRID, seed: int = 0, cross_scale: float = 1.0,
                            uncrossed: tuple[str, ...] = UNCROSSED, bins: int = NUMERIC_BINS,
                            relevance_rounds: int = RELEVANCE_ROUNDS) -> BaseChoice | None:
    """`fit_interaction_base` without the refit: the rounds and strengths, the winner fitted on the
    training rows only (so the validation rows still tell how well it does), and its scales."""
    layout = base_layout(matrix[:cut_train], feature_columns, categories, bins)
    if not (any(layout.profile_side) and not all(layout.profile_side)) or len(np.unique(y[:cut_train])) < 2:
        return None
    design = layout.design(matrix, feature_columns, cross_scale, uncrossed).tocsc()
    blocks = layout.design_blocks()
    used = np.asarray(design.getnnz(axis=0) > 0)
    scale, best = np.ones(design.shape[1]), None
    for _ in range(relevance_rounds + 1):
        fitted = _fit_over_grid(design, scale, y, weights, cut_train, cut_valid, grid, seed)
        if best is None or fitted[0] < best[0]:
            best = (*fitted, scale)
        if fitted[0] == 0.0:  # no validation rows to choose on: round 0 only
            break
        scale = block_scale(fitted[3], blocks, used)
    _, c, intercept, coef, scale = best
    return BaseChoice(_with_weights(layout, intercept, coef, cross_scale, c), scale, cross_scale, uncrossed, seed)


def _with_weights(layout: InteractionBase, intercept: float, coef: np.ndarray, cross_scale: float,
                  c: float) -> InteractionBase:
    """The layout with fitted weights: `coef` in the design's order (both sides' main effects, then
    the crosses, which the design multiplied by `cross_scale`)."""
    wp, wo = layout.width(True), layout.width(False)
    return replace(layout, intercept=intercept, main=coef[: wp + wo], cross=cross_scale * coef[wp + wo:].reshape(wp, wo), c=c)


def _fit_over_grid(design: Any, scale: np.ndarray, y: np.ndarray, weights: np.ndarray, cut_train: int,
                   cut_valid: int, grid: tuple[float, ...], seed: int) -> tuple[float, float, float, np.ndarray]:
    """(validation loss, C, intercept, weights in the design's units) of the best C of `grid` for
    the design with its columns multiplied by `scale` (an L2 of 1 / (2 C scale^2) per weight)."""
    from scipy import sparse
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss

    scaled = (design @ sparse.diags(scale)).tocsr()
    train, valid = slice(0, cut_train), slice(cut_train, cut_valid)
    scored = cut_valid > cut_train and len(np.unique(y[valid])) == 2
    # Warm-started from the previous, more regularised fit: each step of the grid costs a few iterations.
    model = LogisticRegression(max_iter=300, warm_start=True, random_state=seed)
    best: tuple[float, float, float, np.ndarray] | None = None
    for c in sorted(grid):
        model.set_params(C=c)
        model.fit(scaled[train], y[train], sample_weight=weights[train])
        loss = (log_loss(y[valid], model.predict_proba(scaled[valid])[:, 1], sample_weight=weights[valid])
                if scored else 0.0)
        if best is None or loss < best[0]:
            best = (loss, c, float(model.intercept_[0]), model.coef_.ravel() * scale)
        if not scored:
            break
    return best


def block_scale(coef: np.ndarray, blocks: np.ndarray, used: np.ndarray) -> np.ndarray:
    """Per design column, the root mean square of its block's weights (`used` columns only) over that
    of all used weights: the prior scale each weight gets in the next relevance round, shape (width,)."""
    counts = np.bincount(blocks, weights=used.astype(float))
    rms = np.sqrt(np.bincount(blocks, weights=np.where(used, coef ** 2, 0.0)) / np.maximum(counts, 1.0))
    overall = np.sqrt(np.sum(np.where(used, coef ** 2, 0.0)) / max(int(used.sum()), 1))
    return np.maximum(rms[blocks] / max(overall, 1e-12), MIN_BLOCK_SCALE)
