"""The whole process, as a user runs it: ``3cx-auditor once`` with default settings over a fleet.

``python -m bench.once [--quick] [--pbxs N] [--round-trip S] [--reps N] [--only DB] [--json]``

One simulator process serves ``--pbxs`` PBXs (default 1,000) x 20 scripts, each request
answered ``--round-trip`` seconds late (default 20 ms), as PBXs across a network would be. The
config file names the database and the targets and nothing else: no ``[audit]`` section, so
``once`` runs with the defaults a new user gets. Per database, ``reps`` rounds of:

* the **floor**: ``python -m bench.floor`` (:mod:`bench.floor`), the same requests from a bare
  aiohttp process at the concurrency a user of ``once`` gets (``audit.max_concurrent`` as this
  machine resolves its default);
* ``3cx-auditor once`` on a fresh database, migrated beforehand as ``db upgrade`` does (the
  **baseline**: every script recorded);
* the floor again, then ``once`` again (the **no-change** cycle: the PBXs answer as before).

Every time is the wall time of a whole process, from its start to its exit, start-up included,
as a user or a timer unit sees it. A round's ratio is its ``once`` over the floor taken just
before it; the medians over the rounds count.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import make_url

from auditor.config import AuditSettings
from bench.db import Databases, pg_server_url, pg_unreachable

ROOT = Path(__file__).resolve().parent.parent
BACKENDS = ("sqlite", "postgresql")
SCRIPTS = 20
SECRET_ENV = "BENCH_PBX_SECRET"
SECRET = "secret"
# The targets of the issue this measure was written for.
MAX_RATIO_NO_CHANGE = 1.25
MAX_RATIO_BASELINE = 2.0
PROCESS_TIMEOUT_S = 600.0


class OnceFailed(Exception):
    pass


def fleet(count: int) -> list[tuple[str, int]]:
    width = max(4, len(str(count)))
    return [(f"pbx-{n:0{width}d}", SCRIPTS) for n in range(1, count + 1)]


def default_concurrency() -> int:
    """``audit.max_concurrent`` as a user's ``once`` on this machine gets it by default."""
    return AuditSettings().max_concurrent


@contextmanager
def simulator(pbxs: Sequence[tuple[str, int]], round_trip: float) -> Iterator[str]:
    """The simulator in a process of its own; yields its base URL."""
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.sim", json.dumps(list(pbxs)), str(round_trip)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            raise OnceFailed("the simulator did not start")
        yield str(json.loads(line)["base"])
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def write_config(
    path: Path,
    database: str,
    base: str,
    pbxs: Sequence[tuple[str, int]],
    max_concurrent: int | None = None,
) -> None:
    """The database and the targets, nothing else: every other key keeps its default (but
    ``audit.max_concurrent`` when given, for comparisons)."""
    lines = ["[database]", f"url = {json.dumps(database)}"]
    if max_concurrent is not None:
        lines += ["[audit]", f"max_concurrent = {max_concurrent}"]
    for name, _ in pbxs:
        lines += [
            "[[targets]]",
            f'name = "{name}"',
            f'url = "{base}/{name}"',
            'client_id = "auditor"',
            f'client_secret_env = "{SECRET_ENV}"',
        ]
    path.write_text("\n".join(lines) + "\n")


def _timed(command: Sequence[str], env: dict[str, str] | None = None) -> tuple[float, str, str]:
    """Wall seconds of one whole process, from its start to its exit; and its output."""
    started = time.perf_counter()
    done = subprocess.run(
        command,
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT_S,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-10:])
        raise OnceFailed(f"{' '.join(command[:4])} ... exited {done.returncode}:\n{tail}")
    return elapsed, done.stdout, done.stderr


def time_floor(base: str, pbxs: Sequence[tuple[str, int]], concurrency: int) -> float:
    job = {"base": base, "pbxs": [list(p) for p in pbxs], "concurrency": concurrency}
    seconds, out, _ = _timed([sys.executable, "-m", "bench.floor", json.dumps(job)])
    requests = int(json.loads(out.strip().splitlines()[-1])["requests"])
    if requests != 3 * len(pbxs):
        raise OnceFailed(f"the floor made {requests} requests, expected {3 * len(pbxs)}")
    return seconds


