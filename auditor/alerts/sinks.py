"""Alert sinks: where alerts go once they are in the outbox.

Every sink takes one alert (the JSON object of :meth:`auditor.model.Alert.as_json`) and
either delivers it or raises :class:`~auditor.errors.DeliveryError`: ``permanent`` when
retrying cannot help (the delivery is marked dead), ``disable`` when the endpoint is gone
for good, else retryable (with ``retry_after`` when the sink asked for a pause).

* :class:`WebhookSink`: a JSON POST signed per the Standard Webhooks spec (``webhook-id``,
  ``webhook-timestamp``, ``webhook-signature: v1,<base64 HMAC-SHA256 of id.timestamp.body>``).
  The id is stable across retries, so a receiver can drop a repeat. Only a 2xx counts; 410
  disables the endpoint; 408, 429 and 5xx are retried; any other 4xx (or 3xx) is final.
* :class:`AlertmanagerSink`: ``POST {url}/api/v2/alerts``. The labels carry the alert's
  stable identity (the *condition's* kind, so a resolution closes the alert its condition
  opened); a firing state alert ends ``resend_every`` x :data:`RESEND_MARGIN` from now and is
  re-sent while it fires (:func:`auditor.alerts.delivery.resend_firing`); a resolution ends
  it now; a change alert is one-shot and ends ``change_expiry`` after it is sent.
* :class:`AppriseSink`: Slack, Teams, e-mail and the rest through Apprise URLs.

No error message, and no log line, names a sink's URL: URLs may carry tokens. Sinks are
named ``<type>:<name>`` as in the outbox.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlsplit

import aiohttp
import structlog
from standardwebhooks.webhooks import Webhook

from auditor import __version__
from auditor.alerts.lifecycle import condition_kind, condition_severity, is_state_kind
from auditor.alerts.routing import SinkFilter
from auditor.config import (
    AlertmanagerSettings,
    AlertsSettings,
    AppriseSettings,
    SinkSettings,
    WebhookSettings,
)
from auditor.errors import DeliveryError
from auditor.model import JSON, Severity, canonical_json, iso, utcnow, visible

log = structlog.get_logger("auditor.delivery")

USER_AGENT = f"3cx-auditor/{__version__}"
# A firing state alert sent to Alertmanager ends this many re-send intervals from now: one
# or two lost re-sends do not resolve it, a dead auditor lets it expire.
RESEND_MARGIN = 4
_EXCERPT = 200


class Sink(Protocol):
    """One configured destination of alerts."""

    @property
    def name(self) -> str:
        """``<type>:<name>``, the sink's name in the outbox."""
        ...

    @property
    def filter(self) -> SinkFilter: ...

    @property
    def timeout(self) -> timedelta:
        """The longest one delivery may take."""
        ...

    async def deliver(self, alert: JSON, *, delivery_id: str) -> None:
        """Deliver ``alert`` or raise DeliveryError; ``delivery_id`` is stable across retries."""
        ...

    async def close(self) -> None: ...


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """An HTTP ``Retry-After`` (seconds or an HTTP date) as seconds from now."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - (now or utcnow())).total_seconds())


def _excerpt(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= _EXCERPT else line[: _EXCERPT - 3] + "..."


def _url_parts(url: str) -> list[str]:
    """The parts of ``url`` that may be a token (path, query, long path segments, query
    values), longest first: a receiver that echoes its request must not leak them."""
    parts = urlsplit(url)
    found = {url, parts.path, parts.query}
    found.update(segment for segment in parts.path.split("/") if len(segment) >= 8)
    found.update(value for _key, value in parse_qsl(parts.query) if len(value) >= 4)
    return sorted((p for p in found if len(p) > 1), key=len, reverse=True)


def _scrub(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def _transport_reason(exc: BaseException, timeout: timedelta) -> str:
    # aiohttp's own messages name the host and port; the reason alone is enough here.
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout.total_seconds():g}s"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect: {exc.os_error.strerror or type(exc.os_error).__name__}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection"
    return f"request failed: {type(exc).__name__}"


class _HttpSink:
    """A sink that POSTs JSON over HTTP with its own connection pool."""

    def __init__(self, settings: WebhookSettings | AlertmanagerSettings) -> None:
        self._name = settings.key
        self._filter = SinkFilter.of(settings)
        self._timeout = settings.timeout
        self._session: aiohttp.ClientSession | None = None
        self._secrets = _url_parts(settings.url)

    @property
    def name(self) -> str:
        return self._name

    @property
    def filter(self) -> SinkFilter:
        return self._filter

    @property
    def timeout(self) -> timedelta:
        return self._timeout

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout.total_seconds()),
                headers={"User-Agent": USER_AGENT},
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _post(self, url: str, body: bytes, headers: Mapping[str, str]) -> None:
        try:
            async with self._client().post(
                url,
                data=body,
                headers={"Content-Type": "application/json", **headers},
                allow_redirects=False,
            ) as response:
                status = response.status
                reason = response.reason or ""
                retry_after = retry_after_seconds(response.headers.get("Retry-After"))
                text = "" if 200 <= status < 300 else await response.text(errors="replace")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise DeliveryError(f"{self.name}: {_transport_reason(exc, self._timeout)}") from None
        if 200 <= status < 300:
            return
        self._refused(status, reason, text, retry_after)

    def _refused(self, status: int, reason: str, text: str, retry_after: float | None) -> None:
        detail = f"{self.name}: HTTP {status} {reason}".rstrip()
        if text.strip():
            detail += f": {_excerpt(_scrub(text, self._secrets))}"
        if status in (408, 429) or status >= 500:
            raise DeliveryError(detail, retry_after=retry_after)
        raise DeliveryError(detail, permanent=True)


class WebhookSink(_HttpSink):
    """A JSON POST of the alert object, signed per the Standard Webhooks spec."""

    def __init__(self, settings: WebhookSettings) -> None:
        super().__init__(settings)
        self._url = settings.url
        self._signer = Webhook(settings.signing_key())
        self.gone = False

    def sign(self, delivery_id: str, timestamp: int, body: str) -> str:
        """The ``webhook-signature`` header value for this id, time and body."""
        return self._signer.sign(delivery_id, datetime.fromtimestamp(timestamp, UTC), body)

    async def deliver(self, alert: JSON, *, delivery_id: str) -> None:
        if self.gone:
            raise DeliveryError(
                f"{self.name}: disabled: its endpoint answered 410 Gone", disable=True
            )
        body = canonical_json(alert).decode()
        timestamp = int(time.time())
        headers = {
            "webhook-id": delivery_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": self.sign(delivery_id, timestamp, body),
        }
        await self._post(self._url, body.encode(), headers)

    def _refused(self, status: int, reason: str, text: str, retry_after: float | None) -> None:
        if status == 410:
            # Standard Webhooks: 410 Gone means the receiver wants no more deliveries.
            self.gone = True
            raise DeliveryError(
                f"{self.name}: HTTP 410 Gone: the endpoint is disabled until the auditor "
                "restarts with it fixed",
                disable=True,
            )
        super()._refused(status, reason, text, retry_after)


def _description(alert: JSON) -> str:
    """The alert as plain text: its message, then one line per changed field.

    Each line is made :func:`~auditor.model.visible`, so a PBX's string cannot add a line
    of its own; escaping for a markup (HTML, Markdown) is the receiver's, told it is text.
    """
    lines = [visible(str(alert.get("message", "")))]
    for change in alert.get("fields") or ():
        old = json.dumps(change.get("old"), ensure_ascii=False)
        new = json.dumps(change.get("new"), ensure_ascii=False)
        lines.append(visible(f"{change.get('field')}: {old} -> {new}"))
    return "\n".join(lines)


def alertmanager_alert(
    alert: JSON,
    *,
    now: datetime,
    resend_every: timedelta,
    change_expiry: timedelta,
) -> JSON:
    """The Alertmanager v2 (``postableAlert``) form of one alert event."""
    kind = str(alert["kind"])
    condition = condition_kind(kind)
    severity: Severity = condition_severity(kind, alert["severity"])
    at = datetime.fromisoformat(str(alert["at"]).replace("Z", "+00:00"))
    labels = {
        "alertname": condition,
        "kind": condition,
        "severity": severity,
        "target": str(alert["target"]),
        "fingerprint": str(alert["fingerprint"]),
    }
    for name in ("collection", "key"):
        if alert.get(name):
            labels[name] = str(alert[name])
    if not is_state_kind(kind):
        # Each change is its own one-shot alert, not a repeat of the previous change.
        labels["alert_id"] = str(alert["id"])
    if alert["status"] == "resolved":
        starts, ends = at, at
    elif is_state_kind(kind):
        starts, ends = at, max(at, now) + resend_every * RESEND_MARGIN
    else:
        starts, ends = at, max(at, now) + change_expiry
    return {
        "labels": labels,
        "annotations": {
            "summary": str(alert["message"]),
            "description": _description(alert),
            "alert_id": str(alert["id"]),
            "status": str(alert["status"]),
            "event_kind": kind,
        },
        "startsAt": iso(starts),
        "endsAt": iso(ends),
    }


class AlertmanagerSink(_HttpSink):
    """Alerts posted to an Alertmanager's v2 API."""

    def __init__(self, settings: AlertmanagerSettings) -> None:
        super().__init__(settings)
        self._url = settings.url.rstrip("/")
        if not self._url.endswith("/api/v2/alerts"):
            self._url += "/api/v2/alerts"
        self.resend_every = settings.resend_every
        self.change_expiry = settings.change_expiry
        # When resend_firing last looked for alerts to re-send to this sink.
        self.resend_checked: datetime | None = None

    async def deliver(self, alert: JSON, *, delivery_id: str) -> None:
        payload = alertmanager_alert(
            alert, now=utcnow(), resend_every=self.resend_every, change_expiry=self.change_expiry
        )
        await self._post(self._url, canonical_json([payload]), {})


