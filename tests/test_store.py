"""The store itself against real SQLite files and a real PostgreSQL (see conftest.py): opening,
errors, closing, the schema and its migrations. The parts have their own files:
``test_store_record.py``, ``test_store_reads.py``, ``test_store_audit_path.py``; the schedule
is tested in ``test_replicas.py`` and the outbox in ``test_delivery.py``.
"""

from __future__ import annotations

import asyncio
import pathlib
import sys
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from auditor.errors import StoreError
from auditor.store import GENESIS_HASH, Store, metadata
from auditor.store.engine import SCHEMA_HEAD, head_revisions
from tests.storedata import T0, audit, scripts

HEAD = ",".join(sorted(head_revisions()))


# -- schema ------------------------------------------------------------------------------


async def test_upgrade_from_empty_database_to_head(db_url: str) -> None:
    async with await Store.open(db_url) as store:
        assert not await store.at_head()
        assert await store.upgrade() == HEAD
        assert await store.at_head()
        assert await store.upgrade() == HEAD
        assert await store.reads.chain_head() == (GENESIS_HASH, 0)
        assert store.dialect == db_url.split(":")[0]


async def test_models_and_migrations_agree(store: Store, raw: AsyncEngine) -> None:
    def differences(conn: Connection) -> list[Any]:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))

    async with raw.connect() as conn:
        assert await conn.run_sync(differences) == []
        names = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    assert names == {t.name for t in metadata.sorted_tables} | {"alembic_version"}


async def test_concurrent_upgrades_in_one_process(db_url: str) -> None:
    stores = [await Store.open(db_url) for _ in range(3)]
    try:
        assert await asyncio.gather(*(s.upgrade() for s in stores)) == [HEAD] * 3
        assert await stores[0].at_head()
    finally:
        for s in stores:
            await s.close()


UPGRADE_SCRIPT = """
import asyncio, sys
from auditor.store import Store

async def main(url: str) -> None:
    store = await Store.open(url)
    try:
        await store.at_head()  # loads the migration scripts before the race
        print("ready", flush=True)
        sys.stdin.readline()
        print(await store.upgrade(), flush=True)
    finally:
        await store.close()

asyncio.run(main(sys.argv[1]))
"""


async def test_replicas_starting_together_all_migrate(db_url: str) -> None:
    # Separate processes, as replicas are: only the database can serialise them. Each
    # waits for "go" once connected, so that all three migrate at the same moment.
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            UPGRADE_SCRIPT,
            db_url,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(3)
    ]
    for proc in procs:
        assert proc.stdout is not None
        assert await proc.stdout.readline() == b"ready\n"
    results = await asyncio.gather(*(p.communicate(b"go\n") for p in procs))
    for proc, (out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err.decode()
        assert out.decode().strip() == HEAD
    async with await Store.open(db_url) as store:
        assert await store.at_head()
        assert await store.reads.chain_head() == (GENESIS_HASH, 0)


# -- errors ------------------------------------------------------------------------------


async def test_unreachable_postgresql_is_one_line_without_the_password() -> None:
    with pytest.raises(StoreError) as caught:
        await Store.open("postgresql://auditor:s3cret-pw@127.0.0.1:1/audit")
    message = str(caught.value)
    assert "s3cret-pw" not in message
    assert "postgresql://auditor:***@127.0.0.1:1/audit" in message
    assert "\n" not in message


async def test_sqlite_in_a_missing_directory_is_a_store_error(tmp_path: Any) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        await Store.open(f"sqlite:///{tmp_path}/no/such/dir/audit.db")


@pytest.mark.parametrize(
    "url", ["mysql://u:pw@host/db", "not a url", "sqlite://", "sqlite:///:memory:"]
)
async def test_unsupported_urls_are_refused(url: str) -> None:
    with pytest.raises(StoreError) as caught:
        await Store.open(url)
    assert "pw" not in str(caught.value)


async def test_close_is_idempotent_and_refuses_work_afterwards(db_url: str) -> None:
    store = await Store.open(db_url)
    await store.upgrade()
    await store.close()
    await store.close()
    with pytest.raises(StoreError, match="closed"):
        await store.record.ensure_target("pbx", "https://pbx.example.com")


# -- migrations --------------------------------------------------------------------------


def test_schema_head_constant_matches_the_migrations() -> None:
    assert head_revisions() == {SCHEMA_HEAD}


async def test_ensure_schema_migrates_a_new_database_and_then_only_checks(
    tmp_path: pathlib.Path,
) -> None:
    store = await Store.open(f"sqlite:///{tmp_path / 'fresh.db'}")
    try:
        assert await store.ensure_schema() == SCHEMA_HEAD
        assert await store.at_head()
        assert await store.ensure_schema() == SCHEMA_HEAD
    finally:
        await store.close()


def _old_database_with_data(path: pathlib.Path) -> None:
    """A database at revision 0001 holding a target and a run that reference each other."""
    import sqlite3
    import subprocess

    root = pathlib.Path(__file__).resolve().parents[1]
    subprocess.run(
        [sys.executable, "-m", "alembic", "-x", f"url=sqlite:///{path}", "upgrade", "0001"],
        cwd=root,
        check=True,
        capture_output=True,
    )
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA foreign_keys = ON")
        db.execute(
            "INSERT INTO targets (id, name, url, created_at) "
            "VALUES (1, 'pbx-old', 'https://old.example.com', '2026-01-01 00:00:00')"
        )
        db.execute(
            "INSERT INTO runs (id, target_id, started_at, status) "
            "VALUES (1, 1, '2026-01-01 00:00:00', 'ok')"
        )
        db.execute("UPDATE targets SET last_complete_run_id = 1")


async def test_upgrade_keeps_a_populated_sqlite_database(tmp_path: pathlib.Path) -> None:
    """Batch migrations copy tables on SQLite: with data and foreign keys they must still pass."""
    path = tmp_path / "old.db"
    await asyncio.to_thread(_old_database_with_data, path)
    store = await Store.open(f"sqlite:///{path}")
    try:
        assert await store.ensure_schema() == SCHEMA_HEAD
        (target,) = await store.reads.targets()
        assert (target.name, target.last_complete_run_id) == ("pbx-old", 1)
        assert [r.id for r in await store.reads.runs("pbx-old")] == [1]
    finally:
        await store.close()


def _alembic(url: str, *command: str) -> None:
    import subprocess

    root = pathlib.Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-m", "alembic", "-x", f"url={url}", *command],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]


async def test_the_newest_migration_goes_down_and_up_on_a_populated_database(
    db_url: str, store: Store
) -> None:
    """Downgrading the newest migration and upgrading again keeps every record (on SQLite
    the batch mode copies the targets table that every other table refers to)."""
    bodies = scripts(3)
    target = await store.record.ensure_target("hq", "https://hq.example")
    first = await audit(store, target, bodies, at=T0, digest="d" * 64)
    assert (await store.record.start_run("hq", "https://hq.example", T0)).digest == "d" * 64
    await store.close()
    await asyncio.to_thread(_alembic, db_url, "downgrade", "-1")
    await asyncio.to_thread(_alembic, db_url, "upgrade", "head")
    async with await Store.open(db_url) as again:
        assert await again.at_head()
        [row] = await again.reads.targets()
        assert (row.name, row.last_complete_run_id) == ("hq", first)
        next_run = await again.record.start_run("hq", "https://hq.example", T0)
        # The digest went with the column: the next run diffs in full and sets it again.
        assert (next_run.previous_run_id, next_run.digest) == (first, None)
        assert len(await again.record.current_hashes(next_run.target_id)) == len(bodies)
        assert (await again.reads.verify()).ok
