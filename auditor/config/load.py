"""Loading: find the config file, read its TOML, validate it with the environment on top,
resolve the secrets the caller needs, run the cross-section checks, and turn every problem
into one line (naming the environment variable behind it, when one is).

The file: ``--config``, else ``$AUDITOR_CONFIG``, else ``./auditor.toml``, else
``/etc/3cx-auditor/config.toml``. Every problem is reported as ``config: <dotted.key>: <why>``
(an unknown key with a "did you mean" hint); all problems are collected before
:class:`~auditor.errors.ConfigError` is raised, so one run of ``check-config`` shows them all.
Never prints and never logs: warnings are handed back in :class:`Loaded`.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_settings import SettingsError

from auditor.config.checks import check_settings
from auditor.config.environment import (
    CONFIG_ENV,
    overrides,
    referenced_names,
    unknown_variables,
    with_variables,
)
from auditor.config.problems import problems_of
from auditor.config.secrets import (
    SECRET_KINDS,
    SecretKind,
    resolve_secrets,
    world_readable_with_secret,
)
from auditor.config.settings import Settings
from auditor.errors import ConfigError

DEFAULT_PATHS = (Path("auditor.toml"), Path("/etc/3cx-auditor/config.toml"))


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


def _settings_error(exc: SettingsError, environ: Mapping[str, str]) -> list[str]:
    """pydantic-settings could not decode a variable (JSON for a table or a list)."""
    found = re.search(r'field "(\w+)"', str(exc))
    field = found.group(1) if found else ""
    names = [name for path, name in overrides(environ).items() if path[:1] == (field,)]
    where = f"config: {field}" if field else "config: environment"
    return [
        f"{where} (from {', '.join(sorted(names)) or 'the environment'}): not valid JSON "
        "(a table or a list in an environment variable is written as JSON)"
    ]


def load_settings(
    path: str | os.PathLike[str] | None,
    *,
    require_file: bool = False,
    secrets: Collection[SecretKind] = SECRET_KINDS,
) -> Loaded:
    """Read, validate and resolve the configuration; raise ConfigError with every problem.

    ``secrets``: which secrets to read and check (``"targets"``: the PBXs' client secrets,
    ``"webhooks"``: the webhooks' signing secrets). Those left out stay unresolved: a
    command that reads only the record needs none of them, and must not fail where they
    cannot be read (an admin shell beside a service whose secrets are systemd credentials).
    """
    environ = os.environ
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
        if world_readable_with_secret(config_path, data):
            warnings.append(
                f"config: {config_path}: holds a secret and is readable by other users; "
                f"run: chmod o-r {config_path} (or use client_secret_file / LoadCredential)"
            )
    unknown = unknown_variables(environ, referenced=referenced_names(data))
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_labelled(problems_of(exc) + unknown, environ)) from None
    except SettingsError as exc:
        raise ConfigError(_settings_error(exc, environ) + unknown) from None
    settings, problems = resolve_secrets(settings, secrets)
    check_problems, check_warnings = check_settings(settings)
    problems.extend(check_problems)
    problems.extend(unknown)
    warnings.extend(check_warnings)
    if problems:
        raise ConfigError(_labelled(problems, environ))
    return Loaded(settings=settings, path=config_path, warnings=tuple(warnings))


def _labelled(problems: list[str], environ: Mapping[str, str]) -> list[str]:
    return [with_variables(problem, environ) for problem in problems]
