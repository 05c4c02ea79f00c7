"""Authentication cannot be switched off by accident, and secrets in clear are named.

The daemon is the real ``3cx-auditor run`` subprocess, asked over real HTTP; ``check-config``
a real command. The hostile inputs: an empty ``AUDITOR_HTTP__TOKEN=`` over a file that sets a
token (it used to turn authentication off without a word), a listener on every interface
without a token, and an ``http://`` PBX URL (the client secret then travels in clear).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import aiohttp

from auditor.simulator import Pbx, Simulator, serve
from tests.conftest import DaemonSpawner, daemon_config, free_port

FILE_TOKEN = "file-token-0f3c9a"


def check_config(
    config: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("AUDITOR_")}
    return subprocess.run(
        [sys.executable, "-m", "auditor", "--config", str(config), "check-config"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**environ, **(env or {})},
        check=False,
    )


def config_with(tmp_path: Path, http: str, *, url: str = "http://127.0.0.1:9/pbx") -> Path:
    """A daemon configuration whose ``[http]`` table is ``http`` (listen and the rest)."""
    path = daemon_config(
        tmp_path / "auditor.toml",
        database=f"sqlite:///{tmp_path / 'audit.db'}",
        targets=[("pbx-hq", url)],
        listen="127.0.0.1:1",
    )
    text = path.read_text().replace('[http]\nlisten = "127.0.0.1:1"\n', f"[http]\n{http}\n")
    path.write_text(text)
    return path


async def status_of(url: str, token: str | None = None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as answer:
        return answer.status


async def test_an_empty_token_over_a_file_that_sets_one_is_refused(
    tmp_path: Path, spawn_daemon: DaemonSpawner
) -> None:
    port = free_port()
    config = config_with(tmp_path, f'listen = "127.0.0.1:{port}"\ntoken = "{FILE_TOKEN}"')
    empty = {"AUDITOR_HTTP__TOKEN": ""}

    checked = check_config(config, empty)
    assert checked.returncode == 2, checked
    assert checked.stderr.startswith("config: http.token (from AUDITOR_HTTP__TOKEN): is empty"), (
        checked.stderr
    )

    daemon = await spawn_daemon(config, env=empty)
    assert await daemon.exited() == 2
    (line,) = daemon.logs
    assert line["text"].startswith("config: http.token (from AUDITOR_HTTP__TOKEN): is empty")

    # The file's token alone: the API asks for it.
    daemon = await spawn_daemon(config)
    await daemon.until(lambda: daemon.events("service.started"), "the start")
    api = f"http://127.0.0.1:{port}/api/v1/runs"
    assert await status_of(api) == 401
    assert await status_of(api, FILE_TOKEN) == 200
    assert await daemon.stop() == 0


async def test_listening_beyond_loopback_needs_a_token_or_an_explicit_yes(
    tmp_path: Path, spawn_daemon: DaemonSpawner
) -> None:
    port = free_port()
    api = f"http://127.0.0.1:{port}/api/v1/runs"
    config = config_with(tmp_path, f'listen = "0.0.0.0:{port}"')

    checked = check_config(config)
    assert checked.returncode == 2, checked
    assert checked.stderr.startswith(
        f"config: http.token: required, as http.listen (0.0.0.0:{port}) is reachable from "
        "other hosts"
    ), checked.stderr
    daemon = await spawn_daemon(config)
    assert await daemon.exited() == 2
    (line,) = daemon.logs
    assert line["text"].startswith("config: http.token: required")

    config = config_with(tmp_path, f'listen = "0.0.0.0:{port}"\nallow_unauthenticated = true')
    assert check_config(config).returncode == 0
    daemon = await spawn_daemon(config)
    await daemon.until(lambda: daemon.events("service.started"), "the start")
    assert await status_of(api) == 200
    assert await daemon.stop() == 0

    config = config_with(tmp_path, f'listen = "0.0.0.0:{port}"\ntoken = "{FILE_TOKEN}"')
    assert check_config(config).returncode == 0
    daemon = await spawn_daemon(config)
    await daemon.until(lambda: daemon.events("service.started"), "the start")
    assert await status_of(api) == 401
    assert await status_of(api, FILE_TOKEN) == 200
    assert await daemon.stop() == 0


async def test_an_http_pbx_url_beyond_this_host_warns(
    tmp_path: Path, spawn_daemon: DaemonSpawner
) -> None:
    # TEST-NET-1 (RFC 5737): nothing answers there.
    config = config_with(tmp_path, 'listen = "127.0.0.1:0"', url="http://192.0.2.10/pbx")
    checked = check_config(config)
    assert checked.returncode == 0, checked
    assert (
        "config: target pbx-hq: url is http://: the client secret and the access tokens "
        "travel unencrypted"
    ) in checked.stderr

    # Over the loopback interface nothing travels on a wire: no warning (the demo's case).
    async with serve(Simulator([Pbx("hq", scripts=2)])) as base:
        config = config_with(tmp_path, 'listen = "127.0.0.1:0"', url=f"{base}/hq")
        checked = check_config(config)
    assert checked.returncode == 0, checked
    assert checked.stderr == ""

    # The daemon says it at start too, before its first log line.
    config = config_with(tmp_path, 'listen = "127.0.0.1:0"', url="http://192.0.2.10/pbx")
    daemon = await spawn_daemon(config)
    await daemon.until(lambda: daemon.events("service.started"), "the start")
    assert await daemon.stop() == 0
    texts = [line.get("text", "") for line in daemon.logs]
    assert any(text.startswith("config: target pbx-hq: url is http://") for text in texts)
