"""The daemon at fleet scale: ``python -m bench.daemon [--quick] [--minutes M] [--json]``.

One simulator process serves ``--pbxs`` PBXs (20 scripts each); ``3cx-auditor run`` is
started as a real subprocess with one target per PBX on a ``--every`` schedule, runs for
``--minutes``, and is stopped with SIGTERM. This is done on SQLite, and on PostgreSQL when
its server answers (a fresh database, dropped after). Then, from the database:

* **gap**: per target, the time between the starts of consecutive runs, minus the interval.
  On time, it is 0; it is the growth of one run's lateness over the one before.
* **lateness**: the start of each run minus the time it was due. With ``every``, a target's
  due times keep their place in the interval, so they all lie on the grid through its final
  ``next_run_at``; the lateness is taken modulo the interval, so it is exact below one
  interval (a run later than that also shows as a gap of more than one interval).
  It is given apart for each target's first run (its baseline, the heaviest: the run that
  records every script) and for the runs after it (the steady state).
* **late**: runs that started more than one interval after they were due (a gap above one
  interval); **short**: targets with fewer runs than due times before the SIGTERM.

And from the processes (``/proc``): CPU share (user + system seconds over wall seconds) of
the daemon and of the simulator, over the whole run and over the steady part (whole
intervals after the first one, once every target has its baseline), and the daemon's peak
RSS (``VmHWM``) just before the SIGTERM. The daemon keeps up when no run is late, no target
is short, and it exits 0; the exit status of this command says whether every database kept up.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from sqlalchemy import make_url, select
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from auditor.config import parse_duration
from auditor.store import driver_url
from auditor.store.schema import runs, targets
from bench.db import Databases, pg_server_url, pg_unreachable

ROOT = Path(__file__).resolve().parent.parent
BACKENDS = ("sqlite", "postgresql")
SCRIPTS = 20
SECRET_ENV = "BENCH_PBX_SECRET"
# The simulator's client secret for every PBX; it reaches the daemon through SECRET_ENV.
SECRET = "secret"
READY_TIMEOUT_S = 120.0
SAMPLE_EVERY_S = 1.0
# A target due this little before the SIGTERM may be claimed by a tick that never comes.
DUE_MARGIN_S = 2.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- processes --------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (all its threads)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name may hold spaces and parentheses: fields are counted after its ")".
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def memory_kb(pid: int) -> dict[str, int]:
    """``VmHWM`` (peak resident set) and ``VmRSS`` of ``pid``, in KiB."""
    found: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            found[key] = int(value.split()[0])
    return found


@dataclass(frozen=True)
class Sample:
    at: float  # time.monotonic()
    daemon: float  # CPU seconds
    simulator: float


def share(samples: Sequence[Sample], start: float, end: float, which: str) -> float | None:
    """CPU share of ``which`` between the samples nearest ``start`` and ``end``."""
    inside = [s for s in samples if start - SAMPLE_EVERY_S <= s.at <= end + SAMPLE_EVERY_S]
    if len(inside) < 2:
        return None
    first = min(inside, key=lambda s: abs(s.at - start))
    last = min(inside, key=lambda s: abs(s.at - end))
    wall = last.at - first.at
    if wall <= 0:
        return None
    return float(getattr(last, which) - getattr(first, which)) / wall


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def serve_fleet(count: int, scripts: int) -> None:
    """The simulator process: ``count`` PBXs; prints ``{"base": URL}`` once listening."""
    from auditor.simulator import Simulator, run

    sim = Simulator.fleet(count, scripts=scripts, history=0, client_secret=SECRET)

    def ready(base: str) -> None:
        print(json.dumps({"base": base}), flush=True)

    run(sim, "127.0.0.1", 0, control=False, ready=ready)


@contextmanager
def simulator(count: int, scripts: int) -> Iterator[tuple[str, int]]:
    """Start the simulator process; yields its base URL and pid, and stops it after."""
    code = f"from bench.daemon import serve_fleet; serve_fleet({count}, {scripts})"
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the simulator exited with status {proc.wait()}")
        yield str(json.loads(line)["base"]), proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- the daemon -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    pbxs: int
    minutes: float
    every: timedelta
    jitter: timedelta
    max_concurrent: int

    @property
    def seconds(self) -> float:
        return self.minutes * 60.0


def write_config(path: Path, plan: Plan, database: str, base: str, port: int) -> None:
    width = max(4, len(str(plan.pbxs)))
    lines = [
        "[database]",
        f"url = {json.dumps(database)}",
        "[schedule]",
        f'every = "{int(plan.every.total_seconds())}s"',
        f'jitter = "{int(plan.jitter.total_seconds())}s"',
        'tick = "1s"',
        "[audit]",
        f"max_concurrent = {plan.max_concurrent}",
        'timeout = "2m"',
        'shutdown_grace = "30s"',
        "[http]",
        f'listen = "127.0.0.1:{port}"',
        "[log]",
        'level = "info"',
        'format = "json"',
    ]
    for number in range(1, plan.pbxs + 1):
        name = f"pbx-{number:0{width}d}"
        lines += [
            "[[targets]]",
            f'name = "{name}"',
            f'url = "{base}/{name}"',
            'client_id = "auditor"',
            f'client_secret_env = "{SECRET_ENV}"',
        ]
    path.write_text("\n".join(lines) + "\n")


def wait_ready(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    url = f"http://127.0.0.1:{port}/readyz"
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the daemon exited with status {proc.returncode}:\n{tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the daemon was not ready within {READY_TIMEOUT_S:.0f} s:\n{tail(log)}")


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class Observed:
    """What was seen of the processes while the daemon ran."""

    started: datetime  # wall clock, when the daemon was started
    ready_s: float  # from start to /readyz answering 200
    stopped: datetime  # wall clock, when SIGTERM was sent
    samples: list[Sample]
    ready_mono: float
    memory: dict[str, int]
    exit_code: int | None
    exit_s: float  # from SIGTERM to exit


def run_daemon(
    plan: Plan, database: str, workdir: Path, *, progress: bool
) -> tuple[Observed, Path]:
    config = workdir / "auditor.toml"
    log = workdir / "daemon.log"
    port = free_port()
    with simulator(plan.pbxs, SCRIPTS) as (base, sim_pid):
        write_config(config, plan, database, base, port)
        env = {**os.environ, SECRET_ENV: SECRET}
        with log.open("wb") as out:
            started = datetime.now(UTC)
            launched = time.monotonic()
            proc = subprocess.Popen(
                [sys.executable, "-m", "auditor", "--config", str(config), "run"],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
            try:
                return _watch(plan, proc, port, log, sim_pid, started, launched, progress), log
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()


def _watch(
    plan: Plan,
    proc: subprocess.Popen[bytes],
    port: int,
    log: Path,
    sim_pid: int,
    started: datetime,
    launched: float,
    progress: bool,
) -> Observed:
    wait_ready(proc, port, log)
    ready = time.monotonic()
    samples = [Sample(ready, cpu_seconds(proc.pid), cpu_seconds(sim_pid))]
    end = ready + plan.seconds
    reported = ready
    while (now := time.monotonic()) < end:
        time.sleep(min(SAMPLE_EVERY_S, end - now))
        if proc.poll() is not None:
            raise RuntimeError(f"the daemon exited with status {proc.returncode}:\n{tail(log)}")
        samples.append(Sample(time.monotonic(), cpu_seconds(proc.pid), cpu_seconds(sim_pid)))
        if progress and samples[-1].at - reported >= 30:
            reported = samples[-1].at
            cpu = share(samples, ready, reported, "daemon") or 0.0
            print(f"  {reported - ready:4.0f} s: daemon CPU {cpu:.0%} so far", file=sys.stderr)
    memory = memory_kb(proc.pid)
    stopped = datetime.now(UTC)
    signalled = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        code: int | None = proc.wait(timeout=90)
    except subprocess.TimeoutExpired:
        code = None
    return Observed(
        started=started,
        ready_s=ready - launched,
        stopped=stopped,
        samples=samples,
        ready_mono=ready,
        memory=memory,
        exit_code=code,
        exit_s=time.monotonic() - signalled,
    )


# -- the record -------------------------------------------------------------------------------


@dataclass
class Record:
    """Per target: its runs (start, status), sorted by start; and its final next_run_at."""

    starts: dict[str, list[datetime]] = field(default_factory=dict)
    statuses: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    next_run: dict[str, datetime | None] = field(default_factory=dict)
    durations: list[float] = field(default_factory=list)  # finished_at - started_at


async def read_record(url: str) -> Record:
    engine = create_async_engine(driver_url(url), poolclass=NullPool)
    record = Record()
    try:
        async with engine.connect() as conn:
            scheduled = await conn.execute(select(targets.c.name, targets.c.next_run_at))
            for name, next_run_at in scheduled:
                record.next_run[name] = next_run_at
                record.starts[name] = []
            query = (
                select(
                    targets.c.name,
                    runs.c.started_at,
                    runs.c.finished_at,
                    runs.c.status,
                    runs.c.error,
                )
                .join(targets, targets.c.id == runs.c.target_id)
                .order_by(targets.c.name, runs.c.started_at)
            )
            for name, started_at, finished_at, status, error in await conn.execute(query):
                record.starts[name].append(started_at)
                if finished_at is not None:
                    record.durations.append((finished_at - started_at).total_seconds())
                record.statuses[status] += 1
                if error:
                    record.errors[str(error)[:120]] += 1
    finally:
        await engine.dispose()
    return record


def percentile(values: Sequence[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


@dataclass
class Timing:
    runs: int
    gaps: list[float]  # seconds beyond the interval, per consecutive pair
    first_lateness: list[float]  # seconds after the due time, of each target's first run
    lateness: list[float]  # the same, of the runs after the first
    late: int  # runs more than one interval after their due time
    short: int  # targets with fewer runs than due times before the stop
    missing: int  # due times before the stop without a run, over all targets


def timing(record: Record, plan: Plan, stopped: datetime) -> Timing:
    every = plan.every.total_seconds()
    gaps: list[float] = []
    first_lateness: list[float] = []
    lateness: list[float] = []
    late = short = missing = runs_seen = 0
    for name, starts in record.starts.items():
        runs_seen += len(starts)
        final = record.next_run.get(name)
        for before, after in itertools.pairwise(starts):
            gap = (after - before).total_seconds() - every
            gaps.append(gap)
            if gap > every:
                late += 1
        if final is None or not starts:
            short += 1
            continue
        late_by = [(start - final).total_seconds() % every for start in starts]
        first_lateness.append(late_by[0])
        lateness.extend(late_by[1:])
        # The first due time is the grid point at or before the first start (unless that run
        # was more than one interval late, which the gaps cannot show; it would then show
        # here as a shortfall). Every due time up to the stop should have its run.
        first_due = starts[0] - timedelta(seconds=late_by[0])
        horizon = (stopped - first_due).total_seconds() - DUE_MARGIN_S
        expected = math.floor(horizon / every) + 1 if horizon >= 0 else 0
        if len(starts) < expected:
            short += 1
            missing += expected - len(starts)
    return Timing(runs_seen, gaps, first_lateness, lateness, late, short, missing)


def log_events(log: Path) -> Counter[str]:
    """Warnings and errors of the daemon's log, by event name."""
    events: Counter[str] = Counter()
    for line in log.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("level") in ("warning", "error", "critical"):
            events[f"{entry['level']}:{entry.get('event')}"] += 1
    return events


