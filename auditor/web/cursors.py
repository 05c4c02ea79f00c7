"""Cursors and the query parameters shared by the JSON API and the Atom feed.

A cursor is opaque to clients: base64url of ``{"k": kind, "a": last}`` (padding stripped),
``last`` being the id (the name, for targets) of the last record of the page before.
``since`` and ``until`` are ISO 8601 (UTC unless an offset is given) or an age like
``7d``; ``limit`` is 1..1000, 100 by default. A parameter that does not parse raises
:class:`~auditor.web.responses.BadRequest` with the one line shown to the client.

This module only reads a request's query string: it touches no store and builds no
response.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from aiohttp import web
from multidict import MultiMapping

from auditor.config import parse_duration
from auditor.model import JSON, iso, utcnow
from auditor.web.responses import BadRequest

DEFAULT_LIMIT: Final = 100
MAX_LIMIT: Final = 1000

_WINDOW_PARAMS: Final = frozenset({"target", "since", "until", "limit", "cursor"})


# -- cursors -------------------------------------------------------------------------------


def encode_cursor(kind: str, last: int | str) -> str:
    """An opaque cursor: base64url of ``{"k": kind, "a": last}``, padding stripped."""
    raw = json.dumps({"k": kind, "a": last}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_cursor(kind: str, cursor: str) -> int | str:
    """The position a cursor of ``kind`` continues after; BadRequest if it is not one."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
    except (binascii.Error, ValueError):
        raise BadRequest("cursor: not a cursor returned by this API") from None
    if not isinstance(data, dict) or data.get("k") != kind:
        raise BadRequest(f"cursor: not a cursor of /api/v1/{kind}")
    last = data.get("a")
    expected = str if kind == "targets" else int
    if not isinstance(last, expected) or isinstance(last, bool):
        raise BadRequest("cursor: not a cursor returned by this API")
    return last


def page(kind: str, items: Sequence[JSON], limit: int, position: Callable[[JSON], Any]) -> JSON:
    """``{"items": [...], "next": cursor|null}`` of ``items`` read with one row too many."""
    # One more row than asked for was read: its presence is what makes a next page.
    more = len(items) > limit
    shown = list(items[:limit])
    cursor = encode_cursor(kind, position(shown[-1])) if more and shown else None
    return {"items": shown, "next": cursor}


# -- parameters ----------------------------------------------------------------------------


def parse_when(name: str, text: str) -> datetime:
    """ISO 8601 (UTC unless it has an offset) or an age like ``7d`` (that long ago)."""
    value = text.strip()
    # A "+" in a query string arrives as a space: "12:00:00+02:00" -> "12:00:00 02:00".
    if "T" in value and " " in value:
        value = value.replace(" ", "+")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        try:
            return utcnow() - parse_duration(value)
        except (ValueError, OverflowError):
            raise BadRequest(
                f"{name}: must be an ISO 8601 time like 2026-01-31T12:00:00Z or an age "
                f"like 7d (got {text!r})"
            ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_limit(text: str | None) -> int:
    if text is None:
        return DEFAULT_LIMIT
    if not re.fullmatch(r"\s*\d{1,7}\s*", text) or not 1 <= int(text) <= MAX_LIMIT:
        raise BadRequest(f"limit: must be a whole number from 1 to {MAX_LIMIT} (got {text!r})")
    return int(text)


def check_known(query: MultiMapping[str], allowed: frozenset[str], path: str) -> None:
    """BadRequest for a parameter not in ``allowed`` or one of them given twice."""
    for name in query:
        if name not in allowed:
            known = ", ".join(sorted(allowed))
            raise BadRequest(f"{name}: not a parameter of {path} (known: {known})")
    for name in allowed:
        if len(query.getall(name, ())) > 1:
            raise BadRequest(f"{name}: given more than once")


@dataclass(frozen=True, slots=True)
class Window:
    target: str | None
    since: datetime | None
    until: datetime | None
    limit: int
    after: int | None


def read_window(request: web.Request, kind: str, filters: frozenset[str] = frozenset()) -> Window:
    """``target``, ``since``, ``until``, ``limit`` and ``cursor`` of a list of ``kind``;
    ``filters``: the other parameters this list takes (read by the caller)."""
    query = request.rel_url.query
    check_known(query, _WINDOW_PARAMS | filters, request.path)
    since = parse_when("since", query["since"]) if "since" in query else None
    until = parse_when("until", query["until"]) if "until" in query else None
    if since is not None and until is not None and until < since:
        raise BadRequest(f"until: is before since ({iso(until)} < {iso(since)})")
    after = decode_cursor(kind, query["cursor"]) if "cursor" in query else None
    return Window(
        target=query.get("target"),
        since=since,
        until=until,
        limit=parse_limit(query.get("limit")),
        after=int(after) if after is not None else None,
    )
