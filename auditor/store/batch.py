"""SQLite: the store's transactions, grouped (group commit), run on the event loop when they
are short and in one worker thread otherwise.

Audits of a fleet each make short transactions (start a run, record it). One by one, each
pays the transaction's own cost (BEGIN IMMEDIATE, COMMIT); run in a thread, each also pays a
hand-over of the GIL between the event loop and the thread, which costs the loop more than
the transaction itself. So:

- A short transaction (the caller says so: ``inline=True``) waits ``JOIN_ITERATIONS``
  iterations of the event loop for others to join it: under load, each iteration lets more
  audits finish, and a bigger group costs less per transaction; on an idle loop the
  iterations pass in microseconds. Then every transaction queued meanwhile runs as one
  database transaction, on the loop, on a connection kept for it. That connection does not
  wait for SQLite's write lock (``busy_timeout = 0``): when another connection holds it, the
  group goes to the worker thread, which waits.
- Nor does the loop's connection checkpoint the write-ahead log (copying pages back into the
  database and syncing the disk, milliseconds at a time): every ``CHECKPOINT_EVERY`` of its
  commits, the thread does. Until that checkpoint is done, short transactions go to the
  thread too, behind it: a checkpoint racing the loop's commits would never catch up, and
  the log would grow without end.
- Any other transaction goes to the worker thread, which takes every transaction queued while
  it was busy and runs them as one database transaction, in the order they came, on one
  connection kept open, then answers all their callers with one wake-up of each event loop.

A failure stays with its own work: when a grouped transaction fails (any work raising, or
the commit), it is rolled back whole and each work is then run again alone, so every caller
gets exactly what a transaction of its own would have given. Works are pure database work
(no effect outside the connection), so running one again after a rollback is safe.

A caller cancelled meanwhile does not stop work that has begun: it ends (commit or rollback)
and its result is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import structlog
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection

log = structlog.get_logger("auditor.store")

T = TypeVar("T")

# More works per transaction save little more, and a long one holds the write lock longer.
MAX_GROUP = 64
# Iterations of the event loop a short transaction waits for others to join its group.
JOIN_ITERATIONS = 3
# Commits on the loop between two checkpoints by the thread: a few pages each, so about the
# thousand pages of log at which SQLite checkpoints by default.
CHECKPOINT_EVERY = 300


# Runs the works of several jobs at once: given their arguments in order, returns what each
# job's work would have returned, run one after the other in the same transaction.
Merged = Callable[[Connection, list[Any]], list[Any]]


@dataclass(slots=True)
class _Job:
    work: Callable[[Connection], Any]
    write: bool
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    merge: tuple[Merged, Any] | None = None
    outcome: tuple[bool, Any] = field(default=(False, None))


@dataclass(frozen=True, slots=True)
class _Checkpoint:
    """Checkpoint the log in the thread, then call ``done`` on ``loop``."""

    loop: asyncio.AbstractEventLoop
    done: Callable[[], None]


def _is_busy(exc: BaseException) -> bool:
    orig = exc.orig if isinstance(exc, OperationalError) else exc
    return isinstance(orig, sqlite3.OperationalError) and getattr(
        orig, "sqlite_errorcode", None
    ) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


class _Lane:
    """One kept connection and the transactions run on it."""

    def __init__(self, engine: Engine, write_option: str, *, on_loop: bool) -> None:
        self._engine = engine
        self._write_option = write_option
        self._on_loop = on_loop
        self._conn: Connection | None = None
        # The kind of transaction the connection is set for (setting it costs).
        self._writes: bool | None = None

    def run(self, group: list[_Job]) -> int:
        """Give each job of ``group`` its outcome: the group as one transaction or, when that
        fails, each job in a transaction of its own. Returns how many jobs got one: all,
        unless on the loop a lock found taken stopped it (what is left is to run elsewhere;
        what was not committed was rolled back)."""
        if len(group) > 1:
            try:
                results = self._transaction(group)
            except Exception as exc:
                if self._on_loop and _is_busy(exc):
                    return 0
                # Rolled back whole; each work runs again alone to get its own answer.
            else:
                for job, result in zip(group, results, strict=True):
                    job.outcome = (True, result)
                return len(group)
        for index, job in enumerate(group):
            try:
                [result] = self._transaction([job])
            except BaseException as exc:
                if self._on_loop and _is_busy(exc):
                    return index
                job.outcome = (False, exc)
            else:
                job.outcome = (True, result)
        return len(group)

    def close(self) -> None:
        self._writes = None
        if self._conn is not None:
            conn, self._conn = self._conn, None
            with contextlib.suppress(Exception):
                if self._on_loop:
                    # Its settings are the loop's own: it must not go back to the pool.
                    conn.invalidate()
                conn.close()

    def _connection(self) -> Connection:
        if self._conn is None:
            self._conn = self._engine.connect()
            if self._on_loop:
                # Never wait for the lock on the loop, never checkpoint there.
                raw = self._conn.connection.driver_connection
                assert raw is not None
                raw.execute("PRAGMA busy_timeout = 0")
                raw.execute("PRAGMA wal_autocheckpoint = 0")
        return self._conn

    def checkpoint(self) -> None:
        """Checkpoint the write-ahead log, outside any transaction. PASSIVE: it waits for
        nobody, and copies back what no reader still needs."""
        raw = self._connection().connection.driver_connection
        assert raw is not None
        raw.execute("PRAGMA wal_checkpoint(PASSIVE)").close()

    def _transaction(self, works: list[_Job]) -> list[Any]:
        conn = self._connection()
        writes = any(j.write for j in works)
        if writes != self._writes:
            conn.execution_options(**{self._write_option: writes})
            self._writes = writes
        try:
            with conn.begin():
                return _results(conn, works)
        except BaseException as exc:
            # Whatever went wrong (but a lock found taken on the loop), the next transaction
            # starts on a fresh connection.
            if not (self._on_loop and _is_busy(exc)):
                self.close()
            raise


class TransactionWorker:
    """Runs transactions on ``engine`` (a synchronous engine on one SQLite file); see the
    module docstring. A writing transaction runs with the execution option ``write_option``
    set (the engine's ``begin`` hook makes it BEGIN IMMEDIATE). ``close()`` finishes what is
    queued."""

    def __init__(self, engine: Engine, *, write_option: str, name: str = "auditor-sqlite") -> None:
        self._thread_lane = _Lane(engine, write_option, on_loop=False)
        self._loop_lane = _Lane(engine, write_option, on_loop=True)
        self._queue: queue.SimpleQueue[_Job | _Checkpoint | None] = queue.SimpleQueue()
        self._closed = False
        # The loop's side: the thread whose loop uses its lane (a sqlite3 connection stays in
        # the thread that opened it), what waits for the end of the loop's iteration, its
        # commits since the last checkpoint, and whether one is under way.
        self._loop_thread: int | None = None
        self._pending: list[_Job] = []
        self._loop_commits = 0
        self._checkpointing = False
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    async def run(
        self,
        work: Callable[[Connection], T],
        *,
        write: bool,
        inline: bool = False,
        merge: tuple[Merged, Any] | None = None,
    ) -> T:
        """Run ``work`` in a transaction (a writing one when ``write``) and return its result;
        on the loop when ``inline`` (a short transaction), in the thread otherwise.

        ``merge``: ``(merged, argument)`` when ``work`` is ``merged`` run for ``argument``
        alone. Jobs with the same ``merged`` that come one after the other in a group then
        run as one call (statements executed for all their rows at once).
        """
        if self._closed:
            raise RuntimeError("the transaction worker is closed")
        loop = asyncio.get_running_loop()
        job = _Job(work, write, loop, loop.create_future(), merge)
        if inline and self._loop_thread in (None, threading.get_ident()):
            self._loop_thread = threading.get_ident()
            self._pending.append(job)
            if len(self._pending) == 1:
                loop.call_soon(self._flush_after, loop, JOIN_ITERATIONS)
        else:
            self._queue.put(job)
        result: T = await job.future
        return result

    def close(self) -> None:
        """Finish the queued transactions, then stop the thread. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._flush()
        self._queue.put(None)
        self._thread.join()
        self._loop_lane.close()

    # -- the loop -----------------------------------------------------------------------------

    def _flush_after(self, loop: asyncio.AbstractEventLoop, iterations: int) -> None:
        if iterations > 0:
            loop.call_soon(self._flush_after, loop, iterations - 1)
        else:
            self._flush()

    def _flush(self) -> None:
        group, self._pending = self._pending, []
        if not group:
            return
        done = 0 if self._checkpointing else self._loop_lane.run(group)
        _settle(group[:done])
        # Another connection holds the write lock, or the thread checkpoints: the rest waits
        # for it in the thread.
        for job in group[done:]:
            self._queue.put(job)
        self._loop_commits += done > 0
        if self._loop_commits >= CHECKPOINT_EVERY:
            self._loop_commits = 0
            self._checkpointing = True
            self._queue.put(_Checkpoint(group[0].loop, self._checkpointed))

    def _checkpointed(self) -> None:
        self._checkpointing = False

    # -- the thread ---------------------------------------------------------------------------

    def _serve(self) -> None:
        lane = self._thread_lane
        try:
            while True:
                job = self._queue.get()
                if job is None:
                    return
                if isinstance(job, _Checkpoint):
                    self._checkpoint(job)
                    continue
                group = [job]
                stop = False
                checkpoint = None
                while len(group) < MAX_GROUP:
                    try:
                        more = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        stop = True
                        break
                    if isinstance(more, _Checkpoint):
                        checkpoint = more
                        break
                    group.append(more)
                lane.run(group)
                self._answer(group)
                if checkpoint is not None:
                    self._checkpoint(checkpoint)
                if stop:
                    return
        finally:
            lane.close()

    def _checkpoint(self, request: _Checkpoint) -> None:
        try:
            self._thread_lane.checkpoint()
        except Exception as exc:
            # The next one may do better; SQLite's other connections checkpoint too.
            log.warning("store.checkpoint_failed", error=str(exc))
        with contextlib.suppress(RuntimeError):
            request.loop.call_soon_threadsafe(request.done)

    @staticmethod
    def _answer(group: list[_Job]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[_Job]] = {}
        for job in group:
            by_loop.setdefault(job.loop, []).append(job)
        for loop, jobs in by_loop.items():
            # A closed loop raises RuntimeError: nobody is waiting there any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, jobs)


def _results(conn: Connection, works: list[_Job]) -> list[Any]:
    """Each job's result, in order; runs of jobs with the same merged work run as one."""
    results: list[Any] = []
    start = 0
    while start < len(works):
        merge = works[start].merge
        end = start + 1
        if merge is not None:
            while end < len(works) and (other := works[end].merge) and other[0] == merge[0]:
                end += 1
        if end - start > 1 and merge is not None:
            merged = merge[0](conn, [job.merge[1] for job in works[start:end] if job.merge])
            if len(merged) != end - start:
                raise RuntimeError(f"a merged work gave {len(merged)} results for {end - start}")
            results.extend(merged)
        else:
            results.append(works[start].work(conn))
        start = end
    return results


class MergedGroups:
    """Where transactions are not run by a :class:`TransactionWorker` (PostgreSQL): works
    that can be merged (see :meth:`TransactionWorker.run`) wait ``JOIN_ITERATIONS`` loop
    iterations for others, then run as one transaction, on a connection from ``begin``
    (an async context manager that begins a transaction); when that fails, each runs again
    in a transaction of its own. ``close()`` waits for what is queued."""

    def __init__(self, begin: Callable[[], AbstractAsyncContextManager[AsyncConnection]]) -> None:
        self._begin = begin
        self._pending: list[_Job] = []
        self._running: set[asyncio.Task[None]] = set()

    async def run(self, work: Callable[[Connection], T], merge: tuple[Merged, Any]) -> T:
        loop = asyncio.get_running_loop()
        job = _Job(work, True, loop, loop.create_future(), merge)
        self._pending.append(job)
        if len(self._pending) == 1:
            loop.call_soon(self._flush_after, loop, JOIN_ITERATIONS)
        result: T = await job.future
        return result

    async def close(self) -> None:
        while self._pending or self._running:
            if self._pending:
                self._flush(asyncio.get_running_loop())
            await asyncio.gather(*self._running, return_exceptions=True)

    def _flush_after(self, loop: asyncio.AbstractEventLoop, iterations: int) -> None:
        if iterations > 0:
            loop.call_soon(self._flush_after, loop, iterations - 1)
        else:
            self._flush(loop)

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        group, self._pending = self._pending, []
        if group:
            task = loop.create_task(self._run(group))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run(self, group: list[_Job]) -> None:
        try:
            if len(group) > 1 and await self._together(group):
                return
            for job in group:
                try:
                    async with self._begin() as conn:
                        job.outcome = (True, await conn.run_sync(job.work))
                except Exception as exc:
                    job.outcome = (False, exc)
        except BaseException as exc:
            # Cancelled (the loop is closing): nobody may be left waiting.
            for job in group:
                if job.outcome == (False, None):
                    job.outcome = (False, exc)
            raise
        finally:
            _settle(group)

    async def _together(self, group: list[_Job]) -> bool:
        """The group as one transaction; False when it failed (and was rolled back whole:
        each then runs again alone, for its own answer)."""
        try:
            async with self._begin() as conn:
                results = await conn.run_sync(_results, group)
        except Exception:
            return False
        for job, result in zip(group, results, strict=True):
            job.outcome = (True, result)
        return True


def _settle(jobs: list[_Job]) -> None:
    for job in jobs:
        if job.future.cancelled():
            continue
        ok, value = job.outcome
        if ok:
            job.future.set_result(value)
        else:
            job.future.set_exception(value)
