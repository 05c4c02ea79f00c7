"""The tokens of a ``$filter`` text: literals, names, punctuation.

Pure: no I/O. A character that cannot start a token raises a
:class:`~auditor.errors.QueryError` naming its position, with a hint for the operators
people bring from other languages (``==``, ``&&`` ...). Knows nothing of the grammar.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone

from auditor.errors import QueryError
from auditor.odata.messages import escape, syntax_error


@dataclass(frozen=True, slots=True)
class Token:
    """One token of a filter text; ``value`` is the Python value of a literal."""

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
LITERAL_TOKENS = frozenset(
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


def tokenize(text: str) -> list[Token]:
    """The tokens of ``text``, the last one of kind ``eof``."""
    return _Lexer(text).tokenize()


class _Lexer:
    """The tokenizer of one filter text (errors name positions in that text)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def error(self, problem: str, pos: int, hint: str = "") -> QueryError:
        return syntax_error(self.text, problem, pos, hint)

    def tokenize(self) -> list[Token]:
        text, tokens, i = self.text, [], 0
        while i < len(text):
            ch = text[i]
            if ch.isspace():
                i += 1
                continue
            token = self._token_at(i)
            tokens.append(token)
            i = token.end
        tokens.append(Token("eof", "", len(text)))
        return tokens

    def _token_at(self, i: int) -> Token:
        text, ch = self.text, self.text[i]
        if ch == "'":
            value, end = self._string_at(i)
            return Token("string", text[i:end], i, value)
        if m := _GUID.match(text, i):
            return Token("guid", m.group(), i, uuid.UUID(m.group()))
        if ch in "0123456789":
            return self._number_or_moment_at(i)
        if m := _IDENT.match(text, i):
            name, end = m.group(), m.end()
            if end < len(text) and text[end] == "'" and (name == "duration" or "." in name):
                value, end = self._string_at(end)
                if name == "duration":
                    return Token("duration", text[i:end], i, value)
                return Token("enum", text[i:end], i, (name, value))
            return Token("ident", name, i)
        if ch == "$" and (m := _IDENT.match(text, i + 1)) and m.group() == "it":
            return Token("ident", "$it", i)
        if ch in _PUNCT:
            return Token(ch, ch, i)
        for foreign in (text[i : i + 2], ch):
            if foreign in _FOREIGN_OPERATORS:
                raise self.error(f"unexpected '{foreign}'", i, _FOREIGN_OPERATORS[foreign])
        raise self.error(f"unexpected character '{escape(ch)}'", i)

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

    def _number_or_moment_at(self, i: int) -> Token:
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
                return Token("datetimeoffset", m.group(), i, moment)
            if m := _DATETIME_LIKE.match(text, i):
                raise self.error(
                    f"invalid date-time '{escape(m.group())}'",
                    i,
                    "use a full form with a time zone, e.g. 2024-01-31T12:00:00Z",
                )
            if m := _DATE.match(text, i):
                year, month, day = m.groups()
                return Token("date", m.group(), i, date(int(year), int(month), int(day)))
            if m := _TIME.match(text, i):
                hour, minute, second, fraction = m.groups()
                micro = int((fraction or "0")[:6].ljust(6, "0"))
                moment_of_day = time(int(hour), int(minute), int(second or 0), micro)
                return Token("timeofday", m.group(), i, moment_of_day)
        except ValueError:
            bad = _MOMENT_TAIL.match(text, i)
            shown = escape(bad.group() if bad else text[i])
            raise self.error(f"invalid date or time '{shown}'", i) from None
        m = _NUMBER.match(text, i)
        assert m is not None
        tail = _NUMBER_TAIL.match(text, m.end())
        if tail is not None and tail.group():
            raise self.error(f"invalid number '{escape(text[i : tail.end()])}'", i)
        number = m.group()
        if m.group(1) or m.group(2):
            return Token("decimal", number, i, float(number))
        if len(number) > 1000:
            raise self.error("number too long", i)
        return Token("int", number, i, int(number))
