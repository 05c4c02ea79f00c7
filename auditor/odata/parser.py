"""The ``$filter`` grammar: text -> :class:`Filter` (the text and its syntax tree).

Pure: no I/O, and no evaluation (:meth:`Filter.matches` hands that to
:mod:`auditor.odata.evaluate`). A syntax error raises a :class:`~auditor.errors.QueryError`
naming its position, so a bad filter fails here, not as an HTTP 400 from every PBX.

OData v4 syntax, checked by a real parser:
    Supported: ``or`` < ``and`` < ``not`` < comparisons (``eq ne gt ge lt le has in``) <
    ``add sub`` < ``mul div divby mod`` < unary ``-``; parentheses; literals: ``'text'``
    (``''`` escapes a quote), integers, decimals (``1.5``, ``2e3``), ``true false null``,
    GUIDs, dates (``2024-01-31``), date-times with an offset (``2024-01-31T12:00:00Z``),
    times of day (``12:30:00``), ``duration'P1D'`` and enum values (``Ns.Type'Value'``);
    member paths (``Filename``, ``a/b``, ``$it/a``), the lambdas ``any``/``all``
    (``Tags/any(t: t eq 'x')``), ``in`` with a parenthesised list, and the canonical
    functions with their arities (see ``FUNCTIONS``). Keywords are lowercase, as in OData:
    ``EQ`` is an unknown operator. Unlike Microsoft's parser, ``not`` binds looser than a
    comparison (``not a eq b`` is ``not (a eq b)``), as the OData ABNF reads.

    Not supported (refused as a syntax error): parameter aliases (``@p``), JSON arrays
    (``in [..]``), ``$root``/``$this``/``$count`` path segments, binary and geo literals,
    ``INF``/``NaN``, and keywords in other cases.

    Error positions are 1-based character columns of the filter text.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from auditor.errors import QueryError
from auditor.odata.evaluate import evaluate
from auditor.odata.lexer import LITERAL_TOKENS, Token, tokenize
from auditor.odata.messages import escape, shown, syntax_error
from auditor.odata.syntax import (
    BinOp,
    BoolOp,
    Call,
    Lambda,
    ListExpr,
    Literal,
    Member,
    Negate,
    Node,
    Not,
    TypeName,
    depth,
)

# name -> (fewest, most) arguments
FUNCTIONS: Mapping[str, tuple[int, int]] = {
    "contains": (2, 2),
    "startswith": (2, 2),
    "endswith": (2, 2),
    "length": (1, 1),
    "indexof": (2, 2),
    "substring": (2, 3),
    "tolower": (1, 1),
    "toupper": (1, 1),
    "trim": (1, 1),
    "concat": (2, 2),
    "matchesPattern": (2, 2),
    "year": (1, 1),
    "month": (1, 1),
    "day": (1, 1),
    "hour": (1, 1),
    "minute": (1, 1),
    "second": (1, 1),
    "fractionalseconds": (1, 1),
    "totaloffsetminutes": (1, 1),
    "totalseconds": (1, 1),
    "date": (1, 1),
    "time": (1, 1),
    "now": (0, 0),
    "maxdatetime": (0, 0),
    "mindatetime": (0, 0),
    "round": (1, 1),
    "floor": (1, 1),
    "ceiling": (1, 1),
    "cast": (1, 2),
    "isof": (1, 2),
}
_BOOLEAN_FUNCTIONS = frozenset({"contains", "startswith", "endswith", "matchesPattern", "isof"})
_TYPE_FUNCTIONS = frozenset({"cast", "isof"})

_OR, _AND, _NOT, _COMPARE, _ADD, _MUL = 1, 2, 3, 4, 5, 6
_BINARY: Mapping[str, int] = {
    "or": _OR,
    "and": _AND,
    **dict.fromkeys(("eq", "ne", "gt", "ge", "lt", "le", "has", "in"), _COMPARE),
    **dict.fromkeys(("add", "sub"), _ADD),
    **dict.fromkeys(("mul", "div", "divby", "mod"), _MUL),
}
_COMPARISONS = frozenset({"eq", "ne", "gt", "ge", "lt", "le", "has", "in"})
_KEYWORDS = frozenset({*_BINARY, "not", "true", "false", "null"})

# Deeper input is refused rather than risking Python's recursion limit.
MAX_NESTING = 50
MAX_DEPTH = 100


def _show(token: Token) -> str:
    if token.kind == "eof":
        return "end of input"
    raw = token.text if len(token.text) <= 40 else token.text[:37] + "..."
    return escape(raw if "'" in raw else f"'{raw}'")


def _suggest(name: str, candidates: list[str]) -> str:
    folded = {c.lower(): c for c in candidates}
    match = folded.get(name.lower())
    if match is None:
        close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
        match = close[0] if close else None
    return f"did you mean '{match}'?" if match else ""


class _Parser:
    """A recursive-descent (precedence climbing) parser over the tokens of one text."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.nesting = 0
        self.tokens = tokenize(text)
        self.index = 0

    # -- errors

    def error(self, problem: str, pos: int, hint: str = "") -> QueryError:
        return syntax_error(self.text, problem, pos, hint)

    def expected(self, what: str, token: Token) -> QueryError:
        return self.error(f"expected {what}", token.pos, f"found {_show(token)}")

    # -- grammar

    def peek(self) -> Token:
        return self.tokens[self.index]

    def take(self) -> Token:
        token = self.tokens[self.index]
        if token.kind != "eof":
            self.index += 1
        return token

    def close(self, opening: Token, what: str) -> None:
        token = self.peek()
        if token.kind == ")":
            self.take()
            return
        if token.kind == "eof":
            raise self.error("unbalanced parenthesis", opening.pos)
        raise self.expected(what, token)

    def parse(self) -> Node:
        node = self.expression(_OR)
        token = self.peek()
        if token.kind == ")":
            raise self.error("unbalanced parenthesis", token.pos)
        if token.kind != "eof":
            raise self.expected("an operator", token)
        self.require_boolean(node)
        return node

    def expression(self, min_prec: int) -> Node:
        left = self.unary()
        while True:
            token = self.peek()
            if token.kind != "ident":
                return left
            prec = _BINARY.get(token.text)
            if prec is None:
                # Nothing but an operator may follow an operand, so a name here is a typo.
                if token.text in _KEYWORDS:
                    raise self.expected("an operator", token)
                hint = _suggest(token.text, list(_BINARY))
                if not hint and token.text in FUNCTIONS:
                    hint = f"'{token.text}' is a function: {token.text}(a, b)"
                raise self.error(f"unknown operator '{escape(token.text)}'", token.pos, hint)
            if prec < min_prec:
                return left
            self.take()
            right = self.in_list() if token.text == "in" else self.expression(prec + 1)
            left = self.combine(token, left, right)

    def combine(self, operator: Token, left: Node, right: Node) -> Node:
        op = operator.text
        if op in ("and", "or"):
            self.require_boolean(right)
            if isinstance(left, BoolOp) and left.op == op:
                return BoolOp(op, (*left.operands, right), left.pos)
            self.require_boolean(left)
            return BoolOp(op, (left, right), _start(left))
        return BinOp(op, left, right, operator.pos)

    def require_boolean(self, node: Node) -> None:
        if _never_boolean(node):
            raise self.error("expected a boolean expression", _start(node))

    def unary(self) -> Node:
        self.nesting += 1
        try:
            if self.nesting > MAX_NESTING:
                raise self.error("expression nested too deeply", self.peek().pos)
            token = self.peek()
            if token.kind == "ident" and token.text == "not":
                self.take()
                operand = self.expression(_COMPARE)
                self.require_boolean(operand)
                return Not(operand, token.pos)
            if token.kind == "-":
                self.take()
                operand = self.unary()
                if isinstance(operand, Literal) and operand.kind in ("int", "decimal"):
                    assert isinstance(operand.value, int | float)
                    return Literal(operand.kind, -operand.value, token.pos)
                return Negate(operand, token.pos)
            return self.primary()
        finally:
            self.nesting -= 1

    def primary(self) -> Node:
        token = self.take()
        if token.kind == "(":
            node = self.expression(_OR)
            self.close(token, "an operator or ')'")
            return node
        if token.kind in LITERAL_TOKENS:
            return Literal(token.kind, token.value, token.pos)
        if token.kind != "ident" or token.text in _BINARY or token.text == "not":
            raise self.expected("an expression", token)
        if token.text in ("true", "false"):
            return Literal("bool", token.text == "true", token.pos)
        if token.text == "null":
            return Literal("null", None, token.pos)
        following = self.peek()
        if following.kind == "(" and (following.pos == token.end or token.text in FUNCTIONS):
            return self.call(token)
        return self.path(token)

    def call(self, name: Token) -> Call:
        if name.text not in FUNCTIONS:
            raise self.error(
                f"unknown function '{escape(name.text)}'",
                name.pos,
                _suggest(name.text, list(FUNCTIONS)),
            )
        opening = self.take()
        args: list[Node] = []
        if self.peek().kind == ")":
            self.take()
        else:
            while True:
                args.append(self.expression(_OR))
                if self.peek().kind == ",":
                    self.take()
                    continue
                self.close(opening, "an operator, ',' or ')'")
                break
        fewest, most = FUNCTIONS[name.text]
        if not fewest <= len(args) <= most:
            wanted = f"{fewest} or {most}" if fewest != most else str(fewest)
            raise self.error(
                f"wrong number of arguments for {name.text}()",
                name.pos,
                f"takes {wanted}, got {len(args)}",
            )
        if name.text in _TYPE_FUNCTIONS:
            last = args[-1]
            if not (isinstance(last, Member) and len(last.segments) == 1):
                raise self.error(
                    f"{name.text}() needs a type name as its last argument", _start(last)
                )
            args[-1] = TypeName(last.segments[0], last.pos)
        return Call(name.text, tuple(args), name.pos)

    def path(self, first: Token) -> Node:
        segments = [first.text]
        end = first.end
        while self.peek().kind == "/" and self.peek().pos == end:
            slash = self.take()
            segment = self.take()
            end = segment.end
            # No blanks inside a path: "a/ eq 1" must not read as the member "a/eq".
            if segment.kind != "ident" or segment.text == "$it" or segment.pos != slash.end:
                raise self.expected("a member name after '/'", segment)
            if segment.text in ("any", "all") and self.peek().kind == "(":
                return self.lambda_(Member(tuple(segments), first.pos), segment)
            segments.append(segment.text)
        return Member(tuple(segments), first.pos)

    def lambda_(self, collection: Member, kind: Token) -> Lambda:
        opening = self.take()
        if self.peek().kind == ")" and kind.text == "any":
            self.take()
            return Lambda(collection, "any", None, None, kind.pos)
        variable = self.take()
        if variable.kind != "ident" or variable.text in _KEYWORDS or "." in variable.text:
            raise self.expected(f"a variable name for {kind.text}()", variable)
        colon = self.take()
        if colon.kind != ":":
            raise self.expected("':' after the variable", colon)
        predicate = self.expression(_OR)
        self.require_boolean(predicate)
        self.close(opening, "an operator or ')'")
        return Lambda(collection, kind.text, variable.text, predicate, kind.pos)

    def in_list(self) -> Node:
        token = self.peek()
        if token.kind == "ident" and token.text not in _KEYWORDS:
            self.take()
            return self.path(token)
        if token.kind != "(":
            raise self.expected("a parenthesised list after 'in'", token)
        self.take()
        items = [self.expression(_OR)]
        while self.peek().kind == ",":
            self.take()
            items.append(self.expression(_OR))
        self.close(token, "an operator, ',' or ')'")
        return ListExpr(tuple(items), token.pos)


