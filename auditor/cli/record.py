"""The commands that read the record: ``runs``, ``history``, ``alerts`` (and
``alerts --undelivered``), ``show`` and ``diff``; and the options they share with ``export``
(``--target``, ``--since``, ``--until``, ``--limit``, ``--json``).

It only reads: it never audits, never talks to a PBX and never writes to the store (beyond
the migration every command that opens the store does). SQLAlchemy is imported only through
``open_store`` when a command runs.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from auditor.cli.common import (
    EXIT_OK,
    non_negative,
    print_items_table,
    print_json,
    print_table,
    read,
)
from auditor.errors import QueryError
from auditor.model import SCRIPTS, SETTINGS, SETTINGS_KEY, FieldChange, Snapshot, iso, utcnow

if TYPE_CHECKING:
    from auditor.cli.common import Commands
    from auditor.store import Store


def parse_when(text: str) -> datetime:
    """An ISO 8601 date or time (UTC unless it says otherwise), or an age like ``7d``."""
    from auditor.config import parse_duration

    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        try:
            return utcnow() - parse_duration(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"must be an ISO 8601 time like 2026-01-31T12:00Z or an age like 7d (got {text!r})"
            ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _filters(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "target": args.target,
        "since": args.since,
        "until": args.until,
        "limit": args.limit or None,
    }


def _short(moment: datetime | None) -> str:
    return iso(moment)[:19].replace("T", " ") if moment else ""


def cmd_runs(args: argparse.Namespace) -> int:
    found = read(args, lambda store: store.reads.runs(**_filters(args), newest_first=True))
    found.reverse()
    if args.json:
        print_json([r.as_json() for r in found])
        return EXIT_OK
    rows = [
        (r.id, r.target, _short(r.started_at), r.status, r.items, r.pages, r.error or "")
        for r in found
    ]
    print_table(
        "runs", ["id", "target", "started (UTC)", "status", "items", "pages", "error"], rows
    )
    return EXIT_OK


def _fields_text(fields: Sequence[FieldChange]) -> str:
    return ", ".join(f"{f.field}: {f.old!r} -> {f.new!r}" for f in fields[:3]) + (
        f" (+{len(fields) - 3})" if len(fields) > 3 else ""
    )


def cmd_history(args: argparse.Namespace) -> int:
    found = read(args, lambda store: store.reads.changes(**_filters(args), newest_first=True))
    found.reverse()
    if args.json:
        print_json([c.as_json() for c in found])
        return EXIT_OK
    rows = [
        (
            c.id,
            _short(c.at),
            c.target,
            c.kind,
            "yes" if c.baseline else "",
            c.collection,
            c.key,
            _fields_text(c.fields),
        )
        for c in found
    ]
    columns = ["id", "at (UTC)", "target", "kind", "baseline", "collection", "key", "fields"]
    print_table("history", columns, rows)
    return EXIT_OK


def cmd_undelivered(args: argparse.Namespace) -> int:
    found = read(args, lambda store: store.outbox.undelivered())
    found = [d for d in found if args.target is None or d.alert.target == args.target]
    if args.limit:
        found = found[-args.limit :]
    if args.json:
        print_json([d.as_json() for d in found])
        return EXIT_OK
    rows = [
        (
            d.id,
            d.sink,
            d.status,
            d.attempts,
            _short(d.next_attempt_at) if d.status == "pending" else "",
            d.alert.id,
            d.alert.target,
            d.alert.kind,
            d.last_error or "",
        )
        for d in found
    ]
    columns = ["id", "sink", "status", "attempts", "next (UTC)", "alert", "target", "kind", "error"]
    print_table("undelivered alerts", columns, rows)
    return EXIT_OK


def cmd_alerts(args: argparse.Namespace) -> int:
    if args.undelivered:
        return cmd_undelivered(args)
    found = read(args, lambda store: store.reads.alert_events(**_filters(args), newest_first=True))
    found.reverse()
    if args.json:
        print_json([a.as_json() for a in found])
        return EXIT_OK
    rows = [(a.id, _short(a.at), a.target, a.kind, a.status, a.severity, a.message) for a in found]
    print_table(
        "alerts", ["id", "at (UTC)", "target", "kind", "status", "severity", "message"], rows
    )
    return EXIT_OK


async def _snapshot_of(
    store: Store, target: str | None, run_id: int | None
) -> tuple[int, Snapshot]:
    if run_id is None:
        if target is None:
            raise QueryError("show: give --target NAME or --run ID")
        rows = [t for t in await store.reads.targets() if t.name == target]
        if not rows or rows[0].last_complete_run_id is None:
            raise QueryError(f"show: {target} has no complete run yet")
        run_id = rows[0].last_complete_run_id
    return run_id, await _complete_snapshot(store, run_id, "show")


async def _complete_snapshot(store: Store, run_id: int, command: str) -> Snapshot:
    # A run id that does not exist or names a failed run is the user's mistake (exit 2),
    # not a database failure (exit 1), which is what the store's error would say.
    run = await store.reads.run(run_id)
    if run is None:
        raise QueryError(f"{command}: there is no run {run_id}")
    if run.status != "ok":
        raise QueryError(
            f"{command}: run {run_id} of {run.target} is {run.status}, not complete: "
            "it has no snapshot"
        )
    return await store.reads.snapshot_at(run_id)


def _snapshot_json(run_id: int, snapshot: Snapshot) -> dict[str, Any]:
    scripts = snapshot.collection(SCRIPTS)
    settings = snapshot.collection(SETTINGS).get(SETTINGS_KEY)
    return {
        "target": snapshot.target,
        "run_id": run_id,
        "failover_scripts": [dict(scripts[k].body) for k in sorted(scripts)],
        "failover_settings": dict(settings.body) if settings else None,
    }


def cmd_show(args: argparse.Namespace) -> int:
    run_id, snapshot = read(args, lambda store: _snapshot_of(store, args.target, args.run))
    data = _snapshot_json(run_id, snapshot)
    if args.json:
        print_json(data)
        return EXIT_OK
    title = f"{snapshot.target} at run {run_id}: {len(data['failover_scripts'])} failover scripts"
    print_items_table(title, data["failover_scripts"])
    settings = data["failover_settings"] or {}
    print_table("failover settings", ["field", "value"], sorted(settings.items()))
    return EXIT_OK


def cmd_diff(args: argparse.Namespace) -> int:
    from auditor.diff import diff

    async def work(store: Store) -> tuple[Snapshot, Snapshot]:
        return (
            await _complete_snapshot(store, args.run_a, "diff"),
            await _complete_snapshot(store, args.run_b, "diff"),
        )

    before, after = read(args, work)
    if before.target != after.target:
        raise QueryError(
            f"diff: run {args.run_a} is of {before.target}, run {args.run_b} of {after.target}"
        )
    changes = diff(before, after).changes
    out = [
        {
            "collection": c.collection,
            "key": c.key,
            "kind": c.kind,
            "before": c.before,
            "after": c.after,
            "fields": [f.as_json() for f in c.fields],
        }
        for c in changes
    ]
    if args.json:
        print_json(out)
        return EXIT_OK
    rows = [(c.kind, c.collection, c.key, _fields_text(c.fields)) for c in changes]
    title = f"{before.target}: run {args.run_a} -> run {args.run_b}: {len(rows)} change(s)"
    print_table(title, ["kind", "collection", "key", "fields"], rows)
    return EXIT_OK


def record_options(sub: argparse.ArgumentParser, *, limit: bool = True) -> None:
    sub.add_argument("--target", metavar="NAME", help="only this target")
    sub.add_argument("--since", type=parse_when, metavar="WHEN", help="ISO time or age (7d)")
    sub.add_argument("--until", type=parse_when, metavar="WHEN", help="ISO time or age")
    if limit:
        sub.add_argument(
            "--limit",
            type=non_negative,
            default=100,
            metavar="N",
            help="newest N records (default 100; 0 = all)",
        )
        sub.add_argument("--json", action="store_true", help="JSON output")


def add_runs(commands: Commands) -> None:
    sub = commands.add_parser("runs", help="the audit runs")
    record_options(sub)
    sub.set_defaults(handler=cmd_runs)


def add_history(commands: Commands) -> None:
    sub = commands.add_parser("history", help="the change history")
    record_options(sub)
    sub.set_defaults(handler=cmd_history)


def add_alerts(commands: Commands) -> None:
    sub = commands.add_parser("alerts", help="the alerts raised")
    record_options(sub)
    sub.add_argument(
        "--undelivered",
        action="store_true",
        help="the deliveries to sinks not done yet: pending (retried) and dead (refused)",
    )
    sub.set_defaults(handler=cmd_alerts)


def add_show(commands: Commands) -> None:
    sub = commands.add_parser("show", help="the scripts and settings recorded at a run")
    sub.add_argument("--target", metavar="NAME", help="the target's last complete run")
    sub.add_argument("--run", type=non_negative, metavar="ID", help="a complete run")
    sub.add_argument("--json", action="store_true", help="JSON output")
    sub.set_defaults(handler=cmd_show)


def add_diff(commands: Commands) -> None:
    sub = commands.add_parser("diff", help="the changes between two complete runs")
    sub.add_argument("run_a", type=non_negative, metavar="A", help="the earlier run id")
    sub.add_argument("run_b", type=non_negative, metavar="B", help="the later run id")
    sub.add_argument("--json", action="store_true", help="JSON output")
    sub.set_defaults(handler=cmd_diff)
