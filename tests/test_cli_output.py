"""What the read commands print into a pipe, how ``--target`` is checked, ``status``,
``once --fail-on`` and the filters of ``history`` and ``alerts``: real CLI subprocesses on a
record made by real ``once`` runs against the simulator.

The record (built once per module, then only read): pbx-hq and pbx-br get a baseline; then
pbx-hq gains a script with a 90-character name, loses two (one of them its pre-start
script, a critical ``settings.script_missing``), switches its failover mode and sees one
script disconnected; then the pre-start script comes back; then pbx-hq is down for two
runs (``disconnected_after = 2``: ``audit.failed``, then ``target.disconnected``).
pbx-idle is configured and never audited.
"""

from __future__ import annotations

import asyncio
import os
import pty
import re
import resource
import secrets
import shutil
import socket
import sys
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest

from auditor.model import SCRIPTS, SETTINGS, SETTINGS_KEY, utcnow
from auditor.simulator import Pbx, Simulator, serve
from auditor.store import Store
from tests.clirun import SECRET_ENV, Cli, Outcome

T = TypeVar("T")
LONG_NAME = "post-failover-restore-sip-trunks-and-notify-the-noc-on-call-rotation-"
LONG_NAME += "x" * (87 - len(LONG_NAME)) + ".sh"
assert len(LONG_NAME) == 90
KNOWN = "(known: pbx-br, pbx-hq, pbx-idle)"
SETTINGS_CHANGED = ("Mode", "Condition", "Interval", "TestTunnel")


def write_config(path: Path, db_url: str, base: str, names: tuple[str, ...]) -> Path:
    blocks = "".join(
        f"""
[[targets]]
name = "{name}"
url = "{base}/{name}"
client_id = "auditor"
client_secret_env = "{SECRET_ENV}"
retries = 0
request_timeout = "10s"
"""
        for name in names
    )
    path.write_text(
        f'[database]\nurl = "{db_url}"\n\n[alerts]\ndisconnected_after = 2\n\n'
        f'[log]\nformat = "json"\n{blocks}',
        encoding="utf-8",
    )
    return path


@dataclass(frozen=True)
class Story:
    folder: Path
    config: Path
    base: str
    secret: str
    steps: list[Outcome]
    disconnected: str
    removed: str
    pre_start: str
    history: list[dict[str, Any]]
    alerts: list[dict[str, Any]]
    runs: list[dict[str, Any]]

    def cli(self, config: Path | None = None) -> Cli:
        return Cli(config or self.config, self.secret)


async def _make_story(folder: Path) -> Story:
    secret = "pbx-secret-" + secrets.token_urlsafe(16)
    hq = Pbx("pbx-hq", scripts=100, seed=8, states=True, client_secret=secret)
    br = Pbx("pbx-br", scripts=5, seed=9, client_secret=secret)
    async with serve(Simulator([hq, br])) as base:
        config = write_config(
            folder / "auditor.toml",
            f"sqlite:///{folder / 'audit.db'}",
            base,
            ("pbx-hq", "pbx-br", "pbx-idle"),
        )
        cli = Cli(config, secret)
        steps = [await cli("once", "--target", "pbx-hq", "--target", "pbx-br")]
        pre_start = hq.settings["PreStartScript"]
        named = {pre_start, hq.settings["PostStartScript"]}
        others = [n for n in hq.filenames if n not in named]
        removed, disconnected = others[0], others[1]
        hq.add_script(LONG_NAME, state="Connected")
        hq.remove_script(removed)
        hq.remove_script(pre_start)
        hq.update_settings(
            Mode="Passive" if hq.settings["Mode"] == "Active" else "Active",
            Condition="AnyService" if hq.settings["Condition"] == "AllService" else "AllService",
            Interval=hq.settings["Interval"] + 30,
            TestTunnel=not hq.settings["TestTunnel"],
        )
        hq.set_state(disconnected, "Disconnected")
        steps.append(
            await cli("once", "--target", "pbx-hq", "--target", "pbx-br", "--fail-on", "critical")
        )
        hq.add_script(pre_start, state="Connected")
        steps.append(
            await cli("once", "--target", "pbx-hq", "--target", "pbx-br", "--fail-on", "warning")
        )
        hq.set_down(True, mode="status")
        steps.append(await cli("once", "--target", "pbx-hq", "--target", "pbx-br"))
        steps.append(await cli("once", "--target", "pbx-hq", "--target", "pbx-br"))
        history, alerts, runs = await asyncio.gather(
            cli.ok("history", "--json", "--limit", "0"),
            cli.ok("alerts", "--json", "--limit", "0"),
            cli.ok("runs", "--json", "--limit", "0"),
        )
    return Story(
        folder=folder,
        config=config,
        base=base,
        secret=secret,
        steps=steps,
        disconnected=disconnected,
        removed=removed,
        pre_start=pre_start,
        history=history.json(),
        alerts=alerts.json(),
        runs=runs.json(),
    )


