"""Shared fixtures. Keep this file small: fixtures used by more than one test module only.

Databases:

- ``pg_url``: an empty PostgreSQL database for one test: one database per session
  (``pg_database``, created through ``$AUDITOR_TEST_PG_URL``, default
  ``postgresql://postgres@127.0.0.1:5432/test``, and dropped at the end), its ``public``
  schema recreated before each test. When the server cannot be reached the test is
  skipped, or fails when ``$AUDITOR_REQUIRE_PG=1`` (CI sets it).
- ``db_url``: parametrised over ``sqlite`` (a file in ``tmp_path``) and ``postgresql``.
- ``store``: an open :class:`auditor.store.Store` on ``db_url``, migrated to head.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from auditor.store import Store, driver_url

PG_SERVER_URL = os.environ.get("AUDITOR_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
T = TypeVar("T")


def _run_apart(coro: Coroutine[Any, Any, T]) -> T:
    # Sync fixtures must not touch the event loop pytest-asyncio keeps for the test.
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def _admin(*statements: str, url: str = PG_SERVER_URL) -> None:
    engine = create_async_engine(
        driver_url(url),
        isolation_level="AUTOCOMMIT",
        poolclass=NullPool,
        connect_args={"timeout": 5},
    )
    try:
        async with engine.connect() as conn:
            for statement in statements:
                await conn.execute(text(statement))
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def pg_server() -> str | None:
    """None when the PostgreSQL server answers, else why it does not."""
    try:
        _run_apart(_admin("SELECT 1"))
    except Exception as exc:  # any failure means "not reachable" here
        return f"{type(exc).__name__}: {exc}".splitlines()[0]
    return None


@pytest.fixture(scope="session")
def pg_database(pg_server: str | None) -> Iterator[str]:
    """A PostgreSQL database of this test session (created once, dropped at the end)."""
    if pg_server is not None:
        where = make_url(PG_SERVER_URL).render_as_string()
        message = f"PostgreSQL at {where} unreachable: {pg_server}"
        if os.environ.get("AUDITOR_REQUIRE_PG") == "1":
            pytest.fail(message)
        pytest.skip(message)
    name = f"auditor_test_{uuid.uuid4().hex[:16]}"
    _run_apart(_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(PG_SERVER_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        _run_apart(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def pg_url(pg_database: str) -> str:
    """The session's PostgreSQL database, emptied for this test (schema ``public`` recreated)."""
    # Creating a database per test costs about a second; recreating the schema, milliseconds.
    _run_apart(
        _admin(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()",
            "DROP SCHEMA public CASCADE",
            "CREATE SCHEMA public AUTHORIZATION pg_database_owner",
            "GRANT USAGE ON SCHEMA public TO PUBLIC",
            url=pg_database,
        )
    )
    return pg_database


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'audit.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    opened = await Store.open(db_url)
    try:
        await opened.upgrade()
        yield opened
    finally:
        await opened.close()
