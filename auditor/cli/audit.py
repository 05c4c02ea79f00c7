"""The command that audits now and records it: ``once``, and ``audit_targets`` behind it.

The audit, the store, the sinks, the settings, the logs and the progress bar are imported
inside the functions that use them, never at module level. It never starts the daemon.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from auditor.cli.common import (
    ALL_SECRETS,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    check_targets,
    load,
    open_store,
)
from auditor.errors import ConfigError
from auditor.model import SEVERITIES

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
    check_targets(args.target or (), [t.name for t in loaded.settings.targets])
    reports: list[DeliveryReport] = []
    printed: list[Alert] = []
    printer = alert_printer()

    def on_alert(alert: Alert) -> None:
        printer(alert)
        printed.append(alert)

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
                on_alert=on_alert,
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
    failed = not all(r.ok for r in results)
    if args.fail_on is not None:
        raised = _raised(printed, args.fail_on)
        if raised:
            print(
                f"once: {raised} alert(s) of severity {args.fail_on} or higher raised "
                f"(--fail-on {args.fail_on})",
                file=sys.stderr,
            )
            failed = True
    return EXIT_FAILED if failed else EXIT_OK


def _raised(alerts: Sequence[Alert], severity: str) -> int:
    """How many of ``alerts`` fired (a resolution is good news) at ``severity`` or above."""
    wanted = SEVERITIES[SEVERITIES.index(severity) :]
    return sum(1 for a in alerts if a.status == "firing" and a.severity in wanted)


def add_once(commands: Commands) -> None:
    sub = commands.add_parser(
        "once",
        help="audit now: one JSON line per alert on stdout, a summary on stderr",
        description="Audit now. Exit 0 when every target's run completed, 1 when one failed "
        "or was incomplete, or (with --fail-on) when the run raised an alert of that severity "
        "or higher: either reason is 1, and the summary on stderr says which.",
    )
    sub.add_argument(
        "--target", action="append", metavar="NAME", help="only this target (repeatable)"
    )
    sub.add_argument(
        "--fail-on",
        choices=SEVERITIES,
        metavar="SEVERITY",
        help="exit 1 also when this run raised an alert of this severity or higher (info, "
        "warning, critical); a resolution raises nothing, and an alert still firing from an "
        "earlier run counts only when this run repeats it (see: status)",
    )
    sub.set_defaults(handler=cmd_once, secrets=ALL_SECRETS)