def _run_apart(coro: Coroutine[Any, Any, T]) -> T:
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Story:
    return _run_apart(_make_story(tmp_path_factory.mktemp("story")))


def fields(outcome: Outcome) -> list[list[str]]:
    return [line.split("\t") for line in outcome.stdout.splitlines()]


# -- output made for pipes ---------------------------------------------------------------


async def test_piped_history_is_one_unbroken_line_per_change(story: Story) -> None:
    piped = await story.cli().ok("history", "--limit", "0")
    lines = fields(piped)
    assert len(lines) == len(story.history)
    for line, change in zip(lines, story.history, strict=True):
        assert line[:7] == [
            str(change["id"]),
            change["at"],
            change["target"],
            change["kind"],
            "yes" if change["baseline"] else "",
            change["collection"],
            change["key"],
        ]
        assert len(line) == 8
    long = [line for line in lines if LONG_NAME in "\t".join(line)]
    assert [line[6] for line in long] == [LONG_NAME]
    # Every changed field, where a table shows three and "(+1)".
    settings = next(
        line
        for line in lines
        if line[5] == SETTINGS and line[3] == "changed" and line[2] == "pbx-hq"
    )
    assert [f.split(": ")[0] for f in settings[7].split(", ")] == sorted(SETTINGS_CHANGED)
    assert piped.stderr == ""


async def test_piped_runs_alerts_show_diff_are_one_line_per_record(story: Story) -> None:
    cli = story.cli()
    hq_runs = [r for r in story.runs if r["target"] == "pbx-hq" and r["status"] == "ok"]
    runs, alerts, show, diff = await asyncio.gather(
        cli.ok("runs", "--limit", "0"),
        cli.ok("alerts", "--limit", "0"),
        cli.ok("show", "--run", str(hq_runs[1]["id"])),
        cli.ok("diff", str(hq_runs[0]["id"]), str(hq_runs[1]["id"])),
    )
    assert fields(runs) == [
        [
            str(r["id"]),
            r["target"],
            r["started_at"],
            r["status"],
            "" if r["items"] is None else str(r["items"]),
            "" if r["pages"] is None else str(r["pages"]),
            r["error"] or "",
        ]
        for r in story.runs
    ]
    assert any(r["error"] for r in story.runs)
    assert fields(alerts) == [
        [str(a["id"]), a["at"], a["target"], a["kind"], a["status"], a["severity"], a["message"]]
        for a in story.alerts
    ]
    shown = await cli.ok("show", "--run", str(hq_runs[1]["id"]), "--json")
    scripts = shown.json()["failover_scripts"]
    lines = fields(show)
    assert len(lines) == len(scripts) + 1
    assert [line[:2] for line in lines[:-1]] == [[SCRIPTS, s["Filename"]] for s in scripts]
    assert [LONG_NAME, "State=Connected"] in [line[1:] for line in lines]
    settings = shown.json()["failover_settings"]
    assert lines[-1][:2] == [SETTINGS, SETTINGS_KEY]
    assert f"Mode={settings['Mode']}" in lines[-1]
    changed = {(c["kind"], c["collection"], c["key"]) for c in story.history}
    assert {tuple(line[:3]) for line in fields(diff)} <= changed
    assert ["added", SCRIPTS, LONG_NAME] in [line[:3] for line in fields(diff)]


