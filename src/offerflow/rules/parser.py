"""Tokenizer and recursive-descent parser for the offerflow expression language.

This module only turns text into a syntax tree; names, functions and types are
checked by :mod:`offerflow.rules.expressions`, which is the public entry point. The grammar,
from the loosest binding to the tightest::

    expr        := or
    or          := and (("or" | "||") and)*
    and         := not (("and" | "&&") not)*
    not         := "not" not | comparison
    comparison  := additive [compare_op additive]     # no chaining: 1 < x < 3 is an error
    compare_op  := "==" | "!=" | "<" | "<=" | ">" | ">=" | "in" | "not" "in"
    additive    := term (("+" | "-") term)*
    term        := unary (("*" | "/" | "%") unary)*
    unary       := ("-" | "!") unary | primary
    primary     := NUMBER | STRING | "true" | "false" | "True" | "False" | "null"
                 | NAME "(" [expr ("," expr)*] ")"     # function call
                 | NAME | "(" expr ")" | "[" [expr ("," expr)*] "]"

``not`` binds like Python's (``not a == b`` is ``not (a == b)``) and ``!`` like
CEL's (``!a == b`` is ``(!a) == b``), so that each reads as in its home language.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "Binary",
    "Call",
    "ExpressionError",
    "ListExpr",
    "Literal",
    "Name",
    "Node",
    "Unary",
    "parse",
]


class ExpressionError(ValueError):
    """An expression that cannot be parsed or type-checked, located by 1-based column."""

    def __init__(self, source: str, column: int, message: str) -> None:
        super().__init__(f"{source}: column {column}: {message}")
        self.source = source
        self.column = column
        self.message = message


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # "number", "string", "name", "keyword", "op" or "end"
    text: str  # as written, used in error messages
    value: object  # decoded value of numbers and strings
    col: int


class _AtColumn:
    """A node that starts at its own column (`col`); a binary operation starts at its left operand."""

    __slots__ = ()

    @property
    def start(self) -> int:
        return self.col  # every subclass has a `col` field


@dataclass(frozen=True, slots=True)
class Literal(_AtColumn):
    value: float | str | bool | None
    col: int


@dataclass(frozen=True, slots=True)
class Name(_AtColumn):
    name: str
    col: int


@dataclass(frozen=True, slots=True)
class ListExpr(_AtColumn):
    items: tuple[Node, ...]
    col: int


@dataclass(frozen=True, slots=True)
class Unary(_AtColumn):
    op: str  # "-" or "not" (for both "not" and "!")
    op_text: str
    operand: Node
    col: int


@dataclass(frozen=True, slots=True)
class Binary:
    op: str  # canonical: "&&" becomes "and", "||" becomes "or"
    op_text: str
    left: Node
    right: Node
    col: int  # column of the operator, where type errors point

    @property
    def start(self) -> int:
        node: Node = self
        while isinstance(node, Binary):  # a loop, not recursion: a chain of 1,000 'and's is fine
            node = node.left
        return node.start


@dataclass(frozen=True, slots=True)
class Call(_AtColumn):
    func: str
    args: tuple[Node, ...]
    col: int


Node = Literal | Name | ListExpr | Unary | Binary | Call

KEYWORDS = frozenset({"and", "or", "not", "in", "true", "false", "True", "False", "null"})
_NUMBER = re.compile(r"(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")  # ASCII digits only
# Dotted names are one token so that "profile.propensity.purchase_30d.score" is a single
# schema key; a space around a dot is therefore a syntax error, which is what we want.
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_OPERATORS = ("==", "!=", "<=", ">=", "&&", "||", "<", ">", "+", "-", "*", "/", "%", "!", "(", ")", "[", "]", ",")
_LONE_HINTS = {"=": "==", "&": "&&", "|": "||"}
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", "\\": "\\", "'": "'", '"': '"'}
_COMPARE_OPS = frozenset({"==", "!=", "<", "<=", ">", ">="})
#: Limits on what an expression may be (documented in docs/ranking-models.md); hostile or careless input
#: beyond them is an ExpressionError at the column where the limit is crossed, never a crash.
MAX_LENGTH = 10_000  # characters of expression text
MAX_DEPTH = 32  # nesting of parentheses, lists, function calls and unary operators ('-', '!', 'not')
MAX_LIST_ITEMS = 1_000  # items of one [...] list
MAX_STRING = 1_000  # characters of one string literal
# Control characters other than tab, newline and carriage return, and lone surrogates (not valid Unicode).
_BAD_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


def tokenize(text: str, source: str) -> list[Token]:
    """Split `text` into tokens, ending with an "end" token; raise ExpressionError on bad input."""
    tokens: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
            continue
        col = i + 1
        if ch in "'\"":
            value, i = _scan_string(text, i, source)
            tokens.append(Token("string", text[col - 1 : i], value, col))
        elif m := _NUMBER.match(text, i):
            value = float(m.group())
            if value == math.inf:
                raise ExpressionError(source, col, f"number {_clip(m.group())} is too large")
            tokens.append(Token("number", m.group(), value, col))
            i = m.end()
        elif m := _NAME.match(text, i):
            word = m.group()
            tokens.append(Token("keyword" if word in KEYWORDS else "name", word, None, col))
            i = m.end()
        else:
            op = next((op for op in _OPERATORS if text.startswith(op, i)), None)
            if op is None:
                hint = f" (did you mean '{_LONE_HINTS[ch]}'?)" if ch in _LONE_HINTS else ""
                raise ExpressionError(source, col, f"unexpected character {ch!r}{hint}")
            tokens.append(Token("op", op, None, col))
            i += len(op)
    tokens.append(Token("end", "", None, n + 1))
    return tokens


def _scan_string(text: str, i: int, source: str) -> tuple[str, int]:
    quote, start, i = text[i], i + 1, i + 1
    parts: list[str] = []
    while i < len(text):
        ch = text[i]
        if ch == quote:
            return _checked_string("".join(parts), start, source), i + 1
        if ch == "\\" and i + 1 < len(text):
            esc = text[i + 1]
            if esc == "u":
                digits = text[i + 2 : i + 6]
                if len(digits) != 4 or not all(c in "0123456789abcdefABCDEF" for c in digits):
                    raise ExpressionError(source, i + 1, "invalid escape '\\u': expected 4 hex digits")
                parts.append(chr(int(digits, 16)))
                i += 6
                continue
            if esc not in _ESCAPES:
                raise ExpressionError(source, i + 1, f"invalid escape '\\{esc}'")
            parts.append(_ESCAPES[esc])
            i += 2
            continue
        parts.append(ch)
        i += 1
    raise ExpressionError(source, start, "unterminated string")


def _checked_string(value: str, start: int, source: str) -> str:
    """`value` of the string literal opening at 0-based `start`, if within the limits of the language."""
    if len(value) > MAX_STRING:
        raise ExpressionError(source, start, f"string literal is longer than {MAX_STRING} characters")
    if bad := _BAD_CHARS.search(value):
        code = f"U+{ord(bad.group()):04X}"
        what = "a lone surrogate" if "\ud800" <= bad.group() <= "\udfff" else "a control character"
        raise ExpressionError(source, start, f"string literal contains {what} ({code}), which is not allowed")
    return value


def _clip(text: str) -> str:
    return text if len(text) <= 20 else f"{text[:17]}..."


def _describe(tok: Token) -> str:
    return "end of expression" if tok.kind == "end" else repr(_clip(tok.text))


class _Parser:
    def __init__(self, text: str, source: str) -> None:
        self.source = source
        self.tokens = tokenize(text, source)
        self.pos = 0
        self.depth = 0

    def nest(self, tok: Token) -> None:
        """Enter one more level of nesting at `tok`; deeper than MAX_DEPTH is an error located there."""
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.fail(tok, f"expression is nested too deeply (more than {MAX_DEPTH} levels)")

    def peek(self, ahead: int = 0) -> Token:
        return self.tokens[min(self.pos + ahead, len(self.tokens) - 1)]

    def advance(self) -> Token:
        tok = self.tokens[self.pos]
        self.pos += 1
        return tok

    def at(self, kind: str, *texts: str) -> bool:
        tok = self.peek()
        return tok.kind == kind and tok.text in texts

    def fail(self, tok: Token, message: str) -> ExpressionError:
        return ExpressionError(self.source, tok.col, message)

    def expect(self, text: str) -> Token:
        if not self.at("op", text):
            raise self.fail(self.peek(), f"expected '{text}', found {_describe(self.peek())}")
        return self.advance()

    def parse(self) -> Node:
        if self.peek().kind == "end":
            raise ExpressionError(self.source, 1, "empty expression")
        node = self.parse_or()
        if self.peek().kind != "end":
            raise self.fail(self.peek(), f"unexpected {_describe(self.peek())}")
        return node

    def parse_or(self) -> Node:
        return self._left_associative("or", "||", self.parse_and)

    def parse_and(self) -> Node:
        return self._left_associative("and", "&&", self.parse_not)

    def _left_associative(self, keyword: str, symbol: str, operand: Callable[[], Node]) -> Node:
        """`operand (op operand)*` grouped to the left, for `or`/`||` and `and`/`&&`."""
        node = operand()
        while self.at("op", symbol) or self.at("keyword", keyword):
            tok = self.advance()
            node = Binary(keyword, tok.text, node, operand(), tok.col)
        return node

    def parse_not(self) -> Node:
        if self.at("keyword", "not"):
            tok = self.advance()
            self.nest(tok)
            node = Unary("not", "not", self.parse_not(), tok.col)
            self.depth -= 1
            return node
        return self.parse_comparison()

    def compare_op(self) -> tuple[str, int] | None:
        """The comparison operator at the cursor and its token count, if any."""
        tok = self.peek()
        if tok.kind == "op" and tok.text in _COMPARE_OPS:
            return tok.text, 1
        if tok.kind == "keyword" and tok.text == "in":
            return "in", 1
        if tok.kind == "keyword" and tok.text == "not" and self.peek(1).text == "in" and self.peek(1).kind == "keyword":
            return "not in", 2
        return None

    def parse_comparison(self) -> Node:
        node = self.parse_additive()
        found = self.compare_op()
        if found is None:
            return node
        op, width = found
        tok = self.peek()
        self.pos += width
        node = Binary(op, op, node, self.parse_additive(), tok.col)
        if self.compare_op() is not None:
            raise self.fail(self.peek(), "comparisons cannot be chained; combine them with 'and'")
        return node

    def parse_additive(self) -> Node:
        node = self.parse_term()
        while self.at("op", "+", "-"):
            tok = self.advance()
            node = Binary(tok.text, tok.text, node, self.parse_term(), tok.col)
        return node

    def parse_term(self) -> Node:
        node = self.parse_unary()
        while self.at("op", "*", "/", "%"):
            tok = self.advance()
            node = Binary(tok.text, tok.text, node, self.parse_unary(), tok.col)
        return node

    def parse_unary(self) -> Node:
        if self.at("op", "-", "!"):
            tok = self.advance()
            self.nest(tok)
            node = Unary("-" if tok.text == "-" else "not", tok.text, self.parse_unary(), tok.col)
            self.depth -= 1
            return node
        return self.parse_primary()

    def parse_primary(self) -> Node:
        tok = self.advance()
        if tok.kind in ("number", "string"):
            return Literal(tok.value, tok.col)  # type: ignore[arg-type]
        if tok.kind == "keyword" and tok.text in ("true", "True", "false", "False", "null"):
            return Literal(None if tok.text == "null" else tok.text in ("true", "True"), tok.col)
        if tok.kind == "name":
            if self.at("op", "("):
                self.advance()
                return Call(tok.text, self.parse_items(")", tok), tok.col)
            return Name(tok.text, tok.col)
        if tok.kind == "op" and tok.text == "(":
            self.nest(tok)
            node = self.parse_or()
            self.expect(")")
            self.depth -= 1
            return node
        if tok.kind == "op" and tok.text == "[":
            return ListExpr(self.parse_items("]", tok), tok.col)
        raise self.fail(tok, f"unexpected {_describe(tok)}")

    def parse_items(self, closing: str, opening: Token) -> tuple[Node, ...]:
        """Comma-separated expressions up to `closing`, for call arguments and list literals."""
        items: list[Node] = []
        if self.at("op", closing):
            self.advance()
            return ()
        self.nest(opening)
        while True:
            if len(items) == MAX_LIST_ITEMS:
                raise self.fail(self.peek(), f"more than {MAX_LIST_ITEMS} items in one list or call")
            items.append(self.parse_or())
            if self.at("op", closing):
                self.advance()
                self.depth -= 1
                return tuple(items)
            if not self.at("op", ","):
                raise self.fail(self.peek(), f"expected ',' or '{closing}', found {_describe(self.peek())}")
            self.advance()


def parse(text: str, source: str = "expression") -> Node:
    """Parse `text` into a syntax tree; raise ExpressionError with a 1-based column on bad syntax.

    Nesting is bounded by MAX_DEPTH before any recursion could exhaust the stack; long chains of
    operators (`a or b or ...`) are not nesting and are limited only by MAX_LENGTH.
    """
    if len(text) > MAX_LENGTH:
        raise ExpressionError(source, MAX_LENGTH + 1, f"expression is longer than {MAX_LENGTH:,} characters")
    try:
        return _Parser(text, source).parse()
    except RecursionError:  # only if the caller's own stack is nearly spent: nesting is bounded above
        raise ExpressionError(source, 1, "expression is nested too deeply for the remaining stack") from None
