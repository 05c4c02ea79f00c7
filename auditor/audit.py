"""One audit of one target, end to end.

fetch (listing proved complete + settings) -> snapshot -> diff against the last complete run
-> states -> alert lifecycle -> one transaction with the run, versions, changes, alerts and
outbox rows. A failed or incomplete run is recorded with its error and is never diffed, so
it cannot produce ``removed``. A run cancelled mid-way (shutdown, timeout) is recorded as
failed before the cancellation goes on.

It uses the store's record part (:class:`~auditor.store.RecordStore`) and nothing else of
the store: it neither claims targets nor delivers alerts.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog

from auditor.alerts.lifecycle import Observation, Policy, evaluate, failures_in_row
from auditor.alerts.routing import Router
from auditor.config import Settings, TargetSettings, format_duration
from auditor.diff import diff, missing_scripts, unhealthy
from auditor.errors import AuditorError, IncompleteListingError, SourceError, StoreError
from auditor.model import (
    JSON,
    SCRIPT_KEY_FIELD,
    SCRIPTS,
    SETTINGS,
    SETTINGS_KEY,
    Alert,
    Change,
    Item,
    RunStatus,
    Snapshot,
    utcnow,
)
from auditor.store import RecordStore, RunOutcome, RunStart
from auditor.xapi import TokenCache, XapiClient

log = structlog.get_logger("auditor.audit")

AlertCallback = Callable[[Alert], None]


@dataclass(frozen=True, slots=True)
class AuditResult:
    target: str
    run_id: int
    status: RunStatus
    baseline: bool
    items: int | None
    pages: int | None
    changes: int
    suppressed: int
    error: str | None
    alerts: tuple[Alert, ...]

    @property
    def ok(self) -> bool:
        return self.status == "ok"


# Part of every answer digest: bump it when the way answers become a snapshot changes, so
# that a digest taken under the old reading never vouches for a record under the new one.
SNAPSHOT_SCHEME = "1"


@dataclass(frozen=True, slots=True)
class Fetched:
    """Everything the PBX says about failover.

    ``scripts`` holds each script's object by its filename, in listing order; ``digest``
    covers the PBX's answers byte for byte (and :data:`SNAPSHOT_SCHEME`).
    """

    scripts: dict[str, JSON]
    settings: JSON
    pages: int
    reported_count: int | None
    digest: str

    def snapshot(self, target: str) -> Snapshot:
        items = [Item(SCRIPTS, key, body) for key, body in self.scripts.items()]
        items.append(Item(SETTINGS, SETTINGS_KEY, self.settings))
        return Snapshot.of(target, items)


async def fetch(client: XapiClient) -> Fetched:
    """The listing, proved complete, and the settings."""
    listing = await client.list_failover_scripts()
    settings = await client.fetch_failover_settings()
    # The listing's keys are unique strings: the client proved it.
    scripts = {str(body[SCRIPT_KEY_FIELD]): body for body in listing.items}
    answers = f"{SNAPSHOT_SCHEME}:{listing.digest}:{settings.digest}"
    return Fetched(
        scripts=scripts,
        settings=settings.value,
        pages=listing.pages,
        reported_count=listing.reported_count,
        digest=hashlib.sha256(answers.encode()).hexdigest(),
    )


@functools.cache
def settle_heap() -> None:
    """Once per process, when start-up is done: freeze what it allocated (modules, the
    database engine, settings) out of the garbage collector's sight.

    Those objects live as long as the process, yet every full collection walked them all
    again; in a fleet's audit cycle that was a third of the client's work. No collection
    first: it found a few dozen objects and cost a one-shot ``once`` some 50 ms.
    """
    gc.freeze()


def policy_of(settings: Settings) -> Policy:
    return Policy(
        disconnected_after=settings.alerts.disconnected_after,
        repeat_every=settings.alerts.repeat_every,
    )


async def audit_target(
    target: TargetSettings,
    record: RecordStore,
    client: XapiClient,
    *,
    policy: Policy,
    start: RunStart | None = None,
    deadline: timedelta | None = None,
    sinks: Sequence[str] = (),
    router: Router | None = None,
    on_alert: AlertCallback | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> AuditResult:
    """Audit ``target`` once and record the run; never raises SourceError (it is recorded).

    ``start``: the run, when it was already recorded as running (:meth:`RecordStore.start_runs`);
    otherwise it is recorded now. Each alert event is enqueued for the sinks named in
    ``sinks`` and those whose filter in ``router`` (``Router.of(settings.alerts)``) matches it.
    ``clock`` stamps the run and its alerts (the daemon's follows the database's clock).
    """
    bound = log.bind(target=target.name)
    began = clock()
    if start is None:
        start = await record.start_run(target.name, target.url, began)
    target_id, run_id, previous_run = start.target_id, start.run_id, start.previous_run_id
    bound = bound.bind(run_id=run_id)

    baseline = previous_run is None
    try:
        fetched, status, error = await _fetch_or_why(client, target, deadline)
        finished = clock()
        observed = await _observe(target, record, start, policy, fetched, status, error, finished)
        events, states = evaluate(observed.observation, start.alerts, policy)
    except asyncio.CancelledError:
        await _record_cancelled(record, target, start, began, "audit cancelled", clock())
        raise
    except StoreError:
        raise
    except Exception as exc:
        # A bug: the run is recorded as failed (never left 'running'), then it goes on up.
        await _record_failed(
            record,
            target,
            start,
            began,
            f"internal error ({type(exc).__name__}); see the log",
            clock(),
        )
        raise
    changes, suppressed, items, digest = (
        observed.changes,
        observed.suppressed,
        observed.items,
        observed.digest,
    )
    alerts = await record.commit_run(
        RunOutcome(
            run_id=run_id,
            target_id=target_id,
            status=status,
            started_at=began,
            finished_at=finished,
            pages=fetched.pages if fetched else None,
            items=items,
            reported_count=fetched.reported_count if fetched else None,
            error=error,
            suppressed=suppressed,
            digest=digest,
            previous_run_id=previous_run,
            changes=changes,
            events=events,
            alert_states=states,
            routes=[
                tuple(dict.fromkeys((*sinks, *(router.route(target.name, e) if router else ()))))
                for e in events
            ],
        )
    )
    if status == "ok" and baseline:
        bound.info("audit.baseline", items=items, pages=fetched.pages if fetched else None)
    elif status == "ok":
        bound.info("audit.ok", items=items, changes=len(changes), suppressed=suppressed)
    else:
        bound.warning("audit.not_complete", status=status, error=error)
    if on_alert is not None:
        for alert in alerts:
            on_alert(alert)
    return AuditResult(
        target=target.name,
        run_id=run_id,
        status=status,
        baseline=baseline,
        items=items,
        pages=fetched.pages if fetched else None,
        changes=len(changes),
        suppressed=suppressed,
        error=error,
        alerts=tuple(alerts),
    )


async def audit_many(
    settings: Settings,
    record: RecordStore,
    targets: Sequence[TargetSettings],
    *,
    on_alert: AlertCallback | None = None,
    on_done: Callable[[AuditResult], None] | None = None,
    tokens: TokenCache | None = None,
) -> list[AuditResult]:
    """Audit ``targets`` concurrently, at most ``audit.max_concurrent`` at once.

    Each target gets its own client (one connection pool); all share one token cache, so
    two targets naming the same PBX and client id still log in once. A target named twice
    is audited once: two concurrent runs of one target would both diff against the same
    previous run and record every change twice.
    """
    settle_heap()
    targets = list({t.name: t for t in targets}.values())
    tokens = tokens if tokens is not None else TokenCache()
    limit = asyncio.Semaphore(settings.audit.max_concurrent)
    policy = policy_of(settings)
    router = Router.of(settings.alerts)

    queued = utcnow()

    async def one(target: TargetSettings, start: RunStart) -> AuditResult:
        begun = False
        try:
            async with limit, XapiClient(target, tokens=tokens) as client:
                begun = True
                result = await audit_target(
                    target,
                    record,
                    client,
                    policy=policy,
                    start=start,
                    router=router,
                    deadline=settings.audit.timeout,
                    on_alert=on_alert,
                )
        except asyncio.CancelledError:
            # Once begun, audit_target records a cancelled run itself.
            if not begun:
                await _record_cancelled(
                    record, target, start, queued, "audit cancelled before it began", utcnow()
                )
            raise
        if on_done is not None:
            on_done(result)
        return result

    # All the cycle's runs are recorded as running at once (a few statements in all, not a
    # few per target); each run's started_at becomes the time its audit began.
    starts = await record.start_runs([(t.name, t.url) for t in targets], queued)
    tasks = [asyncio.ensure_future(one(t, s)) for t, s in zip(targets, starts, strict=True)]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException as exc:
        # Cancelled, gather has cancelled every audit; one audit failed outside what a run
        # records (the database, a bug): the others are stopped here. Either way gather
        # answered as soon as one audit ended: wait for all of them, each recording its
        # run as cancelled, before the caller goes on (and closes the store).
        if not isinstance(exc, asyncio.CancelledError):
            for task in tasks:
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def _fetch_or_why(
    client: XapiClient, target: TargetSettings, deadline: timedelta | None
) -> tuple[Fetched | None, RunStatus, str | None]:
    """What the PBX said, or the status and error of a run that could not hear it all."""
    try:
        async with asyncio.timeout(deadline.total_seconds() if deadline else None):
            return await fetch(client), "ok", None
    except IncompleteListingError as exc:
        return None, "incomplete", str(exc)
    except SourceError as exc:
        return None, "failed", str(exc)
    except AuditorError as exc:
        # Refused before a request was sent (a query option the client checks, a secret
        # not resolved): this target's failed run, like a refusal by the PBX.
        return None, "failed", f"{target.name}: {exc}"
    except TimeoutError:
        limit = format_duration(deadline) if deadline else "its time limit"
        return None, "failed", f"{target.name}: audit not finished within {limit} (audit.timeout)"


@dataclass(frozen=True, slots=True)
class _Observed:
    observation: Observation
    changes: list[Change]
    suppressed: int
    items: int | None
    digest: str | None


async def _observe(
    target: TargetSettings,
    record: RecordStore,
    start: RunStart,
    policy: Policy,
    fetched: Fetched | None,
    status: RunStatus,
    error: str | None,
    finished: datetime,
) -> _Observed:
    """What the run saw: its changes against the record, and the observation for the alerts."""
    baseline = start.previous_run_id is None
    target_id = start.target_id
    if fetched is not None:
        if start.digest is not None and fetched.digest == start.digest:
            # Byte for byte what the PBX said when the record was last made to match it:
            # nothing changed, and the record need not be read back nor diffed.
            changes, suppressed = [], 0
        else:
            current = fetched.snapshot(target.name)
            if baseline:
                changes, suppressed = _baseline_changes(current), 0
            else:
                hashes = await record.current_hashes(target_id)
                previous = await _previous_snapshot(record, target_id, hashes, current)
                result = diff(previous, current, ignore_fields=target.ignore_fields)
                changes, suppressed = list(result.changes), result.suppressed
        # Once this run is recorded the record holds exactly what the PBX said, unless a
        # change was ignored (ignore_fields): then the digest cannot vouch for it.
        digest = fetched.digest if suppressed == 0 else None
        observation = Observation(
            target=target.name,
            status="ok",
            at=finished,
            baseline=baseline,
            changes=changes,
            unhealthy=unhealthy(fetched.scripts, target.state.field, target.state.healthy),
            missing=missing_scripts(fetched.settings, fetched.scripts),
            listed=fetched.scripts.keys(),
            state_field=target.state.field,
        )
        items = len(fetched.scripts)
    else:
        statuses = await record.recent_statuses(target_id, policy.disconnected_after + 1)
        observation = Observation(
            target=target.name,
            status=status,
            at=finished,
            error=error,
            failures_in_row=failures_in_row(statuses) + 1,
        )
        changes, suppressed, items, digest = [], 0, None, None

    return _Observed(observation, changes, suppressed, items, digest)


async def _record_cancelled(
    record: RecordStore,
    target: TargetSettings,
    start: RunStart,
    began: datetime,
    what: str,
    finished: datetime,
) -> None:
    await _record_failed(record, target, start, began, f"{what} (shutdown or timeout)", finished)


async def _record_failed(
    record: RecordStore,
    target: TargetSettings,
    start: RunStart,
    began: datetime,
    why: str,
    finished: datetime,
) -> None:
    # Shielded: the run must not stay 'running' nor be diffed.
    await asyncio.shield(
        record.commit_run(
            RunOutcome(
                run_id=start.run_id,
                target_id=start.target_id,
                status="failed",
                started_at=began,
                finished_at=finished,
                error=f"{target.name}: {why}",
            )
        )
    )


async def _previous_snapshot(
    record: RecordStore, target_id: int, hashes: Mapping[tuple[str, str], str], current: Snapshot
) -> Snapshot:
    """The last complete run's snapshot, reading from the database only the bodies whose
    hash differs from what the PBX sent now (an unchanged item is the same either way)."""
    stale = [k for k, h in hashes.items() if k not in current.items or current.items[k].hash != h]
    loaded = {(i.collection, i.key): i for i in await record.current_items(target_id, stale)}
    if len(loaded) != len(stale):
        # The record moved between the two reads: take it whole.
        return (await record.current_snapshot(target_id))[1]
    return Snapshot(current.target, {k: loaded.get(k) or current.items[k] for k in hashes})


def _baseline_changes(current: Snapshot) -> list[Change]:
    """The baseline enters the history as 'added' records, so the history is complete."""
    return [
        Change(collection=item.collection, key=item.key, kind="added", before=None, after=item.body)
        for item in sorted(current.items.values(), key=lambda i: (i.collection, i.key))
    ]
