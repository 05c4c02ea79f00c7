"""SQLite: the store's transactions, run in one worker thread and grouped (group commit).

Audits of a fleet each make two short transactions (start a run, record it). One by one,
each pays the transaction's own cost (BEGIN IMMEDIATE, COMMIT, a connection checkout) and a
hand-over between the event loop and the thread. The worker takes every transaction queued
while it was busy and runs them as one database transaction, in the order they came, then
answers all their callers with one wake-up of each event loop.

A failure stays with its own work: when a grouped transaction fails (any work raising, or
the commit), it is rolled back whole and each work is then run again alone, so every caller
gets exactly what a transaction of its own would have given. Works are pure database work
(no effect outside the connection), so running one again after a rollback is safe.

A caller cancelled meanwhile does not stop work the thread has begun: it ends (commit or
rollback) and its result is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine

T = TypeVar("T")

# More works per transaction save little more, and a long one holds the write lock longer.
MAX_GROUP = 64


@dataclass(slots=True)
class _Job:
    work: Callable[[Connection], Any]
    write: bool
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    outcome: tuple[bool, Any] = field(default=(False, None))


class TransactionWorker:
    """Runs transactions on ``engine`` (a synchronous engine on one SQLite file) in a thread
    of its own, on one connection kept open; see the module docstring. A writing transaction
    runs with the execution option ``write_option`` set (the engine's ``begin`` hook makes it
    BEGIN IMMEDIATE). ``close()`` finishes what is queued."""

    def __init__(self, engine: Engine, *, write_option: str, name: str = "auditor-sqlite") -> None:
        self._engine = engine
        self._write_option = write_option
        self._conn: Connection | None = None
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    async def run(self, work: Callable[[Connection], T], *, write: bool) -> T:
        """Run ``work`` in a transaction (a writing one when ``write``) and return its result."""
        if self._closed:
            raise RuntimeError("the transaction worker is closed")
        loop = asyncio.get_running_loop()
        job = _Job(work, write, loop, loop.create_future())
        self._queue.put(job)
        result: T = await job.future
        return result

    def close(self) -> None:
        """Finish the queued transactions, then stop the thread. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join()

    # -- the thread ---------------------------------------------------------------------------

    def _serve(self) -> None:
        try:
            while True:
                job = self._queue.get()
                if job is None:
                    return
                group = [job]
                stop = False
                while len(group) < MAX_GROUP:
                    try:
                        more = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        stop = True
                        break
                    group.append(more)
                self._run(group)
                self._answer(group)
                if stop:
                    return
        finally:
            self._disconnect()

    def _transaction(self, write: bool, works: list[_Job]) -> list[Any]:
        """``works`` in one transaction on the kept connection; their results."""
        if self._conn is None:
            self._conn = self._engine.connect()
        conn = self._conn
        conn.execution_options(**{self._write_option: write})
        try:
            with conn.begin():
                return [job.work(conn) for job in works]
        except BaseException:
            # Whatever went wrong, the next transaction starts on a fresh connection.
            self._disconnect()
            raise

    def _disconnect(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            with contextlib.suppress(Exception):
                conn.close()

    def _run(self, group: list[_Job]) -> None:
        if len(group) > 1 and self._run_together(group):
            return
        for job in group:
            try:
                [result] = self._transaction(job.write, [job])
            except BaseException as exc:
                job.outcome = (False, exc)
            else:
                job.outcome = (True, result)

    def _run_together(self, group: list[_Job]) -> bool:
        """The group as one transaction; False when it failed and was rolled back."""
        try:
            results = self._transaction(any(j.write for j in group), group)
        except Exception:
            # Rolled back whole; each work runs again alone to get its own answer.
            return False
        for job, result in zip(group, results, strict=True):
            job.outcome = (True, result)
        return True

    @staticmethod
    def _answer(group: list[_Job]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[_Job]] = {}
        for job in group:
            by_loop.setdefault(job.loop, []).append(job)
        for loop, jobs in by_loop.items():
            # A closed loop raises RuntimeError: nobody is waiting there any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, jobs)


def _settle(jobs: list[_Job]) -> None:
    for job in jobs:
        if job.future.cancelled():
            continue
        ok, value = job.outcome
        if ok:
            job.future.set_result(value)
        else:
            job.future.set_exception(value)
