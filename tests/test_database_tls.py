"""Database TLS by choice: the mode a PostgreSQL URL asks for is honoured, stated and checked.

``sslmode`` (libpq's name, with ``sslrootcert`` and the rest) used to crash the driver with
a ``TypeError``; the default (``prefer``: the certificate not checked, plain text when the
server offers no TLS) was never said. Now: the daemon's start line states the mode, where it
came from and whether the connection is encrypted; ``check-config`` warns when a database on
another host is reached without verified TLS, and refuses modes and parameters the driver
does not know. The daemon and the commands run as real subprocesses on the real PostgreSQL.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from auditor.config import load_settings
from tests.conftest import DaemonSpawner, _run_apart, daemon_config

REMOTE = "postgresql://auditor@db.example.com/audit"


def write(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "auditor.toml"
    path.write_text(f'[database]\nurl = "{url}"\n')
    path.chmod(0o600)
    return path


def run(config: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("AUDITOR_", "PGSSL"))}
    done = subprocess.run(
        [sys.executable, "-m", "auditor", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**environ, **(env or {})},
        check=False,
    )
    return done.returncode, done.stderr


@pytest.mark.parametrize(
    ("url", "env", "warned"),
    [
        (REMOTE, {}, "sslmode=prefer, the driver's default"),
        (REMOTE + "?sslmode=require", {}, "sslmode=require, sslmode in the URL"),
        (REMOTE + "?sslmode=disable", {}, "sslmode=disable, sslmode in the URL"),
        (REMOTE + "?ssl=allow", {}, "sslmode=allow, ssl in the URL"),
        (REMOTE, {"PGSSLMODE": "require"}, "sslmode=require, $PGSSLMODE"),
        (REMOTE + "?sslmode=verify-full&sslrootcert=/etc/ca.crt", {}, None),
        (REMOTE + "?sslmode=verify-ca&sslrootcert=/etc/ca.crt", {}, None),
        # "require" checks the chain when it is given a root certificate (libpq's rule).
        (REMOTE + "?sslmode=require&sslrootcert=/etc/ca.crt", {}, None),
        (REMOTE, {"PGSSLMODE": "verify-full"}, None),
        ("postgresql://auditor@127.0.0.1/audit", {}, None),
        ("postgresql://auditor@[::1]:5432/audit", {}, None),
        ("postgresql:///audit?host=/run/postgresql", {}, None),
    ],
)
def test_check_config_warns_of_a_remote_database_without_verified_tls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str, env: dict[str, str], warned: str
) -> None:
    # No ~/.postgresql/root.crt of the machine's user may change the answer.
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("PGSSLMODE", "PGSSLROOTCERT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    warnings = load_settings(write(tmp_path, url)).warnings
    if warned is None:
        assert warnings == ()
    else:
        (warning,) = warnings
        assert warning.startswith(
            "config: database.url: PostgreSQL on db.example.com is reached without verified "
            f"TLS ({warned}): "
        )
        assert warning.endswith("add sslmode=verify-full&sslrootcert=/path/to/ca.crt to the URL")


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ("sslmode=bogus", "sslmode 'bogus' is not one of disable, allow, prefer, require, "),
        ("ssl=true", "ssl 'true' is not one of disable, allow, prefer, require, "),
        ("sslmode=require&ssl=require", "set sslmode or ssl, not both"),
        ("sslmod=require", "unknown parameter 'sslmod' (known: application_name, "),
        ("sslmode=require&sslmode=disable", "parameter 'sslmode' is given more than once"),
    ],
)
def test_a_mode_or_parameter_the_driver_does_not_know_is_refused(
    tmp_path: Path, query: str, problem: str
) -> None:
    code, stderr = run(write(tmp_path, f"{REMOTE}?{query}"), "check-config")
    assert code == 2, stderr
    assert stderr.startswith(f"config: database.url: {problem}"), stderr
    assert "Traceback" not in stderr


def test_check_config_prints_the_warning(tmp_path: Path) -> None:
    code, stderr = run(write(tmp_path, REMOTE), "check-config", env={"HOME": str(tmp_path)})
    assert code == 0
    assert stderr.startswith("config: database.url: PostgreSQL on db.example.com is reached")


def server_has_tls(url: str) -> bool:
    found: list[str] = []

    async def ask() -> None:
        from sqlalchemy.ext.asyncio import create_async_engine
        from sqlalchemy.pool import NullPool

        from auditor.store import driver_url

        engine = create_async_engine(driver_url(url), poolclass=NullPool)
        try:
            async with engine.connect() as conn:
                found.append(str((await conn.execute(text("SHOW ssl"))).scalar()))
        finally:
            await engine.dispose()

    _run_apart(ask())
    return found == ["on"]


async def test_the_daemon_states_the_mode_and_what_the_connection_got(
    tmp_path: Path, pg_url: str, spawn_daemon: DaemonSpawner
) -> None:
    encrypted = server_has_tls(pg_url)
    cases = [
        (pg_url, {}, "sslmode=prefer, the driver's default: TLS when the server offers it, "),
        (pg_url + "?sslmode=disable", {}, "sslmode=disable, sslmode in the URL: no TLS; "),
        (pg_url + "?ssl=disable", {}, "sslmode=disable, ssl in the URL: no TLS; "),
        (pg_url, {"PGSSLMODE": "disable"}, "sslmode=disable, $PGSSLMODE: no TLS; "),
    ]
    for url, env, stated in cases:
        config = daemon_config(tmp_path / "auditor.toml", database=url, targets=[])
        daemon = await spawn_daemon(config, env={"HOME": str(tmp_path), **env})
        started_events = functools.partial(daemon.events, "service.started")
        await daemon.until(started_events, f"the start on {url}")
        assert await daemon.stop() == 0
        (started,) = daemon.events("service.started")
        assert started["database_tls"].startswith(stated)
        plain = "disable" in stated or not encrypted
        got = "not encrypted" if plain else "encrypted ("
        assert f"; this connection: {got}" in started["database_tls"]


async def test_sslmode_in_the_url_is_honoured(tmp_path: Path, pg_url: str) -> None:
    """``sslmode=require`` used to crash the driver (TypeError); now it asks for TLS, and a
    server without it is refused in one line."""
    config = daemon_config(
        tmp_path / "auditor.toml", database=pg_url + "?sslmode=require", targets=[]
    )
    code, stderr = run(config, "db", "upgrade", env={"HOME": str(tmp_path)})
    assert "Traceback" not in stderr
    if server_has_tls(pg_url):
        assert code == 0, stderr
    else:
        assert code == 1
        (line,) = stderr.splitlines()
        assert line.startswith(f"error: database {pg_url}?sslmode=require: cannot connect: ")
        assert "rejected SSL upgrade" in line