async def test_a_terminal_still_gets_a_table(story: Story) -> None:
    # The table is for a person: on a terminal it may wrap a long name, never in a pipe.
    leader, follower = pty.openpty()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "auditor",
        "--config",
        str(story.config),
        "history",
        "--limit",
        "2",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=follower,
        stderr=asyncio.subprocess.PIPE,
        env={**story.cli().env, "COLUMNS": "200"},
    )
    os.close(follower)
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    _close_transport(proc)
    shown = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        shown += chunk
    os.close(leader)
    assert proc.returncode == 0, err
    plain = re.sub(r"\x1b\[[0-9;]*m", "", shown.decode())  # no colours, no bold
    header = next(line for line in plain.splitlines() if "┃" in line)
    assert [c.strip() for c in header.split("┃")[1:-1]] == [
        "id",
        "at (UTC)",
        "target",
        "kind",
        "baseline",
        "collection",
        "key",
        "fields",
    ]
    assert err.decode().splitlines() == [
        f"history: newest 2 of {len(story.history)} (--limit 0 for all)"
    ]


async def test_a_cut_list_says_so_on_stderr(story: Story) -> None:
    cli = story.cli()
    runs, history, alerts, whole = await asyncio.gather(
        cli.ok("runs", "--limit", "3"),
        cli.ok("history", "--limit", "5", "--json", "--target", "pbx-br"),
        cli.ok("alerts", "--limit", "2", "--kind", "script.removed"),
        cli.ok("runs", "--limit", str(len(story.runs))),
    )
    assert len(runs.stdout.splitlines()) == 3
    assert runs.stderr == f"runs: newest 3 of {len(story.runs)} (--limit 0 for all)\n"
    assert [r[0] for r in fields(runs)] == [str(r["id"]) for r in story.runs[-3:]]
    branch = [c for c in story.history if c["target"] == "pbx-br"]
    assert history.json() == branch[-5:]
    assert history.stderr == f"history: newest 5 of {len(branch)} (--limit 0 for all)\n"
    # Exactly two script.removed alerts: the limit took them all, nothing to say.
    assert len(alerts.stdout.splitlines()) == 2
    assert alerts.stderr == ""
    assert whole.stderr == ""


UNKNOWN_TARGET = [
    ("runs", "--target", "pbx-hx"),
    ("history", "--target", "pbx-hx"),
    ("alerts", "--target", "pbx-hx"),
    ("alerts", "--undelivered", "--target", "pbx-hx"),
    ("show", "--target", "pbx-hx"),
    ("export", "--target", "pbx-hx"),
    ("status", "--target", "pbx-br", "--target", "pbx-hx"),
    ("once", "--target", "pbx-hx"),
    ("scripts", "--target", "pbx-hx"),
]


async def test_an_unknown_target_is_an_error_listing_the_known_ones(story: Story) -> None:
    cli = story.cli()
    outcomes = await asyncio.gather(*(cli(*args) for args in UNKNOWN_TARGET))
    for outcome in outcomes:
        assert outcome.code == 2, str(outcome)
        assert outcome.stdout == "", str(outcome)
        assert outcome.stderr.splitlines() == [
            f"error: --target: no target named 'pbx-hx' {KNOWN}; did you mean 'pbx-hq'?"
        ], str(outcome)


async def test_a_target_that_left_the_configuration_can_still_be_read(story: Story) -> None:
    # pbx-br is recorded but no longer configured: its record is there to read.
    only_hq = write_config(
        story.folder / "only-hq.toml",
        f"sqlite:///{story.folder / 'audit.db'}",
        story.base,
        ("pbx-hq",),
    )
    cli = story.cli(only_hq)
    history, once = await asyncio.gather(
        cli.ok("history", "--json", "--limit", "0", "--target", "pbx-br"),
        cli("once", "--target", "pbx-br"),
    )
    assert history.json() == [c for c in story.history if c["target"] == "pbx-br"]
    # But only a configured target can be audited.
    assert once.code == 2
    assert once.stderr.splitlines() == ["error: --target: no target named 'pbx-br' (known: pbx-hq)"]


# -- no traceback without -v ---------------------------------------------------------------


async def _spawn(
    config: Path, env: dict[str, str], *args: str, stdout: Any, fsize: int | None = None
) -> tuple[int, str]:
    def limit() -> None:
        if fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "auditor",
        "--config",
        str(config),
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=stdout,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        preexec_fn=limit,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    _close_transport(proc)
    assert proc.returncode is not None
    return proc.returncode, err.decode()


def _close_transport(proc: asyncio.subprocess.Process) -> None:
    # As tests/clirun.py does: Python 3.11 would close it when collected, maybe after the
    # test's event loop has closed, and fail there.
    transport = getattr(proc, "_transport", None)
    if transport is not None:
        transport.close()