class AppriseSink:
    """Alerts sent through Apprise (one notification per alert to every URL of the sink).

    When one of several URLs fails, the alert is retried on all of them: give a service
    that must not see repeats its own ``[[alerts.apprise]]``.

    The body is sent as text (Apprise escapes it for HTML and Markdown services); the
    title holds only the alert's kind and the target's name, which the configuration
    limits to letters, digits, ``.``, ``_`` and ``-``, because Apprise passes a separate
    title through unconverted.
    """

    def __init__(self, settings: AppriseSettings) -> None:
        self._name = settings.key
        self._filter = SinkFilter.of(settings)
        self._urls = tuple(url.get_secret_value() for url in settings.urls)
        self._timeout = settings.timeout
        self._apprise: Any = None

    @property
    def name(self) -> str:
        return self._name

    @property
    def filter(self) -> SinkFilter:
        return self._filter

    @property
    def timeout(self) -> timedelta:
        return self._timeout

    def _client(self) -> Any:
        if self._apprise is None:
            from apprise import Apprise

            # Apprise logs the URLs it uses (masked by its own rules, which cannot be
            # checked for every service here): its log stays shut, so no token leaks.
            logging.getLogger("apprise").setLevel(logging.CRITICAL + 1)
            client = Apprise()
            if not client.add(list(self._urls)):
                raise DeliveryError(
                    f"{self.name}: a URL is not one Apprise understands", permanent=True
                )
            self._apprise = client
        return self._apprise

    async def deliver(self, alert: JSON, *, delivery_id: str) -> None:
        from apprise import NotifyFormat, NotifyType

        client = self._client()
        severity = alert.get("severity")
        if alert.get("status") == "resolved":
            notify_type = NotifyType.SUCCESS
        elif severity == "critical":
            notify_type = NotifyType.FAILURE
        elif severity == "warning":
            notify_type = NotifyType.WARNING
        else:
            notify_type = NotifyType.INFO
        title = f"{alert['kind']} on {alert['target']}"
        if alert.get("status") == "resolved":
            title += " (resolved)"
        try:
            result = await client.async_notify(
                body=_description(alert),
                title=title,
                notify_type=notify_type,
                # The body is text: Apprise escapes it for each service that takes HTML or
                # Markdown (an HTML e-mail, Slack, Discord, ...). Without a format it passes
                # the body through as the service's own markup, and a script named
                # "<img src=x onerror=...>.sh" would be live markup in an HTML e-mail.
                body_format=NotifyFormat.TEXT,
                timeout=self._timeout.total_seconds(),
            )
        except Exception as exc:
            # Apprise wraps dozens of services; whatever one of them raises is a failed
            # attempt of this delivery, never the end of the deliverer.
            raise DeliveryError(f"{self.name}: apprise failed: {type(exc).__name__}") from None
        if not result:
            failed = sorted({str(item.name) for item in result if not item})
            services = ", ".join(failed) or "no service"
            raise DeliveryError(f"{self.name}: not delivered by {services}")

    async def close(self) -> None:
        self._apprise = None


def build_sink(settings: SinkSettings) -> Sink:
    if isinstance(settings, WebhookSettings):
        return WebhookSink(settings)
    if isinstance(settings, AlertmanagerSettings):
        return AlertmanagerSink(settings)
    return AppriseSink(settings)


def build_sinks(settings: AlertsSettings) -> dict[str, Sink]:
    """Every configured sink by its outbox name (``<type>:<name>``)."""
    return {sink.key: build_sink(sink) for sink in settings.sinks}


async def close_sinks(sinks: Mapping[str, Sink]) -> None:
    for sink in sinks.values():
        await sink.close()


__all__ = [
    "RESEND_MARGIN",
    "AlertmanagerSink",
    "AppriseSink",
    "Sink",
    "WebhookSink",
    "alertmanager_alert",
    "build_sink",
    "build_sinks",
    "close_sinks",
    "retry_after_seconds",
]
