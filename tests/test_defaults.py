"""Defaults that fit the machine: how many audits run at once (``audit.max_concurrent``), the
open-file limit a process that audits lifts for itself, the PostgreSQL pool however many audits
run at once; and a ``schedule.jitter`` that never holds a target back past its interval.

Open-file limits are set in child processes: a process cannot raise its hard limit again.
"""

from __future__ import annotations

import asyncio
import os
import random
import resource
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from auditor.config import (
    AUDITS_CAP,
    FILES_RESERVED,
    AuditSettings,
    ScheduleSettings,
    load_settings,
)
from auditor.service.schedule import first_run, schedule_of
from auditor.simulator import Simulator, serve
from auditor.store import driver_url
from auditor.store.database import Database
from auditor.store.engine import pool_size_for

ROOT = Path(__file__).resolve().parents[1]
SECRET_ENV = "AUDITOR_TEST_PBX_SECRET"
# SQLAlchemy's default: connections a pool opens beyond its size, closed when returned.
POOL_OVERFLOW = 10
# The children's limits stay within this process's hard limit (which they cannot exceed).
HARD_LIMIT = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
needs_4096 = pytest.mark.skipif(
    HARD_LIMIT != resource.RLIM_INFINITY and HARD_LIMIT < 4096,
    reason="the hard open-file limit here is below 4096",
)


def in_child(code: str, *, soft: int, hard: int, env: dict[str, str] | None = None) -> str:
    """Run ``code`` in a Python child whose open-file limit is (soft, hard); its stdout."""
    prelude = f"import resource; resource.setrlimit(resource.RLIMIT_NOFILE, ({soft}, {hard}))\n"
    done = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        env={k: v for k, v in {**os.environ, **(env or {})}.items() if k != "AUDITOR_CONFIG"},
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def cli_in_child(args: list[str], *, soft: int, hard: int, env: dict[str, str]) -> str:
    """``3cx-auditor ARGS`` under that limit; stdout, then a line ``exit N``, then stderr."""
    return in_child(
        f"""
        import contextlib, io, sys
        from auditor.cli import main
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = main({args!r})
        print("exit", code)
        print(err.getvalue())
        """,
        soft=soft,
        hard=hard,
        env=env,
    )


