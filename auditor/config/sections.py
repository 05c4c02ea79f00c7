"""The daemon's own sections: ``[database]``, ``[schedule]``, ``[audit]``, ``[http]``, ``[log]``.

Validated, frozen pydantic models with their defaults. Does no I/O and reads no environment
(the default of ``audit.max_concurrent`` asks :mod:`auditor.config.resources` what the process
may open); ``http.token`` is held as a :class:`pydantic.SecretStr` and never shown.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from auditor.config.resources import MAX_CONCURRENT_LIMIT, default_max_concurrent
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
        if value is not None and len(value.split()) != 5:
            raise ValueError(f"must have 5 fields like '*/15 * * * *' (got {value!r})")
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
    # Audits at once in one process; unset, what the machine carries (auditor.config.resources).
    max_concurrent: Annotated[int, between(1, MAX_CONCURRENT_LIMIT)] = Field(
        default_factory=default_max_concurrent
    )
    timeout: PositiveDuration = timedelta(minutes=10)
    # On SIGTERM, how long audits in flight may take to finish before they are cancelled.
    shutdown_grace: Duration = timedelta(seconds=30)


class HttpSettings(Section):
    listen: str = "127.0.0.1:9337"
    token: SecretStr | None = None

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
