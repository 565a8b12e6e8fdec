"""Tests for offerflow.rules.expressions: parsing, type checking, null semantics and batch/one agreement."""

from __future__ import annotations

import functools
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from offerflow.rules.expressions import Expression, ExpressionError, parse_expression, schema_from_frames

SCHEMA = {
    "profile.age": "number",
    "profile.country": "string",
    "profile.loyalty_tier": "string",
    "profile.favorite_category": "string",
    "profile.vip": "bool",
    "profile.propensity.purchase_30d.score": "number",
    "profile.propensity.purchase_30d.probability": "number",
    "offer.category": "string",
    "offer.priority": "number",
    "ai_score": "number",
}

# Four profile x offer pairs; row 2 is mostly null.
COLUMNS = {
    "profile.age": np.array([17.0, 30.0, np.nan, 45.0]),
    "profile.country": np.array(["DE", "US", None, "FR"], dtype=object),
    "profile.loyalty_tier": pd.Series(["gold", "bronze", "silver", None]),
    "profile.favorite_category": np.array(["shoes", "books", "toys", None], dtype=object),
    "profile.vip": pd.Series([True, None, False, True], dtype="boolean"),
    "profile.propensity.purchase_30d.score": pd.Series([80, 20, None, 71], dtype="Int64"),
    "profile.propensity.purchase_30d.probability": np.array([0.5, 0.25, np.nan, 0.0]),
    "offer.category": np.array(["shoes", "toys", "toys", "food"], dtype=object),
    "offer.priority": np.array([10, 5, 3, 0]),
    "ai_score": [2.0, 4.0, 1.0, None],
}


def row(i: int) -> dict[str, object]:
    return {name: (col.iloc[i] if isinstance(col, pd.Series) else col[i]) for name, col in COLUMNS.items()}


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def check(text: str, kind: str, expected: list) -> None:
    """Both evaluators give `expected` on COLUMNS (NaN matches NaN)."""
    expr = parse_expression(text, SCHEMA, kind=kind)  # type: ignore[arg-type]
    batch = expr.evaluate_batch(COLUMNS)
    one = [expr.evaluate_one(row(i)) for i in range(4)]
    assert batch.dtype == (np.bool_ if kind == "rule" else np.float64)
    for got_batch, got_one, want in zip(batch.tolist(), one, expected, strict=True):
        assert same(got_batch, want), (text, batch, expected)
        assert same(got_one, want), (text, one, expected)
        assert type(got_one) is (bool if kind == "rule" else float)


