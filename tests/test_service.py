"""The daemon, ``3cx-auditor run``, as a real subprocess against the simulator served here.

What is checked comes from three places that do not know each other: the daemon's own log
lines and alerts (its stderr and stdout), the record it leaves in the SQLite file, and what
the simulated PBXs saw (their request counters). The schedule arithmetic and the sd_notify
client are also tested in-process, on their own.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import random
import re
import secrets
import signal
import socket
import tomllib
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from standardwebhooks import Webhook

from auditor.config import ScheduleSettings
from auditor.errors import ConfigError, InUseError
from auditor.model import Run, utcnow
from auditor.service.schedule import first_run, next_run, schedule_of
from auditor.service.systemd import Notifier
from auditor.simulator import Simulator, pbx_url, serve
from auditor.store import Store
from auditor.store.lock import SqliteLock

# pytest puts tests/ on sys.path (the directory has no __init__.py), so conftest is a
# top-level module at run time; mypy checks the directory as the package "tests".
from tests.conftest import Daemon, DaemonSpawner, daemon_config

EVERY = 2.0


@pytest.fixture
async def sim() -> AsyncIterator[tuple[Simulator, str]]:
    fleet = Simulator.fleet(3, scripts=5)
    async with serve(fleet) as base:
        yield fleet, base


def targets(base: str, *numbers: int) -> list[tuple[str, str]]:
    return [(f"pbx-{n:04d}", pbx_url(base, f"pbx-{n:04d}")) for n in numbers]


async def runs_by_target(database: str) -> dict[str, list[Run]]:
    async with await Store.open(database) as store:
        found = await store.reads.runs(limit=None)
    grouped: dict[str, list[Run]] = defaultdict(list)
    for run in found:
        grouped[run.target].append(run)
    return grouped


def audits(daemon: Daemon, target: str, after: str = "") -> int:
    """Finished audits of ``target`` the daemon logged (after log time ``after``)."""
    return sum(
        1
        for line in daemon.logs
        if line.get("target") == target
        and line.get("event") in ("audit.ok", "audit.baseline", "audit.not_complete")
        and str(line.get("ts", "")) > after
    )


def audited(daemon: Daemon, target: str, count: int, after: str = "") -> Callable[[], bool]:
    return lambda: audits(daemon, target, after) >= count


def http_base(config: Path) -> str:
    return "http://" + str(tomllib.loads(config.read_text())["http"]["listen"])


def assert_never_overlapping(runs: list[Run]) -> None:
    for earlier, later in itertools.pairwise(runs):
        assert earlier.finished_at is not None
        assert earlier.finished_at <= later.started_at, (earlier, later)


# -- the schedule, in-process ------------------------------------------------------------------

T0 = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)


def seconds(value: float) -> datetime:
    return T0 + timedelta(seconds=value)


@pytest.mark.parametrize(
    ("ended", "expected_next", "skipped"),
    [
        (0.3, 60, 0),  # on time
        (59.9, 60, 0),  # a long audit, still within its interval
        (60.0, 120, 1),  # the next time came while it ran: coalesced, counted
        (200.0, 240, 3),  # a stall of three intervals
    ],
)
def test_every_keeps_the_phase_and_counts_what_it_skips(
    ended: float, expected_next: float, skipped: int
) -> None:
    schedule = schedule_of(ScheduleSettings(every=timedelta(minutes=1), jitter=timedelta(0)))
    rng = random.Random(1)
    assert next_run(schedule, seconds(0), seconds(ended), rng) == (seconds(expected_next), skipped)


def test_cron_runs_at_its_fire_times_plus_jitter_and_counts_missed_ones() -> None:
    schedule = schedule_of(ScheduleSettings(cron="*/15 * * * *", jitter=timedelta(seconds=30)))
    rng = random.Random(7)
    due = seconds(12)  # the 10:00 fire, jittered
    following = {next_run(schedule, due, seconds(40), rng)[0] - seconds(15 * 60) for _ in range(50)}
    assert all(timedelta(0) <= offset <= timedelta(seconds=30) for offset in following)
    assert len(following) > 1  # drawn anew each time
    later, skipped = next_run(schedule, due, seconds(50 * 60), rng)
    assert skipped == 3  # 10:15, 10:30 and 10:45 passed while it was stalled
    assert seconds(60 * 60) <= later <= seconds(60 * 60 + 30)


def test_first_runs_spread_over_the_jitter() -> None:
    schedule = schedule_of(ScheduleSettings(every=timedelta(hours=1), jitter=timedelta(minutes=5)))
    rng = random.Random(3)
    firsts = [first_run(schedule, T0, rng) for _ in range(200)]
    assert all(T0 <= f <= T0 + timedelta(minutes=5) for f in firsts)
    assert max(firsts) - min(firsts) > timedelta(minutes=3)


def test_an_impossible_cron_expression_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as caught:
        # Built unchecked: the settings refuse it themselves (tests/test_config_errors.py).
        schedule_of(ScheduleSettings.model_construct(cron="61 * * * *"))
    (line,) = caught.value.problems
    assert line.startswith("config: schedule.cron: ")


# -- sd_notify and the SQLite lock, in-process ----------------------------------------------------


def test_notifier_speaks_to_abstract_sockets_and_checks_the_watchdog_pid() -> None:
    name = f"3cx-auditor-test-{random.getrandbits(48):x}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(b"\0" + name.encode())
        notifier = Notifier({"NOTIFY_SOCKET": f"@{name}", "WATCHDOG_USEC": "4000000"})
        notifier.send("READY=1", "STATUS=up")
        assert listener.recv(100) == b"READY=1\nSTATUS=up"
        notifier.close()
    assert notifier.watchdog_interval == 2.0
    elsewhere = Notifier({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"})
    assert elsewhere.watchdog_interval is None  # the watchdog is another process's
    silent = Notifier({})
    assert not silent.enabled
    silent.send("READY=1")  # no socket: nothing happens


def test_sqlite_database_is_locked_for_one_process(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    held = SqliteLock.acquire(url)
    assert held is not None
    try:
        with pytest.raises(InUseError, match=r"in use by another 3cx-auditor process \(pid \d+\)"):
            SqliteLock.acquire(url)
    finally:
        held.release()
    again = SqliteLock.acquire(url)
    assert again is not None
    again.release()
    assert SqliteLock.acquire("postgresql://auditor@127.0.0.1/audit") is None


# -- the daemon as a subprocess -----------------------------------------------------------------


async def test_audits_on_schedule_tells_systemd_and_keeps_the_database_to_itself(
    tmp_path: Path, sim: tuple[Simulator, str], spawn_daemon: DaemonSpawner
) -> None:
    fleet, base = sim
    database = f"sqlite:///{tmp_path / 'audit.db'}"
    config = daemon_config(
        tmp_path / "auditor.toml", database=database, targets=targets(base, 1, 2)
    )
    notify_path = tmp_path / "notify"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(notify_path))
    listener.setblocking(False)
    messages: list[str] = []

    async def receive() -> None:
        loop = asyncio.get_running_loop()
        while True:
            messages.append((await loop.sock_recv(listener, 4096)).decode())

    receiver = asyncio.create_task(receive())
    launched = utcnow()
    daemon = await spawn_daemon(
        config, env={"NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "1000000"}
    )
    try:
        await daemon.until(lambda: any("READY=1" in m for m in messages), "READY=1")
        # READY means the database, its migrations and the HTTP server are all up.
        async with (
            aiohttp.ClientSession() as http,
            http.get(http_base(config) + "/readyz") as answer,
        ):
            assert answer.status == 200
            assert (await answer.json())["status"] == "ready"

        # A second daemon on the same SQLite file is refused with one clear line.
        second = await spawn_daemon(config)
        assert await second.exited() == 2
        assert [line["text"] for line in second.logs] == [
            f"database: {database} is in use by another 3cx-auditor process "
            f"(pid {daemon.proc.pid}); SQLite serves one process — use PostgreSQL for replicas"
        ]

        for name in ("pbx-0001", "pbx-0002"):
            await daemon.until(audited(daemon, name, 3), f"three audits of {name}")
        assert await daemon.stop() == 0
    finally:
        receiver.cancel()
        listener.close()

    ready = next(i for i, m in enumerate(messages) if m.startswith("READY=1"))
    assert all(m.startswith("STATUS=starting") or m == "WATCHDOG=1" for m in messages[:ready])
    assert "WATCHDOG=1" in messages[ready:]
    assert "STOPPING=1" in messages[-1]
    assert sum(m == "WATCHDOG=1" for m in messages) >= 2
    assert any(re.fullmatch(r"STATUS=auditing \d of 2 targets; next in \d+s", m) for m in messages)

    grouped = await runs_by_target(database)
    assert sorted(grouped) == ["pbx-0001", "pbx-0002"]
    for name, runs in grouped.items():
        assert len(runs) >= 3
        assert [r.status for r in runs] == ["ok"] * len(runs)
        assert_never_overlapping(runs)
        # Due times are EVERY apart from a first one after the launch: the k-th audit
        # can be late (a busy machine), never early.
        for k, run in enumerate(runs):
            assert run.started_at >= launched + timedelta(seconds=k * EVERY), (k, run)
        pbx = fleet[name]
        # One client per target across runs: one login, one listing request per run.
        assert pbx.stats.logins == 1
        listings = [r for r in pbx.stats.for_endpoint("scripts") if r.status == 200]
        assert len(listings) == len(runs)
    assert daemon.alerts == []  # a baseline and unchanged PBXs raise nothing


async def test_a_stall_is_coalesced_into_one_audit_and_counted(
    tmp_path: Path, sim: tuple[Simulator, str], spawn_daemon: DaemonSpawner
) -> None:
    _fleet, base = sim
    database = f"sqlite:///{tmp_path / 'audit.db'}"
    every = 1.0
    config = daemon_config(
        tmp_path / "auditor.toml", database=database, targets=targets(base, 1), every="1s"
    )
    daemon = await spawn_daemon(config)
    await daemon.until(lambda: audits(daemon, "pbx-0001") >= 2, "two audits")
    # The whole process stands still (as a suspended VM or a blocked event loop would).
    daemon.proc.send_signal(signal.SIGSTOP)
    await asyncio.sleep(6)
    resumed = utcnow()
    daemon.proc.send_signal(signal.SIGCONT)
    await daemon.until(lambda: bool(daemon.events("schedule.missed")), "schedule.missed")
    await daemon.until(lambda: audits(daemon, "pbx-0001") >= 5, "audits after the stall")
    ended = utcnow()
    assert await daemon.stop() == 0

    (missed,) = daemon.events("schedule.missed")
    assert missed["target"] == "pbx-0001"
    assert missed["skipped"] >= 4  # six seconds on a one-second schedule
    runs = (await runs_by_target(database))["pbx-0001"]
    assert_never_overlapping(runs)
    after = [r for r in runs if r.started_at >= resumed]
    # Replaying the missed times would add `skipped` audits at once; coalesced, there is
    # one for all of them, then the schedule goes on.
    window = (ended - resumed).total_seconds()
    assert 1 <= len(after) <= window / every + 2 < window / every + missed["skipped"]


async def test_sigterm_mid_audit_drains_then_cancels_and_a_restart_raises_no_false_alert(
    tmp_path: Path, sim: tuple[Simulator, str], spawn_daemon: DaemonSpawner
) -> None:
    fleet, base = sim
    database = f"sqlite:///{tmp_path / 'audit.db'}"
    grace = 3.0
    config = daemon_config(
        tmp_path / "auditor.toml", database=database, targets=targets(base, 1, 2), grace="3s"
    )
    daemon = await spawn_daemon(config)
    await daemon.until(lambda: len(daemon.events("audit.baseline")) == 2, "both baselines")

    # The next audits hang in the listing: one for less than the grace, one for far more.
    quick = fleet["pbx-0001"].add_fault("delay", endpoint="scripts", seconds=1.0, times=1)
    stuck = fleet["pbx-0002"].add_fault("delay", endpoint="scripts", seconds=120.0, times=1)
    await daemon.until(lambda: quick.fired == 1 and stuck.fired == 1, "both audits in flight")
    loop = asyncio.get_running_loop()
    signalled = loop.time()
    daemon.proc.send_signal(signal.SIGTERM)
    statuses = []
    async with aiohttp.ClientSession() as http:
        while daemon.proc.returncode is None and 503 not in statuses:
            try:
                async with http.get(http_base(config) + "/readyz") as answer:
                    statuses.append(answer.status)
            except aiohttp.ClientError:
                break
            await asyncio.sleep(0.05)
    assert await daemon.exited() == 0
    assert loop.time() - signalled < grace + 20  # the grace, then a bounded clean-up
    assert 503 in statuses  # draining is not ready

    (cancelling,) = daemon.events("service.cancelling")
    assert cancelling["targets"] == ["pbx-0002"], daemon.stderr_tail(40)
    grouped = await runs_by_target(database)
    assert all(r.status != "running" for runs in grouped.values() for r in runs)
    assert grouped["pbx-0001"][-1].status == "ok"  # finished within the grace
    last = grouped["pbx-0002"][-1]
    assert last.status == "failed"
    assert last.error is not None
    assert "cancelled" in last.error
    async with await Store.open(database) as store:
        assert all(t.lease_owner is None for t in await store.reads.targets())

    # A restart audits both again; the cancelled run was not diffed, so nothing is reported
    # missing: no alert at all, before or after.
    again = await spawn_daemon(config)
    for name in ("pbx-0001", "pbx-0002"):
        await again.until(audited(again, name, 1), f"an audit of {name}")
    assert await again.stop() == 0
    assert daemon.alerts == []
    assert again.alerts == []
    async with await Store.open(database) as store:
        assert await store.reads.alert_events(limit=None) == []
        history = await store.reads.changes(limit=None)
    assert {c.kind for c in history} == {"added"}  # the two baselines, nothing since
    failover = [c for c in history if c.collection in ("failover_scripts", "failover_settings")]
    assert len(failover) == 2 * (5 + 1)


async def test_sighup_adds_and_removes_targets_and_refuses_an_invalid_config(
    tmp_path: Path, sim: tuple[Simulator, str], spawn_daemon: DaemonSpawner
) -> None:
    fleet, base = sim
    database = f"sqlite:///{tmp_path / 'audit.db'}"
    path = tmp_path / "auditor.toml"
    config = daemon_config(path, database=database, targets=targets(base, 1, 2))
    listen = tomllib.loads(config.read_text())["http"]["listen"]
    daemon = await spawn_daemon(config)
    await daemon.until(lambda: len(daemon.events("audit.baseline")) == 2, "both baselines")

    daemon_config(path, database=database, targets=targets(base, 1, 3), listen=listen)
    daemon.proc.send_signal(signal.SIGHUP)
    await daemon.until(lambda: bool(daemon.events("config.reloaded")), "config.reloaded")
    (reloaded,) = daemon.events("config.reloaded")
    assert (reloaded["added"], reloaded["removed"]) == (["pbx-0003"], ["pbx-0002"])
    at = str(reloaded["ts"])
    await daemon.until(lambda: audits(daemon, "pbx-0003") >= 2, "audits of the added target")
    await daemon.until(lambda: audits(daemon, "pbx-0001", at) >= 2, "pbx-0001 still audited")

    good = path.read_text()
    path.write_text('colour = "blue"\n' + good.replace('every = "2s"', 'every = "soon"'))
    daemon.proc.send_signal(signal.SIGHUP)
    await daemon.until(lambda: len(daemon.events("config.reload_refused")) == 2, "the refusal")
    refused_at = str(daemon.events("config.reload_refused")[-1]["ts"])
    assert sorted(line["problem"] for line in daemon.events("config.reload_refused")) == [
        "config: colour: unknown key",
        "config: schedule.every: must be a duration like '30s', '15m' or '1h' (got 'soon')",
    ]
    for name in ("pbx-0001", "pbx-0003"):
        await daemon.until(
            audited(daemon, name, 2, refused_at), f"{name} audited after the refusal"
        )
    assert await daemon.stop() == 0

    grouped = await runs_by_target(database)
    removed_at = datetime.fromisoformat(at)
    # An audit of pbx-0002 in flight at the reload may finish; none starts after it.
    assert all(r.started_at <= removed_at for r in grouped["pbx-0002"])
    listings = [r for r in fleet["pbx-0002"].stats.for_endpoint("scripts") if r.status == 200]
    assert len(listings) == len(grouped["pbx-0002"])
    assert [r.status for r in grouped["pbx-0003"]] == ["ok"] * len(grouped["pbx-0003"])
    assert json.dumps(daemon.alerts) == "[]"


async def test_sighup_names_the_keys_that_need_a_restart_and_keeps_their_old_values(
    tmp_path: Path, sim: tuple[Simulator, str], spawn_daemon: DaemonSpawner
) -> None:
    _, base = sim
    database = f"sqlite:///{tmp_path / 'audit.db'}"
    elsewhere = tmp_path / "elsewhere.db"
    path = tmp_path / "auditor.toml"
    config = daemon_config(path, database=database, targets=targets(base, 1))
    listen = tomllib.loads(config.read_text())["http"]["listen"]
    daemon = await spawn_daemon(config)
    await daemon.until(audited(daemon, "pbx-0001", 1), "the baseline")

    daemon_config(
        path, database=f"sqlite:///{elsewhere}", targets=targets(base, 1, 2), listen=listen
    )
    daemon.proc.send_signal(signal.SIGHUP)
    await daemon.until(lambda: bool(daemon.events("config.reloaded")), "config.reloaded")
    (restart,) = daemon.events("config.restart_needed")
    assert restart["keys"] == ["database.url"]
    at = str(daemon.events("config.reloaded")[0]["ts"])
    # The rest of the new config applies; the database stays the one the daemon opened.
    await daemon.until(audited(daemon, "pbx-0002", 1, at), "the added target audited")
    await daemon.until(audited(daemon, "pbx-0001", 1, at), "pbx-0001 still audited")
    assert await daemon.stop() == 0
    assert not elsewhere.exists()
    grouped = await runs_by_target(database)
    assert set(grouped) == {"pbx-0001", "pbx-0002"}


async def test_a_config_the_daemon_cannot_use_exits_2_with_one_line(
    tmp_path: Path, spawn_daemon: DaemonSpawner
) -> None:
    config = daemon_config(
        tmp_path / "auditor.toml",
        database=f"sqlite:///{tmp_path / 'audit.db'}",
        targets=[("pbx", "http://127.0.0.1:9/pbx")],
    )
    config.write_text(config.read_text().replace('every = "2s"', 'cron = "61 * * * *"'))
    daemon = await spawn_daemon(config)
    assert await daemon.exited() == 2
    (line,) = daemon.logs
    assert line["text"].startswith("config: schedule.cron: ")


async def test_after_a_crash_the_next_start_takes_the_dead_lease_back_at_once(
    tmp_path: Path, sim: tuple[Simulator, str], spawn_daemon: DaemonSpawner
) -> None:
    fleet, base = sim
    database = f"sqlite:///{tmp_path / 'audit.db'}"
    # A lease far longer than a restart takes: taken back at once, or waited out.
    config = daemon_config(
        tmp_path / "auditor.toml", database=database, targets=targets(base, 1), lease="5m"
    )
    daemon = await spawn_daemon(config)
    await daemon.until(lambda: daemon.events("audit.baseline"), "the baseline")
    hang = fleet["pbx-0001"].add_fault("delay", endpoint="scripts", seconds=120.0, times=1)
    await daemon.until(lambda: hang.fired == 1, "an audit in flight")
    assert await daemon.stop(signal.SIGKILL) == -signal.SIGKILL
    async with await Store.open(database) as store:
        (dead,) = await store.reads.targets()
        (left,) = [r for r in await store.reads.runs(limit=None) if r.status == "running"]
    assert dead.lease_until is not None

    again = await spawn_daemon(config)
    await again.until(audited(again, "pbx-0001", 1), "an audit after the restart")
    assert await again.stop() == 0
    (recovered,) = again.events("service.recovered")
    assert recovered["leases_released"] == 1
    async with await Store.open(database) as store:
        ended = await store.reads.run(left.id)
        runs = await store.reads.runs(limit=None)
        assert await store.reads.alert_events(limit=None) == []
    assert ended is not None
    assert ended.status == "failed"
    assert ended.error is not None
    assert "interrupted" in ended.error
    # The dead process's lease was given back at start, not waited out.
    restarted = [r for r in runs if r.id > left.id]
    assert restarted[0].started_at < dead.lease_until
    assert [r.status for r in restarted] == ["ok"] * len(restarted)
    assert again.alerts == []


async def test_the_daemons_alerts_are_printed_and_delivered_to_a_webhook(
    tmp_path: Path, sim: tuple[Simulator, str], spawn_daemon: DaemonSpawner
) -> None:
    fleet, base = sim
    received: list[tuple[dict[str, str], bytes]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append((dict(request.headers), await request.read()))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    try:
        database = f"sqlite:///{tmp_path / 'audit.db'}"
        config = daemon_config(
            tmp_path / "auditor.toml",
            database=database,
            targets=targets(base, 1),
            every="1s",
            extra=f"""
