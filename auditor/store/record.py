"""The audit's record: what one audit reads before it diffs and everything a run writes.

:class:`RecordStore` is the part of the store :mod:`auditor.audit` uses: it starts runs
(a cycle's runs in one INSERT, with each target's alert states and answer digest), reads the
current contents (hashes first, bodies only where they differ), and commits a finished run
in one transaction: its ``runs`` row, the versions and the chain (:mod:`auditor.store.history`),
the alert events with their outbox rows, and the alert states. Short transactions run grouped
on the event loop on SQLite, and quiet runs recorded together are written with one statement
per table on both databases (:mod:`auditor.store.batch`).

It neither schedules nor delivers: leases are :mod:`auditor.store.schedule`'s, the outbox's
rows are only enqueued here (:mod:`auditor.store.outbox` sends them), and the read side of
the CLI and the API is :mod:`auditor.store.reads`.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from functools import partial
from typing import Any, cast

from sqlalchemy import Row, and_, bindparam, case, func, insert, null, select, tuple_, update
from sqlalchemy.engine import Connection

from auditor.errors import StoreError
from auditor.model import Alert, AlertStatus, Item, Severity, Snapshot, utcnow
from auditor.store.database import BATCH, Part, batched
from auditor.store.history import read_items, record_contents
from auditor.store.records import AlertState, RunOutcome, RunStart
from auditor.store.schema import alert_events, alerts, outbox, runs, targets, versions

# A transaction writing up to this many rows runs on the event loop on SQLite (_transact):
# a fraction of a millisecond per row at most.
SHORT_ROWS = 200


class RecordStore(Part):
    """The audit's record: runs, their contents and their alerts, as one audit writes them."""

    # -- targets and runs -----------------------------------------------------------------

    async def ensure_target(self, name: str, url: str) -> int:
        """Create the target ``name`` or update its URL; returns its id."""
        with self._errors(f"cannot save target {name}"):
            async with self._write() as conn:
                ins = self._insert(targets).values(name=name, url=url, created_at=utcnow())
                stmt = ins.on_conflict_do_update(
                    index_elements=[targets.c.name], set_={"url": ins.excluded.url}
                ).returning(targets.c.id)
                return int((await conn.execute(stmt)).scalar_one())

    async def begin_run(self, target_id: int, started_at: datetime) -> int:
        """Record a run as ``running``; returns its id."""
        with self._errors(f"cannot start a run of target {target_id}"):
            async with self._write() as conn:
                stmt = (
                    insert(runs)
                    .values(target_id=target_id, started_at=started_at, status="running")
                    .returning(runs.c.id)
                )
                return int((await conn.execute(stmt)).scalar_one())

    async def start_run(self, name: str, url: str, started_at: datetime) -> RunStart:
        """:meth:`start_runs` for one target."""
        [start] = await self.start_runs([(name, url)], started_at)
        return start

    async def start_runs(
        self, named: Sequence[tuple[str, str]], started_at: datetime
    ) -> list[RunStart]:
        """Record a run of each ``(name, URL)`` as ``running``, in one transaction; the
        :class:`RunStart` of each, in the order given. Names must be distinct.

        Creates the targets not yet known and updates the URL of those whose URL changed
        (the target row is not written otherwise), and reads each target's alert states.
        The record's content hashes are not read here: a run whose answers have the stored
        digest does not need them (:meth:`current_hashes` reads them for one that does).
        A cycle over a fleet starts all its runs with a few statements, not a few per
        target.
        """
        if len({name for name, _ in named}) != len(named):
            raise StoreError("start_runs: a target is named twice")

        def work(conn: Connection) -> list[RunStart]:
            known = {
                r.name: r
                for names in batched([name for name, _ in named], BATCH)
                for r in conn.execute(_TARGETS_BY_NAME, {"names": names})
            }
            new = [(name, url) for name, url in named if name not in known]
            ids = {name: r.id for name, r in known.items()}
            if new:
                now = utcnow()
                rows = [{"name": name, "url": url, "created_at": now} for name, url in new]
                ids.update((r.name, int(r.id)) for r in conn.execute(_NEW_TARGETS, rows))
            moved = [
                {"b_target": known[name].id, "url": url}
                for name, url in named
                if name in known and known[name].url != url
            ]
            if moved:
                conn.execute(_SET_URL, moved)
            values = [
                {"target_id": ids[name], "started_at": started_at, "status": "running"}
                for name, _ in named
            ]
            # Matched by target (each named once): in whatever order the rows come back,
            # the database can insert them all with one statement.
            run_ids = {r.target_id: int(r.id) for r in conn.execute(_NEW_RUN, values)}
            states: dict[int, list[Row[Any]]] = {}
            for batch in batched(list(ids.values()), BATCH):
                for r in conn.execute(_ALERT_STATES_OF, {"ids": batch}):
                    states.setdefault(r.target_id, []).append(r)
            starts = []
            for name, _ in named:
                row = known.get(name)
                previous = row.last_complete_run_id if row is not None else None
                starts.append(
                    RunStart(
                        ids[name],
                        run_ids[ids[name]],
                        previous_run_id=previous,
                        digest=row.digest if row is not None and previous is not None else None,
                        alerts=_alert_states(states.get(ids[name], ())),
                    )
                )
            return starts

        if not named:
            return []
        what = named[0][0] if len(named) == 1 else f"{len(named)} targets"
        with self._errors(f"cannot start a run of {what}"):
            return await self._transact(work, write=True, short=len(named) <= SHORT_ROWS)

    async def mark_interrupted(self, target_id: int | None = None) -> int:
        """Mark runs left ``running`` (by a crash) as failed; returns how many.

        With replicas, call it with the ``target_id`` of a target this process holds the
        lease of: without one it would also end the runs other replicas are doing now.
        """
        stmt = update(runs).where(runs.c.status == "running")
        if target_id is not None:
            stmt = stmt.where(runs.c.target_id == target_id)
        stmt = stmt.values(status="failed", finished_at=utcnow(), error="interrupted")
        with self._errors("cannot mark interrupted runs"):
            async with self._write() as conn:
                return int((await conn.execute(stmt)).rowcount)

    async def recent_statuses(self, target_id: int, limit: int) -> list[str]:
        """Statuses of the target's last ``limit`` finished runs, newest first."""
        stmt = (
            select(runs.c.status)
            .where(runs.c.target_id == target_id, runs.c.status != "running")
            .order_by(runs.c.id.desc())
            .limit(limit)
        )
        with self._errors("cannot read runs"):
            async with self._read() as conn:
                return list((await conn.execute(stmt)).scalars())

    # -- contents -------------------------------------------------------------------------

    async def current_snapshot(self, target_id: int) -> tuple[int | None, Snapshot]:
        """The target's last complete run id (None before its baseline) and its items."""
        with self._errors("cannot read the current snapshot"):
            async with self._read() as conn:
                head = (
                    await conn.execute(
                        select(targets.c.name, targets.c.last_complete_run_id).where(
                            targets.c.id == target_id
                        )
                    )
                ).one_or_none()
                if head is None:
                    raise StoreError(f"database {self.url_for_display}: no target {target_id}")
                items = await read_items(conn, versions.c.last_run_id.is_(None), target_id)
        return head.last_complete_run_id, Snapshot.of(head.name, items)

    async def current_hashes(self, target_id: int) -> dict[tuple[str, str], str]:
        """The content hash of each current item of the target, by ``(collection, key)``."""
        with self._errors("cannot read the current record"):
            return await self._transact(partial(_current_hashes, target_id=target_id), write=False)

    async def current_items(self, target_id: int, keys: Collection[tuple[str, str]]) -> list[Item]:
        """The current items (with their bodies) of the target named by ``(collection, key)``;
        keys without a current item are left out."""
        if not keys:
            return []
        by_collection: dict[str, list[str]] = {}
        for collection, key in keys:
            by_collection.setdefault(collection, []).append(key)
        items: list[Item] = []
        with self._errors("cannot read the current items"):
            async with self._read() as conn:
                for collection, names in sorted(by_collection.items()):
                    for batch in batched(sorted(names), BATCH):
                        present = and_(
                            versions.c.last_run_id.is_(None),
                            versions.c.collection == collection,
                            versions.c.key.in_(batch),
                        )
                        items.extend(await read_items(conn, present, target_id))
        return items

    async def commit_run(self, outcome: RunOutcome) -> list[Alert]:
        """Write everything a finished run produced, in one transaction.

        Returns the recorded alert events (with their ids), in the order of
        ``outcome.events``.
        """
        if outcome.status == "running":
            raise StoreError(f"run {outcome.run_id}: cannot commit a run that is still running")
        rows = len(outcome.changes) + len(outcome.events) + len(outcome.alert_states)
        # Quiet runs recorded together are written by one call (auditor.store.batch).
        merge = (self._commit_quiet, outcome) if _quiet(outcome) else None
        with self._errors(f"cannot record run {outcome.run_id}"):
            return await self._transact(
                partial(self._commit, outcome),
                write=True,
                short=rows <= SHORT_ROWS,
                merge=merge,
            )

    def _commit(self, outcome: RunOutcome, conn: Connection) -> list[Alert]:
        if _quiet(outcome):
            return self._commit_quiet(conn, [outcome])[0]
        # The target row is read only when something needs it (its name for alerts and the
        # chain, its last complete run for versions): not on a quiet run.
        head = None
        if outcome.events or (outcome.status == "ok" and outcome.changes):
            head = conn.execute(_TARGET_HEAD, {"b_target": outcome.target_id}).one_or_none()
        if conn.execute(_FINISH_RUN, _finish_params(outcome)).rowcount != 1:
            raise self._missing_run(conn, outcome)
        name = head.name if head is not None else ""
        if outcome.status == "ok":
            if head is not None:
                record_contents(
                    conn,
                    outcome,
                    name,
                    head.last_complete_run_id,
                    database=self.url_for_display,
                )
            conn.execute(_SET_LAST_COMPLETE, _complete_params(outcome))
        return self._record_alerts(conn, outcome, name)

    def _commit_quiet(self, conn: Connection, outcomes: list[RunOutcome]) -> list[list[Alert]]:
        """Record quiet runs (see :func:`_quiet`): each writes its run row and, when complete,
        its target's last complete run; each statement runs once for all of them."""
        params = [_finish_params(o) for o in outcomes]
        if len(outcomes) > 1 and not conn.dialect.supports_sane_multi_rowcount:
            # The driver does not count the rows of an executemany (asyncpg): look first.
            pairs = [(o.run_id, o.target_id) for o in outcomes]
            if conn.execute(_RUNS_FOUND, {"pairs": pairs}).scalar_one() != len(outcomes):
                raise self._missing_runs()
            conn.execute(_FINISH_RUN, params)
        elif conn.execute(_FINISH_RUN, params).rowcount != len(outcomes):
            if len(outcomes) == 1:
                raise self._missing_run(conn, outcomes[0])
            raise self._missing_runs()
        complete = [_complete_params(o) for o in outcomes if o.status == "ok"]
        if complete:
            conn.execute(_SET_LAST_COMPLETE, complete)
        return [[] for _ in outcomes]

    def _missing_runs(self) -> StoreError:
        # Run again one by one (auditor.store.batch), each gets its own answer.
        return StoreError(f"database {self.url_for_display}: a run to record does not exist")

    def _missing_run(self, conn: Connection, outcome: RunOutcome) -> StoreError:
        head = conn.execute(_TARGET_HEAD, {"b_target": outcome.target_id}).one_or_none()
        if head is None:
            return StoreError(f"database {self.url_for_display}: no target {outcome.target_id}")
        return StoreError(f"run {outcome.run_id} of {head.name} does not exist")

    # -- alerts ---------------------------------------------------------------------------

    def _record_alerts(self, conn: Connection, outcome: RunOutcome, target: str) -> list[Alert]:
        recorded: list[Alert] = []
        if outcome.events:
            rows = [
                {
                    "fingerprint": e.fingerprint,
                    "kind": e.kind,
                    "severity": e.severity,
                    "status": e.status,
                    "target_id": outcome.target_id,
                    "collection": e.collection,
                    "key": e.key,
                    "run_id": outcome.run_id,
                    "at": e.at,
                    "message": e.message,
                    "fields": [f.as_json() for f in e.fields],
                }
                for e in outcome.events
            ]
            result = conn.execute(
                insert(alert_events).returning(alert_events.c.id, sort_by_parameter_order=True),
                rows,
            )
            ids = [int(i) for i in result.scalars()]
            recorded = [
                Alert(
                    id=event_id,
                    fingerprint=e.fingerprint,
                    kind=e.kind,
                    severity=e.severity,
                    status=e.status,
                    target=target,
                    collection=e.collection,
                    key=e.key,
                    run_id=outcome.run_id,
                    at=e.at,
                    message=e.message,
                    fields=e.fields,
                )
                for event_id, e in zip(ids, outcome.events, strict=True)
            ]
            # The run's clock, not this host's: the daemon's follows the database's.
            now = outcome.finished_at
            deliveries = [
                {
                    "event_id": event_id,
                    "sink": sink,
                    "attempts": 0,
                    "next_attempt_at": now,
                    "created_at": now,
                }
                for index, event_id in enumerate(ids)
                for sink in outcome.sinks_of(index)
            ]
            for batch in batched(deliveries, BATCH):
                conn.execute(insert(outbox), batch)
        if outcome.alert_states:
            states = [
                {
                    "fingerprint": s.fingerprint,
                    "target_id": outcome.target_id,
                    "kind": s.kind,
                    "collection": s.collection,
                    "key": s.key,
                    "status": s.status,
                    "severity": s.severity,
                    "first_seen": s.first_seen,
                    "last_seen": s.last_seen,
                    "last_notified": s.last_notified,
                    "resolved_at": s.resolved_at,
                    "message": s.message,
                }
                for s in outcome.alert_states
            ]
            ins = self._insert(alerts)
            upsert = ins.on_conflict_do_update(
                index_elements=[alerts.c.fingerprint],
                set_={
                    name: ins.excluded[name]
                    for name in states[0]
                    if name not in ("fingerprint", "target_id")
                },
            )
            conn.execute(upsert, states)
        return recorded

    async def alert_states(self, target_id: int) -> dict[str, AlertState]:
        """The lifecycle state of every alert fingerprint of the target."""
        with self._errors("cannot read alert states"):
            async with self._read() as conn:
                rows = (await conn.execute(_ALERT_STATES, {"target_id": target_id})).all()
        return _alert_states(rows)


