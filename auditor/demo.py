"""``demo``: the daemon against the built-in simulator, on a throw-away SQLite database.

Two simulated PBXs are audited by the real daemon (:class:`auditor.service.Service`) on a
short schedule; between the audits the simulated PBXs change the way real ones do (a script
added, the pre-start script removed, the failover mode switched, a script disconnected, the
PBX down and back), so every kind of alert shows up as it happens. It stops by itself after
the last step (about a minute), or on Ctrl-C, and sums up what it recorded. What to show and
how is the caller's business: steps and alerts arrive through callbacks.

It never prints, and reads the record only through the store's read side.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from auditor.config import load_settings
from auditor.model import Alert, utcnow
from auditor.service import Service
from auditor.simulator import Pbx, Simulator, serve
from auditor.store import ReadStore, Store, VerifyResult

StepCallback = Callable[[int, str], None]
SECRET_ENV = "AUDITOR_DEMO_CLIENT_SECRET"  # noqa: S105  (a variable name, not a secret)


@dataclass(frozen=True, slots=True)
class DemoSummary:
    database: Path
    runs: dict[str, int]
    changes: int
    alerts: dict[str, int]
    verify: VerifyResult
    interrupted: bool


def _config(database: Path, base: str, every: float) -> str:
    return f"""
[database]
url = "sqlite:///{database}"

[schedule]
every = "{every}s"
jitter = "0s"
tick = "250ms"

[alerts]
disconnected_after = 2

[audit]
timeout = "30s"
shutdown_grace = "5s"

[http]
listen = "127.0.0.1:0"

[log]
level = "error"

[[targets]]
name = "pbx-hq"
url = "{base}/pbx-hq"
client_id = "auditor"
client_secret_env = "{SECRET_ENV}"
retries = 0
request_timeout = "3s"

[[targets]]
name = "pbx-branch"
url = "{base}/pbx-branch/xapi/v1/"
client_id = "auditor"
client_secret_env = "{SECRET_ENV}"
page_size = 50
"""


async def _audited_since(reads: ReadStore, since: datetime, targets: int) -> None:
    """Wait until every target has a finished run that started after ``since``: one that
    began before a change of the simulated PBX may not have seen it."""
    while True:
        runs = await reads.runs(limit=4 * targets, newest_first=True)
        done = {r.target for r in runs if r.started_at > since and r.status != "running"}
        if len(done) >= targets:
            return
        await asyncio.sleep(0.2)


async def run_demo(
    workdir: Path,
    *,
    on_step: StepCallback,
    on_alert: Callable[[Alert], None],
    every: float = 8.0,
) -> DemoSummary:
    """Run the demo in ``workdir`` (the database and config are written there)."""
    secret = secrets.token_urlsafe(24)
    hq = Pbx("pbx-hq", scripts=120, seed=7, states=True, client_secret=secret)
    branch = Pbx("pbx-branch", scripts=8, seed=3, client_secret=secret)
    sim = Simulator([hq, branch])
    scripts = hq.filenames
    pre_start = str(hq.settings.get("PreStartScript"))
    database = workdir / "audit.db"
    config = workdir / "auditor.toml"
    os.environ[SECRET_ENV] = secret

    async def nothing() -> None:
        return None

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

    steps: list[tuple[str, Callable[[], Awaitable[None]], int]] = [
        ("The daemon audits both PBXs: the baseline (no change alerts)", nothing, 1),
        ("On pbx-hq: a script added, the pre-start script removed, mode switched", change_hq, 1),
        ("A failover script on pbx-hq reports State = Disconnected", disconnect, 1),
        ("pbx-hq stops answering: two failed audits in a row", down, 2),
        ("pbx-hq is back, its script reconnected, the pre-start script restored", back, 1),
        ("Nothing changed: no alerts, one run row per audit", nothing, 1),
    ]
    async with serve(sim) as base:
        config.write_text(_config(database, base, every))
        config.chmod(0o600)
        loaded = load_settings(config)
        service = Service(loaded, on_alert=on_alert)
        daemon = asyncio.create_task(service.run())

        def ready() -> bool:
            # The service shows its readiness as flags (for /readyz), not as an event.
            return service.state.migrations_at_head and service.state.scheduler_running

        # The demo's own reader opens the file once the daemon has migrated it: opening it
        # while the migration holds the write lock fails with "database is locked".
        while not (ready() or daemon.done()):  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        store = await Store.open(loaded.settings.database.url)

        async def script() -> None:
            while not ready():  # noqa: ASYNC110
                await asyncio.sleep(0.1)
            for number, (title, action, rounds) in enumerate(steps, 1):
                await action()
                on_step(number, title)
                for _ in range(rounds):
                    await _audited_since(store.reads, utcnow(), len(loaded.settings.targets))

        try:
            story = asyncio.create_task(script())
            await asyncio.wait({daemon, story}, return_when=asyncio.FIRST_COMPLETED)
            interrupted = not story.done()
            if interrupted:
                story.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await story
            else:
                story.result()
                service.request_stop()
            await daemon
            verify = await store.reads.verify()
            runs = Counter(str(r.status) for r in await store.reads.runs(limit=None))
            changes = await store.reads.changes(limit=None)
            alerts = await store.reads.alert_events(limit=None)
        finally:
            await store.close()
            os.environ.pop(SECRET_ENV, None)
    return DemoSummary(
        database=database,
        runs=dict(runs),
        changes=len(changes),
        alerts=dict(Counter(a.kind for a in alerts)),
        verify=verify,
        interrupted=interrupted,
    )
