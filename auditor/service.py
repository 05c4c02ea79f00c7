"""The daemon (``3cx-auditor run``): schedules, leases, bounded concurrency, signals, sd_notify.

The schedule lives in the database, not in memory: each target has a ``next_run_at``, so a
restart neither forgets audits nor bunches them. APScheduler is only the timer: one job,
``tick``, every ``schedule.tick``. A tick claims due targets (as many as there are free
slots of ``audit.max_concurrent``) with a lease, and audits each in a task of its own under
``audit.timeout``. When an audit ends, the lease is given back with the target's next time.
Several processes on one PostgreSQL share the fleet this way: a target is claimed by one of
them (``FOR UPDATE SKIP LOCKED``), and the targets of one that dies are claimed by the
others once its leases expire. SQLite serves one process: a second ``run`` is refused.

Next time of a target, computed when its audit ends (``due`` = the time it was due):

* ``every``: ``due + every``, or the first ``due + k*every`` still ahead when audits were
  missed (a stall, a long audit, the daemon stopped): they are coalesced into the run just
  made, and ``schedule.missed`` says how many intervals were skipped. The target keeps its
  place in the interval, so ``jitter`` is drawn once, when a target is first scheduled.
* ``cron``: the next fire time after ``due`` (missed ones counted likewise), plus a jitter
  drawn anew each time (cron times do not drift).

Alerts: each audit enqueues its alert events for the sinks whose filters match
(``[[alerts.webhook]]`` & co.) in the transaction that records the run, and prints them
on stdout; a second job, ``deliver``, sends the outbox (:mod:`auditor.alerts.delivery`),
so a slow sink never holds up the audits.

Signals: SIGHUP reloads the configuration (refused, with every problem logged, when it is
invalid); SIGTERM or SIGINT drain: no new claims, audits in flight get ``audit.shutdown_grace``
to finish, the rest are cancelled (and recorded as failed), leases are given back; a second
SIGTERM or SIGINT cancels at once. systemd is told ``READY=1``, ``WATCHDOG=1``, ``STATUS=``
and ``STOPPING=1`` through ``$NOTIFY_SOCKET`` (see :class:`Notifier`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import random
import secrets
import signal
import socket
import time
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import structlog
from aiohttp import web
from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MAX_INSTANCES, JobExecutionEvent
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger

from auditor.alerts.delivery import RetryPolicy, delivery_tick
from auditor.alerts.routing import Router
from auditor.alerts.sinks import Sink, build_sinks, close_sinks
from auditor.audit import AlertCallback, audit_target, policy_of, settle_heap
from auditor.config import Loaded, ScheduleSettings, Settings, TargetSettings, load_settings
from auditor.errors import ConfigError, StoreError
from auditor.metrics import Metrics
from auditor.model import iso, utcnow
from auditor.store import ClaimedTarget, Store
from auditor.store.lock import SqliteLock
from auditor.web import ServiceState, make_app, start_http
from auditor.xapi import TokenCache, XapiClient

log = structlog.get_logger("auditor.service")

# How often the fleet gauges of /metrics and the STATUS line are refreshed.
FLEET_EVERY = timedelta(seconds=15)
STATUS_EVERY = timedelta(seconds=5)
# Cancelled audits record their run as failed before they end; this bounds the wait for
# that when the database does not answer.
CANCEL_WAIT_S = 10.0
# Beyond this many missed cron times, stop counting them one by one.
MAX_COUNTED_MISSES = 100_000
# How long the database may keep failing before the error is logged again.
DB_ERROR_REPEAT = timedelta(minutes=1)
# One pass of alert delivery stops claiming after this long (deliveries in flight finish),
# so that a slow sink delays the next pass, not the shutdown.
DELIVERY_BUDGET_S = 10.0


# -- the schedule (pure) -------------------------------------------------------------------


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


# -- sd_notify -----------------------------------------------------------------------------


class Notifier:
    """sd_notify(3) without libsystemd: datagrams to ``$NOTIFY_SOCKET``; a no-op without it.

    ``@name`` is a socket in the abstract namespace. ``watchdog_interval`` is half of
    ``$WATCHDOG_USEC`` when that is set (and ``$WATCHDOG_PID``, if set, is this process).
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        path = env.get("NOTIFY_SOCKET", "")
        self._address: str | bytes | None = None
        if path.startswith("@"):
            self._address = b"\0" + path[1:].encode()
        elif path.startswith("/"):
            self._address = path
        self._socket: socket.socket | None = None
        self._warned = False
        self.watchdog_interval: float | None = None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_interval = int(usec) / 2 / 1_000_000

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def send(self, *fields: str) -> None:
        """Send ``KEY=value`` fields in one datagram; failures are logged once, never raised."""
        if self._address is None:
            return
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._socket.setblocking(False)
            self._socket.sendto("\n".join(fields).encode(), self._address)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning("service.notify_failed", error=exc.strerror or str(exc))

    def status(self, text: str) -> None:
        self.send(f"STATUS={text}")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