# -- one database -----------------------------------------------------------------------------


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def spread(values: Sequence[float]) -> dict[str, float | None]:
    return {
        "p50": _round(percentile(values, 0.5)),
        "p99": _round(percentile(values, 0.99)),
        "max": _round(max(values, default=None)),
    }


def measure(
    kind: str, plan: Plan, workdir: Path, *, progress: bool, keep: bool = False
) -> dict[str, Any]:
    dbs = Databases(kind, workdir)
    try:
        url = dbs.fresh()
        if progress:
            print(
                f"{kind}: {plan.pbxs} PBXs every {plan.every.total_seconds():.0f} s "
                f"(jitter {plan.jitter.total_seconds():.0f} s, max_concurrent "
                f"{plan.max_concurrent}) for {plan.minutes:g} min",
                file=sys.stderr,
            )
        load_before = os.getloadavg()
        observed, log = run_daemon(plan, url, workdir, progress=progress)
        load_after = os.getloadavg()
        record = asyncio.run(read_record(url))
    finally:
        if not keep or kind != "sqlite":
            dbs.close()
    times = timing(record, plan, observed.stopped)
    samples = observed.samples
    ready, last = observed.ready_mono, samples[-1].at
    every, jitter = plan.every.total_seconds(), plan.jitter.total_seconds()
    # Steady: whole intervals from the end of the first round of (baseline) audits.
    steady_from = ready + jitter
    periods = math.floor((last - steady_from) / every)
    steady_to = steady_from + periods * every if periods >= 1 else None
    events = log_events(log)
    keeps_up = times.late == 0 and times.short == 0 and observed.exit_code == 0
    return {
        "database": kind,
        "keeps_up": keeps_up,
        "pbxs": plan.pbxs,
        "scripts_per_pbx": SCRIPTS,
        "minutes": plan.minutes,
        "every_s": every,
        "jitter_s": jitter,
        "max_concurrent": plan.max_concurrent,
        "ready_s": _round(observed.ready_s),
        "runs": times.runs,
        "runs_by_status": dict(sorted(record.statuses.items())),
        "run_errors": dict(record.errors.most_common(5)),
        "gap_beyond_interval_s": spread(times.gaps),
        "lateness_s": spread(times.lateness),
        "first_run_lateness_s": spread(times.first_lateness),
        "audit_s": spread(record.durations),
        "late_runs": times.late,
        "short_targets": times.short,
        "missing_runs": times.missing,
        "daemon_cpu_share": {
            "whole": _round(share(samples, ready, last, "daemon"), 3),
            "steady": None
            if steady_to is None
            else _round(share(samples, steady_from, steady_to, "daemon"), 3),
        },
        "simulator_cpu_share": {
            "whole": _round(share(samples, ready, last, "simulator"), 3),
            "steady": None
            if steady_to is None
            else _round(share(samples, steady_from, steady_to, "simulator"), 3),
        },
        "daemon_peak_rss_mb": _round(observed.memory.get("VmHWM", 0) / 1024, 1),
        "daemon_rss_mb": _round(observed.memory.get("VmRSS", 0) / 1024, 1),
        "exit_code": observed.exit_code,
        "exit_s": _round(observed.exit_s),
        "log_warnings": dict(events.most_common(8)),
        "load_average": {"before": _round(load_before[0]), "after": _round(load_after[0])},
    }