@pytest.mark.parametrize(
    ("hard", "expected"),
    [
        pytest.param(4096, AUDITS_CAP, marks=needs_4096),
        # Room for 36 audits (2 open files each) beside the reserve.
        (FILES_RESERVED + 72, 36),
        # Less than the reserve: still one audit at a time.
        (FILES_RESERVED // 2, 1),
    ],
)
def test_default_max_concurrent_fits_the_open_file_limit(hard: int, expected: int) -> None:
    code = "from auditor.config import AuditSettings; print(AuditSettings().max_concurrent)"
    assert in_child(code, soft=min(hard, 64), hard=hard).strip() == str(expected)


@needs_4096
def test_an_explicit_max_concurrent_is_honoured_and_too_many_is_said(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "auditor.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            [audit]
            max_concurrent = 500
            [[targets]]
            name = "pbx-hq"
            url = "https://pbx-hq.example.com"
            client_id = "auditor"
            client_secret_env = "{SECRET_ENV}"
            """
        )
    )
    env = {SECRET_ENV: "s3cret"}
    monkeypatch.setenv(SECRET_ENV, "s3cret")
    assert load_settings(config).settings.audit.max_concurrent == 500
    # The hard limit holds 500 audits: nothing to say.
    out = cli_in_child(["--config", str(config), "check-config"], soft=256, hard=4096, env=env)
    assert out.splitlines()[1] == "exit 0"
    assert "max_concurrent" not in out
    # It does not: one line says so, and the value is still taken.
    out = cli_in_child(["--config", str(config), "check-config"], soft=256, hard=512, env=env)
    lines = out.splitlines()
    assert lines[1] == "exit 0"
    (warning,) = [line for line in lines if "max_concurrent" in line]
    assert warning.startswith("config: audit.max_concurrent: 500 audits at once need about ")
    assert "may open 512" in warning


@needs_4096
async def test_once_lifts_a_low_soft_open_file_limit(tmp_path: Path) -> None:
    """64 audits at once (the default) each hold a connection while the PBXs answer slowly;
    with a soft limit of 40 open files most of them could not connect (no retries here), so
    ``once`` lifts it to what it needs, within the hard limit."""
    count = 100
    sim = Simulator.fleet(count, scripts=3, history=0)
    for pbx in sim:
        pbx.add_fault("delay", endpoint="any", seconds=0.3)
    async with serve(sim, control=False) as base:
        config = tmp_path / "auditor.toml"
        lines = ["[database]", f'url = "sqlite:///{tmp_path / "audit.db"}"']
        for pbx in sim:
            lines += [
                "[[targets]]",
                f'name = "{pbx.name}"',
                f'url = "{base}/{pbx.name}"',
                'client_id = "auditor"',
                f'client_secret_env = "{SECRET_ENV}"',
                "retries = 0",
            ]
        config.write_text("\n".join(lines) + "\n")
        out = await asyncio.to_thread(
            cli_in_child,
            ["--config", str(config), "once"],
            soft=40,
            hard=4096,
            env={SECRET_ENV: "secret"},
        )
    assert "exit 0" in out.splitlines(), out[-3000:]
    assert sum(1 for line in out.splitlines() if ": ok, 3 scripts " in line) == count


@pytest.mark.postgres
async def test_the_pool_stays_bounded_however_many_audits_run_at_once(pg_url: str) -> None:
    """Audits hold a connection only for their short transactions: with 1000 allowed at once,
    60 transactions in flight share the bounded pool, and the rest wait their turn."""
    db = await Database.open(pg_url, concurrency=1000)
    counter = create_async_engine(driver_url(pg_url), poolclass=NullPool)
    release = asyncio.Event()
    inside = 0

    async def hold() -> None:
        nonlocal inside
        async with db.read() as conn:
            await conn.exec_driver_sql("SELECT 1")
            inside += 1
            await release.wait()

    holders = [asyncio.create_task(hold()) for _ in range(60)]
    try:
        bound = pool_size_for(1000) + POOL_OVERFLOW
        seen = -1
        # Until the holders stop getting in (the pool is exhausted) or all are in.
        while inside != seen and inside < len(holders):
            seen = inside
            await asyncio.sleep(1.0)
        async with counter.connect() as conn:
            backends = (
                await conn.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity"
                        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                )
            ).scalar_one()
        assert inside == bound
        assert backends == bound
    finally:
        release.set()
        await asyncio.gather(*holders, return_exceptions=True)
        await counter.dispose()
        await db.close()


def test_the_jitter_defaults_to_at_most_the_interval() -> None:
    def jitter(**schedule: str) -> float:
        return ScheduleSettings.model_validate(schedule).jitter.total_seconds()

    assert jitter() == 30
    assert jitter(every="10s") == 10
    assert jitter(every="1h") == 30
    assert jitter(cron="*/5 * * * *") == 30
    assert AuditSettings(max_concurrent=3).max_concurrent == 3


def test_a_jitter_longer_than_the_interval_is_refused_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "auditor.toml"
    config.write_text('[schedule]\nevery = "10s"\njitter = "30s"\n')
    done = subprocess.run(
        [sys.executable, "-m", "auditor", "--config", str(config), "check-config"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        "config: schedule.jitter: 30s is longer than schedule.every (10s): a new target would "
        "wait several intervals for its first audit; use at most 10s"
    ]
    # Up to the interval it is taken, and a cron schedule draws it anew for each run.
    config.write_text('[schedule]\nevery = "10s"\njitter = "10s"\n')
    assert load_settings(config).settings.schedule.jitter.total_seconds() == 10
    config.write_text('[schedule]\ncron = "* * * * *"\njitter = "5m"\n')
    assert load_settings(config).settings.schedule.jitter.total_seconds() == 300


def test_a_short_interval_places_every_new_target_within_it() -> None:
    """With every = 10s and no jitter set, a new target's first audit is due within 10s (it
    was up to 30s: three intervals)."""
    schedule = schedule_of(ScheduleSettings.model_validate({"every": "10s"}))
    now = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)
    rng = random.Random(7)
    firsts = [first_run(schedule, now, rng) for _ in range(500)]
    assert all(now <= f <= now + timedelta(seconds=10) for f in firsts)
    assert max(firsts) - min(firsts) > timedelta(seconds=8)
