"""The record commands (runs, history, alerts, show, diff, export, verify, db upgrade) as
real subprocesses, on a record made by real ``once`` runs against the simulator.

One SQLite record is built per module (a baseline of two PBXs, then one run with changes)
and only read by the tests; a PostgreSQL smoke test builds its own. Every command's output
is checked for the client secret.
"""

from __future__ import annotations

import asyncio
import csv
import io
import itertools
import json
import secrets
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest

from auditor.model import SCRIPTS, SETTINGS, SETTINGS_KEY
from auditor.simulator import Pbx, Simulator, serve
from tests.clirun import ALERT_FIELDS, SECRET_ENV, Cli, Outcome

T = TypeVar("T")
RUN_FIELDS = {"id", "target", "started_at", "finished_at", "status", "items", "pages", "error"}
CHANGE_FIELDS = {
    "id",
    "run_id",
    "target",
    "collection",
    "key",
    "kind",
    "baseline",
    "before",
    "after",
    "fields",
    "at",
    "hash",
    "prev_hash",
}


def write_config(path: Path, db_url: str, base: str, targets: dict[str, str]) -> Path:
    """A config naming ``targets`` (name -> simulated PBX name) on ``db_url``."""
    blocks = [
        f"""
[[targets]]
name = "{name}"
url = "{base}/{pbx}"
client_id = "auditor"
client_secret_env = "{SECRET_ENV}"
retries = 0
# The failover history only: these tests count its records.
collections = ["failover_scripts", "failover_settings"]
request_timeout = "10s"
"""
        for name, pbx in targets.items()
    ]
    path.write_text(
        f'[database]\nurl = "{db_url}"\n\n[log]\nformat = "json"\n' + "".join(blocks),
        encoding="utf-8",
    )
    return path


def _run_apart(coro: Coroutine[Any, Any, T]) -> T:
    # A module-scoped fixture must not use the event loop pytest-asyncio keeps for one test.
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


@dataclass(frozen=True)
class Record:
    """A record made by two ``once`` runs over pbx-a and pbx-b (pbx-idle is never audited)."""

    config: Path
    secret: str
    baseline: Outcome
    change: Outcome
    runs: list[dict[str, Any]]
    history: list[dict[str, Any]]
    scripts_a: list[dict[str, Any]]
    settings_a: dict[str, Any]
    added: str
    removed: str
    mode: tuple[str, str]

    def cli(self) -> Cli:
        return Cli(self.config, self.secret)


async def _make_record(folder: Path) -> Record:
    secret = "pbx-secret-" + secrets.token_urlsafe(16)
    a = Pbx("pbx-a", scripts=30, seed=5, states=True, client_secret=secret)
    b = Pbx("pbx-b", scripts=5, seed=6, client_secret=secret)
    async with serve(Simulator([a, b])) as base:
        config = write_config(
            folder / "auditor.toml",
            f"sqlite:///{folder / 'audit.db'}",
            base,
            {"pbx-a": "pbx-a", "pbx-b": "pbx-b", "pbx-idle": "pbx-idle"},
        )
        cli = Cli(config, secret)
        # pbx-a named twice: audited once all the same (two concurrent runs of one target
        # would both record the baseline).
        baseline = await cli.ok(
            "once", "--target", "pbx-a", "--target", "pbx-b", "--target", "pbx-a"
        )
        named = {a.settings["PreStartScript"], a.settings["PostStartScript"]}
        removed = next(n for n in a.filenames if n not in named)
        old_mode = a.settings["Mode"]
        new_mode = "Passive" if old_mode == "Active" else "Active"
        a.add_script("added-by-admin.sh")
        a.remove_script(removed)
        a.update_settings(Mode=new_mode)
        change = await cli.ok("once", "--target", "pbx-a", "--target", "pbx-b")
        runs, history = await asyncio.gather(
            cli.ok("runs", "--json"), cli.ok("history", "--json", "--limit", "0")
        )
    return Record(
        config=config,
        secret=secret,
        baseline=baseline,
        change=change,
        runs=runs.json(),
        history=history.json(),
        scripts_a=a.items(),
        settings_a=a.settings,
        added="added-by-admin.sh",
        removed=removed,
        mode=(old_mode, new_mode),
    )


