"""Alert delivery: the outbox worker and its sinks, against real receivers on 127.0.0.1.

The webhook receiver checks every signature itself, from the Standard Webhooks spec (not
through the code under test), and records what it accepted. Time is the worker's ``now``
argument: a test jumps to the next attempt instead of sleeping through the backoff.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import socket
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from auditor.alerts.delivery import (
    DeliveryReport,
    RetryPolicy,
    deliver_due,
    delivery_id,
)
from auditor.alerts.routing import Router
from auditor.alerts.sinks import AppriseSink, Sink, WebhookSink, build_sinks, close_sinks
from auditor.config import AlertsSettings, AppriseSettings, WebhookSettings
from auditor.errors import DeliveryError
from auditor.model import SCRIPTS, Alert, FieldChange, Severity, fingerprint, utcnow
from auditor.simulator import Pbx, Simulator, serve
from auditor.store import AlertDraft, RunOutcome, Store
from tests.clirun import ALERT_FIELDS

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"fedcba9876543210fedcba9876543210").decode()
FAST = RetryPolicy(initial=timedelta(seconds=1), maximum=timedelta(seconds=60))
TARGET = "pbx-hq"
PROJECT = Path(__file__).resolve().parent.parent

Answer = tuple[int, Mapping[str, str]]


def spec_signature(secret: str, msg_id: str, timestamp: str, body: bytes) -> str:
    """The v1 signature as the Standard Webhooks spec defines it."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_ok(secret: str, headers: Mapping[str, str], body: bytes) -> bool:
    msg_id, stamp = headers.get("webhook-id"), headers.get("webhook-timestamp")
    if not msg_id or not stamp or abs(time.time() - int(stamp)) > 300:
        return False
    expected = spec_signature(secret, msg_id, stamp, body)
    offered = headers.get("webhook-signature", "").split()
    return any(hmac.compare_digest(sig, expected) for sig in offered)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Receiver:
    """A webhook endpoint: verifies signatures, answers what ``answer`` says."""

    secret: str
    port: int = field(default_factory=free_port)
    answer: Callable[[str], Answer] = lambda _id: (204, {})
    delay: float = 0.0
    attempts: list[str] = field(default_factory=list)
    accepted: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    bad_signatures: int = 0
    error_page: str = ""
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook?channel=ops&token=Zm9vYmFyYmF6"

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if not signature_ok(self.secret, request.headers, body):
            self.bad_signatures += 1
            return web.Response(status=401, text="bad signature")
        msg_id = request.headers["webhook-id"]
        self.attempts.append(msg_id)
        if self.delay:
            await asyncio.sleep(self.delay)
        status, headers = self.answer(msg_id)
        if 200 <= status < 300:
            self.accepted.append((msg_id, json.loads(body)))
        text = self.error_page if status >= 300 else ""
        return web.Response(status=status, headers=dict(headers), text=text)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A receiver whose port is chosen but which is not listening yet (start() it)."""
    hook = Receiver(SECRET)
    try:
        yield hook
    finally:
        await hook.stop()


def webhook_sinks(url: str, *, secret: str = SECRET, name: str = "ops") -> dict[str, Sink]:
    settings = AlertsSettings(webhook=[{"name": name, "url": url, "secret": secret}])
    return build_sinks(settings)


def draft(key: str, *, kind: str = "script.changed", severity: Severity = "warning") -> AlertDraft:
    return AlertDraft(
        fingerprint=fingerprint(TARGET, kind, SCRIPTS, key),
        kind=kind,
        severity=severity,
        status="firing",
        collection=SCRIPTS,
        key=key,
        at=utcnow(),
        message=f"failover script '{key}' changed on {TARGET}",
        fields=(FieldChange("Contents", "echo 1", "echo 2"),),
    )


async def record(
    store: Store, drafts: Sequence[AlertDraft], sinks: Sequence[str], target: str = TARGET
) -> list[Alert]:
    """Commit a run whose events go to ``sinks``: what an audit does."""
    target_id = await store.record.ensure_target(target, f"https://{target}.example.com")
    run_id = await store.record.begin_run(target_id, utcnow())
    return await store.record.commit_run(
        RunOutcome(
            run_id=run_id,
            target_id=target_id,
            status="ok",
            finished_at=utcnow(),
            events=drafts,
            routes=[tuple(sinks)] * len(drafts),
        )
    )


async def next_due(store: Store) -> datetime:
    return max(d.next_attempt_at for d in await store.outbox.undelivered())


async def test_the_spec_test_vector() -> None:
    vector_secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = '{"test": 2432232314}'
    expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert spec_signature(
        vector_secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", body.encode()
    )
    assert (
        spec_signature(vector_secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", body.encode())
        == expected
    )
    settings = WebhookSettings(name="v", url="https://hooks.example.com", secret=vector_secret)
    sink = WebhookSink(settings)
    assert sink.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == expected


async def test_down_then_up_delivers_every_alert_once_in_order(
    store: Store, receiver: Receiver
) -> None:
    sinks = webhook_sinks(receiver.url)
    alerts = await record(store, [draft(f"s{i}.sh") for i in range(5)], ["webhook:ops"])
    expected_ids = [f"msg_{a.id}_webhook-ops" for a in alerts]
    clock = utcnow()
    delays: list[float] = []
    try:
        # Port closed twice: only the head of the sink is tried, the others wait behind it.
        for attempt in (1, 2):
            report = await deliver_due(store.outbox, sinks, owner="w1", now=clock, retry=FAST)
            assert (report.delivered, report.retrying, report.dead) == (0, 1, 0)
            head, *rest = await store.outbox.undelivered()
            assert head.alert.id == alerts[0].id
            assert head.attempts == attempt
            assert "cannot connect" in (head.last_error or "")
            assert receiver.url not in (head.last_error or "")
            assert {d.attempts for d in rest} == {0}
            delays.append((head.next_attempt_at - clock).total_seconds())
            clock = head.next_attempt_at
        # Up, but overloaded for two more attempts.
        receiver.answer = lambda _id: (503, {}) if len(receiver.attempts) <= 2 else (204, {})
        await receiver.start()
        for attempt in (3, 4):
            report = await deliver_due(store.outbox, sinks, owner="w1", now=clock, retry=FAST)
            assert report.delivered == 0
            head = (await store.outbox.undelivered())[0]
            assert head.attempts == attempt
            assert "HTTP 503" in (head.last_error or "")
            delays.append((head.next_attempt_at - clock).total_seconds())
            clock = head.next_attempt_at
        report = await deliver_due(store.outbox, sinks, owner="w1", now=clock, retry=FAST)
    finally:
        await close_sinks(sinks)
    assert (report.delivered, report.retrying, report.dead) == (5, 0, 0)
    assert await store.outbox.undelivered() == []
    assert await store.outbox.outbox_counts() == (0, 0)
    assert receiver.bad_signatures == 0
    # Every alert exactly once, in order, with the same id on every attempt.
    assert [msg_id for msg_id, _body in receiver.accepted] == expected_ids
    assert receiver.attempts == [expected_ids[0]] * 3 + expected_ids[1:]
    assert [body for _id, body in receiver.accepted] == [a.as_json() for a in alerts]
    # Exponential backoff: attempt n waits between half of and the full 2^(n-1) seconds.
    for n, delay in enumerate(delays, start=1):
        assert 2 ** (n - 1) / 2 <= delay <= 2 ** (n - 1), delays


async def test_retry_after_is_honoured(store: Store, receiver: Receiver) -> None:
    receiver.answer = lambda _id: (429, {"Retry-After": "120"})
    await receiver.start()
    sinks = webhook_sinks(receiver.url)
    await record(store, [draft("a.sh")], ["webhook:ops"])
    clock = utcnow()
    try:
        await deliver_due(store.outbox, sinks, owner="w1", now=clock, retry=FAST)
        slow = RetryPolicy(initial=timedelta(seconds=1), maximum=timedelta(hours=1))
        clock = await next_due(store)
        start = clock
        await deliver_due(store.outbox, sinks, owner="w1", now=clock, retry=slow)
    finally:
        await close_sinks(sinks)
    (row,) = await store.outbox.undelivered()
    # FAST caps any pause at a minute; the second policy lets the 120 s asked for stand.
    assert row.next_attempt_at - start >= timedelta(seconds=120)
    assert row.attempts == 2
    assert "HTTP 429" in (row.last_error or "")


async def test_gone_disables_the_endpoint(store: Store, receiver: Receiver) -> None:
    receiver.answer = lambda _id: (410, {})
    await receiver.start()
    sinks = webhook_sinks(receiver.url)
    first = await record(store, [draft("a.sh"), draft("b.sh")], ["webhook:ops"])
    try:
        report = await deliver_due(store.outbox, sinks, owner="w1", retry=FAST)
        assert report.disabled == ["webhook:ops"]
        assert len(receiver.attempts) == 1
        later = await record(store, [draft("c.sh")], ["webhook:ops"])
        report = await deliver_due(store.outbox, sinks, owner="w1", retry=FAST)
    finally:
        await close_sinks(sinks)
    assert report.dead == 1
    assert len(receiver.attempts) == 1  # disabled: nothing more was sent
    dead = await store.outbox.undelivered(dead_only=True)
    assert [d.alert.id for d in dead] == [a.id for a in (*first, *later)]
    assert all(d.dead and d.status == "dead" for d in dead)
    assert "410" in (dead[0].last_error or "")
    assert await store.outbox.outbox_counts() == (0, 3)


async def test_refused_delivery_is_dead_and_does_not_block(
    store: Store, receiver: Receiver
) -> None:
    alerts = await record(store, [draft("a.sh"), draft("b.sh")], ["webhook:ops"])
    refused = f"msg_{alerts[0].id}_webhook-ops"
    receiver.answer = lambda msg_id: (400, {}) if msg_id == refused else (200, {})
    # The receiver's error page echoes the request, token included.
    receiver.error_page = "bad request to /hook?channel=ops&token=Zm9vYmFyYmF6 (id 42)"
    await receiver.start()
    sinks = webhook_sinks(receiver.url)
    try:
        report = await deliver_due(store.outbox, sinks, owner="w1", retry=FAST)
    finally:
        await close_sinks(sinks)
    assert (report.delivered, report.dead, report.retrying) == (1, 1, 0)
    (dead,) = await store.outbox.undelivered(dead_only=True)
    assert dead.alert.id == alerts[0].id
    assert "HTTP 400" in (dead.last_error or "")
    assert "(id 42)" in (dead.last_error or "")
    assert "Zm9vYmFyYmF6" not in (dead.last_error or "")
    assert "channel=ops" not in (dead.last_error or "")
    assert dead.as_json()["status"] == "dead"
    assert [msg_id for msg_id, _ in receiver.accepted] == [f"msg_{alerts[1].id}_webhook-ops"]
    assert await store.outbox.outbox_counts() == (0, 1)


async def test_a_wrong_secret_is_refused_by_the_receiver(store: Store, receiver: Receiver) -> None:
    await receiver.start()
    sinks = webhook_sinks(receiver.url, secret=OTHER_SECRET)
    await record(store, [draft("a.sh")], ["webhook:ops"])
    try:
        report = await deliver_due(store.outbox, sinks, owner="w1", retry=FAST)
    finally:
        await close_sinks(sinks)
    assert report.dead == 1
    assert receiver.bad_signatures == 1
    assert receiver.accepted == []


async def test_outbox_survives_a_restart(db_url: str, receiver: Receiver) -> None:
    async with await Store.open(db_url) as store:
        await store.upgrade()
        (alert,) = await record(store, [draft("a.sh")], ["webhook:ops"])
        sinks = webhook_sinks(receiver.url)
        try:
            report = await deliver_due(store.outbox, sinks, owner="before", retry=FAST)
        finally:
            await close_sinks(sinks)
        assert report.retrying == 1
    await receiver.start()
    async with await Store.open(db_url) as store:
        (pending,) = await store.outbox.undelivered()
        assert (pending.alert.id, pending.attempts) == (alert.id, 1)
        sinks = webhook_sinks(receiver.url)
        try:
            early = await deliver_due(store.outbox, sinks, owner="after", retry=FAST)
            assert early.attempted == 0  # not due before its stored next attempt
            report = await deliver_due(
                store.outbox, sinks, owner="after", now=pending.next_attempt_at, retry=FAST
            )
        finally:
            await close_sinks(sinks)
    assert report.delivered == 1
    assert [body for _id, body in receiver.accepted] == [alert.as_json()]


@pytest.mark.postgres
async def test_two_deliverers_never_send_a_row_twice(pg_url: str, receiver: Receiver) -> None:
    receiver.delay = 0.005
    await receiver.start()
    names = [f"hook{i}" for i in range(4)]
    settings = AlertsSettings(
        webhook=[{"name": n, "url": receiver.url, "secret": SECRET} for n in names]
    )
    async with await Store.open(pg_url) as setup:
        await setup.upgrade()
        for round_ in range(5):
            drafts = [draft(f"r{round_}-{i}.sh") for i in range(3)]
            await record(setup, drafts, [f"webhook:{n}" for n in names])
    stores = [await Store.open(pg_url) for _ in range(2)]
    sink_sets = [build_sinks(settings) for _ in stores]

    async def worker(store: Store, sinks: Mapping[str, Sink], owner: str) -> int:
        sent = 0
        for _ in range(200):
            report: DeliveryReport = await deliver_due(store.outbox, sinks, owner=owner, batch=3)
            sent += report.delivered
            if report.attempted == 0 and not await store.outbox.undelivered():
                break
        return sent

    try:
        sent = await asyncio.gather(
            *(worker(s, k, f"w{i}") for i, (s, k) in enumerate(zip(stores, sink_sets, strict=True)))
        )
    finally:
        for sinks in sink_sets:
            await close_sinks(sinks)
        for store in stores:
            await store.close()
    ids = [msg_id for msg_id, _ in receiver.accepted]
    assert sum(sent) == len(ids) == 60
    assert Counter(receiver.attempts) == Counter(ids)
    assert max(Counter(ids).values()) == 1
    for name in names:
        mine = [int(i.split("_")[1]) for i in ids if i.endswith(f"_webhook-{name}")]
        assert mine == sorted(mine)
        assert len(mine) == 15


def test_routing_follows_each_sinks_filter() -> None:
    settings = AlertsSettings(
        webhook=[
            {"name": "all", "url": "https://a.example.com", "secret": SECRET},
            {
                "name": "critical",
                "url": "https://b.example.com",
                "secret": SECRET,
                "min_severity": "critical",
            },
        ],
        alertmanager=[
            {"name": "am", "url": "http://am.example.com", "kinds": ["script.disconnected"]},
        ],
        apprise=[
            {"name": "branch", "urls": ["json://127.0.0.1:1/"], "targets": ["pbx-branch"]},
        ],
    )
    router = Router.of(settings)
    down = draft("a.sh", kind="script.disconnected", severity="warning")
    back = AlertDraft(
        fingerprint=down.fingerprint,
        kind="script.reconnected",
        severity="info",
        status="resolved",
        collection=SCRIPTS,
        key="a.sh",
        at=utcnow(),
        message="healthy again",
    )
    missing = draft("PreStartScript", kind="settings.script_missing", severity="critical")
    assert router.route(TARGET, down) == ("webhook:all", "alertmanager:am")
    # The resolution goes where its alert went, though it is recorded as "info".
    assert router.route(TARGET, back) == ("webhook:all", "alertmanager:am")
    assert router.route(TARGET, missing) == ("webhook:all", "webhook:critical")
    assert router.route("pbx-branch", draft("x.sh")) == ("webhook:all", "apprise:branch")


async def test_only_routed_sinks_get_outbox_rows(store: Store) -> None:
    settings = AlertsSettings(
        webhook=[
            {"name": "all", "url": "https://a.example.com", "secret": SECRET},
            {
                "name": "crit",
                "url": "https://b.example.com",
                "secret": SECRET,
                "min_severity": "critical",
            },
        ]
    )
    router = Router.of(settings)
    target_id = await store.record.ensure_target(TARGET, "https://hq.example.com")
    run_id = await store.record.begin_run(target_id, utcnow())
    drafts = [draft("a.sh"), draft("Post", kind="settings.script_missing", severity="critical")]
    await store.record.commit_run(
        RunOutcome(
            run_id=run_id,
            target_id=target_id,
            status="ok",
            finished_at=utcnow(),
            events=drafts,
            routes=router.routes(TARGET, drafts),
        )
    )
    rows = [(d.sink, d.alert.kind) for d in await store.outbox.undelivered()]
    assert rows == [
        ("webhook:all", "script.changed"),
        ("webhook:all", "settings.script_missing"),
        ("webhook:crit", "settings.script_missing"),
    ]


# -- Apprise ---------------------------------------------------------------------------


@dataclass
class JsonReceiver:
    status: int = 200
    received: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture
async def json_receiver() -> AsyncIterator[tuple[JsonReceiver, int]]:
    state = JsonReceiver()

    async def handle(request: web.Request) -> web.Response:
        state.received.append(await request.json())
        return web.Response(status=state.status)

    app = web.Application()
    app.router.add_post("/notify", handle)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield state, runner.addresses[0][1]
    finally:
        await runner.cleanup()


async def test_apprise_through_the_outbox(
    store: Store, json_receiver: tuple[JsonReceiver, int]
) -> None:
    state, port = json_receiver
    url = f"json://auditor:t0p-s3cret@127.0.0.1:{port}/notify"
    sinks = build_sinks(AlertsSettings(apprise=[{"name": "chat", "urls": [url]}]))
    (alert,) = await record(store, [draft("a.sh")], ["apprise:chat"])
    try:
        state.status = 500
        report = await deliver_due(store.outbox, sinks, owner="w1", retry=FAST)
        assert report.retrying == 1
        (row,) = await store.outbox.undelivered()
        assert row.last_error is not None
        assert "t0p-s3cret" not in row.last_error
        assert str(port) not in row.last_error
        state.status = 200
        report = await deliver_due(
            store.outbox, sinks, owner="w1", now=row.next_attempt_at, retry=FAST
        )
    finally:
        await close_sinks(sinks)
    assert report.delivered == 1
    last = state.received[-1]
    assert last["title"] == f"script.changed on {TARGET}"
    assert alert.message in last["message"]
    assert 'Contents: "echo 1" -> "echo 2"' in last["message"]
    assert len(state.received) == 2


async def test_apprise_failure_is_retryable(json_receiver: tuple[JsonReceiver, int]) -> None:
    state, port = json_receiver
    state.status = 503
    sink = AppriseSink(AppriseSettings(name="x", urls=[f"json://127.0.0.1:{port}/notify"]))
    with pytest.raises(DeliveryError) as info:
        await sink.deliver({"kind": "audit.failed", "target": "t", "message": "m"}, delivery_id="1")
    assert not info.value.permanent
    assert "apprise:x" in str(info.value)


# -- once, and alerts --undelivered, as a user runs them ------------------------------------


async def run_cli(config: Path, *args: str, env: Mapping[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "auditor",
        "--config",
        str(config),
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**{k: v for k, v in os.environ.items() if k != "AUDITOR_CONFIG"}, **env},
        cwd=config.parent,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_once_delivers_and_lists_what_is_left(tmp_path: Path, receiver: Receiver) -> None:
    pbx = Pbx("hq", scripts=3, states=True)
    script = pbx.filenames[0]
    pbx.set_state(script, "Disconnected")
    config = tmp_path / "auditor.toml"
    config.write_text(
        f"""
