"""The commands that prove and hand over the record: ``verify`` (the history's hash chain)
and ``export`` (the change history as compliance evidence: JSON, CSV or one HTML file).

It only reads the store: it never audits and never talks to a PBX. The HTML report
(``auditor.report``, which needs the store) is imported only when ``export`` runs.
"""

from __future__ import annotations

import argparse
import csv
import errno
import json
import os
import sys
import tempfile
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from auditor.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, read
from auditor.cli.record import record_options
from auditor.model import iso, utcnow

if TYPE_CHECKING:
    from auditor.cli.common import Commands
    from auditor.store import ChangeRecord, Store


def cmd_verify(args: argparse.Namespace) -> int:
    result = read(args, lambda store: store.reads.verify())
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
    # Added after the first release of the format: new columns go at the end, so that
    # scripts reading columns by position keep working.
    "baseline",
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


@dataclass
class _Exported:
    head: str
    length: int
    count: int = 0
    # target -> records of its baseline (its first complete run) among those exported
    baselines: Counter[str] = field(default_factory=Counter)

    def add(self, record: ChangeRecord) -> None:
        self.count += 1
        if record.baseline:
            self.baselines[record.target] += 1

    def baseline_line(self) -> str:
        """The summary's line on baselines, apart so that 'added' means a change."""
        total = self.baselines.total()
        if not total:
            return "export: no baseline records among them"
        each = ", ".join(f"{target} {n}" for target, n in sorted(self.baselines.items()))
        return (
            f"export: {total} of them baseline records (a target's first complete run, "
            f"everything it found recorded as added): {each}"
        )


async def _export(store: Store, args: argparse.Namespace, out: TextIO) -> _Exported:
    from auditor.report import HtmlReport

    head, length = await store.reads.chain_head()
    exported = _Exported(head, length)
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
                exported.add(record)
            report.write(out)
        return exported
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
    async for record in _each_change(store, filters, length):
        data = record.as_json()
        if writer is not None:
            for key in ("before", "after", "fields"):
                data[key] = json.dumps(data[key], ensure_ascii=False, sort_keys=True)
            data["baseline"] = "true" if record.baseline else "false"
            writer.writerow(data)
        else:
            out.write((",\n" if exported.count else "") + json.dumps(data, ensure_ascii=False))
        exported.add(record)
    if writer is None:
        out.write("\n]}\n")
    return exported


class _Unwritable(Exception):
    """The ``-o`` path cannot be written at all (no such directory, a directory, no right)."""

    def __init__(self, error: OSError) -> None:
        super().__init__(error.strerror or str(error))


def _special(path: str) -> bool:
    """A path that exists and is neither a regular file nor a directory (a device, a FIFO)."""
    target = Path(path)
    return target.exists() and not target.is_file() and not target.is_dir()


@contextmanager
def _output_file(path: str) -> Iterator[TextIO]:
    """The file ``export -o`` writes: made under a temporary name beside it and renamed over
    it once complete, so that an export that fails half-way (a full disk) leaves no partial
    evidence under the name asked for. A path that is not a regular file (``/dev/stdout``,
    a FIFO) is written directly."""
    target = Path(path)
    if _special(path):
        try:
            out = open(target, "w", newline="", encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            raise _Unwritable(exc) from exc
        with out:
            yield out
        return
    if target.is_dir():
        raise _Unwritable(IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR)))
    try:
        fd, temporary = tempfile.mkstemp(
            dir=target.parent, prefix=f".{target.name}.", suffix=".partial"
        )
    except OSError as exc:
        raise _Unwritable(exc) from exc
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        # mkstemp makes the file 0600; give it the mode an ordinary new file would have.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, target)
    except BaseException:
        with suppress(OSError):
            os.unlink(temporary)
        raise


def cmd_export(args: argparse.Namespace) -> int:
    if args.output:
        try:
            with _output_file(args.output) as out:
                done = read(args, lambda store: _export(store, args, out))
        except _Unwritable as exc:
            print(f"error: export: cannot write {args.output}: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except OSError as exc:
            reason = exc.strerror or str(exc)
            # A regular file is replaced only once complete (see _output_file).
            kept = f"; {args.output} is unchanged" if not _special(args.output) else ""
            print(f"error: export: writing {args.output} failed: {reason}{kept}", file=sys.stderr)
            return EXIT_FAILED
    else:
        done = read(args, lambda store: _export(store, args, sys.stdout))
    print(
        f"export: {done.count} change record(s); chain head {done.head} "
        f"({done.length} records in all)",
        file=sys.stderr,
    )
    print(done.baseline_line(), file=sys.stderr)
    return EXIT_OK


def add_verify(commands: Commands) -> None:
    sub = commands.add_parser("verify", help="check the history's hash chain")
    sub.set_defaults(handler=cmd_verify)


def add_export(commands: Commands) -> None:
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
