"""The commands that read the record: ``runs``, ``history``, ``alerts`` (and
``alerts --undelivered``), ``show`` and ``diff``; and the options they share with ``export``
(``--target``, ``--since``, ``--until``, ``--limit``, ``--json``).

It only reads: it never audits, never talks to a PBX and never writes to the store (beyond
the migration every command that opens the store does). SQLAlchemy is imported only through
``open_store`` when a command runs.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from auditor.cli.common import (
    EXIT_OK,
    non_negative,
    note_cut,
    print_items_table,
    print_json,
    print_lines,
    print_table,
    read,
    terminal,
)
from auditor.collections import NAMES
from auditor.errors import QueryError
from auditor.model import (
    ALERT_KINDS,
    SCRIPT_KEY_FIELD,
    SCRIPTS,
    SETTINGS,
    SETTINGS_KEY,
    SEVERITIES,
    FieldChange,
    Snapshot,
    iso,
    utcnow,
)

if TYPE_CHECKING:
    from auditor.cli.common import Commands
    from auditor.store import Store

T = TypeVar("T")

# How --since and --until read a time, said in every --help that has them.
WHEN_HELP = (
    "an ISO 8601 date or time, in UTC unless it carries an offset (2026-01-31T12:00 is "
    "noon UTC, like every time shown; 2026-01-31T12:00+01:00 is 11:00 UTC), or an age "
    "like 90m, 12h or 7d"
)
# A collection by its short name, as a user says it, or by its recorded name.
COLLECTIONS = {"scripts": SCRIPTS, "settings": SETTINGS, **{name: name for name in NAMES}}


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


def _window(args: argparse.Namespace) -> dict[str, Any]:
    if args.since is not None and args.until is not None and args.until < args.since:
        raise QueryError(f"--until is before --since ({iso(args.until)} < {iso(args.since)})")
    return {"target": args.target, "since": args.since, "until": args.until}


def _newest(
    args: argparse.Namespace,
    command: str,
    listing: Callable[[Store, int | None], Awaitable[list[T]]],
    counting: Callable[[Store], Awaitable[int]],
) -> list[T]:
    """The newest ``--limit`` records, oldest first; on stderr, how many the limit left out."""

    async def work(store: Store) -> tuple[list[T], int]:
        found = await listing(store, args.limit or None)
        cut = bool(args.limit) and len(found) >= args.limit
        return found, (await counting(store) if cut else len(found))

    found, total = read(args, work)
    found.reverse()
    note_cut(command, len(found), total)
    return found


def _short(moment: datetime | None) -> str:
    return iso(moment)[:19].replace("T", " ") if moment else ""


def _full(moment: datetime | None) -> str:
    return iso(moment) if moment else ""


def _fields_text(fields: Sequence[FieldChange], shown: int | None = 3) -> str:
    """``field: old -> new, ...``; ``shown``: at most that many, then ``(+N)``."""
    listed = fields if shown is None else fields[:shown]
    more = len(fields) - len(listed)
    return ", ".join(f"{f.field}: {f.old!r} -> {f.new!r}" for f in listed) + (
        f" (+{more})" if more else ""
    )


def cmd_runs(args: argparse.Namespace) -> int:
    window = _window(args)
    found = _newest(
        args,
        "runs",
        lambda store, limit: store.reads.runs(**window, limit=limit, newest_first=True),
        lambda store: store.reads.count_runs(**window),
    )
    if args.json:
        print_json([r.as_json() for r in found])
    elif terminal():
        rows = [
            (r.id, r.target, _short(r.started_at), r.status, r.items, r.pages, r.error or "")
            for r in found
        ]
        columns = ["id", "target", "started (UTC)", "status", "items", "pages", "error"]
        print_table("runs", columns, rows)
    else:
        print_lines(
            [
                (r.id, r.target, _full(r.started_at), r.status, r.items, r.pages, r.error)
                for r in found
            ]
        )
    return EXIT_OK


def cmd_history(args: argparse.Namespace) -> int:
    window = _window(args)
    filters: dict[str, Any] = {
        "key": args.key,
        "kinds": args.kind,
        "collections": [COLLECTIONS[c] for c in args.collection] if args.collection else None,
    }
    found = _newest(
        args,
        "history",
        lambda store, limit: store.reads.changes(
            **window, **filters, limit=limit, newest_first=True
        ),
        lambda store: store.reads.count_changes(**window, **filters),
    )
    if args.json:
        print_json([c.as_json() for c in found])
    elif terminal():
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
    else:
        print_lines(
            [
                (
                    c.id,
                    _full(c.at),
                    c.target,
                    c.kind,
                    "yes" if c.baseline else "",
                    c.collection,
                    c.key,
                    _fields_text(c.fields, None),
                )
                for c in found
            ]
        )
    return EXIT_OK


def cmd_undelivered(args: argparse.Namespace) -> int:
    if args.firing or args.kind or args.severity:
        raise QueryError("alerts --undelivered takes --target, --since, --until and --limit only")
    window = _window(args)
    found = read(args, lambda store: store.outbox.undelivered())
    found = [
        d
        for d in found
        if (window["target"] is None or d.alert.target == window["target"])
        and (window["since"] is None or d.alert.at >= window["since"])
        and (window["until"] is None or d.alert.at < window["until"])
    ]
    total = len(found)
    if args.limit:
        found = found[-args.limit :]
    note_cut("alerts --undelivered", len(found), total)
    if args.json:
        print_json([d.as_json() for d in found])
        return EXIT_OK
    table = terminal()
    rows = [
        (
            d.id,
            d.sink,
            d.status,
            d.attempts,
            (_short if table else _full)(d.next_attempt_at) if d.status == "pending" else "",
            d.alert.id,
            d.alert.target,
            d.alert.kind,
            d.last_error or "",
        )
        for d in found
    ]
    if table:
        columns = ["id", "sink", "status", "attempts", "next (UTC)", "alert", "target", "kind"]
        print_table("undelivered alerts", [*columns, "error"], rows)
    else:
        print_lines(rows)
    return EXIT_OK


def _at_least(severity: str | None) -> list[str] | None:
    """The severities at ``severity`` or above (None: no filter)."""
    return None if severity is None else list(SEVERITIES[SEVERITIES.index(severity) :])


def cmd_alerts(args: argparse.Namespace) -> int:
    if args.undelivered:
        return cmd_undelivered(args)
    window = _window(args)
    filters: dict[str, Any] = {
        "kinds": args.kind,
        "severities": _at_least(args.severity),
        "firing": args.firing,
    }
    found = _newest(
        args,
        "alerts",
        lambda store, limit: store.reads.alert_events(
            **window, **filters, limit=limit, newest_first=True
        ),
        lambda store: store.reads.count_alert_events(**window, **filters),
    )
    if args.json:
        print_json([a.as_json() for a in found])
    elif terminal():
        rows = [
            (a.id, _short(a.at), a.target, a.kind, a.status, a.severity, a.message) for a in found
        ]
        columns = ["id", "at (UTC)", "target", "kind", "status", "severity", "message"]
        print_table("alerts", columns, rows)
    else:
        print_lines(
            [(a.id, _full(a.at), a.target, a.kind, a.status, a.severity, a.message) for a in found]
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
    if not terminal():
        print_lines(_item_lines(data))
        return EXIT_OK
    title = f"{snapshot.target} at run {run_id}: {len(data['failover_scripts'])} failover scripts"
    print_items_table(title, data["failover_scripts"])
    settings = data["failover_settings"] or {}
    print_table("failover settings", ["field", "value"], sorted(settings.items()))
    return EXIT_OK


def _item_lines(data: dict[str, Any]) -> list[list[str]]:
    """One line per recorded item: collection, key, then each other field as ``name=value``
    (a string as it is, any other value as JSON)."""

    def pairs(body: dict[str, Any], skip: str | None) -> list[str]:
        return [
            f"{k}={v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)}"
            for k, v in body.items()
            if k != skip
        ]

    lines = [
        [SCRIPTS, str(item.get(SCRIPT_KEY_FIELD, "")), *pairs(item, SCRIPT_KEY_FIELD)]
        for item in data["failover_scripts"]
    ]
    if data["failover_settings"] is not None:
        lines.append([SETTINGS, SETTINGS_KEY, *pairs(data["failover_settings"], None)])
    return lines


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
    if not terminal():
        print_lines([(c.kind, c.collection, c.key, _fields_text(c.fields, None)) for c in changes])
        return EXIT_OK
    rows = [(c.kind, c.collection, c.key, _fields_text(c.fields)) for c in changes]
    title = f"{before.target}: run {args.run_a} -> run {args.run_b}: {len(rows)} change(s)"
    print_table(title, ["kind", "collection", "key", "fields"], rows)
    return EXIT_OK


def record_options(sub: argparse.ArgumentParser, *, limit: bool = True) -> None:
    sub.add_argument("--target", metavar="NAME", help="only this target")
    sub.add_argument("--since", type=parse_when, metavar="WHEN", help="from then on: " + WHEN_HELP)
    sub.add_argument("--until", type=parse_when, metavar="WHEN", help="before then (same forms)")
    if limit:
        sub.add_argument(
            "--limit",
            type=non_negative,
            default=100,
            metavar="N",
            help="newest N records (default 100; 0 = all); stderr says when some were left out",
        )
        sub.add_argument("--json", action="store_true", help="JSON output")


def _lines(what: str, columns: str) -> str:
    return (
        f"On a terminal: a table. Into a pipe or a file: one line per {what}, never wrapped "
        f"or cut, its fields separated by tabs: {columns}. Times are UTC."
    )


def _collection(text: str) -> str:
    if text not in COLLECTIONS:
        raise argparse.ArgumentTypeError(
            f"must be scripts, settings or one of {', '.join(NAMES)} (got {text!r})"
        )
    return text


def add_runs(commands: Commands) -> None:
    sub = commands.add_parser(
        "runs",
        help="the audit runs",
        description=_lines("run", "id, target, started (ISO 8601), status, items, pages, error"),
    )
    record_options(sub)
    sub.set_defaults(handler=cmd_runs)


def add_history(commands: Commands) -> None:
    sub = commands.add_parser(
        "history",
        help="the change history",
        description=_lines(
            "change",
            "id, at (ISO 8601), target, kind, baseline ('yes' for a record of a target's "
            "first complete run), collection, key, fields (every changed field, as "
            "field: old -> new)",
        ),
    )
    record_options(sub)
    sub.add_argument(
        "--key",
        metavar="NAME",
        help="only the changes of this item: a script's file name, or 'settings'",
    )
    sub.add_argument(
        "--kind",
        action="append",
        choices=("added", "removed", "changed"),
        help="only this kind of change (repeatable)",
    )
    sub.add_argument(
        "--collection",
        action="append",
        type=_collection,
        metavar="{scripts,settings}",
        help="only the failover scripts, or only the failover settings",
    )
    sub.set_defaults(handler=cmd_history)


def add_alerts(commands: Commands) -> None:
    sub = commands.add_parser(
        "alerts",
        help="the alerts raised",
        description=_lines("alert", "id, at (ISO 8601), target, kind, status, severity, message"),
    )
    record_options(sub)
    sub.add_argument(
        "--firing",
        action="store_true",
        help="only the conditions firing now (state alerts not resolved yet), each once: its "
        "latest event. Change alerts are events, not conditions: never listed here",
    )
    sub.add_argument(
        "--kind",
        action="append",
        choices=ALERT_KINDS,
        metavar="KIND",
        help=f"only this kind (repeatable): {', '.join(ALERT_KINDS)}",
    )
    sub.add_argument(
        "--severity",
        choices=SEVERITIES,
        help="this severity or higher (info < warning < critical); a resolution counts with "
        "the severity of what it resolves, as in a sink's min_severity",
    )
    sub.add_argument(
        "--undelivered",
        action="store_true",
        help="the deliveries to sinks not done yet: pending (retried) and dead (refused)",
    )
    sub.set_defaults(handler=cmd_alerts)


def add_show(commands: Commands) -> None:
    sub = commands.add_parser(
        "show",
        help="the scripts and settings recorded at a run",
        description="On a terminal: two tables. Into a pipe or a file: one line per item, "
        "never wrapped or cut, its fields separated by tabs: collection, key (a script's "
        "file name, or 'settings'), then each other field as name=value (a string as it is, "
        "any other value as JSON).",
    )
    sub.add_argument("--target", metavar="NAME", help="the target's last complete run")
    sub.add_argument("--run", type=non_negative, metavar="ID", help="a complete run")
    sub.add_argument("--json", action="store_true", help="JSON output")
    sub.set_defaults(handler=cmd_show)


def add_diff(commands: Commands) -> None:
    sub = commands.add_parser(
        "diff",
        help="the changes between two complete runs",
        description=_lines(
            "change", "kind, collection, key, fields (every changed field, as field: old -> new)"
        ),
    )
    sub.add_argument("run_a", type=non_negative, metavar="A", help="the earlier run id")
    sub.add_argument("run_b", type=non_negative, metavar="B", help="the later run id")
    sub.add_argument("--json", action="store_true", help="JSON output")
    sub.set_defaults(handler=cmd_diff)
