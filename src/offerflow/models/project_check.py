"""Check the whole project before any work: every ranking formula, eligibility rule and propensity
goal condition, parsed and type-checked against the data a run would give them.

A run compiles formulas and rules only when it scores (after validating, training Customer AI and
the ranking models), so a typo used to fail minutes into a run, after some placements were already
published. `check_project` finds every such mistake in well under a second, from the catalog and
the *schema* of the profiles (never their rows, when they are Parquet), with the same names and
types a run uses:

- a placement's formula, as `ranking.publishing.plan_scoring` compiles it: the profiles' columns
  plus `propensity.<goal>.<field>` of every Customer AI goal (`core.schema.PROPENSITY_FIELDS`,
  what `enrich_profiles` adds), the placement's regular offers, and `ai_score` when the formula
  names an AI model (`ranking.tables.formula_scorer`);
- an offer's eligibility rule, as `ingest.snapshot.load_catalog` checks it (every offer) and as
  `ranking.tables.rank_profiles` compiles it (each placement's regular offers);
- a goal condition, as `customer_ai.goals.goal_predicate` and DuckDB will read it: a known event
  field and a value of the field's type.

Each mistake is one located line, e.g.
``offerflow.yaml: placements[2].ranking.formula: column 66: unexpected ','``.

Expressions that are well formed but cannot rank anything are warnings (`ranking.degenerate`),
found by evaluating them on the first profiles: a formula with no value (or one value) for every
profile x offer pair, a rule no profile meets. With `strict` they are mistakes too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from offerflow.core.columns import Table, empty_table, row_count, slice_rows
from offerflow.core.config import ConfigError, ProjectConfig
from offerflow.core.schema import EVENT_SCHEMA, PROPENSITY_FIELDS
from offerflow.customer_ai.goal_conditions import condition_problems
from offerflow.ingest.catalog import CatalogError, offers_for_placement, read_offer_rows, read_profiles
from offerflow.ranking.degenerate import FORMULA_PROFILES, formula_warning, rule_warning
from offerflow.ranking.tables import AI_SCORE, eligibility_matrix, rule_columns
from offerflow.rules.expressions import Expression, ExpressionError, parse_expression, schema_from_frames

__all__ = ["CheckResult", "ProjectCheckFailed", "check_project", "require_valid_project"]


class ProjectCheckFailed(ConfigError):
    """Mistakes in the project's expressions: one located line each (the message, joined by newlines)."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class CheckResult:
    """How many expressions were checked, and every mistake found (one line each)."""

    formulas: int = 0
    rules: int = 0
    goal_conditions: int = 0
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        extra = f", {_counted(len(self.warnings), 'warning')}" if self.warnings else ""
        return (f"ok: {_counted(self.formulas, 'formula')}, {_counted(self.rules, 'rule')}, "
                f"{_counted(self.goal_conditions, 'goal condition')}{extra}")

    def as_dict(self) -> dict[str, object]:
        return {"ok": self.ok, "formulas": self.formulas, "rules": self.rules,
                "goal_conditions": self.goal_conditions, "problems": list(self.problems),
                "warnings": list(self.warnings)}