NAN = math.nan


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('profile.age >= 18 and profile.country in ["DE", "FR"]', [False, False, False, True]),
        ('profile.loyalty_tier != "bronze"', [True, False, True, False]),
        ("profile.propensity.purchase_30d.score > 70", [True, False, False, True]),
        ("profile.vip", [True, False, False, True]),
        ("not profile.vip", [False, False, True, False]),
        ("!profile.vip", [False, False, True, False]),
        ("profile.vip || profile.age > 40", [True, False, False, True]),
        ("profile.vip && profile.age > 40", [False, False, False, True]),
        ('profile.country not in ["DE", "FR"]', [False, True, False, False]),
        ("offer.category in [profile.favorite_category, 'food']", [True, False, True, True]),
        ('"o" in profile.loyalty_tier', [True, True, False, False]),
        ('"o" not in profile.loyalty_tier', [False, False, True, False]),
        ("offer.priority in [3, 10]", [True, False, True, False]),
        ("profile.vip == true", [True, False, False, True]),
        ("profile.vip != False", [True, False, False, True]),
        ('profile.country < "F"', [True, False, False, False]),
        ("is_null(profile.country)", [False, False, True, False]),
        ('contains(offer.category, "o")', [True, True, True, True]),
        ('starts_with(lower(profile.country), "d")', [True, False, False, False]),
        ('upper(offer.category) == "TOYS"', [False, True, True, False]),
        ("not profile.age > 20 or profile.vip", [True, False, True, True]),  # null > 20 is false
        ("(-offer.priority < -4) == true", [True, True, False, False]),
        ("true", [True, True, True, True]),
        ("true or false and false", [True] * 4),  # 'and' binds tighter than 'or'
        ("not false and false", [False] * 4),  # 'not' binds tighter than 'and'
        ("-2 * 3 + 1 == -5 && 10 - 2 - 3 == 5 && 8 / 4 / 2 == 1", [True] * 4),
        ("1 + 2 * 3 in [7]", [True] * 4),
        ("null", [False, False, False, False]),
        ("if(profile.vip, 'a', 'b') == 'a'", [True, False, False, True]),
    ],
)
def test_rules(text: str, expected: list) -> None:
    check(text, "rule", expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("if(offer.category == profile.favorite_category, offer.priority * 2, offer.priority)", [20, 5, 6, 0]),
        ("ai_score * (1 + profile.propensity.purchase_30d.probability)", [3, 5, NAN, NAN]),
        ("1 + 2 * 3 - 4 / 2", [5, 5, 5, 5]),
        ("(1 + 2) * 3 % 4", [1, 1, 1, 1]),
        ("-7 % 3", [2, 2, 2, 2]),
        ("offer.priority / (offer.priority - 5)", [2, NAN, -1.5, 0]),
        ("1 % (offer.priority - 5)", [1, NAN, -1, -4]),
        ("min(offer.priority, 4, ai_score)", [2, 4, 1, NAN]),
        ("max(offer.priority, ai_score)", [10, 5, 3, NAN]),
        ("abs(offer.priority - 5)", [5, 0, 2, 5]),
        ("log(offer.priority)", [math.log(10), math.log(5), math.log(3), NAN]),
        ("exp(0) + round(2.5) + round(-0.5) + round(3.5)", [7, 7, 7, 7]),
        ("coalesce(profile.age, ai_score, -1)", [17, 30, 1, 45]),
        ("if(profile.vip, 1, 0)", [1, 0, 0, 1]),
        ("if(profile.vip, null, 2)", [NAN, 2, 2, NAN]),
        ("profile.age + null", [NAN, NAN, NAN, NAN]),
        ("1e3 + .5 + 2.", [1002.5] * 4),
    ],
)
def test_formulas(text: str, expected: list) -> None:
    check(text, "formula", expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("'it\\'s' == \"it's\"", True),
        ('"a\\"b\\\\c\\n\\t\\u00e9" == "a\\u0022b\\\\c\\n\\t\u00e9"', True),
        ("'caf\u00e9' == 'café'", True),
    ],
)
def test_string_escapes(text: str, expected: bool) -> None:
    assert parse_expression(text, {}, kind="rule").evaluate_one({}) is expected


# ---------------------------------------------------------------- null semantics


MISSING = object()  # the names are absent from the values / columns
NULL_CASES = [
    # (rule, value of x) -> expected; x is a nullable bool, n a nullable number
    ("x and false", False),
    ("false and x", False),
    ("x and true", False),  # null, so not eligible
    ("not (x and true)", False),  # not null is null
    ("x or true", True),
    ("x or false", False),
    ("not x", False),
    ("not not x", False),
    ("is_null(x)", True),
    ("is_null(x and false)", False),
    ("is_null(x or false)", True),
    ("is_null(not x)", True),
    ("n == 1", False),
    ("n != 1", False),
    ("n < 1 or n >= 1", False),
    ("n in [1, 2]", False),
    ("n not in [1, 2]", False),
    ("is_null(n + 1)", True),
    ("is_null(n * 0)", True),
    ("is_null(1 / 0)", True),
    ("is_null(1 % 0)", True),
    ("is_null(log(0))", True),
    ("is_null(log(-1))", True),
    ("is_null(min(1, n))", True),
    ("is_null(abs(n))", True),
    ("if(x, false, true)", True),  # a null condition takes the else branch
    ("coalesce(n, 3) == 3", True),
    ("is_null(coalesce(n, n))", True),
    ("is_null(lower(s))", True),
    ("contains(s, '')", False),
    ("'' in s", False),
    ("'' not in s", False),
    ("s != 'a'", False),
    ("1 in [n, 1]", True),  # null elements never match, others still can
    ("2 not in [n, 1]", True),
]


