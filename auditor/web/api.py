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

The handlers only read the store; who may ask is decided in :mod:`auditor.web.auth`, not
here.
"""

from __future__ import annotations

from typing import Final

from aiohttp import web

from auditor.model import JSON, iso
from auditor.store import TargetRow
from auditor.web.cursors import (
    check_known,
    decode_cursor,
    page,
    parse_limit,
    parse_target,
    read_window,
)
from auditor.web.responses import json_response
from auditor.web.state import STORE_KEY

API_PREFIX: Final = "/api/"

_TARGET_PARAMS: Final = frozenset({"target", "limit", "cursor"})


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


async def api_changes(request: web.Request) -> web.Response:
    w = read_window(request, "changes")
    found = await request.app[STORE_KEY].reads.changes(
        w.target, since=w.since, until=w.until, limit=w.limit + 1, after_id=w.after
    )
    return json_response(
        page("changes", [c.as_json() for c in found], w.limit, lambda item: item["id"])
    )


async def api_alerts(request: web.Request) -> web.Response:
    w = read_window(request, "alerts")
    found = await request.app[STORE_KEY].reads.alert_events(
        w.target, since=w.since, until=w.until, limit=w.limit + 1, after_id=w.after
    )
    return json_response(
        page("alerts", [a.as_json() for a in found], w.limit, lambda item: item["id"])
    )
