"""The benchmark runs end to end at its smallest size (its figures are not checked here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quick_sqlite_bench_prints_its_table() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", "sqlite"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    header = next(line for line in lines if line.startswith("scenario"))
    for column in ("median", "floor", "ratio", "peak RSS", "alloc", "used"):
        assert column in header
    rows = [line.split() for line in lines if " sqlite " in line]
    cycles = {row[row.index("sqlite") + 1] for row in rows}
    assert cycles == {"baseline", "no-change", "client", "floor"}
    # Two scenarios, each with a baseline, a no-change, a client and a floor line.
    assert len(rows) == 8
    assert "postgresql" not in done.stdout.split("target")[0]
