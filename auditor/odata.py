"""OData query options, checked locally before any request reaches a PBX.

Pure: no I/O. The client calls :func:`validate_top`, :func:`validate_skip`,
:func:`quote_search` and :func:`check_filter` so that a bad option fails fast with one
readable line (a :class:`~auditor.errors.QueryError`) instead of an HTTP 400 from every
PBX of a fleet. The built-in simulator uses :meth:`Filter.matches` and
:func:`search_matches` to answer ``$filter`` and ``$search`` itself.

``$top`` / ``$skip``
    Integers, or strings of ASCII decimal digits (from the command line). ``$top`` is
    1..maximum (3CX refuses more than 100), ``$skip`` 0..2**63-1. ``bool`` is refused.

``$search``
    Treated as one phrase. A single plain word is sent as is; anything with whitespace,
    double quotes, backslashes, parentheses, or the bare words ``AND``/``OR``/``NOT`` is
    sent as an OData ``searchPhrase``: in double quotes, with ``\\"`` and ``\\\\`` escapes.
    A value that already is a well-formed quoted phrase is kept. Search expressions
    (``a OR b``) are therefore not supported. URL encoding is the HTTP client's job.

``$filter`` (OData v4 syntax, checked by a real parser)
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

Evaluation (:meth:`Filter.matches`, the simulator's subset)
    ``eq ne gt ge lt le in and or not``, parentheses, string/number/boolean/null literals,
    member paths (a missing member is null) and the functions ``contains startswith
    endswith tolower toupper length trim concat indexof``. Nulls follow OData: a function
    of null is null, ``and``/``or``/``not`` are three-valued, ``gt``/``lt`` with a null are
    false. String comparisons are case-sensitive. Values of mismatched types compare as
    unequal (where a PBX would answer 400). Anything else raises ``QueryError(... not
    supported by the simulator)``.
"""

from __future__ import annotations

import difflib
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone
from typing import Any, TypeAlias

from auditor.errors import QueryError

__all__ = [
    "FUNCTIONS",
    "INT64_MAX",
    "MAX_DEPTH",
    "MAX_NESTING",
    "BinOp",
    "BoolOp",
    "Call",
    "Filter",
    "Lambda",
    "ListExpr",
    "Literal",
    "Member",
    "Negate",
    "Node",
    "Not",
    "TypeName",
    "check_filter",
    "dump",
    "parse_filter",
    "quote_search",
    "search_matches",
    "unquote_search",
    "validate_skip",
    "validate_top",
]

INT64_MAX = 2**63 - 1

# ---------------------------------------------------------------------------------------
# $top and $skip


def _shown(value: object) -> str:
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return _escape(text)


def _as_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    # At most 30 digits: int() refuses strings of more than 4300 digits with ValueError.
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,30}", value.strip()):
        return int(value.strip())
    return None


def validate_top(value: object, *, maximum: int = 100) -> int:
    """``$top`` as an int in 1..maximum, else :class:`QueryError`."""
    if isinstance(maximum, bool) or not isinstance(maximum, int) or maximum < 1:
        raise ValueError(f"maximum must be a positive int, not {maximum!r}")
    number = _as_int(value)
    if number is None or not 1 <= number <= maximum:
        raise QueryError(f"$top: must be an integer between 1 and {maximum} (got {_shown(value)})")
    return number


def validate_skip(value: object) -> int:
    """``$skip`` as an int in 0..2**63-1, else :class:`QueryError`."""
    number = _as_int(value)
    if number is None or number < 0:
        raise QueryError(f"$skip: must be an integer >= 0 (got {_shown(value)})")
    if number > INT64_MAX:
        raise QueryError(f"$skip: must be at most {INT64_MAX} (got {_shown(value)})")
    return number


# ---------------------------------------------------------------------------------------
# $search

_PHRASE_BODY = re.compile(r'(?:[^"\\]|\\["\\])+', re.DOTALL)
_PHRASE_ESCAPE = re.compile(r'\\(["\\])')
# The operators of an OData search expression: sent bare they would not mean the word.
_SEARCH_OPERATORS = frozenset({"AND", "OR", "NOT"})


