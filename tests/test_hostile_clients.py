"""Hostile HTTP clients against the daemon: a 4xx with one short line, never a 5xx or a stall.

The daemon is the real ``3cx-auditor run`` subprocess (on SQLite and on PostgreSQL, where a
NUL or an id beyond 32 bits reaches the database differently), auditing one PBX of the
simulator served here. Requests are written byte for byte on a socket, so that what no
well-behaved client sends (bytes that are not UTF-8 in a header, a half-sent request)
reaches the daemon as written. A hypothesis test throws arbitrary query strings at every
list route.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote_from_bytes

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from auditor.simulator import Simulator, pbx_url, serve
from auditor.store import driver_url
from tests.conftest import Daemon, DaemonSpawner, daemon_config

TOKEN = "hostile-clients-token-0123456789"
AUTH = f"Authorization: Bearer {TOKEN}\r\n".encode()
LIST_PATHS = ("/api/v1/targets", "/api/v1/runs", "/api/v1/changes", "/api/v1/alerts")
# An error line is bounded whatever the request held: it repeats at most 40 characters of
# a refused value (the longest lines list every alert kind).
MAX_ERROR = 300
# Words that would betray the database or the code to a client.
BETRAYING = ("sqlite", "postgres", "Error", "Exception", "Traceback", "audit.db", "asyncpg")


@dataclass
class Answer:
    status: int
    body: bytes

    def error(self) -> str:
        data = json.loads(self.body)
        assert set(data) == {"error"}, data
        line: str = data["error"]
        return line


def request(port: int, raw: bytes, *, timeout: float = 30.0) -> Answer:
    """Send ``raw`` (a whole request) on a new connection and read the answer to its end."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(raw)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return Answer(status, body)


def get(port: int, target: bytes, headers: bytes = AUTH) -> Answer:
    return request(
        port,
        b"GET "
        + target
        + b" HTTP/1.1\r\nHost: auditor\r\nConnection: close\r\n"
        + headers
        + b"\r\n",
    )


def cursor(document: bytes) -> bytes:
    return base64.urlsafe_b64encode(document).rstrip(b"=")


@dataclass
class Running:
    daemon: Daemon
    port: int
    database: str


@pytest.fixture
async def sim() -> AsyncIterator[str]:
    async with serve(Simulator.fleet(1, scripts=4)) as base:
        yield base


async def start(
    spawn_daemon: DaemonSpawner,
    tmp_path: Path,
    database: str,
    base: str,
    **http: str,
) -> Running:
    config = daemon_config(
        tmp_path / "auditor.toml",
        database=database,
        targets=[("pbx-0001", pbx_url(base, "pbx-0001"))],
    )
    listen = next(
        line.split('"')[1] for line in config.read_text().splitlines() if "listen" in line
    )
    env = {"AUDITOR_HTTP__TOKEN": TOKEN}
    env.update({f"AUDITOR_HTTP__{key.upper()}": value for key, value in http.items()})
    daemon = await spawn_daemon(config, env=env)
    await daemon.until(lambda: daemon.events("audit.baseline"), "the first audit")
    return Running(daemon, int(listen.rsplit(":", 1)[1]), database)


@pytest.fixture
async def running(spawn_daemon: DaemonSpawner, tmp_path: Path, db_url: str, sim: str) -> Running:
    return await start(spawn_daemon, tmp_path, db_url, sim)


# -- one short 400 for each hostile request ----------------------------------------------

