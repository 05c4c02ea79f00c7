"""A client holding many idle connections against the daemon, which has few descriptors.

The daemon is the real ``3cx-auditor run`` subprocess with a low ``ulimit -n`` (set in the
child before it starts), auditing two PBXs of the simulator served here every two seconds.
The test opens several times as many connections as the daemon may have descriptors, and
opens a new one for each the daemon closes, for the whole test. Before the connection cap,
this made ``accept()`` fail for want of a descriptor: asyncio logged a traceback for each
attempt (thousands a second) and audits failed to open their database and PBX connections,
while ``/readyz`` still said ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import resource
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest

from auditor.simulator import Simulator, pbx_url, serve
from tests.conftest import Daemon, DaemonSpawner, daemon_config

# The daemon's descriptor limit, and how many connections the client holds against it.
NOFILE = 128
HELD = 3 * NOFILE
TARGETS = ("pbx-0001", "pbx-0002")


@pytest.fixture
async def base() -> AsyncIterator[str]:
    async with serve(Simulator.fleet(2, scripts=5)) as url:
        yield url


def low_descriptor_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))


class Holder:
    """Keeps ``count`` idle connections open to ``port``: each one the server closes is
    replaced by a new one. None of them ever sends a byte."""

    def __init__(self, port: int, count: int) -> None:
        self.port = port
        self.count = count
        self.sockets: list[socket.socket] = []
        self.opened = 0
        self.closed_by_server = 0

    def _open(self) -> None:
        sock = socket.socket()
        sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            sock.connect(("127.0.0.1", self.port))
        self.sockets.append(sock)
        self.opened += 1

    @staticmethod
    def _closed(sock: socket.socket) -> bool:
        try:
            return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False  # open, and quiet
        except OSError as exc:
            return exc.errno != errno.ENOTCONN  # ENOTCONN: still connecting

    async def hold(self) -> None:
        while True:
            alive = []
            for sock in self.sockets:
                if self._closed(sock):
                    sock.close()
                    self.closed_by_server += 1
                else:
                    alive.append(sock)
            self.sockets = alive
            while len(self.sockets) < self.count:
                self._open()
            await asyncio.sleep(0.2)

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


def audits(daemon: Daemon, target: str) -> int:
    return sum(
        1
        for line in daemon.logs
        if line.get("target") == target and line.get("event") in ("audit.ok", "audit.baseline")
    )


def three_more(daemon: Daemon, target: str, before: int) -> Callable[[], bool]:
    return lambda: audits(daemon, target) >= before + 3


async def test_many_held_connections_neither_stop_audits_nor_flood_the_log(
    tmp_path: Path, base: str, spawn_daemon: DaemonSpawner
) -> None:
    database = f"sqlite:///{tmp_path / 'audit.db'}"
    config = daemon_config(
        tmp_path / "auditor.toml",
        database=database,
        targets=[(name, pbx_url(base, name)) for name in TARGETS],
    )
    listen = next(
        line.split('"')[1] for line in config.read_text().splitlines() if "listen" in line
    )
    daemon = await spawn_daemon(config, preexec=low_descriptor_limit)
    await daemon.until(lambda: daemon.events("service.started"), "the daemon's start")
    # It saw that its descriptors leave room for fewer connections than configured.
    (limited,) = daemon.events("http.connections_limited")
    assert limited["descriptor_limit"] == NOFILE
    assert limited["limit"] < limited["max_connections"]

    holder = Holder(int(listen.rsplit(":", 1)[1]), HELD)
    holding = asyncio.create_task(holder.hold())
    try:
        await daemon.until(lambda: holder.opened >= HELD, "the connections opened")
        before = {name: audits(daemon, name) for name in TARGETS}
        # Audits go on, on their two-second schedule, while the connections are held.
        for name in TARGETS:
            await daemon.until(
                three_more(daemon, name, before[name]),
                f"three more audits of {name} while {HELD} connections are held",
            )
        # /readyz is reachable, and says what is true: ready, descriptors to spare.
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http,
            http.get(f"http://{listen}/readyz") as answer,
        ):
            body = await answer.json()
        assert answer.status == 200, body
        assert body["checks"]["descriptors"] is True
        # The daemon closed connections to stay within its limit (the client replaced them).
        assert holder.closed_by_server > HELD - limited["limit"]
    finally:
        holding.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await holding
        holder.close()
    assert await daemon.stop() == 0

    # No flood: a handful of lines, each a JSON object; accept() never ran out.
    # The one line that is not JSON is the configuration's own warning about this very limit,
    # written before logging starts.
    plain = [line["text"] for line in daemon.events("(not json)")]
    assert all(text.startswith("config: audit.max_concurrent: ") for text in plain), plain
    assert len(plain) <= 1, daemon.stderr_tail()
    assert not daemon.events("http.out_of_descriptors")
    assert not daemon.events("audit.not_recorded")
    assert not daemon.events("audit.failed")
    assert len(daemon.events("http.connection_limit")) == 1  # once a minute at most
    assert len(daemon.logs) < 200, daemon.stderr_tail()
