"""Replicas of the daemon on one PostgreSQL: sharing a fleet, taking over from a replica
killed mid-audit, a lone daemon killed and restarted, and hosts whose clocks are off.

Every test here runs real ``3cx-auditor run`` processes against the simulator and the
PostgreSQL server (the ``postgres`` marker; conftest.py). What they prove is read from
three places that do not depend on each other: the runs the database recorded, the log
lines of each replica (which one recorded which run), and what each simulated PBX saw
(``max_in_flight``: an auditor sends a PBX one request at a time, so two at once means two
audits of it overlapped).

The clock test starts replicas under libfaketime (Debian's ``faketime`` package), which
shifts every clock a process reads but the monotonic one: the whole process lives five
minutes off, as on a host whose clock is wrong, without a hook in the program itself. It
skips without libfaketime, or fails when ``AUDITOR_REQUIRE_FAKETIME=1`` (CI sets it).
"""

from __future__ import annotations

import asyncio
import base64
import glob
import itertools
import json
import os
import secrets
import signal
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from auditor.model import Run, utcnow
from auditor.simulator import Pbx, Simulator, pbx_url, serve
from auditor.store import Store

# pytest puts tests/ on sys.path (the directory has no __init__.py), so conftest is a
# top-level module at run time; mypy checks the directory as the package "tests".
from tests.conftest import Daemon, DaemonSpawner, daemon_config

pytestmark = pytest.mark.postgres

# What issue 13 asks: a dead replica's targets audited by another within this (the default
# schedule.lease of 15 s, plus a tick, plus the audit starting).
TAKEOVER = timedelta(seconds=30)
AUDIT_EVENTS = ("audit.ok", "audit.baseline", "audit.not_complete")


def listings(pbx: Pbx) -> int:
    return sum(r.status == 200 for r in pbx.stats.for_endpoint("scripts"))


async def runs_by_target(store: Store) -> dict[str, list[Run]]:
    grouped: dict[str, list[Run]] = defaultdict(list)
    for run in await store.reads.runs(limit=None):
        grouped[run.target].append(run)
    for runs in grouped.values():
        runs.sort(key=lambda r: (r.started_at, r.id))
    return grouped


def interrupted(run: Run) -> bool:
    return run.error is not None and "interrupted" in run.error


def recorded_by(replicas: Sequence[Daemon]) -> dict[int, int]:
    """Run id -> the index of the replica whose log says it recorded that run."""
    return {
        int(line["run_id"]): index
        for index, replica in enumerate(replicas)
        for line in replica.logs
        if line.get("event") in AUDIT_EVENTS and "run_id" in line
    }


def owner_of(replica: Daemon) -> str:
    (started,) = replica.events("service.started")
    return str(started["replica"])


async def cycles_done(store: Store, targets: int, count: int) -> bool:
    ok = Counter(
        name
        for name, runs in (await runs_by_target(store)).items()
        for r in runs
        if r.status == "ok"
    )
    return len(ok) == targets and min(ok.values()) >= count


async def leases_of(store: Store, owner: str) -> dict[str, datetime | None]:
    """The targets ``owner`` holds the lease of, and until when."""
    return {t.name: t.lease_until for t in await store.reads.targets() if t.lease_owner == owner}


async def auditing(store: Store, owner: str) -> bool:
    """Whether ``owner`` holds the lease of a target it is auditing now."""
    leased = {t.name for t in await store.reads.targets() if t.lease_owner == owner}
    recent = await store.reads.runs(limit=None, since=utcnow() - timedelta(minutes=1))
    return any(r.status == "running" and r.target in leased for r in recent)


def assert_one_audit_at_a_time(grouped: dict[str, list[Run]], fleet: Iterable[Pbx]) -> None:
    """No two audits of one target overlapped: in the record, each run of a target ended
    before the next began (a run a killed replica left running ends when the claim that
    takes its target over is made); at the PBX, never two requests at once."""
    for name, runs in grouped.items():
        for earlier, later in itertools.pairwise(runs):
            assert earlier.status != "running", earlier
            assert earlier.finished_at is not None
            assert earlier.finished_at <= later.started_at, (name, earlier, later)
    for pbx in fleet:
        assert pbx.stats.max_in_flight == 1, pbx.name