def _start(node: Node) -> int:
    """Where the text of ``node`` starts (``BinOp.pos`` is its operator's)."""
    while isinstance(node, BinOp):
        node = node.left
    return node.pos


def _never_boolean(node: Node) -> bool:
    match node:
        case Literal(kind=kind):
            return kind not in ("bool", "null")
        case BinOp(op=op):
            return op not in _COMPARISONS
        case Call(name=name):
            return name not in _BOOLEAN_FUNCTIONS and name != "cast"
        case Negate() | ListExpr() | TypeName():
            return True
    return False


@dataclass(frozen=True, slots=True)
class Filter:
    """A parsed ``$filter``: the text as given and its syntax tree."""

    text: str
    ast: Node

    def __str__(self) -> str:
        return self.text

    def matches(self, item: Mapping[str, Any]) -> bool:
        """Whether ``item`` passes the filter (the simulator's subset; see the module doc)."""
        return evaluate(self.ast, item) is True


def parse_filter(text: str) -> Filter:
    """Parse a ``$filter``; a syntax error raises :class:`QueryError` naming its position."""
    if not isinstance(text, str):
        raise QueryError(f"$filter: must be text (got {shown(text)})")
    if not text.strip():
        raise QueryError("$filter: must not be empty")
    parser = _Parser(text)
    ast = parser.parse()
    if depth(ast) > MAX_DEPTH:
        raise QueryError(f"$filter: expression nested too deeply (over {MAX_DEPTH} levels)")
    return Filter(text, ast)


def check_filter(text: str) -> str:
    """The filter text, stripped, once it parses; else :class:`QueryError`."""
    parse_filter(text)
    return text.strip()
