"""The ``[[targets]]``: one PBX each, how to reach it, log in and list it, and what to ignore.

Validated, frozen pydantic models. Does no I/O and reads no environment: ``client_secret_env``
and ``client_secret_file`` are only names here, :mod:`auditor.config.secrets` reads them, and
:meth:`TargetSettings.secret` is the one place that hands the secret out.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, Field, SecretStr, field_validator, model_validator

from auditor.collections import NAMES, unknown_names
from auditor.config.values import PositiveDuration, Section, between, normalise_url
from auditor.errors import ConfigError
from auditor.model import SCRIPTS, SETTINGS

DEFAULT_COLLECTIONS: tuple[str, ...] = (SCRIPTS, SETTINGS)


class StateRule(Section):
    """Which field of an item tells its state, and which values of it are healthy."""

    field: str = "State"
    healthy: tuple[str, ...] = ("Connected",)


class TargetSettings(Section):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
    url: Annotated[str, AfterValidator(normalise_url)]
    client_id: Annotated[str, Field(min_length=1)]
    client_secret: SecretStr | None = None
    client_secret_env: str | None = None
    client_secret_file: Path | None = None
    page_size: Annotated[int, between(1, 100)] = 100
    filter: str | None = None
    search: str | None = None
    verify_tls: bool = True
    ca_file: Path | None = None
    request_timeout: PositiveDuration = timedelta(seconds=30)
    listing_timeout: PositiveDuration = timedelta(minutes=5)
    retries: Annotated[int, between(0, 20)] = 4
    max_relist: Annotated[int, between(0, 20)] = 3
    ignore_fields: tuple[str, ...] = ()
    state: StateRule = StateRule()
    # Which collections of auditor.collections are audited. The backup collections are opt-in
    # until their policies and their cost in the fleet bench are in place.
    collections: tuple[str, ...] = DEFAULT_COLLECTIONS
    # Whose changes raise change alerts (None: failover scripts and every settings, not the
    # backup list, whose rotation changes it daily); the history records all of them.
    alert_on_change: tuple[str, ...] | None = None

    @field_validator("alert_on_change")
    @classmethod
    def _known_alerting(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        unknown = unknown_names(value)
        if unknown:
            raise ValueError(
                f"unknown collection {', '.join(map(repr, unknown))}; known: {', '.join(NAMES)}"
            )
        return value

    @field_validator("collections")
    @classmethod
    def _known_collections(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = unknown_names(value)
        if unknown:
            raise ValueError(
                f"unknown collection {', '.join(map(repr, unknown))}; known: {', '.join(NAMES)}"
            )
        if not value:
            raise ValueError(f"choose at least one of {', '.join(NAMES)}")
        return tuple(dict.fromkeys(value))

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