def _is_quoted_phrase(text: str) -> bool:
    return (
        len(text) >= 3
        and text[0] == '"'
        and text[-1] == '"'
        and _PHRASE_BODY.fullmatch(text, 1, len(text) - 1) is not None
    )


def _is_plain_word(text: str) -> bool:
    return text not in _SEARCH_OPERATORS and not any(ch.isspace() or ch in '"\\()' for ch in text)


def _search_text(value: object) -> str:
    if not isinstance(value, str):
        raise QueryError(f"$search: must be text (got {_shown(value)})")
    text = value.strip()
    if not text:
        raise QueryError("$search: must not be empty")
    return text


def quote_search(phrase: str) -> str:
    """The ``$search`` value for ``phrase`` (stripped): a plain word or a quoted phrase."""
    text = _search_text(phrase)
    if _is_quoted_phrase(text) or _is_plain_word(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def unquote_search(value: str) -> str:
    """Undo :func:`quote_search`: the phrase a ``$search`` value stands for.

    A value wrapped in double quotes must be a well-formed phrase (only ``\\"`` and
    ``\\\\`` escapes, no bare inner quote, not empty); anything else is taken literally.
    """
    text = _search_text(value)
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        if not _is_quoted_phrase(text):
            raise QueryError(f"$search: malformed quoted phrase {_shown(text)}")
        return _PHRASE_ESCAPE.sub(r"\1", text[1:-1])
    return text


def search_matches(phrase: str, item: Mapping[str, Any]) -> bool:
    """The simulator's ``$search``: the phrase, case-insensitively, in a top-level string."""
    needle = unquote_search(phrase).casefold()
    return any(isinstance(value, str) and needle in value.casefold() for value in item.values())


# ---------------------------------------------------------------------------------------
# $filter: the syntax tree


@dataclass(frozen=True, slots=True)
class Literal:
    """A constant. ``kind``: string int decimal bool null date datetimeoffset timeofday
    guid duration enum. ``value`` is the Python value (str, int, float, bool, None, date,
    datetime, time, UUID, the duration text, or ``(type, member)`` for an enum)."""

    kind: str
    value: object
    pos: int


@dataclass(frozen=True, slots=True)
class Member:
    """A member path such as ``a/b``; ``$it`` as the first segment is the item itself."""

    segments: tuple[str, ...]
    pos: int


@dataclass(frozen=True, slots=True)
class TypeName:
    """The qualified type name argument of ``cast`` and ``isof``."""

    name: str
    pos: int


@dataclass(frozen=True, slots=True)
class Call:
    name: str
    args: tuple[Node, ...]
    pos: int


@dataclass(frozen=True, slots=True)
class ListExpr:
    """The parenthesised right-hand side of ``in``."""

    items: tuple[Node, ...]
    pos: int


@dataclass(frozen=True, slots=True)
class Not:
    operand: Node
    pos: int


@dataclass(frozen=True, slots=True)
class Negate:
    operand: Node
    pos: int


@dataclass(frozen=True, slots=True)
class BoolOp:
    """``and``/``or`` over two or more operands (chains are kept flat, not nested)."""

    op: str
    operands: tuple[Node, ...]
    pos: int


@dataclass(frozen=True, slots=True)
class BinOp:
    """A comparison (``eq`` ... ``in`` ``has``) or arithmetic; ``pos`` is the operator's."""

    op: str
    left: Node
    right: Node
    pos: int


@dataclass(frozen=True, slots=True)
class Lambda:
    """``collection/any(var: predicate)``, ``collection/all(...)`` or ``collection/any()``."""

    collection: Member
    kind: str
    variable: str | None
    predicate: Node | None
    pos: int


Node: TypeAlias = (
    Literal | Member | TypeName | Call | ListExpr | Not | Negate | BoolOp | BinOp | Lambda
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


def dump(node: Node) -> str:
    """The tree as a fully parenthesised prefix expression, e.g. ``(and (eq a 1) b)``."""
    match node:
        case Literal(kind="string", value=str(text)):
            return "'" + text.replace("'", "''") + "'"
        case Literal(kind="bool", value=flag):
            return "true" if flag else "false"
        case Literal(kind="null"):
            return "null"
        case Literal(kind="duration", value=text):
            return f"duration'{text}'"
        case Literal(kind="enum", value=(str(type_name), str(member))):
            return f"{type_name}'{member}'"
        case Literal(value=date() | time() as moment):
            return moment.isoformat()
        case Literal(value=value):
            return str(value)
        case Member(segments=segments):
            return "/".join(segments)
        case TypeName(name=name):
            return name
        case Call(name=name, args=args):
            return "(" + " ".join([f"{name}()", *map(dump, args)]) + ")"
        case ListExpr(items=items):
            return "[" + " ".join(map(dump, items)) + "]"
        case Not(operand=operand):
            return f"(not {dump(operand)})"
        case Negate(operand=operand):
            return f"(- {dump(operand)})"
        case BoolOp(op=op, operands=operands):
            return "(" + " ".join([op, *map(dump, operands)]) + ")"
        case BinOp(op=op, left=left, right=right):
            return f"({op} {dump(left)} {dump(right)})"
        case Lambda(collection=coll, kind=kind, variable=var, predicate=pred):
            body = "" if pred is None else f" {var} {dump(pred)}"
            return f"({kind} {dump(coll)}{body})"
    raise TypeError(f"not a filter node: {node!r}")


def _children(node: Node) -> tuple[Node, ...]:
    match node:
        case Call(args=items) | ListExpr(items=items) | BoolOp(operands=items):
            return items
        case Not(operand=operand) | Negate(operand=operand):
            return (operand,)
        case BinOp(left=left, right=right):
            return (left, right)
        case Lambda(collection=coll, predicate=pred):
            return (coll,) if pred is None else (coll, pred)
    return ()


def _depth(root: Node) -> int:
    # Iterative on purpose: a long chain like ``1 add 1 add ...`` nests to the left.
    deepest = 0
    stack = [(root, 1)]
    while stack:
        node, level = stack.pop()
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in _children(node))
    return deepest


# ---------------------------------------------------------------------------------------
# $filter: tokens


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # ident, a literal kind, one of "(),:/-", or "eof"
    text: str  # as written
    pos: int
    value: object = None

    @property
    def end(self) -> int:
        return self.pos + len(self.text)


_HEX = "[0-9A-Fa-f]"
_GUID = re.compile(rf"{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}(?![\w.-])")
_DATETIME = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2})"
    r"(?::([0-9]{2})(?:\.([0-9]{1,12}))?)?(Z|[+-][0-9]{2}:[0-9]{2})(?![\w.:])"
)
_DATETIME_LIKE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[\w:.+-]*")
_DATE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})(?![\w.:-])")
_TIME = re.compile(r"([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:\.([0-9]{1,12}))?)?(?![\w.:])")
_NUMBER = re.compile(r"[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?")
_NUMBER_TAIL = re.compile(r"[\w.]*")
_MOMENT_TAIL = re.compile(r"[\w:.+-]*")
_IDENT = re.compile(r"[^\W\d]\w*(?:\.[^\W\d]\w*)*")
_PUNCT = "(),:/-"
_LITERAL_TOKENS = frozenset(
    {"string", "int", "decimal", "guid", "date", "datetimeoffset", "timeofday", "duration", "enum"}
)
# What people type from other languages, and what OData spells instead.
_FOREIGN_OPERATORS: Mapping[str, str] = {
    "==": "did you mean 'eq'?",
    "!=": "did you mean 'ne'?",
    "<>": "did you mean 'ne'?",
    ">=": "did you mean 'ge'?",
    "<=": "did you mean 'le'?",
    "&&": "did you mean 'and'?",
    "||": "did you mean 'or'?",
    "=": "did you mean 'eq'?",
    ">": "did you mean 'gt'?",
    "<": "did you mean 'lt'?",
    "!": "did you mean 'not'?",
    "&": "did you mean 'and'?",
    "|": "did you mean 'or'?",
    "+": "did you mean 'add'?",
    "*": "did you mean 'mul'?",
    "%": "did you mean 'mod'?",
    '"': "strings use single quotes",
    "[": "'in' takes a parenthesised list: x in ('a', 'b')",
    "@": "parameter aliases are not supported",
    "$": "of the $ names only $it is supported",
}


