"""The daemon's HTTP side (aiohttp): probes, metrics and a read-only JSON API.

::

    GET /livez      200 {"status": "ok"} while the event loop answers
    GET /readyz     200 when the database answers (checked live, 2 s), its schema is at
                    head, the scheduler runs and the daemon is not draining; else 503.
                    {"status": "ready"|"not ready", "checks": {...}, ...detail}
    GET /metrics    Prometheus text exposition
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

``GET /feed.atom`` is the alerts as an Atom 1.0 feed (RFC 4287): the ``limit`` (1..1000,
default 100) most recently recorded alert events, newest first, one entry each (firing,
repeated or resolved), optionally of one ``target``. Identifiers are tag URIs (RFC 4151)
that never change for the same record: the feed is ``tag:3cx-auditor,2026:<instance>`` and
an entry ``tag:3cx-auditor,2026:<instance>/alert/<id>`` (``<id>`` the alert event's id).
``<instance>`` is ``make_app(feed_instance=...)`` or, by default, ``db-`` and 16 hex digits
of the SHA-256 of the database URL as displayed (password masked): replicas sharing one
database through the same URL publish the same feed. The self link is built from the
request (behind a proxy, from its ``Host`` header). The response has an ``ETag``; a
matching ``If-None-Match`` gets a 304.

With ``[http] token`` set, ``/api/...`` and ``/feed.atom`` need ``Authorization: Bearer
<token>`` (401 and ``WWW-Authenticate: Bearer`` otherwise). A token in the query string is
never accepted (it would end up in proxy and access logs): a feed reader must be able to
send the header. The probes and ``/metrics`` stay open, so that orchestrators and
Prometheus need no secret.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html import escape
from typing import Any, Final

from aiohttp import web
from multidict import MultiMapping
from pydantic import SecretStr

from auditor.config import parse_duration
from auditor.errors import ConfigError, StoreError
from auditor.metrics import Metrics
from auditor.model import JSON, Alert, FieldChange, iso, utcnow
from auditor.store import Store, TargetRow

API_PREFIX: Final = "/api/"
FEED_PATH: Final = "/feed.atom"
ATOM_NS: Final = "http://www.w3.org/2005/Atom"
ATOM_CONTENT_TYPE: Final = "application/atom+xml; charset=utf-8"
TAG_PREFIX: Final = "tag:3cx-auditor,2026:"
DEFAULT_LIMIT: Final = 100
MAX_LIMIT: Final = 1000
READY_TIMEOUT_S: Final = 2.0

_WINDOW_PARAMS: Final = frozenset({"target", "since", "until", "limit", "cursor"})
_TARGET_PARAMS: Final = frozenset({"target", "limit", "cursor"})
_FEED_PARAMS: Final = frozenset({"target", "limit"})
_INSTANCE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._~-]{0,63}")
# XML 1.0 cannot carry these at all, not even escaped; a script name or a field value from
# a PBX might hold one.
_NOT_XML: Final = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


@dataclass
class ServiceState:
    """What the daemon tells ``/readyz``; the service owns it and flips the flags.

    ``database_ok`` and ``migrations_at_head`` are the daemon's own view after start-up;
    ``/readyz`` confirms both with a live query, so a database lost later shows too.
    ``detail`` is merged into the ``/readyz`` body (e.g. ``{"replica": "host-1"}``).
    """

    database_ok: bool = False
    migrations_at_head: bool = False
    scheduler_running: bool = False
    draining: bool = False
    detail: dict[str, Any] = field(default_factory=dict)


STORE_KEY: Final = web.AppKey("store", Store)
STATE_KEY: Final = web.AppKey("state", ServiceState)
METRICS_KEY: Final = web.AppKey("metrics", Metrics)
FEED_INSTANCE_KEY: Final = web.AppKey("feed_instance", str)


class _BadRequest(Exception):
    """A parameter the API refuses; its text is the one-line error shown to the client."""


# -- cursors -------------------------------------------------------------------------------


def encode_cursor(kind: str, last: int | str) -> str:
    """An opaque cursor: base64url of ``{"k": kind, "a": last}``, padding stripped."""
    raw = json.dumps({"k": kind, "a": last}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_cursor(kind: str, cursor: str) -> int | str:
    """The position a cursor of ``kind`` continues after; _BadRequest if it is not one."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
    except (binascii.Error, ValueError):
        raise _BadRequest("cursor: not a cursor returned by this API") from None
    if not isinstance(data, dict) or data.get("k") != kind:
        raise _BadRequest(f"cursor: not a cursor of /api/v1/{kind}")
    last = data.get("a")
    expected = str if kind == "targets" else int
    if not isinstance(last, expected) or isinstance(last, bool):
        raise _BadRequest("cursor: not a cursor returned by this API")
    return last


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
            raise _BadRequest(
                f"{name}: must be an ISO 8601 time like 2026-01-31T12:00:00Z or an age "
                f"like 7d (got {text!r})"
            ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_limit(text: str | None) -> int:
    if text is None:
        return DEFAULT_LIMIT
    if not re.fullmatch(r"\s*\d{1,7}\s*", text) or not 1 <= int(text) <= MAX_LIMIT:
        raise _BadRequest(f"limit: must be a whole number from 1 to {MAX_LIMIT} (got {text!r})")
    return int(text)


def _check_known(query: MultiMapping[str], allowed: frozenset[str], path: str) -> None:
    for name in query:
        if name not in allowed:
            known = ", ".join(sorted(allowed))
            raise _BadRequest(f"{name}: not a parameter of {path} (known: {known})")
    for name in allowed:
        if len(query.getall(name, ())) > 1:
            raise _BadRequest(f"{name}: given more than once")


@dataclass(frozen=True, slots=True)
class _Window:
    target: str | None
    since: datetime | None
    until: datetime | None
    limit: int
    after: int | None


def _window(request: web.Request, kind: str) -> _Window:
    query = request.rel_url.query
    _check_known(query, _WINDOW_PARAMS, request.path)
    since = parse_when("since", query["since"]) if "since" in query else None
    until = parse_when("until", query["until"]) if "until" in query else None
    if since is not None and until is not None and until < since:
        raise _BadRequest(f"until: is before since ({iso(until)} < {iso(since)})")
    after = decode_cursor(kind, query["cursor"]) if "cursor" in query else None
    return _Window(
        target=query.get("target"),
        since=since,
        until=until,
        limit=parse_limit(query.get("limit")),
        after=int(after) if after is not None else None,
    )


# -- handlers ------------------------------------------------------------------------------


def _page(kind: str, items: Sequence[JSON], limit: int, position: Callable[[JSON], Any]) -> JSON:
    # One more row than asked for was read: its presence is what makes a next page.
    more = len(items) > limit
    shown = list(items[:limit])
    cursor = encode_cursor(kind, position(shown[-1])) if more and shown else None
    return {"items": shown, "next": cursor}


def _json(body: JSON, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response(body, status=status, headers=headers, dumps=_dumps)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return _json({"error": message}, status=status, headers=headers)


async def livez(_request: web.Request) -> web.Response:
    return _json({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    store = request.app[STORE_KEY]
    reachable = at_head = False
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            at_head = await store.at_head()
        reachable = True
    except (StoreError, TimeoutError):
        pass
    checks = {
        "database": state.database_ok and reachable,
        "migrations": state.migrations_at_head and at_head,
        "scheduler": state.scheduler_running,
        "draining": state.draining,
    }
    ready = checks["database"] and checks["migrations"] and checks["scheduler"]
    ready = ready and not state.draining
    body: JSON = {**state.detail, "status": "ready" if ready else "not ready", "checks": checks}
    return _json(body, status=200 if ready else 503)


async def metrics_endpoint(request: web.Request) -> web.Response:
    body, content_type = request.app[METRICS_KEY].render()
    return web.Response(body=body, headers={"Content-Type": content_type})


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
    _check_known(query, _TARGET_PARAMS, request.path)
    limit = parse_limit(query.get("limit"))
    after = decode_cursor("targets", query["cursor"]) if "cursor" in query else None
    # A fleet is thousands of rows at most: read them all and page here, in Python's order
    # of names (a database collation may order "pbx-a" and "pbxa" differently).
    rows = sorted(await request.app[STORE_KEY].reads.targets(), key=lambda r: r.name)
    wanted = query.get("target")
    items = [
        _target_json(r)
        for r in rows
        if (wanted is None or r.name == wanted) and (after is None or r.name > str(after))
    ]
    return _json(_page("targets", items[: limit + 1], limit, lambda item: item["name"]))


async def api_runs(request: web.Request) -> web.Response:
    w = _window(request, "runs")
    found = await request.app[STORE_KEY].reads.runs(
        w.target, since=w.since, until=w.until, limit=w.limit + 1, after_id=w.after
    )
    return _json(_page("runs", [r.as_json() for r in found], w.limit, lambda item: item["id"]))


async def api_changes(request: web.Request) -> web.Response:
    w = _window(request, "changes")
    found = await request.app[STORE_KEY].reads.changes(
        w.target, since=w.since, until=w.until, limit=w.limit + 1, after_id=w.after
    )
    return _json(_page("changes", [c.as_json() for c in found], w.limit, lambda item: item["id"]))


async def api_alerts(request: web.Request) -> web.Response:
    w = _window(request, "alerts")
    found = await request.app[STORE_KEY].reads.alert_events(
        w.target, since=w.since, until=w.until, limit=w.limit + 1, after_id=w.after
    )
    return _json(_page("alerts", [a.as_json() for a in found], w.limit, lambda item: item["id"]))


# -- the Atom feed -------------------------------------------------------------------------


def default_feed_instance(database_url_for_display: str) -> str:
    """The feed's instance name derived from the database it reads (``db-<16 hex>``)."""
    return "db-" + hashlib.sha256(database_url_for_display.encode()).hexdigest()[:16]


def feed_id(instance: str) -> str:
    return f"{TAG_PREFIX}{instance}"


def entry_id(instance: str, event_id: int) -> str:
    return f"{TAG_PREFIX}{instance}/alert/{event_id}"


def _xml_text(text: str) -> str:
    return _NOT_XML.sub("\ufffd", text)


def _value_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def entry_title(alert: Alert) -> str:
    """``[severity] kind target: key`` (``: key`` only when there is one), `` (resolved)``
    for a resolution."""
    title = f"[{alert.severity}] {alert.kind} {alert.target}"
    if alert.key is not None:
        title += f": {alert.key}"
    if alert.status == "resolved":
        title += " (resolved)"
    return title


def _field_html(change: FieldChange) -> str:
    old = "(absent)" if change.missing == "old" else _value_text(change.old)
    new = "(absent)" if change.missing == "new" else _value_text(change.new)
    return f"<li><code>{escape(change.field)}</code>: {escape(old)} &#8594; {escape(new)}</li>"


def _entry_html(alert: Alert) -> str:
    parts = [f"<p>{escape(alert.message)}</p>"]
    if alert.fields:
        parts.append("<ul>" + "".join(_field_html(f) for f in alert.fields) + "</ul>")
    where = ", ".join(
        f"{name} {escape(str(value))}"
        for name, value in (
            ("target", alert.target),
            ("collection", alert.collection),
            ("key", alert.key),
            ("run", alert.run_id),
            ("fingerprint", alert.fingerprint),
        )
        if value is not None
    )
    parts.append(f"<p><small>{where}</small></p>")
    return "".join(parts)


def render_feed(alerts: Sequence[Alert], *, instance: str, self_url: str) -> bytes:
    """The Atom document of ``alerts`` (given newest first), UTF-8 with an XML declaration.

    The same alerts always give the same bytes: ``updated`` is the newest alert's time (the
    Unix epoch for an empty feed), never the time of the request.
    """

    def sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
        element = ET.SubElement(parent, tag, {k: _xml_text(v) for k, v in attrs.items()})
        if text is not None:
            element.text = _xml_text(text)
        return element

    feed = ET.Element("feed", {"xmlns": ATOM_NS})
    sub(feed, "id", feed_id(instance))
    sub(feed, "title", "3cx-auditor alerts")
    newest = max((a.at for a in alerts), default=datetime(1970, 1, 1, tzinfo=UTC))
    sub(feed, "updated", iso(newest))
    sub(feed, "link", rel="self", type="application/atom+xml", href=self_url)
    author = sub(feed, "author")
    sub(author, "name", "3cx-auditor")
    sub(feed, "generator", "3cx-auditor")
    for alert in alerts:
        entry = sub(feed, "entry")
        sub(entry, "id", entry_id(instance, alert.id))
        sub(entry, "title", entry_title(alert), type="text")
        sub(entry, "published", iso(alert.at))
        sub(entry, "updated", iso(alert.at))
        for scheme, term in (
            ("kind", alert.kind),
            ("severity", alert.severity),
            ("status", alert.status),
            ("target", alert.target),
        ):
            sub(entry, "category", term=term, scheme=f"{TAG_PREFIX}{scheme}", label=term)
        sub(entry, "content", _entry_html(alert), type="html")
    document: bytes = ET.tostring(feed, encoding="utf-8", xml_declaration=True)
    return document


async def atom_feed(request: web.Request) -> web.StreamResponse:
    query = request.rel_url.query
    _check_known(query, _FEED_PARAMS, request.path)
    found = await request.app[STORE_KEY].reads.alert_events(
        query.get("target"), limit=parse_limit(query.get("limit")), newest_first=True
    )
    # The newest recorded, shown newest by time: targets audited side by side can record
    # an event a moment older than the one recorded just before it.
    found.sort(key=lambda a: (a.at, a.id), reverse=True)
    body = render_feed(found, instance=request.app[FEED_INSTANCE_KEY], self_url=str(request.url))
    etag = hashlib.sha256(body).hexdigest()[:32]
    headers = {"ETag": f'"{etag}"', "Cache-Control": "no-cache"}
    wanted = request.if_none_match
    if wanted and any(tag.value in (etag, "*") for tag in wanted):
        return web.Response(status=304, headers=headers)
    return web.Response(body=body, headers={**headers, "Content-Type": ATOM_CONTENT_TYPE})


# -- middleware ----------------------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _errors_middleware() -> Any:
    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except _BadRequest as exc:
            return _error(400, str(exc))
        except StoreError as exc:
            # One line naming the database without its password: safe to show.
            return _error(503, str(exc).splitlines()[0])
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            message = f"{request.path}: {exc.reason.lower()}"
            return _error(exc.status, message, headers=_allow_header(exc))

    return errors


def _allow_header(exc: web.HTTPException) -> Mapping[str, str] | None:
    allow = exc.headers.get("Allow")
    return {"Allow": allow} if allow else None


def _auth_middleware(token: SecretStr) -> Any:
    expected = token.get_secret_value().encode()

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not (request.path.startswith(API_PREFIX) or request.path == FEED_PATH):
            return await handler(request)
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return _error(
                401,
                "this API needs an 'Authorization: Bearer <token>' header",
                headers={"WWW-Authenticate": 'Bearer realm="3cx-auditor"'},
            )
        # Constant time, so the answer's timing does not reveal how much of a guess was right.
        if not hmac.compare_digest(given.strip().encode(), expected):
            return _error(
                401,
                "the bearer token is not valid",
                headers={"WWW-Authenticate": 'Bearer realm="3cx-auditor", error="invalid_token"'},
            )
        return await handler(request)

    return auth


# -- the application -----------------------------------------------------------------------


def make_app(
    *,
    store: Store,
    state: ServiceState,
    metrics: Metrics,
    token: SecretStr | None,
    feed_instance: str | None = None,
) -> web.Application:
    """The daemon's web application; serve it with :func:`start_http`.

    ``feed_instance`` names this auditor in the Atom ids (letters, digits, ``.``, ``_``,
    ``~``, ``-``; at most 64); by default it is derived from the database URL.
    """
    if feed_instance is None:
        feed_instance = default_feed_instance(store.url_for_display)
    elif not _INSTANCE.fullmatch(feed_instance):
        raise ConfigError(
            [
                "config: feed instance: must be 1 to 64 letters, digits, '.', '_', '~' or '-'"
                f" (got {feed_instance!r})"
            ]
        )
    middlewares = [_errors_middleware()]
    if token is not None and token.get_secret_value():
        middlewares.append(_auth_middleware(token))
    app = web.Application(middlewares=middlewares)
    app[STORE_KEY] = store
    app[STATE_KEY] = state
    app[METRICS_KEY] = metrics
    app[FEED_INSTANCE_KEY] = feed_instance
    app.router.add_get("/livez", livez, allow_head=True)
    app.router.add_get("/readyz", readyz, allow_head=True)
    app.router.add_get("/metrics", metrics_endpoint, allow_head=True)
    app.router.add_get("/api/v1/targets", api_targets)
    app.router.add_get("/api/v1/runs", api_runs)
    app.router.add_get("/api/v1/changes", api_changes)
    app.router.add_get("/api/v1/alerts", api_alerts)
    app.router.add_get(FEED_PATH, atom_feed)
    return app


def split_listen(listen: str) -> tuple[str | None, int]:
    """``"127.0.0.1:9337"``, ``"[::1]:9337"``, ``"localhost:9337"`` or ``":9337"`` (every
    interface) -> (host, port)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError([f"config: http.listen: must be host:port (got {listen!r})"])
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host or None, int(port)


async def start_http(app: web.Application, listen: str) -> web.AppRunner:
    """Serve ``app`` on ``listen`` (``host:port``); the caller ends it with ``runner.cleanup()``.

    Access logs are off (probes and scrapes every few seconds would drown the journal) and
    signals are left to the daemon.
    """
    host, port = split_listen(listen)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise ConfigError([f"config: http.listen: cannot listen on {listen}: {reason}"]) from None
    return runner


def base_url(runner: web.AppRunner) -> str:
    """``http://host:port`` of the first address ``runner`` listens on (IPv6 in brackets)."""
    host, port = runner.addresses[0][:2]
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"
