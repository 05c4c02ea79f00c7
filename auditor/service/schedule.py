"""The schedule of the daemon: when a target is due next. Pure time arithmetic.

The schedule lives in the database, not in memory: each target has a ``next_run_at``. This
module computes those times; it does no I/O, keeps no state and never touches the store or
the scheduler (APScheduler's ``CronTrigger`` is used only to parse and evaluate ``cron``).

Next time of a target, computed when its audit ends (``due`` = the time it was due):

* ``every``: ``due + every``, or the first ``due + k*every`` still ahead when audits were
  missed (a stall, a long audit, the daemon stopped): they are coalesced into the run just
  made, and ``schedule.missed`` says how many intervals were skipped. The target keeps its
  place in the interval, so ``jitter`` is drawn once, when a target is first scheduled.
* ``cron``: the next fire time after ``due`` (missed ones counted likewise), plus a jitter
  drawn anew each time (cron times do not drift).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import cast

from apscheduler.triggers.cron import CronTrigger

from auditor.config import ScheduleSettings
from auditor.errors import ConfigError

# Beyond this many missed cron times, stop counting them one by one.
MAX_COUNTED_MISSES = 100_000


@dataclass(frozen=True)
class Schedule:
    """``schedule.every`` or a parsed ``schedule.cron``, and the jitter."""

    every: timedelta
    cron: CronTrigger | None
    jitter: timedelta

    def describe(self) -> str:
        return f"cron {self.cron}" if self.cron is not None else f"every {self.every}"


def schedule_of(settings: ScheduleSettings) -> Schedule:
    """The schedule of ``settings``; ConfigError when the cron expression is not valid."""
    cron: CronTrigger | None = None
    if settings.cron is not None:
        try:
            cron = CronTrigger.from_crontab(settings.cron)
        except ValueError as exc:
            raise ConfigError([f"config: schedule.cron: {exc} (got {settings.cron!r})"]) from None
    return Schedule(every=settings.interval, cron=cron, jitter=settings.jitter)


def _jitter(schedule: Schedule, rng: random.Random) -> timedelta:
    return timedelta(seconds=rng.uniform(0.0, schedule.jitter.total_seconds()))


def first_run(schedule: Schedule, now: datetime, rng: random.Random) -> datetime:
    """When a target seen for the first time is due: now, plus jitter (a baseline soon)."""
    return now + _jitter(schedule, rng)


def _next_fire(trigger: CronTrigger, after: datetime) -> datetime:
    # With a previous fire time, APScheduler answers the first fire time after it, even when
    # that is in the past (that is how it finds misfires); that is what is wanted here.
    fire = trigger.get_next_fire_time(after, after)
    if fire is None:
        raise ValueError("the cron expression has no future fire time")
    return cast(datetime, fire).astimezone(UTC)


def next_run(
    schedule: Schedule, due: datetime, now: datetime, rng: random.Random
) -> tuple[datetime, int]:
    """The next time after a run that was due at ``due`` and ended at ``now``, never in the
    past, and how many scheduled times between the two were skipped (coalesced into it)."""
    if schedule.cron is None:
        every = schedule.every.total_seconds()
        behind = max(0.0, (now - due).total_seconds())
        steps = math.floor(behind / every) + 1
        return due + timedelta(seconds=steps * every), steps - 1
    fire = _next_fire(schedule.cron, due)
    skipped = 0
    while fire <= now:
        skipped += 1
        if skipped >= MAX_COUNTED_MISSES:
            fire = cast(datetime, schedule.cron.get_next_fire_time(None, now)).astimezone(UTC)
            break
        fire = _next_fire(schedule.cron, fire)
    return fire + _jitter(schedule, rng), skipped


__all__ = ["MAX_COUNTED_MISSES", "Schedule", "first_run", "next_run", "schedule_of"]
