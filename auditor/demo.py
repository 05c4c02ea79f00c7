"""``demo``: the whole flow against the built-in simulator, on a throw-away SQLite database.

Two simulated PBXs are audited several times; between the audits the simulated PBXs change
the way real ones do (a script added, one removed, the failover mode switched, a script
disconnected, the PBX down and back), so every kind of alert shows up once. What to show
and how is the caller's business: steps and alerts arrive through callbacks.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from auditor.audit import AuditResult, audit_many
from auditor.config import load_settings
from auditor.model import Alert
from auditor.simulator import Pbx, Simulator, serve
from auditor.store import Store, VerifyResult

StepCallback = Callable[[int, str], None]
SECRET_ENV = "AUDITOR_DEMO_CLIENT_SECRET"  # noqa: S105  (a variable name, not a secret)


@dataclass(frozen=True, slots=True)
class DemoSummary:
    database: Path
    runs: int
    changes: int
    alerts: dict[str, int]
    verify: VerifyResult
    results: tuple[AuditResult, ...]


def _config(database: Path, base: str) -> str:
    return f"""
[database]
url = "sqlite:///{database}"

[alerts]
disconnected_after = 2

[audit]
timeout = "30s"

[log]
level = "error"

[[targets]]
name = "pbx-hq"
url = "{base}/pbx-hq"
client_id = "auditor"
client_secret_env = "{SECRET_ENV}"
retries = 1
request_timeout = "5s"

[[targets]]
name = "pbx-branch"
url = "{base}/pbx-branch/xapi/v1/"
client_id = "auditor"
client_secret_env = "{SECRET_ENV}"
page_size = 50
"""


async def run_demo(
    workdir: Path,
    *,
    on_step: StepCallback,
    on_alert: Callable[[Alert], None],
    on_result: Callable[[AuditResult], None],
    pause: float = 1.5,
) -> DemoSummary:
    """Run the demo in ``workdir`` (the database and config are written there)."""
    secret = secrets.token_urlsafe(24)
    hq = Pbx("pbx-hq", scripts=120, seed=7, states=True, client_secret=secret)
    branch = Pbx("pbx-branch", scripts=8, seed=3, client_secret=secret)
    sim = Simulator([hq, branch])
    scripts = hq.filenames
    database = workdir / "audit.db"
    config = workdir / "auditor.toml"
    os.environ[SECRET_ENV] = secret

    async def nothing() -> None:
        return None

    pre_start = str(hq.settings.get("PreStartScript"))

    async def change_hq() -> None:
        hq.add_script("failover-post-restore-dns.sh", state="Connected")
        hq.remove_script(pre_start)
        mode = hq.settings.get("Mode")
        hq.update_settings(Mode="Passive" if mode == "Active" else "Active")

    async def disconnect() -> None:
        hq.set_state(scripts[10], "Disconnected")

    async def down() -> None:
        hq.set_down(True, mode="status")

    async def back() -> None:
        hq.set_down(False)
        hq.set_state(scripts[10], "Connected")
        hq.add_script(pre_start, state="Connected")

    steps: list[tuple[str, Callable[[], Awaitable[None]]]] = [
        ("First audit of both PBXs: the baseline (no change alerts)", nothing),
        ("On pbx-hq a script is added, the pre-start script removed, the mode switched", change_hq),
        ("A failover script on pbx-hq reports State = Disconnected", disconnect),
        ("pbx-hq stops answering (1st failed audit)", down),
        ("pbx-hq still down (2nd failed audit: target.disconnected)", nothing),
        ("pbx-hq is back, its script reconnected, the pre-start script restored", back),
        ("Nothing changed: no alerts, one run row each", nothing),
    ]
    results: list[AuditResult] = []
    async with serve(sim) as base:
        config.write_text(_config(database, base))
        config.chmod(0o600)
        settings = load_settings(config).settings
        store = await Store.open(settings.database.url)
        try:
            await store.upgrade()
            for number, (title, action) in enumerate(steps, 1):
                await action()
                on_step(number, title)
                batch = await audit_many(
                    settings, store, settings.targets, on_alert=on_alert, on_done=on_result
                )
                results.extend(batch)
                if number < len(steps):
                    await asyncio.sleep(pause)
            verify = await store.verify()
            runs = await store.runs(limit=None)
            changes = await store.changes(limit=None)
            alerts = await store.alert_events(limit=None)
        finally:
            await store.close()
            os.environ.pop(SECRET_ENV, None)
    return DemoSummary(
        database=database,
        runs=len(runs),
        changes=len(changes),
        alerts=dict(Counter(a.kind for a in alerts)),
        verify=verify,
        results=tuple(results),
    )
