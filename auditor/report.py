"""The HTML form of ``export``: compliance evidence an auditor can open and print.

One self-contained file: the CSS is inline, there is no script, no font, image or link
that loads anything (the only links are fragments within the page), and every value from
the record is HTML-escaped. Closed ``<details>`` (the before/after JSON of each change)
are shown open in print by the ``@media print`` rules.

The skeleton is ``templates/report.html`` (a :class:`string.Template`). The summary comes
before the changes but is known only after the last one, so changes are rendered as they
arrive into a temporary file, and :meth:`HtmlReport.write` assembles the document: memory
holds one batch of records, not the report. A target's baseline (the records of its first
complete run, all ``added``) is counted apart from the changes and marked on each record.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections import Counter
from collections.abc import Mapping
from datetime import datetime
from html import escape
from importlib.resources import files
from string import Template
from types import TracebackType
from typing import Any, Final, Self, TextIO

from auditor import __version__
from auditor.model import FieldChange, iso
from auditor.store import ChangeRecord

TEMPLATE: Final = "templates/report.html"
_CHANGES_SLOT: Final = "$changes"
KINDS: Final = ("added", "removed", "changed")
# The summary's column for the baseline records, counted apart from the 'added' ones.
BASELINE: Final = "baseline"


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _json_text(value: Any, *, indent: int | None = None) -> str:
    if indent is None:
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return json.dumps(value, ensure_ascii=False, sort_keys=True, indent=indent)


def _side(value: Any, missing: bool) -> str:
    if missing:
        return '<span class="absent">(absent)</span>'
    return f"<code>{_e(_json_text(value))}</code>"


def _fields_table(fields: tuple[FieldChange, ...]) -> str:
    if not fields:
        return ""
    rows = "".join(
        f"<tr><td><code>{_e(f.field)}</code></td><td>{_side(f.old, f.missing == 'old')}</td>"
        f"<td>{_side(f.new, f.missing == 'new')}</td></tr>"
        for f in fields
    )
    return (
        '<table class="fields"><thead><tr><th class="field">field</th><th>old</th>'
        f"<th>new</th></tr></thead><tbody>{rows}</tbody></table>\n"
    )


def _document(value: Mapping[str, Any] | None) -> str:
    if value is None:
        return '<pre class="absent">(none)</pre>'
    return f"<pre>{_e(_json_text(value, indent=2))}</pre>"


def render_change(record: ChangeRecord) -> str:
    """One change as an HTML ``<section id="change-<id>">``."""
    kind = _e(record.kind)
    mark = ' <span class="baseline">(baseline)</span>' if record.baseline else ""
    return (
        f'<section class="change" id="change-{record.id}">\n'
        f'<h3>#{record.id} <span class="kind-{kind}">{kind}</span>{mark} '
        f"{_e(record.target)} / {_e(record.collection)} / <code>{_e(record.key)}</code></h3>\n"
        '<table class="facts">'
        f"<tr><th>Time</th><td>{_e(iso(record.at))}</td><th>Run</th><td>{record.run_id}</td></tr>"
        f'<tr><th>Hash</th><td class="hash" colspan="3">{_e(record.hash)}</td></tr>'
        '<tr><th>Previous hash</th><td class="hash" colspan="3">'
        f"{_e(record.prev_hash)}</td></tr>"
        "</table>\n"
        f"{_fields_table(record.fields)}"
        "<details><summary>Before and after</summary>\n"
        '<div class="sides"><div><h4>Before</h4>'
        f"{_document(record.before)}</div><div><h4>After</h4>{_document(record.after)}</div>"
        "</div></details>\n"
        "</section>\n"
    )


def _summary(counts: Counter[tuple[str, str]], baselines: Mapping[str, tuple[int, int]]) -> str:
    """The counts by target and kind; ``baselines`` (target -> run, records) are counted in
    a column and a line of their own, not as ``added``."""
    if not counts:
        return "<p>No change records match the filters.</p>"
    targets = sorted({target for target, _kind in counts})
    columns = (BASELINE, *KINDS)
    head = "".join(f'<th class="num">{k}</th>' for k in columns)
    rows = []
    for target in targets:
        cells = "".join(f'<td class="num">{counts[(target, k)]}</td>' for k in columns)
        total = sum(counts[(target, k)] for k in columns)
        rows.append(f'<tr><td>{_e(target)}</td>{cells}<td class="num">{total}</td></tr>')
    totals = "".join(
        f'<td class="num">{sum(counts[(t, k)] for t in targets)}</td>' for k in columns
    )
    table = (
        f'<table class="counts"><thead><tr><th>target</th>{head}<th class="num">total</th>'
        f"</tr></thead><tbody>{''.join(rows)}</tbody><tfoot><tr><th>all</th>{totals}"
        f'<td class="num">{counts.total()}</td></tr></tfoot></table>'
    )
    return table + f'\n<p class="note" id="baselines">{_baselines_text(baselines)}</p>'


def _baselines_text(baselines: Mapping[str, tuple[int, int]]) -> str:
    if not baselines:
        return "Baseline: none in this report; every record is a change found by a later run."
    each = "; ".join(
        f"{_e(target)}: {records} record{'s' if records != 1 else ''} of run {run}"
        for target, (run, records) in sorted(baselines.items())
    )
    return (
        f"Baseline: {each}. The first complete run of a target records every script and the "
        "settings it found as <em>added</em>; these records are counted apart, and the other "
        "columns hold the changes found by the runs after it."
    )


def _note(length: int) -> str:
    if length == 0:
        return "The history is empty: the chain head is the genesis value."
    return (
        "Every change record carries the hash of the record before it (<code>prev_hash</code>) "
        "and its own (<code>hash</code>), computed over its content. The chain head is the "
        f"hash of record {length}, the newest when this report was made; this report holds "
        "no record beyond it. To show later that none of records 1 to "
        f"{length} has been altered or removed since: <code>3cx-auditor verify</code> "
        f"recomputes the whole chain, and record {length} must still have the hash above "
        "(<code>3cx-auditor export --format json</code> lists the hash of every record)."
    )


class HtmlReport:
    """Collects change records (:meth:`add`, in id order) and writes the report (:meth:`write`).

    ``filters`` are shown as given (``None`` as "any"); use it as a context manager, or
    :meth:`close` it, to remove the temporary file.
    """

    def __init__(
        self,
        *,
        head: str,
        length: int,
        database: str,
        filters: Mapping[str, datetime | str | None],
        generated_at: datetime,
        title: str = "3cx-auditor: change history",
    ) -> None:
        self.head = head
        self.length = length
        self.count = 0
        self._first: int | None = None
        self._last: int | None = None
        self._counts: Counter[tuple[str, str]] = Counter()
        # target -> (its baseline run, the records of it in this report)
        self._baselines: dict[str, tuple[int, int]] = {}
        self._values = {
            "title": _e(title),
            "version": _e(__version__),
            "generated": _e(iso(generated_at)),
            "database": _e(database),
            **{name: _e(_filter_text(filters.get(name))) for name in ("target", "since", "until")},
        }
        # Owned by the report, closed by close() (or leaving the with block).
        self._body = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115

    def add(self, record: ChangeRecord) -> None:
        self._body.write(render_change(record))
        if record.baseline:
            self._counts[(record.target, BASELINE)] += 1
            run, records = self._baselines.get(record.target, (record.run_id, 0))
            self._baselines[record.target] = (run, records + 1)
        else:
            self._counts[(record.target, record.kind)] += 1
        self.count += 1
        if self._first is None:
            self._first = record.id
        self._last = record.id

    def write(self, out: TextIO) -> None:
        """The whole document to ``out``."""
        text = files("auditor").joinpath(TEMPLATE).read_text(encoding="utf-8")
        before, slot, after = text.partition(_CHANGES_SLOT)
        if not slot:
            raise RuntimeError(f"auditor/{TEMPLATE}: has no {_CHANGES_SLOT} slot")
        span = f" (ids {self._first} to {self._last})" if self._first is not None else ""
        values = {
            **self._values,
            "head": _e(self.head),
            "length": str(self.length),
            "count": str(self.count),
            "span": _e(span),
            "summary": _summary(self._counts, self._baselines),
            "note": _note(self.length),
        }
        out.write(Template(before).substitute(values))
        if not self.count:
            out.write("<p>None.</p>\n")
        self._body.seek(0)
        shutil.copyfileobj(self._body, out)
        out.write(Template(after).substitute(values))

    def close(self) -> None:
        self._body.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _filter_text(value: datetime | str | None) -> str:
    if value is None:
        return "any"
    return iso(value) if isinstance(value, datetime) else value