HOSTILE: list[tuple[str, bytes, bytes, str]] = [
    # (what, request target, extra headers, the parameter the error names)
    (
        "Authorization not UTF-8",
        b"/api/v1/runs",
        b"Authorization: Bearer \xff\xfe\r\n",
        "Authorization",
    ),
    (
        "Authorization, a lone continuation byte",
        b"/feed.atom",
        b"Authorization: \x80" + TOKEN.encode() + b"\r\n",
        "Authorization",
    ),
    ("cursor too long", b"/api/v1/runs?cursor=" + b"A" * 600, AUTH, "cursor"),
    (
        "cursor deeply nested",
        b"/api/v1/runs?cursor=" + cursor(b"[" * 3000 + b"]" * 3000),
        AUTH,
        "cursor",
    ),
    (
        "cursor nested under its key",
        b"/api/v1/runs?cursor=" + cursor(b'{"k":"runs","a":' + b"[" * 150 + b"]" * 150 + b"}"),
        AUTH,
        "cursor",
    ),
    (
        "cursor id beyond 32 bits",
        b"/api/v1/changes?cursor=" + cursor(b'{"k":"changes","a":2147483648}'),
        AUTH,
        "cursor",
    ),
    (
        "cursor id of 30 digits",
        b"/api/v1/runs?cursor=" + cursor(b'{"k":"runs","a":' + b"9" * 30 + b"}"),
        AUTH,
        "cursor",
    ),
    (
        "cursor id negative",
        b"/api/v1/alerts?cursor=" + cursor(b'{"k":"alerts","a":-99999999999999999999}'),
        AUTH,
        "cursor",
    ),
    (
        "cursor id of 5000 digits",
        b"/api/v1/runs?cursor=" + cursor(b'{"k":"runs","a":' + b"9" * 5000 + b"}"),
        AUTH,
        "cursor",
    ),
    (
        "targets cursor with a NUL",
        b"/api/v1/targets?cursor=" + cursor(b'{"k":"targets","a":"\\u0000"}'),
        AUTH,
        "cursor",
    ),
    (
        "targets cursor with a lone surrogate",
        b"/api/v1/targets?cursor=" + cursor(b'{"k":"targets","a":"\\ud800"}'),
        AUTH,
        "cursor",
    ),
    ("year 0", b"/api/v1/runs?since=0000-01-01T00:00:00Z", AUTH, "since"),
    ("year 10000", b"/api/v1/runs?until=10000-01-01T00:00:00Z", AUTH, "until"),
    ("year 1 east of UTC", b"/api/v1/runs?since=0001-01-01T00:00:00%2B14:00", AUTH, "since"),
    ("year 9999 west of UTC", b"/api/v1/changes?until=9999-12-31T23:59:59-14:00", AUTH, "until"),
    ("an offset of 99 hours", b"/api/v1/alerts?since=2026-01-01T00:00:00%2B99:00", AUTH, "since"),
    ("an age beyond the calendar", b"/api/v1/runs?since=99999999999d", AUTH, "since"),
    ("an age of 400 digits", b"/api/v1/runs?since=" + b"9" * 400 + b"s", AUTH, "since"),
    ("a time with a NUL", b"/api/v1/runs?since=2026-01-01%00", AUTH, "since"),
    ("a target with a NUL", b"/api/v1/runs?target=%00", AUTH, "target"),
    ("a target not UTF-8", b"/api/v1/alerts?target=%FF%FE", AUTH, "target"),
    ("a target no target can have", b"/feed.atom?target=" + b"x" * 65, AUTH, "target"),
    ("a limit of 400 digits", b"/api/v1/runs?limit=" + b"9" * 400, AUTH, "limit"),
    ("a key with a NUL", b"/api/v1/changes?key=a%00.sh", AUTH, "key"),
    ("a kind of 4000 bytes", b"/api/v1/alerts?kind=" + b"k" * 4000, AUTH, "kind"),
    ("a severity of 4000 bytes", b"/api/v1/alerts?severity=" + b"s" * 4000, AUTH, "severity"),
    ("a parameter name of 4000 bytes", b"/api/v1/runs?" + b"n" * 4000 + b"=1", AUTH, "n" * 40),
]


