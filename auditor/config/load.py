"""Loading: find the config file, read its TOML, validate it with the environment on top,
resolve the secrets, run the cross-section checks, and turn every problem into one line.

The file: ``--config``, else ``$AUDITOR_CONFIG``, else ``./auditor.toml``, else
``/etc/3cx-auditor/config.toml``. Every problem is reported as ``config: <dotted.key>: <why>``
(an unknown key with a "did you mean" hint); all problems are collected before
:class:`~auditor.errors.ConfigError` is raised, so one run of ``check-config`` shows them all.
Never prints and never logs: warnings are handed back in :class:`Loaded`.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from auditor.config.checks import check_settings
from auditor.config.secrets import resolve_secrets, world_readable_with_secret
from auditor.config.settings import Settings
from auditor.errors import ConfigError

CONFIG_ENV = "AUDITOR_CONFIG"
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


# Keys whose value is a secret or may carry one (an Apprise or sink URL holds a token, a
# database URL a password): a value of the wrong type is named by its type only.
_SECRET_KEYS = frozenset({"client_secret", "token", "secret", "urls", "url"})


def _shown(loc: Sequence[int | str], got: object) -> str:
    """How a wrong value is named in a problem: itself, or for a secret key its TOML type."""
    is_target_url = len(loc) == 3 and loc[0] == "targets" and loc[2] == "url"
    if is_target_url or not any(part in _SECRET_KEYS for part in loc):
        return repr(got)
    kinds = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    kind = kinds.get(type(got)) or ("an array" if isinstance(got, list | tuple) else "a table")
    return f"{kind}, not shown"


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
                why = f"{why.rstrip('.').lower()} (got {_shown(loc, got)})"
        lines.append(f"config: {key}: {why}")
    return list(dict.fromkeys(lines))


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
        if world_readable_with_secret(config_path, data):
            warnings.append(
                f"config: {config_path}: holds a secret and is readable by other users; "
                f"run: chmod o-r {config_path} (or use client_secret_file / LoadCredential)"
            )
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_problems(exc)) from None
    settings, problems = resolve_secrets(settings)
    check_problems, check_warnings = check_settings(settings)
    problems.extend(check_problems)
    warnings.extend(check_warnings)
    if problems:
        raise ConfigError(problems)
    return Loaded(settings=settings, path=config_path, warnings=tuple(warnings))