def assert_once_per_cycle(
    grouped: dict[str, list[Run]], launched: datetime, every: float, until: datetime
) -> None:
    """Each target audited at most once per cycle: the k-th run that recorded something
    (an interrupted one recorded nothing; its cycle is audited again) never starts before k
    intervals have passed since the launch, as it would if two replicas audited one cycle."""
    for name, runs in grouped.items():
        done = [r for r in runs if r.started_at < until and not interrupted(r)]
        for k, run in enumerate(done):
            assert run.started_at >= launched + timedelta(seconds=k * every), (name, k, run)


def assert_taken_over(
    grouped: dict[str, list[Run]],
    held: dict[str, datetime | None],
    killed: datetime,
    by: dict[int, int],
    victim: int,
) -> None:
    """Every target the killed replica held was next audited by another replica, once its
    lease had run out (never while it could still be alive) and within TAKEOVER of the kill.
    """
    for name, lease_until in held.items():
        after = [r for r in grouped[name] if r.started_at > killed]
        assert after, name
        first = after[0]
        assert by.get(first.id) not in (None, victim), (name, first)
        assert lease_until is not None
        assert lease_until <= first.started_at <= killed + TAKEOVER, (name, lease_until, first)


# -- three replicas ----------------------------------------------------------------------------


async def test_three_replicas_audit_each_due_target_once_and_take_over_from_a_killed_one(
    pg_url: str, tmp_path: Path, spawn_daemon: DaemonSpawner
) -> None:
    fleet = Simulator.fleet(50, scripts=3)
    every = 3.0
    async with serve(fleet) as base, await Store.open(pg_url) as store:
        configs = [
            daemon_config(
                tmp_path / f"replica-{i}.toml",
                database=pg_url,
                targets=[(name, pbx_url(base, name)) for name in fleet.names],
                every="3s",
                # Far longer than a lease: a takeover must not wait for an audit's time limit.
                timeout="60s",
                grace="5s",
            )
            for i in range(3)
        ]
        launched = utcnow()
        replicas = [await spawn_daemon(config) for config in configs]
        first, second, third = replicas
        for replica in replicas:
            # Starting together, they migrate one after another (advisory lock).
            await replica.until(partial(replica.events, "service.started"), "start-up")

        # Several cycles of the whole fleet, shared by the three.
        await first.until(partial(cycles_done, store, 50, 4), "four audits of every target", 120)
        # Each takes part. On a loaded machine one may lose the race for claims for a while
        # (SKIP LOCKED hands the due targets to whoever asks first): it is given the time.
        for replica in replicas:
            await replica.until(partial(replica.events, "audit.ok"), "an audit by each replica")
        phase_one = utcnow()
        listed_before = {pbx.name: listings(pbx) for pbx in fleet}
        grouped = await runs_by_target(store)
        listed_after = {pbx.name: listings(pbx) for pbx in fleet}
        skipped: Counter[str] = Counter()
        for replica in replicas:
            for line in replica.events("schedule.missed"):
                skipped[line["target"]] += int(line["skipped"])
        assert_once_per_cycle(grouped, launched, every, phase_one)
        for name in fleet.names:
            runs = [r for r in grouped[name] if r.started_at < phase_one]
            assert {r.status for r in runs} <= {"ok", "running"}, name
            # At least once per cycle: every cycle passed since its first audit was run or
            # reported as skipped (schedule.missed), none silently dropped.
            span = (phase_one - runs[0].started_at).total_seconds() - every / 2
            assert len(runs) + skipped[name] >= span // every, (name, len(runs))
        # What the PBXs saw matches the record: one listing per recorded run (runs in
        # flight while the two were read may have listed already, or not yet).
        for pbx in fleet:
            done = sum(r.status == "ok" for r in grouped[pbx.name])
            going = sum(r.status == "running" for r in grouped[pbx.name])
            assert listed_before[pbx.name] <= done + going, pbx.name
            assert done <= listed_after[pbx.name], pbx.name
            assert pbx.stats.failed_logins == 0
        assert len({owner_of(r) for r in replicas}) == 3

        # Slow audits, so that the first replica holds leases when it is killed.
        for pbx in fleet:
            pbx.add_fault("delay", endpoint="scripts", seconds=0.75)
        owner = owner_of(first)
        await first.until(partial(auditing, store, owner), "an audit under the first's lease")
        first.proc.send_signal(signal.SIGKILL)
        assert await first.exited() == -signal.SIGKILL
        killed = utcnow()
        held = await leases_of(store, owner)
        assert held

        async def taken_over() -> bool:
            grouped = await runs_by_target(store)
            return all(
                any(r.status == "ok" and r.started_at > killed for r in grouped[name])
                for name in held
            )

        await second.until(taken_over, "the killed replica's targets audited again", within=90)
        assert await second.stop() == 0
        assert await third.stop() == 0

        grouped = await runs_by_target(store)
        assert_taken_over(grouped, held, killed, recorded_by(replicas), victim=0)
        assert_one_audit_at_a_time(grouped, fleet)
        # The runs the killed replica left running were ended by the claims that followed.
        left = [r for runs in grouped.values() for r in runs if interrupted(r)]
        assert left
        assert {r.target for r in left} <= set(held)
        assert all(r.status == "failed" for r in left)
        assert all(t.lease_owner is None for t in await store.reads.targets())
        # No replica raised an alert: every run was complete, nothing changed; an
        # interrupted run is never diffed, so it cannot make anything look removed.
        assert [r.alerts for r in replicas] == [[], [], []]
        assert await store.reads.alert_events(limit=None) == []