async def test_export_to_a_path_it_cannot_write_is_one_line(story: Story, tmp_path: Path) -> None:
    cli = story.cli()
    missing, folder, device = await asyncio.gather(
        cli("export", "-o", str(tmp_path / "no-such-dir" / "x.json")),
        cli("export", "-o", str(tmp_path)),
        cli("export", "-o", "/dev/full"),
    )
    assert missing.code == folder.code == 2
    assert missing.stderr.splitlines() == [
        f"error: export: cannot write {tmp_path / 'no-such-dir' / 'x.json'}: "
        "No such file or directory"
    ]
    assert folder.stderr.splitlines() == [f"error: export: cannot write {tmp_path}: Is a directory"]
    assert device.code == 1
    assert device.stderr.splitlines() == [
        "error: export: writing /dev/full failed: No space left on device"
    ]


async def test_an_export_that_runs_out_of_room_leaves_the_file_as_it_was(
    story: Story, tmp_path: Path
) -> None:
    # A file size limit stands in for a full disk: the write fails part-way. It is above
    # the 32 KiB SQLite's shared-memory file needs, and well below the export (~50 kB).
    evidence = tmp_path / "evidence.json"
    evidence.write_text("the previous export\n", encoding="utf-8")
    code, err = await _spawn(
        story.config,
        story.cli().env,
        "export",
        "-o",
        str(evidence),
        stdout=asyncio.subprocess.DEVNULL,
        fsize=40_000,
    )
    assert code == 1
    assert err.splitlines() == [
        f"error: export: writing {evidence} failed: File too large; {evidence} is unchanged"
    ]
    assert evidence.read_text(encoding="utf-8") == "the previous export\n"
    assert sorted(os.listdir(tmp_path)) == ["evidence.json"]
    done = await story.cli().ok("export", "-o", str(evidence))
    assert done.stdout == ""
    assert '"changes": [' in evidence.read_text(encoding="utf-8")
    assert sorted(os.listdir(tmp_path)) == ["evidence.json"]
    # The mode a new file gets from the umask, not the 0600 of a temporary file.
    umask = os.umask(0)
    os.umask(umask)
    assert evidence.stat().st_mode & 0o777 == 0o666 & ~umask


async def test_a_reader_that_goes_away_ends_the_command_quietly(story: Story) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        code, err = await _spawn(
            story.config, story.cli().env, "history", "--limit", "0", stdout=write_end
        )
    finally:
        os.close(write_end)
    assert (code, err) == (141, "")


async def test_simulate_on_a_busy_port_or_with_a_bad_pbx_is_one_line(story: Story) -> None:
    cli = story.cli()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        taken, twice, bad_name, negative = await asyncio.gather(
            cli("simulate", "--port", port),
            cli("simulate", "--port", "0", "--pbx", "a", "--pbx", "a"),
            cli("simulate", "--port", "0", "--pbx", "a/b"),
            cli("simulate", "--port", "0", "--pbx", "a:-1"),
        )
    assert taken.code == twice.code == bad_name.code == negative.code == 2
    assert taken.stderr.splitlines() == [
        f"error: simulate: cannot listen on 127.0.0.1:{port}: address already in use"
    ]
    assert twice.stderr.splitlines() == [
        "error: simulate: --pbx: a PBX named 'a' is already served"
    ]
    assert bad_name.stderr.startswith("error: simulate: --pbx: invalid PBX name 'a/b'")
    assert len(bad_name.stderr.splitlines()) == 1
    assert "SCRIPTS must not be negative" in negative.stderr


async def test_demo_keeping_into_a_file_is_one_line(story: Story) -> None:
    done = await story.cli()("demo", "--keep", str(story.config))
    assert done.code == 2
    assert done.stderr.splitlines() == [
        f"error: demo: --keep {story.config}: cannot make the directory: File exists"
    ]


# -- status and once --fail-on ------------------------------------------------------------


def test_once_fail_on_counts_the_alerts_the_run_raised(story: Story) -> None:
    baseline, change, back, down, disconnected = story.steps
    assert baseline.code == 0
    # The change run completed; it raised a critical settings.script_missing.
    assert change.code == 1, str(change)
    assert "settings.script_missing" in {a["kind"] for a in change.lines()}
    assert "once: 1 alert(s) of severity critical or higher raised (--fail-on critical)" in (
        change.stderr.splitlines()
    )
    # The next run resolved it (and raised an info script.added): nothing at warning or above.
    assert {(a["kind"], a["status"]) for a in back.lines()} == {
        ("script.added", "firing"),
        ("settings.script_missing", "resolved"),
    }
    assert back.code == 0, str(back)
    assert "--fail-on" not in back.stderr
    # A failed target is exit 1 with or without --fail-on.
    assert down.code == disconnected.code == 1
    assert "pbx-hq: failed:" in down.stderr