def _escape(text: str) -> str:
    # Non-printables (newlines, U+2028 ...) escaped: every message stays one line.
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode() for ch in text)


def _excerpt(text: str, pos: int, width: int = 160) -> str:
    if len(text) <= width:
        return '"' + _escape(text) + '"'
    start = max(0, min(pos - width // 2, len(text) - width))
    end = start + width
    return (
        ('"...' if start else '"') + _escape(text[start:end]) + ('..."' if end < len(text) else '"')
    )


def _show(token: _Token) -> str:
    if token.kind == "eof":
        return "end of input"
    raw = token.text if len(token.text) <= 40 else token.text[:37] + "..."
    return _escape(raw if "'" in raw else f"'{raw}'")


def _suggest(name: str, candidates: list[str]) -> str:
    folded = {c.lower(): c for c in candidates}
    match = folded.get(name.lower())
    if match is None:
        close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
        match = close[0] if close else None
    return f"did you mean '{match}'?" if match else ""


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.nesting = 0
        self.tokens = self._tokenize()
        self.index = 0

    # -- errors

    def error(self, problem: str, pos: int, hint: str = "") -> QueryError:
        message = f"$filter: {problem} at position {pos + 1} in {_excerpt(self.text, pos)}"
        return QueryError(f"{message} ({hint})" if hint else message)

    def expected(self, what: str, token: _Token) -> QueryError:
        return self.error(f"expected {what}", token.pos, f"found {_show(token)}")

    # -- tokens

    def _tokenize(self) -> list[_Token]:
        text, tokens, i = self.text, [], 0
        while i < len(text):
            ch = text[i]
            if ch.isspace():
                i += 1
                continue
            token = self._token_at(i)
            tokens.append(token)
            i = token.end
        tokens.append(_Token("eof", "", len(text)))
        return tokens

    def _token_at(self, i: int) -> _Token:
        text, ch = self.text, self.text[i]
        if ch == "'":
            value, end = self._string_at(i)
            return _Token("string", text[i:end], i, value)
        if m := _GUID.match(text, i):
            return _Token("guid", m.group(), i, uuid.UUID(m.group()))
        if ch in "0123456789":
            return self._number_or_moment_at(i)
        if m := _IDENT.match(text, i):
            name, end = m.group(), m.end()
            if end < len(text) and text[end] == "'" and (name == "duration" or "." in name):
                value, end = self._string_at(end)
                if name == "duration":
                    return _Token("duration", text[i:end], i, value)
                return _Token("enum", text[i:end], i, (name, value))
            return _Token("ident", name, i)
        if ch == "$" and (m := _IDENT.match(text, i + 1)) and m.group() == "it":
            return _Token("ident", "$it", i)
        if ch in _PUNCT:
            return _Token(ch, ch, i)
        for foreign in (text[i : i + 2], ch):
            if foreign in _FOREIGN_OPERATORS:
                raise self.error(f"unexpected '{foreign}'", i, _FOREIGN_OPERATORS[foreign])
        raise self.error(f"unexpected character '{_escape(ch)}'", i)

    def _string_at(self, i: int) -> tuple[str, int]:
        parts, j = [], i + 1
        while True:
            close = self.text.find("'", j)
            if close < 0:
                raise self.error("unterminated string starting", i)
            parts.append(self.text[j:close])
            if self.text.startswith("''", close):
                parts.append("'")
                j = close + 2
                continue
            return "".join(parts), close + 1

    def _number_or_moment_at(self, i: int) -> _Token:
        text = self.text
        try:
            if m := _DATETIME.match(text, i):
                year, month, day, hour, minute, second, fraction, offset = m.groups()
                if offset == "Z":
                    zone = UTC
                else:
                    sign = -1 if offset[0] == "-" else 1
                    delta = timedelta(hours=int(offset[1:3]), minutes=int(offset[4:6]))
                    zone = timezone(sign * delta)
                moment = datetime(
                    int(year),
                    int(month),
                    int(day),
                    int(hour),
                    int(minute),
                    int(second or 0),
                    int((fraction or "0")[:6].ljust(6, "0")),
                    tzinfo=zone,
                )
                return _Token("datetimeoffset", m.group(), i, moment)
            if m := _DATETIME_LIKE.match(text, i):
                raise self.error(
                    f"invalid date-time '{_escape(m.group())}'",
                    i,
                    "use a full form with a time zone, e.g. 2024-01-31T12:00:00Z",
                )
            if m := _DATE.match(text, i):
                year, month, day = m.groups()
                return _Token("date", m.group(), i, date(int(year), int(month), int(day)))
            if m := _TIME.match(text, i):
                hour, minute, second, fraction = m.groups()
                micro = int((fraction or "0")[:6].ljust(6, "0"))
                moment_of_day = time(int(hour), int(minute), int(second or 0), micro)
                return _Token("timeofday", m.group(), i, moment_of_day)
        except ValueError:
            bad = _MOMENT_TAIL.match(text, i)
            shown = _escape(bad.group() if bad else text[i])
            raise self.error(f"invalid date or time '{shown}'", i) from None
        m = _NUMBER.match(text, i)
        assert m is not None
        tail = _NUMBER_TAIL.match(text, m.end())
        if tail is not None and tail.group():
            raise self.error(f"invalid number '{_escape(text[i : tail.end()])}'", i)
        number = m.group()
        if m.group(1) or m.group(2):
            return _Token("decimal", number, i, float(number))
        if len(number) > 1000:
            raise self.error("number too long", i)
        return _Token("int", number, i, int(number))

    # -- grammar

    def peek(self) -> _Token:
        return self.tokens[self.index]

    def take(self) -> _Token:
        token = self.tokens[self.index]
        if token.kind != "eof":
            self.index += 1
        return token

    def close(self, opening: _Token, what: str) -> None:
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
                raise self.error(f"unknown operator '{_escape(token.text)}'", token.pos, hint)
            if prec < min_prec:
                return left
            self.take()
            right = self.in_list() if token.text == "in" else self.expression(prec + 1)
            left = self.combine(token, left, right)

    def combine(self, operator: _Token, left: Node, right: Node) -> Node:
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
        if token.kind in _LITERAL_TOKENS:
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

    def call(self, name: _Token) -> Call:
        if name.text not in FUNCTIONS:
            raise self.error(
                f"unknown function '{_escape(name.text)}'",
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

    def path(self, first: _Token) -> Node:
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

    def lambda_(self, collection: Member, kind: _Token) -> Lambda:
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
        return _evaluate(self.ast, item) is True


def parse_filter(text: str) -> Filter:
    """Parse a ``$filter``; a syntax error raises :class:`QueryError` naming its position."""
    if not isinstance(text, str):
        raise QueryError(f"$filter: must be text (got {_shown(text)})")
    if not text.strip():
        raise QueryError("$filter: must not be empty")
    parser = _Parser(text)
    ast = parser.parse()
    if _depth(ast) > MAX_DEPTH:
        raise QueryError(f"$filter: expression nested too deeply (over {MAX_DEPTH} levels)")
    return Filter(text, ast)


def check_filter(text: str) -> str:
    """The filter text, stripped, once it parses; else :class:`QueryError`."""
    parse_filter(text)
    return text.strip()


# ---------------------------------------------------------------------------------------
# $filter: evaluation (for the simulator)


def _unsupported(what: str, pos: int) -> QueryError:
    return QueryError(f"$filter: {what} at position {pos + 1} is not supported by the simulator")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _equal(left: object, right: object) -> bool:
    if left is None or right is None:
        return left is None and right is None
    if _is_number(left) and _is_number(right):
        return left == right
    return type(left) is type(right) and left == right


def _order(op: str, left: object, right: object) -> bool | None:
    if left is None or right is None:
        # null ge null and null le null hold: null equals null.
        return op in ("ge", "le") and left is None and right is None
    if not (
        (_is_number(left) and _is_number(right))
        or (isinstance(left, str) and isinstance(right, str))
    ):
        return None
    a: Any = left
    b: Any = right
    if op == "gt":
        return bool(a > b)
    if op == "ge":
        return bool(a >= b)
    if op == "lt":
        return bool(a < b)
    return bool(a <= b)


def _truth(value: object) -> bool | None:
    return value if isinstance(value, bool) else None


_EVALUATED_FUNCTIONS = frozenset(
    {
        "contains",
        "startswith",
        "endswith",
        "indexof",
        "concat",
        "length",
        "tolower",
        "toupper",
        "trim",
    }
)


def _call(name: str, args: list[object]) -> object:
    if any(arg is None for arg in args):
        return None
    if name == "length":
        (value,) = args
        return len(value) if isinstance(value, str | list) else None
    if not all(isinstance(arg, str) for arg in args):
        return None
    texts = [str(arg) for arg in args]
    match name:
        case "contains":
            return texts[1] in texts[0]
        case "startswith":
            return texts[0].startswith(texts[1])
        case "endswith":
            return texts[0].endswith(texts[1])
        case "indexof":
            return texts[0].find(texts[1])
        case "concat":
            return texts[0] + texts[1]
        case "tolower":
            return texts[0].lower()
        case "toupper":
            return texts[0].upper()
        case "trim":
            return texts[0].strip()
    raise AssertionError(f"{name} is in _EVALUATED_FUNCTIONS but not evaluated")


def _evaluate(node: Node, item: Mapping[str, Any]) -> object:
    match node:
        case Literal(kind="string" | "int" | "decimal" | "bool" | "null", value=value):
            return value
        case Literal(kind=kind, pos=pos):
            raise _unsupported(f"a {kind} literal", pos)
        case Member(segments=segments, pos=pos):
            current: object = item
            for segment in segments[1:] if segments[0] == "$it" else segments:
                if "." in segment:
                    raise _unsupported(f"the type cast '{segment}'", pos)
                if not isinstance(current, Mapping):
                    return None
                current = current.get(segment)
            return current
        case BoolOp(op="and", operands=operands):
            result: bool | None = True
            for operand in operands:
                value = _truth(_evaluate(operand, item))
                if value is False:
                    return False
                if value is None:
                    result = None
            return result
        case BoolOp(operands=operands):
            result = False
            for operand in operands:
                value = _truth(_evaluate(operand, item))
                if value is True:
                    return True
                if value is None:
                    result = None
            return result
        case Not(operand=operand):
            value = _truth(_evaluate(operand, item))
            return None if value is None else not value
        case BinOp(op="in", left=left, right=ListExpr(items=options)):
            needle = _evaluate(left, item)
            return any(_equal(needle, _evaluate(option, item)) for option in options)
        case BinOp(op="in", left=left, right=right):
            needle, collection = _evaluate(left, item), _evaluate(right, item)
            if not isinstance(collection, list):
                return None
            return any(_equal(needle, option) for option in collection)
        case BinOp(op="eq" | "ne" as op, left=left, right=right):
            same = _equal(_evaluate(left, item), _evaluate(right, item))
            return same if op == "eq" else not same
        case BinOp(op="gt" | "ge" | "lt" | "le" as op, left=left, right=right):
            return _order(op, _evaluate(left, item), _evaluate(right, item))
        case BinOp(op=op, pos=pos):
            raise _unsupported(f"'{op}'", pos)
        case Call(name=name, args=args) if name in _EVALUATED_FUNCTIONS:
            return _call(name, [_evaluate(arg, item) for arg in args])
        case Call(name=name, pos=pos):
            raise _unsupported(f"{name}()", pos)
        case Negate(pos=pos):
            raise _unsupported("'-' on a non-literal", pos)
        case Lambda(kind=kind, pos=pos):
            raise _unsupported(f"{kind}()", pos)
    raise _unsupported(type(node).__name__, node.pos)
