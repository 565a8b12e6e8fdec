"""Type checking and compiling of the rule/formula language (`offerflow.rules.expressions`):
`Compiler` walks a syntax tree from `offerflow.rules.parser`, checks types and names against the
schema, and builds the scalar and batch closures of every subtree in one pass."""

from __future__ import annotations

import difflib
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from offerflow.rules import values as rules_values
from offerflow.rules.values import BOOL, NULL, NUMBER, STRING, Batch, BatchFn, OneFn
from offerflow.rules.parser import Binary, Call, ExpressionError, ListExpr, Literal, Name, Node, Unary

#: name -> (minimum, maximum or None for any number of) arguments.
_ARITY: dict[str, tuple[int, int | None]] = {
    "if": (3, 3), "min": (2, None), "max": (2, None), "abs": (1, 1), "log": (1, 1), "exp": (1, 1),
    "round": (1, 1), "lower": (1, 1), "upper": (1, 1), "contains": (2, 2), "starts_with": (2, 2),
    "is_null": (1, 1), "coalesce": (2, None),
}  # fmt: skip
# A backstop: the parser already bounds nesting (parser.MAX_DEPTH) and chains of operators are
# compiled with loops, so a valid tree never gets near this.
_MAX_DEPTH = 400
_ARITH = {"+": operator.add, "-": operator.sub, "*": operator.mul}
_ARITH_OPS = frozenset({"+", "-", "*", "/", "%"})


@dataclass(frozen=True, slots=True)
class _Typed:
    """A type-checked subtree: its type and its two compiled evaluators."""

    type: str
    one: OneFn
    batch: BatchFn
    constant: Any = None  # the literal's value, so that `x in [...]` of literals can use a set
    is_constant: bool = False


class _Link(NamedTuple):
    """One operator of a left-associative chain: `one(x, v)` and `batch(x, env)` apply it to the value so
    far `x`; `left` is the checked left operand of the first link of the chain (None for the others)."""

    type: str
    left: _Typed | None
    one: Callable[..., Any]
    batch: Callable[..., Batch]


_Step = Callable[[Binary, "_Typed | None", _Typed], _Link]


# ---------------------------------------------------------------- type checking and compiling