async def test_status_says_where_each_target_stands(story: Story) -> None:
    cli = story.cli()
    every, as_json, branch = await asyncio.gather(
        cli("status"), cli("status", "--json"), cli("status", "--target", "pbx-br")
    )
    assert every.code == as_json.code == 1
    assert branch.code == 0, str(branch)
    data = as_json.json()
    assert data["ok"] is False
    by_name = {t["target"]: t for t in data["targets"]}
    assert list(by_name) == ["pbx-hq", "pbx-br", "pbx-idle"]
    hq, br, idle = by_name["pbx-hq"], by_name["pbx-br"], by_name["pbx-idle"]
    last_hq = max(r["id"] for r in story.runs if r["target"] == "pbx-hq" and r["status"] == "ok")
    assert (hq["state"], hq["failures_in_row"], hq["disconnected"]) == ("disconnected", 2, True)
    assert hq["last_complete_run_id"] == last_hq
    assert {(a["kind"], a["key"], a["severity"]) for a in hq["open_alerts"]} == {
        ("script.disconnected", story.disconnected, "warning"),
        ("audit.failed", None, "warning"),
        ("target.disconnected", None, "critical"),
    }
    assert (br["state"], br["failures_in_row"], br["open_alerts"]) == ("ok", 0, [])
    assert idle["state"] == "not audited"
    assert idle["last_complete_run_id"] is None
    # `once` schedules nothing: only a daemon does.
    for target in data["targets"]:
        assert (target["next_run_at"], target["next_run"]) == (None, "not scheduled")
    problems = every.stderr.splitlines()
    assert problems[0] == "status: pbx-hq: disconnected: 2 failed runs in a row"
    assert problems[1].startswith("status: pbx-hq: critical alert firing since ")
    assert problems[1].endswith(": target.disconnected")
    assert len(problems) == 2
    assert [line[:2] for line in fields(every)] == [
        ["pbx-hq", "disconnected"],
        ["pbx-br", "ok"],
        ["pbx-idle", "not audited"],
    ]
    assert fields(every)[1][2] == str(br["last_complete_run_id"])
    assert fields(every)[0][4:7] == ["2", "3", "1"]
    assert fields(every)[2][7] == "not scheduled"
    assert branch.stderr == ""


async def test_status_reads_the_daemons_schedule_and_a_max_age(
    story: Story, tmp_path: Path
) -> None:
    for path in story.folder.glob("audit.db*"):
        shutil.copy(path, tmp_path / path.name)
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    config = write_config(
        tmp_path / "auditor.toml", url, story.base, ("pbx-hq", "pbx-br", "pbx-idle")
    )
    now = utcnow()
    due = {"pbx-br": now + timedelta(hours=1), "pbx-hq": now - timedelta(hours=3)}
    # What the daemon does at start: every configured target gets a next run.
    async with await Store.open(url) as store:
        await store.schedule.sync_targets(
            [(name, f"{story.base}/{name}") for name in due], lambda name: due[name]
        )
    cli = story.cli(config)
    plain, aged = await asyncio.gather(
        cli("status", "--json", "--target", "pbx-br"),
        cli("status", "--json", "--target", "pbx-br", "--max-age", "1s"),
    )
    br = plain.json()["targets"][0]
    assert plain.code == 0, str(plain)
    assert br["next_run"] in ("in 59m", "in 60m")
    assert br["next_run_at"] is not None
    assert aged.code == 1
    assert aged.json()["targets"][0]["state"] == "stale"
    assert aged.stderr.splitlines() == [
        f"status: pbx-br: no complete run since {br['last_complete_at']}"
    ]
    hq = (await cli("status", "--json", "--target", "pbx-hq")).json()["targets"][0]
    assert hq["next_run"] == "overdue by 3h"


# -- filters -------------------------------------------------------------------------------


