"""`once` beside a daemon on one SQLite file is refused: both would audit the same targets."""

from __future__ import annotations

import os
from pathlib import Path

from auditor.store.lock import SqliteLock
from tests.clirun import SECRET_ENV, Cli


def write_config(path: Path, database: Path) -> Path:
    path.write_text(
        f"""
[database]
url = "sqlite:///{database}"

[[targets]]
name = "pbx-hq"
url = "http://127.0.0.1:9/pbx-hq"
client_id = "auditor"
client_secret_env = "{SECRET_ENV}"
retries = 0
""",
        encoding="utf-8",
    )
    return path


async def test_once_refuses_a_sqlite_file_another_process_holds(tmp_path: Path) -> None:
    database = tmp_path / "audit.db"
    cli = Cli(write_config(tmp_path / "auditor.toml", database), "once-lock-test-secret")
    url = f"sqlite:///{database}"
    held = SqliteLock.acquire(url)  # as a running daemon holds it
    assert held is not None
    try:
        outcome = await cli("once")
    finally:
        held.release()
    assert outcome.code == 2, str(outcome)
    assert outcome.stdout == ""
    assert outcome.stderr.strip().splitlines() == [
        f"database: {url} is in use by another 3cx-auditor process (pid "
        f"{os.getpid()}); SQLite serves one process — use PostgreSQL for replicas"
    ]
    # Released: the same command now runs (and fails on the unreachable PBX, exit 1).
    outcome = await cli("once")
    assert outcome.code == 1, str(outcome)
    assert "pbx-hq: failed" in outcome.stderr
