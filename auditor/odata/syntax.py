"""The syntax tree of a ``$filter``: one frozen dataclass per kind of node.

Pure data and walks over it (:func:`dump`, :func:`depth`); no parsing, no evaluation.
Every node has ``pos``, the 0-based character offset of its text in the filter.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, time
from typing import TypeAlias


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


def children(node: Node) -> tuple[Node, ...]:
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


def depth(root: Node) -> int:
    # Iterative on purpose: a long chain like ``1 add 1 add ...`` nests to the left.
    deepest = 0
    stack = [(root, 1)]
    while stack:
        node, level = stack.pop()
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children(node))
    return deepest