# -- one process per SQLite database -------------------------------------------------------


def owner_id() -> str:
    """This process's name on leases: host, pid and a random part (pids are reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def lease_for(settings: Settings) -> timedelta:
    """How long a claim holds a target: one audit's timeout plus a margin for recording it.

    Leases of audits in flight are renewed every third of this, so only a process that
    died (or lost the database) lets one expire.
    """
    timeout = settings.audit.timeout
    return timeout + min(timeout, timedelta(minutes=1))


# -- the daemon ----------------------------------------------------------------------------


@dataclass
class _Audit:
    claim: ClaimedTarget
    target: TargetSettings
    task: asyncio.Task[None]


class Service:
    """The daemon; ``await Service(loaded).run()`` returns after SIGTERM or SIGINT."""

    def __init__(
        self,
        loaded: Loaded,
        *,
        on_alert: AlertCallback | None = None,
        notifier: Notifier | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._settings = loaded.settings
        self._schedule = schedule_of(loaded.settings.schedule)
        self._config_path = loaded.path
        self._on_alert = on_alert
        self._notify = notifier if notifier is not None else Notifier()
        self._rng = rng if rng is not None else random.Random()
        self.owner = owner_id()
        self.state = ServiceState(detail={"replica": self.owner})
        self.metrics = Metrics()
        self._store: Store | None = None
        self._router = Router.of(loaded.settings.alerts)
        self._sinks: dict[str, Sink] = {}
        self._delivery_lock = asyncio.Lock()
        self._tokens = TokenCache()
        self._clients: dict[str, XapiClient] = {}
        self._audits: dict[int, _Audit] = {}
        self._tick_lock = asyncio.Lock()
        # The last claim took as many targets as it had free slots: more may be due.
        self._backlog = False
        self._refill_pending = False
        self._reload_lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._hurry = asyncio.Event()
        self._draining = False
        self._sync_needed = True
        self._background: set[asyncio.Task[Any]] = set()
        self._stopping_sent = False
        self._scheduler: AsyncIOScheduler | None = None
        self._last_renew = self._last_fleet = self._last_status = datetime.min.replace(tzinfo=UTC)
        self._db_failing_since: datetime | None = None
        self._db_logged_at: datetime | None = None
        self._next_due: datetime | None = None

    @property
    def _targets(self) -> dict[str, TargetSettings]:
        return {t.name: t for t in self._settings.targets}

    @property
    def store(self) -> Store:
        if self._store is None:
            raise StoreError("the daemon has no database open")
        return self._store

    # -- life cycle ---------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        installed = self._install_signals(loop)
        lock: SqliteLock | None = None
        runner: web.AppRunner | None = None
        watchdog: asyncio.Task[None] | None = None
        try:
            if self._notify.watchdog_interval is not None:
                # From the start: systemd arms the watchdog before READY, and migrating a
                # large database can take a while.
                watchdog = asyncio.create_task(self._watchdog(self._notify.watchdog_interval))
            lock = SqliteLock.acquire(self._settings.database.url)
            self._notify.status("starting: opening and migrating the database")
            self._store = await Store.open(
                self._settings.database.url, concurrency=self._settings.audit.max_concurrent
            )
            self.state.database_ok = True
            # On PostgreSQL the migration runs under an advisory lock: replicas starting
            # together migrate one after the other.
            revision = await self.store.upgrade()
            self.state.migrations_at_head = True
            await self._recover(sqlite=lock is not None)
            await self._sync_targets()
            self._sinks = build_sinks(self._settings.alerts)
            app = make_app(
                store=self.store,
                state=self.state,
                metrics=self.metrics,
                token=self._settings.http.token,
            )
            runner = await start_http(app, self._settings.http.listen)
            settle_heap()
            self._start_scheduler()
            self._notify.send("READY=1", f"STATUS={self._status_text()}")
            log.info(
                "service.started",
                replica=self.owner,
                database=self.store.url_for_display,
                database_tls=self.store.tls,
                revision=revision,
                listen=self._settings.http.listen,
                targets=len(self._settings.targets),
                schedule=self._schedule.describe(),
                max_concurrent=self._settings.audit.max_concurrent,
            )
            if not self._settings.targets:
                log.warning("service.no_targets", hint="add [[targets]] and send SIGHUP")
            await self._stop.wait()
            await self._drain()
        finally:
            await self._close(runner, watchdog)
            for sig in installed:
                loop.remove_signal_handler(sig)
            if lock is not None:
                lock.release()
        log.info("service.stopped", replica=self.owner)

    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> list[signal.Signals]:
        installed = []
        for sig, handler in (
            (signal.SIGTERM, self.request_stop),
            (signal.SIGINT, self.request_stop),
            (signal.SIGHUP, self.request_reload),
        ):
            loop.add_signal_handler(sig, handler)
            installed.append(sig)
        return installed

    def request_stop(self) -> None:
        """SIGTERM/SIGINT: drain; a second one while draining cancels audits at once."""
        if self._stop.is_set():
            log.warning("service.stop_now", audits=len(self._audits))
            self._hurry.set()
            return
        self._stop.set()

    def request_reload(self) -> None:
        """SIGHUP: read the configuration again (in a task: handlers cannot await)."""
        self._spawn(self.reload())

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task: asyncio.Task[Any] = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _recover(self, *, sqlite: bool) -> None:
        """Clean up after a predecessor that crashed: its leases and its unfinished runs."""
        released = 0
        if sqlite:
            # The file lock proves no other daemon uses this database: every lease in it
            # belongs to a process that is gone.
            for owner in await self.store.schedule.lease_owners():
                released += await self.store.schedule.release_leases(owner)
        # With replicas, another process's lease may be alive: only runs on targets without
        # a live lease are known to be abandoned.
        interrupted = await self.store.schedule.interrupt_orphaned_runs(utcnow())
        deliveries = await self.store.outbox.release_deliveries() if sqlite else 0
        if released or interrupted or deliveries:
            log.warning(
                "service.recovered",
                leases_released=released,
                runs_interrupted=interrupted,
                deliveries_released=deliveries,
            )

    async def _sync_targets(self) -> None:
        configured = [(t.name, t.url) for t in self._settings.targets]
        now = utcnow()
        schedule = self._schedule
        await self.store.schedule.sync_targets(
            configured, lambda _name: first_run(schedule, now, self._rng)
        )
        self._sync_needed = False

    def _start_scheduler(self) -> None:
        # APScheduler logs a skipped or late tick as a plain-text warning; our own events
        # say what matters (schedule.missed), so its logger is kept to errors.
        logging.getLogger("apscheduler").setLevel(logging.ERROR)
        scheduler = AsyncIOScheduler(timezone=UTC)
        scheduler.add_listener(self._on_job_event, EVENT_JOB_ERROR | EVENT_JOB_MAX_INSTANCES)
        scheduler.add_job(
            self._tick,
            "interval",
            seconds=self._settings.schedule.tick.total_seconds(),
            id="tick",
            next_run_time=datetime.now(UTC),
            coalesce=True,
            max_instances=1,
            # APScheduler drops a run that starts later than misfire_grace_time (1 s by
            # default) after its time, with nothing but a log line. After any stall of the
            # event loop (a slow database call, a suspended VM, SIGSTOP), the tick that is
            # due is easily more than a second late, so ticks would be dropped exactly
            # when there is catching up to do. A late tick is always worth running: it
            # only reads the schedule from the database, and coalesce makes a backlog of
            # ticks one. Missed audits are counted by the schedule itself (next_run).
            misfire_grace_time=None,
        )
        # Delivery is a job of its own: a slow alert sink must not hold up the audits.
        scheduler.add_job(
            self._deliver,
            "interval",
            seconds=self._settings.schedule.tick.total_seconds(),
            id="deliver",
            coalesce=True,
            max_instances=1,
            misfire_grace_time=None,
        )
        scheduler.start()
        self._scheduler = scheduler
        self.state.scheduler_running = True

    def _on_job_event(self, event: JobExecutionEvent) -> None:
        if event.code == EVENT_JOB_MAX_INSTANCES:
            log.debug("service.tick_skipped", reason="the previous tick is still running")
        elif event.exception is not None:
            log.error("service.tick_crashed", error=repr(event.exception))

    async def _watchdog(self, interval: float) -> None:
        # From the event loop itself: a blocked loop stops the pings and systemd restarts us.
        while True:
            self._notify.send("WATCHDOG=1")
            await asyncio.sleep(interval)

    # -- the tick -----------------------------------------------------------------------

    async def _tick(self) -> None:
        async with self._tick_lock:
            if self._draining:
                return
            now = utcnow()
            try:
                if self._sync_needed:
                    await self._sync_targets()
                await self._renew(now)
                await self._claim(now)
                await self._refresh(now)
            except StoreError as exc:
                self._database_failed(now, exc)
            else:
                self._database_answered()

    def _audit_ended(self) -> None:
        # A slot freed while targets wait is filled now, not at the next tick: otherwise a
        # tick would start at most max_concurrent audits, however short they are, and a
        # fleet due faster than max_concurrent per tick would fall further behind each
        # round. Without a backlog (the last claim found fewer due targets than it could
        # take), the next tick is soon enough, and no claim is made for nothing.
        if self._backlog and not self._draining and not self._refill_pending:
            self._refill_pending = True
            self._spawn(self._refill())

    async def _refill(self) -> None:
        async with self._tick_lock:
            # Audits ending from here on ask for a claim of their own.
            self._refill_pending = False
            if self._draining:
                return
            now = utcnow()
            try:
                await self._claim(now)
            except StoreError as exc:
                self._database_failed(now, exc)

    async def _claim(self, now: datetime) -> None:
        free = self._settings.audit.max_concurrent - len(self._audits)
        if free <= 0:
            self._backlog = True
            return
        claims = await self.store.schedule.claim_due(
            self.owner, now, free, lease_for(self._settings)
        )
        self._backlog = len(claims) >= free
        targets = self._targets
        unknown = []
        for claim in claims:
            if claim.interrupted_runs:
                log.warning(
                    "audit.interrupted",
                    target=claim.name,
                    runs=claim.interrupted_runs,
                    why="left running by a process that stopped; recorded as failed",
                )
            target = targets.get(claim.name)
            if target is None:
                unknown.append(claim)
                continue
            task = asyncio.create_task(self._audit(claim, target), name=f"audit {claim.name}")
            self._audits[claim.id] = _Audit(claim, target, task)
        for claim in unknown:
            # In the shared table but not in this process's configuration (replicas
            # configured differently): not audited here; left for later.
            log.warning("schedule.unknown_target", target=claim.name)
            await self.store.schedule.finish_claim(claim.id, self.owner, now + self._schedule.every)

    async def _audit(self, claim: ClaimedTarget, target: TargetSettings) -> None:
        # Cancelled (shutdown): audit_target records the run as failed, and the lease is
        # given back on the way out keeping the due time, so the target is due again.
        # The audit stays listed until its claim is finished, so that draining waits for
        # that too.
        started = time.monotonic()
        try:
            try:
                result = await audit_target(
                    target,
                    self.store.record,
                    self._client(target),
                    policy=policy_of(self._settings),
                    deadline=self._settings.audit.timeout,
                    router=self._router,
                    on_alert=self._on_alert,
                )
                self.metrics.observe_run(result, time.monotonic() - started)
            except StoreError as exc:
                log.error("audit.not_recorded", target=target.name, error=str(exc))
            except Exception:
                # A bug must not take the daemon down, nor make the target due at once again.
                log.exception("audit.crashed", target=target.name)
            if target.name not in self._targets:
                await self._drop_client(target.name)
            await self._finish(claim)
        finally:
            self._audits.pop(claim.id, None)
            self._audit_ended()

    async def _finish(self, claim: ClaimedTarget) -> None:
        now = utcnow()
        next_at, skipped = next_run(self._schedule, claim.due, now, self._rng)
        if skipped:
            log.warning(
                "schedule.missed",
                target=claim.name,
                due=iso(claim.due),
                skipped=skipped,
                next_run_at=iso(next_at),
                why="audits not run in time were coalesced into this one",
            )
        try:
            held = await self.store.schedule.finish_claim(claim.id, self.owner, next_at)
        except StoreError as exc:
            # The lease runs out and the target is claimed again then.
            log.error("schedule.not_saved", target=claim.name, error=str(exc))
            return
        if not held:
            log.warning("lease.lost", target=claim.name, why="lease expired; another took it")

    async def _renew(self, now: datetime) -> None:
        period = lease_for(self._settings)
        if not self._audits or now - self._last_renew < period / 3:
            return
        ids = list(self._audits)
        held = await self.store.schedule.renew_leases(self.owner, ids, now + period)
        self._last_renew = now
        for lost in set(ids) - held:
            audit = self._audits.get(lost)
            if audit is not None:
                log.warning("lease.lost", target=audit.claim.name, why="not renewed in time")

    async def _refresh(self, now: datetime) -> None:
        if now - self._last_fleet >= FLEET_EVERY:
            self._last_fleet = now
            await self.metrics.update_fleet(
                self.store.reads,
                disconnected_after=self._settings.alerts.disconnected_after,
                names=list(self._targets),
            )
        if now - self._last_status >= STATUS_EVERY:
            self._last_status = now
            self._next_due = await self.store.schedule.next_due()
            self._notify.status(self._status_text(now))

    def _status_text(self, now: datetime | None = None) -> str:
        total = len(self._settings.targets)
        if self._draining:
            return f"stopping: {len(self._audits)} audit(s) finishing"
        text = f"auditing {len(self._audits)} of {total} targets"
        if self._next_due is not None and now is not None:
            wait = (self._next_due - now).total_seconds()
            text += f"; next in {max(0, math.ceil(wait))}s"
        return text

    def _database_failed(self, now: datetime, exc: StoreError) -> None:
        self.state.database_ok = False
        if self._db_failing_since is None:
            self._db_failing_since = now
        if self._db_logged_at is None or now - self._db_logged_at >= DB_ERROR_REPEAT:
            self._db_logged_at = now
            log.error("service.database_error", error=str(exc), since=iso(self._db_failing_since))

    def _database_answered(self) -> None:
        self.state.database_ok = True
        if self._db_failing_since is not None:
            log.info("service.database_back", since=iso(self._db_failing_since))
            self._db_failing_since = self._db_logged_at = None

    # -- alert delivery -----------------------------------------------------------------

    async def _deliver(self) -> None:
        """Send what the outbox holds to the configured sinks (alerts.webhook & co.)."""
        if self._draining or not self._sinks:
            return
        async with self._delivery_lock:
            try:
                report = await delivery_tick(
                    self.store.outbox,
                    self._sinks,
                    owner=self.owner,
                    retry=RetryPolicy.of(self._settings.alerts),
                    time_budget=DELIVERY_BUDGET_S,
                )
            except StoreError as exc:
                self._database_failed(utcnow(), exc)
                return
        if report.pending is not None and report.dead_total is not None:
            self.metrics.set_outbox(report.dead_total, report.pending)
            # Dead deliveries do not make the replica unready, but /readyz shows them.
            self.state.detail["outbox"] = {"pending": report.pending, "dead": report.dead_total}

    async def _replace_sinks(self, settings: Settings) -> None:
        async with self._delivery_lock:
            old, self._sinks = self._sinks, build_sinks(settings.alerts)
            self._router = Router.of(settings.alerts)
            await close_sinks(old)

    # -- clients ------------------------------------------------------------------------

    def _client(self, target: TargetSettings) -> XapiClient:
        """The target's client, kept across runs (its connection pool is reused)."""
        client = self._clients.get(target.name)
        if client is not None and client.target == target:
            return client
        if client is not None:
            # Its settings changed (SIGHUP); a target is audited once at a time, so the old
            # client is idle.
            self._spawn(client.close())
        client = XapiClient(target, tokens=self._tokens)
        self._clients[target.name] = client
        return client

    async def _drop_client(self, name: str) -> None:
        client = self._clients.pop(name, None)
        if client is not None:
            await client.close()

    # -- reload -------------------------------------------------------------------------

    async def reload(self) -> bool:
        """Read the configuration again and apply it; False (and logged) when refused."""
        async with self._reload_lock:
            try:
                loaded = load_settings(
                    self._config_path, require_file=self._config_path is not None
                )
                schedule = schedule_of(loaded.settings.schedule)
            except ConfigError as exc:
                for problem in exc.problems:
                    log.error("config.reload_refused", problem=problem, kept="the old one")
                return False
            for warning in loaded.warnings:
                log.warning("config.warning", warning=warning)
            old, new = self._settings, loaded.settings
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
                new = new.model_copy(
                    update={"database": old.database, "http": old.http, "log": old.log}
                )
            self._settings, self._schedule = new, schedule
            if new.alerts != old.alerts:
                await self._replace_sinks(new)
            if self._scheduler is not None and new.schedule.tick != old.schedule.tick:
                for job in ("tick", "deliver"):
                    self._scheduler.reschedule_job(
                        job, trigger="interval", seconds=new.schedule.tick.total_seconds()
                    )
            for name in removed:
                if not any(a.target.name == name for a in self._audits.values()):
                    await self._drop_client(name)
            self._sync_needed = True
            try:
                await self._sync_targets()
            except StoreError as exc:
                log.error("config.sync_failed", error=str(exc), retry="on the next tick")
            log.info("config.reloaded", added=added, removed=removed, changed=changed)
            return True

    # -- shutdown -----------------------------------------------------------------------

    async def _drain(self) -> None:
        grace = self._settings.audit.shutdown_grace.total_seconds()
        self._draining = True
        self.state.draining = True
        self._stopping_sent = True
        self._notify.send("STOPPING=1", f"STATUS={self._status_text()}")
        # A tick in progress finishes first, so every claim it made has its task.
        async with self._tick_lock:
            pass
        log.info("service.stopping", audits=len(self._audits), grace_s=grace)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self._audits and not self._hurry.is_set():
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            hurry = asyncio.ensure_future(self._hurry.wait())
            await asyncio.wait(
                {*(a.task for a in self._audits.values()), hurry},
                timeout=remaining,
                return_when=asyncio.FIRST_COMPLETED,
            )
            hurry.cancel()
        if self._audits:
            tasks = [a.task for a in self._audits.values()]
            log.warning(
                "service.cancelling",
                targets=sorted(a.claim.name for a in self._audits.values()),
                why="still running after the grace period"
                if not self._hurry.is_set()
                else "second stop signal",
            )
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks, timeout=CANCEL_WAIT_S)
        # A delivery pass in flight may finish within what is left of the grace; the rest
        # of the outbox waits, durably, for the next start.
        remaining = max(0.0, deadline - loop.time()) if not self._hurry.is_set() else 0.0
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(remaining):
                await self._delivery_lock.acquire()
                self._delivery_lock.release()

    async def _close(
        self, runner: web.AppRunner | None, watchdog: asyncio.Task[None] | None
    ) -> None:
        if self._scheduler is not None:
            # Only after the drain: shutting APScheduler down cancels its running jobs.
            self._scheduler.shutdown(wait=False)
            self._scheduler = None
            self.state.scheduler_running = False
        for audit in list(self._audits.values()):
            audit.task.cancel()
        if self._store is not None and self.state.migrations_at_head:
            try:
                released = await self.store.schedule.release_leases(self.owner)
                await self.store.outbox.release_deliveries(self.owner)
            except StoreError as exc:
                log.error("service.leases_not_released", error=str(exc), expire="on their own")
            else:
                if released:
                    log.info("service.leases_released", count=released)
        await close_sinks(self._sinks)
        self._sinks = {}
        if runner is not None:
            await runner.cleanup()
        for name in list(self._clients):
            await self._drop_client(name)
        for task in list(self._background):
            task.cancel()
        if watchdog is not None:
            watchdog.cancel()
        if not self._stopping_sent:
            self._notify.send("STOPPING=1")
        self._notify.close()
        if self._store is not None:
            await self._store.close()


async def run_service(
    loaded: Loaded,
    *,
    on_alert: AlertCallback | None = None,
    notifier: Notifier | None = None,
) -> None:
    """Run the daemon until SIGTERM or SIGINT (then drain and return)."""
    await Service(loaded, on_alert=on_alert, notifier=notifier).run()


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
