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
import inspect
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterator,
    Mapping,
    Sequence,
)
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
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


@pytest.fixture
async def raw(db_url: str, store: Store) -> AsyncIterator[AsyncEngine]:
    """A plain engine on the same database, for looking behind the store's back."""
    engine = create_async_engine(driver_url(db_url), poolclass=NullPool)
    try:
        yield engine
    finally:
        await engine.dispose()


# -- TLS (tests/xapi/test_client.py, tests/simulator/test_serving.py) ---------------------


@pytest.fixture
def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate and key for 127.0.0.1, made with openssl for one day."""
    openssl = shutil.which("openssl")
    if openssl is None:
        why = "openssl is not installed: no self-signed certificate for the TLS test"
        if os.environ.get("AUDITOR_REQUIRE_OPENSSL") == "1":
            pytest.fail(why)
        pytest.skip(why)
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


# -- the daemon as a subprocess (test_service.py, test_replicas.py) ---------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def daemon_config(
    path: Path,
    *,
    database: str,
    targets: Sequence[tuple[str, str]],
    every: str = "2s",
    tick: str = "250ms",
    timeout: str = "20s",
    grace: str = "10s",
    max_concurrent: int = 8,
    listen: str | None = None,
    extra: str = "",
    lease: str | None = None,
) -> Path:
    """Write a daemon configuration with a short schedule; ``targets`` are (name, url).

    ``listen`` defaults to a free port of 127.0.0.1; ``lease`` to schedule.lease's default.
    """
    text = f"""
[database]
url = "{database}"
[schedule]
every = "{every}"
jitter = "0s"
tick = "{tick}"
{f'lease = "{lease}"' if lease else ""}
[audit]
timeout = "{timeout}"
shutdown_grace = "{grace}"
max_concurrent = {max_concurrent}
[http]
listen = "{listen or f"127.0.0.1:{free_port()}"}"
[log]
format = "json"
{extra}
"""
    for name, url in targets:
        text += f"""
[[targets]]
name = "{name}"
url = "{url}"
client_id = "auditor"
client_secret = "secret"
retries = 1
request_timeout = "60s"
"""
    path.write_text(text)
    path.chmod(0o600)
    return path


# The environment a daemon must not inherit from the one running the tests.
_DAEMON_ENV_DROP = ("JOURNAL_STREAM", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


@dataclass
class Daemon:
    """A ``3cx-auditor run`` subprocess; its JSON log lines (stderr) and alerts (stdout)."""

    proc: asyncio.subprocess.Process
    logs: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    readers: list[asyncio.Task[None]] = field(default_factory=list)

    def events(self, name: str) -> list[dict[str, Any]]:
        return [line for line in self.logs if line.get("event") == name]

    def stderr_tail(self, lines: int = 30) -> str:
        return "\n".join(json.dumps(line) for line in self.logs[-lines:])

    async def until(self, check: Callable[[], object], what: str, within: float = 60.0) -> None:
        """Wait until ``check()`` is true; fail naming ``what`` (and the daemon's last log
        lines) when it is not within ``within`` seconds or the daemon exits."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            result = check()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return
            if self.proc.returncode is not None:
                pytest.fail(
                    f"daemon exited ({self.proc.returncode}) before {what}:\n{self.stderr_tail()}"
                )
            if loop.time() > deadline:
                pytest.fail(f"no {what} within {within:.0f}s:\n{self.stderr_tail()}")
            await asyncio.sleep(0.1)

    async def stop(self, sig: signal.Signals = signal.SIGTERM, within: float = 60.0) -> int:
        """Send ``sig`` and wait for the exit code (failing after ``within`` seconds)."""
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        return await self.exited(within)

    async def exited(self, within: float = 60.0) -> int:
        """The exit code, once the daemon has exited (failing after ``within`` seconds)."""
        try:
            code = await asyncio.wait_for(self.proc.wait(), within)
        except TimeoutError:
            pytest.fail(f"daemon still running after {within:.0f}s:\n{self.stderr_tail()}")
        await asyncio.gather(*self.readers)
        return code


async def _read_lines(stream: asyncio.StreamReader, into: list[dict[str, Any]]) -> None:
    while line := await stream.readline():
        text = line.decode(errors="replace").rstrip("\n")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = None
        into.append(value if isinstance(value, dict) else {"event": "(not json)", "text": text})


DaemonSpawner = Callable[..., Awaitable[Daemon]]


@pytest.fixture
async def spawn_daemon() -> AsyncIterator[DaemonSpawner]:
    """``await spawn_daemon(config_path, env={...})`` starts ``python -m auditor run``;
    daemons still running at the end of the test are killed."""
    started: list[Daemon] = []

    async def spawn(config: Path, *, env: Mapping[str, str] | None = None) -> Daemon:
        environ = {k: v for k, v in os.environ.items() if k not in _DAEMON_ENV_DROP}
        environ = {k: v for k, v in environ.items() if not k.startswith("AUDITOR_")}
        environ.update(env or {})
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "auditor",
            "--config",
            str(config),
            "run",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=environ,
        )
        assert proc.stdout is not None
        assert proc.stderr is not None
        daemon = Daemon(proc)
        daemon.readers = [
            asyncio.create_task(_read_lines(proc.stderr, daemon.logs)),
            asyncio.create_task(_read_lines(proc.stdout, daemon.alerts)),
        ]
        started.append(daemon)
        return daemon

    try:
        yield spawn
    finally:
        for daemon in started:
            if daemon.proc.returncode is None:
                daemon.proc.kill()
                await daemon.proc.wait()
            await asyncio.gather(*daemon.readers, return_exceptions=True)
