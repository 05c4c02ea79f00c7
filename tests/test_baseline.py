"""Baselines are marked: every record of a target's first complete run says so, everywhere.

One record is made by real ``once`` subprocesses against the simulator: pbx-a's baseline
while pbx-b is down (its run fails), then pbx-b's baseline beside a real change of pbx-a,
then changes of both. The marks are then read back through every output that lists
changes: ``history --json`` and its table, ``export`` as JSON, CSV and HTML (and the
summary ``export`` prints), and the daemon's JSON API. The mark is derived from the chain
(the run of a target's first change record), so ``verify`` stays intact and an unhashed
column such as a run's status cannot move it.
"""

from __future__ import annotations

import asyncio
import csv
import io
import secrets
import sqlite3
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest

from auditor.simulator import Pbx, Simulator, serve
from tests.clirun import SECRET_ENV, Cli, Outcome
from tests.conftest import DaemonSpawner, free_port

T = TypeVar("T")
# The CSV columns as first released: scripts read them by position, so they keep their place.
CSV_COLUMNS = ["id", "run_id", "target", "collection", "key", "kind", "at", "before", "after"]
CSV_COLUMNS += ["fields", "prev_hash", "hash"]


def _config(folder: Path, base: str, port: int) -> Path:
    targets = "".join(
        f"""
[[targets]]
name = "{name}"
url = "{base}/{name}"
client_id = "auditor"
client_secret_env = "{SECRET_ENV}"
retries = 0
# The failover history only: these tests count its records.
collections = ["failover_scripts", "failover_settings"]
request_timeout = "10s"
"""
        for name in ("pbx-a", "pbx-b")
    )
    path = folder / "auditor.toml"
    path.write_text(
        f'[database]\nurl = "sqlite:///{folder / "audit.db"}"\n\n'
        f'[schedule]\nevery = "1h"\n\n[http]\nlisten = "127.0.0.1:{port}"\n\n'
        f'[log]\nformat = "json"\n' + targets,
        encoding="utf-8",
    )
    return path


@dataclass(frozen=True)
class Record:
    folder: Path
    config: Path
    secret: str
    port: int
    onces: list[Outcome]
    history: list[dict[str, Any]]
    # target -> the run that was its baseline
    baseline_runs: dict[str, int]
    removed: str

    def cli(self) -> Cli:
        return Cli(self.config, self.secret)

    def copy(self, folder: Path) -> tuple[Path, Path]:
        """A copy of the database and a config naming it (for tests that write)."""
        database = folder / "audit.db"
        with (
            sqlite3.connect(self.folder / "audit.db") as source,
            sqlite3.connect(database) as target,
        ):
            source.backup(target)
        config = folder / "auditor.toml"
        text = self.config.read_text(encoding="utf-8")
        config.write_text(text.replace(str(self.folder / "audit.db"), str(database)))
        return database, config

    @property
    def marks(self) -> dict[int, bool]:
        return {c["id"]: c["baseline"] for c in self.history}


async def _make(folder: Path) -> Record:
    secret = "pbx-secret-" + secrets.token_urlsafe(16)
    a = Pbx("pbx-a", scripts=8, seed=11, client_secret=secret)
    b = Pbx("pbx-b", scripts=4, seed=12, client_secret=secret)
    port = free_port()
    async with serve(Simulator([a, b])) as base:
        cli = Cli(_config(folder, base, port), secret)
        b.set_down(True, mode="status")
        first = await cli("once")  # pbx-a: baseline; pbx-b: failed (exit 1)
        assert first.code == 1, str(first)
        b.set_down(False)
        a.add_script("real-change.sh")
        second = await cli.ok("once")  # pbx-a: one real 'added'; pbx-b: its baseline
        a.update_settings(Mode="Passive" if a.settings.get("Mode") == "Active" else "Active")
        removed = b.filenames[0]
        b.remove_script(removed)
        third = await cli.ok("once")
        runs = (await cli.ok("runs", "--json", "--limit", "0")).json()
        history = (await cli.ok("history", "--json", "--limit", "0")).json()
    first_ok: dict[str, int] = {}
    for run in runs:
        if run["status"] == "ok":
            first_ok.setdefault(run["target"], run["id"])
    onces = [first, second, third]
    return Record(folder, cli.config, secret, port, onces, history, first_ok, removed)


