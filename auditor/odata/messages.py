"""How values and filter texts appear in the one-line messages of a :class:`QueryError`.

Pure: no I/O, no parsing. Every message stays on one line (non-printables escaped) and
never grows without bound (long values and filters are cut around the point of interest).
"""

from __future__ import annotations

from auditor.errors import QueryError


def shown(value: object) -> str:
    """``repr(value)`` for an error message: escaped, and cut after 40 characters."""
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return escape(text)


def escape(text: str) -> str:
    """``text`` with non-printable characters as Python escapes."""
    # Non-printables (newlines, U+2028 ...) escaped: every message stays one line.
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode() for ch in text)


def _excerpt(text: str, pos: int, width: int = 160) -> str:
    if len(text) <= width:
        return '"' + escape(text) + '"'
    start = max(0, min(pos - width // 2, len(text) - width))
    end = start + width
    return (
        ('"...' if start else '"') + escape(text[start:end]) + ('..."' if end < len(text) else '"')
    )


def syntax_error(text: str, problem: str, pos: int, hint: str = "") -> QueryError:
    """The error for ``problem`` at the 0-based ``pos`` of the filter ``text``."""
    message = f"$filter: {problem} at position {pos + 1} in {_excerpt(text, pos)}"
    return QueryError(f"{message} ({hint})" if hint else message)
