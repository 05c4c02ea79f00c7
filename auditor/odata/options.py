"""The query options other than ``$filter``: ``$top``, ``$skip`` and ``$search``.

Pure: no I/O, no HTTP (URL encoding is the HTTP client's job). A bad value raises a
:class:`~auditor.errors.QueryError` with one readable line.

``$top`` / ``$skip``
    Integers, or strings of ASCII decimal digits (from the command line). ``$top`` is
    1..maximum (3CX refuses more than 100), ``$skip`` 0..2**63-1. ``bool`` is refused.

``$search``
    Treated as one phrase. A single plain word is sent as is; anything with whitespace,
    double quotes, backslashes, parentheses, or the bare words ``AND``/``OR``/``NOT`` is
    sent as an OData ``searchPhrase``: in double quotes, with ``\\"`` and ``\\\\`` escapes.
    A value that already is a well-formed quoted phrase is kept. Search expressions
    (``a OR b``) are therefore not supported. :func:`search_matches` is the simulator's
    ``$search``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from auditor.errors import QueryError
from auditor.odata.messages import shown

INT64_MAX = 2**63 - 1


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
        raise QueryError(f"$top: must be an integer between 1 and {maximum} (got {shown(value)})")
    return number


def validate_skip(value: object) -> int:
    """``$skip`` as an int in 0..2**63-1, else :class:`QueryError`."""
    number = _as_int(value)
    if number is None or number < 0:
        raise QueryError(f"$skip: must be an integer >= 0 (got {shown(value)})")
    if number > INT64_MAX:
        raise QueryError(f"$skip: must be at most {INT64_MAX} (got {shown(value)})")
    return number


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
        raise QueryError(f"$search: must be text (got {shown(value)})")
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
            raise QueryError(f"$search: malformed quoted phrase {shown(text)}")
        return _PHRASE_ESCAPE.sub(r"\1", text[1:-1])
    return text


def search_matches(phrase: str, item: Mapping[str, Any]) -> bool:
    """The simulator's ``$search``: the phrase, case-insensitively, in a top-level string."""
    needle = unquote_search(phrase).casefold()
    return any(isinstance(value, str) and needle in value.casefold() for value in item.values())
