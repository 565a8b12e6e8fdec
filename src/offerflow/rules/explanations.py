"""Why a rule is false, and what each term of a formula is worth, for one profile x offer pair.

The decision step evaluates a rule as one compiled closure and learns only true or false. To tell a
person *why*, `RuleExplainer` keeps the rule's syntax tree and a compiled evaluator for every
subterm, and walks down from the root: a false `and` names its false (or null) operands, a false
`or` all of its operands, a false `not x` the true `x`; anything else (a comparison, `in`, a
function) is a leaf, reported with its text, its value and the values of the names it reads::

    profile.age >= 25 and profile.loyalty_tier in ["gold", "platinum"]
    -> [FailedTerm("profile.age >= 25", False, {"profile.age": 19.0})]

`FormulaExplainer` gives a formula's value and the value of each of its top-level terms (the
operands of a chain of `+`/`*`, or the arguments of a call such as `if(...)`) and of every name.
Both are for explanations, built once per rule and cached by the caller; never on the hot path.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from offerflow.rules.compiler import Compiler
from offerflow.rules.parser import Binary, Call, ListExpr, Literal, Name, Node, Unary, parse

#: How tightly each binary operator binds (higher: tighter), for printing subterms back as text.
_PRECEDENCE = {"or": 1, "and": 2, "==": 4, "!=": 4, "<": 4, "<=": 4, ">": 4, ">=": 4, "in": 4, "not in": 4,
               "+": 5, "-": 5, "*": 6, "/": 6, "%": 6}


@dataclass(frozen=True)
class FailedTerm:
    """A leaf of a false rule: its text, its value (False, or None for null) and the names it reads."""

    term: str
    value: Any
    names: dict[str, Any]

    def describe(self) -> str:
        """`profile.age >= 25 is false (profile.age = 19)`."""
        state = "null" if self.value is None else str(self.value).lower()
        given = ", ".join(f"{k} = {show_value(v)}" for k, v in self.names.items())
        return f"{self.term} is {state}" + (f" ({given})" if given else "")


def node_text(node: Node) -> str:
    """A subtree printed back as expression text (parenthesized where precedence needs it)."""
    if isinstance(node, Literal):
        return show_value(node.value)
    if isinstance(node, Name):
        return node.name
    if isinstance(node, ListExpr):
        return "[" + ", ".join(node_text(i) for i in node.items) + "]"
    if isinstance(node, Unary):
        inner = node_text(node.operand)
        if isinstance(node.operand, Binary):
            inner = f"({inner})"
        return f"not {inner}" if node.op_text == "not" else f"{node.op_text}{inner}"
    if isinstance(node, Call):
        return f"{node.func}(" + ", ".join(node_text(a) for a in node.args) + ")"
    level = _PRECEDENCE[node.op]
    left, right = node_text(node.left), node_text(node.right)
    if isinstance(node.left, Binary) and _PRECEDENCE[node.left.op] < level:
        left = f"({left})"
    if isinstance(node.right, Binary) and _PRECEDENCE[node.right.op] <= level:
        right = f"({right})"
    return f"{left} {node.op_text} {right}"


def show_value(value: Any) -> str:
    """A value as the expression language writes it: null, true, "text", 19."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _names(node: Node) -> list[str]:
    """The schema names a subtree reads, in order of first appearance."""
    out: dict[str, None] = {}
    todo = [node]
    while todo:
        n = todo.pop()
        if isinstance(n, Name):
            out[n.name] = None
        elif isinstance(n, Binary):
            todo += [n.right, n.left]
        elif isinstance(n, Unary):
            todo.append(n.operand)
        elif isinstance(n, (Call, ListExpr)):
            todo += reversed(n.args if isinstance(n, Call) else n.items)
    return list(out)


class _Terms:
    """A parsed expression whose subterms are compiled on first use and cached."""

    def __init__(self, text: str, schema: Mapping[str, str], source: str) -> None:
        self.text, self.root = text, parse(text, source)
        self.reads = _names(self.root)  # every name the expression reads
        self._compiler = Compiler(schema, source)
        self._compiled: dict[int, Any] = {}
        self._texts: dict[int, str] = {}
        self._names: dict[int, list[str]] = {}

    def node_text(self, node: Node) -> str:
        text = self._texts.get(id(node))
        if text is None:
            text = self._texts[id(node)] = node_text(node)
        return text

    def value(self, node: Node, values: Mapping[str, Any]) -> Any:
        """The subterm's value for one row (None: null)."""
        one = self._compiled.get(id(node))
        if one is None:
            one = self._compiled[id(node)] = self._compiler.build(node).one
        return one(values)

    def names(self, node: Node, values: Mapping[str, Any]) -> dict[str, Any]:
        names = self._names.get(id(node))
        if names is None:
            names = self._names[id(node)] = _names(node)
        return {name: _plain(values.get(name)) for name in names}


class RuleExplainer(_Terms):
    """Names the failing comparisons of a rule for one row of values (see the module docstring)."""

    def failures(self, values: Mapping[str, Any]) -> list[FailedTerm]:
        """The leaves that make the rule false ([] when it holds)."""
        if self.value(self.root, values) is True:
            return []
        return self._why_false(self.root, values)

    def _why_false(self, node: Node, values: Mapping[str, Any]) -> list[FailedTerm]:
        if isinstance(node, Binary) and node.op in ("and", "or"):
            operands = _chain(node, node.op)
            failing = [n for n in operands if self.value(n, values) is not True]
            return [f for n in failing for f in self._why_false(n, values)]
        if isinstance(node, Unary) and node.op == "not" and self.value(node.operand, values) is True:
            leaf = self.value(node, values)
            return [FailedTerm(self.node_text(node), leaf, self.names(node, values))]
        return [FailedTerm(self.node_text(node), self.value(node, values), self.names(node, values))]


class FormulaExplainer(_Terms):
    """A formula's value and its terms' values for one row."""

    def terms(self, values: Mapping[str, Any]) -> list[tuple[str, Any]]:
        """(text, value) of the whole formula, then of each top-level term, then of each name."""
        root = self.root
        if isinstance(root, Binary) and root.op in ("+", "-", "*", "/", "%"):
            parts = _chain(root, root.op)
        elif isinstance(root, Call):
            parts = list(root.args)
        else:
            parts = []
        out = [(self.text, _plain(self.value(root, values)))]
        out += [(self.node_text(n), _plain(self.value(n, values))) for n in parts if not isinstance(n, (Literal, Name))]
        out += list(self.names(root, values).items())
        return out


def _chain(node: Binary, op: str) -> list[Node]:
    """The operands of a left-associative chain of one operator (`a and b and c` -> [a, b, c])."""
    out: list[Node] = [node.right]
    while isinstance(node.left, Binary) and node.left.op == op:
        node = node.left
        out.append(node.right)
    out.append(node.left)
    return out[::-1]


def _plain(value: Any) -> Any:
    """A JSON-ready scalar: NumPy scalars as Python ones, NaN and missing values as None."""
    if value is None:
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value if isinstance(value, (bool, int, float, str)) else str(value)
