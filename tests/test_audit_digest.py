"""The answer digest: a run whose answers are byte for byte those the record was last made to
match skips reading and diffing the record; every other run is diffed as before.

Audits run in process (``audit_many``) against the simulator over real HTTP and a real
database (SQLite and PostgreSQL): what is asserted is what each run reports and records.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import pytest
from pydantic import SecretStr
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from auditor.audit import AuditResult, audit_many
from auditor.config import Settings, TargetSettings
from auditor.simulator import Pbx, Simulator, serve
from auditor.store import Store
from auditor.store.schema import targets

TARGET = "pbx-hq"


@pytest.fixture
async def hq() -> AsyncIterator[tuple[Pbx, str]]:
    pbx = Pbx(TARGET, scripts=130, seed=5, states=True)
    async with serve(Simulator([pbx])) as base:
        yield pbx, base


def settings_for(db_url: str, base: str, *, ignore: Sequence[str] = ()) -> Settings:
    return Settings(
        database={"url": db_url},
        targets=(
            TargetSettings(
                name=TARGET,
                url=f"{base}/{TARGET}",
                client_id="auditor",
                client_secret=SecretStr("secret"),
                retries=0,
                request_timeout="5s",
                ignore_fields=tuple(ignore),
            ),
        ),
    )


async def audit(settings: Settings, store: Store) -> AuditResult:
    [result] = await audit_many(settings, store.record, settings.targets)
    assert result.ok, result.error
    return result


def kinds(result: AuditResult) -> list[tuple[str, str | None]]:
    return sorted((a.kind, a.key) for a in result.alerts)


async def stored_digest(raw: AsyncEngine) -> str | None:
    async with raw.connect() as conn:
        value = (await conn.execute(select(targets.c.digest))).scalar_one()
    return None if value is None else str(value)


async def test_changes_after_quiet_runs_are_found_even_back_to_old_answers(
    db_url: str, store: Store, raw: AsyncEngine, hq: tuple[Pbx, str]
) -> None:
    pbx, base = hq
    settings = settings_for(db_url, base)
    first = await audit(settings, store)
    assert (first.baseline, first.items) == (True, 130)
    baseline_digest = await stored_digest(raw)
    assert baseline_digest is not None

    quiet = await audit(settings, store)
    assert (quiet.changes, quiet.alerts) == (0, ())
    assert await stored_digest(raw) == baseline_digest

    # One field of the settings: the answers differ by a few bytes.
    mode = pbx.settings["Mode"]
    other = "Passive" if mode == "Active" else "Active"
    pbx.update_settings(Mode=other)
    changed = await audit(settings, store)
    assert kinds(changed) == [("settings.changed", "settings")]
    assert await stored_digest(raw) not in (None, baseline_digest)

    # Back to the baseline's answers, byte for byte: not what the record now holds.
    pbx.update_settings(Mode=mode)
    back = await audit(settings, store)
    assert kinds(back) == [("settings.changed", "settings")]
    assert back.changes == 1
    assert await stored_digest(raw) == baseline_digest


async def test_ignored_changes_are_counted_on_every_run(
    db_url: str, store: Store, raw: AsyncEngine, hq: tuple[Pbx, str]
) -> None:
    """A change hidden by ignore_fields leaves the record unlike the answers: no digest, so
    each run diffs again and keeps reporting how many changes it ignored."""
    pbx, base = hq
    settings = settings_for(db_url, base, ignore=["State"])
    await audit(settings, store)
    victim = next(n for n in pbx.filenames if pbx.item(n).get("State") == "Connected")
    pbx.set_state(victim, "Disconnected")

    first = await audit(settings, store)
    # The state rule still sees the state: only the change record ignores it.
    assert kinds(first) == [("script.disconnected", victim)]
    assert (first.changes, first.suppressed) == (0, 1)
    assert await stored_digest(raw) is None
    second = await audit(settings, store)
    assert (second.changes, second.suppressed, second.alerts) == (0, 1, ())
    assert await stored_digest(raw) is None

    # Once the record matches the answers again, the digest is back.
    pbx.set_state(victim, "Connected")
    back = await audit(settings, store)
    assert kinds(back) == [("script.reconnected", victim)]
    assert (back.changes, back.suppressed) == (0, 0)
    assert await stored_digest(raw) is not None


async def test_a_record_without_a_digest_is_diffed_and_gets_one(
    db_url: str, store: Store, raw: AsyncEngine, hq: tuple[Pbx, str]
) -> None:
    """A database migrated from before the digest holds none: the next run diffs as always
    (and finds what changed meanwhile), then stores one."""
    pbx, base = hq
    settings = settings_for(db_url, base)
    await audit(settings, store)
    async with raw.begin() as conn:
        await conn.execute(update(targets).values(digest=None))
    pbx.add_script("zz-new.sh")
    result = await audit(settings, store)
    assert kinds(result) == [("script.added", "zz-new.sh")]
    assert await stored_digest(raw) is not None
    quiet = await audit(settings, store)
    assert (quiet.changes, quiet.alerts) == (0, ())