@pytest.fixture(scope="module")
def record(tmp_path_factory: pytest.TempPathFactory) -> Record:
    return _run_apart(_make_record(tmp_path_factory.mktemp("record")))


def run_ids(runs: list[dict[str, Any]], target: str) -> list[int]:
    return [r["id"] for r in runs if r["target"] == target]


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def test_runs_json(record: Record) -> None:
    every = record.runs
    only_b = await record.cli().ok("runs", "--json", "--target", "pbx-b")
    # pbx-a was named twice in the first `once`, and still has one run per `once`.
    assert len(every) == 4
    for run in every:
        assert set(run) == RUN_FIELDS
        assert run["status"] == "ok"
        assert run["error"] is None
        assert run["pages"] == 1
        assert parse_time(run["started_at"]) <= parse_time(run["finished_at"])
    assert [r["id"] for r in every] == sorted(r["id"] for r in every)
    items = {(r["target"], r["items"]) for r in every}
    assert items == {("pbx-a", 30), ("pbx-b", 5)}
    assert only_b.json() == [r for r in every if r["target"] == "pbx-b"]


async def test_history_json_and_filters(record: Record) -> None:
    cli = record.cli()
    runs = record.runs
    second_a = run_ids(runs, "pbx-a")[1]
    # Both targets are audited by each `once`: runs 1-2 are the baselines, 3-4 the second.
    cut = min(r["started_at"] for r in runs[2:])
    only_b, since, until = await asyncio.gather(
        cli.ok("history", "--json", "--limit", "0", "--target", "pbx-b"),
        cli.ok("history", "--json", "--limit", "0", "--since", cut),
        cli.ok("history", "--json", "--limit", "0", "--until", cut),
    )
    changes = record.history
    # the baselines (30 + settings, 5 + settings) enter as 'added'; then 3 changes of pbx-a
    assert len(changes) == 31 + 6 + 3
    for change in changes:
        assert set(change) == CHANGE_FIELDS
    assert [c["id"] for c in changes] == list(range(1, len(changes) + 1))
    for earlier, later in itertools.pairwise(changes):
        assert later["prev_hash"] == earlier["hash"]

    latest = {(c["kind"], c["collection"], c["key"]) for c in since.json()}
    assert latest == {
        ("added", SCRIPTS, record.added),
        ("removed", SCRIPTS, record.removed),
        ("changed", SETTINGS, SETTINGS_KEY),
    }
    assert {c["run_id"] for c in since.json()} == {second_a}
    settings = next(c for c in since.json() if c["collection"] == SETTINGS)
    old, new = record.mode
    assert settings["fields"] == [{"field": "Mode", "old": old, "new": new}]
    assert settings["before"]["Mode"] == old
    assert settings["after"]["Mode"] == new
    removed = next(c for c in since.json() if c["kind"] == "removed")
    assert removed["after"] is None
    assert removed["before"]["Filename"] == record.removed

    assert {c["kind"] for c in until.json()} == {"added"}
    assert all(c["baseline"] for c in until.json())
    assert not any(c["baseline"] for c in since.json())
    assert len(until.json()) == 31 + 6
    assert until.json() + since.json() == changes
    assert only_b.json() == [c for c in changes if c["target"] == "pbx-b"]
    assert len(only_b.json()) == 6


