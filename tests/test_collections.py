"""Every collection audited over real HTTP against the simulator, into a real database:
backups (read once per new backup for their extras), backup settings and repository next to
the failover scripts and settings; a collection the PBX refuses is unavailable, never
emptied; a backups listing that shifts while paged is listed again; no download link and no
concealed password reaches the record, the logs or an export.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from auditor.audit import AuditResult, audit_many
from auditor.collections import BACKUP_REPOSITORY, BACKUP_SETTINGS, BACKUPS, NAMES
from auditor.config import Settings, TargetSettings
from auditor.metrics import Metrics
from auditor.model import SCRIPTS, SETTINGS
from auditor.simulator import ManualClock, Pbx, Simulator, serve
from auditor.store import Store
from auditor.store.schema import metadata, versions
from auditor.web.app import base_url, make_app, start_http
from auditor.web.state import ServiceState
from tests.clirun import SECRET_ENV, Cli

TARGET = "pbx-hq"
DAY = 86400.0
DIGEST_KEY = "the-digest-key-of-this-test"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def hq(clock: ManualClock) -> AsyncIterator[tuple[Pbx, str]]:
    pbx = Pbx(TARGET, scripts=7, seed=11)
    async with serve(Simulator([pbx], clock=clock)) as base:
        yield pbx, base


def settings_for(
    db_url: str, base: str, *, collections: Sequence[str] = NAMES, page_size: int = 100
) -> Settings:
    return Settings(
        database={"url": db_url},
        audit={"secret_digest_key": DIGEST_KEY},
        targets=(
            TargetSettings(
                name=TARGET,
                url=f"{base}/{TARGET}",
                client_id="auditor",
                client_secret=SecretStr("secret"),
                retries=0,
                request_timeout="5s",
                page_size=page_size,
                collections=tuple(collections),
            ),
        ),
    )


async def audit(settings: Settings, store: Store) -> AuditResult:
    [result] = await audit_many(settings, store.record, settings.targets)
    assert result.ok, result.error
    return result


async def recorded(raw: AsyncEngine) -> dict[tuple[str, str], dict[str, Any]]:
    """The current version of every item, by (collection, key)."""
    async with raw.connect() as conn:
        rows = (
            await conn.execute(
                select(versions.c.collection, versions.c.key, versions.c.body).where(
                    versions.c.last_run_id.is_(None)
                )
            )
        ).all()
    return {(row.collection, row.key): row.body for row in rows}


async def database_text(raw: AsyncEngine, db_url: str) -> str:
    """Every row of every table as text, plus the SQLite files' bytes."""
    parts: list[str] = []
    async with raw.connect() as conn:
        for table in metadata.sorted_tables:
            parts += [repr(tuple(row)) for row in (await conn.execute(select(table))).all()]
    if db_url.startswith("sqlite:///"):
        parts.append(sqlite_files(Path(db_url.removeprefix("sqlite:///"))))
    return "\n".join(parts)


def sqlite_files(database: Path) -> str:
    """The bytes of a SQLite database and its journal files, as text."""
    files = sorted(database.parent.glob(database.name + "*"))
    return "".join(f.read_bytes().decode("latin-1") for f in files if f.is_file())


def extras_requests(pbx: Pbx) -> int:
    return len(pbx.stats.for_endpoint("backup_extras"))


