"""Propensity goal conditions checked before any work (`models.project_check`): a known event field
and a value DuckDB can compare with it, from the fields' Arrow types alone (no data, no DuckDB,
no pandas: `offerflow decide` runs the check too). `customer_ai.goals` turns the same conditions
into SQL when a run labels the goal."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import pyarrow as pa

from offerflow.core.config import GoalCondition


def _value_fits(value: Any, type_: pa.DataType) -> bool:
    """Whether DuckDB can compare a column of `type_` with `value` (as `label_goal` binds it)."""
    if value is None:
        return True
    if pa.types.is_string(type_) or pa.types.is_large_string(type_):
        return isinstance(value, str)
    if pa.types.is_boolean(type_):
        return isinstance(value, (bool, int)) or str(value).lower() in ("true", "false")
    if pa.types.is_integer(type_) or pa.types.is_floating(type_) or pa.types.is_decimal(type_):
        if isinstance(value, bool):
            return False
        try:
            float(value)
        except (TypeError, ValueError):
            return False
        return True
    if pa.types.is_timestamp(type_) or pa.types.is_date(type_):
        if not isinstance(value, str):
            return False
        try:  # ISO 8601, as DuckDB casts a text value to a timestamp or date
            datetime.fromisoformat(value.strip())
        except ValueError:
            return False
        return True
    return True


def condition_problems(condition: GoalCondition, types: Mapping[str, pa.DataType], where: str,
                       unknown_fields: bool = True) -> list[str]:
    """The mistakes of one condition, located by `where`: an unknown event field (only when
    `unknown_fields`: `types` lists every field), or a value that cannot be compared with it."""
    type_ = types.get(condition.field)
    if type_ is None:
        if not unknown_fields:
            return []
        return [f"{where}.field: unknown event field {condition.field!r} (fields: {', '.join(sorted(types))})"]
    values = condition.value if condition.operator in ("in", "not_in") and isinstance(condition.value, list) \
        else [condition.value]
    bad = [v for v in values if not _value_fits(v, type_)]
    if bad:
        return [f"{where}.value: {bad[0]!r} cannot be compared with event field {condition.field!r} ({type_})"]
    return []
