"""Configuration: TOML file + environment + credential files -> validated, frozen settings.

Precedence, highest first: ``AUDITOR_*`` environment variables (``__`` between levels, e.g.
``AUDITOR_DATABASE__URL``), then the TOML file, then the defaults below. Every problem is
reported as one line ``config: <dotted.key>: <why>``; all problems are collected before
:class:`~auditor.errors.ConfigError` is raised, so one run of ``check-config`` shows them all.

Secrets (``client_secret``, ``http.token``) are :class:`pydantic.SecretStr`: they print as
``**********`` and only :meth:`TargetSettings.secret` hands out the value.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import logging
import os
import re
import stat
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from auditor.errors import ConfigError
from auditor.model import ALERT_KINDS, Severity

ENV_PREFIX = "AUDITOR_"
CONFIG_ENV = "AUDITOR_CONFIG"
DEFAULT_PATHS = (Path("auditor.toml"), Path("/etc/3cx-auditor/config.toml"))

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: object) -> timedelta:
    """``"15m"``, ``"1h30m"``, ``"500ms"``, ``"2d"`` or a number of seconds -> timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError(f"must be a duration like '30s', '15m' or '1h' (got {value!r})")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"must not be negative (got {value!r})")
        return timedelta(seconds=value)
    if isinstance(value, str):
        text = value.strip().replace(" ", "")
        if text and _DURATION_PART.sub("", text) == "":
            seconds = sum(
                float(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(text)
            )
            return timedelta(seconds=seconds)
        try:
            return parse_duration(float(text))
        except ValueError:
            pass
    raise ValueError(f"must be a duration like '30s', '15m' or '1h' (got {value!r})")


def format_duration(value: timedelta) -> str:
    """The inverse of :func:`parse_duration` for display: ``timedelta(seconds=90)`` -> ``1m30s``."""
    total = value.total_seconds()
    if total < 1:
        return f"{round(total * 1000)}ms"
    out = []
    for unit in ("d", "h", "m", "s"):
        size = _UNIT_SECONDS[unit]
        count, total = divmod(total, size)
        if count:
            out.append(f"{int(count)}{unit}")
    return "".join(out) or "0s"


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


def _positive(value: timedelta) -> timedelta:
    if value.total_seconds() <= 0:
        raise ValueError("must be longer than zero")
    return value


PositiveDuration = Annotated[Duration, AfterValidator(_positive)]


def _between(low: int, high: int) -> AfterValidator:
    def check(value: int) -> int:
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high} (got {value})")
        return value

    return AfterValidator(check)


def normalise_url(value: str) -> str:
    """The PBX's base URL: scheme and host, no trailing ``/`` or ``/xapi/v1``.

    A path prefix is kept (a PBX behind a reverse proxy, or one of the simulator's PBXs).
    Credentials, queries and fragments are refused: they would end up in logs.
    """
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"must start with https:// or http:// (got {value!r})")
    if not parts.hostname:
        raise ValueError(f"has no host name (got {value!r})")
    if parts.username or parts.password:
        raise ValueError("must not contain credentials; use client_id and client_secret")
    if parts.query or parts.fragment:
        raise ValueError("must not contain a query or a fragment")
    path = parts.path.rstrip("/")
    for suffix in ("/xapi/v1", "/xapi"):
        if path.lower().endswith(suffix):
            path = path[: -len(suffix)]
            break
    return urlunsplit((parts.scheme, parts.netloc.lower(), path.rstrip("/"), "", ""))


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatabaseSettings(_Section):
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


class ScheduleSettings(_Section):
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


class StateRule(_Section):
    """Which field of an item tells its state, and which values of it are healthy."""

    field: str = "State"
    healthy: tuple[str, ...] = ("Connected",)


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


class _SinkSettings(_Section):
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


class AlertsSettings(_Section):
    disconnected_after: Annotated[int, _between(1, 1000)] = 3
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


