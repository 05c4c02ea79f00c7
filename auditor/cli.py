"""The command line: the only place that prints or picks exit codes.

Exit codes: 0 success, 1 a target (PBX, database) failed, 2 usage or configuration error.
Errors are one line on stderr; ``-v`` adds the traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import sys
import tempfile
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO, TypeVar

from rich.console import Console
from rich.table import Table

from auditor import __version__
from auditor.config import Loaded, load_settings, parse_duration
from auditor.errors import AuditorError, ConfigError, QueryError, SourceError
from auditor.logs import alert_printer
from auditor.logs import configure as configure_logs
from auditor.model import (
    SCRIPTS,
    SETTINGS,
    SETTINGS_KEY,
    Alert,
    FieldChange,
    Snapshot,
    iso,
    utcnow,
)

if TYPE_CHECKING:
    from auditor.alerts.delivery import DeliveryReport
    from auditor.audit import AuditResult
    from auditor.store import ChangeRecord, Store

# The heavy modules (SQLAlchemy, aiohttp, the sinks) are imported by the commands that use
# them, so `check-config` or `--help` answer at once.

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

Handler = Callable[[argparse.Namespace], int]
T = TypeVar("T")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _out(stream: TextIO | None = None) -> TextIO:
    return stream if stream is not None else sys.stdout


def print_json(value: Any, *, lines: bool = False) -> None:
    """JSON on stdout: one document, or (``lines``) one compact document per line."""
    out = _out()
    if lines:
        for item in value:
            out.write(json.dumps(item, ensure_ascii=False, separators=(",", ":")) + "\n")
    else:
        out.write(json.dumps(value, ensure_ascii=False, indent=2) + "\n")
    out.flush()


def _load(
    args: argparse.Namespace, *, require_targets: bool = False, daemon: bool = False
) -> Loaded:
    """Settings for a command. ``[log] level`` is the daemon's; a one-shot command logs only
    warnings and errors (its results are its output), ``-v`` everything."""
    loaded = load_settings(args.config)
    for warning in loaded.warnings:
        print(warning, file=sys.stderr)
    level = loaded.settings.log.level if daemon else "warning"
    configure_logs("debug" if args.verbose else level, loaded.settings.log.format)
    if require_targets and not loaded.settings.targets:
        where = loaded.path or "the configuration"
        raise ConfigError([f"config: targets: no [[targets]] in {where}"])
    return loaded


# -- check-config ------------------------------------------------------------------------


def cmd_check_config(args: argparse.Namespace) -> int:
    loaded = load_settings(args.config, require_file=True)
    for warning in loaded.warnings:
        print(warning, file=sys.stderr)
    count = len(loaded.settings.targets)
    print(f"config: ok: {loaded.path} ({count} target{'s' if count != 1 else ''})")
    return EXIT_OK


# -- scripts -----------------------------------------------------------------------------


def _columns(items: Sequence[dict[str, Any]]) -> list[str]:
    columns: dict[str, None] = {"Filename": None}
    for item in items:
        for key in item:
            columns.setdefault(key, None)
    return list(columns)


def print_items_table(title: str, items: Sequence[dict[str, Any]]) -> None:

    table = Table(title=title, title_justify="left")
    columns = _columns(items)
    for column in columns:
        table.add_column(column, overflow="fold")
    for item in items:
        table.add_row(*("" if item.get(c) is None else str(item.get(c)) for c in columns))
    Console().print(table)


async def _scripts(args: argparse.Namespace, loaded: Loaded) -> dict[str, Any]:
    from auditor.xapi import XapiClient

    target = loaded.settings.target(args.target)
    async with XapiClient(target) as client:
        if args.all:
            listing = await client.list_failover_scripts(search=args.search, filter=args.filter)
            return {
                "target": target.name,
                "count": listing.reported_count,
                "pages": listing.pages,
                "items": list(listing.items),
            }
        page = await client.get_failover_scripts(
            top=args.top if args.top is not None else target.page_size,
            skip=args.skip,
            search=target.search if args.search is None else args.search,
            filter=target.filter if args.filter is None else args.filter,
            count=args.count,
        )
        return {
            "target": target.name,
            "count": page.count,
            "pages": 1,
            "items": list(page.items),
        }


def cmd_scripts(args: argparse.Namespace) -> int:
    if args.all and (args.top is not None or args.skip is not None):
        raise QueryError("--all pages through everything; it cannot be combined with --top/--skip")
    loaded = _load(args)
    result = asyncio.run(_scripts(args, loaded))
    items: list[dict[str, Any]] = result["items"]
    if args.json:
        print_json(result)
    elif sys.stdout.isatty():
        counted = f", @odata.count {result['count']}" if result["count"] is not None else ""
        title = f"{result['target']}: {len(items)} failover scripts{counted}"
        print_items_table(title, items)
    else:
        out = _out()
        for item in items:
            out.write(str(item.get("Filename", "")) + "\n")
    return EXIT_OK


# -- db upgrade / once -------------------------------------------------------------------


async def open_store(loaded: Loaded, *, migrate: bool = True) -> Store:
    from auditor.store import Store

    settings = loaded.settings
    store = await Store.open(settings.database.url, concurrency=settings.audit.max_concurrent)
    if migrate:
        try:
            await store.ensure_schema()
        except BaseException:
            await store.close()
            raise
    return store


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    loaded = _load(args)

    async def upgrade() -> str:
        store = await open_store(loaded, migrate=False)
        try:
            return await store.upgrade()
        finally:
            await store.close()

    revision = asyncio.run(upgrade())
    print(f"database: at revision {revision}", file=sys.stderr)
    return EXIT_OK


def _summary(result: AuditResult) -> str:
    if result.ok:
        what = "baseline" if result.baseline else f"{result.changes} change(s)"
        suppressed = f", {result.suppressed} suppressed" if result.suppressed else ""
        return (
            f"{result.target}: ok, {result.items} scripts in {result.pages} page(s), "
            f"{what}{suppressed}, {len(result.alerts)} alert(s) (run {result.run_id})"
        )
    return f"{result.target}: {result.status}: {result.error} (run {result.run_id})"


async def audit_targets(
    loaded: Loaded,
    names: Sequence[str],
    *,
    on_alert: Callable[[Alert], None],
    progress: bool = False,
    on_delivery: Callable[[DeliveryReport], None] | None = None,
) -> list[AuditResult]:
    """Audit the named targets (all when none), with a progress bar on a terminal.

    With ``on_delivery``, one short delivery pass follows the audits; what it cannot
    deliver stays in the outbox for the daemon or the next ``once``.
    """
    from auditor.alerts.delivery import deliver_once, deliverer_name
    from auditor.audit import audit_many

    settings = loaded.settings
    targets = [settings.target(n) for n in names] if names else list(settings.targets)
    if not targets:
        raise ConfigError(["config: targets: no [[targets]] configured"])
    store = await open_store(loaded)
    try:
        if not progress:
            results = await audit_many(settings, store.record, targets, on_alert=on_alert)
        else:
            from rich.progress import Progress

            with Progress(transient=True, console=Console(stderr=True)) as bar:
                task = bar.add_task("auditing", total=len(targets))
                results = await audit_many(
                    settings,
                    store.record,
                    targets,
                    on_alert=on_alert,
                    on_done=lambda _result: bar.advance(task),
                )
        if on_delivery is not None:
            on_delivery(
                await deliver_once(
                    store.outbox,
                    settings.alerts,
                    owner=deliverer_name("once"),
                    time_budget=ONCE_DELIVERY_BUDGET_S,
                )
            )
        return results
    finally:
        await store.close()


# `once` gives its delivery pass this long to start deliveries (each one is bounded by its
# sink's timeout); the rest waits in the outbox.
ONCE_DELIVERY_BUDGET_S = 10.0


def _delivery_summary(report: DeliveryReport) -> str | None:
    if not report.attempted and not report.pending and not report.dead_total:
        return None
    line = (
        f"delivery: {report.delivered} delivered, {report.pending} pending, "
        f"{report.dead_total} dead"
    )
    if report.pending or report.dead_total:
        line += " (see: alerts --undelivered)"
    return line


def cmd_once(args: argparse.Namespace) -> int:
    from auditor.errors import InUseError
    from auditor.store.lock import SqliteLock

    loaded = _load(args, require_targets=True)
    reports: list[DeliveryReport] = []
    try:
        # Beside a daemon on the same SQLite file, both would audit the same targets.
        lock = SqliteLock.acquire(loaded.settings.database.url)
    except InUseError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE
    try:
        results = asyncio.run(
            audit_targets(
                loaded,
                args.target or (),
                on_alert=alert_printer(),
                progress=sys.stderr.isatty(),
                on_delivery=reports.append,
            )
        )
    finally:
        if lock is not None:
            lock.release()
    for result in results:
        print(_summary(result), file=sys.stderr)
    for report in reports:
        line = _delivery_summary(report)
        if line:
            print(line, file=sys.stderr)
    return EXIT_OK if all(r.ok for r in results) else EXIT_FAILED


def cmd_run(args: argparse.Namespace) -> int:
    from auditor.errors import InUseError
    from auditor.service import run_service

    loaded = _load(args, daemon=True)
    try:
        asyncio.run(run_service(loaded, on_alert=alert_printer()))
    except InUseError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


# -- reading the record ------------------------------------------------------------------


def parse_when(text: str) -> datetime:
    """An ISO 8601 date or time (UTC unless it says otherwise), or an age like ``7d``."""
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


def _read(args: argparse.Namespace, work: Callable[[Store], Awaitable[T]]) -> T:
    loaded = _load(args)

    async def run() -> T:
        store = await open_store(loaded)
        try:
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(run())


def _filters(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "target": args.target,
        "since": args.since,
        "until": args.until,
        "limit": args.limit or None,
    }


def _table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    Console().print(table)


def _short(moment: datetime | None) -> str:
    return iso(moment)[:19].replace("T", " ") if moment else ""


def cmd_runs(args: argparse.Namespace) -> int:
    found = _read(args, lambda store: store.reads.runs(**_filters(args), newest_first=True))
    found.reverse()
    if args.json:
        print_json([r.as_json() for r in found])
        return EXIT_OK
    rows = [
        (r.id, r.target, _short(r.started_at), r.status, r.items, r.pages, r.error or "")
        for r in found
    ]
    _table("runs", ["id", "target", "started (UTC)", "status", "items", "pages", "error"], rows)
    return EXIT_OK


def _fields_text(fields: Sequence[FieldChange]) -> str:
    return ", ".join(f"{f.field}: {f.old!r} -> {f.new!r}" for f in fields[:3]) + (
        f" (+{len(fields) - 3})" if len(fields) > 3 else ""
    )


def cmd_history(args: argparse.Namespace) -> int:
    found = _read(args, lambda store: store.reads.changes(**_filters(args), newest_first=True))
    found.reverse()
    if args.json:
        print_json([c.as_json() for c in found])
        return EXIT_OK
    rows = [
        (c.id, _short(c.at), c.target, c.kind, c.collection, c.key, _fields_text(c.fields))
        for c in found
    ]
    _table("history", ["id", "at (UTC)", "target", "kind", "collection", "key", "fields"], rows)
    return EXIT_OK


def cmd_undelivered(args: argparse.Namespace) -> int:
    found = _read(args, lambda store: store.outbox.undelivered())
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
    _table("undelivered alerts", columns, rows)
    return EXIT_OK


def cmd_alerts(args: argparse.Namespace) -> int:
    if args.undelivered:
        return cmd_undelivered(args)
    found = _read(args, lambda store: store.reads.alert_events(**_filters(args), newest_first=True))
    found.reverse()
    if args.json:
        print_json([a.as_json() for a in found])
        return EXIT_OK
    rows = [(a.id, _short(a.at), a.target, a.kind, a.status, a.severity, a.message) for a in found]
    _table("alerts", ["id", "at (UTC)", "target", "kind", "status", "severity", "message"], rows)
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
    run_id, snapshot = _read(args, lambda store: _snapshot_of(store, args.target, args.run))
    data = _snapshot_json(run_id, snapshot)
    if args.json:
        print_json(data)
        return EXIT_OK
    title = f"{snapshot.target} at run {run_id}: {len(data['failover_scripts'])} failover scripts"
    print_items_table(title, data["failover_scripts"])
    settings = data["failover_settings"] or {}
    _table("failover settings", ["field", "value"], sorted(settings.items()))
    return EXIT_OK


def cmd_diff(args: argparse.Namespace) -> int:
    from auditor.diff import diff

    async def work(store: Store) -> tuple[Snapshot, Snapshot]:
        return (
            await _complete_snapshot(store, args.run_a, "diff"),
            await _complete_snapshot(store, args.run_b, "diff"),
        )

    before, after = _read(args, work)
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
    _table(title, ["kind", "collection", "key", "fields"], rows)
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    result = _read(args, lambda store: store.reads.verify())
    if result.ok:
        print(f"verify: intact: {result.length} change records, chain head {result.head}")
        return EXIT_OK
    print(
        f"verify: BROKEN at change record {result.first_bad}: {result.reason} "
        f"({result.length} records checked)"
    )
    return EXIT_FAILED


_CSV_COLUMNS = [
    "id",
    "run_id",
    "target",
    "collection",
    "key",
    "kind",
    "at",
    "before",
    "after",
    "fields",
    "prev_hash",
    "hash",
]


EXPORT_BATCH = 1000


async def _each_change(
    store: Store, filters: dict[str, Any], length: int
) -> AsyncIterator[ChangeRecord]:
    # Record n of the chain has id n: stopping at the length read with the head keeps the
    # export consistent with that head while audits go on appending.
    after_id: int | None = None
    while True:
        batch = await store.reads.changes(
            **filters, limit=EXPORT_BATCH, after_id=after_id, before_id=length + 1
        )
        for record in batch:
            yield record
        if len(batch) < EXPORT_BATCH:
            return
        after_id = batch[-1].id


async def _export(store: Store, args: argparse.Namespace, out: TextIO) -> tuple[str, int, int]:
    from auditor.report import HtmlReport

    head, length = await store.reads.chain_head()
    filters = {"target": args.target, "since": args.since, "until": args.until}
    if args.format == "html":
        with HtmlReport(
            head=head,
            length=length,
            database=store.url_for_display,
            filters=filters,
            generated_at=utcnow(),
        ) as report:
            async for record in _each_change(store, filters, length):
                report.add(record)
            report.write(out)
        return head, length, report.count
    writer = csv.DictWriter(out, fieldnames=_CSV_COLUMNS) if args.format == "csv" else None
    if writer is not None:
        writer.writeheader()
    else:
        header = {
            "exported_at": iso(utcnow()),
            "chain": {"head": head, "length": length},
            "filters": {k: iso(v) if isinstance(v, datetime) else v for k, v in filters.items()},
        }
        out.write(json.dumps(header, ensure_ascii=False)[:-1] + ', "changes": [\n')
    count = 0
    async for record in _each_change(store, filters, length):
        data = record.as_json()
        if writer is not None:
            for key in ("before", "after", "fields"):
                data[key] = json.dumps(data[key], ensure_ascii=False, sort_keys=True)
            writer.writerow(data)
        else:
            out.write((",\n" if count else "") + json.dumps(data, ensure_ascii=False))
        count += 1
    if writer is None:
        out.write("\n]}\n")
    return head, length, count


def cmd_export(args: argparse.Namespace) -> int:
    if args.output:
        with open(args.output, "w", newline="", encoding="utf-8") as out:
            head, length, count = _read(args, lambda store: _export(store, args, out))
    else:
        head, length, count = _read(args, lambda store: _export(store, args, sys.stdout))
    print(
        f"export: {count} change record(s); chain head {head} ({length} records in all)",
        file=sys.stderr,
    )
    return EXIT_OK


# -- simulate / demo ---------------------------------------------------------------------


def _pbx_spec(text: str) -> tuple[str, int]:
    name, _, count = text.partition(":")
    try:
        return name, int(count) if count else 20
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be NAME or NAME:SCRIPTS (got {text!r})") from None


def cmd_simulate(args: argparse.Namespace) -> int:
    from auditor.simulator import Pbx, Simulator, run

    specs = args.pbx or [("pbx", 20)]
    secret = os.environ.get(args.secret_env) if args.secret_env else None
    sim = Simulator(
        [
            Pbx(
                name,
                scripts=count,
                seed=args.seed + index,
                states=args.states,
                client_id=args.client_id,
                client_secret=secret or "secret",
            )
            for index, (name, count) in enumerate(specs)
        ]
    )

    def ready(base: str) -> None:
        print(f"simulator: serving {len(specs)} PBX(s) at {base}", file=sys.stderr)
        for name, count in specs:
            print(f"  {name}: {base}/{name} ({count} scripts)", file=sys.stderr)
        where = f"${args.secret_env}" if secret else "the word 'secret'"
        print(
            f"  client_id {args.client_id!r}; the client secret is {where}; "
            f"control API at {base}/_sim",
            file=sys.stderr,
        )

    run(sim, args.host, args.port, ready=ready)
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from auditor.demo import run_demo

    configure_logs("error", "console")
    console = Console()
    colours = {"critical": "bold red", "warning": "yellow", "info": "cyan"}

    def step(number: int, title: str) -> None:
        console.rule(f"[bold]{number}. {title}")

    def alert(item: Alert) -> None:
        colour = "green" if item.status == "resolved" else colours.get(item.severity, "white")
        at = iso(item.at)[11:19]
        console.print(
            f"  {at} [{colour}]{item.status:8} {item.kind:24}[/] {item.message}", highlight=False
        )

    with tempfile.TemporaryDirectory(prefix="3cx-auditor-demo-") as tmp:
        workdir = Path(args.keep) if args.keep else Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        console.print(
            f"3cx-auditor demo: the daemon audits two simulated PBXs every {args.every:g}s; "
            "Ctrl-C stops it early."
        )
        summary = asyncio.run(run_demo(workdir, on_step=step, on_alert=alert, every=args.every))
        console.rule("[bold]Recorded" + (" (interrupted)" if summary.interrupted else ""))
        runs = ", ".join(f"{n} {status}" for status, n in sorted(summary.runs.items()))
        alerts = ", ".join(f"{kind} {n}" for kind, n in sorted(summary.alerts.items()))
        console.print(f"  runs: {runs}; changes in the history: {summary.changes}")
        console.print(f"  alerts: {alerts or 'none'}")
        state = "intact" if summary.verify.ok else f"BROKEN at {summary.verify.first_bad}"
        console.print(f"  hash chain: {state}, head {summary.verify.head[:16]}...")
        if args.keep:
            console.print(
                f"  kept in {workdir}: try  3cx-auditor --config {workdir / 'auditor.toml'} history"
            )
    return EXIT_OK if summary.verify.ok else EXIT_FAILED


# -- the parser --------------------------------------------------------------------------


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer (got {text!r})") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative (got {value})")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="3cx-auditor",
        description="Audits the failover scripts and failover settings of 3CX V20 PBXs.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="config file (default: $AUDITOR_CONFIG, ./auditor.toml, /etc/3cx-auditor/config.toml)",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="debug logs and tracebacks on errors"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    sub = commands.add_parser("check-config", help="validate the configuration")
    sub.set_defaults(handler=cmd_check_config)

    sub = commands.add_parser(
        "scripts",
        help="the live failover-script listing of one PBX",
        description="Query GetFailoverScripts() of one configured PBX. Without --all one "
        "request is made with the given query options; with --all every page is fetched "
        "and the listing is proved complete.",
    )
    sub.add_argument("--target", required=True, metavar="NAME", help="a configured target")
    sub.add_argument("--top", type=_non_negative, metavar="N", help="$top (1..100)")
    sub.add_argument("--skip", type=_non_negative, metavar="N", help="$skip")
    sub.add_argument("--search", metavar="TEXT", help="$search (quoted for you if needed)")
    sub.add_argument("--filter", metavar="EXPR", help="$filter, checked before sending")
    sub.add_argument("--count", action="store_true", help="ask for @odata.count")
    sub.add_argument("--all", action="store_true", help="page through every script")
    sub.add_argument("--json", action="store_true", help="JSON output")
    sub.set_defaults(handler=cmd_scripts)

    sub = commands.add_parser("simulate", help="serve the built-in 3CX XAPI simulator")
    sub.add_argument("--host", default="127.0.0.1", help="address to listen on")
    sub.add_argument("--port", type=_non_negative, default=8080, help="port (default 8080)")
    sub.add_argument(
        "--pbx",
        action="append",
        type=_pbx_spec,
        metavar="NAME[:SCRIPTS]",
        help="a simulated PBX (repeatable; default pbx:20)",
    )
    sub.add_argument("--states", action="store_true", help="items carry a State field")
    sub.add_argument("--seed", type=_non_negative, default=0, help="data seed")
    sub.add_argument("--client-id", default="auditor", help="the accepted client id")
    sub.add_argument(
        "--secret-env",
        metavar="VAR",
        help="take the accepted client secret from this environment variable "
        "(default: the word 'secret')",
    )
    sub.set_defaults(handler=cmd_simulate)

    sub = commands.add_parser(
        "demo", help="simulator + auditor on a temporary SQLite: the whole flow in one command"
    )
    sub.add_argument(
        "--every", type=float, default=8.0, metavar="SECONDS", help="audit interval (8)"
    )
    sub.add_argument("--keep", metavar="DIR", help="keep the database and config in DIR")
    sub.set_defaults(handler=cmd_demo)

    sub = commands.add_parser("db", help="database maintenance")
    db = sub.add_subparsers(dest="db_command", metavar="ACTION", parser_class=_Parser)
    db.required = True
    db.add_parser("upgrade", help="migrate the database to the newest schema").set_defaults(
        handler=cmd_db_upgrade
    )

    sub = commands.add_parser(
        "once",
        help="audit now: one JSON line per alert on stdout, a summary on stderr",
    )
    sub.add_argument(
        "--target", action="append", metavar="NAME", help="only this target (repeatable)"
    )
    sub.set_defaults(handler=cmd_once)

    sub = commands.add_parser(
        "run",
        help="the daemon: audit on schedule until SIGTERM (health and metrics over HTTP)",
    )
    sub.set_defaults(handler=cmd_run)

    def record_options(sub: argparse.ArgumentParser, *, limit: bool = True) -> None:
        sub.add_argument("--target", metavar="NAME", help="only this target")
        sub.add_argument("--since", type=parse_when, metavar="WHEN", help="ISO time or age (7d)")
        sub.add_argument("--until", type=parse_when, metavar="WHEN", help="ISO time or age")
        if limit:
            sub.add_argument(
                "--limit",
                type=_non_negative,
                default=100,
                metavar="N",
                help="newest N records (default 100; 0 = all)",
            )
            sub.add_argument("--json", action="store_true", help="JSON output")

    sub = commands.add_parser("runs", help="the audit runs")
    record_options(sub)
    sub.set_defaults(handler=cmd_runs)
    sub = commands.add_parser("history", help="the change history")
    record_options(sub)
    sub.set_defaults(handler=cmd_history)
    sub = commands.add_parser("alerts", help="the alerts raised")
    record_options(sub)
    sub.add_argument(
        "--undelivered",
        action="store_true",
        help="the deliveries to sinks not done yet: pending (retried) and dead (refused)",
    )
    sub.set_defaults(handler=cmd_alerts)

    sub = commands.add_parser("show", help="the scripts and settings recorded at a run")
    sub.add_argument("--target", metavar="NAME", help="the target's last complete run")
    sub.add_argument("--run", type=_non_negative, metavar="ID", help="a complete run")
    sub.add_argument("--json", action="store_true", help="JSON output")
    sub.set_defaults(handler=cmd_show)

    sub = commands.add_parser("diff", help="the changes between two complete runs")
    sub.add_argument("run_a", type=_non_negative, metavar="A", help="the earlier run id")
    sub.add_argument("run_b", type=_non_negative, metavar="B", help="the later run id")
    sub.add_argument("--json", action="store_true", help="JSON output")
    sub.set_defaults(handler=cmd_diff)

    sub = commands.add_parser("verify", help="check the history's hash chain")
    sub.set_defaults(handler=cmd_verify)

    sub = commands.add_parser("export", help="the change history as compliance evidence")
    sub.add_argument(
        "--format",
        choices=("json", "csv", "html"),
        default="json",
        help="json (default), csv, or html: one self-contained, printable report",
    )
    sub.add_argument("--output", "-o", metavar="FILE", help="write here instead of stdout")
    record_options(sub, limit=False)
    sub.set_defaults(handler=cmd_export)

    return parser


def _exit_code(error: AuditorError) -> int:
    if isinstance(error, ConfigError | QueryError):
        return EXIT_USAGE
    return EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except ConfigError as exc:
        if args.verbose:
            traceback.print_exc()
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_USAGE
    except AuditorError as exc:
        if args.verbose:
            traceback.print_exc()
        prefix = "error" if not isinstance(exc, SourceError) else "pbx"
        print(f"{prefix}: {exc}", file=sys.stderr)
        return _exit_code(exc)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
