"""The repository: every read and write of the audit record goes through :class:`Store`.

Cost grows with changes, not with runs. Item contents live in ``versions``, one row per
stretch of runs in which an item kept one content: ``first_run_id`` is the complete run
where it appeared, ``last_run_id`` stays NULL while it is current and becomes the last
complete run that still had it once it is changed or removed. An item is therefore present
at complete run ``R`` when ``first_run_id <= R`` and ``last_run_id`` is NULL or ``>= R``
(run ids only grow). A run that changes nothing writes its ``runs`` row and nothing per item.

Each change is also a link of one global hash chain (``changes`` ordered by id, the head in
the one-row ``chain`` table): appending locks the head row, so concurrent writers, replicas
included, extend one line and never fork it. A change's id is its 1-based position in the
chain, assigned under that lock.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable, Collection, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime, timedelta
from functools import partial
from itertools import islice
from types import TracebackType
from typing import Any, Self, TypeVar, cast

from sqlalchemy import (
    ColumnElement,
    Row,
    Select,
    and_,
    bindparam,
    case,
    func,
    insert,
    null,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from auditor.errors import StoreError
from auditor.model import (
    Alert,
    AlertStatus,
    Change,
    ChangeKind,
    FieldChange,
    Item,
    Run,
    RunStatus,
    Severity,
    Snapshot,
    content_hash,
    utcnow,
)
from auditor.store.batch import Merged, MergedGroups, TransactionWorker
from auditor.store.engine import (
    SCHEMA_HEAD,
    WRITE_OPTION,
    create_engine,
    create_thread_engine,
    current_revisions,
    display_url,
    driver_url,
    head_revisions,
    pool_size_for,
    translate_errors,
    upgrade_blocking,
)
from auditor.store.records import (
    AlertState,
    ChangeRecord,
    ClaimedTarget,
    Delivery,
    FleetHealth,
    RunOutcome,
    RunStart,
    TargetRow,
    VerifyResult,
    change_hash,
)
from auditor.store.schema import (
    GENESIS_HASH,
    UTCDateTime,
    alert_events,
    alerts,
    chain,
    changes,
    outbox,
    runs,
    targets,
    versions,
)

T = TypeVar("T")

BATCH = 1000
# The error of a run whose process stopped before recording it (crash, kill, shutdown).
INTERRUPTED = "interrupted: the process auditing the target stopped before the run was recorded"
VERIFY_BATCH = 1000
# A transaction writing up to this many rows runs on the event loop on SQLite (_transact):
# a fraction of a millisecond per row at most.
SHORT_ROWS = 200


def _plain(value: Mapping[str, Any] | None) -> dict[str, Any] | None:
    # The canonical JSON of a value survives the trip through the database unchanged (a
    # tuple comes back a list, and both encode alike), so the hash made here is the hash
    # verify() recomputes from what it reads.
    return None if value is None else dict(value)


def _batched(values: Sequence[Any], size: int) -> Iterator[list[Any]]:
    """``values`` in lists of at most ``size`` (itertools.batched is Python 3.12+)."""
    iterator = iter(values)
    while chunk := list(islice(iterator, size)):
        yield chunk


def _fields(raw: Any) -> tuple[FieldChange, ...]:
    return tuple(FieldChange(f["field"], f.get("old"), f.get("new")) for f in raw or ())


def _stamped_revisions(connection: Connection) -> set[str]:
    if not sa_inspect(connection).has_table("alembic_version"):
        return set()
    rows = connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalars()
    return set(rows)


class Store:
    """The audit record in one SQLite file or one PostgreSQL database.

    Open with ``await Store.open(url)``; ``close()`` is idempotent and the store refuses
    work afterwards. Every method raises :class:`~auditor.errors.StoreError` (one line, the
    URL without its password) for anything the database or its driver refused.
    """

    def __init__(self, engine: AsyncEngine, *, url: str) -> None:
        self._engine = engine
        self._write_engine = engine.execution_options(**{WRITE_OPTION: True})
        self._url = url
        self._secret = driver_url(url).password
        self._closed = False
        self.url_for_display: str = display_url(url)
        self.dialect: str = engine.dialect.name
        # SQLite: the transactions of an audit run in one thread, grouped (see _transact).
        self._worker: TransactionWorker | None = None
        # PostgreSQL: quiet runs recorded together (auditor.store.batch).
        self._groups = MergedGroups(self._write_engine.begin)
        self._thread_engine: Engine | None = None
        if self.dialect == "sqlite":
            self._thread_engine = create_thread_engine(driver_url(url))
            self._worker = TransactionWorker(self._thread_engine, write_option=WRITE_OPTION)

    @classmethod
    async def open(cls, url: str, *, concurrency: int = 1) -> Store:
        """Connect to ``url`` (``sqlite:///path`` or ``postgresql://...``) and check it answers.

        ``concurrency``: how many audits will use the store at once (``audit.max_concurrent``),
        which sizes the PostgreSQL connection pool (:func:`pool_size_for`).
        """
        engine = create_engine(driver_url(url), pool_size=pool_size_for(concurrency))
        store = cls(engine, url=url)
        try:
            with store._errors("cannot connect"):
                async with engine.connect() as conn:
                    await conn.exec_driver_sql("SELECT 1")
        except StoreError:
            await engine.dispose()
            raise
        return store

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._groups.close()
        await self._engine.dispose()
        if self._worker is not None and self._thread_engine is not None:
            self._worker.close()
            self._thread_engine.dispose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- plumbing -------------------------------------------------------------------------

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        with translate_errors(action, self.url_for_display, self._secret):
            yield

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"database {self.url_for_display}: the store is closed")

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        self._check_open()
        async with self._engine.connect() as conn:
            yield conn

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        self._check_open()
        async with self._write_engine.begin() as conn:
            yield conn

    async def _transact(
        self,
        work: Callable[[Connection], T],
        *,
        write: bool,
        short: bool = False,
        merge: tuple[Merged, Any] | None = None,
    ) -> T:
        """Run ``work`` as one transaction (on a synchronous connection).

        On SQLite the work runs with the stdlib driver, grouped with the works queued
        meanwhile into one database transaction (:mod:`auditor.store.batch`): on the event
        loop when it is ``short`` (a few rows: less than a hand-over to a thread costs),
        otherwise in the store's one worker thread, where aiosqlite would make three or four
        hand-overs of the GIL per statement, each stalling the loop. On PostgreSQL it runs on
        the loop (asyncpg). ``merge``: see :meth:`TransactionWorker.run`.
        """
        self._check_open()
        if self._worker is not None:
            return await self._worker.run(work, write=write, inline=short, merge=merge)
        if merge is not None:
            return await self._groups.run(work, merge)
        async with (self._write_engine if write else self._engine).begin() as conn:
            return await conn.run_sync(work)

    def _insert(self, table: Any) -> postgresql.Insert | sqlite.Insert:
        # The two dialects spell "insert or update" the same way, from different modules.
        if self.dialect == "postgresql":
            return postgresql.insert(table)
        return sqlite.insert(table)

    # -- schema ---------------------------------------------------------------------------

    async def upgrade(self) -> str:
        """Migrate to the newest schema; returns the revision now current."""
        self._check_open()
        with self._errors("migration failed"):
            return await asyncio.to_thread(upgrade_blocking, driver_url(self._url))

    async def ensure_schema(self) -> str:
        """Migrate only when the schema is not at :data:`SCHEMA_HEAD`; returns the revision.

        The check is one query; the migration (and the import of Alembic) happens only when
        the database is new or older than this program.
        """
        self._check_open()
        with self._errors("cannot read the schema revision"):
            async with self._read() as conn:
                current = await conn.run_sync(_stamped_revisions)
        if current == {SCHEMA_HEAD}:
            return SCHEMA_HEAD
        return await self.upgrade()

    async def at_head(self) -> bool:
        with self._errors("cannot read the schema revision"):
            async with self._read() as conn:
                current = await conn.run_sync(current_revisions)
            return current == head_revisions()

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

    async def targets(self) -> list[TargetRow]:
        with self._errors("cannot read targets"):
            async with self._read() as conn:
                rows = (await conn.execute(select(targets).order_by(targets.c.name))).all()
        return [
            TargetRow(
                id=r.id,
                name=r.name,
                url=r.url,
                next_run_at=r.next_run_at,
                lease_owner=r.lease_owner,
                lease_until=r.lease_until,
                last_complete_run_id=r.last_complete_run_id,
                created_at=r.created_at,
                active=r.active,
            )
            for r in rows
        ]

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
                for names in _batched([name for name, _ in named], BATCH)
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
            for batch in _batched(list(ids.values()), BATCH):
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

    async def run(self, run_id: int) -> Run | None:
        stmt = (
            select(runs, targets.c.name.label("target"))
            .join(targets, targets.c.id == runs.c.target_id)
            .where(runs.c.id == run_id)
        )
        with self._errors(f"cannot read run {run_id}"):
            async with self._read() as conn:
                row = (await conn.execute(stmt)).one_or_none()
        return None if row is None else _run(row)

    async def runs(
        self,
        target: str | None = None,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = 100,
        after_id: int | None = None,
        before_id: int | None = None,
        newest_first: bool = False,
    ) -> list[Run]:
        """Runs in id order (``newest_first`` reverses it); ``since`` <= started_at < ``until``."""
        stmt = select(runs, targets.c.name.label("target")).join(
            targets, targets.c.id == runs.c.target_id
        )
        stmt = _window(
            stmt,
            runs.c.id,
            runs.c.started_at,
            target=target,
            since=since,
            until=until,
            limit=limit,
            after_id=after_id,
            before_id=before_id,
            newest_first=newest_first,
        )
        with self._errors("cannot read runs"):
            async with self._read() as conn:
                rows = (await conn.execute(stmt)).all()
        return [_run(r) for r in rows]

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
                items = await _items(conn, versions.c.last_run_id.is_(None), target_id)
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
                    for batch in _batched(sorted(names), BATCH):
                        present = and_(
                            versions.c.last_run_id.is_(None),
                            versions.c.collection == collection,
                            versions.c.key.in_(batch),
                        )
                        items.extend(await _items(conn, present, target_id))
        return items

    async def snapshot_at(self, run_id: int) -> Snapshot:
        """The items present at complete run ``run_id``; StoreError for any other run."""
        with self._errors(f"cannot read the snapshot of run {run_id}"):
            async with self._read() as conn:
                row = (
                    await conn.execute(
                        select(runs.c.target_id, runs.c.status, targets.c.name)
                        .join(targets, targets.c.id == runs.c.target_id)
                        .where(runs.c.id == run_id)
                    )
                ).one_or_none()
                if row is None:
                    raise StoreError(f"database {self.url_for_display}: no run {run_id}")
                if row.status != "ok":
                    raise StoreError(
                        f"run {run_id} of {row.name} is {row.status}, not complete: "
                        "it has no snapshot"
                    )
                present = and_(
                    versions.c.first_run_id <= run_id,
                    or_(versions.c.last_run_id.is_(None), versions.c.last_run_id >= run_id),
                )
                items = await _items(conn, present, row.target_id)
        return Snapshot.of(row.name, items)

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
                self._record_contents(conn, outcome, name, head.last_complete_run_id)
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

    def _record_contents(
        self, conn: Connection, outcome: RunOutcome, target: str, previous: int | None
    ) -> None:
        if not outcome.changes:
            return
        closing: list[dict[str, Any]] = []
        opening: list[dict[str, Any]] = []
        for change in outcome.changes:
            if change.kind in ("changed", "removed"):
                if previous is None:
                    raise StoreError(
                        f"run {outcome.run_id} of {target}: a {change.kind} change needs a "
                        "previous complete run"
                    )
                closing.append(
                    {
                        "b_target": outcome.target_id,
                        "b_collection": change.collection,
                        "b_key": change.key,
                        "b_last": previous,
                    }
                )
            if change.kind in ("changed", "added"):
                if change.after is None:
                    raise StoreError(
                        f"run {outcome.run_id} of {target}: the {change.kind} change of "
                        f"{change.collection}/{change.key} has no content"
                    )
                body = dict(change.after)
                opening.append(
                    {
                        "target_id": outcome.target_id,
                        "collection": change.collection,
                        "key": change.key,
                        "hash": content_hash(body),
                        "body": body,
                        "first_run_id": outcome.run_id,
                        "last_run_id": None,
                    }
                )
        close = (
            update(versions)
            .where(
                versions.c.target_id == bindparam("b_target"),
                versions.c.collection == bindparam("b_collection"),
                versions.c.key == bindparam("b_key"),
                versions.c.last_run_id.is_(None),
            )
            .values(last_run_id=bindparam("b_last"))
        )
        for batch in _batched(closing, BATCH):
            conn.execute(close, batch)
        for batch in _batched(opening, BATCH):
            conn.execute(insert(versions), batch)
        self._append_to_chain(conn, outcome, target, outcome.changes)

    def _append_to_chain(
        self, conn: Connection, outcome: RunOutcome, target: str, items: Sequence[Change]
    ) -> None:
        # The row lock (PostgreSQL) or the write lock taken at BEGIN (SQLite) makes this
        # read-modify-write of the head atomic across processes.
        head = (
            conn.execute(
                select(chain.c.head, chain.c.length).where(chain.c.id == 1).with_for_update()
            )
        ).one_or_none()
        if head is None:
            raise StoreError(
                f"database {self.url_for_display}: the history chain has no head row "
                "(run 'db upgrade')"
            )
        prev: str = head.head
        length: int = head.length
        rows: list[dict[str, Any]] = []
        for change in items:
            length += 1
            before, after = _plain(change.before), _plain(change.after)
            fields = [f.as_json() for f in change.fields]
            digest = change_hash(
                prev,
                id=length,
                run_id=outcome.run_id,
                target=target,
                collection=change.collection,
                key=change.key,
                kind=change.kind,
                before=before,
                after=after,
                fields=fields,
                at=outcome.finished_at,
            )
            rows.append(
                {
                    "id": length,
                    "run_id": outcome.run_id,
                    "target_id": outcome.target_id,
                    "collection": change.collection,
                    "key": change.key,
                    "kind": change.kind,
                    "before": before,
                    "after": after,
                    "fields": fields,
                    "at": outcome.finished_at,
                    "prev_hash": prev,
                    "hash": digest,
                }
            )
            prev = digest
        for batch in _batched(rows, BATCH):
            conn.execute(insert(changes), batch)
        conn.execute(update(chain).where(chain.c.id == 1).values(head=prev, length=length))

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
            now = utcnow()
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
            for batch in _batched(deliveries, BATCH):
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

    async def alert_events(
        self,
        target: str | None = None,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = 100,
        after_id: int | None = None,
        before_id: int | None = None,
        newest_first: bool = False,
    ) -> list[Alert]:
        """Alert events in id order (``newest_first`` reverses it); ``since`` <= at < ``until``."""
        stmt = select(alert_events, targets.c.name.label("target")).join(
            targets, targets.c.id == alert_events.c.target_id
        )
        stmt = _window(
            stmt,
            alert_events.c.id,
            alert_events.c.at,
            target=target,
            since=since,
            until=until,
            limit=limit,
            after_id=after_id,
            before_id=before_id,
            newest_first=newest_first,
        )
        with self._errors("cannot read alerts"):
            async with self._read() as conn:
                rows = (await conn.execute(stmt)).all()
        return [
            Alert(
                id=r.id,
                fingerprint=r.fingerprint,
                kind=r.kind,
                severity=cast(Severity, r.severity),
                status=cast(AlertStatus, r.status),
                target=r.target,
                collection=r.collection,
                key=r.key,
                run_id=r.run_id,
                at=r.at,
                message=r.message,
                fields=_fields(r.fields),
            )
            for r in rows
        ]

    # -- history --------------------------------------------------------------------------

    async def changes(
        self,
        target: str | None = None,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = 100,
        after_id: int | None = None,
        before_id: int | None = None,
        newest_first: bool = False,
        run_id: int | None = None,
    ) -> list[ChangeRecord]:
        """Recorded changes in chain order (``newest_first`` reverses it)."""
        stmt = select(changes, targets.c.name.label("target")).join(
            targets, targets.c.id == changes.c.target_id
        )
        if run_id is not None:
            stmt = stmt.where(changes.c.run_id == run_id)
        stmt = _window(
            stmt,
            changes.c.id,
            changes.c.at,
            target=target,
            since=since,
            until=until,
            limit=limit,
            after_id=after_id,
            before_id=before_id,
            newest_first=newest_first,
        )
        with self._errors("cannot read the history"):
            async with self._read() as conn:
                rows = (await conn.execute(stmt)).all()
        return [
            ChangeRecord(
                id=r.id,
                run_id=r.run_id,
                target=r.target,
                collection=r.collection,
                key=r.key,
                kind=cast(ChangeKind, r.kind),
                before=r.before,
                after=r.after,
                fields=_fields(r.fields),
                at=r.at,
                hash=r.hash,
                prev_hash=r.prev_hash,
            )
            for r in rows
        ]

    async def chain_head(self) -> tuple[str, int]:
        """The hash of the newest change (64 zeros when there is none) and the chain length."""
        with self._errors("cannot read the chain head"):
            async with self._read() as conn:
                row = (
                    await conn.execute(select(chain.c.head, chain.c.length).where(chain.c.id == 1))
                ).one_or_none()
        if row is None:
            raise StoreError(f"database {self.url_for_display}: the history chain has no head row")
        return row.head, row.length

    async def verify(self, *, batch: int = VERIFY_BATCH) -> VerifyResult:
        """Walk the whole chain (``batch`` records at a time) and recompute every link."""
        with self._errors("cannot verify the history"):
            self._check_open()
            async with self._engine.connect() as conn:
                if self.dialect == "postgresql":
                    # One snapshot for the whole walk, so that appends made meanwhile by
                    # other writers cannot look like records missing from the head.
                    await conn.execution_options(isolation_level="REPEATABLE READ")
                return await _walk(conn, batch)

    # -- fleet health (for /metrics) ------------------------------------------------------
    # Kept apart at the end of the class: read-only, used by the daemon's gauges.

    async def fleet_health(
        self, disconnected_after: int, *, names: Collection[str] | None = None
    ) -> FleetHealth:
        """Targets, the age of the oldest last-complete run, and how many are disconnected.

        ``names`` limits the figures to those targets (the configured ones: targets that
        left the configuration keep their record but should not age the gauge forever).
        One query, whatever the size of the fleet: per target it reads its last complete
        run by primary key and at most ``disconnected_after`` of the runs after it.
        """
        if disconnected_after < 1:
            raise ValueError("disconnected_after must be at least 1")
        last = runs.alias("last_complete")
        tail = runs.alias("tail")
        # The runs after the last complete one can only have failed (or be running), so
        # the target is disconnected exactly when the n-th finished one of them exists.
        nth_failure = (
            select(tail.c.id)
            .where(
                tail.c.target_id == targets.c.id,
                tail.c.id > func.coalesce(targets.c.last_complete_run_id, 0),
                tail.c.status != "running",
            )
            .order_by(tail.c.id)
            .limit(1)
            .offset(disconnected_after - 1)
            .correlate(targets)
            .scalar_subquery()
        )
        per_target = select(
            func.coalesce(last.c.finished_at, targets.c.created_at).label("complete_at"),
            nth_failure.label("nth_failure"),
        ).select_from(targets.outerjoin(last, last.c.id == targets.c.last_complete_run_id))
        if names is not None:
            per_target = per_target.where(targets.c.name.in_(list(names)))
        fleet = per_target.subquery()
        stmt = select(
            func.count(),
            func.min(fleet.c.complete_at),
            func.count(fleet.c.nth_failure),
        ).select_from(fleet)
        with self._errors("cannot read the fleet's health"):
            async with self._read() as conn:
                count, oldest, disconnected = (await conn.execute(stmt)).one()
        age: float | None = None
        if count:
            age = max(0.0, (utcnow() - oldest).total_seconds())
        return FleetHealth(
            targets=int(count), oldest_complete_age_s=age, disconnected=int(disconnected)
        )

    # -- scheduling and leases ------------------------------------------------------------
    # The daemon's schedule lives in the targets table: ``next_run_at`` per target, and a
    # lease (``lease_owner``, ``lease_until``) that lets one process of several audit a
    # target while the others skip it. A lease is only ever taken by claim_due, in the same
    # transaction as the query that found the target due, so two processes never both hold
    # one; it is given back by finish_claim (with the next time) or release_leases.

    async def sync_targets(
        self,
        configured: Sequence[tuple[str, str]],
        first_run_at: Callable[[str], datetime],
    ) -> None:
        """Make the scheduled targets those of the configuration: ``(name, url)`` pairs.

        A new target is created active and due at ``first_run_at(name)``; a known one gets
        its URL, and a time from ``first_run_at`` when it has none (it was only audited by
        ``once``) or was inactive. A target missing from ``configured`` becomes inactive: it
        keeps its record, and is no longer claimed.
        """
        wanted = dict(configured)
        with self._errors("cannot synchronise the targets with the configuration"):
            async with self._write() as conn:
                known = {
                    r.name: r
                    for r in await conn.execute(
                        select(targets.c.id, targets.c.name, targets.c.url, targets.c.active)
                    )
                }
                now = utcnow()
                new = [
                    {
                        "name": name,
                        "url": url,
                        "created_at": now,
                        "active": True,
                        "next_run_at": first_run_at(name),
                    }
                    for name, url in wanted.items()
                    if name not in known
                ]
                for batch in _batched(new, BATCH):
                    # Another replica may be adding the same targets at this moment.
                    ins = self._insert(targets).on_conflict_do_nothing(
                        index_elements=[targets.c.name]
                    )
                    await conn.execute(ins, batch)
                # Decided on the row as it is when updated, not as read above: a replica may
                # have moved next_run_at since, and writing back the old value would make
                # the target due twice.
                placed = or_(targets.c.next_run_at.is_(None), ~targets.c.active)
                refresh = (
                    update(targets)
                    .where(targets.c.id == bindparam("b_id"))
                    .values(
                        url=bindparam("b_url"),
                        active=True,
                        next_run_at=case(
                            (placed, bindparam("b_next", type_=UTCDateTime())),
                            else_=targets.c.next_run_at,
                        ),
                    )
                )
                rows = [
                    {"b_id": row.id, "b_url": url, "b_next": first_run_at(name)}
                    for name, url in wanted.items()
                    if (row := known.get(name)) is not None
                ]
                for batch in _batched(rows, BATCH):
                    await conn.execute(refresh, batch)
                gone = [row.id for name, row in known.items() if name not in wanted and row.active]
                for batch in _batched(gone, BATCH):
                    await conn.execute(
                        update(targets).where(targets.c.id.in_(batch)).values(active=False)
                    )

    async def claim_due(
        self, owner: str, now: datetime, limit: int, lease_for: timedelta
    ) -> list[ClaimedTarget]:
        """Lease up to ``limit`` active targets due at ``now`` to ``owner``, soonest first.

        A target under another live lease is skipped. On PostgreSQL the rows are taken with
        ``FOR UPDATE SKIP LOCKED``, so replicas claiming at the same moment split the due
        targets between them; on SQLite the write lock taken at BEGIN serialises claims.
        Runs of a claimed target still ``running`` were left by a holder that died (its
        lease expired): they are marked failed here, while the claim holds the target.
        """
        if limit < 1:
            return []
        until = now + lease_for
        due = (
            select(targets.c.id, targets.c.name, targets.c.url, targets.c.next_run_at)
            .where(
                targets.c.active,
                targets.c.next_run_at <= now,
                or_(targets.c.lease_until.is_(None), targets.c.lease_until < now),
            )
            .order_by(targets.c.next_run_at, targets.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        with self._errors("cannot claim due targets"):
            async with self._write() as conn:
                rows = (await conn.execute(due)).all()
                if not rows:
                    return []
                ids = [r.id for r in rows]
                await conn.execute(
                    update(targets)
                    .where(targets.c.id.in_(ids))
                    .values(lease_owner=owner, lease_until=until)
                )
                ended = await conn.execute(
                    update(runs)
                    .where(runs.c.status == "running", runs.c.target_id.in_(ids))
                    .values(status="failed", finished_at=now, error=INTERRUPTED)
                    .returning(runs.c.target_id)
                )
                interrupted = Counter(int(i) for i in ended.scalars())
        return [
            ClaimedTarget(
                id=r.id,
                name=r.name,
                url=r.url,
                due=r.next_run_at,
                lease_until=until,
                interrupted_runs=interrupted[r.id],
            )
            for r in rows
        ]

    async def finish_claim(self, target_id: int, owner: str, next_run_at: datetime) -> bool:
        """Give the lease back and set the target's next time, if the lease is still ours.

        False when it is not (it expired and another process claimed the target): then
        nothing changes, the schedule being that process's now.
        """
        stmt = (
            update(targets)
            .where(targets.c.id == target_id, targets.c.lease_owner == owner)
            .values(lease_owner=None, lease_until=None, next_run_at=next_run_at)
        )
        with self._errors(f"cannot finish the claim of target {target_id}"):
            async with self._write() as conn:
                return (await conn.execute(stmt)).rowcount == 1

    async def renew_leases(
        self, owner: str, target_ids: Collection[int], until: datetime
    ) -> set[int]:
        """Extend ``owner``'s leases of ``target_ids`` to ``until``; returns the ids still held."""
        if not target_ids:
            return set()
        stmt = (
            update(targets)
            .where(targets.c.id.in_(list(target_ids)), targets.c.lease_owner == owner)
            .values(lease_until=until)
            .returning(targets.c.id)
        )
        with self._errors("cannot renew leases"):
            async with self._write() as conn:
                return {int(i) for i in (await conn.execute(stmt)).scalars()}

    async def release_leases(self, owner: str) -> int:
        """Give back every lease of ``owner``, keeping ``next_run_at`` (so those targets are
        due again at once); returns how many. Runs of those targets still ``running`` are
        marked failed: call this only when ``owner`` audits nothing any more (shut down, or
        known dead)."""
        held = select(targets.c.id).where(targets.c.lease_owner == owner).scalar_subquery()
        with self._errors("cannot release leases"):
            async with self._write() as conn:
                await conn.execute(
                    update(runs)
                    .where(runs.c.status == "running", runs.c.target_id.in_(held))
                    .values(status="failed", finished_at=utcnow(), error=INTERRUPTED)
                )
                released = await conn.execute(
                    update(targets)
                    .where(targets.c.lease_owner == owner)
                    .values(lease_owner=None, lease_until=None)
                )
                return int(released.rowcount)

    async def lease_owners(self) -> list[str]:
        """The owners holding leases now (expired ones included)."""
        stmt = select(targets.c.lease_owner).where(targets.c.lease_owner.is_not(None)).distinct()
        with self._errors("cannot read leases"):
            async with self._read() as conn:
                return sorted(str(o) for o in (await conn.execute(stmt)).scalars())

    async def interrupt_orphaned_runs(self, now: datetime) -> int:
        """Mark failed the runs left ``running`` on targets nobody holds a live lease of.

        Safe with replicas: a replica auditing a target holds (and renews) its lease, so
        only runs of holders that died, or of a ``once`` that is running now, match; the
        latter records its run anyway when it finishes.
        """
        live = select(targets.c.id).where(targets.c.lease_until >= now).scalar_subquery()
        stmt = (
            update(runs)
            .where(runs.c.status == "running", runs.c.target_id.not_in(live))
            .values(status="failed", finished_at=now, error=INTERRUPTED)
        )
        with self._errors("cannot mark interrupted runs"):
            async with self._write() as conn:
                return int((await conn.execute(stmt)).rowcount)

    async def next_due(self) -> datetime | None:
        """The soonest ``next_run_at`` of the active targets (None without any)."""
        stmt = select(func.min(targets.c.next_run_at)).where(targets.c.active)
        with self._errors("cannot read the schedule"):
            async with self._read() as conn:
                value: datetime | None = (await conn.execute(stmt)).scalar_one()
        return value

    # -- alert delivery (the outbox) --------------------------------------------------------
    #
    # Order is kept per sink: only the oldest undelivered live row of a sink (its head) can
    # be claimed, so a row waiting for its retry holds back the rows behind it; a dead row
    # holds back nothing. A claim is a lease (owner, until): replicas never work on one row
    # at once, and a crashed deliverer's rows come back when its lease runs out. PostgreSQL
    # claimers skip the rows another claimer has locked (SKIP LOCKED); SQLite has one writer.

    async def claim_outbox(
        self,
        owner: str,
        now: datetime,
        *,
        limit: int,
        lease_for: timedelta,
        sinks: Collection[str] | None = None,
    ) -> list[Delivery]:
        """Lease up to ``limit`` due deliveries, at most one per sink (each sink's head).

        ``sinks`` restricts the claim to those sink names (the ones this process can send to).
        """
        if sinks is not None and not sinks:
            return []
        earlier = outbox.alias("earlier")
        blocked = (
            select(earlier.c.id)
            .where(
                earlier.c.sink == outbox.c.sink,
                earlier.c.id < outbox.c.id,
                earlier.c.delivered_at.is_(None),
                earlier.c.dead.is_(False),
            )
            .exists()
        )
        heads = (
            select(outbox.c.id)
            .where(
                outbox.c.delivered_at.is_(None),
                outbox.c.dead.is_(False),
                outbox.c.next_attempt_at <= now,
                or_(outbox.c.lease_until.is_(None), outbox.c.lease_until <= now),
                ~blocked,
            )
            .order_by(outbox.c.id)
            .limit(limit)
        )
        if sinks is not None:
            heads = heads.where(outbox.c.sink.in_(sorted(sinks)))
        if self.dialect == "postgresql":
            heads = heads.with_for_update(skip_locked=True, of=outbox)
        with self._errors("cannot claim alert deliveries"):
            async with self._write() as conn:
                ids = list((await conn.execute(heads)).scalars())
                if not ids:
                    return []
                await conn.execute(
                    update(outbox)
                    .where(outbox.c.id.in_(ids))
                    .values(lease_owner=owner, lease_until=now + lease_for)
                )
                stmt = _deliveries().where(outbox.c.id.in_(ids)).order_by(outbox.c.id)
                rows = (await conn.execute(stmt)).all()
        return [_delivery(r) for r in rows]

    async def _settle(
        self, delivery_id: int, owner: str | None, action: str, **values: Any
    ) -> bool:
        stmt = update(outbox).where(outbox.c.id == delivery_id, outbox.c.delivered_at.is_(None))
        if owner is not None:
            # A deliverer whose lease ran out (and was taken over) must not undo the new
            # holder's work; a delivery that did happen is recorded whoever holds the row.
            stmt = stmt.where(outbox.c.lease_owner == owner)
        stmt = stmt.values(lease_owner=None, lease_until=None, **values)
        with self._errors(f"cannot record {action} of delivery {delivery_id}"):
            async with self._write() as conn:
                return bool((await conn.execute(stmt)).rowcount)

    async def mark_delivered(self, delivery_id: int, at: datetime | None = None) -> bool:
        """Record a delivery as done; False when it was already settled."""
        return await self._settle(
            delivery_id,
            None,
            "the success",
            delivered_at=at or utcnow(),
            attempts=outbox.c.attempts + 1,
        )

    async def mark_failed(
        self, delivery_id: int, error: str, next_attempt_at: datetime, *, owner: str | None = None
    ) -> bool:
        """Record a failed attempt; the row is due again at ``next_attempt_at``."""
        return await self._settle(
            delivery_id,
            owner,
            "the failure",
            attempts=outbox.c.attempts + 1,
            last_error=error,
            next_attempt_at=next_attempt_at,
        )

    async def mark_dead(self, delivery_id: int, error: str, *, owner: str | None = None) -> bool:
        """Give a delivery up for good (the sink refused it); it stays listed as dead."""
        return await self._settle(
            delivery_id,
            owner,
            "the refusal",
            attempts=outbox.c.attempts + 1,
            last_error=error,
            dead=True,
        )

    async def kill_sink(self, sink: str, error: str) -> int:
        """Mark every pending delivery of ``sink`` dead (its endpoint is gone); how many."""
        stmt = (
            update(outbox)
            .where(
                outbox.c.sink == sink,
                outbox.c.delivered_at.is_(None),
                outbox.c.dead.is_(False),
            )
            .values(dead=True, last_error=error, lease_owner=None, lease_until=None)
        )
        with self._errors(f"cannot disable sink {sink}"):
            async with self._write() as conn:
                return int((await conn.execute(stmt)).rowcount)

    async def release_deliveries(self, owner: str | None = None) -> int:
        """Give up the leases ``owner`` holds (on shutdown), without counting an attempt.

        Without an owner, every lease: for a process that knows it is the only deliverer
        (SQLite, behind its file lock) and restarts after a crash.
        """
        stmt = update(outbox).where(
            outbox.c.lease_owner.is_not(None), outbox.c.delivered_at.is_(None)
        )
        if owner is not None:
            stmt = stmt.where(outbox.c.lease_owner == owner)
        stmt = stmt.values(lease_owner=None, lease_until=None)
        with self._errors("cannot release alert deliveries"):
            async with self._write() as conn:
                return int((await conn.execute(stmt)).rowcount)

    async def undelivered(
        self, sink: str | None = None, *, dead_only: bool = False, limit: int | None = None
    ) -> list[Delivery]:
        """Deliveries not done, pending and dead (only dead with ``dead_only``), oldest first."""
        stmt = _deliveries().where(outbox.c.delivered_at.is_(None))
        if dead_only:
            stmt = stmt.where(outbox.c.dead.is_(True))
        if sink is not None:
            stmt = stmt.where(outbox.c.sink == sink)
        stmt = stmt.order_by(outbox.c.id).limit(limit)
        with self._errors("cannot read undelivered alerts"):
            async with self._read() as conn:
                rows = (await conn.execute(stmt)).all()
        return [_delivery(r) for r in rows]

    async def outbox_counts(self) -> tuple[int, int]:
        """How many deliveries are pending and how many are dead."""
        stmt = (
            select(outbox.c.dead, func.count())
            .where(outbox.c.delivered_at.is_(None))
            .group_by(outbox.c.dead)
        )
        with self._errors("cannot count undelivered alerts"):
            async with self._read() as conn:
                counts = {bool(dead): int(n) for dead, n in (await conn.execute(stmt)).all()}
        return counts.get(False, 0), counts.get(True, 0)

    async def enqueue_resends(
        self,
        sink: str,
        *,
        now: datetime,
        not_since: datetime,
        accept: Callable[[Alert], bool] = lambda _alert: True,
    ) -> int:
        """Enqueue for ``sink`` the newest firing event of each alert that still fires.

        Skipped: alerts ``accept`` refuses, and alerts for which the sink has a pending row
        or one enqueued at or after ``not_since``. The alert rows are locked meanwhile, so
        a run that resolves one of them commits (and enqueues the resolution) after this,
        never in between: the sink gets the resolution last. Returns how many were enqueued.
        """
        firing = select(alerts.c.fingerprint).where(alerts.c.status == "firing")
        if self.dialect == "postgresql":
            firing = firing.with_for_update()
        with self._errors(f"cannot enqueue re-sends for {sink}"):
            async with self._write() as conn:
                fingerprints = list((await conn.execute(firing)).scalars())
                chosen: list[int] = []
                for batch in _batched(fingerprints, BATCH):
                    busy = (
                        select(alert_events.c.fingerprint)
                        .select_from(
                            outbox.join(alert_events, alert_events.c.id == outbox.c.event_id)
                        )
                        .where(
                            outbox.c.sink == sink,
                            alert_events.c.fingerprint.in_(batch),
                            or_(
                                and_(outbox.c.delivered_at.is_(None), outbox.c.dead.is_(False)),
                                outbox.c.created_at >= not_since,
                            ),
                        )
                    )
                    latest = (
                        select(func.max(alert_events.c.id))
                        .where(
                            alert_events.c.fingerprint.in_(batch),
                            alert_events.c.fingerprint.not_in(busy),
                            alert_events.c.status == "firing",
                        )
                        .group_by(alert_events.c.fingerprint)
                    )
                    stmt = _events().where(alert_events.c.id.in_(latest))
                    found = [_alert(r) for r in (await conn.execute(stmt)).all()]
                    chosen.extend(a.id for a in found if accept(a))
                rows = [
                    {
                        "event_id": event_id,
                        "sink": sink,
                        "attempts": 0,
                        "next_attempt_at": now,
                        "created_at": now,
                    }
                    for event_id in sorted(chosen)
                ]
                for batch_rows in _batched(rows, BATCH):
                    await conn.execute(insert(outbox), batch_rows)
        return len(rows)


async def _walk(conn: AsyncConnection, batch: int) -> VerifyResult:
    head_row = (
        await conn.execute(select(chain.c.head, chain.c.length).where(chain.c.id == 1))
    ).one_or_none()
    if head_row is None:
        return VerifyResult(False, 0, "", None, "the chain has no head row")
    head: str = head_row.head
    length: int = head_row.length
    names = {r.id: r.name for r in await conn.execute(select(targets.c.id, targets.c.name))}

    def broken(record: int | None, reason: str) -> VerifyResult:
        return VerifyResult(False, length, head, record, reason)

    prev = GENESIS_HASH
    expected = 1
    while True:
        rows = (
            await conn.execute(
                select(changes).where(changes.c.id >= expected).order_by(changes.c.id).limit(batch)
            )
        ).all()
        if not rows:
            break
        for r in rows:
            if r.id != expected:
                return broken(expected, f"record {expected} is missing")
            if r.prev_hash != prev:
                return broken(r.id, f"record {r.id} does not link to record {r.id - 1}")
            recomputed = change_hash(
                prev,
                id=r.id,
                run_id=r.run_id,
                target=names.get(r.target_id, ""),
                collection=r.collection,
                key=r.key,
                kind=r.kind,
                before=r.before,
                after=r.after,
                fields=r.fields,
                at=r.at,
            )
            if recomputed != r.hash:
                return broken(r.id, f"record {r.id} does not match its hash")
            prev = r.hash
            expected += 1
    count = expected - 1
    earlier = (
        await conn.execute(select(func.count()).select_from(changes).where(changes.c.id < 1))
    ).scalar_one()
    if earlier:
        return broken(None, f"{earlier} record(s) with ids below 1 are not part of the chain")
    if count < length:
        return broken(count + 1, f"record {count + 1} is missing (the head counts {length})")
    if count > length:
        return broken(length + 1, f"record {length + 1} is beyond the head ({length} records)")
    if prev != head:
        return broken(count or None, "the chain head does not match the last record")
    return VerifyResult(True, length, head)


def _window(
    stmt: Select[Any],
    id_column: ColumnElement[int],
    time_column: ColumnElement[datetime],
    *,
    target: str | None,
    since: datetime | None,
    until: datetime | None,
    limit: int | None,
    after_id: int | None,
    before_id: int | None,
    newest_first: bool,
) -> Select[Any]:
    if target is not None:
        stmt = stmt.where(targets.c.name == target)
    if since is not None:
        stmt = stmt.where(time_column >= since)
    if until is not None:
        stmt = stmt.where(time_column < until)
    if after_id is not None:
        stmt = stmt.where(id_column > after_id)
    if before_id is not None:
        stmt = stmt.where(id_column < before_id)
    stmt = stmt.order_by(id_column.desc() if newest_first else id_column.asc())
    if limit is not None:
        stmt = stmt.limit(limit)
    return stmt


def _run(r: Row[Any]) -> Run:
    return Run(
        id=r.id,
        target=r.target,
        started_at=r.started_at,
        finished_at=r.finished_at,
        status=cast(RunStatus, r.status),
        items=r.items,
        pages=r.pages,
        error=r.error,
    )


async def _items(conn: AsyncConnection, present: ColumnElement[bool], target_id: int) -> list[Item]:
    stmt = select(versions.c.collection, versions.c.key, versions.c.body, versions.c.hash).where(
        versions.c.target_id == target_id, present
    )
    result = await conn.execute(stmt)
    return [Item(r.collection, r.key, cast(Mapping[str, Any], r.body), r.hash) for r in result]


def _events() -> Select[Any]:
    return select(alert_events, targets.c.name.label("target")).join(
        targets, targets.c.id == alert_events.c.target_id
    )


def _alert(r: Row[Any]) -> Alert:
    return Alert(
        id=r.id,
        fingerprint=r.fingerprint,
        kind=r.kind,
        severity=cast(Severity, r.severity),
        status=cast(AlertStatus, r.status),
        target=r.target,
        collection=r.collection,
        key=r.key,
        run_id=r.run_id,
        at=r.at,
        message=r.message,
        fields=_fields(r.fields),
    )


def _deliveries() -> Select[Any]:
    return (
        select(
            outbox.c.id.label("delivery_id"),
            outbox.c.sink,
            outbox.c.attempts,
            outbox.c.next_attempt_at,
            outbox.c.created_at,
            outbox.c.delivered_at,
            outbox.c.dead,
            outbox.c.last_error,
            alert_events,
            targets.c.name.label("target"),
        )
        .join(alert_events, alert_events.c.id == outbox.c.event_id)
        .join(targets, targets.c.id == alert_events.c.target_id)
    )


def _delivery(r: Row[Any]) -> Delivery:
    return Delivery(
        id=r.delivery_id,
        sink=r.sink,
        alert=_alert(r),
        attempts=r.attempts,
        next_attempt_at=r.next_attempt_at,
        created_at=r.created_at,
        delivered_at=r.delivered_at,
        dead=bool(r.dead),
        last_error=r.last_error,
    )


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