@pytest.mark.parametrize(("text", "expected"), NULL_CASES)
@pytest.mark.parametrize("null", [None, math.nan, pd.NA, MISSING])
def test_null_semantics(text: str, expected: bool, null: object) -> None:
    schema = {"x": "bool", "n": "number", "s": "string"}
    expr = parse_expression(text, schema, kind="rule")
    values = {} if null is MISSING else {"x": null, "n": null, "s": null}
    assert expr.evaluate_one(values) is expected
    if null is MISSING:
        columns: dict[str, object] = {}
    else:
        columns = {"x": pd.Series([null], dtype=object), "n": np.array([null], dtype=object), "s": [null]}
    assert expr.evaluate_batch(columns, n_rows=1).tolist() == [expected]


def test_null_formula_is_nan() -> None:
    expr = parse_expression("n * 2", {"n": "number"}, kind="formula")
    assert math.isnan(expr.evaluate_one({"n": None}))
    assert math.isnan(expr.evaluate_one({}))
    assert np.isnan(expr.evaluate_batch({"n": [None, 1.0]})).tolist() == [True, False]


def test_overflow_is_inf_and_inf_minus_inf_is_null() -> None:
    expr = parse_expression("exp(n) * 10", {"n": "number"}, kind="formula")
    assert expr.evaluate_one({"n": 1000}) == math.inf
    assert expr.evaluate_batch({"n": np.array([1000.0])}).tolist() == [math.inf]
    rule = parse_expression("is_null(exp(n) - exp(n))", {"n": "number"}, kind="rule")
    assert rule.evaluate_one({"n": 1000}) is True
    assert rule.evaluate_batch({"n": [1000.0]}).tolist() == [True]


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("text", "kind", "message"),
    [
        ("", "rule", "column 1: empty expression"),
        ("   ", "rule", "column 1: empty expression"),
        ("profile.agee > 18", "rule", "column 1: unknown name 'profile.agee' (did you mean 'profile.age'?)"),
        ("zzz > 18", "rule", "column 1: unknown name 'zzz'"),
        ("iff(true, 1, 2)", "formula", "column 1: unknown function 'iff' (did you mean 'if'?)"),
        ("frobnicate(1)", "formula", "column 1: unknown function 'frobnicate'"),
        ("if(true, 1)", "formula", "column 1: if() takes 3 arguments, got 2"),
        ("abs(1, 2)", "formula", "column 1: abs() takes 1 argument, got 2"),
        ("1 + min(1)", "formula", "column 5: min() takes at least 2 arguments, got 1"),
        ('"a" + 1', "formula", "column 5: '+' needs numbers, got string and number"),
        ("profile.vip * 2", "formula", "column 13: '*' needs numbers, got bool and number"),
        ('profile.age > "x"', "rule", "column 13: cannot compare number with string"),
        ("profile.vip < true", "rule", "column 13: '<' cannot order bool values; use '==' or '!='"),
        ("profile.age == null", "rule", "column 13: comparing with null is always false; use is_null(...)"),
        ("if(profile.age, 1, 2)", "formula", "column 4: argument 1 of if() must be bool, got number"),
        ("if(true, 1, 'a')", "formula", "column 1: the branches of if() must have the same type, got number and string"),
        ("coalesce(1, 'a')", "formula", "column 1: the arguments of coalesce() must have the same type, got number and string"),
        ("log('a')", "formula", "column 5: argument 1 of log() must be number, got string"),
        ("lower(1) == 'a'", "rule", "column 7: argument 1 of lower() must be string, got number"),
        ("profile.age + 1", "rule", "column 1: a rule must be bool, got number"),
        ("profile.age > 1", "formula", "column 1: a formula must be number, got bool"),
        ("profile.age and true", "rule", "column 1: the operands of 'and' must be bool, got number"),
        ("true || 'x'", "rule", "column 9: the operands of '||' must be bool, got string"),
        ("not 1", "rule", "column 5: the operand of 'not' must be bool, got number"),
        ("-'a' == 'b'", "rule", "column 2: the operand of '-' must be number, got string"),
        ("profile.age in ['a', 1]", "rule", "column 17: cannot compare number with string"),
        ("profile.age in [1, null]", "rule", "column 20: null in a list never matches; use is_null(...)"),
        ("1 in profile.age", "rule", "column 6: 'in' needs a list or a string on the right, got number"),
        ("1 not in 'abc'", "rule", "column 1: 'not in' with a string on the right needs a string on the left, got number"),
        ("[1, 2]", "rule", "column 1: a list is only allowed on the right of 'in'"),
        ("(profile.age > 1", "rule", "column 17: expected ')', found end of expression"),
        ("profile.age > 1)", "rule", "column 16: unexpected ')'"),
        ("min(1 2)", "formula", "column 7: expected ',' or ')', found '2'"),
        ("profile.age in [1, 2", "rule", "column 21: expected ',' or ']', found end of expression"),
        ("profile.country == 'DE", "rule", "column 20: unterminated string"),
        ("'a\\q' == 'b'", "rule", "column 3: invalid escape '\\q'"),
        ("'\\u12' == 'b'", "rule", "column 2: invalid escape '\\u': expected 4 hex digits"),
        ("profile.age = 18", "rule", "column 13: unexpected character '=' (did you mean '=='?)"),
        ("true & false", "rule", "column 6: unexpected character '&' (did you mean '&&'?)"),
        ("profile.age @ 1", "rule", "column 13: unexpected character '@'"),
        ("1 < profile.age < 3", "rule", "column 17: comparisons cannot be chained; combine them with 'and'"),
        ("profile.age >", "rule", "column 14: unexpected end of expression"),
        ("profile.age 18", "rule", "column 13: unexpected '18'"),
        ("not in [1]", "rule", "column 5: unexpected 'in'"),
        ("(" * 300 + "1" + ")" * 300, "formula", "column 33: expression is nested too deeply (more than 32 levels)"),
        ("-" * 150 + "1", "formula", "column 33: expression is nested too deeply (more than 32 levels)"),
    ],
)
def test_errors(text: str, kind: str, message: str) -> None:
    with pytest.raises(ExpressionError) as info:
        parse_expression(text, SCHEMA, kind=kind, source="offers.csv: offer 'o1': eligibility")  # type: ignore[arg-type]
    assert str(info.value) == f"offers.csv: offer 'o1': eligibility: {message}"
    assert isinstance(info.value, ValueError)