def _counted(n: int, noun: str) -> str:
    """`1 rule`, `0 rules`, `2 rules`."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def profile_frame(path: Path) -> Table:
    """An empty table with the profiles' columns and types: from the Parquet schema alone (no rows
    read, an Arrow table), else the whole table read (CSV and YAML carry no schema; a DataFrame)."""
    if path.suffix.lower() in (".parquet", ".pq"):
        if not path.exists():
            raise CatalogError(f"{path}: profiles file not found")
        try:
            schema = pq.read_schema(path)
        except (OSError, pa.ArrowException) as exc:
            raise CatalogError(f"{path}: cannot read profiles: {str(exc).splitlines()[0]}") from None
        return empty_table(schema)
    return read_profiles(path).head(0)


#: Rules are tried on this many profiles at most, formulas on FORMULA_PROFILES x the placement's offers.
SAMPLE_PROFILES = 20_000


def profile_sample(path: Path, rows: int = SAMPLE_PROFILES) -> tuple[Table, bool]:
    """The first `rows` profiles (from the first Parquet batch only, when Parquet: an Arrow table)
    and whether that is all of them."""
    if path.suffix.lower() not in (".parquet", ".pq"):
        profiles = read_profiles(path)
        return profiles.head(rows), len(profiles) <= rows
    profile_frame(path)  # a missing or unreadable file: its CatalogError
    try:
        parquet = pq.ParquetFile(path)
        batch = next(parquet.iter_batches(batch_size=rows), None)
    except (OSError, pa.ArrowException) as exc:
        raise CatalogError(f"{path}: cannot read profiles: {str(exc).splitlines()[0]}") from None
    table = pa.Table.from_batches([batch] if batch is not None else [], schema=parquet.schema_arrow)
    return table, parquet.metadata.num_rows <= rows


def propensity_schema(config: ProjectConfig) -> dict[str, str]:
    """The profile columns Customer AI adds (`propensity.<goal>.<field>` of every goal), as
    expression names and types: a schema's `extra`."""
    return {f"profile.propensity.{goal.name}.{name}": kind
            for goal in config.propensity_goals for name, kind in PROPENSITY_FIELDS.items()}


def event_field_types(config: ProjectConfig) -> tuple[dict[str, pa.DataType], bool]:
    """The event fields goal conditions may name, with their Arrow types, and whether that list is
    complete: the data contract plus the columns of the validated snapshot (or of a Parquet events
    file before the first run; other formats keep extra columns the check cannot see)."""
    types = {f.name: f.type for f in EVENT_SCHEMA}
    events = config.path(config.data.events)
    for path in (config.paths.validated_events, events):
        if path.suffix.lower() in (".parquet", ".pq") and path.is_file():
            try:
                schema = pq.read_schema(path)
            except (OSError, pa.ArrowException):
                continue
            types.update({f.name: f.type for f in schema if f.name not in types})
            return types, True
    return types, False


def _formula_problems(config: ProjectConfig, source: str, profiles: Table,
                      offers: list[dict]) -> tuple[int, list[str]]:
    count, problems = 0, []
    for i, placement in enumerate(config.placements):
        ranking = placement.ranking
        if ranking.method != "formula" or not ranking.formula:
            continue
        count += 1
        schema = schema_from_frames(profiles=profiles, offers=offers_for_placement(offers, placement.id),
                                    extra=propensity_schema(config))
        if ranking.ai_model is not None:
            schema[AI_SCORE] = "number"
        try:
            parse_expression(ranking.formula, schema, kind="formula",
                             source=f"{source}: placements[{i}].ranking.formula")
        except ExpressionError as exc:
            problems.append(str(exc))
    return count, problems


def _rule_problems(config: ProjectConfig, offers_source: str, profiles: Table,
                   offers: list[dict]) -> tuple[int, list[str]]:
    """Each rule against the whole catalog (as the catalog check) and against the regular offers of
    each of its placements (as scoring does); one line per rule, its first mistake."""
    extra = propensity_schema(config)
    schemas = [schema_from_frames(profiles=profiles, offers=offers, extra=extra)]
    schemas += [schema_from_frames(profiles=profiles, offers=offers_for_placement(offers, p.id), extra=extra)
                for p in config.placements]
    count, problems = 0, []
    for i, (offer_id, rule) in enumerate((row["offer_id"], row["eligibility"]) for row in offers):
        if not isinstance(rule, str):
            continue
        count += 1
        for schema in schemas:
            try:
                parse_expression(rule, schema, kind="rule",
                                 source=f"{offers_source}: offers[{i}].eligibility (offer {offer_id!r})")
            except ExpressionError as exc:
                problems.append(str(exc))
                break
    return count, problems


def _parsed(text: str, kind: str, profiles: Table, offers: Table) -> Expression | None:
    """The expression over the sample's own columns, None when it names anything else (Customer AI
    scores, ai_score: known only when a run scores) or does not parse (reported as a mistake)."""
    try:
        return parse_expression(text, schema_from_frames(profiles=profiles, offers=offers), kind=kind)  # type: ignore[arg-type]
    except ExpressionError:
        return None


