"""``export --format html``: one self-contained report, checked three ways.

The record is made by real audits of the simulator into a SQLite file (one script is named
with markup, an ampersand and a control character); the export runs as a real
``python -m auditor`` subprocess. Then:

- an HTML parser finds no reference to anything outside the file, every change record with
  its fields, before/after and hashes, the summary counts and the chain head, all read back
  from the store;
- headless Chromium opens the file with a network log: no request is made on the page's
  behalf (Chromium's own service traffic, which happens even for ``about:blank``, is told
  apart by its initiator), and the DOM it built holds the chain head. A deliberately leaky
  page run the same way shows that such requests are seen. Without ``/usr/bin/chromium`` the
  test skips, or fails when ``AUDITOR_REQUIRE_CHROMIUM=1`` (CI sets it).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest

from auditor.model import iso
from auditor.store import ChangeRecord, Store
from tests.recording import Plan, record_in_thread

CHROMIUM = Path("/usr/bin/chromium")
ODD_NAME = '<img src="x" onerror="alert(1)"> & \x01 odd.sh'
# Elements that load or run something, or change where relative URLs point.
LOADING_TAGS = {"script", "link", "img", "iframe", "frame", "object", "embed", "base", "svg"}
LOADING_TAGS |= {"video", "audio", "source", "track", "picture", "input", "form", "portal"}
URL_ATTRS = {"src", "href", "srcset", "action", "formaction", "poster", "data", "background"}
URL_ATTRS |= {"ping", "cite", "manifest", "xlink:href", "longdesc", "lowsrc", "archive"}
CSS_URL = re.compile(r"url\(\s*(['\"]?)(.*?)\1\s*\)", re.IGNORECASE | re.DOTALL)
COMMAND_TIMEOUT = 120.0


@dataclass(frozen=True)
class Record:
    folder: Path
    config: Path
    changes: list[ChangeRecord]
    head: str
    length: int


async def _read(folder: Path) -> Record:
    database = folder / "audit.db"
    async with await Store.open(f"sqlite:///{database}") as store:
        changes = await store.reads.changes(limit=None)
        head, length = await store.reads.chain_head()
    config = folder / "auditor.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{database}"\n', encoding="utf-8")
    return Record(folder, config, changes, head, length)


@pytest.fixture(scope="module")
def record(tmp_path_factory: pytest.TempPathFactory) -> Record:
    folder = tmp_path_factory.mktemp("export")
    plan = Plan(
        hq_scripts=8, branch_scripts=3, seeds=(7, 8), added=ODD_NAME, removed_index=-1, outage=False
    )
    record_in_thread(folder / "audit.db", plan)
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, _read(folder)).result()


@dataclass(frozen=True)
class Exported:
    path: Path
    stderr: str


def export(config: Path, output: Path, *args: str) -> Exported:
    env = {k: v for k, v in os.environ.items() if k not in ("AUDITOR_CONFIG", "JOURNAL_STREAM")}
    command = [sys.executable, "-m", "auditor", "--config", str(config), "export"]
    done = subprocess.run(
        [*command, "--format", "html", "-o", str(output), *args],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        env=env,
        cwd=config.parent,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return Exported(output, done.stderr)


@dataclass(frozen=True)
class Exports:
    whole: Exported
    branch: Exported
    empty: Exported


@pytest.fixture(scope="module")
def exports(record: Record) -> Exports:
    """Three exports by real ``python -m auditor`` processes, run side by side: the whole
    record, pbx-branch until the last change, and a database with no change at all."""
    empty = record.folder / "empty"
    empty.mkdir()
    empty_config = empty / "auditor.toml"
    empty_config.write_text(f'[database]\nurl = "sqlite:///{empty / "a.db"}"\n', encoding="utf-8")
    until = iso(record.changes[-1].at)
    with ThreadPoolExecutor(max_workers=3) as pool:
        whole = pool.submit(export, record.config, record.folder / "report.html")
        branch = pool.submit(
            export,
            record.config,
            record.folder / "branch.html",
            "--target",
            "pbx-branch",
            "--until",
            until,
        )
        nothing = pool.submit(export, empty_config, empty / "report.html")
        return Exports(whole.result(), branch.result(), nothing.result())


@dataclass
class Report(HTMLParser):
    """What the report holds, as a browser's parser sees it (entities decoded)."""

    tags: Counter[str] = field(default_factory=Counter)
    references: list[tuple[str, str]] = field(default_factory=list)
    css: list[str] = field(default_factory=list)
    meta: list[dict[str, str | None]] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    text: dict[str, list[str]] = field(default_factory=dict)
    pre: dict[str, list[str]] = field(default_factory=dict)
    counts: list[list[str]] = field(default_factory=list)
    _open: list[tuple[str, str]] = field(default_factory=list)
    _section: str = "page"
    _in_pre: bool = False
    _row: list[str] | None = None
    _cell: list[str] | None = None

    def __post_init__(self) -> None:
        super().__init__(convert_charrefs=True)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] += 1
        values = dict(attrs)
        for name, value in attrs:
            if name in URL_ATTRS:
                self.references.append((name, value or ""))
            if name == "style":
                self.css.append(value or "")
        if tag == "meta":
            self.meta.append(values)
        element_id = values.get("id")
        if element_id:
            self.ids.append(element_id)
        previous = self._section
        if tag == "section" and element_id and element_id.startswith("change-"):
            self._section = element_id
        elif element_id == "chain-head":
            self._section = "chain-head"
        self._open.append((tag, previous))
        if tag == "pre":
            self._in_pre = True
            self.pre.setdefault(self._section, []).append("")
        if tag == "table" and values.get("class") == "counts":
            self._row = []
        if tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "pre":
            self._in_pre = False
        if tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        if tag == "tr" and self._row:
            self.counts.append(self._row)
            self._row = []
        if tag == "table":
            self._row = None
        while self._open:
            opened, previous = self._open.pop()
            if opened == tag:
                self._section = previous
                break

    def handle_data(self, data: str) -> None:
        self.text.setdefault(self._section, []).append(data)
        if self._in_pre:
            self.pre[self._section][-1] += data
        if self._cell is not None:
            self._cell.append(data)
        if self._open and self._open[-1][0] == "style":
            self.css.append(data)

    def section_text(self, name: str) -> str:
        return "".join(self.text.get(name, ()))