class Compiler:
    """Type-checks a syntax tree and compiles it into scalar and batch closures in one pass."""

    def __init__(self, schema: Mapping[str, str], source: str) -> None:
        self.schema, self.source = schema, source
        self.names: dict[str, str] = {}
        self.depth = 0

    def fail(self, col: int, message: str) -> ExpressionError:
        return ExpressionError(self.source, col, message)

    def build(self, node: Node) -> _Typed:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise self.fail(node.start, "expression is nested too deeply")
        try:
            if isinstance(node, Literal):
                return self.literal(node)
            if isinstance(node, Name):
                return self.name(node)
            if isinstance(node, Unary):
                return self.unary(node)
            if isinstance(node, Binary):
                return self.binary(node)
            if isinstance(node, Call):
                return self.call(node)
            raise self.fail(node.col, "a list is only allowed on the right of 'in'")
        finally:
            self.depth -= 1

    def coerce(self, typed: _Typed, type_: str) -> _Typed:
        """Give a null-typed subtree (null, if(c, null, null), ...) the type its context expects."""
        if typed.type != NULL:
            return typed
        null = rules_values.batch_null(type_)
        return _Typed(type_, lambda v: None, lambda env: null, None, True)

    def literal(self, node: Literal) -> _Typed:
        value = node.value
        if value is None:
            return _Typed(NULL, lambda v: None, lambda env: None, None, True)
        type_ = BOOL if isinstance(value, bool) else NUMBER if isinstance(value, float) else STRING
        const = rules_values.batch_constant(value, type_)
        return _Typed(type_, lambda v: value, lambda env: const, value, True)

    def name(self, node: Name) -> _Typed:
        name = node.name
        if name not in self.schema:
            close = difflib.get_close_matches(name, list(self.schema), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise self.fail(node.col, f"unknown name '{name}'{hint}")
        type_ = self.names[name] = self.schema[name]
        convert = rules_values.ONE_CONVERT[type_]
        return _Typed(type_, lambda v: convert(v.get(name)), lambda env: env[name])

    def expect(self, node: Node, type_: str, what: str) -> _Typed:
        return self.checked(self.build(node), node, type_, what)

    def checked(self, typed: _Typed, node: Node, type_: str, what: str) -> _Typed:
        if typed.type not in (type_, NULL):
            raise self.fail(node.start, f"{what} must be {type_}, got {typed.type}")
        return self.coerce(typed, type_)

    def unary(self, node: Unary) -> _Typed:
        if node.op == "-":
            arg = self.expect(node.operand, NUMBER, f"the operand of '{node.op_text}'")
            f, g = arg.one, arg.batch
            return _Typed(NUMBER, lambda v: None if (x := f(v)) is None else -x, lambda env: -g(env))
        arg = self.expect(node.operand, BOOL, f"the operand of '{node.op_text}'")
        f, g = arg.one, arg.batch

        def batch_not(env: dict[str, Any]) -> Batch:
            data, null = g(env)
            return (~data if null is None else ~data & ~null), null

        return _Typed(BOOL, lambda v: None if (x := f(v)) is None else not x, batch_not)

    def binary(self, node: Binary) -> _Typed:
        if node.op in ("and", "or"):
            return self.chain(node, ("and", "or"), self.logical_step)
        if node.op in ("in", "not in"):
            return self.membership(node)
        if node.op in rules_values.CMP:
            return self.comparison(node, self.build(node.left), self.build(node.right))
        return self.chain(node, _ARITH_OPS, self.arithmetic_step)

    def chain(self, node: Binary, ops: frozenset[str] | tuple[str, ...], step: _Step) -> _Typed:
        """A left-associative chain (`a or b or c` is `(a or b) or c`) compiled into loops over its links,
        applied in the tree's order, so compiling and evaluating stay flat however long the chain is."""
        spine = [node]
        while isinstance(spine[-1].left, Binary) and spine[-1].left.op in ops:
            spine.append(spine[-1].left)
        spine.reverse()
        links = [step(spine[0], self.build(spine[0].left), self.build(spine[0].right))]
        links += [step(link, None, self.build(link.right)) for link in spine[1:]]
        first, first_batch = links[0].left.one, links[0].left.batch  # type: ignore[union-attr]
        ones, batches = [link.one for link in links], [link.batch for link in links]

        def one(v: Mapping[str, Any]) -> Any:
            x = first(v)
            for fn in ones:
                x = fn(x, v)
            return x

        def batch(env: dict[str, Any]) -> Batch:
            x = first_batch(env)
            for fn in batches:
                x = fn(x, env)
            return x

        return _Typed(links[0].type, one, batch)

    def logical_step(self, node: Binary, left: _Typed | None, right: _Typed) -> _Link:
        """One `and`/`or` of a chain: three-valued, null unless the absorbing value decides."""
        what = f"the operands of '{node.op_text}'"
        if left is not None:
            left = self.checked(left, node.left, BOOL, what)
        right = self.checked(right, node.right, BOOL, what)
        g, gb = right.one, right.batch
        absorbing = node.op == "or"  # what decides alone: False for and, True for or

        def one_step(a: bool | None, v: Mapping[str, Any]) -> bool | None:
            if a is absorbing or (b := g(v)) is absorbing:
                return absorbing
            return None if a is None or b is None else not absorbing

        if node.op == "and":

            def batch_step(x: Batch, env: dict[str, Any]) -> Batch:
                (a, na), (b, nb) = x, gb(env)
                if na is None and nb is None:
                    return a & b, None
                # Null where either side is null, unless the other side is definitely false.
                a_false = ~a if na is None else ~a & ~na
                b_false = ~b if nb is None else ~b & ~nb
                return a & b, rules_values.mask_or(na, nb) & ~(a_false | b_false)

        else:

            def batch_step(x: Batch, env: dict[str, Any]) -> Batch:
                (a, na), (b, nb) = x, gb(env)
                data = a | b
                null = rules_values.mask_or(na, nb)
                return data, (None if null is None else null & ~data)

        return _Link(BOOL, left, one_step, batch_step)

    def arithmetic_step(self, node: Binary, left: _Typed | None, right: _Typed) -> _Link:
        """One `+ - * / %` of a chain: null if either side is null, or on division by zero or NaN."""
        left_type = NUMBER if left is None else left.type
        if left_type not in (NUMBER, NULL) or right.type not in (NUMBER, NULL):
            raise self.fail(node.col, f"'{node.op}' needs numbers, got {left_type} and {right.type}")
        if left is not None:
            left = self.coerce(left, NUMBER)
        right = self.coerce(right, NUMBER)
        g, gb = right.one, right.batch
        if node.op in _ARITH:
            op = _ARITH[node.op]

            def one_step(a: float | None, v: Mapping[str, Any]) -> float | None:
                if a is None or (b := g(v)) is None:
                    return None
                return rules_values.nan_to_null(op(a, b))

            return _Link(NUMBER, left, one_step, lambda x, env: op(x, gb(env)))
        op = operator.truediv if node.op == "/" else operator.mod
        npop = np.divide if node.op == "/" else np.remainder

        def one_div(a: float | None, v: Mapping[str, Any]) -> float | None:
            if a is None or (b := g(v)) is None or b == 0:
                return None
            return rules_values.nan_to_null(op(a, b))

        def batch_div(a: Batch, env: dict[str, Any]) -> Batch:
            b = gb(env)
            return np.where(b == 0, np.nan, npop(a, b))

        return _Link(NUMBER, left, one_div, batch_div)

    def check_comparable(self, col: int, op: str, left: _Typed, right: _Typed) -> str:
        if NULL in (left.type, right.type):
            raise self.fail(col, "comparing with null is always false; use is_null(...)")
        if left.type != right.type:
            raise self.fail(col, f"cannot compare {left.type} with {right.type}")
        if left.type == BOOL and op not in ("==", "!=", "in", "not in"):
            raise self.fail(col, f"'{op}' cannot order bool values; use '==' or '!='")
        return left.type

    def comparison(self, node: Binary, left: _Typed, right: _Typed) -> _Typed:
        type_ = self.check_comparable(node.col, node.op, left, right)
        op, name = rules_values.CMP[node.op], node.op
        f, g, fb, gb = left.one, right.one, left.batch, right.batch

        def one(v: Mapping[str, Any]) -> bool:
            return (a := f(v)) is not None and (b := g(v)) is not None and op(a, b)

        return _Typed(BOOL, one, lambda env: rules_values.batch_compare(name, fb(env), gb(env), type_))

    def membership(self, node: Binary) -> _Typed:
        negate = node.op == "not in"
        left = self.build(node.left)
        if left.type == NULL:
            raise self.fail(node.col, "comparing with null is always false; use is_null(...)")
        if isinstance(node.right, ListExpr):
            items = [self.build(item) for item in node.right.items]
            for item, item_node in zip(items, node.right.items):
                if item.type == NULL:
                    raise self.fail(item_node.start, "null in a list never matches; use is_null(...)")
                self.check_comparable(item_node.start, node.op, left, item)
            return self.in_list(left, items, negate)
        right = self.build(node.right)
        if right.type != STRING:
            raise self.fail(node.right.start, f"'{node.op}' needs a list or a string on the right, got {right.type}")
        if left.type != STRING:
            raise self.fail(node.start, f"'{node.op}' with a string on the right needs a string on the left, got {left.type}")
        return self.substring(right, left, "find", negate)

    def in_list(self, left: _Typed, items: list[_Typed], negate: bool) -> _Typed:
        type_ = left.type
        f, fb = left.one, left.batch
        if all(item.is_constant for item in items):
            values = frozenset(item.constant for item in items)

            def one(v: Mapping[str, Any]) -> bool:
                return (x := f(v)) is not None and ((x not in values) if negate else (x in values))

        else:
            item_fns = [item.one for item in items]

            def one(v: Mapping[str, Any]) -> bool:
                if (x := f(v)) is None:
                    return False
                hit = any((y := fn(v)) is not None and x == y for fn in item_fns)
                return not hit if negate else hit

        item_batch = [item.batch for item in items]

        def batch(env: dict[str, Any]) -> Batch:
            x = fb(env)
            hit: Any = np.False_
            for fn in item_batch:
                hit = hit | rules_values.batch_compare("==", x, fn(env), type_)[0]
            if not negate:
                return hit, None
            null = rules_values.nulls(x, type_)
            return (~hit if null is None else ~hit & ~null), None

        return _Typed(BOOL, one, batch)

    def substring(self, haystack: _Typed, needle: _Typed, how: str, negate: bool = False) -> _Typed:
        """`needle in haystack` ("find") or `haystack.startswith(needle)`, or their negation.

        Like a comparison, it is false (even when negated) if either side is null.
        """
        f, g, fb, gb = haystack.one, needle.one, haystack.batch, needle.batch
        test = (lambda s, sub: sub in s) if how == "find" else str.startswith

        def one(v: Mapping[str, Any]) -> bool:
            return (s := f(v)) is not None and (sub := g(v)) is not None and test(s, sub) != negate

        def batch(env: dict[str, Any]) -> Batch:
            s, sub = fb(env), gb(env)
            data = rules_values.substring_data(test, how, s, sub)
            if negate:
                data = ~data
            null = rules_values.mask_or(s[1], sub[1])
            return (data if null is None else data & ~null), None

        return _Typed(BOOL, one, batch)

    def call(self, node: Call) -> _Typed:
        name, args = node.func, node.args
        if name not in _ARITY:
            close = difflib.get_close_matches(name, list(_ARITY), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise self.fail(node.col, f"unknown function '{name}'{hint}")
        low, high = _ARITY[name]
        if len(args) < low or (high is not None and len(args) > high):
            plural = "s" if low != 1 else ""
            count = f"{low} argument{plural}" if low == high else f"at least {low} argument{plural}"
            raise self.fail(node.col, f"{name}() takes {count}, got {len(args)}")
        if name == "if":
            cond = self.expect(args[0], BOOL, "argument 1 of if()")
            return self.conditional(node, cond, self.build(args[1]), self.build(args[2]))
        if name == "is_null":
            arg = self.build(args[0])
            type_ = NUMBER if arg.type == NULL else arg.type
            f, fb = arg.one, self.coerce(arg, type_).batch

            def batch_is_null(env: dict[str, Any]) -> Batch:
                null = rules_values.nulls(fb(env), type_)
                return (np.False_ if null is None else null), None

            return _Typed(BOOL, lambda v: f(v) is None, batch_is_null)
        if name == "coalesce":
            return self.coalesce(node, [self.build(a) for a in args])
        if name in ("lower", "upper", "contains", "starts_with"):
            typed = [self.expect(a, STRING, f"argument {i} of {name}()") for i, a in enumerate(args, 1)]
            if name == "contains":
                return self.substring(typed[0], typed[1], "find")
            if name == "starts_with":
                return self.substring(typed[0], typed[1], "startswith")
            return self.case(name, typed[0])
        typed = [self.expect(a, NUMBER, f"argument {i} of {name}()") for i, a in enumerate(args, 1)]
        if name in ("min", "max"):
            return self.extremum(name, typed)
        return self.math(name, typed[0])

    def conditional(self, node: Call, cond: _Typed, a: _Typed, b: _Typed) -> _Typed:
        type_ = self.unify(node, [a, b], "the branches of if()")
        a, b = self.coerce(a, type_), self.coerce(b, type_)
        c, f, g, cb, fb, gb = cond.one, a.one, b.one, cond.batch, a.batch, b.batch
        return _Typed(
            type_,
            lambda v: f(v) if c(v) else g(v),  # a null condition takes the else branch
            lambda env: rules_values.select(cb(env)[0], fb(env), gb(env), type_),
        )

    def unify(self, node: Call, args: list[_Typed], what: str) -> str:
        types = [a.type for a in args if a.type != NULL]
        if any(t != types[0] for t in types):
            raise self.fail(node.col, f"{what} must have the same type, got {' and '.join(a.type for a in args)}")
        return types[0] if types else NULL

    def coalesce(self, node: Call, args: list[_Typed]) -> _Typed:
        type_ = self.unify(node, args, "the arguments of coalesce()")
        if type_ == NULL:
            return args[0]
        args = [self.coerce(a, type_) for a in args]
        fns, batches = [a.one for a in args], [a.batch for a in args]

        def one(v: Mapping[str, Any]) -> Any:
            for fn in fns:
                if (x := fn(v)) is not None:
                    return x
            return None

        def batch(env: dict[str, Any]) -> Batch:
            result = batches[0](env)
            for fn in batches[1:]:
                null = rules_values.nulls(result, type_)
                if null is not None:
                    other = fn(env)
                    result = rules_values.select(null, other, result, type_)
            return result

        return _Typed(type_, one, batch)

    def case(self, name: str, arg: _Typed) -> _Typed:
        f, fb = arg.one, arg.batch
        method = str.lower if name == "lower" else str.upper
        npfn = np.strings.lower if name == "lower" else np.strings.upper

        def batch(env: dict[str, Any]) -> Batch:
            data, null = fb(env)
            if not rules_values.numpy_strings_safe((data, null)):
                return rules_values.python_strings(method, (data, null)), null
            return npfn(rules_values.strings((data, null))).astype(object), null

        return _Typed(STRING, lambda v: None if (s := f(v)) is None else method(s), batch)

    def extremum(self, name: str, args: list[_Typed]) -> _Typed:
        fns, batches = [a.one for a in args], [a.batch for a in args]
        pick, reduce = (min, np.minimum) if name == "min" else (max, np.maximum)

        def one(v: Mapping[str, Any]) -> float | None:
            values = [fn(v) for fn in fns]
            return None if None in values else pick(values)

        def batch(env: dict[str, Any]) -> Batch:
            result = batches[0](env)
            for fn in batches[1:]:
                result = reduce(result, fn(env))  # NaN propagates, as null does
            return result

        return _Typed(NUMBER, one, batch)

    def math(self, name: str, arg: _Typed) -> _Typed:
        f, fb = arg.one, arg.batch
        if name == "log":
            return _Typed(
                NUMBER,
                lambda v: float(np.log(x)) if (x := f(v)) is not None and x > 0 else None,
                lambda env: np.where((x := fb(env)) > 0, np.log(np.where(x > 0, x, 1.0)), np.nan),
            )
        scalar: Callable[[float], float] = {"abs": abs, "exp": rules_values.one_exp,
                                            "round": lambda x: float(np.rint(x))}[name]
        vector = {"abs": np.abs, "exp": np.exp, "round": np.rint}[name]
        return _Typed(NUMBER, lambda v: None if (x := f(v)) is None else scalar(x), lambda env: vector(fb(env)))