def _run_apart(coro: Coroutine[Any, Any, T]) -> T:
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


@pytest.fixture(scope="module")
def record(tmp_path_factory: pytest.TempPathFactory) -> Record:
    return _run_apart(_make(tmp_path_factory.mktemp("baseline")))


def test_history_json_marks_each_targets_first_complete_run(record: Record) -> None:
    assert "pbx-a: ok" in record.onces[0].stderr
    assert "pbx-b: failed" in record.onces[0].stderr
    runs = record.baseline_runs
    # pbx-b's first run failed: its baseline is the second run, made beside pbx-a's change.
    assert runs["pbx-b"] > runs["pbx-a"]
    for change in record.history:
        assert change["baseline"] is (change["run_id"] == runs[change["target"]]), change
    marked = [c for c in record.history if c["baseline"]]
    assert {c["kind"] for c in marked} == {"added"}
    # Every script and the settings of each PBX: 8 + 1 and 4 + 1.
    assert [c["target"] for c in marked].count("pbx-a") == 9
    assert [c["target"] for c in marked].count("pbx-b") == 5
    real = [(c["target"], c["kind"], c["key"]) for c in record.history if not c["baseline"]]
    assert sorted(real) == [
        ("pbx-a", "added", "real-change.sh"),
        ("pbx-a", "changed", "settings"),
        ("pbx-b", "removed", record.removed),
    ]
    # The same 'added' kind as pbx-a's real change: only the mark tells them apart.
    added_later = next(c for c in record.history if c["key"] == "real-change.sh")
    assert added_later["kind"] == "added"
    assert added_later["baseline"] is False


async def test_the_mark_does_not_depend_on_the_window_read(record: Record) -> None:
    cli = record.cli()
    cut = next(c["at"] for c in record.history if c["run_id"] == record.baseline_runs["pbx-b"])
    only_b, since, newest = await asyncio.gather(
        cli.ok("history", "--json", "--limit", "0", "--target", "pbx-b"),
        cli.ok("history", "--json", "--limit", "0", "--since", cut),
        cli.ok("history", "--json", "--limit", "1"),
    )
    for outcome in (only_b, since, newest):
        assert outcome.json()
        for change in outcome.json():
            assert change["baseline"] is record.marks[change["id"]], change
    assert any(c["baseline"] for c in since.json())
    assert newest.json()[0]["baseline"] is False


async def test_the_history_lines_have_a_baseline_field(record: Record) -> None:
    # Into a pipe, history prints one tab-separated line per record: id, at, target, kind,
    # baseline, ... (its --help names the fields; a terminal gets the same as a table).
    piped = await record.cli().ok("history", "--limit", "0")
    lines = [line.split("\t") for line in piped.stdout.splitlines()]
    shown = {int(f[0]): f[4] for f in lines}
    assert len(shown) == len(lines)
    assert shown == {i: "yes" if mark else "" for i, mark in record.marks.items()}


async def test_export_json_and_csv_carry_the_mark(record: Record) -> None:
    cli = record.cli()
    as_json, as_csv, later = await asyncio.gather(
        cli.ok("export", "--format", "json"),
        cli.ok("export", "--format", "csv"),
        cli.ok("export", "--format", "csv", "--since", record.history[-1]["at"]),
    )
    assert as_json.json()["changes"] == record.history

    rows = list(csv.reader(io.StringIO(as_csv.stdout)))
    assert rows[0] == [*CSV_COLUMNS, "baseline"]
    assert {int(r[0]): r[-1] for r in rows[1:]} == {
        i: "true" if mark else "false" for i, mark in record.marks.items()
    }
    for stderr in (as_json.stderr, as_csv.stderr):
        lines = stderr.splitlines()
        assert lines[0].startswith(f"export: {len(record.history)} change record(s); chain head")
        assert lines[1] == (
            "export: 14 of them baseline records (a target's first complete run, "
            "everything it found recorded as added): pbx-a 9, pbx-b 5"
        )
    assert later.stderr.splitlines()[1] == "export: no baseline records among them"
    assert {r["baseline"] for r in csv.DictReader(io.StringIO(later.stdout))} == {"false"}


