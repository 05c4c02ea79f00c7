"""The history: item versions and the hash chain of changes, written and walked.

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

Functions over a connection the caller holds, inside the caller's transaction: this module
opens no connection nor transaction, and touches no table but ``versions``, ``changes`` and
``chain`` (and reads target names for the chain's links).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

from sqlalchemy import ColumnElement, bindparam, func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from auditor.errors import StoreError
from auditor.model import Change, Item, content_hash
from auditor.store.database import BATCH, batched
from auditor.store.records import RunOutcome, VerifyResult, change_hash
from auditor.store.schema import GENESIS_HASH, chain, changes, targets, versions


def record_contents(
    conn: Connection, outcome: RunOutcome, target: str, previous: int | None, *, database: str
) -> None:
    """Close the versions that ``outcome``'s changes end, open the ones they begin, and append
    the changes to the chain. ``database``: the URL as displayed, for errors."""
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
    for batch in batched(closing, BATCH):
        conn.execute(close, batch)
    for batch in batched(opening, BATCH):
        conn.execute(insert(versions), batch)
    append_to_chain(conn, outcome, target, outcome.changes, database=database)


def append_to_chain(
    conn: Connection, outcome: RunOutcome, target: str, items: Sequence[Change], *, database: str
) -> None:
    """Append ``items`` (changes of ``outcome``'s run) to the chain, under the head's lock."""
    # The row lock (PostgreSQL) or the write lock taken at BEGIN (SQLite) makes this
    # read-modify-write of the head atomic across processes.
    head = (
        conn.execute(select(chain.c.head, chain.c.length).where(chain.c.id == 1).with_for_update())
    ).one_or_none()
    if head is None:
        raise StoreError(
            f"database {database}: the history chain has no head row (run 'db upgrade')"
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
    for batch in batched(rows, BATCH):
        conn.execute(insert(changes), batch)
    conn.execute(update(chain).where(chain.c.id == 1).values(head=prev, length=length))


async def walk(conn: AsyncConnection, batch: int) -> VerifyResult:
    """Walk the whole chain (``batch`` records at a time) and recompute every link."""
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


async def read_items(
    conn: AsyncConnection, present: ColumnElement[bool], target_id: int
) -> list[Item]:
    """The items of the target whose versions match ``present``."""
    stmt = select(versions.c.collection, versions.c.key, versions.c.body, versions.c.hash).where(
        versions.c.target_id == target_id, present
    )
    result = await conn.execute(stmt)
    return [Item(r.collection, r.key, cast(Mapping[str, Any], r.body), r.hash) for r in result]


def _plain(value: Mapping[str, Any] | None) -> dict[str, Any] | None:
    # The canonical JSON of a value survives the trip through the database unchanged (a
    # tuple comes back a list, and both encode alike), so the hash made here is the hash
    # verify() recomputes from what it reads.
    return None if value is None else dict(value)
