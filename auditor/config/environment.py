"""The environment's part in the configuration: which ``AUDITOR_*`` variables set which keys,
naming them in the problems they cause, and refusing the ones that set nothing.

pydantic-settings reads ``AUDITOR_<SECTION>__<KEY>`` (``__`` between levels, any case) and
``AUDITOR_<SECTION>`` (JSON) when :class:`~auditor.config.settings.Settings` is made, but
silently ignores a variable whose section does not exist (``AUDITOR_DATABSE__URL``) or that
has one underscore where two were meant (``AUDITOR_LOG_LEVEL``): :func:`unknown_variables`
reports those like unknown keys of the file. :func:`with_variables` adds the variable's name to a
problem it caused, so that the user is not sent to look for it in the file.

Pure: reads the mapping it is given (``os.environ`` by default), never a value's content
into a message (a variable may hold a secret).
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

from auditor.config.settings import ENV_PREFIX, Settings

CONFIG_ENV = "AUDITOR_CONFIG"

_PROBLEM = re.compile(r"^config: ([A-Za-z0-9_.\[\]]+): ")
_KEY_PART = re.compile(r"[A-Za-z0-9_]+")


def _path(name: str) -> tuple[str, ...]:
    """``AUDITOR_Alerts__Webhook`` -> ``("alerts", "webhook")``."""
    return tuple(name[len(ENV_PREFIX) :].lower().split("__"))


def _sections() -> dict[str, list[str]]:
    """Each top-level field of the settings, with the keys of its section (when a table)."""
    out: dict[str, list[str]] = {}
    for name, field in Settings.model_fields.items():
        annotation: Any = field.annotation
        inner = getattr(annotation, "__args__", None) or ()
        model = next((a for a in (annotation, *inner) if hasattr(a, "model_fields")), None)
        out[name] = list(model.model_fields) if model is not None else []
    return out


def overrides(environ: Mapping[str, str] | None = None) -> dict[tuple[str, ...], str]:
    """The settings the environment sets: the lower-case path of each (levels only, list
    indexes left out) -> the variable's name."""
    environ = os.environ if environ is None else environ
    sections = Settings.model_fields
    found: dict[tuple[str, ...], str] = {}
    for name in environ:
        if not name.upper().startswith(ENV_PREFIX):
            continue
        path = tuple(p for p in _path(name) if not p.isdigit())
        if path and path[0] in sections:
            found[path] = name
    return found


def with_variables(problem: str, environ: Mapping[str, str] | None = None) -> str:
    """``problem`` (``config: <key>: <why>``) naming the variables that set ``<key>``, its
    section or a key inside it: ``config: database.url (from AUDITOR_DATABASE__URL): ...``."""
    match = _PROBLEM.match(problem)
    if match is None:
        return problem
    key = tuple(p.lower() for p in _KEY_PART.findall(match.group(1)) if not p.isdigit())
    names = [
        name
        for path, name in sorted(overrides(environ).items())
        if key and (key[: len(path)] == path or path[: len(key)] == key)
    ]
    if not names:
        return problem
    head = match.group(0)[:-2]
    return f"{head} (from {', '.join(names)}): {problem[match.end() :]}"


def unknown_variables(
    environ: Mapping[str, str] | None = None, *, referenced: Iterable[str] = ()
) -> list[str]:
    """One problem per ``AUDITOR_*`` variable meant for the settings that sets nothing.

    ``referenced``: variables the configuration names itself (``client_secret_env``,
    ``secret_env``): those are the user's own. Other ``AUDITOR_*`` variables that do not
    look like a setting (no ``__``, not ``<section>_<key>``) are left alone too.
    """
    environ = os.environ if environ is None else environ
    own = {name.upper() for name in referenced} | {CONFIG_ENV}
    sections = _sections()
    problems = []
    for name in sorted(environ):
        if not name.upper().startswith(ENV_PREFIX) or name.upper() in own:
            continue
        head, nested, rest = name[len(ENV_PREFIX) :].lower().partition("__")
        if head in sections:
            if any(level.isdigit() for level in rest.split("__")):
                problems.append(
                    f"config: {name}: the items of a list cannot be set one by one; set "
                    f"{ENV_PREFIX}{head.upper()} to the whole list, as JSON"
                )
            continue
        if nested:
            hint = difflib.get_close_matches(head, sections, n=1)
            meant = (
                f"did you mean {ENV_PREFIX}{hint[0].upper()}__{rest.upper()}?"
                if hint
                else f"the sections are {', '.join(sorted(sections))}"
            )
            problems.append(f"config: {name}: unknown section {head!r} ({meant})")
            continue
        for section, keys in sections.items():
            key = head.removeprefix(section + "_")
            if key != head and key in keys:
                problems.append(
                    f"config: {name}: sets nothing: levels are separated by two underscores "
                    f"(did you mean {ENV_PREFIX}{section.upper()}__{key.upper()}?)"
                )
                break
    return problems


def referenced_names(data: Mapping[str, Any]) -> set[str]:
    """The variables a configuration file (its parsed TOML) names as holding a secret."""
    names: set[str] = set()
    for target in data.get("targets") or ():
        if isinstance(target, Mapping) and isinstance(target.get("client_secret_env"), str):
            names.add(target["client_secret_env"])
    alerts = data.get("alerts")
    hooks = alerts.get("webhook") if isinstance(alerts, Mapping) else None
    for hook in hooks or ():
        if isinstance(hook, Mapping) and isinstance(hook.get("secret_env"), str):
            names.add(hook["secret_env"])
    audit = data.get("audit")
    if isinstance(audit, Mapping) and isinstance(audit.get("secret_digest_key_env"), str):
        names.add(audit["secret_digest_key_env"])
    return names
