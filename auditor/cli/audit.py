"""The command that audits now and records it: ``once``, and ``audit_targets`` behind it.

The audit, the store, the sinks, the settings, the logs and the progress bar are imported
inside the functions that use them, never at module level. It never starts the daemon.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from auditor.cli.common import ALL_SECRETS, EXIT_FAILED, EXIT_OK, EXIT_USAGE, load, open_store
from auditor.errors import ConfigError

if TYPE_CHECKING:
    from auditor.alerts.delivery import DeliveryReport
    from auditor.audit import AuditResult
    from auditor.cli.common import Commands
    from auditor.config import Loaded
    from auditor.model import Alert

# `once` gives its delivery pass this long to start deliveries (each one is bounded by its
# sink's timeout); the rest waits in the outbox.
ONCE_DELIVERY_BUDGET_S = 10.0


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
            from rich.console import Console
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
    import asyncio

    from auditor.config import ensure_open_files
    from auditor.errors import InUseError
    from auditor.logs import alert_printer
    from auditor.store.lock import SqliteLock

    loaded = load(args, require_targets=True)
    ensure_open_files(loaded.settings.audit.max_concurrent)
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


def add_once(commands: Commands) -> None:
    sub = commands.add_parser(
        "once",
        help="audit now: one JSON line per alert on stdout, a summary on stderr",
    )
    sub.add_argument(
        "--target", action="append", metavar="NAME", help="only this target (repeatable)"
    )
    sub.set_defaults(handler=cmd_once, secrets=ALL_SECRETS)
