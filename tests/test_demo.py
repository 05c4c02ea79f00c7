"""`demo`: the README's first command runs the whole flow by itself and shows every alert kind."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from pathlib import Path

EXPECTED_KINDS = (
    "script.added",
    "script.removed",
    "settings.changed",
    "settings.script_missing",
    "script.disconnected",
    "script.reconnected",
    "audit.failed",
    "target.disconnected",
    "target.reconnected",
)


async def test_demo_runs_the_daemon_through_every_alert_and_stops_by_itself(
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDITOR_")}
    env["COLUMNS"] = "200"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "auditor",
        "demo",
        "--every",
        "1",
        "--keep",
        str(tmp_path / "kept"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
        env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=180)
    text = out.decode()
    assert proc.returncode == 0, err.decode()[-2000:]
    assert "Traceback" not in err.decode()
    steps = [line for line in text.splitlines() if line.startswith("─")]
    assert len(steps) == 7  # six steps and the summary
    for kind in EXPECTED_KINDS:
        assert f" {kind} " in text, f"the demo never showed {kind}"
    # The baseline raises no change alerts: nothing between the first and second step.
    first, second = text.index("1. The daemon"), text.index("2. On pbx-hq")
    assert "firing" not in text[first:second]
    assert "hash chain: intact" in text
    failed = re.search(r"runs: (\d+) failed, (\d+) ok", text)
    assert failed is not None
    assert int(failed.group(1)) >= 2  # the PBX was down for two audits (or a third, racing)

    # The closing hint works as printed, in a shell that does not hold the demo's secret.
    hint = re.search(r"try\s+3cx-auditor (--config \S+ history)", text)
    assert hint is not None, text[-500:]
    assert "AUDITOR_DEMO_CLIENT_SECRET" not in env
    history = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "auditor", *hint.group(1).split(), "--json"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
        env=env,
    )
    out, err = await asyncio.wait_for(history.communicate(), timeout=60)
    assert history.returncode == 0, err.decode()
    assert json.loads(out)