def test_error_default_source_and_attributes() -> None:
    with pytest.raises(ExpressionError, match=r"^expression: column 3: unexpected '\)'$") as info:
        parse_expression("1 )", {}, kind="formula")
    assert (info.value.source, info.value.column, info.value.message) == ("expression", 3, "unexpected ')'")


def test_null_on_the_left_of_in_is_rejected() -> None:
    for text in ("null in []", "null not in 'abc'", "null in [1]"):
        with pytest.raises(ExpressionError, match="column 6: comparing with null is always false"):
            parse_expression(text, {}, kind="rule")


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="kind must be"):
        parse_expression("1", {}, kind="score")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="schema types must be one of"):
        parse_expression("1", {"x": "int"}, kind="formula")
    expr = parse_expression("x + 1", {"x": "number"}, kind="formula")
    with pytest.raises(ValueError, match="has shape"):
        expr.evaluate_batch({"x": [1.0, 2.0]}, n_rows=3)
    with pytest.raises(ValueError, match="pass n_rows"):
        expr.evaluate_batch({})


# ---------------------------------------------------------------- the Expression object


def test_expression_attributes() -> None:
    text = "if(offer.category == profile.favorite_category, offer.priority * 2, ai_score)"
    expr = parse_expression(text, SCHEMA, kind="formula")
    assert isinstance(expr, Expression)
    assert (expr.text, expr.kind, expr.result_type) == (text, "formula", "number")
    assert expr.names == frozenset({"offer.category", "profile.favorite_category", "offer.priority", "ai_score"})
    with pytest.raises(AttributeError):
        expr.text = "1"  # type: ignore[misc]
    assert parse_expression("True", {}, kind="rule").result_type == "bool"
    assert hash(expr) == hash(parse_expression(text, SCHEMA, kind="formula"))


def test_batch_accepts_dataframe_and_constant_expressions() -> None:
    frame = pd.DataFrame({"offer.priority": [1, 2, 3]})
    expr = parse_expression("offer.priority * 2", SCHEMA, kind="formula")
    assert expr.evaluate_batch(frame).tolist() == [2, 4, 6]
    assert parse_expression("1 + 1", {}, kind="formula").evaluate_batch(frame).tolist() == [2, 2, 2]
    assert parse_expression("true", {}, kind="rule").evaluate_batch({}, n_rows=2).tolist() == [True, True]