# -- a lone daemon, killed and restarted -------------------------------------------------------


async def test_a_lone_daemon_killed_mid_audit_and_restarted_audits_every_target_within_30s(
    pg_url: str, tmp_path: Path, spawn_daemon: DaemonSpawner
) -> None:
    """As systemd would restart it after a crash, twice in a row."""
    fleet = Simulator.fleet(20, scripts=3)
    async with serve(fleet) as base, await Store.open(pg_url) as store:
        config = daemon_config(
            tmp_path / "auditor.toml",
            database=pg_url,
            targets=[(name, pbx_url(base, name)) for name in fleet.names],
            every="3s",
            timeout="60s",
        )
        daemons = [await spawn_daemon(config)]
        await daemons[0].until(partial(daemons[0].events, "service.started"), "start-up")
        await daemons[0].until(partial(cycles_done, store, 20, 1), "a baseline of every target")
        for pbx in fleet:
            pbx.add_fault("delay", endpoint="scripts", seconds=0.5)
        kills: list[tuple[datetime, datetime, dict[str, datetime | None]]] = []
        for _round in range(2):
            daemon = daemons[-1]
            owner = owner_of(daemon)
            await daemon.until(partial(auditing, store, owner), "an audit in flight")
            daemon.proc.send_signal(signal.SIGKILL)
            assert await daemon.exited() == -signal.SIGKILL
            killed = utcnow()
            held = await leases_of(store, owner)
            assert held
            restarted = utcnow()
            again = await spawn_daemon(config)
            daemons.append(again)

            async def all_audited(since: datetime = restarted) -> bool:
                return all(
                    any(r.status == "ok" and r.started_at > since for r in runs)
                    for runs in (await runs_by_target(store)).values()
                )

            await again.until(all_audited, "every target audited after the restart", within=90)
            kills.append((killed, restarted, held))
        assert await daemons[-1].stop() == 0

        grouped = await runs_by_target(store)
        by = recorded_by(daemons)
        for index, (killed, restarted, held) in enumerate(kills):
            assert_taken_over(grouped, held, killed, by, victim=index)
            for name, runs in grouped.items():
                first = next(r for r in runs if r.started_at > restarted)
                assert first.started_at <= restarted + TAKEOVER, (name, first)
        assert_one_audit_at_a_time(grouped, fleet)
        left = [r for runs in grouped.values() for r in runs if interrupted(r)]
        assert len(left) >= 2
        assert all(r.status == "failed" for r in left)
        assert all(t.lease_owner is None for t in await store.reads.targets())
        assert await store.reads.alert_events(limit=None) == []


# -- a lease lost mid-audit --------------------------------------------------------------------


