"""Audit records for the store tests: item bodies, an independent diff, one run committed
the way the audit commits it, alert drafts and states, and a short chained history.

Shared by the ``test_store*.py`` files. Writes only through the store (``counts`` reads the
tables' sizes directly) and asserts nothing but what the helpers themselves need.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from auditor.model import SCRIPTS, SETTINGS, SETTINGS_KEY, Change, FieldChange, RunStatus
from auditor.store import AlertDraft, AlertState, RunOutcome, Store, metadata

Bodies = dict[tuple[str, str], dict[str, Any]]
T0 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)


def script(i: int, *, contents: str = "echo ok", state: str = "Connected") -> dict[str, Any]:
    return {"Filename": f"failover-{i:04d}.sh", "Contents": contents, "State": state, "Size": i}


def scripts(n: int) -> Bodies:
    bodies: Bodies = {(SCRIPTS, f"failover-{i:04d}.sh"): script(i) for i in range(n)}
    bodies[(SETTINGS, SETTINGS_KEY)] = {"Enabled": True, "PreStartScript": "failover-0000.sh"}
    return bodies


def diff(before: Bodies, after: Bodies) -> list[Change]:
    """An independent, simple diff for building the changes a run commits."""
    out: list[Change] = []
    for ref in sorted(after.keys() - before.keys()):
        out.append(Change(ref[0], ref[1], "added", None, after[ref]))
    for ref in sorted(before.keys() - after.keys()):
        out.append(Change(ref[0], ref[1], "removed", before[ref], None))
    for ref in sorted(before.keys() & after.keys()):
        old, new = before[ref], after[ref]
        if old != new:
            fields = tuple(
                FieldChange(name, old.get(name), new.get(name))
                for name in sorted(old.keys() | new.keys())
                if old.get(name) != new.get(name)
            )
            out.append(Change(ref[0], ref[1], "changed", old, new, fields))
    return out


async def current_bodies(store: Store, target_id: int) -> Bodies:
    _, snapshot = await store.record.current_snapshot(target_id)
    return {ref: dict(item.body) for ref, item in snapshot.items.items()}


async def audit(
    store: Store,
    target_id: int,
    bodies: Bodies,
    *,
    status: RunStatus = "ok",
    at: datetime | None = None,
    events: tuple[AlertDraft, ...] = (),
    states: tuple[AlertState, ...] = (),
    sinks: tuple[str, ...] = (),
    digest: str | None = None,
) -> int:
    """One run the way the audit does it: read the last snapshot, diff, commit. ``digest``
    is kept only on a target's first complete run (no previous run is named)."""
    started = at or datetime.now(UTC)
    run_id = await store.record.begin_run(target_id, started)
    found = diff(await current_bodies(store, target_id), bodies)
    await store.record.commit_run(
        RunOutcome(
            run_id=run_id,
            target_id=target_id,
            status=status,
            finished_at=started + timedelta(seconds=2),
            pages=1,
            items=len(bodies),
            reported_count=len(bodies),
            changes=found,
            events=events,
            alert_states=states,
            sinks=sinks,
            digest=digest,
        )
    )
    return run_id


async def counts(engine: AsyncEngine) -> dict[str, int]:
    async with engine.connect() as conn:
        return {
            table.name: int(
                (await conn.execute(select(func.count()).select_from(table))).scalar_one()
            )
            for table in metadata.sorted_tables
        }


def draft(kind: str, key: str | None, at: datetime, **extra: Any) -> AlertDraft:
    return AlertDraft(
        fingerprint=f"fp-{kind}-{key}",
        kind=kind,
        severity=extra.pop("severity", "warning"),
        status=extra.pop("status", "firing"),
        collection=SCRIPTS if key else None,
        key=key,
        at=at,
        message=f"{kind} {key}",
        **extra,
    )


def state(d: AlertDraft, **extra: Any) -> AlertState:
    values: dict[str, Any] = {
        "fingerprint": d.fingerprint,
        "kind": d.kind,
        "collection": d.collection,
        "key": d.key,
        "status": d.status,
        "severity": d.severity,
        "first_seen": d.at,
        "last_seen": d.at,
        "last_notified": d.at,
        "resolved_at": None,
        "message": d.message,
    }
    values.update(extra)
    return AlertState(**values)


async def build_history(store: Store) -> int:
    """Twelve chained records over two targets; returns the chain length."""
    hq = await store.record.ensure_target("pbx-hq", "https://hq.example.com")
    branch = await store.record.ensure_target("pbx-branch", "https://branch.example.com")
    await audit(store, hq, scripts(4), at=T0)  # records 1-5
    await audit(store, branch, scripts(1), at=T0)  # records 6-7
    edited = scripts(4)
    edited[(SCRIPTS, "failover-0001.sh")] = script(1, contents="rm -rf /tmp/x")
    del edited[(SCRIPTS, "failover-0002.sh")]
    edited[(SCRIPTS, "failover-0042.sh")] = {"Filename": "failover-0042.sh", "Note": "Zürich ✓"}
    await audit(store, hq, edited, at=T0 + timedelta(hours=1))  # records 8-10
    more = dict(edited)
    more[(SETTINGS, SETTINGS_KEY)] = {"Enabled": False, "PreStartScript": "failover-0042.sh"}
    more[(SCRIPTS, "failover-0043.sh")] = {"Filename": "failover-0043.sh", "Ratio": 0.1}
    await audit(store, hq, more, at=T0 + timedelta(hours=2))  # records 11-12
    length = (await store.reads.chain_head())[1]
    assert length == 12
    return length