# -- output -----------------------------------------------------------------------------------


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def table(results: Sequence[dict[str, Any]]) -> str:
    rows: list[tuple[str, ...]] = [("", *(str(r["database"]) for r in results))]

    def add(label: str, *values: str) -> None:
        rows.append((label, *values))

    add("keeps up", *("yes" if r["keeps_up"] else "NO" for r in results))
    add("runs", *(str(r["runs"]) for r in results))
    add(
        "  by status",
        *(" ".join(f"{k} {v}" for k, v in r["runs_by_status"].items()) for r in results),
    )
    for key, label in (
        ("gap_beyond_interval_s", "gap - interval"),
        ("first_run_lateness_s", "lateness, first runs"),
        ("lateness_s", "lateness, later runs"),
        ("audit_s", "one audit"),
    ):
        add(
            f"{label} p50/p99/max s",
            *("/".join(_s(r[key][p]) for p in ("p50", "p99", "max")) for r in results),
        )
    add("late runs (> 1 interval)", *(str(r["late_runs"]) for r in results))
    add(
        "short targets (missing runs)",
        *(f"{r['short_targets']} ({r['missing_runs']})" for r in results),
    )
    for key, label in (("daemon_cpu_share", "daemon"), ("simulator_cpu_share", "simulator")):
        add(
            f"{label} CPU whole/steady",
            *(f"{_pct(r[key]['whole'])} / {_pct(r[key]['steady'])}" for r in results),
        )
    add("daemon peak RSS MB", *(f"{r['daemon_peak_rss_mb']}" for r in results))
    add("ready after s", *(_s(r["ready_s"]) for r in results))
    add("exit code (s after SIGTERM)", *(f"{r['exit_code']} ({r['exit_s']})" for r in results))
    add(
        "load average before/after",
        *(f"{r['load_average']['before']}/{r['load_average']['after']}" for r in results),
    )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows
    )