def parse_report(path: Path) -> Report:
    report = Report()
    report.feed(path.read_text(encoding="utf-8"))
    report.close()
    return report


def assert_self_contained(report: Report) -> None:
    assert not set(report.tags) & LOADING_TAGS, report.tags
    for name, value in report.references:
        target = value.strip()
        assert target.startswith("#") or target.lower().startswith("data:"), (name, value)
    for css in report.css:
        assert "@import" not in css.lower()
        for _quote, target in CSS_URL.findall(css):
            assert target.startswith("#") or target.lower().startswith("data:"), target
    for meta in report.meta:
        assert (meta.get("http-equiv") or "").lower() != "refresh", meta


def test_the_report_is_self_contained_and_holds_every_change(
    record: Record, exports: Exports
) -> None:
    assert f"chain head {record.head} ({record.length} records in all)" in exports.whole.stderr
    report = parse_report(exports.whole.path)
    assert_self_contained(report)

    assert report.tags["style"] == 1
    assert report.section_text("chain-head") == record.head
    assert record.length == len(record.changes) > 10
    sections = [i for i in report.ids if i.startswith("change-")]
    assert sections == [f"change-{c.id}" for c in record.changes]

    for change in record.changes:
        text = report.section_text(f"change-{change.id}")
        for value in (change.target, change.collection, change.key, change.kind, iso(change.at)):
            assert value in text, (change.id, value)
        assert change.hash in text
        assert change.prev_hash in text
        for field_change in change.fields:
            assert field_change.field in text
            for side, value in (("old", field_change.old), ("new", field_change.new)):
                shown = "(absent)" if field_change.missing == side else json.dumps(value)
                assert shown in text, (change.id, field_change)
        before, after = report.pre[f"change-{change.id}"]
        assert (json.loads(before) if change.before is not None else None) == change.before
        assert (json.loads(after) if change.after is not None else None) == change.after

    # The odd name is text, whole: no element was made of its markup.
    assert ODD_NAME in report.section_text(
        next(f"change-{c.id}" for c in record.changes if c.key == ODD_NAME)
    )

    # A target's baseline is counted in a column of its own, not as 'added'.
    kinds = ("baseline", "added", "removed", "changed")
    expected: Counter[tuple[str, str]] = Counter(
        (c.target, "baseline" if c.baseline else c.kind) for c in record.changes
    )
    assert expected[("pbx-hq", "baseline")] == 9
    assert expected[("pbx-hq", "added")] == 1
    header, *rows, total = report.counts
    assert header == ["target", *kinds, "total"]
    assert rows == [
        [t, *(str(expected[(t, k)]) for k in kinds), str(sum(expected[(t, k)] for k in kinds))]
        for t in sorted({c.target for c in record.changes})
    ]
    assert total == [
        "all",
        *(str(sum(n for (_, k), n in expected.items() if k == kind)) for kind in kinds),
        str(len(record.changes)),
    ]


