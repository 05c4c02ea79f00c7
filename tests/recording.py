"""A small recorded history for the read-side tests (API, feed, HTML export).

Two simulated PBXs are audited through a baseline, a round of changes (a script added, one
removed, the failover mode switched, a script added on the branch) and, optionally, an
outage of pbx-hq and its return. The audits run in a thread of their own, so that a
module-scoped fixture can record once while each test gets its own event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from auditor.audit import AuditResult, audit_many
from auditor.config import AlertsSettings, DatabaseSettings, Settings, TargetSettings
from auditor.simulator import Pbx, Simulator, serve
from auditor.store import Store

TARGETS = ("pbx-hq", "pbx-branch")


@dataclass(frozen=True)
class Recording:
    """A database file holding the audits, and what the audits returned."""

    database: Path
    results: list[AuditResult]
    settings: Settings


@dataclass(frozen=True)
class Plan:
    hq_scripts: int
    branch_scripts: int
    seeds: tuple[int, int]
    added: str = "zz-added.sh"
    removed_index: int = 0
    page_size: int = 100
    outage: bool = True
    # A script of pbx-hq goes Disconnected with the changes and stays so: an alert still
    # firing at the end.
    disconnect: bool = False


async def record(database: Path, plan: Plan) -> Recording:
    hq = Pbx("pbx-hq", scripts=plan.hq_scripts, seed=plan.seeds[0], states=True)
    branch = Pbx("pbx-branch", scripts=plan.branch_scripts, seed=plan.seeds[1])
    async with serve(Simulator([hq, branch])) as sim_base:
        settings = Settings(
            database=DatabaseSettings(url=f"sqlite:///{database}"),
            alerts=AlertsSettings(disconnected_after=1),
            targets=tuple(
                TargetSettings(
                    name=name,
                    url=f"{sim_base}/{name}",
                    client_id="auditor",
                    client_secret=SecretStr("secret"),
                    retries=0,
                    request_timeout="5s",
                    page_size=plan.page_size,
                    # The failover history only: the tests count its records.
                    collections=("failover_scripts", "failover_settings"),
                )
                for name in TARGETS
            ),
        )
        removed = hq.filenames[plan.removed_index]

        def change() -> None:
            hq.add_script(plan.added, state="Connected")
            hq.remove_script(removed)
            hq.update_settings(Mode="Passive" if hq.settings.get("Mode") == "Active" else "Active")
            branch.add_script("zz-branch.sh")
            if plan.disconnect:
                hq.set_state(next(n for n in hq.filenames if n != removed), "Disconnected")

        def down() -> None:
            hq.set_down(True, mode="status")

        def back() -> None:
            hq.set_down(False)

        steps: list[Callable[[], None] | None] = [None, change]
        if plan.outage:
            steps += [down, back]
        results: list[AuditResult] = []
        async with await Store.open(settings.database.url) as store:
            await store.upgrade()
            for step in steps:
                if step is not None:
                    step()
                results.extend(await audit_many(settings, store.record, settings.targets))
    return Recording(database=database, results=results, settings=settings)


def record_in_thread(database: Path, plan: Plan) -> Recording:
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, record(database, plan)).result()
