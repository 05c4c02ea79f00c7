"""The root of the configuration: :class:`Settings`, one field per section of the file.

Precedence, highest first: ``AUDITOR_*`` environment variables (``__`` between levels, e.g.
``AUDITOR_DATABASE__URL``; pydantic-settings reads them when a :class:`Settings` is made),
then the values passed in (the TOML file), then the defaults. Reads no file and resolves no
secret: :mod:`auditor.config.load` reads the file, :mod:`auditor.config.secrets` the secrets.
"""

from __future__ import annotations

from pydantic import field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from auditor.config.alerts import AlertsSettings
from auditor.config.sections import (
    AuditSettings,
    DatabaseSettings,
    HttpSettings,
    LogSettings,
    ScheduleSettings,
)
from auditor.config.targets import TargetSettings
from auditor.errors import ConfigError

ENV_PREFIX = "AUDITOR_"


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
