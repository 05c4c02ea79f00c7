"""The daemon (``3cx-auditor run``): start, the tick loop, signals, drain and shutdown.

The :class:`Service` composes the rooms of :mod:`auditor.service`: the schedule's
arithmetic (:mod:`.schedule`), claims and leases (:mod:`.leases`), alert delivery
(:mod:`.delivery`), the XAPI clients (:mod:`.clients`), what it reports (:mod:`.status`),
what a reload changes (:mod:`.reload`) and systemd's notifications (:mod:`.systemd`). It
owns the timer, the order of start and shutdown, and the audits' tasks; the rooms own
their state.

The schedule lives in the database, not in memory: each target has a ``next_run_at``, so a
restart neither forgets audits nor bunches them. APScheduler is only the timer: one job,
``tick``, every ``schedule.tick``. A tick claims due targets (as many as there are free
slots of ``audit.max_concurrent``) with a lease, and audits each in a task of its own under
``audit.timeout``. When an audit ends, the lease is given back with the target's next time.
SQLite serves one process: a second ``run`` is refused. A second job, ``deliver``, sends
the outbox, so a slow sink never holds up the audits. A third, ``heartbeat``, renews the
leases of the audits in flight and reads the database's clock, which every time the daemon
computes or records follows (:mod:`.clock`).

Signals: SIGHUP reloads the configuration (refused, with every problem logged, when it is
invalid); SIGTERM or SIGINT drain: no new claims, audits in flight get ``audit.shutdown_grace``
to finish, the rest are cancelled (and recorded as failed), leases are given back; a second
SIGTERM or SIGINT cancels at once. systemd is told ``READY=1``, ``WATCHDOG=1``, ``STATUS=``
and ``STOPPING=1`` through ``$NOTIFY_SOCKET`` (see :class:`.systemd.Notifier`).

The daemon never prints (alerts reach stdout through ``on_alert``) and never picks an exit
code: that is :mod:`auditor.cli`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import signal
import time
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Any

import structlog
from aiohttp import web
from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MAX_INSTANCES, JobExecutionEvent
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from auditor.audit import AlertCallback, audit_target, policy_of, settle_heap
from auditor.config import Loaded, Settings, TargetSettings
from auditor.errors import StoreError
from auditor.metrics import Metrics
from auditor.service.clients import Clients
from auditor.service.context import Context
from auditor.service.delivery import Delivery
from auditor.service.leases import Leases, beat_every, owner_id
from auditor.service.reload import plan_reload
from auditor.service.schedule import first_run, schedule_of
from auditor.service.status import Status
from auditor.service.systemd import Notifier, watchdog
from auditor.store import ClaimedTarget, Store
from auditor.store.lock import SqliteLock
from auditor.web import ServiceState, accept_guard, fit_connections, make_app, start_http

log = structlog.get_logger("auditor.service")

# Cancelled audits record their run as failed before they end; this bounds the wait for
# that when the database does not answer.
CANCEL_WAIT_S = 10.0
# This host's clock this far from the database's is worth a warning (the daemon goes by the
# database's either way).
CLOCK_WARN_S = 1.0


def descriptor_reserve(settings: Settings) -> int:
    """File descriptors kept for the daemon's own work, not for HTTP clients: a few for
    the process, the database and the sinks, and four for each audit running at once
    (its connections to the PBX, the database's files)."""
    return 32 + 4 * settings.audit.max_concurrent


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
        schedule = schedule_of(loaded.settings.schedule)
        self._config_path = loaded.path
        self._on_alert = on_alert
        self._notify = notifier if notifier is not None else Notifier()
        self.owner = owner_id()
        self._ctx = Context(
            loaded.settings,
            schedule,
            owner=self.owner,
            rng=rng if rng is not None else random.Random(),
        )
        self.state = ServiceState(detail={"replica": self.owner})
        self.metrics = Metrics()
        self._leases = Leases(self._ctx)
        self._status = Status(
            self._ctx, self._leases, state=self.state, metrics=self.metrics, notify=self._notify
        )
        self._delivery = Delivery(
            self._ctx,
            state=self.state,
            metrics=self.metrics,
            on_database_error=self._status.database_failed,
        )
        self._clients = Clients(self._spawn)
        self._tick_lock = asyncio.Lock()
        self._refill_pending = False
        self._reload_lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._hurry = asyncio.Event()
        self._sync_needed = True
        self._background: set[asyncio.Task[Any]] = set()
        self._stopping_sent = False
        self._scheduler: AsyncIOScheduler | None = None
        self._clock_reported = 0.0

    @property
    def _settings(self) -> Settings:
        return self._ctx.settings

    @property
    def store(self) -> Store:
        return self._ctx.store

    # -- life cycle ---------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        installed = self._install_signals(loop)
        # accept() out of descriptors: one log line a minute and /readyz told, not a flood.
        loop.set_exception_handler(accept_guard(self.state))
        lock: SqliteLock | None = None
        runner: web.AppRunner | None = None
        pinger: asyncio.Task[None] | None = None
        try:
            if self._notify.watchdog_interval is not None:
                # From the start: systemd arms the watchdog before READY, and migrating a
                # large database can take a while.
                pinger = asyncio.create_task(watchdog(self._notify, self._notify.watchdog_interval))
            lock = SqliteLock.acquire(self._settings.database.url)
            self._notify.status("starting: opening and migrating the database")
            self._ctx.opened = await Store.open(
                self._settings.database.url, concurrency=self._settings.audit.max_concurrent
            )
            self.state.database_ok = True
            # On PostgreSQL the migration runs under an advisory lock: replicas starting
            # together migrate one after the other.
            revision = await self.store.upgrade()
            self.state.migrations_at_head = True
            await self._sample_clock()
            await self._leases.recover(sqlite=lock is not None)
            await self._sync_targets()
            self._delivery.open()
            app = make_app(
                store=self.store,
                state=self.state,
                metrics=self.metrics,
                token=self._settings.http.token,
            )
            http = self._settings.http
            runner = await start_http(
                app,
                http.listen,
                max_connections=fit_connections(
                    http.max_connections, reserve=descriptor_reserve(self._settings)
                ),
                idle_timeout=http.idle_timeout.total_seconds(),
            )
            settle_heap()
            self._start_scheduler()
            self._notify.send("READY=1", f"STATUS={self._status.text()}")
            log.info(
                "service.started",
                replica=self.owner,
                database=self.store.url_for_display,
                database_tls=self.store.tls,
                revision=revision,
                listen=self._settings.http.listen,
                targets=len(self._settings.targets),
                schedule=self._ctx.schedule.describe(),
                max_concurrent=self._settings.audit.max_concurrent,
            )
            if not self._settings.targets:
                log.warning("service.no_targets", hint="add [[targets]] and send SIGHUP")
            await self._stop.wait()
            await self._drain()
        finally:
            await self._close(runner, pinger)
            for sig in installed:
                loop.remove_signal_handler(sig)
            loop.set_exception_handler(None)
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
            log.warning("service.stop_now", audits=len(self._leases.audits))
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

    async def _sync_targets(self) -> None:
        configured = [(t.name, t.url) for t in self._settings.targets]
        now = self._ctx.clock.now()
        schedule = self._ctx.schedule
        await self.store.schedule.sync_targets(
            configured, lambda _name: first_run(schedule, now, self._ctx.rng)
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
        # The heartbeat too: the leases of audits in flight must be renewed in time whatever
        # a tick is waiting for, and also while draining.
        scheduler.add_job(
            self._beat,
            "interval",
            seconds=beat_every(self._settings).total_seconds(),
            id="heartbeat",
            coalesce=True,
            max_instances=1,
            misfire_grace_time=None,
        )
        # Delivery is a job of its own: a slow alert sink must not hold up the audits.
        scheduler.add_job(
            self._delivery.deliver,
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

    # -- the tick -----------------------------------------------------------------------

    async def _tick(self) -> None:
        async with self._tick_lock:
            if self._ctx.draining:
                return
            now = self._ctx.clock.now()
            try:
                if self._sync_needed:
                    await self._sync_targets()
                await self._leases.claim(now, self._audit)
                await self._status.refresh(now)
            except StoreError as exc:
                self._status.database_failed(now, exc)
            else:
                self._status.database_answered()

    async def _beat(self) -> None:
        try:
            await self._leases.beat()
            await self._sample_clock()
        except StoreError as exc:
            self._status.database_failed(self._ctx.clock.now(), exc)

    async def _sample_clock(self) -> None:
        offset = (await self._ctx.clock.sample(self.store.schedule.database_time)).total_seconds()
        if abs(offset - self._clock_reported) >= CLOCK_WARN_S:
            self._clock_reported = offset
            log.warning(
                "clock.offset",
                offset_s=round(offset, 3),
                why="this host's clock differs from the database's; leases and times follow"
                " the database's",
            )

    def _audit_ended(self) -> None:
        # A slot freed while targets wait is filled now, not at the next tick: otherwise a
        # tick would start at most max_concurrent audits, however short they are, and a
        # fleet due faster than max_concurrent per tick would fall further behind each
        # round. Without a backlog (the last claim found fewer due targets than it could
        # take), the next tick is soon enough, and no claim is made for nothing.
        if self._leases.backlog and not self._ctx.draining and not self._refill_pending:
            self._refill_pending = True
            self._spawn(self._refill())

    async def _refill(self) -> None:
        async with self._tick_lock:
            # Audits ending from here on ask for a claim of their own.
            self._refill_pending = False
            if self._ctx.draining:
                return
            now = self._ctx.clock.now()
            try:
                await self._leases.claim(now, self._audit)
            except StoreError as exc:
                self._status.database_failed(now, exc)

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
                    self._clients.get(target),
                    policy=policy_of(self._settings),
                    deadline=self._settings.audit.timeout,
                    router=self._delivery.router,
                    on_alert=self._on_alert,
                    clock=self._ctx.clock.now,
                    digest_key=self._settings.audit.digest_key(),
                )
                self.metrics.observe_run(result, time.monotonic() - started)
            except StoreError as exc:
                log.error("audit.not_recorded", target=target.name, error=str(exc))
            except Exception:
                # A bug must not take the daemon down, nor make the target due at once again.
                log.exception("audit.crashed", target=target.name)
            if target.name not in self._ctx.targets:
                await self._clients.drop(target.name)
            await self._leases.finish(claim)
        finally:
            self._leases.ended(claim)
            self._audit_ended()

    # -- reload -------------------------------------------------------------------------

    async def reload(self) -> bool:
        """Read the configuration again and apply it; False (and logged) when refused."""
        async with self._reload_lock:
            old = self._settings
            change = plan_reload(self._config_path, old)
            if change is None:
                return False
            new = change.settings
            self._ctx.settings, self._ctx.schedule = new, change.schedule
            if new.alerts != old.alerts:
                await self._delivery.replace_sinks(new)
            if self._scheduler is not None and new.schedule.tick != old.schedule.tick:
                for job in ("tick", "deliver"):
                    self._scheduler.reschedule_job(
                        job, trigger="interval", seconds=new.schedule.tick.total_seconds()
                    )
            if self._scheduler is not None and new.schedule.lease != old.schedule.lease:
                self._scheduler.reschedule_job(
                    "heartbeat", trigger="interval", seconds=beat_every(new).total_seconds()
                )
            for name in change.removed:
                if not any(a.target.name == name for a in self._leases.audits.values()):
                    await self._clients.drop(name)
            self._sync_needed = True
            try:
                await self._sync_targets()
            except StoreError as exc:
                log.error("config.sync_failed", error=str(exc), retry="on the next tick")
            log.info(
                "config.reloaded",
                added=change.added,
                removed=change.removed,
                changed=change.changed,
            )
            return True

    # -- shutdown -----------------------------------------------------------------------

    async def _drain(self) -> None:
        grace = self._settings.audit.shutdown_grace.total_seconds()
        audits = self._leases.audits
        self._ctx.draining = True
        self.state.draining = True
        self._stopping_sent = True
        self._notify.send("STOPPING=1", f"STATUS={self._status.text()}")
        # A tick in progress finishes first, so every claim it made has its task.
        async with self._tick_lock:
            pass
        log.info("service.stopping", audits=len(audits), grace_s=grace)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while audits and not self._hurry.is_set():
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            hurry = asyncio.ensure_future(self._hurry.wait())
            await asyncio.wait(
                {*(a.task for a in audits.values()), hurry},
                timeout=remaining,
                return_when=asyncio.FIRST_COMPLETED,
            )
            hurry.cancel()
        if audits:
            tasks = [a.task for a in audits.values()]
            log.warning(
                "service.cancelling",
                targets=sorted(a.claim.name for a in audits.values()),
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
        await self._delivery.settle(remaining)

    async def _close(self, runner: web.AppRunner | None, pinger: asyncio.Task[None] | None) -> None:
        if self._scheduler is not None:
            # Only after the drain: shutting APScheduler down cancels its running jobs.
            self._scheduler.shutdown(wait=False)
            self._scheduler = None
            self.state.scheduler_running = False
        for audit in list(self._leases.audits.values()):
            audit.task.cancel()
        if self._ctx.opened is not None and self.state.migrations_at_head:
            await self._leases.release()
        await self._delivery.close()
        if runner is not None:
            await runner.cleanup()
        await self._clients.close()
        for task in list(self._background):
            task.cancel()
        if pinger is not None:
            pinger.cancel()
        if not self._stopping_sent:
            self._notify.send("STOPPING=1")
        self._notify.close()
        if self._ctx.opened is not None:
            await self._ctx.opened.close()


async def run_service(
    loaded: Loaded,
    *,
    on_alert: AlertCallback | None = None,
    notifier: Notifier | None = None,
) -> None:
    """Run the daemon until SIGTERM or SIGINT (then drain and return)."""
    await Service(loaded, on_alert=on_alert, notifier=notifier).run()


__all__ = ["CANCEL_WAIT_S", "Service", "run_service"]