async def test_history_filters(story: Story) -> None:
    cli = story.cli()
    changes = story.history
    key, removed, two_kinds, settings, both = await asyncio.gather(
        cli.ok("history", "--json", "--limit", "0", "--key", LONG_NAME),
        cli.ok("history", "--json", "--limit", "0", "--kind", "removed"),
        cli.ok("history", "--json", "--limit", "0", "--kind", "removed", "--kind", "changed"),
        cli.ok("history", "--json", "--limit", "0", "--collection", "settings"),
        cli.ok(
            "history", "--json", "--limit", "0", "--target", "pbx-br", "--collection", "scripts"
        ),
    )
    assert [(c["kind"], c["key"]) for c in key.json()] == [("added", LONG_NAME)]
    assert removed.json() == [c for c in changes if c["kind"] == "removed"]
    assert {c["key"] for c in removed.json()} == {story.removed, story.pre_start}
    assert two_kinds.json() == [c for c in changes if c["kind"] in ("removed", "changed")]
    assert settings.json() == [c for c in changes if c["collection"] == SETTINGS]
    assert len(settings.json()) == 3  # two baselines and the mode switch
    assert both.json() == [
        c for c in changes if c["target"] == "pbx-br" and c["collection"] == SCRIPTS
    ]
    wrong = await cli("history", "--collection", "script")
    assert wrong.code == 2
    assert "must be scripts, settings or one of failover_scripts" in wrong.stderr


def _newest_per_fingerprint(alerts: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    newest: dict[str, dict[str, Any]] = {}
    for alert in alerts:
        newest[alert["fingerprint"]] = alert
    return newest


async def test_alert_filters(story: Story) -> None:
    cli = story.cli()
    every = story.alerts
    firing, kind, critical, warning, mixed = await asyncio.gather(
        cli.ok("alerts", "--json", "--limit", "0", "--firing"),
        cli.ok("alerts", "--json", "--limit", "0", "--kind", "script.removed"),
        cli.ok("alerts", "--json", "--limit", "0", "--severity", "critical"),
        cli.ok("alerts", "--json", "--limit", "0", "--severity", "warning"),
        cli.ok("alerts", "--json", "--firing", "--severity", "critical", "--target", "pbx-hq"),
    )
    assert {(a["kind"], a["key"]) for a in firing.json()} == {
        ("script.disconnected", story.disconnected),
        ("audit.failed", None),
        ("target.disconnected", None),
    }
    newest = _newest_per_fingerprint(every)
    for alert in firing.json():
        assert alert == newest[alert["fingerprint"]]
        assert alert["status"] == "firing"
    assert kind.json() == [a for a in every if a["kind"] == "script.removed"]
    assert len(kind.json()) == 2
    # A resolution is recorded as info, and counts with the severity of what it resolved.
    missing = [a for a in every if a["kind"] == "settings.script_missing"]
    assert [(a["status"], a["severity"]) for a in missing] == [
        ("firing", "critical"),
        ("resolved", "info"),
    ]
    assert critical.json() == [a for a in every if a["severity"] == "critical" or a in missing]
    assert {a["kind"] for a in critical.json()} == {
        "settings.script_missing",
        "target.disconnected",
    }
    assert warning.json() == [a for a in every if a["severity"] != "info" or a in missing]
    assert [a["kind"] for a in mixed.json()] == ["target.disconnected"]


async def test_naive_times_are_utc_and_the_help_says_so(story: Story) -> None:
    cli = story.cli()
    # The first change after the baselines, at its recorded time (UTC, with a Z).
    later = story.history[next(i for i, c in enumerate(story.history) if c["kind"] != "added")]
    at = later["at"]
    naive = at.removesuffix("Z")
    aware, plain, shifted, helped = await asyncio.gather(
        cli.ok("history", "--json", "--limit", "0", "--since", at),
        cli.ok("history", "--json", "--limit", "0", "--since", naive),
        cli.ok("history", "--json", "--limit", "0", "--since", naive + "+01:00"),
        cli.ok("history", "--help"),
    )
    assert plain.json() == aware.json()
    assert later in plain.json()
    assert all(c["at"] >= at for c in plain.json())
    # The same wall-clock time an hour east of UTC is an hour earlier: the whole record.
    assert shifted.json() == story.history
    text = " ".join(helped.stdout.split())
    assert "in UTC unless it carries an offset" in text
    backwards = await cli("history", "--since", "1d", "--until", "2d")
    assert backwards.code == 2
    assert backwards.stderr.startswith("error: --until is before --since (")
