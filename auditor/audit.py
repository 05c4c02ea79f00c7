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
import hmac
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog

from auditor.alerts.lifecycle import Observation, Policy, evaluate, failures_in_row
from auditor.alerts.routing import Router
from auditor.collections import BY_NAME, EXTRAS_FIELD, Collection, collection, storable
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
    content_hash,
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
    # The collections the PBX refused this run: name -> why.
    unavailable: Mapping[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


# Part of every answer digest: bump it when the way answers become a snapshot changes, so
# that a digest taken under the old reading never vouches for a record under the new one.
SNAPSHOT_SCHEME = "1"


@dataclass(frozen=True, slots=True)
class Fetched:
    """Everything the PBX says about the collections audited.

    ``scripts`` holds each script's object by its filename, in listing order, ``settings``
    the failover settings (None when not audited); ``items`` the other collections' items,
    already in the form they may be stored in (:func:`auditor.collections.storable`).
    ``audited`` names the collections read in full this run, ``unavailable`` those the PBX
    refused (name -> why). ``digest`` covers the PBX's answers byte for byte (and
    :data:`SNAPSHOT_SCHEME`).
    """

    scripts: dict[str, JSON]
    settings: JSON | None
    pages: int
    reported_count: int | None
    digest: str
    items: tuple[Item, ...] = ()
    audited: frozenset[str] = frozenset((SCRIPTS, SETTINGS))
    unavailable: Mapping[str, str] = field(default_factory=dict)

    def snapshot(self, target: str) -> Snapshot:
        items = [Item(SCRIPTS, key, body) for key, body in self.scripts.items()]
        if self.settings is not None:
            items.append(Item(SETTINGS, SETTINGS_KEY, self.settings))
        items.extend(self.items)
        return Snapshot.of(target, items)


# The bodies recorded now for some keys of a collection (for reading extras only once).
StoredBodies = Callable[[str, list[str]], Awaitable[dict[str, Mapping[str, Any]]]]
_REFUSED = (403, 404)


async def fetch(
    client: XapiClient,
    collections: Sequence[str] = (SCRIPTS, SETTINGS),
    *,
    stored: StoredBodies | None = None,
    digest_key: bytes | None = None,
) -> Fetched:
    """The chosen collections: each paged one proved complete, each single one read; a
    collection the PBX refuses (403/404) is noted as unavailable, unless every one is."""
    scripts: dict[str, JSON] = {}
    settings: JSON | None = None
    items: list[Item] = []
    answers = [SNAPSHOT_SCHEME]
    extra_answers: list[str] = []
    pages, reported = 0, None
    unavailable: dict[str, str] = {}
    first_refusal: SourceError | None = None
    for name in collections:
        entry = collection(name)
        try:
            if name == SCRIPTS:
                listing = await client.list_failover_scripts()
                # The listing's keys are unique strings: the client proved it.
                scripts = {str(body[SCRIPT_KEY_FIELD]): body for body in listing.items}
                pages, reported = listing.pages, listing.reported_count
                answers.append(listing.digest)
            elif name == SETTINGS:
                answer = await client.fetch_failover_settings()
                settings = answer.value
                answers.append(answer.digest)
            elif entry.key is not None:
                listing = await client.list_collection(entry)
                extra_answers.append(f"{name}={listing.digest}")
                got, digests = await _paged_items(client, entry, listing.items, stored, digest_key)
                items.extend(got)
                extra_answers.extend(digests)
            else:
                answer = await client.fetch_object(entry)
                body = storable(entry, answer.value, digest_key)
                items.append(Item(name, entry.single_key, body))
                extra_answers.append(f"{name}={answer.digest}")
        except SourceError as exc:
            if exc.status not in _REFUSED or isinstance(exc, IncompleteListingError):
                raise
            first_refusal = first_refusal or exc
            unavailable[name] = exc.detail
            log.warning("audit.collection_unavailable", collection=name, reason=exc.detail)
    if first_refusal is not None and len(unavailable) == len(collections):
        raise first_refusal
    if extra_answers or unavailable:
        # Only when a collection beyond the failover two is chosen, so that a target
        # auditing just those keeps the digest it had.
        extra_answers.append("key=" + _key_id(digest_key))
        extra_answers.append("unavailable=" + ",".join(sorted(unavailable)))
    text = ":".join(answers + extra_answers)
    return Fetched(
        scripts=scripts,
        settings=settings,
        pages=pages,
        reported_count=reported,
        digest=hashlib.sha256(text.encode()).hexdigest(),
        items=tuple(items),
        audited=frozenset(n for n in collections if n not in unavailable),
        unavailable=unavailable,
    )


async def _paged_items(
    client: XapiClient,
    entry: Collection,
    bodies: Sequence[JSON],
    stored: StoredBodies | None,
    digest_key: bytes | None,
) -> tuple[list[Item], list[str]]:
    """The items of a paged collection other than the scripts, with their extras: read from
    the PBX for an item not recorded yet (or recorded without them), else taken from the
    record. Returns the items and the digests of their extras."""
    key_field = entry.key
    assert key_field is not None
    keys = [str(body[key_field]) for body in bodies]
    known: dict[str, Mapping[str, Any]] = {}
    if entry.extras_path is not None and stored is not None and keys:
        known = await stored(entry.name, keys)
    items: list[Item] = []
    digests: list[str] = []
    for key, body in zip(keys, bodies, strict=True):
        value = storable(entry, body, digest_key)
        if entry.extras_path is not None:
            extras = known.get(key, {}).get(EXTRAS_FIELD)
            if not isinstance(extras, Mapping):
                try:
                    answer = await client.fetch_object(entry, key)
                except SourceError as exc:
                    if exc.status == 404:
                        # Gone between the listing and now: the listing is not what the
                        # PBX holds any more.
                        raise IncompleteListingError(
                            f"{entry.name}: {key!r} vanished while it was read",
                            target=exc.target,
                        ) from None
                    raise
                extras = storable(entry, answer.value, digest_key)
            # The extras as kept, whether read now or recorded when the item was new: the
            # digest is the same on every run while nothing changes.
            digests.append(f"{key}={content_hash(extras)}")
            value[EXTRAS_FIELD] = dict(extras)
        items.append(Item(entry.name, key, value))
    return items, digests


def _key_id(digest_key: bytes | None) -> str:
    """Which digest key the concealed values were digested with (not the key)."""
    if digest_key is None:
        return "none"
    return hmac.new(digest_key, b"3cx-auditor digest key id", hashlib.sha256).hexdigest()[:16]


def alerting_collections(target: TargetSettings) -> frozenset[str]:
    """The collections whose changes raise change alerts for ``target`` (the history records
    every collection's changes either way)."""
    if target.alert_on_change is not None:
        return frozenset(target.alert_on_change)
    return frozenset(name for name, entry in BY_NAME.items() if entry.alerts)


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
    digest_key: bytes | None = None,
) -> AuditResult:
    """Audit ``target`` once and record the run; never raises SourceError (it is recorded).

    ``digest_key``: the key of the digests kept of concealed values (``[audit]
    secret_digest_key``); without it only whether they are set is recorded.

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

    async def stored(name: str, keys: list[str]) -> dict[str, Mapping[str, Any]]:
        if baseline:
            return {}
        found = await record.current_items(target_id, [(name, key) for key in keys])
        return {item.key: item.body for item in found}

    try:
        fetched, status, error = await _fetch_or_why(
            client, target, deadline, stored=stored, digest_key=digest_key
        )
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
        unavailable=dict(fetched.unavailable) if fetched else {},
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
                    digest_key=settings.audit.digest_key(),
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
    client: XapiClient,
    target: TargetSettings,
    deadline: timedelta | None,
    *,
    stored: StoredBodies | None = None,
    digest_key: bytes | None = None,
) -> tuple[Fetched | None, RunStatus, str | None]:
    """What the PBX said, or the status and error of a run that could not hear it all."""
    try:
        async with asyncio.timeout(deadline.total_seconds() if deadline else None):
            fetched = await fetch(client, target.collections, stored=stored, digest_key=digest_key)
            return fetched, "ok", None
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
    fresh: set[str] = set()
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
                # Only what was read this run is compared: a collection not chosen, or
                # refused by the PBX, is never taken as emptied.
                hashes = {
                    k: h
                    for k, h in (await record.current_hashes(target_id)).items()
                    if k[0] in fetched.audited
                }
                recorded = {coll for coll, _ in hashes}
                previous = await _previous_snapshot(
                    record, target_id, hashes, current, fetched.audited
                )
                result = diff(previous, current, ignore_fields=target.ignore_fields)
                changes, suppressed = list(result.changes), result.suppressed
                # A collection recorded for the first time is its own baseline: its items
                # enter the history as 'added' without alerting.
                fresh = {c for c in fetched.audited if c not in recorded} - {SCRIPTS, SETTINGS}
        # Once this run is recorded the record holds exactly what the PBX said, unless a
        # change was ignored (ignore_fields): then the digest cannot vouch for it.
        digest = fetched.digest if suppressed == 0 else None
        alerting = alerting_collections(target)
        both = {SCRIPTS, SETTINGS} <= fetched.audited
        observation = Observation(
            target=target.name,
            status="ok",
            at=finished,
            baseline=baseline,
            changes=[c for c in changes if c.collection in alerting and c.collection not in fresh],
            unhealthy=unhealthy(fetched.scripts, target.state.field, target.state.healthy),
            missing=missing_scripts(fetched.settings or {}, fetched.scripts) if both else (),
            listed=fetched.scripts.keys(),
            state_field=target.state.field,
            unavailable=fetched.unavailable,
            failover_read=both,
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
    record: RecordStore,
    target_id: int,
    hashes: Mapping[tuple[str, str], str],
    current: Snapshot,
    audited: frozenset[str],
) -> Snapshot:
    """The last complete run's snapshot of the ``audited`` collections, reading from the
    database only the bodies whose hash differs from what the PBX sent now (an unchanged
    item is the same either way)."""
    stale = [k for k, h in hashes.items() if k not in current.items or current.items[k].hash != h]
    loaded = {(i.collection, i.key): i for i in await record.current_items(target_id, stale)}
    if len(loaded) != len(stale):
        # The record moved between the two reads: take it whole.
        whole = (await record.current_snapshot(target_id))[1]
        return Snapshot(whole.target, {k: i for k, i in whole.items.items() if k[0] in audited})
    return Snapshot(current.target, {k: loaded.get(k) or current.items[k] for k in hashes})


def _baseline_changes(current: Snapshot) -> list[Change]:
    """The baseline enters the history as 'added' records, so the history is complete."""
    return [
        Change(collection=item.collection, key=item.key, kind="added", before=None, after=item.body)
        for item in sorted(current.items.values(), key=lambda i: (i.collection, i.key))
    ]