def degenerate_warnings(config: ProjectConfig, source: str, offers_source: str, offers: list[dict],
                        sample: Table, complete: bool) -> list[str]:
    """Formulas with no value or one value for every pair of the first profiles x the placement's
    offers, and rules no profile of the sample meets (`ranking.degenerate`), one line each.
    `offers`: the catalog's rows; `sample`: the first profiles (`profile_sample`)."""
    n_sample = row_count(sample)
    if not n_sample:
        return []
    lines = []
    head = slice_rows(sample, 0, FORMULA_PROFILES)
    n_head = row_count(head)
    scope = "" if complete and n_sample <= FORMULA_PROFILES else f" (first {n_head:,} profiles)"
    for i, placement in enumerate(config.placements):
        candidates = offers_for_placement(offers, placement.id)
        formula = placement.ranking.formula if placement.ranking.method == "formula" else None
        expression = _parsed(formula, "formula", head, candidates) if formula and len(candidates) else None
        if expression is not None:
            values = expression.evaluate_batch(rule_columns(head, candidates), n_rows=n_head * len(candidates))
            if message := formula_warning(values, placement.id, len(candidates), scope):
                lines.append(f"{source}: placements[{i}].ranking.formula: {message}")
    scope = "" if complete else f" (first {n_sample:,} profiles)"
    for i, (offer_id, rule) in enumerate((row["offer_id"], row["eligibility"]) for row in offers):
        expression = _parsed(rule, "rule", sample, offers) if isinstance(rule, str) else None
        if expression is not None:
            eligible = eligibility_matrix(sample, offers[i:i + 1], [expression])[:, 0]
            if message := rule_warning(eligible, str(offer_id), expression.names, scope):
                lines.append(f"{offers_source}: offers[{i}].eligibility (offer {offer_id!r}): {message}")
    return lines


def _goal_problems(config: ProjectConfig, source: str) -> tuple[int, list[str]]:
    types, complete = event_field_types(config)
    count, problems = 0, []
    for i, goal in enumerate(config.propensity_goals):
        for part in ("all_of", "any_of"):
            for j, condition in enumerate(getattr(goal.goal, part)):
                count += 1
                problems += condition_problems(condition, types, f"{source}: propensity_goals[{i}].goal.{part}[{j}]",
                                               unknown_fields=complete)
    return count, problems


def check_project(config: ProjectConfig, source: str = "offerflow.yaml", strict: bool = False,
                  warnings: bool = True) -> CheckResult:
    """Parse and type-check every formula, eligibility rule and goal condition of the project, and
    warn on those that cannot rank anything (`degenerate_warnings`).

    `source` names the project file in the lines. A catalog or profiles file that cannot be read
    raises its `CatalogError` (one line); expression mistakes are collected in the result. With
    `strict` (or `strict: true` in the project file) the warnings are mistakes too. Without
    `warnings` (the commands that only read published tables: `decide`, `decide-batch`) the data
    is not sampled: mistakes only, from the files' schemas, no warnings.
    """
    offers_path = config.path(config.data.offers)
    offers = read_offer_rows(offers_path)
    profiles_path = config.path(config.data.profiles)
    profiles = profile_frame(profiles_path)
    formulas, formula_problems = _formula_problems(config, source, profiles, offers)
    rules, rule_problems = _rule_problems(config, offers_path.name, profiles, offers)
    goals, goal_problems = _goal_problems(config, source)
    found = (degenerate_warnings(config, source, offers_path.name, offers, *profile_sample(profiles_path))
             if warnings else [])
    if warnings and not config.path(config.data.events).exists():  # `run` reads it; decisions do not
        found.append(f"{source}: data.events: {config.data.events}: events file not found")
    problems = [*formula_problems, *rule_problems, *goal_problems]
    if warnings and (strict or config.strict):
        return CheckResult(formulas, rules, goals, [*problems, *found])
    return CheckResult(formulas, rules, goals, problems, found)


def require_valid_project(config: ProjectConfig, source: str = "offerflow.yaml", strict: bool = False) -> CheckResult:
    """`check_project`, raising `ProjectCheckFailed` (a `ConfigError`) with every mistake."""
    result = check_project(config, source, strict)
    if not result.ok:
        raise ProjectCheckFailed(result.problems)
    return result