class AuditSettings(_Section):
    max_concurrent: Annotated[int, _between(1, 1000)] = 8
    timeout: PositiveDuration = timedelta(minutes=10)
    # On SIGTERM, how long audits in flight may take to finish before they are cancelled.
    shutdown_grace: Duration = timedelta(seconds=30)


class HttpSettings(_Section):
    listen: str = "127.0.0.1:9337"
    token: SecretStr | None = None

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        _host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"must be host:port like 127.0.0.1:9337 (got {value!r})")
        return value


class LogSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class TargetSettings(_Section):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
    url: Annotated[str, AfterValidator(normalise_url)]
    client_id: Annotated[str, Field(min_length=1)]
    client_secret: SecretStr | None = None
    client_secret_env: str | None = None
    client_secret_file: Path | None = None
    page_size: Annotated[int, _between(1, 100)] = 100
    filter: str | None = None
    search: str | None = None
    verify_tls: bool = True
    ca_file: Path | None = None
    request_timeout: PositiveDuration = timedelta(seconds=30)
    listing_timeout: PositiveDuration = timedelta(minutes=5)
    retries: Annotated[int, _between(0, 20)] = 4
    max_relist: Annotated[int, _between(0, 20)] = 3
    ignore_fields: tuple[str, ...] = ()
    state: StateRule = StateRule()

    @model_validator(mode="after")
    def _one_secret(self) -> TargetSettings:
        given = [
            key
            for key in ("client_secret", "client_secret_env", "client_secret_file")
            if getattr(self, key) is not None
        ]
        if len(given) != 1:
            raise ValueError(
                "set exactly one of client_secret, client_secret_env, client_secret_file"
                + (f" (got {', '.join(given)})" if given else "")
            )
        return self

    def secret(self) -> str:
        """The client secret (resolved from env or file by :func:`load_settings`)."""
        if self.client_secret is None:
            raise ConfigError([f"config: targets.{self.name}.client_secret: not resolved"])
        return self.client_secret.get_secret_value()


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    database: DatabaseSettings = DatabaseSettings()
    schedule: ScheduleSettings = ScheduleSettings()
    alerts: AlertsSettings = AlertsSettings()
    audit: AuditSettings = AuditSettings()
    http: HttpSettings = HttpSettings()
    log: LogSettings = LogSettings()
    targets: tuple[TargetSettings, ...] = ()

    @field_validator("targets")
    @classmethod
    def _unique_names(cls, value: tuple[TargetSettings, ...]) -> tuple[TargetSettings, ...]:
        seen: set[str] = set()
        for target in value:
            if target.name in seen:
                raise ValueError(f"target name {target.name!r} is used twice")
            seen.add(target.name)
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file arrives as init kwargs; the environment overrides it.
        return (env_settings, init_settings)

    def target(self, name: str) -> TargetSettings:
        for target in self.targets:
            if target.name == name:
                return target
        known = ", ".join(t.name for t in self.targets) or "none configured"
        raise ConfigError([f"config: targets: no target named {name!r} (known: {known})"])


@dataclass(frozen=True)
class Loaded:
    """Validated settings, where they came from, and warnings that do not stop the program."""

    settings: Settings
    path: Path | None
    warnings: tuple[str, ...]


def find_config(explicit: str | os.PathLike[str] | None) -> Path | None:
    """The config file to read: ``--config``, ``$AUDITOR_CONFIG``, then the default paths."""
    if explicit:
        return Path(explicit)
    from_env = os.environ.get(CONFIG_ENV)
    if from_env:
        return Path(from_env)
    for candidate in DEFAULT_PATHS:
        if candidate.is_file():
            return candidate
    return None