def test_batch_does_not_modify_or_alias_inputs() -> None:
    country = np.array(["DE", None], dtype=object)
    vip = np.array([True, False])
    expr = parse_expression("profile.vip and profile.country == 'DE'", SCHEMA, kind="rule")
    result = expr.evaluate_batch({"profile.country": country, "profile.vip": vip})
    assert result.tolist() == [True, False]
    assert country[1] is None
    result[:] = False
    assert vip.tolist() == [True, False]


def test_string_columns_of_other_dtypes() -> None:
    expr = parse_expression("profile.country == '1' or profile.country == 'x'", SCHEMA, kind="rule")
    for column in ([1, 2], np.array([1, 2]), pd.Series(["1", "2"], dtype="category"), np.array(["1", "2"])):
        assert expr.evaluate_batch({"profile.country": column}).tolist() == [True, False]
    assert expr.evaluate_one({"profile.country": 1}) is True
    assert expr.evaluate_batch({"profile.country": np.array([1, "x", None], dtype=object)}).tolist() == [True, True, False]


# ---------------------------------------------------------------- schema_from_frames


def test_schema_from_frames() -> None:
    profiles = pd.DataFrame(
        {
            "profile_id": ["p1", "p2"],
            "age": [30, 40],
            "vip": [True, False],
            "opted_in": pd.Series([True, None], dtype=object),
            "spend": pd.Series([1.5, None], dtype=object),
            "signup": pd.to_datetime(["2024-01-01", "2024-02-01"]),
        }
    )
    offers = pd.DataFrame({"offer_id": ["o1"], "priority": [1.0], "category": pd.Series(["x"], dtype="category")})
    schema = schema_from_frames(profiles, offers, extra={"ai_score": "number", "profile.age": "string"})
    assert schema == {
        "profile.profile_id": "string",
        "profile.age": "string",
        "profile.vip": "bool",
        "profile.opted_in": "bool",
        "profile.spend": "number",
        "profile.signup": "string",
        "offer.offer_id": "string",
        "offer.priority": "number",
        "offer.category": "string",
        "ai_score": "number",
    }
    assert schema_from_frames() == {}
    with pytest.raises(ValueError, match="type of 'x' must be one of"):
        schema_from_frames(extra={"x": "float"})


# ---------------------------------------------------------------- batch and one agree


PROP_SCHEMA = {"a": "number", "b": "number", "s": "string", "t": "string", "p": "bool", "q": "bool"}
NAMES = {"number": ["a", "b"], "string": ["s", "t"], "bool": ["p", "q"]}
LITERALS = {
    "number": st.sampled_from(["0", "1", "2.5", "-3", "1e308", "0.1", "7"]),
    "string": st.sampled_from(["''", "'a'", "'A'", "'ab'", "'\\u00df'", "'b\\'a'"]),
    "bool": st.sampled_from(["true", "false", "True"]),
}


