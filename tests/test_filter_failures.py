"""A filter that fails is that target's failed run, never the cycle's end, never a run left
``running``: refused by the PBX (HTTP 400) in ``once`` and in the daemon, and refused by the
client's own check at run time (a configuration that did not pass through ``load_settings``).
And ``check-config --connect``, which finds a refused filter before the first audit.

Against the simulator over real HTTP (it answers 400 to a filter it cannot evaluate, as a
PBX does to one it refuses), real SQLite files, ``once`` and ``run`` as subprocesses.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from pydantic import SecretStr

from auditor.audit import audit_many
from auditor.config import Settings, TargetSettings
from auditor.simulator import Pbx, Simulator, serve
from auditor.store import Store
from tests.clirun import SECRET_ENV, Cli
from tests.conftest import DaemonSpawner, daemon_config

# Parses (the client sends it) but the simulator cannot evaluate it: the PBX answers 400.
REFUSED_BY_PBX = "Filename/any(x: x eq 'a')"


def _target(name: str, url: str, extra: str = "") -> str:
    return f"""
[[targets]]
name = "{name}"
url = "{url}"
client_id = "auditor"
client_secret_env = "{SECRET_ENV}"
retries = 0
request_timeout = "10s"
{extra}
"""


async def test_a_filter_the_pbx_refuses_fails_only_its_target_in_once(tmp_path: Path) -> None:
    secret = "pbx-secret-" + secrets.token_urlsafe(16)
    pbxs = [Pbx(name, scripts=4, client_secret=secret) for name in ("pbx-a", "pbx-b")]
    async with serve(Simulator(pbxs)) as base:
        config = tmp_path / "auditor.toml"
        config.write_text(
            f'[database]\nurl = "sqlite:///{tmp_path / "audit.db"}"\n'
            + _target("refused", f"{base}/pbx-a", f'filter = "{REFUSED_BY_PBX}"')
            + _target("fine", f"{base}/pbx-b"),
            encoding="utf-8",
        )
        cli = Cli(config, secret)
        done = await cli("once")

    assert done.code == 1, str(done)
    (alert,) = done.alerts
    assert (alert["kind"], alert["target"], alert["status"]) == (
        "audit.failed",
        "refused",
        "firing",
    )
    assert "the PBX refused the query" in alert["message"]
    runs = (await cli.ok("runs", "--json")).json()
    assert sorted((r["target"], r["status"]) for r in runs) == [
        ("fine", "ok"),
        ("refused", "failed"),
    ]


async def test_a_filter_the_client_refuses_at_run_time_fails_only_its_target(
    tmp_path: Path,
) -> None:
    """Settings made without load_settings (which refuses such a filter) reach the audit
    with it: the client refuses it before sending, and that is the target's failed run."""
    async with serve(Simulator([Pbx(n, scripts=3) for n in ("pbx-a", "pbx-b")])) as base:
        settings = Settings(
            targets=tuple(
                TargetSettings(
                    name=name,
                    url=f"{base}/{name}",
                    client_id="auditor",
                    client_secret=SecretStr("secret"),
                    retries=0,
                    filter=text,
                )
                for name, text in (("pbx-a", "Filename eq"), ("pbx-b", None))
            )
        )
        store = await Store.open(f"sqlite:///{tmp_path / 'audit.db'}")
        try:
            await store.upgrade()
            results = await audit_many(settings, store.record, settings.targets)
            runs = await store.reads.runs(limit=None)
        finally:
            await store.close()

    assert [(r.target, r.status) for r in results] == [("pbx-a", "failed"), ("pbx-b", "ok")]
    assert results[0].error is not None
    assert results[0].error.startswith("pbx-a: $filter: expected an expression at position 12")
    assert [a.kind for a in results[0].alerts] == ["audit.failed"]
    assert sorted((r.target, r.status) for r in runs) == [("pbx-a", "failed"), ("pbx-b", "ok")]


