"""The parser and the dispatch: the global options, the subcommands each family module
registers (in the order ``--help`` lists them), and the mapping of errors to exit codes.

It holds no command itself. It imports only the family modules, which import nothing heavy
at module level (aiohttp, SQLAlchemy, Alembic, Apprise, the simulator): so ``--help``,
``--version`` and ``check-config`` answer at once.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from auditor import __version__
from auditor.cli import audit, evidence, live, record, service, sim, status
from auditor.cli.common import EXIT_FAILED, EXIT_USAGE, Parser
from auditor.errors import AuditorError, ConfigError, QueryError, SourceError

if TYPE_CHECKING:
    from auditor.cli.common import Commands

Handler = Callable[[argparse.Namespace], int]

# What a shell reports for a command killed by SIGPIPE (128 + 13).
EXIT_BROKEN_PIPE = 141

# Each adds one command to the parser; this order is the order of `3cx-auditor --help`.
COMMANDS: tuple[Callable[[Commands], None], ...] = (
    service.add_check_config,
    live.add_scripts,
    sim.add_simulate,
    sim.add_demo,
    service.add_db,
    audit.add_once,
    service.add_run,
    status.add_status,
    record.add_runs,
    record.add_history,
    record.add_alerts,
    record.add_show,
    record.add_diff,
    evidence.add_verify,
    evidence.add_export,
)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
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
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    commands.required = True
    for add in COMMANDS:
        add(commands)
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
    except BrokenPipeError:
        # The reader of stdout went away (`... | head`): stop quietly, as a command killed by
        # SIGPIPE does, and keep Python from complaining when it flushes stdout at exit.
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except OSError as exc:
        # A file or socket the command was pointed at (a path, a port) refused.
        if args.verbose:
            traceback.print_exc()
        print(f"error: {args.command}: {_os_error(exc)}", file=sys.stderr)
        return EXIT_FAILED
    except Exception as exc:
        # A bug: one line all the same; -v shows where.
        if args.verbose:
            traceback.print_exc()
        hint = "" if args.verbose else "; -v shows the traceback"
        print(
            f"error: {args.command}: unexpected {type(exc).__name__}: {exc}{hint}",
            file=sys.stderr,
        )
        return EXIT_FAILED


def _os_error(exc: OSError) -> str:
    """``strerror: filename`` of an OSError, without its ``[Errno N]`` prefix."""
    reason = exc.strerror or str(exc)
    if exc.filename is not None:
        return f"{exc.filename}: {reason}"
    return reason


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
