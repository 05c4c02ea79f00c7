"""The daemon (``3cx-auditor run``), one module per job.

* :mod:`.schedule`: when a target is due next (pure time arithmetic)
* :mod:`.systemd`: sd_notify datagrams and the watchdog's pings
* :mod:`.daemon`: :class:`Service`: start, the tick loop, claims, delivery, reload,
  signals, drain and shutdown

This file only re-exports; it defines nothing.
"""

from auditor.service.daemon import Service, lease_for, owner_id, run_service
from auditor.service.schedule import Schedule, first_run, next_run, schedule_of
from auditor.service.systemd import Notifier
from auditor.store.lock import SqliteLock

__all__ = [
    "Notifier",
    "Schedule",
    "Service",
    "SqliteLock",
    "first_run",
    "lease_for",
    "next_run",
    "owner_id",
    "run_service",
    "schedule_of",
]