def test_filters_narrow_the_changes_not_the_chain(record: Record, exports: Exports) -> None:
    last = record.changes[-1]
    report = parse_report(exports.branch.path)
    wanted = [c for c in record.changes if c.target == "pbx-branch" and c.at < last.at]
    assert 0 < len(wanted) < len(record.changes)
    assert [i for i in report.ids if i.startswith("change-")] == [f"change-{c.id}" for c in wanted]
    assert report.section_text("chain-head") == record.head
    assert f"export: {len(wanted)} change record(s)" in exports.branch.stderr
    page = report.section_text("page")
    assert "pbx-branch" in page
    assert iso(last.at) in page


def test_an_empty_record(exports: Exports) -> None:
    output = exports.empty.path
    report = parse_report(output)
    assert_self_contained(report)
    assert report.section_text("chain-head") == "0" * 64
    assert not [i for i in report.ids if i.startswith("change-")]


# -- headless Chromium -------------------------------------------------------------------


def chromium_or_skip() -> Path:
    if CHROMIUM.exists():
        return CHROMIUM
    message = f"{CHROMIUM} is not installed (apt-get install chromium)"
    if os.environ.get("AUDITOR_REQUIRE_CHROMIUM") == "1":
        pytest.fail(message)
    pytest.skip(message)


@dataclass(frozen=True)
class Opened:
    dom: str
    page_requests: list[str]
    browser_requests: list[str]


def open_in_chromium(chromium: Path, page: Path, work: Path) -> Opened:
    work.mkdir()
    net_log = work / "net.json"
    done = subprocess.run(
        [
            str(chromium),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={work / 'profile'}",
            f"--log-net-log={net_log}",
            "--net-log-capture-mode=Default",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
        env={**os.environ, "HOME": str(work)},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    log = json.loads(net_log.read_text(encoding="utf-8"))
    names = {number: name for name, number in log["constants"]["logEventTypes"].items()}
    page_requests: list[str] = []
    browser_requests: list[str] = []
    for event in log["events"]:
        params = event.get("params") or {}
        if names.get(event["type"]) != "URL_REQUEST_START_JOB" or "url" not in params:
            continue
        # A request the page caused has the page's (opaque, "null") origin as initiator and
        # the file in its isolation key; the browser's own have "not an origin".
        own = params.get("initiator") == "not an origin"
        own = own and "file://" not in str(params.get("network_isolation_key", ""))
        (browser_requests if own else page_requests).append(params["url"])
    return Opened(done.stdout, page_requests, browser_requests)


def test_chromium_opens_the_report_without_a_request(
    record: Record, exports: Exports, tmp_path: Path
) -> None:
    chromium = chromium_or_skip()

    # The detector sees what a leaky page asks for...
    leaky = tmp_path / "leaky.html"
    leaky.write_text(
        '<!DOCTYPE html><html><head><link rel="stylesheet" href="https://example.invalid/a.css">'
        '</head><body><img src="http://127.0.0.1:9/x.png"><p>leaky</p></body></html>',
        encoding="utf-8",
    )
    control = open_in_chromium(chromium, leaky, tmp_path / "control")
    assert "leaky" in control.dom
    assert sorted(control.page_requests) == [
        "http://127.0.0.1:9/x.png",
        "https://example.invalid/a.css",
    ]

    # ...and the report asks for nothing.
    opened = open_in_chromium(chromium, exports.whole.path, tmp_path / "report")
    assert opened.page_requests == []
    assert not [url for url in opened.browser_requests if url.startswith("file:")]
    assert record.head in opened.dom
    assert f'id="change-{record.changes[-1].id}"' in opened.dom
