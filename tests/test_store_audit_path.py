"""The store calls an audit makes on every tick: start_run (with the previous state), and
current_items when something changed.

Against real SQLite files and a real PostgreSQL (``store`` fixture in conftest.py).
"""

from __future__ import annotations

from datetime import UTC, datetime

from auditor.model import SCRIPTS, SETTINGS, SETTINGS_KEY, Change, content_hash
from auditor.store import AlertState, RunOutcome, Store

T0 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)


def body(name: str, state: str = "Connected") -> dict[str, str]:
    return {"Filename": name, "State": state}


async def test_start_run_creates_the_target_once_and_follows_its_url(store: Store) -> None:
    first = await store.start_run("hq", "https://hq.example", T0)
    assert first.previous_run_id is None
    assert (dict(first.previous.hashes), dict(first.previous.alerts)) == ({}, {})
    again = await store.start_run("hq", "https://hq2.example", T0)
    assert again.target_id == first.target_id
    assert again.run_id > first.run_id
    [row] = await store.targets()
    assert (row.name, row.url) == ("hq", "https://hq2.example")
    runs = await store.runs("hq")
    assert [(r.id, r.status) for r in runs] == [
        (first.run_id, "running"),
        (again.run_id, "running"),
    ]


async def test_previous_state_has_the_current_hashes_and_alert_states(store: Store) -> None:
    start = await store.start_run("hq", "https://hq.example", T0)
    empty = await store.previous_state(start.target_id)
    assert (dict(empty.hashes), dict(empty.alerts)) == ({}, {})

    settings = {"Enabled": True, "PreStartScript": "a.sh"}
    added = [
        Change(SCRIPTS, "a.sh", "added", None, body("a.sh")),
        Change(SCRIPTS, "b.sh", "added", None, body("b.sh")),
        Change(SETTINGS, SETTINGS_KEY, "added", None, settings),
    ]
    state = AlertState(
        fingerprint="f" * 32,
        kind="script.disconnected",
        collection=SCRIPTS,
        key="b.sh",
        status="firing",
        severity="warning",
        first_seen=T0,
        last_seen=T0,
        last_notified=T0,
        resolved_at=None,
        message="hq: b.sh is Disconnected",
    )
    await store.commit_run(
        RunOutcome(
            run_id=start.run_id,
            target_id=start.target_id,
            status="ok",
            finished_at=T0,
            changes=added,
            alert_states=[state],
        )
    )
    second = await store.start_run("hq", "https://hq.example", T0)
    assert second.previous_run_id == start.run_id

    previous = await store.previous_state(second.target_id)
    assert second.previous == previous
    assert dict(previous.hashes) == {
        (SCRIPTS, "a.sh"): content_hash(body("a.sh")),
        (SCRIPTS, "b.sh"): content_hash(body("b.sh")),
        (SETTINGS, SETTINGS_KEY): content_hash(settings),
    }
    assert dict(previous.alerts) == {state.fingerprint: state}
    without = await store.previous_state(second.target_id, hashes=False)
    assert (dict(without.hashes), dict(without.alerts)) == ({}, {state.fingerprint: state})

    # A change closes the old version: only the new content is current.
    await store.commit_run(
        RunOutcome(
            run_id=second.run_id,
            target_id=second.target_id,
            status="ok",
            finished_at=T0,
            changes=[
                Change(SCRIPTS, "b.sh", "changed", body("b.sh"), body("b.sh", "Disconnected"), ()),
                Change(SCRIPTS, "a.sh", "removed", body("a.sh"), None),
            ],
        )
    )
    third = await store.start_run("hq", "https://hq.example", T0)
    hashes = (await store.previous_state(third.target_id)).hashes
    assert third.previous.hashes == hashes
    assert dict(hashes) == {
        (SCRIPTS, "b.sh"): content_hash(body("b.sh", "Disconnected")),
        (SETTINGS, SETTINGS_KEY): content_hash(settings),
    }


async def test_current_items_reads_only_the_keys_asked_for(store: Store) -> None:
    start = await store.start_run("hq", "https://hq.example", T0)
    names = [f"s-{i:04d}.sh" for i in range(1200)]  # more than one batch of keys
    await store.commit_run(
        RunOutcome(
            run_id=start.run_id,
            target_id=start.target_id,
            status="ok",
            finished_at=T0,
            changes=[Change(SCRIPTS, n, "added", None, body(n)) for n in names],
        )
    )
    wanted = [(SCRIPTS, n) for n in names[::2]] + [(SCRIPTS, "missing.sh"), (SETTINGS, "x")]
    items = await store.current_items(start.target_id, wanted)
    assert sorted(i.key for i in items) == names[::2]
    assert all(i.body == body(i.key) and i.hash == content_hash(body(i.key)) for i in items)
    assert await store.current_items(start.target_id, []) == []
    other = await store.start_run("branch", "https://branch.example", T0)
    assert await store.current_items(other.target_id, wanted) == []
