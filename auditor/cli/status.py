"""The command that says where each target stands, for a person or a monitoring check:
``status``.

One line per configured target (or per ``--target``): its last complete run and how old it
is, the failed runs in a row since, the alerts firing now and its next scheduled run. Exit 1
when a target is disconnected (``alerts.disconnected_after`` failed runs in a row) or a
critical alert fires (or, with ``--max-age``, a target has no complete run that recent), so
that cron and monitoring can run it as a check.

It only reads the record (through ``read``): it never audits, never talks to a PBX and never
takes a lease. The schedule it shows is the one the daemon keeps in the record; without a
daemon, nothing moves it.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from auditor.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    load,
    print_json,
    print_lines,
    print_table,
    read,
    terminal,
)
from auditor.model import JSON, iso, utcnow

if TYPE_CHECKING:
    from auditor.cli.common import Commands
    from auditor.store import AlertState, TargetStatus


@dataclass(frozen=True, slots=True)
class Standing:
    """One target's line: what the record says, judged against the configuration."""

    name: str
    status: TargetStatus | None  # None: nothing recorded yet
    disconnected: bool
    stale: bool
    now: datetime

    @property
    def critical(self) -> int:
        return sum(1 for a in self.open_alerts if a.severity == "critical")

    @property
    def open_alerts(self) -> tuple[AlertState, ...]:
        return self.status.open_alerts if self.status else ()

    @property
    def state(self) -> str:
        """The one word a check greps for: what is most wrong first."""
        if self.disconnected:
            return "disconnected"
        if self.critical:
            return "critical"
        if self.stale:
            return "stale"
        if self.status is None or (
            self.status.last_complete_run_id is None and not self.status.failures_in_row
        ):
            return "not audited"
        if self.status.failures_in_row:
            return "failing"
        return "ok"

    @property
    def problems(self) -> list[str]:
        found = []
        s = self.status
        if self.disconnected and s is not None:
            found.append(f"disconnected: {s.failures_in_row} failed runs in a row")
        for a in self.open_alerts:
            if a.severity == "critical":
                where = f" {a.key}" if a.key else ""
                found.append(f"critical alert firing since {iso(a.first_seen)}: {a.kind}{where}")
        if self.stale:
            when = iso(s.last_complete_at) if s and s.last_complete_at else None
            found.append(f"no complete run since {when}" if when else "no complete run yet")
        return found

    def next_run(self) -> tuple[str, str | None]:
        """How the next run reads, and its time (None when there is none to give)."""
        s = self.status
        if s is None or s.next_run_at is None or not s.active:
            # Only the daemon schedules: `once` alone leaves no next run.
            return "not scheduled", None
        if s.lease_until is not None and s.lease_until > self.now:
            return "auditing now", iso(s.next_run_at)
        due = s.next_run_at - self.now
        if due >= timedelta(0):
            return f"in {age_text(due)}", iso(s.next_run_at)
        # Past due and unclaimed: no daemon is running, or it is far behind.
        return f"overdue by {age_text(-due)}", iso(s.next_run_at)

    def last_complete(self) -> str:
        s = self.status
        if s is None or s.last_complete_run_id is None or s.last_complete_at is None:
            return "never"
        return f"run {s.last_complete_run_id}, {age_text(self.now - s.last_complete_at)} ago"

    def alerts_text(self) -> str:
        if not self.open_alerts:
            return "0"
        counts: dict[str, int] = {}
        for a in self.open_alerts:
            counts[a.severity] = counts.get(a.severity, 0) + 1
        parts = [f"{counts[s]} {s}" for s in ("critical", "warning", "info") if s in counts]
        return f"{len(self.open_alerts)} ({', '.join(parts)})"

    def as_json(self) -> JSON:
        s = self.status
        text, at = self.next_run()
        complete_at = s.last_complete_at if s else None
        return {
            "target": self.name,
            "state": self.state,
            "last_complete_run_id": s.last_complete_run_id if s else None,
            "last_complete_at": iso(complete_at) if complete_at else None,
            "last_complete_age_s": (
                round((self.now - complete_at).total_seconds(), 3) if complete_at else None
            ),
            "failures_in_row": s.failures_in_row if s else 0,
            "disconnected": self.disconnected,
            "open_alerts": [
                {
                    "kind": a.kind,
                    "severity": a.severity,
                    "collection": a.collection,
                    "key": a.key,
                    "since": iso(a.first_seen),
                    "message": a.message,
                }
                for a in self.open_alerts
            ],
            "next_run_at": at,
            "next_run": text,
        }


