"""The database's clock, as this process reads it: the host's clock plus a measured offset.

Replicas on several hosts share one schedule and one record, so they must share one clock,
and the only clock they all see is the database server's. Leases are decided by the
database itself (:mod:`auditor.store.schedule` compares and adds in SQL); the times the
daemon computes or stamps (a target's next time, a run's start and end, an alert's time)
come from :meth:`DatabaseClock.now`: this host's clock corrected by its offset to the
database's, sampled every few seconds. Of the last few samples, the one with the shortest
round trip wins (as NTP does): its offset is the most precise, to half that round trip.

This module only reads the time through the callable it is given; it stores nothing, claims
nothing, and does not log (the daemon says when the offset is large).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from auditor.model import utcnow

# How many recent samples the offset is chosen from.
SAMPLES = 8


class DatabaseClock:
    """``now()``: the database's time, estimated on this host; ``sample()`` measures it again."""

    def __init__(self) -> None:
        self._samples: deque[tuple[float, timedelta]] = deque(maxlen=SAMPLES)
        self.offset = timedelta(0)

    def now(self) -> datetime:
        return utcnow() + self.offset

    async def sample(self, read: Callable[[], Awaitable[datetime]]) -> timedelta:
        """Read the database's time with ``read`` and update the offset; returns it.

        The database read its clock somewhere within the round trip: taken to be the
        middle, so the error is at most half the round trip.
        """
        sent, host = time.monotonic(), utcnow()
        database = await read()
        trip = time.monotonic() - sent
        middle = host + timedelta(seconds=trip / 2)
        self._samples.append((trip, database - middle))
        self.offset = min(self._samples, key=lambda s: s[0])[1]
        return self.offset


__all__ = ["SAMPLES", "DatabaseClock"]
