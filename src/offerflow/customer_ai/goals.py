"""Propensity goals: which profiles are eligible at a cut-off, and who reached the goal after it.

A goal is a set of conditions on event fields (`event_type == purchase`, `value > 20`, ...)
combined with all-of / any-of, that "will occur" (conversion) or "will not occur" (churn) within
the outcome window after the cut-off. Conditions become a parameterised DuckDB predicate: field
names are checked against the event columns and values are bound, never pasted into SQL.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa

from offerflow.core.config import GoalCondition, GoalDefinition, PropensityGoalConfig
from offerflow.core.features import EVENTS_VIEW, query_frame, sql_timestamp

if TYPE_CHECKING:  # DuckDB on use only: the project check imports this module
    import duckdb

_SQL_OPERATORS = {"==": "=", "!=": "<>", ">": ">", ">=": ">=", "<": "<", "<=": "<="}


class GoalError(ValueError):
    """A goal that cannot be evaluated on the data (unknown field, too few examples)."""


class HistoryTooShort(GoalError):
    """The events span too few days for even one training cut-off of the goal: the flows skip that
    goal with a one-line warning and train and publish the rest."""


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

    Eligible: any event before the cut-off (with `eligible_active_within_days`, any event in that
    many days before it). Label: an event satisfying the goal in [cutoff, cutoff + outcome
    window); inverted for "will not occur". Returns columns `profile_id`, `label` (int8), sorted
    by profile_id.
    """
    columns = [r[0] for r in con.execute(f"DESCRIBE {EVENTS_VIEW}").fetchall()]
    predicate, params = goal_predicate(goal.goal, columns, where=f"propensity_goals[{goal.name}].goal")
    end = cutoff + timedelta(days=goal.outcome_window_days)
    sql = f"""
        WITH eligible AS (SELECT DISTINCT profile_id FROM ({_eligible_sql(goal, cutoff)})),
        reached AS (
            SELECT DISTINCT profile_id FROM {EVENTS_VIEW}
            WHERE timestamp >= ? AND timestamp < ? AND {predicate})
        SELECT e.profile_id, (r.profile_id IS NOT NULL)::TINYINT AS label
        FROM eligible e LEFT JOIN reached r USING (profile_id) ORDER BY e.profile_id"""
    import duckdb

    try:
        labels = query_frame(con, sql, [cutoff, end, *params])
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
    since = ""
    if goal.eligible_active_within_days is not None:
        start = as_of - timedelta(days=goal.eligible_active_within_days)
        since = f" AND timestamp >= {sql_timestamp(start)}"
    return f"SELECT profile_id FROM {EVENTS_VIEW} WHERE timestamp < {sql_timestamp(as_of)}{since}"


@dataclass(frozen=True)
class Population:
    """Who a training or scoring run covers as of a date, and who it leaves out and why.

    `profiles`: rows of the profiles table; `eligible`: profiles (of the table or only seen in the
    events) with history before `as_of` that pass the activity filter; `scored`: those the run
    scored; `excluded`: profiles of the table that are not eligible, by reason.
    """

    as_of: str
    profiles: int
    eligible: int
    scored: int
    excluded: dict[str, int]  # reason code (`no_history`, `inactive`) -> profiles of the table
    reasons: dict[str, str]  # reason code -> what it means, e.g. `no event before 1998-04-01`

    def as_metrics(self, prefix: str = "population_") -> dict[str, float]:
        """MLflow metrics: `population_{profiles,eligible,scored,excluded,excluded_<reason>}`."""
        counts = {"profiles": self.profiles, "eligible": self.eligible, "scored": self.scored,
                  "excluded": sum(self.excluded.values()), **{f"excluded_{k}": n for k, n in self.excluded.items()}}
        return {f"{prefix}{k}": float(v) for k, v in counts.items()}

    def as_dict(self) -> dict[str, object]:
        return {"as_of": self.as_of, "profiles": self.profiles, "eligible": self.eligible, "scored": self.scored,
                "excluded": {self.reasons[k]: n for k, n in self.excluded.items()}}

    def describe(self) -> str:
        """One line, e.g. `23,570 scored of 23,570 eligible (23,570 in the profiles table) as of ...`."""
        excluded = "; ".join(f"{n:,} {self.reasons[k]}" for k, n in self.excluded.items() if n) or "none"
        return (f"{self.scored:,} scored of {self.eligible:,} eligible ({self.profiles:,} in the profiles table)"
                f" as of {self.as_of}; excluded: {excluded}")


def population(con: duckdb.DuckDBPyConnection, goal: PropensityGoalConfig, profile_ids: pd.Series,
               as_of: datetime, scored: int | None = None) -> Population:
    """Count the eligible profiles as of `as_of` and the table's profiles left out, by reason
    (`no event before <date>`, and with the activity filter `no event in the N days before`).
    One aggregation over the events before `as_of` in DuckDB; `scored` defaults to `eligible`."""
    name = f"_population_{uuid.uuid4().hex[:12]}"
    ids = pd.Series(profile_ids, copy=False).to_numpy(dtype=object)
    con.register(name, pa.table({"profile_id": pa.array(ids, type=pa.string())}))
    try:
        active = "TRUE"
        if goal.eligible_active_within_days is not None:
            active = f"last_ts >= {sql_timestamp(as_of - timedelta(days=goal.eligible_active_within_days))}"
        (eligible, known, known_eligible), = con.execute(f"""
            SELECT count(*) FILTER (WHERE {active}),
                   count(*) FILTER (WHERE known), count(*) FILTER (WHERE known AND {active})
            FROM (SELECT h.last_ts, p.profile_id IS NOT NULL AS known
                  FROM (SELECT profile_id, max(timestamp) AS last_ts FROM {EVENTS_VIEW}
                        WHERE timestamp < {sql_timestamp(as_of)} GROUP BY profile_id) h
                  LEFT JOIN (SELECT DISTINCT profile_id FROM {name}) p USING (profile_id))""").fetchall()
        (table,), = con.execute(f"SELECT count(DISTINCT profile_id) FROM {name}").fetchall()
    finally:
        con.unregister(name)
    day = f"{as_of:%Y-%m-%d}"
    excluded, reasons = {"no_history": int(table - known)}, {"no_history": f"no event before {day}"}
    if goal.eligible_active_within_days is not None:
        excluded["inactive"] = int(known - known_eligible)
        reasons["inactive"] = (f"no event in the {goal.eligible_active_within_days} days before {day}"
                               " (eligible_active_within_days)")
    return Population(day, int(table), int(eligible), int(eligible if scored is None else scored), excluded, reasons)