def _quiet(outcome: RunOutcome) -> bool:
    """A run that changed nothing and has no alert to record writes only its run row and,
    when complete, its target's last complete run."""
    return not (outcome.changes or outcome.events or outcome.alert_states)


def _finish_params(outcome: RunOutcome) -> dict[str, Any]:
    return {
        "b_run": outcome.run_id,
        "b_target": outcome.target_id,
        "b_started": outcome.started_at,
        "status": outcome.status,
        "finished_at": outcome.finished_at,
        "pages": outcome.pages,
        "items": outcome.items,
        "reported_count": outcome.reported_count,
        "error": outcome.error,
        "suppressed": outcome.suppressed,
    }


def _complete_params(outcome: RunOutcome) -> dict[str, Any]:
    return {
        "b_target": outcome.target_id,
        "b_run": outcome.run_id,
        "b_digest": outcome.digest,
        "b_previous": outcome.previous_run_id,
    }


def _current_hashes(conn: Connection, target_id: int) -> dict[tuple[str, str], str]:
    return {(c, k): h for c, k, h in conn.execute(_CURRENT_HASHES, {"target_id": target_id})}


def _alert_states(rows: Sequence[Row[Any]]) -> dict[str, AlertState]:
    return {
        r.fingerprint: AlertState(
            fingerprint=r.fingerprint,
            kind=r.kind,
            collection=r.collection,
            key=r.key,
            status=cast(AlertStatus, r.status),
            severity=cast(Severity, r.severity),
            first_seen=r.first_seen,
            last_seen=r.last_seen,
            last_notified=r.last_notified,
            resolved_at=r.resolved_at,
            message=r.message,
        )
        for r in rows
    }


