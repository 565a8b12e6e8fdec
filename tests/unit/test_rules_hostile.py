"""Hostile and careless expressions (issue 19): limits with located errors, never a RecursionError or a
crash, and the row and batch evaluators agree on every expression the parser accepts."""

from __future__ import annotations

import functools
import math
import time

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from offerflow.rules import parser
from offerflow.rules.expressions import ExpressionError, parse_expression

SCHEMA = {"profile.age": "number", "profile.country": "string", "profile.vip": "bool"}


def error(text: str, kind: str = "rule") -> str:
    with pytest.raises(ExpressionError) as info:
        parse_expression(text, SCHEMA, kind=kind)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)
    return str(info.value)


# ---------------------------------------------------------------- length, depth and chains


def test_a_thousand_term_rule_is_a_located_error_not_a_recursion_error() -> None:
    text = " and ".join(["profile.age > 1"] * 1000)
    assert error(text) == "expression: column 10001: expression is longer than 10,000 characters"


@pytest.mark.parametrize("op", ["or", "and", "||", "&&"])
def test_long_flat_chains_are_long_not_deep(op: str) -> None:
    text = f" {op} ".join(f"profile.age == {i}" for i in range(400))  # 8,000+ characters, 400 operands
    expr = parse_expression(text, SCHEMA, kind="rule")
    ages = np.array([0.0, 5.0, 399.0, 400.0, np.nan])
    want = [a in range(400) if op in ("or", "||") else False for a in ages]
    assert expr.evaluate_batch({"profile.age": ages}).tolist() == want
    assert [expr.evaluate_one({"profile.age": a}) for a in ages] == want


def test_a_flat_or_of_150_alternatives_is_accepted() -> None:
    text = " or ".join(f"profile.country == 'c{i}'" for i in range(150))
    expr = parse_expression(text, SCHEMA, kind="rule")
    assert expr.evaluate_one({"profile.country": "c149"}) is True
    assert expr.evaluate_batch({"profile.country": ["c0", "x", None]}).tolist() == [True, False, False]


def test_long_arithmetic_chains_fold_left_like_the_tree() -> None:
    text = " - ".join(["profile.age * 2 / 3 % 7 + 1"] * 300)
    expr = parse_expression(text, SCHEMA, kind="formula")
    ages = [0.0, 1.5, -4.0, None]
    batch = expr.evaluate_batch({"profile.age": pd.Series(ages, dtype=float)}).tolist()
    one = [expr.evaluate_one({"profile.age": a}) for a in ages]
    m = 1.5 * 2 / 3 % 7
    want = m + 1  # "m + 1 - m + 1 - ..." is ((m + 1) - m) + 1 ...
    for _ in range(299):
        want = (want - m) + 1
    assert one[1] == batch[1] == want
    assert math.isnan(one[3]) and math.isnan(batch[3])


@pytest.mark.parametrize(
    "text",
    [
        "(" * 33 + "1" + ")" * 33,
        "-" * 33 + "1",
        "abs(" * 33 + "1" + ")" * 33,
        "(true and not " * 17 + "true" + ")" * 17,
        "profile.age in [" * 33 + "1" + "]" * 33,
    ],
)
def test_deep_nesting_is_refused_where_it_crosses_the_limit(text: str) -> None:
    message = error(text, "formula" if text[0] in "(-a" and "true" not in text else "rule")
    assert "expression is nested too deeply (more than 32 levels)" in message
    assert "column 1:" not in message


def test_the_deepest_accepted_expression_compiles_and_evaluates() -> None:
    text = "(profile.vip or profile.vip and 1 < 1 + 2 * if(" * 16 + "profile.vip" + ", 1, 2))" * 16
    expr = parse_expression(text, SCHEMA, kind="rule")
    assert expr.evaluate_one({"profile.vip": True}) is True
    assert expr.evaluate_batch({"profile.vip": [True, None]}).tolist() == [True, False]


