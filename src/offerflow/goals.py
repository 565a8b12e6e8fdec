"""Propensity goals: which profiles are eligible at a cut-off, and who reached the goal after it.

A goal is a set of conditions on event fields (`event_type == purchase`, `value > 20`, ...)
combined with all-of / any-of, that "will occur" (conversion) or "will not occur" (churn) within
the outcome window after the cut-off. Conditions become a parameterised DuckDB predicate: field
names are checked against the event columns and values are bound, never pasted into SQL.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta
from typing import Any

import duckdb
import pandas as pd

from offerflow.config import GoalCondition, GoalDefinition, PropensityGoalConfig
from offerflow.features import EVENTS_VIEW, query_frame, sql_timestamp

_SQL_OPERATORS = {"==": "=", "!=": "<>", ">": ">", ">=": ">=", "<": "<", "<=": "<="}


class GoalError(ValueError):
    """A goal that cannot be evaluated on the data (unknown field, too few examples)."""


def _condition_sql(condition: GoalCondition, columns: Collection[str], where: str) -> tuple[str, list[Any]]:
    if condition.field not in columns:
        raise GoalError(f"{where}: unknown event field {condition.field!r}"
                        f" (fields: {', '.join(sorted(columns))})")
    column = f'"{condition.field}"'
    if condition.operator in ("in", "not_in"):
        values = condition.value if isinstance(condition.value, list) else [condition.value]
        marks = ", ".join("?" for _ in values)
        negate = "NOT " if condition.operator == "not_in" else ""
        return f"{column} {negate}IN ({marks})", list(values)
    return f"{column} {_SQL_OPERATORS[condition.operator]} ?", [condition.value]


def goal_predicate(goal: GoalDefinition, columns: Collection[str], where: str = "goal") -> tuple[str, list[Any]]:
    """The SQL predicate an event must satisfy to count towards the goal, with its parameters."""
    clauses: list[str] = []
    params: list[Any] = []
    if goal.all_of:
        parts = [_condition_sql(c, columns, f"{where}.all_of[{i}]") for i, c in enumerate(goal.all_of)]
        clauses.append("(" + " AND ".join(p for p, _ in parts) + ")")
        params += [v for _, values in parts for v in values]
    if goal.any_of:
        parts = [_condition_sql(c, columns, f"{where}.any_of[{i}]") for i, c in enumerate(goal.any_of)]
        clauses.append("(" + " OR ".join(p for p, _ in parts) + ")")
        params += [v for _, values in parts for v in values]
    return " AND ".join(clauses), params


def label_goal(con: duckdb.DuckDBPyConnection, goal: PropensityGoalConfig, cutoff: datetime) -> pd.DataFrame:
    """Eligible profiles at `cutoff` with their label (1 = the goal happened as defined).

    Eligible: any event in the `eligible_active_within_days` before the cut-off. Label: an event
    satisfying the goal in [cutoff, cutoff + outcome window); inverted for "will not occur".
    Returns columns `profile_id`, `label` (int8), sorted by profile_id.
    """
    columns = [r[0] for r in con.execute(f"DESCRIBE {EVENTS_VIEW}").fetchall()]
    predicate, params = goal_predicate(goal.goal, columns, where=f"propensity_goals[{goal.name}].goal")
    start = cutoff - timedelta(days=goal.eligible_active_within_days)
    end = cutoff + timedelta(days=goal.outcome_window_days)
    sql = f"""
        WITH eligible AS (
            SELECT DISTINCT profile_id FROM {EVENTS_VIEW} WHERE timestamp >= ? AND timestamp < ?),
        reached AS (
            SELECT DISTINCT profile_id FROM {EVENTS_VIEW}
            WHERE timestamp >= ? AND timestamp < ? AND {predicate})
        SELECT e.profile_id, (r.profile_id IS NOT NULL)::TINYINT AS label
        FROM eligible e LEFT JOIN reached r USING (profile_id) ORDER BY e.profile_id"""
    try:
        labels = query_frame(con, sql, [start, cutoff, cutoff, end, *params])
    except duckdb.Error as exc:  # e.g. `value > "abc"`: a condition value of the wrong type
        detail = str(exc).strip().splitlines()[0]
        raise GoalError(f"propensity_goals[{goal.name}].goal: cannot evaluate the conditions: {detail}") from None
    if goal.goal.occurrence == "will_not_occur":
        labels["label"] = (1 - labels["label"]).astype("int8")
    return labels


def eligible_profiles(con: duckdb.DuckDBPyConnection, goal: PropensityGoalConfig, as_of: datetime) -> pd.Series:
    """Profile ids active in the eligibility window before `as_of` (the population to score)."""
    return query_frame(con, f"SELECT DISTINCT profile_id FROM ({_eligible_sql(goal, as_of)}) ORDER BY profile_id")["profile_id"]


def eligible_condition(goal: PropensityGoalConfig, as_of: datetime, within: str = "TRUE") -> str:
    """`eligible_profiles` as a SQL condition on the events' `profile_id` (a semi-join in DuckDB,
    so millions of eligible ids never pass through Python); `within` (a condition on
    `profile_id`, e.g. a hash partition) restricts it, and the semi-join's table with it."""
    return f"({within}) AND profile_id IN ({_eligible_sql(goal, as_of)} AND ({within}))"


def _eligible_sql(goal: PropensityGoalConfig, as_of: datetime) -> str:
    start = as_of - timedelta(days=goal.eligible_active_within_days)
    return (f"SELECT profile_id FROM {EVENTS_VIEW}"
            f" WHERE timestamp >= {sql_timestamp(start)} AND timestamp < {sql_timestamp(as_of)}")
