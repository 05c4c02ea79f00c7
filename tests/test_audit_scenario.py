"""The audit end to end: ``once`` and ``verify`` as real subprocesses against the simulator.

The simulator is served in the test's own event loop, so the test changes the simulated PBX
between two ``once`` runs the way a PBX admin would. Every run goes through the real CLI
(``python -m auditor --config FILE once``), the real HTTP client and the real database
(a SQLite file, and the PostgreSQL server): what is asserted is what a user sees on stdout,
stderr and in the exit code, plus what the database holds afterwards.
"""

from __future__ import annotations

import re
import secrets
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from auditor.model import SCRIPTS, SETTINGS, SETTINGS_KEY
from auditor.simulator import Pbx, Simulator, serve
from auditor.store import driver_url
from auditor.store.schema import alert_events, alerts, changes, outbox, runs, versions
from tests.clirun import ALERT_FIELDS, SECRET_ENV, Cli, Outcome

TARGET = "pbx-hq"
SCRIPT_COUNT = 250
PROJECT = Path(__file__).resolve().parent.parent


def write_config(path: Path, db_url: str, base: str, *, disconnected_after: int) -> Path:
    path.write_text(
        f"""
[database]
url = "{db_url}"

[alerts]
disconnected_after = {disconnected_after}

[audit]
timeout = "60s"

[log]
level = "info"
format = "json"

[[targets]]
name = "{TARGET}"
url = "{base}/{TARGET}"
client_id = "auditor"
client_secret_env = "{SECRET_ENV}"
retries = 0
# The failover history only: these tests count its records.
collections = ["failover_scripts", "failover_settings"]
request_timeout = "10s"
""",
        encoding="utf-8",
    )
    return path


@pytest.fixture
async def raw(db_url: str) -> AsyncIterator[AsyncEngine]:
    """A plain engine on the test's database, for looking (and tampering) behind the CLI."""
    engine = create_async_engine(driver_url(db_url), poolclass=NullPool)
    try:
        yield engine
    finally:
        await engine.dispose()


COUNTED = {
    "runs": runs,
    "versions": versions,
    "changes": changes,
    "alert_events": alert_events,
    "alerts": alerts,
    "outbox": outbox,
}


async def row_counts(engine: AsyncEngine) -> dict[str, int]:
    async with engine.connect() as conn:
        return {
            name: int((await conn.execute(select(func.count()).select_from(table))).scalar_one())
            for name, table in COUNTED.items()
        }


def assert_alert_lines(outcome: Outcome) -> None:
    """Every stdout line of ``once`` is an alert log line in the documented shape."""
    for line in outcome.alerts:
        assert line["alert"] is True, line
        assert line["event"] == line["kind"], line
        assert set(line) >= ALERT_FIELDS, line
        assert line["target"] == TARGET


def names_record(outcome: Outcome, record: int) -> bool:
    return re.search(rf"BROKEN at change record {record}\b", outcome.stdout) is not None


def assert_ok(outcome: Outcome, expected: Counter[tuple[str, str | None]]) -> None:
    assert outcome.code == 0, str(outcome)
    assert_alert_lines(outcome)
    assert outcome.pairs() == expected, str(outcome)


