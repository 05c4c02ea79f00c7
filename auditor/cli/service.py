"""The commands that look after the installation: ``check-config``, ``db upgrade`` and
``run`` (the daemon).

The daemon (and with it APScheduler, aiohttp and the sinks) and the store (SQLAlchemy,
Alembic) are imported only inside the commands that use them, never at module level:
``check-config`` must answer without them.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from auditor.cli.common import (
    ALL_SECRETS,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    NO_SECRETS,
    Parser,
    load,
    open_store,
)

if TYPE_CHECKING:
    from auditor.cli.common import Commands


def cmd_check_config(args: argparse.Namespace) -> int:
    # The secrets are read and checked, as `run` will: a configuration whose secret cannot
    # be read is not ready. --no-secrets checks all the rest where they cannot be read (an
    # admin shell beside a service whose secrets are systemd credentials).
    from auditor.config import load_settings

    kinds = NO_SECRETS if args.no_secrets else ALL_SECRETS
    loaded = load_settings(args.config, require_file=True, secrets=kinds)
    for warning in loaded.warnings:
        print(warning, file=sys.stderr)
    count = len(loaded.settings.targets)
    unread = "; secrets not read" if args.no_secrets else ""
    print(f"config: ok: {loaded.path} ({count} target{'s' if count != 1 else ''}{unread})")
    if not args.connect:
        return EXIT_OK
    import asyncio

    from auditor.cli.connect import connect_all
    from auditor.logs import configure as configure_logs

    configure_logs("debug" if args.verbose else "warning", loaded.settings.log.format)
    lines = asyncio.run(connect_all(loaded.settings))
    for line in lines:
        print(line.text)
    return EXIT_OK if all(line.ok for line in lines) else EXIT_FAILED


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    import asyncio

    loaded = load(args)

    async def upgrade() -> str:
        store = await open_store(loaded, migrate=False)
        try:
            return await store.upgrade()
        finally:
            await store.close()

    revision = asyncio.run(upgrade())
    print(f"database: at revision {revision}", file=sys.stderr)
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    import asyncio

    from auditor.config import MAX_CONCURRENT_LIMIT, ensure_open_files
    from auditor.errors import InUseError
    from auditor.logs import alert_printer
    from auditor.service import run_service

    loaded = load(args, daemon=True)
    # Enough for any audit.max_concurrent: a reload (SIGHUP) may raise it.
    ensure_open_files(MAX_CONCURRENT_LIMIT)
    try:
        asyncio.run(run_service(loaded, on_alert=alert_printer()))
    except InUseError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


def add_check_config(commands: Commands) -> None:
    sub = commands.add_parser(
        "check-config",
        help="validate the configuration (--connect: and reach every PBX and the database)",
        description="Validate the configuration: every key, the secrets (as the daemon reads "
        "them), each target's filter and search. Exit 0 valid, 2 invalid; with --connect, "
        "1 when a PBX or the database cannot be reached.",
    )
    mode = sub.add_mutually_exclusive_group()
    mode.add_argument(
        "--no-secrets",
        action="store_true",
        help="do not read the secrets (for a shell that cannot read the service's credentials)",
    )
    mode.add_argument(
        "--connect",
        action="store_true",
        help="also log in to each PBX (one request for one script, with the target's filter) "
        "and open the database, one line each; a running daemon may log in again after it",
    )
    sub.set_defaults(handler=cmd_check_config)


def add_db(commands: Commands) -> None:
    sub = commands.add_parser("db", help="database maintenance")
    db = sub.add_subparsers(dest="db_command", metavar="ACTION", parser_class=Parser)
    db.required = True
    db.add_parser("upgrade", help="migrate the database to the newest schema").set_defaults(
        handler=cmd_db_upgrade
    )


def add_run(commands: Commands) -> None:
    sub = commands.add_parser(
        "run",
        help="the daemon: audit on schedule until SIGTERM (health and metrics over HTTP)",
    )
    sub.set_defaults(handler=cmd_run, secrets=ALL_SECRETS)
