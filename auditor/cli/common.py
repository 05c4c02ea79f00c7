"""What the command families share: exit codes, the usage-error parser, loading the
settings for a command, opening the store, checking ``--target`` names, and printing: JSON,
a table on a terminal, one tab-separated line per record into a pipe or a file.

It runs no command and registers none. The parser imports this module for every command,
``--help`` and ``--version`` included: so at module level it imports the standard library
and ``auditor.errors`` only; the settings (pydantic), the logs (structlog), rich, the store
(SQLAlchemy) are imported by the functions that use them.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn, TextIO, TypeVar

from auditor.errors import ConfigError, QueryError
from auditor.model import visible

if TYPE_CHECKING:
    from rich.text import Text

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


def _table_cell(value: Any) -> Text:
    from rich.text import Text

    # Text, not a string: rich would read "[link=...]" in a PBX's string as its markup, and
    # a terminal would act on control characters (colours, titles); both are shown inert.
    return Text("" if value is None else visible(str(value)))


def print_items_table(title: str, items: Sequence[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    columns = _columns(items)
    for column in columns:
        table.add_column(_table_cell(column), overflow="fold")
    for item in items:
        table.add_row(*(_table_cell(item.get(c)) for c in columns))
    Console().print(table)


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(_table_cell(v) for v in row))
    Console().print(table)


def terminal() -> bool:
    """Whether stdout is a terminal: a table for a person there, else lines for a program."""
    return sys.stdout.isatty()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    # One record per line, one field per tab, whatever a value holds; and nothing a
    # terminal would act on, should the lines end up on one (| less -R, | cat).
    return visible(text.replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r"))


def print_lines(rows: Sequence[Sequence[Any]]) -> None:
    """One line per row, its values separated by tabs, never wrapped or cut: for a pipe.

    No header, so every line is a record. ``None`` is empty; a string is written as it
    is (tabs and line breaks in it as ``\\t``, ``\\n``, ``\\r``, other characters that
    are not printable as ``\\u001b``-style escapes); other values as JSON.
    """
    stream = out()
    for row in rows:
        stream.write("\t".join(_cell(v) for v in row) + "\n")
    stream.flush()


def note_cut(command: str, shown: int, total: int) -> None:
    """Say on stderr that ``--limit`` left records out (stdout stays the records alone)."""
    if total > shown:
        print(f"{command}: newest {shown} of {total} (--limit 0 for all)", file=sys.stderr)


def check_targets(names: Sequence[str], known: Sequence[str]) -> None:
    """QueryError for the first of ``names`` that is not ``known``, listing the known ones."""
    for name in names:
        if name in known:
            continue
        shown = sorted(set(known))
        listed = ", ".join(shown[:20]) + (f" and {len(shown) - 20} more" if len(shown) > 20 else "")
        close = difflib.get_close_matches(name, shown, n=1, cutoff=0.75)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise QueryError(f"--target: no target named {name!r} (known: {listed or 'none'}){hint}")


def _target_names(args: argparse.Namespace) -> list[str]:
    value = getattr(args, "target", None)
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


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


def read(
    args: argparse.Namespace, work: Callable[[Store], Awaitable[T]], *, loaded: Loaded | None = None
) -> T:
    """Load the settings, open (and migrate) the store, check ``args.target`` (when the
    command has one) against the configured and the recorded targets, run ``work`` on the
    store, close it. ``loaded``: settings the command loaded already."""
    import asyncio

    settings = loaded if loaded is not None else load(args)

    async def run() -> T:
        store = await open_store(settings)
        try:
            names = _target_names(args)
            if names:
                # A target that left the configuration keeps its record: both are known.
                recorded = [t.name for t in await store.reads.targets()]
                check_targets(names, [t.name for t in settings.settings.targets] + recorded)
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(run())
