"""The alerts as an Atom 1.0 feed (RFC 4287) at ``GET /feed.atom``.

The feed holds the ``limit`` (1..1000, default 100) most recently recorded alert events,
newest first, one entry each (firing, repeated or resolved), optionally of one ``target``.
Identifiers are tag URIs (RFC 4151) that never change for the same record: the feed is
``tag:3cx-auditor,2026:<instance>`` and an entry ``tag:3cx-auditor,2026:<instance>/alert/<id>``
(``<id>`` the alert event's id). ``<instance>`` is ``make_app(feed_instance=...)`` or, by
default, ``db-`` and 16 hex digits of the SHA-256 of the database URL as displayed
(password masked): replicas sharing one database through the same URL publish the same
feed. The self link is built from the request (behind a proxy, from its ``Host`` header; the
path alone when that is no host name).
The response has an ``ETag``; a matching ``If-None-Match`` gets a 304.

:func:`render_feed` is pure (the same alerts always give the same bytes); the handler only
reads the store. Who may read the feed is decided in :mod:`auditor.web.auth`, not here.
"""

from __future__ import annotations

import hashlib
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from datetime import UTC, datetime
from html import escape
from typing import Any, Final

from aiohttp import web

from auditor.model import Alert, FieldChange, iso, visible
from auditor.web.cursors import check_known, parse_limit, parse_target
from auditor.web.state import FEED_INSTANCE_KEY, STORE_KEY

FEED_PATH: Final = "/feed.atom"
ATOM_NS: Final = "http://www.w3.org/2005/Atom"
ATOM_CONTENT_TYPE: Final = "application/atom+xml; charset=utf-8"
TAG_PREFIX: Final = "tag:3cx-auditor,2026:"

_FEED_PARAMS: Final = frozenset({"target", "limit"})
# XML 1.0 cannot carry these at all, not even escaped; a script name or a field value from
# a PBX might hold one.
_NOT_XML: Final = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


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
        # A title is one line of text: a PBX's control or bidi characters are shown escaped.
        title += f": {visible(alert.key)}"
    if alert.status == "resolved":
        title += " (resolved)"
    return title


def _html(text: str) -> str:
    """Text for the entry's HTML: markup escaped, what is not printable shown as an escape."""
    return escape(visible(text))


def _field_html(change: FieldChange) -> str:
    old = "(absent)" if change.missing == "old" else _value_text(change.old)
    new = "(absent)" if change.missing == "new" else _value_text(change.new)
    return f"<li><code>{_html(change.field)}</code>: {_html(old)} &#8594; {_html(new)}</li>"


def _entry_html(alert: Alert) -> str:
    parts = [f"<p>{_html(alert.message)}</p>"]
    if alert.fields:
        parts.append("<ul>" + "".join(_field_html(f) for f in alert.fields) + "</ul>")
    where = ", ".join(
        f"{name} {_html(str(value))}"
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


def _self_url(request: web.Request) -> str:
    try:
        return str(request.url)
    except ValueError:
        # A Host header no URL can hold (not a host name at all): the link is the path
        # alone, relative to wherever the reader fetched the feed from.
        return str(request.rel_url)


async def atom_feed(request: web.Request) -> web.StreamResponse:
    query = request.rel_url.query
    check_known(query, _FEED_PARAMS, request.path)
    found = await request.app[STORE_KEY].reads.alert_events(
        parse_target(query.get("target")), limit=parse_limit(query.get("limit")), newest_first=True
    )
    # The newest recorded, shown newest by time: targets audited side by side can record
    # an event a moment older than the one recorded just before it.
    found.sort(key=lambda a: (a.at, a.id), reverse=True)
    body = render_feed(found, instance=request.app[FEED_INSTANCE_KEY], self_url=_self_url(request))
    etag = hashlib.sha256(body).hexdigest()[:32]
    headers = {"ETag": f'"{etag}"', "Cache-Control": "no-cache"}
    wanted = request.if_none_match
    if wanted and any(tag.value in (etag, "*") for tag in wanted):
        return web.Response(status=304, headers=headers)
    return web.Response(body=body, headers={**headers, "Content-Type": ATOM_CONTENT_TYPE})
