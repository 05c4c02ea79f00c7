"""The ``[alerts]`` section and its sinks: ``[[alerts.webhook]]``, ``[[alerts.alertmanager]]``,
``[[alerts.apprise]]``.

Validated, frozen pydantic models, and the form of a Standard Webhooks secret. Does no I/O
and reads no environment: a webhook's ``secret_env`` / ``secret_file`` are only names here,
:mod:`auditor.config.secrets` reads them. No secret or sink URL is ever echoed in a message.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, ClassVar
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, SecretStr, field_validator, model_validator

from auditor.config.values import PositiveDuration, Section, between
from auditor.errors import ConfigError
from auditor.model import ALERT_KINDS, Severity

WEBHOOK_SECRET_PREFIX = "whsec_"  # noqa: S105 - the prefix of a secret, not one
SINK_TYPES = ("webhook", "alertmanager", "apprise")
_SINK_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


def _sink_url(value: str) -> str:
    # The value is never echoed: a sink URL may carry a token in its path or query.
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https"):
        raise ValueError("must start with https:// or http://")
    if not parts.hostname:
        raise ValueError("has no host name")
    if parts.username or parts.password:
        raise ValueError("must not contain credentials")
    if parts.fragment:
        raise ValueError("must not contain a fragment")
    return value.strip()


SinkUrl = Annotated[str, AfterValidator(_sink_url)]


class _SinkSettings(Section):
    """What every sink has: a name, and the filter that picks the alerts it receives."""

    sink_type: ClassVar[str] = ""

    name: Annotated[str, Field(pattern=_SINK_NAME)]
    min_severity: Severity = "info"
    kinds: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()

    @field_validator("kinds")
    @classmethod
    def _known_kinds(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [kind for kind in value if kind not in ALERT_KINDS]
        if unknown:
            raise ValueError(
                f"unknown alert kind {', '.join(map(repr, unknown))} "
                f"(known: {', '.join(ALERT_KINDS)})"
            )
        return value

    @property
    def key(self) -> str:
        """The sink's name in the outbox: ``<type>:<name>``."""
        return f"{self.sink_type}:{self.name}"


class WebhookSettings(_SinkSettings):
    """A JSON POST signed per the Standard Webhooks spec."""

    sink_type: ClassVar[str] = "webhook"

    url: SinkUrl
    secret: SecretStr | None = None
    secret_env: str | None = None
    secret_file: Path | None = None
    timeout: PositiveDuration = timedelta(seconds=10)

    @model_validator(mode="after")
    def _one_secret(self) -> WebhookSettings:
        given = [k for k in ("secret", "secret_env", "secret_file") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "set exactly one of secret, secret_env, secret_file"
                + (f" (got {', '.join(given)})" if given else "")
            )
        return self

    def signing_key(self) -> bytes:
        """The HMAC key: the base64-decoded part after ``whsec_`` (resolved by load_settings)."""
        if self.secret is None:
            raise ConfigError([f"config: alerts.webhook.{self.name}.secret: not resolved"])
        return webhook_key(self.secret.get_secret_value())


def webhook_key(secret: str) -> bytes:
    """``whsec_<base64>`` -> the key bytes; ValueError (never naming the secret) otherwise."""
    if not secret.startswith(WEBHOOK_SECRET_PREFIX):
        raise ValueError(f"must start with {WEBHOOK_SECRET_PREFIX} (a Standard Webhooks secret)")
    try:
        key = base64.b64decode(secret[len(WEBHOOK_SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"must be {WEBHOOK_SECRET_PREFIX} followed by base64") from None
    if not 24 <= len(key) <= 64:
        raise ValueError(
            f"must be {WEBHOOK_SECRET_PREFIX} followed by the base64 of 24 to 64 random bytes "
            f"(got {len(key)} bytes)"
        )
    return key


class AlertmanagerSettings(_SinkSettings):
    """A Prometheus Alertmanager, reached through its v2 API."""

    sink_type: ClassVar[str] = "alertmanager"

    url: SinkUrl
    resend_every: PositiveDuration = timedelta(minutes=1)
    change_expiry: PositiveDuration = timedelta(hours=1)
    timeout: PositiveDuration = timedelta(seconds=10)


class AppriseSettings(_SinkSettings):
    """Notification services (Slack, Teams, e-mail ...) through Apprise URLs."""

    sink_type: ClassVar[str] = "apprise"

    # Apprise URLs embed the services' tokens: secrets, never shown.
    urls: Annotated[tuple[SecretStr, ...], Field(min_length=1)]
    timeout: PositiveDuration = timedelta(seconds=30)


SinkSettings = WebhookSettings | AlertmanagerSettings | AppriseSettings


class AlertsSettings(Section):
    disconnected_after: Annotated[int, between(1, 1000)] = 3
    repeat_every: PositiveDuration = timedelta(hours=4)
    delivery_retry_min: PositiveDuration = timedelta(seconds=10)
    delivery_retry_max: PositiveDuration = timedelta(hours=1)
    webhook: tuple[WebhookSettings, ...] = ()
    alertmanager: tuple[AlertmanagerSettings, ...] = ()
    apprise: tuple[AppriseSettings, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _default_names(cls, data: Any) -> Any:
        # A sink without a name is called after its type and place: "webhook-1".
        if not isinstance(data, Mapping):
            return data
        data = dict(data)
        for sink_type in SINK_TYPES:
            items = data.get(sink_type)
            if isinstance(items, list | tuple):
                data[sink_type] = [
                    {"name": f"{sink_type}-{index}", **item} if isinstance(item, Mapping) else item
                    for index, item in enumerate(items, start=1)
                ]
        return data

    @model_validator(mode="after")
    def _unique_names(self) -> AlertsSettings:
        for sink_type in SINK_TYPES:
            seen: set[str] = set()
            for sink in getattr(self, sink_type):
                if sink.name in seen:
                    raise ValueError(f"{sink_type} sink name {sink.name!r} is used twice")
                seen.add(sink.name)
        if self.delivery_retry_min > self.delivery_retry_max:
            raise ValueError("delivery_retry_min must not be longer than delivery_retry_max")
        return self

    @property
    def sinks(self) -> tuple[SinkSettings, ...]:
        """Every configured sink, webhooks first, then Alertmanagers, then Apprise."""
        return (*self.webhook, *self.alertmanager, *self.apprise)