# ---------------------------------------------------------------- literals


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("starts_with(profile.country, 'DE\\0')", "column 30: string literal contains a control character (U+0000)"),
        ("starts_with(profile.country, 'DE\0')", "column 30: string literal contains a control character (U+0000)"),
        ("profile.country == 'a\x1bb'", "column 20: string literal contains a control character (U+001B)"),
        ("profile.country == 'a\x85'", "column 20: string literal contains a control character (U+0085)"),
        ("profile.country == '\\ud800'", "column 20: string literal contains a lone surrogate (U+D800)"),
        ("profile.country == '\udfff'", "column 20: string literal contains a lone surrogate (U+DFFF)"),
        ("profile.country == '" + "a" * 1001 + "'", "column 20: string literal is longer than 1000 characters"),
        ("profile.age > \u0661\u0668", "column 15: unexpected character '\u0661'"),
        ("profile.age > \uff11", "column 15: unexpected character '\uff11'"),
        ("profile.age > 1\u0668", "column 16: unexpected character '\u0668'"),
        ("profile.age > 1e400", "column 15: number 1e400 is too large"),
        ("profile.age > 1\ud800", "column 16: unexpected character '\\ud800'"),
        ("profile.age in [" + ", ".join(["1"] * 1001) + "]", "column 3017: more than 1000 items in one list or call"),
    ],
)
def test_bad_literals_are_located_errors(text: str, message: str) -> None:
    assert error(text).startswith(f"expression: {message}")


def test_tab_newline_and_return_escapes_stay_allowed() -> None:
    expr = parse_expression("profile.country == 'a\\tb\\nc\\r'", SCHEMA, kind="rule")
    assert expr.evaluate_one({"profile.country": "a\tb\nc\r"}) is True
    assert expr.evaluate_batch({"profile.country": ["a\tb\nc\r"]}).tolist() == [True]


def test_a_thousand_item_list_compiles_fast_and_a_hundred_thousand_is_refused() -> None:
    started = time.perf_counter()
    expr = parse_expression("profile.age in [" + ", ".join(str(i) for i in range(1000)) + "]", SCHEMA, kind="rule")
    assert expr.evaluate_batch({"profile.age": [999.0, 1000.0]}).tolist() == [True, False]
    assert time.perf_counter() - started < 5
    huge = "profile.age in [" + ", ".join(str(i) for i in range(100_000)) + "]"
    assert error(huge) == "expression: column 10001: expression is longer than 10,000 characters"


# ---------------------------------------------------------------- row and batch evaluators agree

NUMBER_NAMES, STRING_NAMES, BOOL_NAMES = ["a", "b"], ["s", "t"], ["p", "q"]
PROP_SCHEMA = {**dict.fromkeys(NUMBER_NAMES, "number"), **dict.fromkeys(STRING_NAMES, "string"),
               **dict.fromkeys(BOOL_NAMES, "bool")}  # fmt: skip
# Any text the parser accepts as a literal: valid Unicode, no control characters but tab/newline/return.
LITERAL_TEXT = st.text(
    st.characters(exclude_categories=("Cs", "Cc"), include_characters="\t\n\r\0"), max_size=4
).map(lambda s: s.replace("\0", ""))


