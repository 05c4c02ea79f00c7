"""The commands that prove and hand over the record: ``verify`` (the history's hash chain)
and ``export`` (the change history as compliance evidence: JSON, CSV or one HTML file).

It only reads the store: it never audits and never talks to a PBX. The HTML report
(``auditor.report``, which needs the store) is imported only when ``export`` runs.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, TextIO

from auditor.cli.common import EXIT_FAILED, EXIT_OK, read
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


def cmd_export(args: argparse.Namespace) -> int:
    if args.output:
        with open(args.output, "w", newline="", encoding="utf-8") as out:
            done = read(args, lambda store: _export(store, args, out))
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