[database]
url = "sqlite:///{tmp_path / "audit.db"}"
[log]
format = "json"
[alerts]
delivery_retry_min = "1s"
[[alerts.webhook]]
name = "ops"
url = "{receiver.url}"
secret_env = "TEST_WEBHOOK_SECRET"
[[targets]]
name = "{TARGET}"
url = "{{base}}/hq"
client_id = "auditor"
client_secret = "secret"
retries = 0
""",
        encoding="utf-8",
    )
    env = {"TEST_WEBHOOK_SECRET": SECRET}
    async with serve(Simulator([pbx])) as base:
        config.write_text(config.read_text().replace("{base}", base))
        config.chmod(0o600)
        # The receiver is down: once records the alert and leaves it in the outbox.
        code, out, err = await run_cli(config, "once", env=env)
        assert code == 0, err
        (printed,) = [json.loads(line) for line in out.splitlines()]
        assert printed["kind"] == "script.disconnected"
        assert "1 pending" in err
        assert SECRET not in out + err
        assert receiver.url not in err
        code, out, err = await run_cli(config, "alerts", "--undelivered", "--json", env=env)
        assert code == 0, err
        (pending,) = json.loads(out)
        assert pending["sink"] == "webhook:ops"
        assert pending["status"] == "pending"
        assert pending["alert"]["id"] == printed["id"]
        await receiver.start()
        await asyncio.sleep(1.1)  # the stored next attempt is at most delivery_retry_min away
        code, out, err = await run_cli(config, "once", env=env)
        assert code == 0, err
    assert receiver.bad_signatures == 0
    # The alert of the first run, delivered by the second, is the object `once` printed
    # (whose log line adds "alert", "event", "level" and a timestamp to it).
    ((msg_id, body),) = receiver.accepted
    assert msg_id == f"msg_{printed['id']}_webhook-ops"
    assert set(body) == ALERT_FIELDS
    assert body == {name: printed[name] for name in ALERT_FIELDS}
    async with await Store.open(f"sqlite:///{tmp_path / 'audit.db'}") as store:
        assert await store.outbox.undelivered() == []


def test_delivery_ids_are_stable() -> None:
    alert = Alert(
        id=7,
        fingerprint="f",
        kind="script.added",
        severity="info",
        status="firing",
        target=TARGET,
        collection=SCRIPTS,
        key="a.sh",
        run_id=1,
        at=utcnow(),
        message="m",
    )
    from auditor.store import Delivery

    row = Delivery(7, "webhook:ops", alert, 3, utcnow(), None, None, False, None)
    assert delivery_id(row) == "msg_7_webhook-ops"


async def test_a_lease_holds_a_row_until_it_runs_out_or_is_released(store: Store) -> None:
    await record(store, [draft("a.sh"), draft("b.sh")], ["webhook:ops"])
    await record(store, [draft("c.sh")], ["webhook:other"])
    t0 = utcnow()
    minute = timedelta(minutes=1)
    first = await store.outbox.claim_outbox("crashed", t0, limit=10, lease_for=minute)
    # One row per sink: each sink's head.
    assert [(d.sink, d.alert.key) for d in first] == [
        ("webhook:ops", "a.sh"),
        ("webhook:other", "c.sh"),
    ]
    # Held, and holding back the rows behind it.
    assert (
        await store.outbox.claim_outbox("next", t0 + minute / 2, limit=10, lease_for=minute) == []
    )
    again = await store.outbox.claim_outbox("next", t0 + minute, limit=10, lease_for=minute)
    assert [d.id for d in again] == [d.id for d in first]
    assert await store.outbox.release_deliveries("someone-else") == 0
    assert await store.outbox.release_deliveries() == 2
    assert len(await store.outbox.claim_outbox("third", t0, limit=10, lease_for=minute)) == 2
    assert await store.outbox.release_deliveries("third") == 2
    # A settled row is settled once: a second mark finds nothing to change.
    assert await store.outbox.mark_delivered(first[0].id)
    assert not await store.outbox.mark_delivered(first[0].id)
    (head, _other) = await store.outbox.claim_outbox("fourth", t0, limit=10, lease_for=minute)
    assert head.alert.key == "b.sh"