async def test_a_filter_the_pbx_refuses_fails_only_its_target_in_the_daemon(
    tmp_path: Path, spawn_daemon: DaemonSpawner
) -> None:
    async with serve(Simulator([Pbx(n, scripts=4) for n in ("pbx-a", "pbx-b")])) as base:
        config = daemon_config(
            tmp_path / "auditor.toml",
            database=f"sqlite:///{tmp_path / 'audit.db'}",
            targets=[("refused", f"{base}/pbx-a"), ("fine", f"{base}/pbx-b")],
        )
        text = config.read_text().replace(
            'name = "refused"', f'name = "refused"\nfilter = "{REFUSED_BY_PBX}"'
        )
        config.write_text(text)
        daemon = await spawn_daemon(config)

        def finished(name: str, event: str) -> bool:
            return any(line.get("target") == name for line in daemon.events(event))

        await daemon.until(lambda: finished("fine", "audit.baseline"), "the baseline of fine")
        await daemon.until(
            lambda: len([a for a in daemon.alerts if a.get("kind") == "audit.failed"]) >= 1,
            "audit.failed for refused",
        )
        await daemon.until(lambda: len(daemon.events("audit.not_complete")) >= 2, "a retry")
        assert await daemon.stop() == 0

    assert not daemon.events("audit.crashed"), daemon.stderr_tail()
    failed = [a for a in daemon.alerts if a.get("kind") == "audit.failed"]
    assert {a["target"] for a in failed} == {"refused"}
    store = await Store.open(f"sqlite:///{tmp_path / 'audit.db'}")
    try:
        runs = await store.reads.runs(limit=None)
    finally:
        await store.close()
    statuses = {(r.target, r.status) for r in runs}
    assert statuses == {("refused", "failed"), ("fine", "ok")}, statuses


async def test_check_config_connect_reaches_every_pbx_and_the_database(tmp_path: Path) -> None:
    secret = "pbx-secret-" + secrets.token_urlsafe(16)
    pbxs = [Pbx(n, scripts=7, client_secret=secret) for n in ("pbx-a", "pbx-b", "pbx-c")]
    database = tmp_path / "audit.db"
    async with serve(Simulator(pbxs)) as base:
        config = tmp_path / "auditor.toml"
        head = f'[database]\nurl = "sqlite:///{database}"\n'
        config.write_text(head + _target("fine", f"{base}/pbx-a"), encoding="utf-8")
        cli = Cli(config, secret)
        done = await cli.ok("check-config", "--connect")
        assert done.stdout.splitlines() == [
            f"config: ok: {config} (1 target)",
            f"connect: database sqlite:///{database}: ok: not created yet; the first audit "
            "creates it",
            "connect: target fine: ok: logged in, 7 failover scripts",
        ]
        # Made by an admin's shell, the file would belong to the wrong user.
        assert not database.exists()

        config.write_text(
            head
            + _target("fine", f"{base}/pbx-a", "filter = \"startswith(Filename, 'f')\"")
            + _target("refused", f"{base}/pbx-b", f'filter = "{REFUSED_BY_PBX}"')
            + _target("wrong-secret", f"{base}/pbx-c").replace(
                f'client_secret_env = "{SECRET_ENV}"', 'client_secret = "not-it"'
            ),
            encoding="utf-8",
        )
        config.chmod(0o600)
        await cli.ok("once", "--target", "fine")
        done = await cli("check-config", "--connect")

    assert done.code == 1, str(done)
    lines = done.stdout.splitlines()
    assert lines[:3] == [
        f"config: ok: {config} (3 targets)",
        f"connect: database sqlite:///{database}: ok: schema up to date",
        # The target's filter applies: 2 of the 7 scripts start with "f".
        "connect: target fine: ok: logged in, 2 failover scripts",
    ]
    assert lines[3].startswith(
        "connect: target refused: failed: refused: GetFailoverScripts: the PBX refused the query: "
    )
    assert lines[4].startswith(
        "connect: target wrong-secret: failed: wrong-secret: login refused (invalid_client"
    )
    assert len(lines) == 5


async def test_the_daemon_refuses_to_start_with_a_filter_the_client_would_refuse(
    tmp_path: Path, spawn_daemon: DaemonSpawner
) -> None:
    """Before, it started, and every audit of the target crashed (``audit.crashed``),
    leaving its runs ``running`` and raising no alert."""
    config = daemon_config(
        tmp_path / "auditor.toml",
        database=f"sqlite:///{tmp_path / 'audit.db'}",
        targets=[("pbx-a", "http://127.0.0.1:9/pbx-a")],
    )
    config.write_text(config.read_text() + 'filter = "Filename eq"\n')
    daemon = await spawn_daemon(config)
    assert await daemon.exited() == 2
    assert [line.get("text") for line in daemon.logs] == [
        "config: targets[0].filter: target pbx-a: expected an expression at position 12 in "
        '"Filename eq" (found end of input)'
    ]
    assert not (tmp_path / "audit.db").exists()
