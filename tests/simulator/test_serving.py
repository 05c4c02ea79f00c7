"""Serving the simulator: TLS with a self-signed certificate, and ``run`` until SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from auditor.simulator import (
    TOKEN_PATH,
    Pbx,
    Simulator,
    serve,
    tls_context,
)
from tests.simulator.simapi import TOKEN_FORM, Api


async def test_tls_with_a_self_signed_certificate(self_signed: tuple[Path, Path]) -> None:
    cert, key = self_signed
    sim = Simulator([Pbx("hq", scripts=3)])
    async with serve(sim, ssl_context=tls_context(cert, key)) as base:
        assert base.startswith("https://127.0.0.1:")
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await Api(session, base).login("hq")
            trusted = ssl.create_default_context(cafile=str(cert))
            async with session.post(f"{base}/hq{TOKEN_PATH}", data=TOKEN_FORM, ssl=trusted) as r:
                assert r.status == 200


def test_run_serves_until_sigterm(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from auditor.simulator import Pbx, Simulator, run\n"
        "run(Simulator([Pbx('hq', scripts=2)]), port=0,\n"
        "    ready=lambda url: print(url, flush=True))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stdout is not None
        base = proc.stdout.readline().strip()
        assert base.startswith("http://127.0.0.1:")

        async def login() -> int:
            async with aiohttp.ClientSession() as session:
                return (await Api(session, base).token_response("hq"))[0]

        assert asyncio.run(login()) == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