# -- main -------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.daemon",
        description="Run `3cx-auditor run` against a simulated fleet and check it keeps up.",
    )
    parser.add_argument("--quick", action="store_true", help="100 PBXs for 1.5 minutes")
    parser.add_argument("--pbxs", type=int, metavar="N", help="PBXs (default 1000)")
    parser.add_argument("--minutes", type=float, metavar="M", help="how long (default 3)")
    parser.add_argument("--every", default="1m", help="schedule.every (default 1m)")
    parser.add_argument("--jitter", default="30s", help="schedule.jitter (default 30s)")
    parser.add_argument(
        "--max-concurrent", type=int, default=32, metavar="N", help="audit.max_concurrent"
    )
    parser.add_argument("--only", choices=BACKENDS, help="one database only")
    parser.add_argument("--keep", type=Path, metavar="DIR", help="keep config, log, SQLite here")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    args = parser.parse_args(argv)
    if args.pbxs is None:
        args.pbxs = 100 if args.quick else 1000
    if args.minutes is None:
        args.minutes = 1.5 if args.quick else 3.0
    if args.pbxs < 1 or args.minutes <= 0 or args.max_concurrent < 1:
        parser.error("--pbxs, --minutes and --max-concurrent must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    plan = Plan(
        pbxs=args.pbxs,
        minutes=args.minutes,
        every=parse_duration(args.every),
        jitter=parse_duration(args.jitter),
        max_concurrent=args.max_concurrent,
    )
    chosen = [args.only] if args.only else list(BACKENDS)
    notes: list[str] = []
    if "postgresql" in chosen:
        server = pg_server_url()
        why = pg_unreachable(server)
        if why is not None:
            shown = make_url(server).render_as_string(hide_password=True)
            notes.append(f"postgresql skipped: {shown} unreachable ({why})")
            chosen.remove("postgresql")
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="3cx-auditor-bench-daemon-") as tmp:
        for kind in chosen:
            workdir = (args.keep / kind) if args.keep else Path(tmp) / kind
            workdir.mkdir(parents=True, exist_ok=True)
            try:
                results.append(
                    measure(kind, plan, workdir, progress=not args.json, keep=bool(args.keep))
                )
            except RuntimeError as exc:
                print(f"bench.daemon: {kind}: {exc}", file=sys.stderr)
                return 1
    ok = all(r["keeps_up"] for r in results)
    if args.json:
        out: IO[str] = sys.stdout
        json.dump(
            {
                "python": sys.version.split()[0],
                "cpus": os.cpu_count(),
                "notes": notes,
                "results": results,
            },
            out,
            indent=2,
        )
        out.write("\n")
        return 0 if ok else 1
    print(
        f"3cx-auditor run: {plan.pbxs} PBXs x {SCRIPTS} scripts, every "
        f"{plan.every.total_seconds():.0f} s, jitter {plan.jitter.total_seconds():.0f} s, "
        f"max_concurrent {plan.max_concurrent}, {plan.minutes:g} min; {os.cpu_count()} CPUs"
    )
    print(table(results))
    for result in results:
        for event, count in result["log_warnings"].items():
            print(f"{result['database']}: log {event} x{count}")
        for error, count in result["run_errors"].items():
            print(f"{result['database']}: run error x{count}: {error}")
    for note in notes:
        print(f"note: {note}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
