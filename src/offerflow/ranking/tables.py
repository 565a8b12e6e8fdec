"""Ranking methods and top-k tables: eligibility, priority, formulas, and the per-profile ranking.

Every ranking method is a function from a chunk of profiles and the placement's offers to a score
matrix of shape (n_profiles, n_offers) (`ScoreFn`); `rank_profiles` applies eligibility, keeps the
top k per profile and emits rows of `schema.RANKING_SCHEMA`. Profiles are processed in chunks so
memory is bounded by the chunk size, not by the number of profiles.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from offerflow.core.columns import Table, column_names, column_values, row_count
from offerflow.core.schema import PROFILE_ID
from offerflow.rules.expressions import Expression, parse_expression, schema_from_frames

if TYPE_CHECKING:
    import pandas as pd

ScoreFn = Callable[["pd.DataFrame", "pd.DataFrame"], np.ndarray]


def rule_columns(profiles: Table | None = None, offers: Table | None = None,
                 n_profiles: int | None = None) -> dict[str, np.ndarray]:
    """Columns for `Expression.evaluate_batch` over all profile x offer pairs (profile-major).
    The tables: DataFrames, pyarrow Tables or row dicts (`offerflow.core.columns`)."""
    columns: dict[str, np.ndarray] = {}
    m = 1 if offers is None else row_count(offers)
    n = n_profiles if profiles is None else row_count(profiles)
    if profiles is not None:
        for c in column_names(profiles):
            columns[f"profile.{c}"] = np.repeat(column_values(profiles, c), m)
    if offers is not None:
        for c in column_names(offers):
            if c not in ("placements",):
                columns[f"offer.{c}"] = np.tile(column_values(offers, c), n)
    return columns


def compile_rules(offers: Table, schema: Mapping[str, str]) -> list[Expression | None]:
    """Parse every offer's eligibility rule once (None = always eligible)."""
    return [parse_expression(rule, schema, kind="rule", source=f"offer {oid!r} eligibility")
            if isinstance(rule, str) else None
            for oid, rule in zip(column_values(offers, "offer_id"), column_values(offers, "eligibility"))]


def eligibility_matrix(profiles: Table, offers: Table, rules: list[Expression | None] | None = None) -> np.ndarray:
    """Which offers each profile may see, shape (n_profiles, n_offers). The tables: DataFrames,
    pyarrow Tables or row dicts (`offerflow.core.columns`)."""
    if rules is None:
        rules = compile_rules(offers, schema_from_frames(profiles=profiles, offers=offers))
    read = {name for rule in rules if rule is not None for name in rule.names}
    n = row_count(profiles)
    columns = {f"profile.{c}": column_values(profiles, c) for c in column_names(profiles) if f"profile.{c}" in read}
    offer_columns = {c: column_values(offers, c) for c in column_names(offers) if f"offer.{c}" in read}
    out = np.ones((n, row_count(offers)), dtype=bool)
    for j, rule in enumerate(rules):
        if rule is not None:
            values: dict[str, Any] = dict(columns)
            values.update({f"offer.{c}": np.full(n, column[j], dtype=object)
                           for c, column in offer_columns.items() if f"offer.{c}" in rule.names})
            out[:, j] = rule.evaluate_batch(values, n_rows=n)
    return out


def top_k(scores: np.ndarray, eligible: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best k eligible offers per row: (row index, offer index, score) flattened, rank order."""
    masked = np.where(eligible, scores, -np.inf)
    k = min(k, masked.shape[1])
    if k == 0:  # no candidate offers (a placement with only its fallback): nothing to rank
        empty = np.empty(0, dtype=np.int64)
        return empty, empty, np.empty(0, dtype=float)
    part = np.argpartition(-masked, k - 1, axis=1)[:, :k] if k < masked.shape[1] else \
        np.tile(np.arange(masked.shape[1]), (masked.shape[0], 1))
    part_scores = np.take_along_axis(masked, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    idx = np.take_along_axis(part, order, axis=1)
    best = np.take_along_axis(part_scores, order, axis=1)
    rows = np.repeat(np.arange(masked.shape[0]), k).reshape(-1, k)
    keep = np.isfinite(best)
    return rows[keep], idx[keep], best[keep]


def rank_profiles(profiles: pd.DataFrame, offers: pd.DataFrame, score_fn: ScoreFn, k: int,
                  chunk_profiles: int = 50_000) -> Iterator[pd.DataFrame]:
    """Ranking-table rows (profile_id, rank, offer_id, score) chunk by chunk."""
    import pandas as pd

    rules = compile_rules(offers, schema_from_frames(profiles=profiles, offers=offers))
    offer_ids = offers["offer_id"].to_numpy(dtype=object)
    for start in range(0, len(profiles), chunk_profiles):
        chunk = profiles.iloc[start:start + chunk_profiles].reset_index(drop=True)
        eligible = eligibility_matrix(chunk, offers, rules)
        rows, idx, best = top_k(score_fn(chunk, offers), eligible, k)
        ranks = (np.arange(len(rows)) - np.searchsorted(rows, rows)).astype(np.int16) + 1
        yield pd.DataFrame({PROFILE_ID: chunk[PROFILE_ID].to_numpy(dtype=object)[rows], "rank": ranks,
                            "offer_id": offer_ids[idx], "score": best.astype(float)})


def priority_scores(profiles: pd.DataFrame, offers: pd.DataFrame) -> np.ndarray:
    return np.broadcast_to(offers["priority"].to_numpy(float), (len(profiles), len(offers)))


#: The name a ranking formula uses for the score of the placement's personalized AI model.
AI_SCORE = "ai_score"


def formula_scorer(formula: str, schema: Mapping[str, str], ai_scores: ScoreFn | None = None) -> ScoreFn:
    """A score function from a ranking formula over `profile.*` and `offer.*` names, and
    `ai_score` (the personalized model's score for the pair) when `ai_scores` is given, e.g.
    ``ai_score * (1 + profile.propensity.purchase_14d.probability)``."""
    if ai_scores is not None:
        schema = {**schema, AI_SCORE: "number"}
    expression = parse_expression(formula, schema, kind="formula", source="ranking formula")
    uses_ai = ai_scores is not None and AI_SCORE in expression.names

    def score(profiles: pd.DataFrame, offers: pd.DataFrame) -> np.ndarray:
        columns = rule_columns(profiles, offers)
        if uses_ai:
            columns[AI_SCORE] = ai_scores(profiles, offers).ravel()
        values = expression.evaluate_batch(columns)
        return np.nan_to_num(values.reshape(len(profiles), len(offers)), nan=-np.inf)

    return score
