"""The daemon's own sections: ``[database]``, ``[schedule]``, ``[audit]``, ``[http]``, ``[log]``.

Validated, frozen pydantic models with their defaults. Does no I/O and reads no environment;
``http.token`` is held as a :class:`pydantic.SecretStr` and never shown.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

from pydantic import SecretStr, field_validator, model_validator

from auditor.config.database import url_problems
from auditor.config.values import Duration, PositiveDuration, Section, between


class DatabaseSettings(Section):
    url: str = "sqlite:////var/lib/3cx-auditor/audit.db"

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        scheme = value.split(":", 1)[0].split("+", 1)[0].lower()
        if scheme not in ("sqlite", "postgresql", "postgres"):
            raise ValueError(
                f"must be a sqlite:///path or postgresql://user@host/db URL (got scheme {scheme!r})"
            )
        problems = url_problems(value)
        if problems:
            raise ValueError("; ".join(problems))
        return value


class ScheduleSettings(Section):
    every: PositiveDuration | None = None
    cron: str | None = None
    jitter: Duration = timedelta(seconds=30)
    # How often the daemon looks for due targets; sub-second values are for tests.
    tick: PositiveDuration = timedelta(seconds=1)

    @field_validator("cron")
    @classmethod
    def _cron_fields(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if len(value.split()) != 5:
            raise ValueError(f"must have 5 fields like '*/15 * * * *' (got {value!r})")
        # Parsed as the daemon will parse it, so that check-config refuses what `run` would.
        from apscheduler.triggers.cron import CronTrigger

        try:
            CronTrigger.from_crontab(value)
        except ValueError as exc:
            raise ValueError(f"{exc} (got {value!r})") from None
        return value

    @model_validator(mode="after")
    def _one_of(self) -> ScheduleSettings:
        if self.every is not None and self.cron is not None:
            raise ValueError("set either every or cron, not both")
        return self

    @property
    def interval(self) -> timedelta:
        """The fixed interval, when the schedule is not a cron expression."""
        return self.every if self.every is not None else timedelta(minutes=15)


class AuditSettings(Section):
    max_concurrent: Annotated[int, between(1, 1000)] = 8
    timeout: PositiveDuration = timedelta(minutes=10)
    # On SIGTERM, how long audits in flight may take to finish before they are cancelled.
    shutdown_grace: Duration = timedelta(seconds=30)
    # The HMAC key of concealed values (repository passwords): one of the three, or none.
    secret_digest_key: SecretStr | None = None
    secret_digest_key_env: str | None = None
    secret_digest_key_file: Path | None = None

    @model_validator(mode="after")
    def _one_digest_key(self) -> AuditSettings:
        keys = ("secret_digest_key", "secret_digest_key_env", "secret_digest_key_file")
        given = [key for key in keys if getattr(self, key) is not None]
        if len(given) > 1:
            raise ValueError(f"set at most one of {', '.join(keys)} (got {', '.join(given)})")
        return self

    def digest_key(self) -> bytes | None:
        """The key of concealed values' digests (resolved from env or file), if one is set."""
        if self.secret_digest_key is None:
            return None
        return self.secret_digest_key.get_secret_value().encode()


class HttpSettings(Section):
    listen: str = "127.0.0.1:9337"
    token: SecretStr | None = None
    # Serve the API and the feed without a token on an address beyond this host.
    allow_unauthenticated: bool = False

    @field_validator("token")
    @classmethod
    def _not_empty(cls, value: SecretStr | None) -> SecretStr | None:
        # An empty token (AUDITOR_HTTP__TOKEN= over a file that sets one) would switch
        # authentication off without a word: refused, never taken as "no token".
        if value is not None and not value.get_secret_value().strip():
            raise ValueError(
                "is empty: set a token, or remove the key (and AUDITOR_HTTP__TOKEN) for none"
            )
        return value

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        _host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"must be host:port like 127.0.0.1:9337 (got {value!r})")
        return value


class LogSettings(Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"
