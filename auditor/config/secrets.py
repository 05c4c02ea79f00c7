"""Secrets: the targets' client secrets and the webhooks' signing secrets, from where they live.

A secret is given inline (``client_secret``, ``secret``), by the name of an environment
variable (``*_env``) or by a file (``*_file``; a relative path is looked up in systemd's
``$CREDENTIALS_DIRECTORY`` when it is set). :func:`resolve_secrets` reads them into the
validated settings and reports each one that is missing, empty or malformed as
``config: <dotted.key>: <why>``, never with the secret in it.

This is the only part of the configuration that follows a ``*_env`` or ``*_file`` reference
to a secret; it is kept apart from loading so that a caller can validate a configuration
without touching them, and a command resolves only the kinds it uses (reading the record
uses none). It never logs, and no message it makes holds a secret's value.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import SecretStr

from auditor.config.alerts import webhook_key
from auditor.config.settings import Settings

SecretKind = Literal["targets", "webhooks"]
# Every kind: what the daemon and ``once`` need (they log in to PBXs and sign webhooks).
SECRET_KINDS: frozenset[SecretKind] = frozenset({"targets", "webhooks"})


def read_secret_file(path: Path) -> str:
    """The stripped text of a secret file (relative: under ``$CREDENTIALS_DIRECTORY``)."""
    if not path.is_absolute():
        cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
        if cred_dir:
            path = Path(cred_dir) / path
    return path.read_text(encoding="utf-8").strip()


def resolve_secrets(
    settings: Settings, kinds: Collection[SecretKind] = SECRET_KINDS
) -> tuple[Settings, list[str]]:
    """The secrets of ``kinds`` read and set in place; the problems found, targets first,
    then webhooks. Secrets of other kinds are left as they are: unread, and unchecked."""
    problems: list[str] = []
    if "targets" in kinds:
        settings, problems = resolve_target_secrets(settings)
    if "webhooks" in kinds:
        settings, webhook_problems = resolve_webhook_secrets(settings)
        problems += webhook_problems
    return settings, problems


def _unreadable(key: str, path: Path, exc: OSError) -> str:
    problem = f"config: {key}: cannot read {path}: {exc.strerror or exc}"
    if not path.is_absolute() and not os.environ.get("CREDENTIALS_DIRECTORY"):
        problem += (
            " ($CREDENTIALS_DIRECTORY is not set: a systemd credential can be read only by"
            " the service; check-config --no-secrets checks the rest)"
        )
    return problem


def resolve_target_secrets(settings: Settings) -> tuple[Settings, list[str]]:
    """Read each target's ``client_secret_env`` / ``client_secret_file`` into ``client_secret``."""
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
                value = read_secret_file(target.client_secret_file)
            except OSError as exc:
                problems.append(_unreadable(key, target.client_secret_file, exc))
            else:
                if not value:
                    problems.append(f"config: {key}: {target.client_secret_file} is empty")
        elif target.client_secret is not None and not target.client_secret.get_secret_value():
            problems.append(f"config: targets[{index}].client_secret: is empty")
        if value:
            target = target.model_copy(update={"client_secret": SecretStr(value)})
        targets.append(target)
    settings = settings.model_copy(update={"targets": tuple(targets)})
    audit, digest_problems = _resolve_digest_key(settings)
    return settings.model_copy(update={"audit": audit}), problems + digest_problems


def _resolve_digest_key(settings: Settings) -> tuple[Any, list[str]]:
    """``[audit] secret_digest_key_env`` / ``_file`` read into ``secret_digest_key``."""
    audit = settings.audit
    value: str | None = None
    if audit.secret_digest_key_env is not None:
        value = os.environ.get(audit.secret_digest_key_env)
        if not value:
            return audit, [
                f"config: audit.secret_digest_key_env: environment variable "
                f"{audit.secret_digest_key_env} is not set or empty"
            ]
    elif audit.secret_digest_key_file is not None:
        key = "audit.secret_digest_key_file"
        try:
            value = read_secret_file(audit.secret_digest_key_file)
        except OSError as exc:
            return audit, [_unreadable(key, audit.secret_digest_key_file, exc)]
        if not value:
            return audit, [f"config: {key}: {audit.secret_digest_key_file} is empty"]
    elif audit.secret_digest_key is not None and not audit.secret_digest_key.get_secret_value():
        return audit, ["config: audit.secret_digest_key: is empty"]
    if value:
        audit = audit.model_copy(update={"secret_digest_key": SecretStr(value)})
    return audit, []


def resolve_webhook_secrets(settings: Settings) -> tuple[Settings, list[str]]:
    """Read each webhook's ``secret_env`` / ``secret_file`` into ``secret`` and check its form."""
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
                value = read_secret_file(hook.secret_file)
            except OSError as exc:
                problems.append(_unreadable(key, hook.secret_file, exc))
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
    alerts = alerts.model_copy(update={"webhook": tuple(webhooks)})
    return settings.model_copy(update={"alerts": alerts}), problems


def world_readable_with_secret(path: Path, data: Mapping[str, Any]) -> bool:
    """Whether the file holds a secret inline (``data``: its parsed TOML) and others may read it."""
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