async def test_every_collection_is_recorded_without_its_secrets(
    db_url: str,
    store: Store,
    raw: AsyncEngine,
    hq: tuple[Pbx, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    pbx, base = hq
    result = await audit(settings_for(db_url, base), store)
    assert result.baseline
    record = await recorded(raw)
    assert {c for c, _ in record} == set(NAMES)
    assert sorted(k for c, k in record if c == BACKUPS) == pbx.backups.filenames
    assert len([k for c, k in record if c == SCRIPTS]) == 7
    backup = record[(BACKUPS, pbx.backups.filenames[-1])]
    assert set(backup) == {"CreationTime", "FileName", "Size", "Extras"}
    assert backup["Extras"]["IsEncrypted"] is True
    settings = record[(BACKUP_SETTINGS, "settings")]
    assert settings["ScheduleEnabled"] is True
    location = record[(BACKUP_REPOSITORY, "settings")]["Location"]
    assert location["FileSystemType"] == "Sftp"
    assert location["SftpPassword"]["Value"].startswith("hmac-sha256:")
    assert location["FtpPassword"]["Value"] is None  # unset stays unset

    # The repository password changes: a recorded change and alert, without the password.
    secrets = pbx.backups.secrets()
    pbx.backups.update_location({"SftpPassword": {"Concealed": False, "Value": "new-pw-4711"}})
    changed = await audit(settings_for(db_url, base), store)
    assert [(a.kind, a.collection) for a in changed.alerts] == [
        ("backup_repository.changed", BACKUP_REPOSITORY)
    ]
    assert "new-pw-4711" not in changed.alerts[0].message
    secrets += pbx.backups.secrets()
    # Concealed by the PBX: masked values are digests too (and a change of mask is one).
    pbx.backups.conceal = True
    await audit(settings_for(db_url, base), store)

    links = [item["DownloadLink"] for item in pbx.backups.items()]
    assert links
    assert secrets
    text = await database_text(raw, db_url) + capsys.readouterr().out
    for secret in [*secrets, *links, DIGEST_KEY]:
        assert secret not in text
    assert "DownloadLink" not in text


async def test_extras_are_read_once_per_new_backup_and_backups_do_not_alert(
    db_url: str, store: Store, raw: AsyncEngine, hq: tuple[Pbx, str], clock: ManualClock
) -> None:
    pbx, base = hq
    settings = settings_for(db_url, base)
    await audit(settings, store)
    assert extras_requests(pbx) == 5  # one per backup of the baseline

    quiet = await audit(settings, store)
    assert (quiet.changes, quiet.alerts, extras_requests(pbx)) == (0, (), 5)

    clock.advance(DAY)  # the nightly backup is made, the oldest rotated away
    rotated = await audit(settings, store)
    assert extras_requests(pbx) == 6  # only the new one
    assert rotated.changes == 2
    assert rotated.alerts == ()  # the backups list records, it does not alert
    # Backups alert when the target says so.
    loud = settings.model_copy(
        update={
            "targets": (settings.targets[0].model_copy(update={"alert_on_change": (BACKUPS,)}),)
        }
    )
    clock.advance(DAY)
    noisy = await audit(loud, store)
    assert sorted(a.kind for a in noisy.alerts) == ["backup.added", "backup.removed"]
    record = await recorded(raw)
    assert sorted(k for c, k in record if c == BACKUPS) == pbx.backups.filenames

    # Only the chosen collections are asked for.
    pbx.stats.reset()
    only = settings_for(db_url, base, collections=[SCRIPTS, SETTINGS])
    await audit(only, store)
    assert {r.endpoint for r in pbx.stats.requests} <= {"token", "scripts", "settings"}
    # ... and the others stay recorded as they were.
    assert await recorded(raw) == record


async def test_a_refused_collection_is_unavailable_and_never_removed(
    db_url: str, store: Store, raw: AsyncEngine, hq: tuple[Pbx, str]
) -> None:
    pbx, base = hq
    settings = settings_for(db_url, base)
    await audit(settings, store)
    before = await recorded(raw)

    pbx.add_fault("status", endpoint="backup_repository", status=403)
    pbx.add_fault("status", endpoint="backups", status=404)
    pbx.backups.update_settings({"Contents": {"EncryptBackup": False}})
    refused = await audit(settings, store)
    kinds = sorted((a.kind, a.collection) for a in refused.alerts)
    assert kinds == [
        ("backup_settings.changed", BACKUP_SETTINGS),  # the rest was audited
        ("collection.unavailable", BACKUP_REPOSITORY),
        ("collection.unavailable", BACKUPS),
    ]
    assert refused.changes == 1
    assert sorted(refused.unavailable) == [BACKUP_REPOSITORY, BACKUPS]
    assert "403" in refused.unavailable[BACKUP_REPOSITORY]
    after = await recorded(raw)
    assert {k for k in after if k[0] in (BACKUPS, BACKUP_REPOSITORY)} == {
        k for k in before if k[0] in (BACKUPS, BACKUP_REPOSITORY)
    }
    again = await audit(settings, store)
    assert again.alerts == ()  # once, not on every run

    pbx.clear_faults()
    back = await audit(settings, store)
    assert sorted((a.kind, a.status) for a in back.alerts) == [
        ("collection.available", "resolved"),
        ("collection.available", "resolved"),
    ]

    # The failover scripts refused: a disconnected script is neither resolved nor removed.
    name = pbx.filenames[0]
    pbx.set_state(name, "Disconnected")
    down = await audit(settings, store)
    assert [(a.kind, a.key) for a in down.alerts] == [("script.disconnected", name)]
    pbx.add_fault("status", endpoint="scripts", status=403)
    blind = await audit(settings, store)
    assert [(a.kind, a.collection) for a in blind.alerts] == [("collection.unavailable", SCRIPTS)]
    assert (SCRIPTS, name) in await recorded(raw)
    pbx.clear_faults()
    seen = await audit(settings, store)
    assert [(a.kind, a.collection) for a in seen.alerts] == [("collection.available", SCRIPTS)]

    # Every collection refused: that is a failed audit, not an empty PBX.
    kept = await recorded(raw)
    pbx.add_fault("status", endpoint="xapi", status=403)
    [failed] = await audit_many(settings, store.record, settings.targets)
    assert failed.status == "failed"
    assert "403" in (failed.error or "")
    assert await recorded(raw) == kept


async def test_a_backups_listing_that_shifts_while_paged_is_listed_again(
    db_url: str, store: Store, raw: AsyncEngine, hq: tuple[Pbx, str]
) -> None:
    pbx, base = hq
    settings = settings_for(db_url, base, page_size=2)
    pbx.add_fault("shift", endpoint="backups", skip=2, count=1, times=1)
    result = await audit(settings, store)
    listings = [r for r in pbx.stats.for_endpoint("backups") if r.query.get("$skip") in (None, "0")]
    assert len(listings) == 2  # started over once
    record = await recorded(raw)
    assert sorted(k for c, k in record if c == BACKUPS) == pbx.backups.filenames
    assert len(pbx.backups.filenames) == 6
    assert result.ok


async def test_no_output_log_record_or_export_holds_a_link_or_a_password(tmp_path: Path) -> None:
    """The CLI as a user runs it: ``once`` (its log), ``history``, every export format and
    the database file are searched for every download link and password the PBX sent."""
    client_secret = "cli-secret-0815"
    pbx = Pbx(TARGET, scripts=3, seed=12, client_secret=client_secret)
    key_file = tmp_path / "digest.key"
    key_file.write_text(DIGEST_KEY + "\n")
    database = tmp_path / "audit.db"
    config = tmp_path / "auditor.toml"
    async with serve(Simulator([pbx])) as base:
        config.write_text(
            f'[database]\nurl = "sqlite:///{database}"\n'
            f'[audit]\nsecret_digest_key_file = "{key_file}"\n'
            '[log]\nformat = "json"\nlevel = "debug"\n'
            f'[[targets]]\nname = "{TARGET}"\nurl = "{base}/{TARGET}"\nclient_id = "auditor"\n'
            f'client_secret_env = "{SECRET_ENV}"\nretries = 0\n'
            f"collections = {list(NAMES)!r}\n".replace("'", '"')
        )
        config.chmod(0o600)
        cli = Cli(config, client_secret)
        outputs = [await cli.ok("once")]
        pbx.backups.update_location({"SftpPassword": {"Concealed": False, "Value": "pw-2-9911"}})
        pbx.backups.make()
        outputs.append(await cli.ok("once"))
        outputs.append(await cli.ok("history", "--json", "--limit", "0"))
        outputs.append(await cli.ok("history", "--collection", "backup_repository"))
        for form in ("json", "csv", "html"):
            outputs.append(await cli.ok("export", "--format", form))
        secrets = [*pbx.backups.secrets(), "pw-2-9911"]
        links = [item["DownloadLink"] for item in pbx.backups.items(base + "/" + TARGET)]

    history = outputs[2].json()
    assert {c["collection"] for c in history} == set(NAMES)
    assert [c["kind"] for c in history if c["collection"] == "backup_repository"] == [
        "added",
        "changed",
    ]
    assert "backup_repository" in outputs[3].stdout
    assert "failover_scripts" not in outputs[3].stdout  # the filter holds
    text = sqlite_files(database) + "".join(o.stdout + o.stderr for o in outputs)
    assert "hmac-sha256:" in text  # the digests are there ...
    for secret in [*secrets, *links, DIGEST_KEY, client_secret]:
        assert secret not in text  # ... the secrets are not
    assert "DownloadLink" not in text


async def test_the_api_filters_changes_by_any_collection(
    db_url: str, store: Store, hq: tuple[Pbx, str], clock: ManualClock
) -> None:
    _, base = hq
    settings = settings_for(db_url, base)
    await audit(settings, store)
    clock.advance(DAY)
    await audit(settings, store)
    app = make_app(store=store, state=ServiceState(), metrics=Metrics(), token=None)
    runner = await start_http(app, "127.0.0.1:0")
    try:
        url = base_url(runner) + "/api/v1/changes"
        async with aiohttp.ClientSession() as http:
            async with http.get(url, params={"collection": "backups", "limit": "100"}) as r:
                assert r.status == 200
                items = (await r.json())["items"]
            async with http.get(url, params={"collection": "backup_sets"}) as r:
                assert r.status == 400
    finally:
        await runner.cleanup()
    assert {c["collection"] for c in items} == {BACKUPS}
    assert sorted(c["kind"] for c in items) == ["added"] * 6 + ["removed"]


def test_the_backup_collections_are_opt_in_until_their_policies_exist() -> None:
    target = TargetSettings(
        name="pbx-hq",
        url="https://pbx-hq.example.com",
        client_id="auditor",
        client_secret=SecretStr("secret"),
    )
    assert target.collections == (SCRIPTS, SETTINGS)
