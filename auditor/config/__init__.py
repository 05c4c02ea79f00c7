"""Configuration: TOML file + environment + credential files -> validated, frozen settings.

Precedence, highest first: ``AUDITOR_*`` environment variables (``__`` between levels, e.g.
``AUDITOR_DATABASE__URL``), then the TOML file, then the defaults. Every problem is
reported as one line ``config: <dotted.key>: <why>``; all problems are collected before
:class:`~auditor.errors.ConfigError` is raised, so one run of ``check-config`` shows them all.

Secrets (``client_secret``, ``http.token``) are :class:`pydantic.SecretStr`: they print as
``**********`` and only :meth:`TargetSettings.secret` hands out the value.

The package, one job per module (each imports only those above it):

- :mod:`~auditor.config.database`: what a database URL holds: its secrets (masked for
  display), its TLS mode, the driver's parameters
- :mod:`~auditor.config.values`: durations, bounded integers, the PBX URL, the section base
- :mod:`~auditor.config.resources`: what the machine carries (open files), the default of
  ``audit.max_concurrent``
- :mod:`~auditor.config.sections`: ``[database] [schedule] [audit] [http] [log]``
- :mod:`~auditor.config.alerts`: ``[alerts]`` and its webhook / Alertmanager / Apprise sinks
- :mod:`~auditor.config.targets`: ``[[targets]]``
- :mod:`~auditor.config.settings`: :class:`Settings`, the root, with the environment on top
- :mod:`~auditor.config.environment`: the ``AUDITOR_*`` variables: which key each sets, unknown ones
- :mod:`~auditor.config.problems`: validation errors in plain words, secret values never shown
- :mod:`~auditor.config.secrets`: secrets from the environment, files, ``$CREDENTIALS_DIRECTORY``
- :mod:`~auditor.config.checks`: checks across sections once the settings are valid (filters too)
- :mod:`~auditor.config.load`: finding and reading the file, one line per problem

Other modules import from here, not from the modules above. Nothing here prints or logs.
"""

from auditor.config.alerts import (
    SINK_TYPES,
    WEBHOOK_SECRET_PREFIX,
    AlertmanagerSettings,
    AlertsSettings,
    AppriseSettings,
    SinkSettings,
    SinkUrl,
    WebhookSettings,
    webhook_key,
)
from auditor.config.database import (
    DSN_PARAMETERS,
    DatabaseTls,
    database_tls,
    display_url,
    url_secrets,
)
from auditor.config.environment import CONFIG_ENV, overrides, with_variables
from auditor.config.load import DEFAULT_PATHS, Loaded, find_config, load_settings
from auditor.config.resources import (
    AUDITS_CAP,
    FILES_RESERVED,
    MAX_CONCURRENT_LIMIT,
    default_max_concurrent,
    ensure_open_files,
    files_needed,
    open_files_limit,
)
from auditor.config.secrets import SECRET_KINDS, SecretKind
from auditor.config.sections import (
    AuditSettings,
    DatabaseSettings,
    HttpSettings,
    LogSettings,
    ScheduleSettings,
)
from auditor.config.settings import ENV_PREFIX, Settings
from auditor.config.targets import StateRule, TargetSettings
from auditor.config.values import (
    Duration,
    PositiveDuration,
    format_duration,
    normalise_url,
    parse_duration,
)

__all__ = [
    "AUDITS_CAP",
    "CONFIG_ENV",
    "DEFAULT_PATHS",
    "DSN_PARAMETERS",
    "ENV_PREFIX",
    "FILES_RESERVED",
    "MAX_CONCURRENT_LIMIT",
    "SECRET_KINDS",
    "SINK_TYPES",
    "WEBHOOK_SECRET_PREFIX",
    "AlertmanagerSettings",
    "AlertsSettings",
    "AppriseSettings",
    "AuditSettings",
    "DatabaseSettings",
    "DatabaseTls",
    "Duration",
    "HttpSettings",
    "Loaded",
    "LogSettings",
    "PositiveDuration",
    "ScheduleSettings",
    "SecretKind",
    "Settings",
    "SinkSettings",
    "SinkUrl",
    "StateRule",
    "TargetSettings",
    "WebhookSettings",
    "database_tls",
    "default_max_concurrent",
    "display_url",
    "ensure_open_files",
    "files_needed",
    "find_config",
    "format_duration",
    "load_settings",
    "normalise_url",
    "open_files_limit",
    "overrides",
    "parse_duration",
    "url_secrets",
    "webhook_key",
    "with_variables",
]
