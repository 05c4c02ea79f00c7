"""``python -m bench [--quick] [--only sqlite|postgresql] [--reps N] [--json]``.

Then, unless ``--no-whole``: ``3cx-auditor once`` as a whole process with default settings
over a fleet across a simulated network (:mod:`bench.once`), and each command's start-up
(:mod:`bench.startup`).

For each scenario and database, ``reps`` rounds (see :func:`measure`) of: the floor, the
auditor's client alone (fetching as an audit does, storing nothing: what an audit costs over
the floor splits into the client's part and the store's), the baseline cycle on a fresh
database, the no-change cycle on that database. A round's time of a repeatable cycle (all
but the baseline) is the median of ``TIMED`` cycles in one process. Times are medians over
the rounds, ratios the medians of each round's audit over its floor; peak RSS is the
largest of the processes; database growth is per PBX and per cycle.
"""

from __future__ import annotations

import argparse
import json
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
from bench import once as whole
from bench import startup
from bench.db import Databases, Size, pg_server_url, pg_unreachable

ROOT = Path(__file__).resolve().parent.parent
BACKENDS = ("sqlite", "postgresql")

# The targets of the issue this benchmark was written for.
MAX_RATIO_SQLITE = 1.5
# Timed cycles per process for the floor, the client and the no-change cycle; the median
# counts, so that one cycle slowed by the machine does not make the round.
TIMED = 3
MAX_RSS_MB_BIG = 200.0
MAX_BYTES_PER_PBX = 2048.0


@dataclass(frozen=True)
class Scenario:
    key: str
    pbxs: tuple[tuple[str, int], ...]

    @property
    def label(self) -> str:
        scripts = {s for _, s in self.pbxs}
        each = f"{scripts.pop():,}" if len(scripts) == 1 else "mixed"
        return f"{len(self.pbxs)} PBX x {each} scripts"


def scenarios(quick: bool) -> list[Scenario]:
    fleet, per_pbx, big = (4, 20, 500) if quick else (200, 20, 20_000)
    return [
        Scenario("fleet", tuple((f"fleet-{n:04d}", per_pbx) for n in range(1, fleet + 1))),
        Scenario("big", (("big", big),)),
    ]


@dataclass
class Measure:
    """One kind of cycle of one scenario on one database."""

    times: list[float] = field(default_factory=list)
    rss_kb: int = 0
    requests: int = 0
    # Database growth per PBX and cycle: bytes the files took, bytes in use inside them.
    alloc_per_pbx: float | None = None
    used_per_pbx: float | None = None

    @property
    def seconds(self) -> float:
        return statistics.median(self.times)

    def add(self, result: dict[str, Any]) -> None:
        """One round: the median of the cycles its process timed."""
        self.times.append(statistics.median(float(t) for t in result["times"]))
        self.rss_kb = max(self.rss_kb, int(result["rss_kb"]))
        self.requests = int(result["requests"])


