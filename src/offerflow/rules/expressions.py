"""Eligibility rules and ranking formulas: a small, typed, null-aware expression language.

Marketers write two kinds of expressions over profile and offer attributes:

* rules (bool): ``profile.age >= 18 and profile.country in ["DE", "FR"]``
* formulas (number): ``if(offer.category == profile.favorite_category, offer.priority * 2, offer.priority)``

Language, loosest binding first (the full grammar is in :mod:`offerflow.rules.parser`):

* ``or`` / ``||``, then ``and`` / ``&&``, then ``not`` (Python-style, so ``not a == b`` negates the comparison)
* comparisons ``== != < <= > >=`` and membership ``in`` / ``not in``; they do not chain
* ``+ -``, then ``* / %``, then unary ``-`` and ``!`` (CEL-style, binding tightly)
* literals: numbers (ASCII digits; ints and floats are one "number" type), ``'single'`` or ``"double"``
  quoted strings with backslash escapes (no control characters but tab, newline and return; no lone
  surrogates), ``true``/``false`` (or ``True``/``False``), ``null``; the limits on length, nesting, list
  and literal size are in :mod:`offerflow.rules.parser`
* names: dotted identifiers from the schema, e.g. ``profile.propensity.purchase_30d.score``, ``ai_score``
* lists ``[a, b]``, only on the right of ``in``; ``s in "text"`` tests substring containment
* functions: ``if(cond, a, b)``, ``min(a, b, ...)``, ``max(...)``, ``abs(x)``, ``log(x)`` (natural),
  ``exp(x)``, ``round(x)`` (halves to even), ``lower(s)``, ``upper(s)``, ``contains(s, sub)``,
  ``starts_with(s, prefix)``, ``is_null(x)``, ``coalesce(a, b, ...)``

Types are "number", "string" and "bool", checked once at parse time: ``"a" + 1``, ``profile.age > "x"`` or
a rule that is not bool are rejected with the column of the mistake. Both sides of a comparison have the
same type; bools support only ``==`` and ``!=``, and strings order by code point.

Null semantics. A missing key, ``None``, NaN or ``pd.NA`` is null. Arithmetic and functions of a null give
null, except as noted; so do division or ``%`` by zero and NaN results such as ``inf - inf``, and ``log`` of
a number <= 0. Comparisons, ``in``, ``not in``, ``contains`` and ``starts_with`` with a null operand are
false (``x != null`` too: write ``is_null(x)``); null list elements never match. ``not null`` is null;
``and``/``or`` are three-valued (``false and null`` is false, ``true or null`` is true). ``if`` takes the
else branch when its condition is null, and ``coalesce`` returns its first non-null argument. At the end a
null rule is false (not eligible) and a null formula is NaN.

Each :class:`Expression` has two evaluators with identical results: ``evaluate_batch`` (NumPy, over
columns) for ranking tables and ``evaluate_one`` (a cached closure tree) for real-time decisions. Types,
nulls and the batch representation they share are in :mod:`offerflow.rules.values`; type checking and
compiling to those evaluators in :mod:`offerflow.rules.compiler`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal as TypingLiteral

import numpy as np
import pyarrow as pa

from offerflow.core.columns import Table, arrow_type, column_names, column_values
from offerflow.rules import values as rules_values
from offerflow.rules.values import BOOL, NULL, NUMBER, STRING, TYPES, BatchFn, OneFn, missing
from offerflow.rules.compiler import Compiler
from offerflow.rules.parser import ExpressionError, parse

__all__ = ["Expression", "ExpressionError", "parse_expression", "schema_from_frames"]

_KIND_TYPES = {"rule": BOOL, "formula": NUMBER}


# ---------------------------------------------------------------- public API


@dataclass(frozen=True)
class Expression:
    """A parsed and type-checked rule or formula; immutable and safe to share between threads."""

    text: str
    kind: TypingLiteral["rule", "formula"]
    result_type: str
    names: frozenset[str]
    _name_types: tuple[tuple[str, str], ...] = field(repr=False, compare=False)
    _one: OneFn = field(repr=False, compare=False)
    _batch: BatchFn = field(repr=False, compare=False)

    def evaluate_one(self, values: Mapping[str, Any]) -> bool | float:
        """Evaluate for one profile x offer pair; a null rule is False and a null formula is NaN.

        `values` maps dotted names to Python or NumPy scalars; missing keys, None and NaN are null.
        """
        result = self._one(values)
        if self.kind == "rule":
            return result is True
        return math.nan if result is None else result

    def evaluate_batch(self, columns: Mapping[str, Any], *, n_rows: int | None = None) -> np.ndarray:
        """Evaluate over equal-length columns (arrays or Series, or a DataFrame): bool or float64 array.
        Columns are NumPy arrays (or pandas Series): `offerflow.core.columns` reads them out of a table.

        A column missing from `columns` is all null, as a missing key is in `evaluate_one`. The row
        count comes from `n_rows`, else from the columns; pass it when no column is at hand.
        """
        n = _row_count(columns, self.names, n_rows)
        env = {
            name: (rules_values.batch_column(columns[name], type_, n, name) if name in columns
                   else rules_values.batch_null(type_))
            for name, type_ in self._name_types
        }
        # inf, NaN and division by zero are expected values here, mapped to null by the language.
        with np.errstate(all="ignore"):
            result = self._batch(env)
        if self.kind == "rule":
            return np.array(np.broadcast_to(result[0], (n,)), dtype=bool)
        return np.array(np.broadcast_to(result, (n,)), dtype=np.float64)


def _row_count(columns: Mapping[str, Any], names: frozenset[str], n_rows: int | None) -> int:
    if n_rows is not None:
        return n_rows
    if hasattr(columns, "columns") and hasattr(columns, "index"):  # a DataFrame
        return len(columns)
    present = [name for name in sorted(names) if name in columns] or list(columns)
    if not present:
        raise ValueError("cannot tell the number of rows from empty columns: pass n_rows")
    return len(columns[present[0]])


def parse_expression(
    text: str,
    schema: Mapping[str, str],
    *,
    kind: TypingLiteral["rule", "formula"],
    source: str = "expression",
) -> Expression:
    """Parse and type-check `text` as a rule (bool) or formula (number) over the names in `schema`.

    `schema` maps each dotted name to "number", "string" or "bool" (see :func:`schema_from_frames`).
    `source` prefixes error messages, e.g. "offers.csv: offer 'summer-sale': eligibility".
    Raises ExpressionError, a ValueError, for syntax, name and type errors.
    """
    if kind not in _KIND_TYPES:
        raise ValueError(f"kind must be 'rule' or 'formula', got {kind!r}")
    bad = {name: t for name, t in schema.items() if t not in TYPES}
    if bad:
        raise ValueError(f"schema types must be one of {TYPES}, got {bad}")
    root = parse(text, source)
    compiler = Compiler(schema, source)
    try:
        typed = compiler.build(root)
    except RecursionError:  # only if the caller's own stack is nearly spent: the parser bounds nesting
        raise ExpressionError(source, 1, "expression is nested too deeply for the remaining stack") from None
    want = _KIND_TYPES[kind]
    if typed.type not in (want, NULL):
        raise ExpressionError(source, root.start, f"a {kind} must be {want}, got {typed.type}")
    typed = compiler.coerce(typed, want)
    return Expression(
        text=text,
        kind=kind,
        result_type=want,
        names=frozenset(compiler.names),
        _name_types=tuple(sorted(compiler.names.items())),
        _one=typed.one,
        _batch=typed.batch,
    )


_NUMBERS = (int, float, Decimal, np.integer, np.floating)


def _infer_type(values: Any) -> str:
    """The expression type of a column (a NumPy array or pandas Series) from its dtype; an object
    column (Parquet bools or numbers with nulls arrive so, as do a YAML catalog's values) from its
    non-null values: all bools "bool", all numbers "number", else (or none) "string"."""
    dtype = values.dtype
    kind = getattr(dtype, "kind", "O")  # pandas' own dtypes have a NumPy kind too
    if kind == "b":
        return BOOL
    if kind in "iufc":
        return NUMBER
    if dtype == object:
        seen = [v for v in values.tolist() if not missing(v)]
        if seen and all(isinstance(v, (bool, np.bool_)) for v in seen):
            return BOOL
        if seen and all(isinstance(v, _NUMBERS) and not isinstance(v, (bool, np.bool_)) for v in seen):
            return NUMBER
    return STRING


def _arrow_rule_type(type_: pa.DataType) -> str:
    """The expression type of an Arrow column, as `_infer_type` types the column pandas reads from it."""
    if pa.types.is_boolean(type_):
        return BOOL
    if pa.types.is_integer(type_) or pa.types.is_floating(type_) or pa.types.is_decimal(type_):
        return NUMBER
    return STRING


def column_type(table: Table, name: str) -> str:
    """The expression type of one column of a table (`offerflow.core.columns`): an Arrow column's
    from its Arrow type, a DataFrame column's from its dtype, a row dict column's from its values."""
    arrow = arrow_type(table, name)
    if arrow is not None:
        return _arrow_rule_type(arrow)
    return _infer_type(column_values(table, name) if isinstance(table, list) else table[name])


def schema_from_frames(
    profiles: Table | None = None,
    offers: Table | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Build a schema: `profile.<column>` and `offer.<column>` typed from the dtypes, plus `extra`.
    The tables are DataFrames, pyarrow Tables or lists of row dicts (`column_type`).

    bool columns are "bool", numeric ones "number" and the rest "string"; an object column whose
    non-null values are all bools or numbers counts as such. `extra` (e.g. {"ai_score": "number"})
    is added last and wins on a clash.
    """
    schema: dict[str, str] = {}
    for prefix, frame in (("profile", profiles), ("offer", offers)):
        if frame is not None:
            for column in column_names(frame):
                schema[f"{prefix}.{column}"] = column_type(frame, column)
    for name, type_ in (extra or {}).items():
        if type_ not in TYPES:
            raise ValueError(f"type of {name!r} must be one of {TYPES}, got {type_!r}")
        schema[name] = type_
    return schema
