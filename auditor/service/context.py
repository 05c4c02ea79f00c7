"""What the rooms of the daemon share: the configuration in force and the open store.

One :class:`Context` per daemon. A reload replaces its settings and schedule, and every
room reads them from here at the moment it needs them, so none keeps a stale copy. It
holds state only: it does no I/O, logs nothing, and never opens or closes the store.
"""

from __future__ import annotations

import random

from auditor.config import Settings, TargetSettings
from auditor.errors import StoreError
from auditor.service.clock import DatabaseClock
from auditor.service.schedule import Schedule
from auditor.store import Store


class Context:
    """The daemon's settings and schedule (replaced on SIGHUP), its replica name, its random
    source, the database's clock, whether it is draining, and its store once open."""

    def __init__(
        self, settings: Settings, schedule: Schedule, *, owner: str, rng: random.Random
    ) -> None:
        self.settings = settings
        self.schedule = schedule
        self.owner = owner
        self.rng = rng
        # The time every room uses: the database's, so that replicas agree on it.
        self.clock = DatabaseClock()
        # Set once, on SIGTERM or SIGINT: no new claims, no new delivery passes.
        self.draining = False
        self.opened: Store | None = None

    @property
    def targets(self) -> dict[str, TargetSettings]:
        return {t.name: t for t in self.settings.targets}

    @property
    def store(self) -> Store:
        if self.opened is None:
            raise StoreError("the daemon has no database open")
        return self.opened


__all__ = ["Context"]