def _dotted(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def _section_fields(loc: Sequence[int | str]) -> list[str]:
    """Names allowed at the place of an unknown key, for a 'did you mean' hint."""
    model: Any = Settings
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        annotation = field.annotation
        inner = getattr(annotation, "__args__", None)
        if inner and not hasattr(annotation, "model_fields"):
            annotation = next((a for a in inner if hasattr(a, "model_fields")), annotation)
        model = annotation
    return list(getattr(model, "model_fields", {}))


def _problems(error: ValidationError) -> list[str]:
    lines = []
    for item in error.errors(include_url=False):
        loc = [p for p in item["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
        # Union members and Annotated wrappers add their type name to the location.
        loc = [p for p in loc if not ((isinstance(p, str) and p[:1].isupper()) or p == "str")]
        key = _dotted(loc) or "(top level)"
        kind = item["type"]
        if kind == "extra_forbidden":
            hint = difflib.get_close_matches(str(loc[-1]), _section_fields(loc), n=1)
            why = "unknown key" + (f" (did you mean {hint[0]!r}?)" if hint else "")
        elif kind == "missing":
            why = "required"
        else:
            why = str(item["msg"]).removeprefix("Value error, ")
            got = item.get("input")
            if kind in ("string_type", "int_type", "int_parsing", "bool_type", "bool_parsing"):
                why = f"{why.rstrip('.').lower()} (got {got!r})"
        lines.append(f"config: {key}: {why}")
    return list(dict.fromkeys(lines))


def _read_secret_file(path: Path) -> str:
    if not path.is_absolute():
        cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
        if cred_dir:
            path = Path(cred_dir) / path
    return path.read_text(encoding="utf-8").strip()


def _resolve_secrets(settings: Settings) -> tuple[Settings, list[str]]:
    problems: list[str] = []
    targets = []
    for index, target in enumerate(settings.targets):
        value: str | None = None
        if target.client_secret_env is not None:
            key = f"targets[{index}].client_secret_env"
            value = os.environ.get(target.client_secret_env)
            if not value:
                problems.append(
                    f"config: {key}: environment variable {target.client_secret_env} "
                    "is not set or empty"
                )
        elif target.client_secret_file is not None:
            key = f"targets[{index}].client_secret_file"
            try:
                value = _read_secret_file(target.client_secret_file)
            except OSError as exc:
                problems.append(
                    f"config: {key}: cannot read {target.client_secret_file}: {exc.strerror or exc}"
                )
            else:
                if not value:
                    problems.append(f"config: {key}: {target.client_secret_file} is empty")
        elif target.client_secret is not None and not target.client_secret.get_secret_value():
            problems.append(f"config: targets[{index}].client_secret: is empty")
        if value:
            target = target.model_copy(update={"client_secret": SecretStr(value)})
        targets.append(target)
    return settings.model_copy(update={"targets": tuple(targets)}), problems


def _resolve_sink_secrets(settings: Settings) -> tuple[Settings, list[str]]:
    """Read webhook secrets from env or file, check their form, and check sink filters."""
    problems: list[str] = []
    alerts = settings.alerts
    webhooks = []
    for index, hook in enumerate(alerts.webhook):
        where = f"alerts.webhook[{index}]"
        value: str | None = None
        if hook.secret_env is not None:
            key = f"{where}.secret_env"
            value = os.environ.get(hook.secret_env)
            if not value:
                problems.append(
                    f"config: {key}: environment variable {hook.secret_env} is not set or empty"
                )
        elif hook.secret_file is not None:
            key = f"{where}.secret_file"
            try:
                value = _read_secret_file(hook.secret_file)
            except OSError as exc:
                problems.append(
                    f"config: {key}: cannot read {hook.secret_file}: {exc.strerror or exc}"
                )
        else:
            key = f"{where}.secret"
            value = hook.secret.get_secret_value() if hook.secret is not None else None
        if value:
            try:
                webhook_key(value)
            except ValueError as exc:
                problems.append(f"config: {key}: {exc}")
            hook = hook.model_copy(update={"secret": SecretStr(value)})
        webhooks.append(hook)
    known = {t.name for t in settings.targets}
    for sink_type in SINK_TYPES:
        for index, sink in enumerate(getattr(alerts, sink_type)):
            unknown = [name for name in sink.targets if name not in known]
            if unknown:
                problems.append(
                    f"config: alerts.{sink_type}[{index}].targets: no target named "
                    f"{', '.join(map(repr, unknown))} (known: {', '.join(sorted(known)) or 'none'})"
                )
    for index, sink in enumerate(alerts.apprise):
        problems.extend(
            f"config: alerts.apprise[{index}].urls[{at}]: not a URL that Apprise understands"
            for at in _unknown_apprise_urls(sink)
        )
    alerts = alerts.model_copy(update={"webhook": tuple(webhooks)})
    return settings.model_copy(update={"alerts": alerts}), problems


def _unknown_apprise_urls(sink: AppriseSettings) -> list[int]:
    # Imported here: only configurations with an Apprise sink pay for loading it.
    from apprise import Apprise

    # Apprise logs the URLs it parses (masked by its own rules, which this program cannot
    # check for every service): its log stays shut, so no token can reach a log line.
    logging.getLogger("apprise").setLevel(logging.CRITICAL + 1)
    return [
        index
        for index, url in enumerate(sink.urls)
        if Apprise.instantiate(url.get_secret_value()) is None
    ]


def _world_readable_with_secret(path: Path, data: Mapping[str, Any]) -> bool:
    alerts = data.get("alerts")
    sinks = alerts if isinstance(alerts, Mapping) else {}
    has_inline = (
        any(isinstance(t, Mapping) and "client_secret" in t for t in data.get("targets", []) or [])
        or (isinstance(data.get("http"), Mapping) and "token" in data["http"])
        or any(isinstance(w, Mapping) and "secret" in w for w in sinks.get("webhook", []) or [])
        or bool(sinks.get("apprise"))
    )
    if not has_inline:
        return False
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return bool(mode & stat.S_IROTH)


def load_settings(path: str | os.PathLike[str] | None, *, require_file: bool = False) -> Loaded:
    """Read, validate and resolve the configuration; raise ConfigError with every problem."""
    config_path = find_config(path)
    data: dict[str, Any] = {}
    warnings: list[str] = []
    if config_path is None:
        if require_file:
            raise ConfigError(
                [
                    "config: no configuration file: pass --config PATH, set "
                    f"{CONFIG_ENV}, or create ./auditor.toml or /etc/3cx-auditor/config.toml"
                ]
            )
    else:
        try:
            with config_path.open("rb") as handle:
                data = tomllib.load(handle)
        except FileNotFoundError:
            raise ConfigError([f"config: {config_path}: file not found"]) from None
        except OSError as exc:
            raise ConfigError([f"config: {config_path}: {exc.strerror or exc}"]) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError([f"config: {config_path}: not valid TOML: {exc}"]) from None
        if _world_readable_with_secret(config_path, data):
            warnings.append(
                f"config: {config_path}: holds a secret and is readable by other users; "
                f"run: chmod o-r {config_path} (or use client_secret_file / LoadCredential)"
            )
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_problems(exc)) from None
    settings, problems = _resolve_secrets(settings)
    settings, sink_problems = _resolve_sink_secrets(settings)
    problems.extend(sink_problems)
    for target in settings.targets:
        if not target.verify_tls:
            warnings.append(
                f"config: target {target.name}: verify_tls = false: the PBX's identity is "
                "not checked and its traffic can be intercepted; prefer ca_file"
            )
        if target.ca_file is not None and not target.ca_file.is_file():
            index = settings.targets.index(target)
            problems.append(f"config: targets[{index}].ca_file: {target.ca_file} is not a file")
    if problems:
        raise ConfigError(problems)
    return Loaded(settings=settings, path=config_path, warnings=tuple(warnings))