async def test_an_audit_whose_lease_another_replica_took_is_stopped_at_once(
    pg_url: str, tmp_path: Path, spawn_daemon: DaemonSpawner
) -> None:
    """A replica that could not renew in time may find its target claimed by another (that
    one ended the run left running and audits the target itself). The heartbeat learns it
    from the database, and the audit is cancelled, not finished beside the new holder's."""
    fleet = Simulator.fleet(1, scripts=3)
    (name,) = fleet.names
    async with serve(fleet) as base, await Store.open(pg_url) as store:
        config = daemon_config(
            tmp_path / "auditor.toml",
            database=pg_url,
            targets=[(name, pbx_url(base, name))],
            every="1s",
            timeout="60s",
        )
        daemon = await spawn_daemon(config)
        await daemon.until(partial(daemon.events, "audit.baseline"), "the baseline")
        fleet[name].add_fault("delay", endpoint="scripts", seconds=10, times=1)
        owner = owner_of(daemon)
        await daemon.until(partial(auditing, store, owner), "an audit in flight")
        (lease_until,) = (await leases_of(store, owner)).values()
        assert lease_until is not None
        (going,) = [r for r in await store.reads.runs(limit=None) if r.status == "running"]
        # Another replica's claim, as it is made once the lease has run out.
        (claim,) = await store.schedule.claim_due(
            "other", lease_until + timedelta(seconds=1), 1, timedelta(hours=1)
        )
        assert claim.interrupted_runs == 1
        taken = utcnow()
        await daemon.until(partial(daemon.events, "lease.lost"), "the lost lease noticed")
        (lost,) = daemon.events("lease.lost")
        assert (lost["target"], lost["audit"]) == (name, "cancelled")
        await daemon.until(lambda: fleet[name].stats.in_flight == 0, "the PBX answered")
        # Nothing of that target is audited while the other replica holds it; once it gives
        # the lease back, this replica audits the target again.
        assert [r.id for r in await store.reads.runs(limit=None) if r.started_at > taken] == []
        assert await store.schedule.finish_claim(claim.id, "other", utcnow())
        await daemon.until(partial(cycles_done, store, 1, 2), "an audit after the lease came back")
        assert await daemon.stop() == 0
        # The stopped audit recorded nothing of what the PBX answered after all.
        stopped = await store.reads.run(going.id)
        assert stopped is not None
        assert stopped.status == "failed"
        assert going.id not in recorded_by([daemon])
        assert fleet[name].stats.max_in_flight == 1
        assert await store.reads.alert_events(limit=None) == []


# -- clocks that are off -----------------------------------------------------------------------


def libfaketime() -> str:
    """The path of libfaketime (thread-safe build), or skip/fail without it."""
    for folder in ("/usr/lib/*/faketime", "/usr/lib/faketime"):
        found = sorted(glob.glob(f"{folder}/libfaketimeMT.so.1"))
        if found:
            return found[0]
    why = "libfaketime is not installed (Debian: apt-get install faketime)"
    if os.environ.get("AUDITOR_REQUIRE_FAKETIME") == "1":
        pytest.fail(why)
    pytest.skip(why)


def off_by(offset: str, library: str) -> dict[str, str]:
    # The monotonic clock stays true: a wrong wall clock is what a misconfigured host has.
    return {"LD_PRELOAD": library, "FAKETIME": offset, "FAKETIME_DONT_FAKE_MONOTONIC": "1"}


async def test_replicas_whose_clocks_are_five_minutes_off_neither_steal_nor_lose_leases(
    pg_url: str, tmp_path: Path, spawn_daemon: DaemonSpawner
) -> None:
    """One replica with a true clock, one 5 minutes ahead (by its own clock every lease of
    the others has run out), one 5 minutes behind (by its own, nothing is ever due and its
    leases have run out before they begin). Going by the database's clock, all three share
    the fleet cycle by cycle, never audit one target at once, deliver each alert once and
    without delay, and when the one behind is killed, the one ahead waits out its leases like
    anybody else."""
    library = libfaketime()
    fleet = Simulator.fleet(24, scripts=3)
    every = 3.0
    # Audits long enough that the others try to claim targets while they run.
    for pbx in fleet:
        pbx.add_fault("delay", endpoint="scripts", seconds=0.4)
    received: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(json.loads(await request.read()))
        # Slow, so that the others try to claim a delivery while it is in flight.
        await asyncio.sleep(0.5)
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    receiver = web.AppRunner(app)
    await receiver.setup()
    await web.TCPSite(receiver, "127.0.0.1", 0).start()
    webhook = f"""
[[alerts.webhook]]
name = "hook"
url = "http://127.0.0.1:{receiver.addresses[0][1]}/hook"
secret = "whsec_{base64.b64encode(secrets.token_bytes(32)).decode()}"
"""
    try:
        await _clocks_off(library, fleet, every, received, webhook, pg_url, tmp_path, spawn_daemon)
    finally:
        await receiver.cleanup()


