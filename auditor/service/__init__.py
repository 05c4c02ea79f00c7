"""The daemon (``3cx-auditor run``), one module per job.

* :mod:`.schedule`: when a target is due next (pure time arithmetic)
* :mod:`.systemd`: sd_notify datagrams and the watchdog's pings
* :mod:`.context`: what the rooms share (settings in force, schedule, the open store)
* :mod:`.leases`: claims of due targets, lease renewal, giving leases back
* :mod:`.clients`: one XAPI client per target, kept across runs
* :mod:`.status`: the database flag of /readyz, the fleet gauges, systemd's STATUS line
* :mod:`.delivery`: the sinks and the ``deliver`` job that sends the outbox
* :mod:`.reload`: SIGHUP: the new configuration and what it changes
* :mod:`.daemon`: :class:`Service`, composed from the above: start, the tick loop,
  signals, drain and shutdown

This file only re-exports; it defines nothing.
"""

from auditor.service.daemon import Service, run_service
from auditor.service.leases import lease_for, owner_id
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
