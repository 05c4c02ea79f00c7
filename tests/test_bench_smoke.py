"""The benchmark runs end to end at its smallest size (its figures are not checked here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from auditor.simulator import SCRIPTS_PATH, SETTINGS_PATH, TOKEN_PATH
from bench import floor

ROOT = Path(__file__).resolve().parent.parent


def test_quick_sqlite_bench_prints_its_tables() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", "sqlite"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # The tables, a blank line apart: one audit cycle, once as a whole process, start-up.
    cycle, once, start = done.stdout.split("\n\n")
    lines = cycle.splitlines()
    header = next(line for line in lines if line.startswith("scenario"))
    for column in ("median", "floor", "ratio", "peak RSS", "alloc", "used"):
        assert column in header
    rows = [line.split() for line in lines if " sqlite " in line]
    cycles = {row[row.index("sqlite") + 1] for row in rows}
    assert cycles == {"baseline", "no-change", "client", "floor"}
    # Two scenarios, each with a baseline, a no-change, a client and a floor line.
    assert len(rows) == 8
    assert "postgresql" not in cycle
    # once with defaults: a baseline and a no-change line, each with its floor and ratio.
    rows = [line.split("  sqlite  ")[1].split() for line in once.splitlines() if "sqlite" in line]
    assert [row[0] for row in rows] == ["baseline", "no-change"]
    assert all(len(row) == 6 and row[2] == row[4] == "s" for row in rows)
    # Every command's start-up, beside the interpreter's own.
    commands = [line.split("  ")[0] for line in start.splitlines()[2:]]
    assert commands[:3] == ["python -c pass", "--version", "--help"]
    assert "once" in commands
    targets = [line for line in start.splitlines() if line.startswith("target ")]
    assert any("once over 50 PBXs, defaults, sqlite" in line for line in targets)


def test_the_floor_asks_what_the_simulator_serves() -> None:
    """bench.floor spells the paths itself (it imports no auditor module)."""
    assert (floor.TOKEN_PATH, floor.SCRIPTS_PATH, floor.SETTINGS_PATH) == (
        TOKEN_PATH,
        SCRIPTS_PATH,
        SETTINGS_PATH,
    )
