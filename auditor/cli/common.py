"""What the command families share: exit codes, the usage-error parser, loading the
settings for a command, opening the store, and printing (JSON, tables).

It runs no command and registers none. The parser imports this module for every command,
``--help`` and ``--version`` included: so at module level it imports the standard library
and ``auditor.errors`` only; the settings (pydantic), the logs (structlog), rich, the store
(SQLAlchemy) are imported by the functions that use them.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn, TextIO, TypeVar

from auditor.errors import ConfigError

if TYPE_CHECKING:
    from auditor.config import Loaded, SecretKind
    from auditor.store import Store

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

T = TypeVar("T")


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


if TYPE_CHECKING:
    # What ``add_subparsers`` returns: each family module adds its commands to it.
    Commands = argparse._SubParsersAction[Parser]


def non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer (got {text!r})") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative (got {value})")
    return value


def out(stream: TextIO | None = None) -> TextIO:
    return stream if stream is not None else sys.stdout


def print_json(value: Any, *, lines: bool = False) -> None:
    """JSON on stdout: one document, or (``lines``) one compact document per line."""
    stream = out()
    if lines:
        for item in value:
            stream.write(json.dumps(item, ensure_ascii=False, separators=(",", ":")) + "\n")
    else:
        stream.write(json.dumps(value, ensure_ascii=False, indent=2) + "\n")
    stream.flush()


def _columns(items: Sequence[dict[str, Any]]) -> list[str]:
    columns: dict[str, None] = {"Filename": None}
    for item in items:
        for key in item:
            columns.setdefault(key, None)
    return list(columns)


def print_items_table(title: str, items: Sequence[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    columns = _columns(items)
    for column in columns:
        table.add_column(column, overflow="fold")
    for item in items:
        table.add_row(*("" if item.get(c) is None else str(item.get(c)) for c in columns))
    Console().print(table)


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    Console().print(table)


# The secrets a command reads, declared where it is added to the parser:
# ``sub.set_defaults(handler=..., secrets=PBX_SECRETS)``. A command that declares nothing
# reads none: reading the record needs no secret, and must work in a shell that cannot
# read them (the service's secrets are often systemd credentials).
NO_SECRETS: frozenset[SecretKind] = frozenset()
PBX_SECRETS: frozenset[SecretKind] = frozenset({"targets"})
# auditor.config.SECRET_KINDS, spelled out: importing the settings here would load pydantic
# for --version and --help (tests/test_cli_startup.py keeps the two equal).
ALL_SECRETS: frozenset[SecretKind] = frozenset({"targets", "webhooks"})


def secrets_of(args: argparse.Namespace) -> frozenset[SecretKind]:
    """The secrets the command of ``args`` declared it reads (none, unless it says so)."""
    declared: frozenset[SecretKind] = getattr(args, "secrets", NO_SECRETS)
    return declared


def load(
    args: argparse.Namespace, *, require_targets: bool = False, daemon: bool = False
) -> Loaded:
    """Settings for a command, with the secrets it declared. ``[log] level`` is the
    daemon's; a one-shot command logs only warnings and errors (its results are its
    output), ``-v`` everything."""
    from auditor.config import load_settings, overrides, with_variables
    from auditor.logs import configure as configure_logs

    loaded = load_settings(args.config, secrets=secrets_of(args))
    for warning in loaded.warnings:
        print(warning, file=sys.stderr)
    level = loaded.settings.log.level if daemon else "warning"
    configure_logs("debug" if args.verbose else level, loaded.settings.log.format)
    if require_targets and not loaded.settings.targets:
        if ("targets",) in overrides():
            raise ConfigError([with_variables("config: targets: the list is empty")])
        where = loaded.path or "the configuration"
        raise ConfigError([f"config: targets: no [[targets]] in {where}"])
    return loaded


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


def read(args: argparse.Namespace, work: Callable[[Store], Awaitable[T]]) -> T:
    """Load the settings, open (and migrate) the store, run ``work`` on it, close it."""
    import asyncio

    loaded = load(args)

    async def run() -> T:
        store = await open_store(loaded)
        try:
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(run())
