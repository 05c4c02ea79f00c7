"""Evaluating a ``$filter`` syntax tree against one item: the simulator's subset.

Pure: no I/O, no parsing (the tree comes from :mod:`auditor.odata.parser`). The client never
evaluates; only the built-in simulator answers ``$filter`` itself.

Supported: ``eq ne gt ge lt le in and or not``, parentheses, string/number/boolean/null
literals, member paths (a missing member is null) and the functions ``contains startswith
endswith tolower toupper length trim concat indexof``. Nulls follow OData: a function of
null is null, ``and``/``or``/``not`` are three-valued, ``gt``/``lt`` with a null are false.
String comparisons are case-sensitive. Values of mismatched types compare as unequal (where
a PBX would answer 400). Anything else raises ``QueryError(... not supported by the
simulator)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from auditor.errors import QueryError
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
)


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


def evaluate(node: Node, item: Mapping[str, Any]) -> object:
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
                value = _truth(evaluate(operand, item))
                if value is False:
                    return False
                if value is None:
                    result = None
            return result
        case BoolOp(operands=operands):
            result = False
            for operand in operands:
                value = _truth(evaluate(operand, item))
                if value is True:
                    return True
                if value is None:
                    result = None
            return result
        case Not(operand=operand):
            value = _truth(evaluate(operand, item))
            return None if value is None else not value
        case BinOp(op="in", left=left, right=ListExpr(items=options)):
            needle = evaluate(left, item)
            return any(_equal(needle, evaluate(option, item)) for option in options)
        case BinOp(op="in", left=left, right=right):
            needle, collection = evaluate(left, item), evaluate(right, item)
            if not isinstance(collection, list):
                return None
            return any(_equal(needle, option) for option in collection)
        case BinOp(op="eq" | "ne" as op, left=left, right=right):
            same = _equal(evaluate(left, item), evaluate(right, item))
            return same if op == "eq" else not same
        case BinOp(op="gt" | "ge" | "lt" | "le" as op, left=left, right=right):
            return _order(op, evaluate(left, item), evaluate(right, item))
        case BinOp(op=op, pos=pos):
            raise _unsupported(f"'{op}'", pos)
        case Call(name=name, args=args) if name in _EVALUATED_FUNCTIONS:
            return _call(name, [evaluate(arg, item) for arg in args])
        case Call(name=name, pos=pos):
            raise _unsupported(f"{name}()", pos)
        case Negate(pos=pos):
            raise _unsupported("'-' on a non-literal", pos)
        case Lambda(kind=kind, pos=pos):
            raise _unsupported(f"{kind}()", pos)
    raise _unsupported(type(node).__name__, node.pos)