def quote(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n").replace("\t", "\\t")
    return "'" + escaped.replace("\r", "\\r") + "'"


@functools.cache
def grammar(type_: str, depth: int) -> st.SearchStrategy[str]:
    """Random well-typed expression text; chains of operators are left unparenthesized so that
    precedence and the flattened chain compiling are exercised too. Built once per (type, depth):
    strategies are immutable, and rebuilding this tree in every example cost most of the test."""
    literals = {
        "number": st.one_of(st.sampled_from(["0", "1", "2.5", "1e308", ".5", "7", "1E3", "0.1"]),
                            st.integers(0, 10**6).map(str)),
        "string": LITERAL_TEXT.map(quote),
        "bool": st.sampled_from(["true", "false", "True", "False"]),
    }  # fmt: skip
    names = {"number": NUMBER_NAMES, "string": STRING_NAMES, "bool": BOOL_NAMES}[type_]
    leaf = st.one_of(st.sampled_from(names), literals[type_])
    if depth == 0:
        return leaf
    num, string, boolean = (grammar(t, depth - 1) for t in ("number", "string", "bool"))
    same = {"number": num, "string": string, "bool": boolean}[type_]

    def fmt(pattern: str, *parts: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        return st.tuples(*parts).map(lambda xs: pattern.format(*xs))

    def chain(operand: st.SearchStrategy[str], ops: list[str]) -> st.SearchStrategy[str]:
        pairs = st.lists(st.tuples(st.sampled_from(ops), operand), min_size=1, max_size=6)
        return st.tuples(operand, pairs).map(lambda x: "(" + x[0] + "".join(f" {o} {e}" for o, e in x[1]) + ")")

    options = [leaf, fmt("if({}, {}, {})", boolean, same, same), fmt("coalesce({}, null, {})", same, same)]
    if type_ == "number":
        options += [
            chain(num, ["+", "-", "*", "/", "%"]),
            fmt("{}({})", st.sampled_from(["abs", "log", "exp", "round", "-"]), num),
            fmt("{}({}, {})", st.sampled_from(["min", "max"]), num, num),
            fmt("(-{} * null)", num),
        ]
    elif type_ == "string":
        options.append(fmt("{}({})", st.sampled_from(["lower", "upper"]), string))
    else:
        cmp = st.sampled_from(["==", "!=", "<", "<=", ">", ">="])
        options += [
            chain(boolean, ["and", "or", "&&", "||"]),
            fmt("({}{})", st.sampled_from(["not ", "!"]), boolean),
            fmt("({} {} {})", num, cmp, num),
            fmt("({} {} {})", string, cmp, string),
            fmt("({} {} [{}, {}, {}])", num, st.sampled_from(["in", "not in"]), literals["number"], num, literals["number"]),
            fmt("({} {} [{}, {}])", string, st.sampled_from(["in", "not in"]), literals["string"], string),
            fmt("({} {} {})", string, st.sampled_from(["in", "not in"]), string),
            fmt("{}({}, {})", st.sampled_from(["contains", "starts_with"]), string, string),
            fmt("is_null({})", st.one_of(num, string, boolean)),
        ]
    return st.one_of(*options)


ROW_VALUES = {
    "number": st.one_of(st.none(), st.just(math.nan), st.floats(width=64), st.integers(-5, 5)),
    # Data may hold what literals may not (NUL, other controls): both evaluators must still agree.
    "string": st.one_of(st.none(), st.text(alphabet="aAß'İ\0\t\x1b\u0661", max_size=3)),
    "bool": st.one_of(st.none(), st.booleans()),
}


@st.composite
def cases(draw: st.DrawFn) -> tuple[str, str, dict[str, object], int]:
    kind = draw(st.sampled_from(["rule", "formula"]))
    text = draw(grammar("bool" if kind == "rule" else "number", 3))
    n = draw(st.integers(1, 5))
    columns: dict[str, object] = {}
    for name, type_ in PROP_SCHEMA.items():
        if draw(st.integers(0, 4)):  # sometimes missing: all null
            columns[name] = np.array(draw(st.lists(ROW_VALUES[type_], min_size=n, max_size=n)), dtype=object)
    return kind, text, columns, n


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_row_and_batch_evaluators_agree_on_grammar_expressions(case: tuple[str, str, dict[str, object], int]) -> None:
    kind, text, columns, n = case
    expr = parse_expression(text, PROP_SCHEMA, kind=kind)  # type: ignore[arg-type]
    batch = expr.evaluate_batch(columns, n_rows=n)
    for i in range(n):
        one = expr.evaluate_one({name: col[i] for name, col in columns.items()})  # type: ignore[index]
        b = float(batch[i])
        assert (math.isnan(b) and math.isnan(float(one))) or b == float(one), (text, i, batch[i], one)


def test_parser_limits_are_the_documented_ones() -> None:
    assert (parser.MAX_LENGTH, parser.MAX_DEPTH, parser.MAX_LIST_ITEMS, parser.MAX_STRING) == (10_000, 32, 1_000, 1_000)