async def test_each_hostile_request_gets_a_short_400(running: Running) -> None:
    for what, target, headers, names in HOSTILE:
        answer = await asyncio.to_thread(get, running.port, target, headers)
        assert answer.status == 400, (what, answer)
        line = answer.error()
        assert line.startswith(names), (what, line)
        assert "\n" not in line
        assert len(line) <= MAX_ERROR, (what, line)
        assert not any(word in line for word in BETRAYING), (what, line)
    # A Host header that is no host name at all is no reason to fail: the feed's self link
    # is then the path alone.
    answer = await asyncio.to_thread(
        request,
        running.port,
        b"GET /feed.atom HTTP/1.1\r\nHost: \xff\xfe\r\nConnection: close\r\n" + AUTH + b"\r\n",
    )
    assert answer.status == 200
    assert b'rel="self" type="application/atom+xml" href="/feed.atom"' in answer.body
    assert not running.daemon.events("http.handler_crashed")


async def test_a_5xx_names_neither_the_database_nor_an_exception(running: Running) -> None:
    engine = create_async_engine(driver_url(running.database), poolclass=NullPool)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("ALTER TABLE alert_events RENAME TO alert_events_away"))
        answers = [await asyncio.to_thread(get, running.port, b"/api/v1/alerts") for _ in range(20)]
    finally:
        async with engine.begin() as conn:
            await conn.execute(text("ALTER TABLE alert_events_away RENAME TO alert_events"))
        await engine.dispose()
    for answer in answers:
        assert answer.status == 503
        assert answer.error() == "the database is not available; the daemon's log says why"
    # What the client was not told is in the log, once (not twenty times).
    (logged,) = running.daemon.events("http.database_error")
    assert "alert_events" in logged["error"]
    assert logged["path"] == "/api/v1/alerts"


# -- any query string: never a 5xx ------------------------------------------------------------

_DATES = st.builds(
    lambda year, rest, offset: f"{year:04d}{rest}{offset}",
    st.integers(0, 10000),
    st.sampled_from(["-01-01", "-12-31T23:59:59", "-02-29T00:00:00.999999", "-13-01"]),
    st.sampled_from(["", "Z", "+14:00", "-14:00", "+23:59", "+99:00", " 02:00"]),
)
_AGES = st.builds(lambda n, unit: f"{n}{unit}", st.integers(-10, 10**12), st.sampled_from("smhdw "))
_SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text()
# One level of nesting is enough here: deep nesting is among the hostile requests above.
_JSON = (
    _SCALARS
    | st.lists(_SCALARS, max_size=3)
    | st.dictionaries(st.text(max_size=3), _SCALARS, max_size=3)
)
_CURSORS = st.one_of(
    st.builds(
        lambda kind, last: cursor(json.dumps({"k": kind, "a": last}).encode()).decode(),
        st.sampled_from(["runs", "changes", "alerts", "targets", "x"]),
        _JSON,
    ),
    st.builds(lambda raw: cursor(raw).decode(), st.binary(max_size=64)),
    st.text(max_size=80),
)
_VALUES = st.one_of(
    st.binary(max_size=40),
    st.text(max_size=40).map(lambda t: t.encode("utf-8", "surrogatepass")),
    _DATES.map(str.encode),
    _AGES.map(str.encode),
    _CURSORS.map(str.encode),
    st.integers(-(2**70), 2**70).map(lambda n: str(n).encode()),
)
_NAMES = st.one_of(
    st.sampled_from(b"target since until limit cursor key kind collection severity firing".split()),
    st.binary(max_size=12),
)
QUERIES = st.lists(st.tuples(_NAMES, _VALUES), max_size=5)


def query_string(pairs: list[tuple[bytes, bytes]]) -> bytes:
    return b"&".join(
        quote_from_bytes(name, safe="").encode() + b"=" + quote_from_bytes(value, safe="").encode()
        for name, value in pairs
    )


def fuzz(port: int) -> None:
    @settings(
        max_examples=150,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
        database=None,
    )
    @given(path=st.sampled_from([*LIST_PATHS, "/feed.atom"]), pairs=QUERIES)
    def check(path: str, pairs: list[tuple[bytes, bytes]]) -> None:
        answer = get(port, path.encode() + b"?" + query_string(pairs))
        assert answer.status < 500, (path, pairs, answer)
        if answer.status >= 400 and answer.body.startswith(b"{"):
            line = answer.error()
            assert "\n" not in line, line
            assert len(line) <= MAX_ERROR, line

    check()