@functools.cache
def expressions(type_: str, depth: int = 3) -> st.SearchStrategy[str]:
    """Random well-typed expression text of `type_`; every compound is parenthesized."""
    leaf = st.one_of(st.sampled_from(NAMES[type_]), LITERALS[type_])
    if depth == 0:
        return leaf
    sub = {t: expressions(t, depth - 1) for t in ("number", "string", "bool")}

    def fmt(pattern: str, *parts: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        return st.tuples(*parts).map(lambda xs: pattern.format(*xs))

    same = sub[type_]
    options = [
        leaf,
        fmt("if({}, {}, {})", sub["bool"], same, same),
        fmt("if({}, {}, null)", sub["bool"], same),
        fmt("coalesce({}, {})", same, same),
        fmt("coalesce(null, {})", same),
    ]
    if type_ == "number":
        ops = st.sampled_from(["+", "-", "*", "/", "%"])
        funcs = st.sampled_from(["abs", "log", "exp", "round", "-"])
        options += [
            fmt("({} {} {})", same, ops, same),
            fmt("{}({})", funcs, same),
            fmt("{}({}, {}, {})", st.sampled_from(["min", "max"]), same, same, same),
            fmt("({} + null)", same),
        ]
    elif type_ == "string":
        options.append(fmt("{}({})", st.sampled_from(["lower", "upper"]), same))
    else:
        cmp = st.sampled_from(["==", "!=", "<", "<=", ">", ">="])
        options += [
            fmt("({} {} {})", same, st.sampled_from(["and", "or", "&&", "||"]), same),
            fmt("({}{})", st.sampled_from(["not ", "!"]), same),
            fmt("({} {} {})", sub["number"], cmp, sub["number"]),
            fmt("({} {} {})", sub["string"], cmp, sub["string"]),
            fmt("({} {} {})", same, st.sampled_from(["==", "!="]), same),
            fmt("({} {} [{}, {}])", sub["number"], st.sampled_from(["in", "not in"]), sub["number"], LITERALS["number"]),
            fmt("({} {} [{}, {}])", sub["string"], st.sampled_from(["in", "not in"]), LITERALS["string"], sub["string"]),
            fmt("({} {} {})", sub["string"], st.sampled_from(["in", "not in"]), sub["string"]),
            fmt("{}({}, {})", st.sampled_from(["contains", "starts_with"]), sub["string"], sub["string"]),
            fmt("is_null({})", st.one_of(sub["number"], sub["string"], sub["bool"])),
        ]
    return st.one_of(*options)


VALUES = {
    "number": st.one_of(
        st.none(),
        st.just(math.nan),
        st.sampled_from([0.0, -0.0, 1.0, -1.0, 2.5, 3.0, 1e308, -1e308, math.inf, -math.inf]),
        st.floats(allow_nan=False, allow_infinity=False, width=64),
        st.integers(-10, 10),
    ),
    "string": st.one_of(st.none(), st.text(alphabet="aAbß'İ", max_size=3)),
    "bool": st.one_of(st.none(), st.booleans()),
}


@st.composite
def expression_and_columns(draw: st.DrawFn) -> tuple[str, str, dict[str, object], int]:
    kind = draw(st.sampled_from(["rule", "formula"]))
    text = draw(expressions("bool" if kind == "rule" else "number"))
    n = draw(st.integers(1, 6))
    columns: dict[str, object] = {}
    for name, type_ in PROP_SCHEMA.items():
        shape = draw(st.sampled_from(["object", "series", "inferred", "missing"]))
        if shape == "missing":
            continue
        values = draw(st.lists(VALUES[type_], min_size=n, max_size=n))
        column = np.array(values, dtype=object)
        if shape == "object":
            columns[name] = column
        else:  # "inferred" lets pandas pick float64, str, ... as reading a file would
            columns[name] = pd.Series(column, dtype=object if shape == "series" else None)
    return kind, text, columns, n


@settings(max_examples=500, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(expression_and_columns())
def test_batch_and_one_agree(case: tuple[str, str, dict[str, object], int]) -> None:
    kind, text, columns, n = case
    expr = parse_expression(text, PROP_SCHEMA, kind=kind)  # type: ignore[arg-type]
    batch = expr.evaluate_batch(columns, n_rows=n)
    assert batch.shape == (n,)
    for i in range(n):
        values = {name: np.asarray(col)[i] for name, col in columns.items()}
        one = expr.evaluate_one(values)
        assert same(float(batch[i]), float(one)), (text, i, values, batch[i], one)


# ---------------------------------------------------------------- scale


def test_large_batch_runs() -> None:
    n = 200_000
    rng = np.random.default_rng(0)
    categories = np.array(["shoes", "books", "toys", "food", None], dtype=object)
    columns = {
        "offer.category": categories[rng.integers(0, 5, n)],
        "profile.favorite_category": pd.Series(categories[rng.integers(0, 5, n)]),
        "offer.priority": rng.integers(0, 100, n),
    }
    expr = parse_expression(
        "if(offer.category == profile.favorite_category, offer.priority * 2, offer.priority)", SCHEMA, kind="formula"
    )
    result = expr.evaluate_batch(columns)
    assert result.shape == (n,) and result.dtype == np.float64
    for i in range(0, n, 40_000):
        row_values = {name: np.asarray(col)[i] for name, col in columns.items()}
        assert same(result[i], expr.evaluate_one(row_values))