[[alerts.webhook]]
name = "hook"
url = "http://127.0.0.1:{port}/hook"
secret = "{secret}"
""",
        )
        daemon = await spawn_daemon(config)
        await daemon.until(lambda: daemon.events("audit.baseline"), "the baseline")
        fleet["pbx-0001"].add_script("failover-new.sh")
        await daemon.until(lambda: received, "a webhook delivery")
        assert await daemon.stop() == 0
    finally:
        await runner.cleanup()

    ((headers, body),) = received
    alert = Webhook(secret).verify(body, headers)
    assert (alert["kind"], alert["target"], alert["key"]) == (
        "script.added",
        "pbx-0001",
        "failover-new.sh",
    )
    (printed,) = daemon.alerts
    assert (printed["event"], printed["id"]) == ("script.added", alert["id"])


async def test_a_second_sigterm_cancels_audits_at_once(
    tmp_path: Path, sim: tuple[Simulator, str], spawn_daemon: DaemonSpawner
) -> None:
    fleet, base = sim
    database = f"sqlite:///{tmp_path / 'audit.db'}"
    config = daemon_config(
        tmp_path / "auditor.toml", database=database, targets=targets(base, 1), grace="10m"
    )
    hang = fleet["pbx-0001"].add_fault("delay", endpoint="scripts", seconds=600.0, times=1)
    daemon = await spawn_daemon(config)
    await daemon.until(lambda: hang.fired == 1, "an audit in flight")
    daemon.proc.send_signal(signal.SIGTERM)
    await daemon.until(lambda: daemon.events("service.stopping"), "draining")
    assert await daemon.stop(signal.SIGTERM, within=60) == 0  # not ten minutes
    assert daemon.events("service.stop_now")
    (cancelling,) = daemon.events("service.cancelling")
    assert cancelling["why"] == "second stop signal"
    (run,) = (await runs_by_target(database))["pbx-0001"]
    assert run.status == "failed"
    assert run.error is not None
    assert "cancelled" in run.error


async def test_a_slot_freed_while_targets_wait_is_filled_without_waiting_for_a_tick(
    tmp_path: Path, sim: tuple[Simulator, str], spawn_daemon: DaemonSpawner
) -> None:
    _fleet, base = sim
    database = f"sqlite:///{tmp_path / 'audit.db'}"
    # One slot, three targets due at once, and no tick after the first for an hour: each
    # audit that ends must start the next, or two targets wait the hour.
    config = daemon_config(
        tmp_path / "auditor.toml",
        database=database,
        targets=targets(base, 1, 2, 3),
        every="1h",
        tick="1h",
        max_concurrent=1,
    )
    daemon = await spawn_daemon(config)
    names = ("pbx-0001", "pbx-0002", "pbx-0003")
    await daemon.until(
        lambda: all(audits(daemon, name) >= 1 for name in names), "an audit of each target"
    )
    assert await daemon.stop() == 0
    grouped = await runs_by_target(database)
    assert sorted(grouped) == list(names)
    everything = sorted((r for runs in grouped.values() for r in runs), key=lambda r: r.started_at)
    assert [r.status for r in everything] == ["ok"] * 3
    assert_never_overlapping(everything)  # still one at a time