# Statements of every audit, built once: building one (and its cache key) per call cost more
# than running it on SQLite.
_TARGETS_BY_NAME = select(
    targets.c.id, targets.c.name, targets.c.url, targets.c.last_complete_run_id, targets.c.digest
).where(targets.c.name.in_(bindparam("names", expanding=True)))
_SET_URL = update(targets).where(targets.c.id == bindparam("b_target"))
# Without sort_by_parameter_order: SQLite would then insert the rows one by one.
_NEW_RUN = insert(runs).returning(runs.c.id, runs.c.target_id)
_NEW_TARGETS = insert(targets).returning(targets.c.id, targets.c.name)
_CURRENT_HASHES = select(versions.c.collection, versions.c.key, versions.c.hash).where(
    versions.c.target_id == bindparam("target_id"), versions.c.last_run_id.is_(None)
)
_ALERT_STATES = select(alerts).where(alerts.c.target_id == bindparam("target_id"))
_ALERT_STATES_OF = select(alerts).where(alerts.c.target_id.in_(bindparam("ids", expanding=True)))
_RUNS_FOUND = (
    select(func.count())
    .select_from(runs)
    .where(tuple_(runs.c.id, runs.c.target_id).in_(bindparam("pairs", expanding=True)))
)
_TARGET_HEAD = select(targets.c.name, targets.c.last_complete_run_id).where(
    targets.c.id == bindparam("b_target")
)
# The other SET clauses come from the parameters' column names. started_at becomes the time
# the audit began, when known (RunOutcome.started_at).
_FINISH_RUN = (
    update(runs)
    .where(runs.c.id == bindparam("b_run"), runs.c.target_id == bindparam("b_target"))
    .values(
        started_at=func.coalesce(
            bindparam("b_started", type_=runs.c.started_at.type), runs.c.started_at
        )
    )
)
# The digest is kept only when the run compared with the last complete run as it still is:
# had another run completed meanwhile, the record might not hold what this run's answers
# said. SET expressions read the row as it was before the update.
_SET_LAST_COMPLETE = (
    update(targets)
    .where(targets.c.id == bindparam("b_target"))
    .values(
        last_complete_run_id=bindparam("b_run"),
        digest=case(
            (
                targets.c.last_complete_run_id.is_not_distinct_from(
                    bindparam("b_previous", type_=targets.c.last_complete_run_id.type)
                ),
                bindparam("b_digest", type_=targets.c.digest.type),
            ),
            else_=null(),
        ),
    )
)