@dataclass
class Row:
    scenario: Scenario
    database: str
    floor: Measure
    baseline: Measure
    steady: Measure
    # The auditor's client alone (fetching as an audit does, storing nothing).
    client: Measure = field(default_factory=Measure)

    def ratio(self, m: Measure) -> float:
        """The median of the rounds' ratios, each audit over the floor of its own round."""
        return statistics.median(t / f for t, f in zip(m.times, self.floor.times, strict=True))

    def as_json(self) -> dict[str, Any]:
        def part(m: Measure, ratio: bool = True) -> dict[str, Any]:
            out: dict[str, Any] = {
                "seconds": round(m.seconds, 4),
                "times": [round(t, 4) for t in m.times],
                "peak_rss_mb": round(m.rss_kb / 1024, 1),
                "requests": m.requests,
            }
            if ratio:
                out["ratio"] = round(self.ratio(m), 3)
                out["db_alloc_bytes_per_pbx"] = _round(m.alloc_per_pbx)
                out["db_used_bytes_per_pbx"] = _round(m.used_per_pbx)
            return out

        return {
            "scenario": self.scenario.key,
            "label": self.scenario.label,
            "pbxs": len(self.scenario.pbxs),
            "scripts": sum(s for _, s in self.scenario.pbxs),
            "database": self.database,
            "floor": part(self.floor, ratio=False),
            "client": {
                **part(self.client, ratio=False),
                "ratio": round(self.ratio(self.client), 3),
            },
            "baseline": part(self.baseline),
            "no_change": part(self.steady),
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


class ChildFailed(Exception):
    pass


def _child(job: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "bench.child", json.dumps(job)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise ChildFailed(f"{job['mode']} ({job.get('expect', '')}) failed:\n{tail}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@contextmanager
def simulator(pbxs: Sequence[tuple[str, int]]) -> Iterator[str]:
    """The simulator in a process of its own; yields its base URL."""
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.sim", json.dumps(list(pbxs))],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            raise ChildFailed("the simulator did not start")
        yield str(json.loads(line)["base"])
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def measure(
    scenario: Scenario,
    dbs: Databases,
    base: str,
    *,
    reps: int,
    concurrency: int,
    progress: bool,
) -> Row:
    """``reps`` rounds of: the floor, the client alone, a baseline on a fresh database, a
    no-change cycle on it.

    Each in a fresh process; the floor, the client and the no-change cycle after one
    warm-up cycle in that process, then ``TIMED`` cycles (their median counts). Rounds pair
    each audit with a floor taken moments before it, so that a machine busy with something
    else for a while slows both sides of a ratio alike.
    """
    pbxs = [list(p) for p in scenario.pbxs]
    common = {"base": base, "pbxs": pbxs, "concurrency": concurrency}
    floor, client, baseline, steady = Measure(), Measure(), Measure(), Measure()
    grown: list[Size] = []
    added: list[Size] = []
    for rep in range(reps):
        if progress:
            print(
                f"bench: {scenario.label}, {dbs.kind}: round {rep + 1}/{reps}",
                file=sys.stderr,
                flush=True,
            )
        floor.add(_child({**common, "mode": "floor", "warmup": 1, "cycles": TIMED}))
        client.add(_child({**common, "mode": "client", "warmup": 1, "cycles": TIMED}))
        url = dbs.fresh()
        try:
            before = dbs.size(url)
            job = {**common, "mode": "audit", "database": url, "cycles": 1}
            baseline.add(_child({**job, "expect": "baseline"}))
            middle = dbs.size(url)
            steady.add(_child({**job, "warmup": 1, "cycles": TIMED, "expect": "steady"}))
            after = dbs.size(url)
        finally:
            dbs.drop(url)
        grown.append(middle - before)
        added.append(after - middle)
    baseline.alloc_per_pbx = statistics.median(g.alloc for g in grown) / len(pbxs)
    baseline.used_per_pbx = statistics.median(g.used for g in grown) / len(pbxs)
    # The no-change cycles of every round (the warm-up and the timed ones), summed: one PBX's
    # run row is far smaller than a page, so one cycle alone mostly measures 0.
    cycles = (1 + TIMED) * reps * len(pbxs)
    steady.alloc_per_pbx = sum(a.alloc for a in added) / cycles
    steady.used_per_pbx = sum(a.used for a in added) / cycles
    return Row(scenario, dbs.kind, floor, baseline, steady, client)


# -- output ---------------------------------------------------------------------------------


def _bytes(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _mb(kb: int) -> str:
    return f"{kb / 1024:.0f} MiB"


def table(rows: Sequence[Row]) -> str:
    head = (
        "scenario",
        "db",
        "cycle",
        "median",
        "floor",
        "ratio",
        "peak RSS",
        "DB +B/PBX alloc",
        "used",
    )
    lines: list[tuple[str, ...]] = [head]
    for row in rows:
        for name, m in (("baseline", row.baseline), ("no-change", row.steady)):
            lines.append(
                (
                    row.scenario.label,
                    row.database,
                    name,
                    f"{m.seconds:.3f} s",
                    f"{row.floor.seconds:.3f} s",
                    f"{row.ratio(m):.2f}",
                    _mb(m.rss_kb),
                    _bytes(m.alloc_per_pbx),
                    _bytes(m.used_per_pbx),
                )
            )
        client = row.client
        lines.append(
            (
                row.scenario.label,
                row.database,
                "client",
                f"{client.seconds:.3f} s",
                f"{row.floor.seconds:.3f} s",
                f"{row.ratio(client):.2f}",
                _mb(client.rss_kb),
                "",
                "",
            )
        )
        floor_rss = _mb(row.floor.rss_kb)
        lines.append((row.scenario.label, row.database, "floor", "", "", "", floor_rss, "", ""))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    right = {3, 4, 5, 6, 7, 8}
    out = []
    for line in lines:
        cells = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(line)
        ]
        out.append("  ".join(cells).rstrip())
    return "\n".join(out)


def check_targets(rows: Sequence[Row]) -> list[dict[str, Any]]:
    checks: list[dict[str, Any]] = []
    for row in rows:
        where = f"{row.scenario.label}, {row.database}"
        if row.database == "sqlite":
            # The steady state: what the service does on every tick once it has a baseline.
            ratio = row.ratio(row.steady)
            checks.append(
                {
                    "what": f"ratio to floor, no-change, {where}",
                    "value": round(ratio, 3),
                    "limit": MAX_RATIO_SQLITE,
                    "ok": ratio <= MAX_RATIO_SQLITE,
                }
            )
        if row.scenario.key == "big":
            for name, m in (("baseline", row.baseline), ("no-change", row.steady)):
                mb = m.rss_kb / 1024
                checks.append(
                    {
                        "what": f"peak RSS MiB, {name}, {where}",
                        "value": round(mb, 1),
                        "limit": MAX_RSS_MB_BIG,
                        "ok": mb <= MAX_RSS_MB_BIG,
                    }
                )
        # The bytes in use, not the pages: one cycle of one PBX rarely fills a page.
        grown = row.steady.used_per_pbx or 0.0
        checks.append(
            {
                "what": f"DB bytes used per PBX by a no-change cycle, {where}",
                "value": round(grown, 1),
                "limit": MAX_BYTES_PER_PBX,
                "ok": grown < MAX_BYTES_PER_PBX,
            }
        )
    return checks


# -- main -----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="Time one audit cycle against a floor."
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--only", choices=BACKENDS, help="one database only")
    parser.add_argument(
        "--reps", type=int, metavar="N", help="repetitions per measure (default 5; --quick: 1)"
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        metavar="N",
        default=AuditSettings().max_concurrent,
        help="audit.max_concurrent, for the audit and the floor (default: the config default)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument(
        "--no-whole",
        action="store_true",
        help="leave out the whole-process measures (once with defaults, start-up per command)",
    )
    args = parser.parse_args(argv)
    if args.reps is None:
        args.reps = 1 if args.quick else 5
    if args.reps < 1 or args.concurrency < 1:
        parser.error("--reps and --concurrency must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    chosen = [args.only] if args.only else list(BACKENDS)
    notes: list[str] = []
    if "postgresql" in chosen:
        server = pg_server_url()
        why = pg_unreachable(server)
        if why is not None:
            shown = make_url(server).render_as_string(hide_password=True)
            notes.append(f"postgresql skipped: {shown} unreachable ({why})")
            chosen.remove("postgresql")
    plan = scenarios(args.quick)
    started = time.perf_counter()
    rows: list[Row] = []
    try:
        with (
            tempfile.TemporaryDirectory(prefix="3cx-auditor-bench-") as tmp,
            simulator([p for s in plan for p in s.pbxs]) as base,
        ):
            for kind in chosen:
                dbs = Databases(kind, Path(tmp))
                try:
                    for scenario in plan:
                        rows.append(
                            measure(
                                scenario,
                                dbs,
                                base,
                                reps=args.reps,
                                concurrency=args.concurrency,
                                progress=not args.json,
                            )
                        )
                finally:
                    dbs.close()
        once_rows: list[whole.OnceRow] = []
        timings: list[startup.Timing] = []
        if not args.no_whole:
            once_rows = whole.run_all(
                chosen,
                pbx_count=50 if args.quick else 1000,
                round_trip=0.02,
                reps=1 if args.quick else 3,
                progress=not args.json,
            )
            timings = startup.measure(2 if args.quick else 7, progress=not args.json)
    except (ChildFailed, whole.OnceFailed, startup.StartupFailed) as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    checks = check_targets(rows) + whole.check_targets(once_rows)
    elapsed = time.perf_counter() - started
    if args.json:
        print(
            json.dumps(
                {
                    "quick": args.quick,
                    "reps": args.reps,
                    "concurrency": args.concurrency,
                    "python": sys.version.split()[0],
                    "elapsed_s": round(elapsed, 1),
                    "notes": notes,
                    "results": [r.as_json() for r in rows],
                    "once": [r.as_json() for r in once_rows],
                    "startup": startup.as_json(timings),
                    "targets": checks,
                },
                indent=2,
            )
        )
        return 0
    print(
        f"One audit cycle, median of {args.reps} rounds (a round: the median of {TIMED} cycles "
        f"in one process, but for the baseline); floor = the same requests from a bare "
        f"aiohttp loop; ratio = median of audit/floor per round; concurrency "
        f"{args.concurrency}; {elapsed:.0f} s in all."
    )
    for note in notes:
        print(f"note: {note}")
    if rows:
        print(table(rows))
    if once_rows:
        print()
        print(whole.report(once_rows, [], [], round_trip=0.02, reps=1 if args.quick else 3))
    if timings:
        print()
        print(startup.report(timings, 2 if args.quick else 7))
    for check in checks:
        verdict = "ok" if check["ok"] else "MISSED"
        print(f"target {verdict:6} {check['what']}: {check['value']} (limit {check['limit']})")
    return 0
