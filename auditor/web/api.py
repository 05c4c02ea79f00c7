"""The read-only JSON API: targets, runs, changes and alerts, paged by cursor.

::

    GET /api/v1/targets | runs | changes | alerts
                    {"items": [...], "next": "<cursor>"|null}

The API pages **oldest first, by ascending id**: a page never shifts when new records
arrive, so following ``next`` (``?cursor=...``) visits every record exactly once, and new
records only ever appear after the last page. ``next`` is null when there was nothing
more at the time of the request. Parameters: ``target`` (a target name), ``since`` and
``until`` (ISO 8601, UTC unless an offset is given, or an age like ``7d``; ``since`` <=
time < ``until``; the time of a run is its start, of a change or an alert its ``at``),
``limit`` (1..1000, default 100) and ``cursor``. Targets are listed by name and take only
``target``, ``limit`` and ``cursor``. The items have the shapes of the CLI's ``--json``.
A bad parameter is a 400 with ``{"error": "<one line>"}``.

The filters of the CLI's ``history`` and ``alerts``, by the same names: ``/changes`` takes
``key`` (one item: a script's file name, or ``settings``), ``kind`` (``added``, ``removed``,
``changed``) and ``collection`` (``scripts``, ``settings`` or a name of
:mod:`auditor.collections`); ``/alerts`` takes ``kind`` (an
alert kind), ``severity`` (that severity or higher; a resolution counts with the severity of
what it resolves) and ``firing=true`` (only the conditions firing now, each by its latest
event). ``kind`` and ``collection`` take one value or several separated by commas.

The handlers only read the store; who may ask is decided in :mod:`auditor.web.auth`, not
here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from aiohttp import web
from multidict import MultiMapping

from auditor.collections import NAMES
from auditor.model import ALERT_KINDS, JSON, SCRIPTS, SETTINGS, SEVERITIES, iso
from auditor.store import TargetRow
from auditor.web.cursors import (
    check_known,
    decode_cursor,
    page,
    parse_limit,
    parse_target,
    quoted,
    read_window,
)
from auditor.web.responses import BadRequest, json_response
from auditor.web.state import STORE_KEY

API_PREFIX: Final = "/api/"

_TARGET_PARAMS: Final = frozenset({"target", "limit", "cursor"})
_CHANGE_PARAMS: Final = frozenset({"key", "kind", "collection"})
_ALERT_PARAMS: Final = frozenset({"kind", "severity", "firing"})
_CHANGE_KINDS: Final = {k: k for k in ("added", "removed", "changed")}
_COLLECTIONS: Final = {
    "scripts": SCRIPTS,
    "settings": SETTINGS,
    **{name: name for name in NAMES},
}
_ALERT_KINDS: Final = {k: k for k in ALERT_KINDS}


def _target_json(row: TargetRow) -> JSON:
    return {
        "name": row.name,
        "url": row.url,
        "next_run_at": iso(row.next_run_at) if row.next_run_at else None,
        "lease_owner": row.lease_owner,
        "lease_until": iso(row.lease_until) if row.lease_until else None,
        "last_complete_run_id": row.last_complete_run_id,
        "active": row.active,
    }


async def api_targets(request: web.Request) -> web.Response:
    query = request.rel_url.query
    check_known(query, _TARGET_PARAMS, request.path)
    limit = parse_limit(query.get("limit"))
    after = decode_cursor("targets", query["cursor"]) if "cursor" in query else None
    # A fleet is thousands of rows at most: read them all and page here, in Python's order
    # of names (a database collation may order "pbx-a" and "pbxa" differently).
    rows = sorted(await request.app[STORE_KEY].reads.targets(), key=lambda r: r.name)
    wanted = parse_target(query.get("target"))
    items = [
        _target_json(r)
        for r in rows
        if (wanted is None or r.name == wanted) and (after is None or r.name > str(after))
    ]
    return json_response(page("targets", items[: limit + 1], limit, lambda item: item["name"]))


async def api_runs(request: web.Request) -> web.Response:
    w = read_window(request, "runs")
    found = await request.app[STORE_KEY].reads.runs(
        w.target, since=w.since, until=w.until, limit=w.limit + 1, after_id=w.after
    )
    return json_response(
        page("runs", [r.as_json() for r in found], w.limit, lambda item: item["id"])
    )


def _listed(allowed: Mapping[str, str], room: int = 160) -> str:
    """The allowed names, cut to a few when they would make the error long (the README lists
    them all): an error stays one short line however many kinds there are."""
    names = list(dict.fromkeys(allowed))
    whole = ", ".join(names)
    if len(whole) <= room:
        return whole
    shown: list[str] = []
    for name in names:
        if len(", ".join([*shown, name])) > room - 20:
            break
        shown.append(name)
    return f"{', '.join(shown)}, ... ({len(names)} in all)"


def _one_of(name: str, text: str, allowed: Mapping[str, str]) -> list[str]:
    """A comma-separated list of ``allowed`` names -> the values they stand for."""
    values = []
    for part in text.split(","):
        word = part.strip()
        if word not in allowed:
            raise BadRequest(f"{name}: {quoted(word)} is not one of {_listed(allowed)}")
        values.append(allowed[word])
    return values


def _key(text: str | None) -> str | None:
    # No key holds a NUL (an answer with one is refused), and PostgreSQL cannot compare one.
    if text is not None and "\x00" in text:
        raise BadRequest("key: no script's file name holds a NUL")
    return text


def _change_filters(query: MultiMapping[str]) -> dict[str, Any]:
    return {
        "key": _key(query.get("key")),
        "kinds": _one_of("kind", query["kind"], _CHANGE_KINDS) if "kind" in query else None,
        "collections": (
            _one_of("collection", query["collection"], _COLLECTIONS)
            if "collection" in query
            else None
        ),
    }


def _alert_filters(query: MultiMapping[str]) -> dict[str, Any]:
    firing = query.get("firing")
    if firing is not None and firing not in ("true", "1"):
        raise BadRequest(f"firing: the only value is true (got {quoted(firing)})")
    severity = query.get("severity")
    if severity is not None and severity not in SEVERITIES:
        raise BadRequest(f"severity: {quoted(severity)} is not one of {', '.join(SEVERITIES)}")
    return {
        "kinds": _one_of("kind", query["kind"], _ALERT_KINDS) if "kind" in query else None,
        "severities": SEVERITIES[SEVERITIES.index(severity) :] if severity else None,
        "firing": firing is not None,
    }


async def api_changes(request: web.Request) -> web.Response:
    w = read_window(request, "changes", _CHANGE_PARAMS)
    found = await request.app[STORE_KEY].reads.changes(
        w.target,
        since=w.since,
        until=w.until,
        limit=w.limit + 1,
        after_id=w.after,
        **_change_filters(request.rel_url.query),
    )
    return json_response(
        page("changes", [c.as_json() for c in found], w.limit, lambda item: item["id"])
    )


async def api_alerts(request: web.Request) -> web.Response:
    w = read_window(request, "alerts", _ALERT_PARAMS)
    found = await request.app[STORE_KEY].reads.alert_events(
        w.target,
        since=w.since,
        until=w.until,
        limit=w.limit + 1,
        after_id=w.after,
        **_alert_filters(request.rel_url.query),
    )
    return json_response(
        page("alerts", [a.as_json() for a in found], w.limit, lambda item: item["id"])
    )
