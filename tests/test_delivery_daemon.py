"""``kill -9`` of the daemon while its alerts cannot be delivered, then a restart: every
alert reaches the webhook, each exactly once per ``webhook-id``, in order.

The daemon is the real ``3cx-auditor run`` subprocess, the PBX the simulator served here,
the webhook an HTTP server here that checks every signature from the Standard Webhooks
spec. What arrived is compared with the alert events in the database.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import signal
import socket
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from auditor.model import Alert
from auditor.simulator import Pbx, Simulator, serve
from auditor.store import Delivery, Store
from tests.conftest import DaemonSpawner, daemon_config

SECRET = "whsec_" + base64.b64encode(b"kill-9-test-secret-of-32-bytes!!").decode()
TARGET = "pbx-hq"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def signed(headers: Any, body: bytes) -> bool:
    msg_id, stamp = headers.get("webhook-id"), headers.get("webhook-timestamp")
    if not msg_id or not stamp or abs(time.time() - int(stamp)) > 300:
        return False
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    digest = hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    expected = "v1," + base64.b64encode(digest).decode()
    return any(hmac.compare_digest(s, expected) for s in headers.get("webhook-signature").split())


async def read_outbox(database: str) -> tuple[list[Delivery], list[Alert]]:
    async with await Store.open(database) as store:
        return await store.outbox.undelivered(), await store.reads.alert_events(limit=None)


async def test_kill_9_with_undelivered_alerts_then_restart_delivers_all_once(
    tmp_path: Path, spawn_daemon: DaemonSpawner
) -> None:
    port = free_port()
    http_port = free_port()
    accepted: list[tuple[str, dict[str, Any]]] = []
    forged = 0

    async def hook(request: web.Request) -> web.Response:
        nonlocal forged
        body = await request.read()
        if not signed(request.headers, body):
            forged += 1
            return web.Response(status=401)
        accepted.append((request.headers["webhook-id"], json.loads(body)))
        return web.Response(status=204)

    pbx = Pbx("hq", scripts=6, states=True)
    down = pbx.filenames[:2]
    for name in down:
        pbx.set_state(name, "Disconnected")
    database = f"sqlite:///{tmp_path / 'audit.db'}"
    async with serve(Simulator([pbx])) as base:
        config = daemon_config(
            tmp_path / "auditor.toml",
            database=database,
            targets=[(TARGET, f"{base}/hq")],
            every="1s",
            listen=f"127.0.0.1:{http_port}",
            extra=f"""
[alerts]
delivery_retry_min = "100ms"
delivery_retry_max = "400ms"
[[alerts.webhook]]
name = "ops"
url = "http://127.0.0.1:{port}/hook"
secret_env = "TEST_WEBHOOK_SECRET"
""",
        )
        env = {"TEST_WEBHOOK_SECRET": SECRET}

        # The webhook is down (nothing listens on its port): alerts pile up in the outbox.
        daemon = await spawn_daemon(config, env=env)
        await daemon.until(lambda: daemon.events("audit.baseline"), "the baseline")
        pbx.add_script("added-1.sh")
        pbx.set_state(pbx.filenames[-1], "Disconnected")
        pbx.add_script("added-2.sh")

        async def piled_up() -> bool:
            pending, _events = await read_outbox(database)
            return len(pending) >= 5 and pending[0].attempts >= 3

        await daemon.until(piled_up, "five pending deliveries, the first tried three times")

        async def readyz_shows_the_outbox() -> bool:
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"http://127.0.0.1:{http_port}/readyz") as response,
            ):
                body = await response.json()
            outbox = body.get("outbox") or {}
            return response.status == 200 and outbox.get("pending", 0) >= 5

        await daemon.until(readyz_shows_the_outbox, "/readyz showing the pending deliveries")
        daemon.proc.send_signal(signal.SIGKILL)
        assert await daemon.exited() == -signal.SIGKILL
        before, _events = await read_outbox(database)
        assert before
        assert {d.status for d in before} == {"pending"}

        app = web.Application()
        app.router.add_post("/hook", hook)
        runner = web.AppRunner(app, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            daemon = await spawn_daemon(config, env=env)

            async def all_delivered() -> bool:
                pending, events = await read_outbox(database)
                return not pending and len(accepted) == len(events)

            await daemon.until(all_delivered, "every alert delivered", within=90)
            assert await daemon.stop() == 0
        finally:
            await runner.cleanup()

    _pending, events = await read_outbox(database)
    ids = [msg_id for msg_id, _body in accepted]
    assert forged == 0
    assert max(Counter(ids).values()) == 1  # exactly once per webhook-id
    # Every event recorded, in the order recorded, as the object the database holds.
    assert ids == [f"msg_{e.id}_webhook-ops" for e in events]
    assert [body for _id, body in accepted] == [e.as_json() for e in events]
    assert {d.alert.id for d in before} <= {e.id for e in events}
    kinds = Counter(e.kind for e in events)
    assert kinds["script.disconnected"] >= 3
    assert kinds["script.added"] == 2