class _Html(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.counts: list[list[str]] = []
        self.headings: dict[str, str] = {}
        self.note = ""
        self._cell: list[str] | None = None
        self._row: list[str] | None = None
        self._section: str | None = None
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "table" and values.get("class") == "counts":
            self._row = []
        if tag in ("td", "th") and self._row is not None:
            self._cell = []
        if tag == "section" and (values.get("id") or "").startswith("change-"):
            self._section = values["id"]
        if tag == "h3" and self._section:
            self._in = "h3"
        if tag == "p" and values.get("id") == "baselines":
            self._in = "note"

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        if tag == "tr" and self._row:
            self.counts.append(self._row)
            self._row = []
        if tag == "table":
            self._row = None
        if tag in ("h3", "p"):
            self._in = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self._in == "h3" and self._section:
            self.headings[self._section] = self.headings.get(self._section, "") + data
        if self._in == "note":
            self.note += data


async def test_the_html_report_counts_baselines_apart(record: Record) -> None:
    output = record.folder / "report.html"
    await record.cli().ok("export", "--format", "html", "-o", str(output))
    report = _Html()
    report.feed(output.read_text(encoding="utf-8"))
    report.close()
    header, *rows, total = report.counts
    assert header == ["target", "baseline", "added", "removed", "changed", "total"]
    # Before: pbx-a's row said "added 10" where 9 were its baseline.
    assert rows == [["pbx-a", "9", "1", "0", "1", "11"], ["pbx-b", "5", "0", "1", "0", "6"]]
    assert total == ["all", "14", "1", "1", "1", "17"]
    runs = record.baseline_runs
    assert report.note.startswith(
        f"Baseline: pbx-a: 9 records of run {runs['pbx-a']}; "
        f"pbx-b: 5 records of run {runs['pbx-b']}. "
    )
    assert len(report.headings) == len(record.history)
    for change_id, mark in record.marks.items():
        assert ("(baseline)" in report.headings[f"change-{change_id}"]) is mark


async def test_the_json_api_carries_the_mark(
    record: Record, spawn_daemon: DaemonSpawner, tmp_path: Path
) -> None:
    # The daemon audits what is due (the simulator is gone: failed runs): on a copy.
    _database, config = record.copy(tmp_path)
    daemon = await spawn_daemon(config, env={SECRET_ENV: record.secret})
    base = f"http://127.0.0.1:{record.port}"
    async with aiohttp.ClientSession() as http:

        async def ready() -> bool:
            try:
                async with http.get(base + "/readyz") as answer:
                    return answer.status == 200
            except aiohttp.ClientConnectionError:
                return False

        await daemon.until(ready, "/readyz answering 200")
        async with http.get(base + "/api/v1/changes", params={"limit": "1000"}) as answer:
            assert answer.status == 200
            items = (await answer.json())["items"]
    assert await daemon.stop() == 0
    assert {c["id"]: c["baseline"] for c in items} == record.marks
    assert items == record.history


async def test_verify_is_intact_and_a_run_status_cannot_move_the_mark(
    record: Record, tmp_path: Path
) -> None:
    # The mark comes from the chain (hashed), not from runs.status (not hashed).
    database, config = record.copy(tmp_path)
    with sqlite3.connect(database) as db:
        db.execute(
            "UPDATE runs SET status = 'failed' WHERE id = ?", (record.baseline_runs["pbx-a"],)
        )
    cli = Cli(config, record.secret)
    verify, history = await asyncio.gather(
        cli.ok("verify"), cli.ok("history", "--json", "--limit", "0")
    )
    assert verify.stdout.startswith(f"verify: intact: {len(record.history)} change records")
    assert history.json() == record.history