def time_once(config: Path, pbxs: Sequence[tuple[str, int]], expect: str) -> float:
    """``3cx-auditor once``; checks from its summary that every target had the run expected."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDITOR_")}
    env[SECRET_ENV] = SECRET
    command = [sys.executable, "-m", "auditor", "--config", str(config), "once"]
    seconds, _, err = _timed(command, env)
    wanted = ", baseline," if expect == "baseline" else ", 0 change(s),"
    lines = [line for line in err.splitlines() if ": ok, " in line]
    matching = sum(1 for line in lines if wanted in line and f" {SCRIPTS} scripts " in line)
    if matching != len(pbxs):
        raise OnceFailed(f"once ({expect}): {matching} of {len(pbxs)} targets had that run")
    return seconds


@dataclass
class OnceRow:
    database: str
    pbxs: int
    concurrency: int
    floor: list[float] = field(default_factory=list)
    baseline: list[float] = field(default_factory=list)
    floor_steady: list[float] = field(default_factory=list)
    steady: list[float] = field(default_factory=list)

    def ratio(self, cycle: str) -> float:
        times, floors = (
            (self.baseline, self.floor) if cycle == "baseline" else (self.steady, self.floor_steady)
        )
        return statistics.median(t / f for t, f in zip(times, floors, strict=True))

    def as_json(self) -> dict[str, Any]:
        def part(times: list[float], floors: list[float], cycle: str) -> dict[str, Any]:
            return {
                "seconds": round(statistics.median(times), 3),
                "times": [round(t, 3) for t in times],
                "floor_seconds": round(statistics.median(floors), 3),
                "floor_times": [round(t, 3) for t in floors],
                "ratio": round(self.ratio(cycle), 3),
            }

        return {
            "database": self.database,
            "pbxs": self.pbxs,
            "scripts": SCRIPTS,
            "concurrency": self.concurrency,
            "baseline": part(self.baseline, self.floor, "baseline"),
            "no_change": part(self.steady, self.floor_steady, "no_change"),
        }


def measure(
    dbs: Databases,
    base: str,
    pbxs: Sequence[tuple[str, int]],
    workdir: Path,
    *,
    reps: int,
    progress: bool,
    concurrency: int | None = None,
    max_concurrent: int | None = None,
) -> OnceRow:
    concurrency = concurrency or max_concurrent or default_concurrency()
    row = OnceRow(dbs.kind, len(pbxs), concurrency)
    config = workdir / f"once-{dbs.kind}.toml"
    for rep in range(reps):
        if progress:
            print(
                f"bench: once over {len(pbxs)} PBXs, {dbs.kind}: round {rep + 1}/{reps}",
                file=sys.stderr,
                flush=True,
            )
        url = dbs.fresh()
        try:
            write_config(config, url, base, pbxs, max_concurrent)
            row.floor.append(time_floor(base, pbxs, concurrency))
            row.baseline.append(time_once(config, pbxs, "baseline"))
            row.floor_steady.append(time_floor(base, pbxs, concurrency))
            row.steady.append(time_once(config, pbxs, "no_change"))
        finally:
            dbs.drop(url)
    return row


def table(rows: Sequence[OnceRow]) -> str:
    head = ("whole process", "db", "cycle", "median", "floor", "ratio")
    lines: list[tuple[str, ...]] = [head]
    for row in rows:
        label = f"once, {row.pbxs} PBX x {SCRIPTS}, concurrency {row.concurrency}"
        for cycle, times, floors in (
            ("baseline", row.baseline, row.floor),
            ("no-change", row.steady, row.floor_steady),
        ):
            lines.append(
                (
                    label,
                    row.database,
                    cycle,
                    f"{statistics.median(times):.3f} s",
                    f"{statistics.median(floors):.3f} s",
                    f"{row.ratio('baseline' if cycle == 'baseline' else 'no_change'):.2f}",
                )
            )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    out = []
    for line in lines:
        cells = [
            cell.rjust(widths[i]) if i >= 3 else cell.ljust(widths[i])
            for i, cell in enumerate(line)
        ]
        out.append("  ".join(cells).rstrip())
    return "\n".join(out)


def check_targets(rows: Sequence[OnceRow]) -> list[dict[str, Any]]:
    checks: list[dict[str, Any]] = []
    for row in rows:
        where = f"once over {row.pbxs} PBXs, defaults, {row.database}"
        for cycle, limit in (("no_change", MAX_RATIO_NO_CHANGE), ("baseline", MAX_RATIO_BASELINE)):
            ratio = row.ratio(cycle)
            checks.append(
                {
                    "what": f"ratio to floor, {cycle.replace('_', '-')}, {where}",
                    "value": round(ratio, 3),
                    "limit": limit,
                    "ok": ratio <= limit,
                }
            )
    return checks


def compile_sources() -> None:
    """Byte-code for the auditor's modules, as pip writes it when it installs the wheel: a
    source tree run with PYTHONDONTWRITEBYTECODE (or read-only) would otherwise compile every
    module on every start, and time that no installed ``once`` spends."""
    compileall.compile_dir(ROOT / "auditor", quiet=1)
    compileall.compile_dir(ROOT / "bench", quiet=1)


def run_all(
    chosen: Sequence[str],
    *,
    pbx_count: int,
    round_trip: float,
    reps: int,
    progress: bool,
    floor_concurrency: int | None = None,
    max_concurrent: int | None = None,
) -> list[OnceRow]:
    """Every chosen database (PostgreSQL only when reachable: the caller checks)."""
    pbxs = fleet(pbx_count)
    rows: list[OnceRow] = []
    compile_sources()
    with (
        tempfile.TemporaryDirectory(prefix="3cx-auditor-bench-once-") as tmp,
        simulator(pbxs, round_trip) as base,
    ):
        for kind in chosen:
            dbs = Databases(kind, Path(tmp))
            try:
                rows.append(
                    measure(
                        dbs,
                        base,
                        pbxs,
                        Path(tmp),
                        reps=reps,
                        progress=progress,
                        concurrency=floor_concurrency,
                        max_concurrent=max_concurrent,
                    )
                )
            finally:
                dbs.close()
    return rows


def reachable(chosen: list[str], notes: list[str]) -> list[str]:
    """``chosen`` without PostgreSQL when its server does not answer (noted in ``notes``)."""
    if "postgresql" not in chosen:
        return chosen
    server = pg_server_url()
    why = pg_unreachable(server)
    if why is None:
        return chosen
    shown = make_url(server).render_as_string(hide_password=True)
    notes.append(f"postgresql skipped: {shown} unreachable ({why})")
    return [kind for kind in chosen if kind != "postgresql"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.once",
        description="Time `3cx-auditor once` with default settings against a floor.",
    )
    parser.add_argument("--quick", action="store_true", help="50 PBXs, one round")
    parser.add_argument("--pbxs", type=int, metavar="N", help="PBXs in the fleet (1000)")
    parser.add_argument(
        "--round-trip", type=float, default=0.02, metavar="S", help="per request (0.02)"
    )
    parser.add_argument("--reps", type=int, metavar="N", help="rounds (3; --quick: 1)")
    parser.add_argument("--only", choices=BACKENDS, help="one database only")
    parser.add_argument(
        "--max-concurrent",
        type=int,
        metavar="N",
        help="set audit.max_concurrent (default: unset, as a new user has it)",
    )
    parser.add_argument(
        "--floor-concurrency",
        type=int,
        metavar="N",
        help="the floor's concurrency (default: what once gets by default)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    args = parser.parse_args(argv)
    pbx_count = args.pbxs or (50 if args.quick else 1000)
    reps = args.reps or (1 if args.quick else 3)
    notes: list[str] = []
    chosen = reachable([args.only] if args.only else list(BACKENDS), notes)
    try:
        rows = run_all(
            chosen,
            pbx_count=pbx_count,
            round_trip=args.round_trip,
            reps=reps,
            progress=not args.json,
            floor_concurrency=args.floor_concurrency,
            max_concurrent=args.max_concurrent,
        )
    except OnceFailed as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    checks = check_targets(rows)
    if args.json:
        print(
            json.dumps(
                {
                    "round_trip_s": args.round_trip,
                    "reps": reps,
                    "notes": notes,
                    "results": [r.as_json() for r in rows],
                    "targets": checks,
                },
                indent=2,
            )
        )
        return 0
    print(report(rows, checks, notes, round_trip=args.round_trip, reps=reps))
    return 0


def report(
    rows: Sequence[OnceRow],
    checks: Sequence[dict[str, Any]],
    notes: Sequence[str],
    *,
    round_trip: float,
    reps: int,
) -> str:
    lines = [
        f"`3cx-auditor once` as a whole process with default settings, {round_trip * 1000:.0f} ms "
        f"per request, median of {reps} rounds; floor = the same requests from a bare aiohttp "
        "process at the same concurrency."
    ]
    lines += [f"note: {note}" for note in notes]
    if rows:
        lines.append(table(rows))
    for check in checks:
        verdict = "ok" if check["ok"] else "MISSED"
        lines.append(
            f"target {verdict:6} {check['what']}: {check['value']} (limit {check['limit']})"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