async def test_alerts_json(record: Record) -> None:
    cli = record.cli()
    every, only_b = await asyncio.gather(
        cli.ok("alerts", "--json"), cli.ok("alerts", "--json", "--target", "pbx-b")
    )
    listed: list[dict[str, Any]] = every.json()
    for alert in listed:
        assert set(alert) == ALERT_FIELDS
    printed = record.baseline.lines() + record.change.lines()
    assert len(printed) == 3
    for line in printed:
        assert line["alert"] is True
        assert line["event"] == line["kind"]
    # What `once` printed is what the record holds, field for field.
    assert listed == [{k: line[k] for k in ALERT_FIELDS} for line in printed]
    assert sorted((a["kind"], a["key"]) for a in listed) == sorted(
        [
            ("script.added", record.added),
            ("script.removed", record.removed),
            ("settings.changed", SETTINGS_KEY),
        ]
    )
    settings = next(a for a in listed if a["kind"] == "settings.changed")
    old, new = record.mode
    assert settings["fields"] == [{"field": "Mode", "old": old, "new": new}]
    assert {a["status"] for a in listed} == {"firing"}
    assert only_b.json() == []


async def test_show_lists_the_last_complete_run(record: Record) -> None:
    cli = record.cli()
    first_a, last_a = run_ids(record.runs, "pbx-a")
    shown, first = await asyncio.gather(
        cli.ok("show", "--target", "pbx-a", "--json"),
        cli.ok("show", "--run", str(first_a), "--json"),
    )
    data = shown.json()
    assert data["target"] == "pbx-a"
    assert data["run_id"] == last_a
    assert data["failover_scripts"] == record.scripts_a
    assert data["failover_settings"] == record.settings_a

    names = [s["Filename"] for s in first.json()["failover_scripts"]]
    assert record.removed in names
    assert record.added not in names
    assert len(names) == 30
    assert first.json()["failover_settings"]["Mode"] == record.mode[0]


def _by_item(changes: list[dict[str, Any]]) -> dict[tuple[str, str, str], Any]:
    return {
        (c["collection"], c["key"], c["kind"]): (c["before"], c["after"], c["fields"])
        for c in changes
    }


async def test_diff_between_two_runs(record: Record) -> None:
    cli = record.cli()
    a1, a2 = run_ids(record.runs, "pbx-a")
    forward, backward, same = await asyncio.gather(
        cli.ok("diff", str(a1), str(a2), "--json"),
        cli.ok("diff", str(a2), str(a1), "--json"),
        cli.ok("diff", str(a2), str(a2), "--json"),
    )
    diffed = _by_item(forward.json())
    assert diffed == _by_item([c for c in record.history if c["run_id"] == a2])
    assert len(diffed) == 3
    flipped = {"added": "removed", "removed": "added", "changed": "changed"}
    assert {(c["collection"], c["key"], c["kind"]) for c in backward.json()} == {
        (coll, key, flipped[kind]) for coll, key, kind in diffed
    }
    assert same.json() == []


async def test_export_json_and_csv(record: Record) -> None:
    cli = record.cli()
    changes = record.history
    as_json, as_csv = await asyncio.gather(
        cli.ok("export", "--format", "json"), cli.ok("export", "--format", "csv")
    )
    exported = as_json.json()
    assert exported["chain"] == {"head": changes[-1]["hash"], "length": len(changes)}
    assert exported["changes"] == changes
    assert f"chain head {changes[-1]['hash']}" in as_json.stderr

    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert len(rows) == len(changes)
    for row, change in zip(rows, changes, strict=True):
        assert int(row["id"]) == change["id"]
        assert int(row["run_id"]) == change["run_id"]
        for key in ("target", "collection", "key", "kind", "at", "hash", "prev_hash"):
            assert row[key] == change[key]
        for key in ("before", "after", "fields"):
            assert json.loads(row[key]) == change[key]
    assert f"{len(changes)} change record(s)" in as_csv.stderr