async def test_audit_scenario(db_url: str, raw: AsyncEngine, tmp_path: Path) -> None:
    secret = "pbx-secret-" + secrets.token_urlsafe(16)
    hq = Pbx(TARGET, scripts=SCRIPT_COUNT, seed=3, states=True, client_secret=secret)
    sim = Simulator([hq])
    async with serve(sim) as base:
        config = write_config(tmp_path / "auditor.toml", db_url, base, disconnected_after=2)
        cli = Cli(config, secret)

        # 1. Baseline: everything is new, nothing is alerted.
        first = await cli("once")
        assert_ok(first, Counter())
        assert "baseline" in first.stderr
        assert f"{SCRIPT_COUNT} scripts in 3 page(s)" in first.stderr
        assert hq.stats.max_top == 100

        # 2. A PBX admin's afternoon: two scripts added, one removed, one renamed, the
        #    failover mode switched and one script disconnected.
        names = hq.filenames
        settings = hq.settings
        named = {settings["PreStartScript"], settings["PostStartScript"]}
        spare = [n for n in names if n not in named]
        removed, renamed, flipped = spare[10], spare[20], spare[30]
        renamed_to = "zz-renamed-" + renamed
        hq.add_script("aa-added-one.sh")
        hq.add_script("aa-added-two.ps1")
        hq.remove_script(removed)
        hq.rename_script(renamed, renamed_to)
        new_mode = "Passive" if settings["Mode"] == "Active" else "Active"
        hq.update_settings(Mode=new_mode)
        hq.set_state(flipped, "Disconnected")

        second = await cli("once")
        assert_ok(
            second,
            Counter(
                {
                    ("script.added", "aa-added-one.sh"): 1,
                    ("script.added", "aa-added-two.ps1"): 1,
                    ("script.added", renamed_to): 1,
                    ("script.removed", removed): 1,
                    ("script.removed", renamed): 1,
                    ("settings.changed", SETTINGS_KEY): 1,
                    ("script.disconnected", flipped): 1,
                }
            ),
        )
        by_kind = {a["kind"]: a for a in second.alerts}
        assert by_kind["settings.changed"]["fields"] == [
            {"field": "Mode", "old": settings["Mode"], "new": new_mode}
        ]
        assert by_kind["settings.changed"]["collection"] == SETTINGS
        assert by_kind["script.disconnected"]["status"] == "firing"
        assert by_kind["script.disconnected"]["collection"] == SCRIPTS
        assert "Disconnected" in by_kind["script.disconnected"]["message"]
        assert {a["run_id"] for a in second.alerts} == {by_kind["script.added"]["run_id"]}
        assert "7 change(s)" in second.stderr  # the state flip is in the history, unalerted

        # 3. Nothing changed: one runs row, nothing else.
        before = await row_counts(raw)
        quiet = await cli("once")
        assert_ok(quiet, Counter())
        after = await row_counts(raw)
        assert after == {**before, "runs": before["runs"] + 1}

        # 4. Page 2 fails every time: a failed run, one audit.failed, never a removal.
        fault = hq.add_fault("status", endpoint="scripts", skip=100, status=500, times=None)
        failed = await cli("once")
        assert failed.code == 1, str(failed)
        assert_alert_lines(failed)
        assert failed.pairs() == Counter({("audit.failed", None): 1}), str(failed)
        assert "failed" in failed.stderr
        assert fault.fired >= 1
        async with raw.connect() as conn:
            row = (
                await conn.execute(
                    select(runs.c.status, runs.c.error).order_by(runs.c.id.desc()).limit(1)
                )
            ).one()
        assert row.status == "failed"
        assert "page 2" in row.error, row.error

        # 5. Still failing: audit.failed is not repeated; the second failure in a row makes
        #    the target disconnected (disconnected_after = 2), once.
        again = await cli("once")
        assert again.code == 1, str(again)
        assert_alert_lines(again)
        assert again.pairs() == Counter({("target.disconnected", None): 1}), str(again)
        assert again.alerts[0]["severity"] == "critical"

        # 6. Back, with one real change: diffed against the last complete run (3), so the
        #    failed runs cannot make anything look added or removed.
        hq.clear_faults()
        hq.add_script("aa-added-three.sh")
        back = await cli("once")
        assert back.code == 0, str(back)
        assert_alert_lines(back)
        assert back.pairs() == Counter(
            {
                ("script.added", "aa-added-three.sh"): 1,
                ("audit.failed", None): 1,
                ("target.reconnected", None): 1,
            }
        ), str(back)
        statuses = {a["kind"]: a["status"] for a in back.alerts}
        assert statuses == {
            "script.added": "firing",
            "audit.failed": "resolved",
            "target.reconnected": "resolved",
        }
        fingerprints = {a["kind"]: a["fingerprint"] for a in failed.alerts + again.alerts}
        resolved = {a["kind"]: a["fingerprint"] for a in back.alerts}
        assert resolved["audit.failed"] == fingerprints["audit.failed"]
        assert resolved["target.reconnected"] == fingerprints["target.disconnected"]
        assert "1 change(s)" in back.stderr

        # 7. The script the failover settings start first is deleted.
        pre = settings["PreStartScript"]
        hq.remove_script(pre)
        missing = await cli("once")
        assert_ok(
            missing,
            Counter({("script.removed", pre): 1, ("settings.script_missing", "PreStartScript"): 1}),
        )
        alert = next(a for a in missing.alerts if a["kind"] == "settings.script_missing")
        assert pre in alert["message"]
        assert alert["severity"] == "critical"

        # 8. The history's hash chain is intact, and the CLI names its head.
        async with raw.connect() as conn:
            rows = (
                await conn.execute(
                    select(changes.c.id, changes.c.hash, changes.c.after).order_by(changes.c.id)
                )
            ).all()
        # baseline (250 scripts + settings) + 7 + 1 + 1
        assert len(rows) == SCRIPT_COUNT + 1 + 7 + 1 + 1
        intact = await cli("verify")
        assert intact.code == 0, str(intact)
        assert rows[-1].hash in intact.stdout
        assert f"{len(rows)} change records" in intact.stdout

        # 9. Tampering with one record's content is found, and named.
        victim = rows[len(rows) // 2]
        forged = {**victim.after, "State": "Forged"} if victim.after else {"forged": True}
        async with raw.begin() as conn:
            await conn.execute(
                update(changes).where(changes.c.id == victim.id).values(after=forged)
            )
        tampered = await cli("verify")
        assert tampered.code == 1, str(tampered)
        assert names_record(tampered, victim.id)
        assert "BROKEN" in tampered.stdout

        # 10. So is a record deleted from the middle of the chain (before the forged one, so
        #     it is the first bad record).
        gone = rows[len(rows) // 3].id
        async with raw.begin() as conn:
            await conn.execute(changes.delete().where(changes.c.id == gone))
        deleted = await cli("verify")
        assert deleted.code == 1, str(deleted)
        assert names_record(deleted, gone)
