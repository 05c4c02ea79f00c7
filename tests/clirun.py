"""Running the CLI as a real subprocess, for the end-to-end tests."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SECRET_ENV = "AUDITOR_TEST_PBX_SECRET"
COMMAND_TIMEOUT = 120.0
ALERT_FIELDS = {
    "id",
    "fingerprint",
    "kind",
    "severity",
    "status",
    "target",
    "collection",
    "key",
    "run_id",
    "at",
    "message",
    "fields",
}


@dataclass(frozen=True)
class Outcome:
    args: tuple[str, ...]
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]

    @property
    def alerts(self) -> list[dict[str, Any]]:
        """stdout of ``once``: one JSON object per line, each an alert."""
        return self.lines()

    def pairs(self) -> Counter[tuple[str, str | None]]:
        return Counter((a["kind"], a["key"]) for a in self.alerts)

    def __str__(self) -> str:
        return (
            f"{' '.join(self.args)} -> {self.code}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}"
        )


class Cli:
    """Runs ``python -m auditor --config FILE ...``; no output may show the client secret."""

    def __init__(self, config: Path, secret: str) -> None:
        self.config = config
        self.secret = secret
        self.env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
        self.env[SECRET_ENV] = secret
        self.env.pop("AUDITOR_CONFIG", None)

    async def __call__(self, *args: str) -> Outcome:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "auditor",
            "--config",
            str(self.config),
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self.env,
            cwd=self.config.parent,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), COMMAND_TIMEOUT)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
        # Python 3.11 leaves the transport open until it is collected, maybe after its
        # event loop has closed (then its __del__ fails): close it while the loop runs.
        transport = getattr(proc, "_transport", None)
        if transport is not None:
            transport.close()
        assert proc.returncode is not None
        outcome = Outcome(args, proc.returncode, out.decode(), err.decode())
        assert "Traceback" not in outcome.stderr, str(outcome)
        assert self.secret not in outcome.stdout + outcome.stderr, str(outcome)
        return outcome

    async def ok(self, *args: str) -> Outcome:
        outcome = await self(*args)
        assert outcome.code == 0, str(outcome)
        return outcome
