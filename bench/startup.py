"""How long each command takes from its start to its exit: ``python -m bench.startup``.

``python -m bench.startup [--quick] [--reps N] [--json]``

Each command runs ``reps`` times as a whole process (``python -m auditor ...``, the
``3cx-auditor`` script's own code path) on a small setup: a config with one target served
by the simulator (20 scripts), a SQLite database that already holds its baseline. The
median wall time of each is printed beside the interpreter's own start-up (``python -c
pass``), and the heavy packages each one imported (from ``-X importtime``, in a run of its
own so that the timed runs pay nothing for it). The byte-code is compiled first, as pip does
when it installs the wheel.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.once import SECRET, SECRET_ENV, compile_sources, simulator, write_config

ROOT = Path(__file__).resolve().parent.parent
# What the start-up of a command may pay for only when it needs it.
HEAVY = (
    "aiohttp",
    "sqlalchemy",
    "alembic",
    "apprise",
    "auditor.simulator",
    "pydantic",
    "structlog",
)
# The commands timed, each as the arguments after ``--config FILE``.
COMMANDS: tuple[tuple[str, ...], ...] = (
    ("--version",),
    ("--help",),
    ("check-config",),
    ("runs", "--limit", "5"),
    ("history", "--limit", "5"),
    ("alerts",),
    ("status",),
    ("verify",),
    ("db", "upgrade"),
    ("scripts", "--target", "pbx-0001"),
    ("once",),
)


class StartupFailed(Exception):
    pass


@dataclass
class Timing:
    command: str
    times: list[float]
    heavy: list[str]

    @property
    def seconds(self) -> float:
        return statistics.median(self.times)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDITOR_")}
    env[SECRET_ENV] = SECRET
    return env


def _run(argv: Sequence[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        argv,
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        raise StartupFailed(f"{' '.join(argv[2:])} exited {done.returncode}:\n{tail}")
    return done


def imported(stderr: str) -> set[str]:
    """The modules ``-X importtime`` reported, from its lines on stderr."""
    names = set()
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip())
    return names


def heavy_of(modules: set[str]) -> list[str]:
    return [h for h in HEAVY if any(m == h or m.startswith(h + ".") for m in modules)]


def time_command(argv: Sequence[str], label: str, reps: int, env: dict[str, str]) -> Timing:
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        _run(argv, env)
        times.append(time.perf_counter() - started)
    traced = _run([argv[0], "-X", "importtime", *argv[1:]], env)
    return Timing(label, times, heavy_of(imported(traced.stderr)))


def measure(reps: int, progress: bool) -> list[Timing]:
    compile_sources()
    env = _env()
    timings = [time_command([sys.executable, "-c", "pass"], "python -c pass", reps, env)]
    pbxs = [("pbx-0001", 20)]
    with (
        tempfile.TemporaryDirectory(prefix="3cx-auditor-bench-startup-") as tmp,
        simulator(pbxs, 0.0) as base,
    ):
        config = Path(tmp) / "auditor.toml"
        write_config(config, f"sqlite:///{Path(tmp) / 'audit.db'}", base, pbxs)
        auditor = [sys.executable, "-m", "auditor", "--config", str(config)]
        # The database migrated and holding a baseline: a read then reads a record.
        _run([*auditor, "once"], env)
        for command in COMMANDS:
            if progress:
                print(f"bench: start-up of {' '.join(command)}", file=sys.stderr, flush=True)
            timings.append(time_command([*auditor, *command], " ".join(command), reps, env))
    return timings


def table(timings: Sequence[Timing]) -> str:
    floor = timings[0].seconds
    head = ("command", "median", "over python", "imports")
    lines: list[tuple[str, ...]] = [head]
    for t in timings:
        over = "" if t is timings[0] else f"+{t.seconds - floor:.3f} s"
        lines.append((t.command, f"{t.seconds:.3f} s", over, ", ".join(t.heavy) or "-"))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    out = []
    for line in lines:
        cells = [
            cell.rjust(widths[i]) if i in (1, 2) else cell.ljust(widths[i])
            for i, cell in enumerate(line)
        ]
        out.append("  ".join(cells).rstrip())
    return "\n".join(out)


def report(timings: Sequence[Timing], reps: int) -> str:
    return (
        f"Start-up: each command as a whole process, median of {reps} runs (once: one PBX, no "
        f"change; scripts: one live listing); imports = the heavy packages it loaded.\n"
        + table(timings)
    )


def as_json(timings: Sequence[Timing]) -> list[dict[str, Any]]:
    return [
        {
            "command": t.command,
            "seconds": round(t.seconds, 4),
            "times": [round(x, 4) for x in t.times],
            "heavy_imports": t.heavy,
        }
        for t in timings
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.startup", description="Time each command's start-up."
    )
    parser.add_argument("--quick", action="store_true", help="two runs per command")
    parser.add_argument("--reps", type=int, metavar="N", help="runs per command (7; --quick: 2)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    args = parser.parse_args(argv)
    reps = args.reps or (2 if args.quick else 7)
    try:
        timings = measure(reps, progress=not args.json)
    except StartupFailed as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"reps": reps, "results": as_json(timings)}, indent=2))
    else:
        print(report(timings, reps))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
