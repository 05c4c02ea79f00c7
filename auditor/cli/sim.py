"""The commands that bring their own PBXs: ``simulate`` (serve the built-in XAPI simulator)
and ``demo`` (the simulator and the daemon on a temporary SQLite).

The simulator and the demo flow (and with them aiohttp), the logs and rich are imported only
inside the commands, never at module level. It reads no configuration file.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from auditor.cli.common import EXIT_FAILED, EXIT_OK, non_negative
from auditor.errors import QueryError
from auditor.model import iso

if TYPE_CHECKING:
    from auditor.cli.common import Commands
    from auditor.model import Alert


def _pbx_spec(text: str) -> tuple[str, int]:
    name, _, count = text.partition(":")
    try:
        scripts = int(count) if count else 20
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be NAME or NAME:SCRIPTS (got {text!r})") from None
    if scripts < 0:
        raise argparse.ArgumentTypeError(f"SCRIPTS must not be negative (got {text!r})")
    return name, scripts


def _port(text: str) -> int:
    port = non_negative(text)
    if port > 65535:
        raise argparse.ArgumentTypeError(f"must be a port from 0 to 65535 (got {port})")
    return port


def cmd_simulate(args: argparse.Namespace) -> int:
    from auditor.simulator import Pbx, Simulator, run

    specs = args.pbx or [("pbx", 20)]
    secret = os.environ.get(args.secret_env) if args.secret_env else None
    try:
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
    except ValueError as exc:  # a name the simulator cannot serve, twice the same name
        raise QueryError(f"simulate: --pbx: {exc}") from None
    listening = False

    def ready(base: str) -> None:
        nonlocal listening
        listening = True
        print(f"simulator: serving {len(specs)} PBX(s) at {base}", file=sys.stderr)
        for name, count in specs:
            print(f"  {name}: {base}/{name} ({count} scripts)", file=sys.stderr)
        where = f"${args.secret_env}" if secret else "the word 'secret'"
        print(
            f"  client_id {args.client_id!r}; the client secret is {where}; "
            f"control API at {base}/_sim",
            file=sys.stderr,
        )

    try:
        run(sim, args.host, args.port, ready=ready)
    except OSError as exc:
        if listening:
            raise
        reason = exc.strerror or str(exc)
        # asyncio's bind error repeats the address before the reason: keep the reason.
        reason = reason.rsplit("): ", 1)[-1]
        raise QueryError(f"simulate: cannot listen on {args.host}:{args.port}: {reason}") from None
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    import asyncio

    from rich.console import Console

    from auditor.demo import run_demo
    from auditor.logs import configure as configure_logs

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
        try:
            workdir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise QueryError(
                f"demo: --keep {args.keep}: cannot make the directory: {reason}"
            ) from None
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


def add_simulate(commands: Commands) -> None:
    sub = commands.add_parser("simulate", help="serve the built-in 3CX XAPI simulator")
    sub.add_argument("--host", default="127.0.0.1", help="address to listen on")
    sub.add_argument(
        "--port", type=_port, default=8080, help="port (default 8080; 0 picks a free one)"
    )
    sub.add_argument(
        "--pbx",
        action="append",
        type=_pbx_spec,
        metavar="NAME[:SCRIPTS]",
        help="a simulated PBX (repeatable; default pbx:20)",
    )
    sub.add_argument("--states", action="store_true", help="items carry a State field")
    sub.add_argument("--seed", type=non_negative, default=0, help="data seed")
    sub.add_argument("--client-id", default="auditor", help="the accepted client id")
    sub.add_argument(
        "--secret-env",
        metavar="VAR",
        help="take the accepted client secret from this environment variable "
        "(default: the word 'secret')",
    )
    sub.set_defaults(handler=cmd_simulate)


def add_demo(commands: Commands) -> None:
    sub = commands.add_parser(
        "demo", help="simulator + auditor on a temporary SQLite: the whole flow in one command"
    )
    sub.add_argument(
        "--every", type=float, default=8.0, metavar="SECONDS", help="audit interval (8)"
    )
    sub.add_argument("--keep", metavar="DIR", help="keep the database and config in DIR")
    sub.set_defaults(handler=cmd_demo)