def age_text(span: timedelta) -> str:
    """A span as a person reads it at a glance: 45s, 12m, 5h, 3d."""
    seconds = max(0, int(span.total_seconds()))
    if seconds < 90:
        return f"{seconds}s"
    if seconds < 90 * 60:
        return f"{seconds // 60}m"
    if seconds < 48 * 3600:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def _duration(text: str) -> timedelta:
    # Imported here: the settings load pydantic, which --version and --help need not.
    from auditor.config import parse_duration

    try:
        return parse_duration(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a duration like 30m, 2h or 1d (got {text!r})"
        ) from None


def cmd_status(args: argparse.Namespace) -> int:
    loaded = load(args)
    settings = loaded.settings
    names = list(args.target) if args.target else [t.name for t in settings.targets]
    found = read(args, lambda store: store.reads.target_status(names), loaded=loaded)
    recorded = {s.name: s for s in found}
    now = utcnow()
    standings = []
    for name in names:
        s = recorded.get(name)
        complete_at = s.last_complete_at if s else None
        stale = args.max_age is not None and (
            complete_at is None or now - complete_at > args.max_age
        )
        standings.append(
            Standing(
                name=name,
                status=s,
                disconnected=s is not None
                and s.failures_in_row >= settings.alerts.disconnected_after,
                stale=stale,
                now=now,
            )
        )
    problems = [f"status: {s.name}: {p}" for s in standings for p in s.problems]
    if args.json:
        print_json(
            {"at": iso(now), "ok": not problems, "targets": [s.as_json() for s in standings]}
        )
    elif terminal():
        rows = [
            (
                s.name,
                s.state,
                s.last_complete(),
                s.status.failures_in_row if s.status else 0,
                s.alerts_text(),
                s.next_run()[0],
            )
            for s in standings
        ]
        columns = ["target", "state", "last complete run", "failures", "open alerts", "next run"]
        print_table(f"status at {iso(now)[:19].replace('T', ' ')} UTC", columns, rows)
    else:
        print_lines(
            [
                (
                    s.name,
                    s.state,
                    s.status.last_complete_run_id if s.status else None,
                    iso(s.status.last_complete_at)
                    if s.status and s.status.last_complete_at
                    else None,
                    s.status.failures_in_row if s.status else 0,
                    len(s.open_alerts),
                    s.critical,
                    s.next_run()[1] or s.next_run()[0],
                )
                for s in standings
            ]
        )
    for line in problems:
        print(line, file=sys.stderr)
    return EXIT_FAILED if problems else EXIT_OK


def add_status(commands: Commands) -> None:
    sub = commands.add_parser(
        "status",
        help="where each target stands: last complete run, failures, open alerts, next run",
        description="One line per configured target: its state (disconnected, critical, "
        "stale, failing, not audited or ok), its last complete run and how old it is, the "
        "failed runs in a row since, the alerts firing now and the next run the daemon has "
        "scheduled ('not scheduled' when no daemon has scheduled it; 'overdue by ...' when "
        "it is past due and no daemon has claimed it). Exit 1 when a target is disconnected "
        "(alerts.disconnected_after failed runs in a row) or a critical alert fires, or, "
        "with --max-age, a target has no complete run that recent; each reason is one line "
        "on stderr. Into a pipe or a file: one line per target, tab-separated: target, "
        "state, last complete run id, its finish time (ISO 8601 UTC), failures in a row, "
        "open alerts, critical alerts, next run (ISO 8601 UTC, or 'not scheduled').",
    )
    sub.add_argument(
        "--target", action="append", metavar="NAME", help="only this target (repeatable)"
    )
    sub.add_argument(
        "--max-age",
        type=_duration,
        metavar="DURATION",
        help="exit 1 also when a target's last complete run finished longer ago than this "
        "(or there is none): a check that notices a daemon that stopped",
    )
    sub.add_argument("--json", action="store_true", help="JSON output")
    sub.set_defaults(handler=cmd_status)
