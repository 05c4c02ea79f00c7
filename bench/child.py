"""One measurement in a fresh process: ``python -m bench.child JOB_JSON``.

A job is ``{"mode": "floor" | "client" | "audit", "base", "pbxs": [[name, scripts], ...],
"concurrency", "warmup", "cycles", "database" (audit only), "expect": "baseline" |
"steady"}``. The process runs ``warmup`` untimed cycles, then ``cycles`` timed ones, checks
that each did the whole job, and prints one JSON line ``{"times": [seconds, ...], "rss_kb":
peak resident set, "requests": per cycle}``. A warm-up cycle pays what a long-running
service pays once (imports done on first use, statement caches, pools).

The floor is :mod:`bench.floor`: what no auditor can beat.

The client cycle is the auditor's own fetching (its XAPI client, proving each listing complete
and taking the digest of the answers, as an audit does) with nothing stored: an audit's time
over the floor splits into the client's part and the store's.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from bench.floor import CLIENT_SECRET, PAGE_SIZE, FloorError, floor_cycle, pbx_url

if TYPE_CHECKING:
    from auditor.config import TargetSettings

R = TypeVar("R")


class JobError(Exception):
    """A cycle did not do what the job says (an audit failed, items are missing ...)."""


def peak_rss_kb() -> int:
    # Linux reports ru_maxrss in KiB.
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


async def timed(
    job: dict[str, Any], run: Callable[[], Awaitable[R]], check: Callable[[R], int]
) -> dict[str, Any]:
    """``warmup`` untimed and ``cycles`` timed runs of ``run``; ``check`` proves each did the
    whole job (JobError otherwise) and gives its number of requests."""
    warmup = int(job.get("warmup", 0))
    times: list[float] = []
    requests = 0
    for index in range(warmup + int(job["cycles"])):
        started = time.perf_counter()
        result = await run()
        if index >= warmup:
            times.append(time.perf_counter() - started)
        requests = check(result)
    return {"times": times, "requests": requests}


def targets_of(job: dict[str, Any]) -> list[TargetSettings]:
    """The job's PBXs as the auditor's targets."""
    from auditor.config import TargetSettings

    return [
        TargetSettings(
            name=str(name),
            url=pbx_url(job["base"], str(name)),
            client_id="auditor",
            client_secret=CLIENT_SECRET,
            page_size=PAGE_SIZE,
        )
        for name, _ in job["pbxs"]
    ]


# -- the floor ------------------------------------------------------------------------------


async def run_floor(job: dict[str, Any]) -> dict[str, Any]:
    pbxs = [(str(n), int(s)) for n, s in job["pbxs"]]
    concurrency = int(job["concurrency"])
    return await timed(job, lambda: floor_cycle(job["base"], pbxs, concurrency), lambda n: n)


# -- the auditor's client alone ---------------------------------------------------------------


async def run_client(job: dict[str, Any]) -> dict[str, Any]:
    from auditor.audit import Fetched, fetch, settle_heap
    from auditor.logs import configure
    from auditor.xapi import TokenCache, XapiClient

    configure("warning", "json")
    targets = targets_of(job)
    expected = {str(n): int(s) for n, s in job["pbxs"]}

    async def cycle() -> list[tuple[str, Fetched]]:
        # As audit_many: one token cache per cycle, one client per PBX, bounded concurrency.
        tokens = TokenCache()
        limit = asyncio.Semaphore(int(job["concurrency"]))

        async def one(target: TargetSettings) -> tuple[str, Fetched]:
            async with limit, XapiClient(target, tokens=tokens) as client:
                return target.name, await fetch(client)

        return list(await asyncio.gather(*(one(t) for t in targets)))

    def check(results: list[tuple[str, Fetched]]) -> int:
        for name, fetched in results:
            if len(fetched.scripts) != expected[name]:
                raise JobError(f"client: {name} listed {len(fetched.scripts)} scripts")
        return sum(2 + fetched.pages for _, fetched in results)

    settle_heap()
    return await timed(job, cycle, check)


# -- the auditor ----------------------------------------------------------------------------


async def run_audit(job: dict[str, Any]) -> dict[str, Any]:
    # Imported here so that the floor's process carries none of the auditor's modules.
    from auditor.audit import AuditResult, audit_many
    from auditor.config import Settings
    from auditor.logs import configure
    from auditor.store import Store

    configure("warning", "json")
    expected = {str(n): int(s) for n, s in job["pbxs"]}
    settings = Settings(
        database={"url": job["database"]},
        audit={"max_concurrent": int(job["concurrency"])},
        targets=tuple(targets_of(job)),
    )
    baseline = job["expect"] == "baseline"

    def check(results: list[AuditResult]) -> int:
        requests = 0
        for result in results:
            if not result.ok or result.items != expected[result.target]:
                raise JobError(
                    f"audit of {result.target}: {result.status}, {result.items} items "
                    f"(expected {expected[result.target]}): {result.error}"
                )
            if result.baseline != baseline or (not baseline and result.changes):
                raise JobError(
                    f"audit of {result.target}: baseline={result.baseline}, "
                    f"{result.changes} changes; the job expects a {job['expect']} run"
                )
            requests += 2 + (result.pages or 0)
        return requests

    store = await Store.open(settings.database.url, concurrency=settings.audit.max_concurrent)
    try:
        return await timed(job, lambda: audit_many(settings, store.record, settings.targets), check)
    finally:
        await store.close()


def main(argv: Sequence[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m bench.child JOB_JSON", file=sys.stderr)
        return 2
    job = json.loads(argv[0])
    runner = {"floor": run_floor, "client": run_client}.get(job["mode"], run_audit)
    try:
        result = asyncio.run(runner(job))
    except (JobError, FloorError) as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    result["rss_kb"] = peak_rss_kb()
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
