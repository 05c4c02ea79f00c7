"""A real Alertmanager (Debian's ``prometheus-alertmanager``) on loopback, fed by audits of
the simulator: a disconnected script is an active alert with the stable labels, is kept
alive by re-sends while it fires, and disappears once the script is connected again.

Skipped when the binary is absent, failed instead when ``AUDITOR_REQUIRE_ALERTMANAGER=1``
(CI installs the package and sets it).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from auditor.alerts.delivery import deliver_due, resend_firing
from auditor.alerts.sinks import RESEND_MARGIN, build_sinks, close_sinks
from auditor.audit import audit_many
from auditor.config import Settings
from auditor.model import SCRIPTS, fingerprint, utcnow
from auditor.simulator import Pbx, Simulator, serve
from auditor.store import Store

TARGET = "pbx-hq"
BINARY = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
CONFIG = """
route:
  receiver: "null"
  group_wait: 1s
receivers:
  - name: "null"
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
async def alertmanager(tmp_path: Path) -> AsyncIterator[str]:
    """The base URL of an Alertmanager of this test (clustering off, a null receiver)."""
    if BINARY is None:
        message = (
            "prometheus-alertmanager is not installed (apt-get install prometheus-alertmanager)"
        )
        if os.environ.get("AUDITOR_REQUIRE_ALERTMANAGER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    config = tmp_path / "alertmanager.yml"
    config.write_text(CONFIG, encoding="utf-8")
    base = f"http://127.0.0.1:{free_port()}"
    log = (tmp_path / "alertmanager.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        BINARY,
        f"--config.file={config}",
        f"--storage.path={tmp_path / 'am-data'}",
        f"--web.listen-address={base.removeprefix('http://')}",
        "--cluster.listen-address=",
        "--log.level=warn",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=log,
        stderr=log,
    )
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(200):
                if proc.returncode is not None:
                    break
                try:
                    async with session.get(f"{base}/-/ready") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
            else:
                pytest.fail("Alertmanager did not become ready within 10 s")
        if proc.returncode is not None:
            pytest.fail(f"Alertmanager exited: {(tmp_path / 'alertmanager.log').read_text()}")
        yield base
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                # Its test data is thrown away: no need to wait out a clean shutdown.
                await asyncio.wait_for(proc.wait(), 1)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        log.close()


async def active_alerts(base: str) -> list[dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{base}/api/v2/alerts", params={"active": "true"}) as response,
    ):
        assert response.status == 200
        alerts: list[dict[str, Any]] = await response.json()
        return alerts


async def wait_for(base: str, check: Any, what: str) -> list[dict[str, Any]]:
    """The active alerts once ``check(alerts)`` holds (polling for up to 10 s)."""
    alerts: list[dict[str, Any]] = []
    for _ in range(100):
        alerts = await active_alerts(base)
        if check(alerts):
            return alerts
        await asyncio.sleep(0.1)
    pytest.fail(f"Alertmanager never showed {what}; it has: {alerts}")


def when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def test_disconnected_script_fires_and_resolves(tmp_path: Path, alertmanager: str) -> None:
    pbx = Pbx("hq", scripts=4, states=True)
    script = pbx.filenames[1]
    fp = fingerprint(TARGET, "script.disconnected", SCRIPTS, script)

    def mine(alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [a for a in alerts if a["labels"].get("fingerprint") == fp]

    async with serve(Simulator([pbx])) as base:
        settings = Settings(
            database={"url": f"sqlite:///{tmp_path / 'audit.db'}"},
            alerts={"alertmanager": [{"name": "am", "url": alertmanager, "resend_every": "1m"}]},
            targets=[
                {
                    "name": TARGET,
                    "url": f"{base}/hq",
                    "client_id": "auditor",
                    "client_secret": "secret",
                    "retries": 0,
                }
            ],
        )
        sinks = build_sinks(settings.alerts)
        store = await Store.open(settings.database.url)
        try:
            await store.upgrade()

            async def audit_and_deliver() -> int:
                (result,) = await audit_many(settings, store.record, settings.targets)
                assert result.ok, result.error
                report = await deliver_due(store.outbox, sinks, owner="test")
                assert report.dead == report.retrying == 0
                return report.delivered

            assert await audit_and_deliver() == 0  # the baseline: everything connected
            assert await active_alerts(alertmanager) == []

            pbx.set_state(script, "Disconnected")
            pbx.add_script("added-by-admin.sh")
            assert await audit_and_deliver() == 2
            alerts = await wait_for(
                alertmanager, lambda a: len(a) == 2 and mine(a), "the two new alerts"
            )
            (down,) = mine(alerts)
            assert down["labels"] == {
                "alertname": "script.disconnected",
                "kind": "script.disconnected",
                "severity": "warning",
                "target": TARGET,
                "collection": SCRIPTS,
                "key": script,
                "fingerprint": fp,
            }
            assert down["status"]["state"] == "active"
            assert down["annotations"]["summary"] == (
                f"failover script '{script}' is Disconnected on {TARGET}"
            )
            # A firing state alert ends a few re-send intervals ahead.
            ends = when(down["endsAt"])
            assert ends - utcnow() > timedelta(minutes=RESEND_MARGIN - 1)
            (added,) = [a for a in alerts if a["labels"]["kind"] == "script.added"]
            assert added["labels"]["key"] == "added-by-admin.sh"
            assert "alert_id" in added["labels"]

            # Re-sent once its interval has passed, not before.
            assert await resend_firing(store.outbox, sinks) == 0
            later = utcnow() + timedelta(minutes=1, seconds=1)
            assert await resend_firing(store.outbox, sinks, now=later) == 1
            report = await deliver_due(store.outbox, sinks, owner="test", now=later)
            assert report.delivered == 1
            alerts = await wait_for(
                alertmanager,
                lambda a: mine(a) and when(mine(a)[0]["endsAt"]) > ends,
                "the re-sent alert with a later end",
            )

            pbx.set_state(script, "Connected")
            assert await audit_and_deliver() == 1  # script.reconnected
            alerts = await wait_for(alertmanager, lambda a: not mine(a), "the resolution")
            # The change alert is one-shot and stays until its expiry.
            assert [a["labels"]["kind"] for a in alerts] == ["script.added"]
            assert await resend_firing(store.outbox, sinks, now=later + timedelta(hours=1)) == 0
        finally:
            await close_sinks(sinks)
            await store.close()