async def _clocks_off(
    library: str,
    fleet: Simulator,
    every: float,
    received: list[dict[str, Any]],
    webhook: str,
    pg_url: str,
    tmp_path: Path,
    spawn_daemon: DaemonSpawner,
) -> None:
    async with serve(fleet) as base, await Store.open(pg_url) as store:
        configs = [
            daemon_config(
                tmp_path / f"replica-{i}.toml",
                database=pg_url,
                targets=[(name, pbx_url(base, name)) for name in fleet.names],
                every="3s",
                timeout="60s",
                grace="5s",
                max_concurrent=4,
                extra=webhook,
            )
            for i in range(3)
        ]
        launched = utcnow()
        true = await spawn_daemon(configs[0])
        ahead = await spawn_daemon(configs[1], env=off_by("+5m", library))
        behind = await spawn_daemon(configs[2], env=off_by("-5m", library))
        replicas = [true, ahead, behind]
        for replica in replicas:
            await replica.until(partial(replica.events, "service.started"), "start-up")
        # Each says how far its host's clock is from the database's.
        assert true.events("clock.offset") == []
        for replica, sign in ((ahead, -1), (behind, 1)):
            (offset,) = replica.events("clock.offset")
            assert abs(offset["offset_s"] - sign * 300) < 5, offset

        await true.until(partial(cycles_done, store, 24, 4), "four audits of every target", 120)
        for replica in replicas:
            await replica.until(partial(replica.events, "audit.ok"), "an audit by each replica")
        phase_one = utcnow()
        grouped = await runs_by_target(store)
        assert_once_per_cycle(grouped, launched, every, phase_one)
        # The schedule keeps its pace whoever audits: due times are the database's, so the
        # one ahead does not push targets 5 minutes out, nor the one behind pull them in.
        for target in await store.reads.targets():
            assert target.next_run_at is not None
            assert target.next_run_at <= utcnow() + timedelta(seconds=2 * every), target
        # Alerts raised by whichever replica audits: due for delivery at once by the
        # database's clock (not 5 minutes later), and each sent by one replica only.
        changed = fleet.names[:12]
        for name in changed:
            fleet[name].add_script("failover-new.sh")

        def delivered() -> bool:
            return len({alert["id"] for alert in received}) == len(changed)

        await true.until(delivered, "every alert delivered")

        owner = owner_of(behind)
        await behind.until(partial(auditing, store, owner), "an audit under the one behind")
        behind.proc.send_signal(signal.SIGKILL)
        assert await behind.exited() == -signal.SIGKILL
        killed = utcnow()
        held = await leases_of(store, owner)
        assert held

        async def taken_over() -> bool:
            grouped = await runs_by_target(store)
            return all(any(r.started_at > killed for r in grouped[name]) for name in held)

        await true.until(taken_over, "the killed replica's targets audited again", within=90)
        assert await true.stop() == 0
        assert await ahead.stop() == 0

        grouped = await runs_by_target(store)
        assert_taken_over(grouped, held, killed, recorded_by(replicas), victim=2)
        assert_one_audit_at_a_time(grouped, fleet)
        # No live lease was lost, nor taken from another.
        for replica in replicas:
            assert replica.events("lease.lost") == [], replica.stderr_tail()
            assert replica.events("lease.expiring") == [], replica.stderr_tail()
        # Runs are stamped with the database's time, whichever host recorded them.
        for runs in grouped.values():
            for run in runs:
                assert launched <= run.started_at <= utcnow(), run
        assert all(t.lease_owner is None for t in await store.reads.targets())
        assert sorted(alert["target"] for alert in received) == sorted(changed)
        assert {alert["kind"] for alert in received} == {"script.added"}
        assert len(await store.reads.alert_events(limit=None)) == len(changed)