async def test_no_query_string_makes_a_5xx(running: Running) -> None:
    # In a thread: the test's loop goes on reading the daemon's output meanwhile.
    await asyncio.to_thread(fuzz, running.port)
    assert not running.daemon.events("http.handler_crashed")
    assert not running.daemon.events("http.database_error")


# -- idle, half-sent and too many connections -----------------------------------------------


def closed_by_server(sock: socket.socket, within: float) -> bool:
    """Whether the server closes ``sock`` within ``within`` seconds (reading what it sends)."""
    deadline = time.monotonic() + within
    sock.settimeout(0.2)
    while time.monotonic() < deadline:
        try:
            if sock.recv(65536) == b"":
                return True
        except TimeoutError:
            continue
        except ConnectionResetError:
            return True
    return False


def idle_and_half_sent(port: int) -> dict[str, bool]:
    """Which of three connections the server closes within 20 s: one that sends nothing,
    one that stops in the middle of a header, one that sends a byte of a header every
    half second and so never a whole request (slowloris)."""
    socks = {
        "silent": socket.create_connection(("127.0.0.1", port)),
        "half": socket.create_connection(("127.0.0.1", port)),
        "trickle": socket.create_connection(("127.0.0.1", port)),
    }
    socks["half"].sendall(b"GET /livez HTTP/1.1\r\nHost: auditor\r\nX-Slow: ")
    socks["trickle"].sendall(b"GET /livez HTTP/1.1\r\nX-Slow: ")
    closed = dict.fromkeys(socks, False)
    deadline = time.monotonic() + 20
    try:
        while not all(closed.values()) and time.monotonic() < deadline:
            if not closed["trickle"]:
                with contextlib.suppress(OSError):
                    socks["trickle"].sendall(b"X")
            for name, sock in socks.items():
                if not closed[name]:
                    closed[name] = closed_by_server(sock, 0.25)
    finally:
        for sock in socks.values():
            sock.close()
    return closed


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_idle_and_half_sent_connections_are_closed(
    spawn_daemon: DaemonSpawner, tmp_path: Path, db_url: str, sim: str
) -> None:
    running = await start(spawn_daemon, tmp_path, db_url, sim, idle_timeout="2s")
    closed = await asyncio.to_thread(idle_and_half_sent, running.port)
    assert closed == {"silent": True, "half": True, "trickle": True}
    # The daemon still answers.
    assert (await asyncio.to_thread(get, running.port, b"/livez", b"")).status == 200


def hold(port: int, count: int) -> list[socket.socket]:
    held = []
    for _ in range(count):
        sock = socket.socket()
        sock.settimeout(10)
        sock.connect(("127.0.0.1", port))
        sock.setblocking(False)
        held.append(sock)
    return held


def still_open(sock: socket.socket) -> bool:
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_connections_are_capped_and_a_probe_still_gets_through(
    spawn_daemon: DaemonSpawner, tmp_path: Path, db_url: str, sim: str
) -> None:
    limit = 6
    running = await start(
        spawn_daemon, tmp_path, db_url, sim, max_connections=str(limit), idle_timeout="10m"
    )
    held = await asyncio.to_thread(hold, running.port, 5 * limit)
    try:
        # The daemon keeps at most its limit: for each connection over it, the one idle the
        # longest is closed (idle_timeout is ten minutes: none is closed for idleness).
        await running.daemon.until(
            lambda: sum(still_open(s) for s in held) <= limit, f"at most {limit} connections"
        )
        assert sum(still_open(s) for s in held) >= limit - 1
        # A probe is a new connection with a request: it gets through, and is answered.
        answer = await asyncio.to_thread(get, running.port, b"/readyz", b"")
        assert answer.status == 200, answer
        assert json.loads(answer.body)["checks"]["descriptors"] is True
        # The newest held connections are the ones kept.
        assert not still_open(held[0])
    finally:
        for sock in held:
            sock.close()
    (warned,) = running.daemon.events("http.connection_limit")
    assert warned["limit"] == limit