async def test_db_upgrade_and_a_target_without_runs(record: Record) -> None:
    cli = record.cli()
    upgrade, runs, show = await asyncio.gather(
        cli("db", "upgrade"),
        cli.ok("runs", "--json", "--target", "pbx-idle"),
        cli("show", "--target", "pbx-idle", "--json"),
    )
    assert upgrade.code == 0, str(upgrade)
    assert "revision" in upgrade.stderr
    assert runs.json() == []
    assert show.code == 2, str(show)
    assert show.stdout == ""
    assert show.stderr.splitlines() == ["error: show: pbx-idle has no complete run yet"]


async def test_unknown_run_is_one_line(record: Record) -> None:
    cli = record.cli()
    outcomes = await asyncio.gather(
        cli("show", "--run", "9999", "--json"),
        cli("diff", "1", "9999", "--json"),
    )
    for outcome in outcomes:
        assert outcome.code == 2, str(outcome)
        assert outcome.stdout == ""
        assert outcome.stderr.splitlines() == [f"error: {outcome.args[0]}: there is no run 9999"]


async def test_secret_not_shown_when_the_login_is_refused(tmp_path: Path) -> None:
    secret = "pbx-secret-" + secrets.token_urlsafe(16)
    pbx = Pbx("pbx-a", scripts=3, client_secret="not-" + secret)
    async with serve(Simulator([pbx])) as base:
        config = write_config(
            tmp_path / "auditor.toml", f"sqlite:///{tmp_path / 'a.db'}", base, {"pbx-a": "pbx-a"}
        )
        cli = Cli(config, secret)
        refused = await cli("-v", "once")
        quiet, show = await asyncio.gather(cli("once"), cli("show", "--run", "1"))
    assert pbx.stats.failed_logins == 2
    assert refused.code == quiet.code == 1
    assert [line["kind"] for line in refused.lines()] == ["audit.failed"]
    assert quiet.lines() == []
    assert "pbx-a: failed:" in quiet.stderr
    # A failed run has no snapshot to show: the user's mistake, one line, exit 2.
    assert show.code == 2, str(show)
    assert show.stderr.splitlines() == [
        "error: show: run 1 of pbx-a is failed, not complete: it has no snapshot"
    ]


@pytest.mark.postgres
async def test_record_commands_on_postgresql(pg_url: str, tmp_path: Path) -> None:
    secret = "pbx-secret-" + secrets.token_urlsafe(16)
    pbx = Pbx("pbx-a", scripts=120, seed=2, states=True, client_secret=secret)
    async with serve(Simulator([pbx])) as base:
        cli = Cli(write_config(tmp_path / "auditor.toml", pg_url, base, {"pbx-a": "pbx-a"}), secret)
        first = await cli.ok("once")
        flipped = pbx.filenames[7]
        pbx.set_state(flipped, "Disconnected")
        pbx.add_script("added-on-pg.sh")
        second = await cli.ok("once")
    assert "baseline" in first.stderr
    assert sorted((a["kind"], a["key"]) for a in second.lines()) == [
        ("script.added", "added-on-pg.sh"),
        ("script.disconnected", flipped),
    ]
    history, show, verify = await asyncio.gather(
        cli.ok("history", "--json", "--limit", "0"),
        cli.ok("show", "--target", "pbx-a", "--json"),
        cli.ok("verify"),
    )
    changes = history.json()
    assert len(changes) == 121 + 2
    baseline_run, second_run = changes[0]["run_id"], changes[-1]["run_id"]
    assert [c["baseline"] for c in changes] == [c["run_id"] == baseline_run for c in changes]
    assert sum(c["baseline"] for c in changes) == 121
    assert {(c["kind"], c["key"]) for c in changes if c["run_id"] == second_run} == {
        ("added", "added-on-pg.sh"),
        ("changed", flipped),
    }
    assert show.json()["failover_scripts"] == pbx.items()
    assert show.json()["run_id"] == second_run
    assert changes[-1]["hash"] in verify.stdout
    diffed = await cli.ok("diff", str(baseline_run), str(second_run), "--json")
    assert _by_item(diffed.json()) == _by_item(changes[-2:])
