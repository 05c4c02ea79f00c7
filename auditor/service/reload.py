"""SIGHUP: read the configuration again and say what the new one changes.

An invalid configuration is refused with every problem logged, and the old one is kept.
A valid one is compared with the one in force: which targets were added, removed or
changed, and which keys cannot change without a restart (``database.url``,
``http.listen``, ``http.token``, ``log``): those keep their old values, with a warning.
The daemon applies the result (:meth:`auditor.service.daemon.Service.reload`).

This module only reads the configuration file and logs: it never touches the store, the
sinks, the clients or the scheduler.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import structlog

from auditor.config import Settings, load_settings
from auditor.errors import ConfigError
from auditor.service.schedule import Schedule, schedule_of

log = structlog.get_logger("auditor.service")


@dataclass(frozen=True)
class Reload:
    """A new configuration to apply, and the targets it adds, removes and changes."""

    settings: Settings  # with the keys that need a restart kept as they were
    schedule: Schedule
    added: list[str]
    removed: list[str]
    changed: list[str]


def plan_reload(config_path: Path | None, old: Settings) -> Reload | None:
    """Read the configuration at ``config_path`` again; None (and logged) when refused."""
    try:
        loaded = load_settings(config_path, require_file=config_path is not None)
        schedule = schedule_of(loaded.settings.schedule)
    except ConfigError as exc:
        for problem in exc.problems:
            log.error("config.reload_refused", problem=problem, kept="the old one")
        return None
    for warning in loaded.warnings:
        log.warning("config.warning", warning=warning)
    new = loaded.settings
    before = {t.name: t for t in old.targets}
    after = {t.name: t for t in new.targets}
    added = sorted(after.keys() - before.keys())
    removed = sorted(before.keys() - after.keys())
    changed = sorted(n for n in after.keys() & before.keys() if after[n] != before[n])
    needs_restart = [
        key
        for key, was, now in (
            ("database.url", old.database.url, new.database.url),
            ("http.listen", old.http.listen, new.http.listen),
            ("http.token", old.http.token, new.http.token),
            ("log", old.log, new.log),
        )
        if was != now
    ]
    if needs_restart:
        log.warning("config.restart_needed", keys=needs_restart, kept="the old values")
        new = new.model_copy(update={"database": old.database, "http": old.http, "log": old.log})
    return Reload(new, schedule, added=added, removed=removed, changed=changed)


__all__ = ["Reload", "plan_reload"]
