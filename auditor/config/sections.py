"""The daemon's own sections: ``[database]``, ``[schedule]``, ``[audit]``, ``[http]``, ``[log]``.

Validated, frozen pydantic models with their defaults. Does no I/O and reads no environment
(the default of ``audit.max_concurrent`` asks :mod:`auditor.config.resources` what the process
may open); ``http.token`` is held as a :class:`pydantic.SecretStr` and never shown.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator

from auditor.config.database import url_problems
from auditor.config.resources import MAX_CONCURRENT_LIMIT, default_max_concurrent
from auditor.config.values import (
    Duration,
    PositiveDuration,
    Section,
    between,
    format_duration,
    parse_duration,
)

# The jitter when none is set: this, or the interval when that is shorter.
DEFAULT_JITTER = timedelta(seconds=30)
DEFAULT_INTERVAL = timedelta(minutes=15)


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
    # With every, the jitter places each target once within the interval: a longer one would
    # hold a new target back for several intervals. Unset, it is 30s or the interval if shorter.
    jitter: Duration = DEFAULT_JITTER
    # How often the daemon looks for due targets; sub-second values are for tests.
    tick: PositiveDuration = timedelta(seconds=1)
    # How long a replica's claim on a target outlives its last renewal (renewed every sixth
    # of it while the audit runs): a replica that dies is taken over after at most this.
    lease: PositiveDuration = timedelta(seconds=15)

    @field_validator("lease")
    @classmethod
    def _lease_long_enough(cls, value: timedelta) -> timedelta:
        if value < timedelta(seconds=1):
            raise ValueError(f"must be at least 1s (got {format_duration(value)})")
        return value

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

    @model_validator(mode="before")
    @classmethod
    def _jitter_within_a_short_interval(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("jitter") is not None or not data.get("every"):
            return data
        try:
            every = parse_duration(data["every"])
        except ValueError:
            return data  # reported by the field itself
        return {**data, "jitter": min(DEFAULT_JITTER, every)} if every < DEFAULT_JITTER else data

    @field_validator("jitter")
    @classmethod
    def _within_interval(cls, value: timedelta, info: ValidationInfo) -> timedelta:
        # A cron schedule draws the jitter anew for each run; an invalid every is reported alone.
        if info.data.get("cron") is not None or "every" not in info.data:
            return value
        every = info.data["every"]
        interval = every if isinstance(every, timedelta) else DEFAULT_INTERVAL
        if value > interval:
            where = "schedule.every" if every is not None else "the default schedule.every"
            raise ValueError(
                f"{format_duration(value)} is longer than {where} ({format_duration(interval)}): "
                f"a new target would wait several intervals for its first audit; use at most "
                f"{format_duration(interval)}"
            )
        return value

    @model_validator(mode="after")
    def _one_of(self) -> ScheduleSettings:
        if self.every is not None and self.cron is not None:
            raise ValueError("set either every or cron, not both")
        return self

    @property
    def interval(self) -> timedelta:
        """The fixed interval, when the schedule is not a cron expression."""
        return self.every if self.every is not None else DEFAULT_INTERVAL


class AuditSettings(Section):
    # Audits at once in one process; unset, what the machine carries (auditor.config.resources).
    max_concurrent: Annotated[int, between(1, MAX_CONCURRENT_LIMIT)] = Field(
        default_factory=default_max_concurrent
    )
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
    # At most this many connections at once (fewer when the descriptor limit is low); a
    # connection without a whole request for idle_timeout is closed.
    max_connections: Annotated[int, between(1, 100_000)] = 100
    idle_timeout: PositiveDuration = timedelta(seconds=15)

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
