"""The README's examples, run and checked, so that they cannot drift from the code.

Every fenced ```` ```sh ```` block of README.md carries a marker, an HTML comment on the line
just before it (GitHub does not show it), saying what this test does with the block:

    <!-- readme-test: run -->         run it: every command must exit 0, or N where its
                                      comment says "(exit N)"
    <!-- readme-test: serve PORT -->  start its one command in the background (a server such
                                      as `simulate`) and wait until PORT answers; it is
                                      stopped when the last block has run
    <!-- readme-test: skip: WHY -->   do not run it (it needs root, systemd, a real PBX...);
                                      its `3cx-auditor` commands are still checked
    <!-- readme-test: file NAME -->   (on a ```` ```toml ```` block) write it to NAME, for
                                      the blocks after it

A ``sh`` block without a marker fails the test, naming its line. Every ``toml`` block is
validated by a real ``check-config``.

How the blocks run: in the README's order, as one bash script in a scratch directory, so
files, exported variables and shell variables carry from one block to the next as they
would in a terminal. What would need a real PBX or root is swapped for something local:

- ``3cx-auditor`` is this checkout (``python -m auditor``);
- ``https://NAME.example.com`` is a simulated PBX named NAME that this test serves, and
  the variable (``client_secret_env``) or credential file (``client_secret_file``) that a
  TOML block names for such a PBX's secret holds that simulator's secret;
- ``/var/lib/3cx-auditor`` is a scratch directory, and port 8080 a free port;
- curl fails on an HTTP error (it reads a ``.curlrc`` with ``fail-with-body``).

No command may print a traceback. Besides running them, from the real ``--help`` of every
command: each command and option a ``3cx-auditor`` line uses exists; each command has a row
in the README's Commands table, and each option in a row is one of its command's. The
config keys the text names (``audit.timeout``, ``[http] listen``, ``AUDITOR_DATABASE__URL``)
exist in the settings models, and the table of the simulator's control API lists exactly
the routes ``auditor/simulator/control.py`` serves.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shlex
import signal
import sys
import tomllib
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from auditor.config import Settings
from auditor.simulator import Pbx, Simulator, serve
from auditor.simulator.control import _ROUTES
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SCRIPT_TIMEOUT = 300.0
HELP_TIMEOUT = 60.0

MARKER = re.compile(r"^\s*<!--\s*readme-test:\s*(?P<kind>[a-z]+)\b:?\s*(?P<arg>.*?)\s*-->\s*$")
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[a-z]*)\s*$")
EXAMPLE_HOST = re.compile(r"https://([a-z0-9-]+)\.example\.com")
PORT = re.compile(r"\b8080\b")
STATE_DIR = "/var/lib/3cx-auditor"


# -- reading the README ----------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    lang: str
    line: int  # 1-based number of the fence line
    text: str  # the contents, without the fence's indentation
    kind: str | None  # the marker's kind, None without one
    arg: str = ""

    def commands(self) -> Iterator[tuple[int, str]]:
        """(line number, command) of each command, continuation lines joined; comment-only
        and blank lines left out."""
        pending: list[str] = []
        start = 0
        for number, line in enumerate(self.text.splitlines(), self.line + 1):
            if not pending and (not line.strip() or line.lstrip().startswith("#")):
                continue
            if not pending:
                start = number
            if line.rstrip().endswith("\\"):
                pending.append(line.rstrip()[:-1])
                continue
            pending.append(line)
            yield start, " ".join(part.strip() for part in pending)
            pending = []


def parse_blocks(text: str) -> tuple[list[Block], list[str]]:
    """The fenced blocks of ``text`` with their markers, and the problems found."""
    blocks: list[Block] = []
    problems: list[str] = []
    lines = text.splitlines()
    marker: tuple[int, str, str] | None = None
    index = 0
    while index < len(lines):
        line = lines[index]
        found = MARKER.match(line)
        fence = FENCE.match(line)
        if found:
            if marker is not None:
                problems.append(f"README.md:{marker[0]}: a readme-test marker with no block after")
            marker = (index + 1, found["kind"], found["arg"])
        elif fence:
            indent = fence["indent"]
            body: list[str] = []
            end = index + 1
            while end < len(lines) and lines[end].strip() != "```":
                body.append(lines[end][len(indent) :] if lines[end].startswith(indent) else "")
                end += 1
            kind, arg = (marker[1], marker[2]) if marker else (None, "")
            if marker is not None and marker[0] != index:
                problems.append(
                    f"README.md:{marker[0]}: a readme-test marker must be the line just "
                    "before its block"
                )
            blocks.append(Block(fence["lang"], index + 1, "\n".join(body), kind, arg))
            marker = None
            index = end
        index += 1
    if marker is not None:
        problems.append(f"README.md:{marker[0]}: a readme-test marker with no block after")
    for block in blocks:
        where = f"README.md:{block.line}: a ```{block.lang} block"
        if block.lang == "sh" and block.kind is None:
            problems.append(
                f"{where} without a marker: put <!-- readme-test: run --> (or serve PORT, or "
                "skip: WHY) on the line before it; see tests/test_readme.py"
            )
        elif block.lang == "sh" and block.kind not in ("run", "serve", "skip"):
            problems.append(f"{where} has marker {block.kind!r}: run, serve or skip")
        elif block.lang == "sh" and block.kind == "skip" and not block.arg:
            problems.append(f"{where} is skipped without saying why (skip: WHY)")
        elif block.lang == "sh" and block.kind == "serve" and not block.arg.isdigit():
            problems.append(f"{where}: serve needs the PORT to wait for")
        elif block.lang == "toml" and block.kind not in (None, "file"):
            problems.append(f"{where} has marker {block.kind!r}: only file NAME fits TOML")
        elif block.lang not in ("sh", "toml") and block.kind is not None:
            problems.append(f"{where} has a marker, but only sh and toml blocks are run")
    return blocks, problems


def readme_blocks() -> list[Block]:
    blocks, problems = parse_blocks(README.read_text(encoding="utf-8"))
    assert not problems, "\n".join(problems)
    return blocks


def inline_code(text: str) -> list[str]:
    """The inline code spans of the prose (fenced blocks left out)."""
    prose = re.sub(r"^\s*```.*?^\s*```", "", text, flags=re.MULTILINE | re.DOTALL)
    return re.findall(r"`([^`\n]+)`", prose)


# -- the markers themselves --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("```sh\nls\n```\n", "README.md:1: a ```sh block without a marker"),
        ("<!-- readme-test: skip -->\n```sh\nls\n```\n", "skipped without saying why"),
        ("<!-- readme-test: serve -->\n```sh\nls\n```\n", "serve needs the PORT"),
        ("<!-- readme-test: runs -->\n```sh\nls\n```\n", "has marker 'runs'"),
        ("<!-- readme-test: run -->\n\n```sh\nls\n```\n", "must be the line just before"),
        ("<!-- readme-test: run -->\ntext\n", "README.md:1: a readme-test marker with no block"),
        ("<!-- readme-test: run -->\n```toml\na = 1\n```\n", "only file NAME fits TOML"),
    ],
)
def test_a_block_without_a_fitting_marker_is_refused(text: str, problem: str) -> None:
    _blocks, problems = parse_blocks(text)
    assert any(problem in p for p in problems), problems


def test_markers_are_read() -> None:
    text = "  <!-- readme-test: skip: needs root -->\n  ```sh\n  a \\\n    --b\n  # c\n  d\n  ```\n"
    blocks, problems = parse_blocks(text)
    assert problems == []
    (block,) = blocks
    assert (block.lang, block.kind, block.arg, block.line) == ("sh", "skip", "needs root", 2)
    assert list(block.commands()) == [(3, "a --b"), (6, "d")]


# -- the real --help of every command ----------------------------------------------------------


async def _help(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "auditor",
        *args,
        "--help",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "COLUMNS": "200"},
    )
    out, err = await asyncio.wait_for(proc.communicate(), HELP_TIMEOUT)
    assert proc.returncode == 0, err.decode()
    return out.decode()


def _listed(text: str) -> list[str]:
    """The subcommands a --help lists (4-space indented names under the positionals)."""
    section = text.split("positional arguments:", 1)[1].split("options:", 1)[0]
    return re.findall(r"^    ([a-z][a-z-]*)", section, flags=re.MULTILINE)


def _options(text: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", text.split("options:", 1)[1]))


@dataclass
class Help:
    commands: dict[str, set[str]]  # command -> its options
    actions: dict[str, list[str]]  # command -> its subcommands (db: upgrade)
    global_options: set[str] = field(default_factory=set)


@pytest.fixture(scope="module")
def cli_help() -> Help:
    async def gather() -> Help:
        top = await _help()
        names = _listed(top)
        texts = await asyncio.gather(*(_help(name) for name in names))
        commands = {name: _options(text) for name, text in zip(names, texts, strict=True)}
        actions = {
            name: _listed(text)
            for name, text in zip(names, texts, strict=True)
            if "positional arguments:" in text and _listed(text)
        }
        return Help(commands, actions, _options(top))

    return asyncio.run(gather())


def _check_command(line: str, where: str, cli_help: Help) -> list[str]:
    tokens = shlex.split(line, comments=True)
    if not tokens or tokens[0] != "3cx-auditor":
        return []
    problems: list[str] = []
    rest = tokens[1:]
    while rest and rest[0].startswith("-"):
        option = rest.pop(0).split("=", 1)[0]
        if option not in cli_help.global_options:
            problems.append(f"{where}: 3cx-auditor has no option {option}")
        if option == "--config" and rest:
            rest.pop(0)
    if not rest:
        return problems
    command, *args = rest
    if command not in cli_help.commands:
        return [*problems, f"{where}: 3cx-auditor has no command {command!r}"]
    if command in cli_help.actions and (not args or args[0] not in cli_help.actions[command]):
        problems.append(f"{where}: {command} needs one of {cli_help.actions[command]}")
    for arg in args:
        option = arg.split("=", 1)[0]
        if option.startswith("-") and option not in cli_help.commands[command]:
            problems.append(f"{where}: 3cx-auditor {command} has no option {option}")
    return problems


def test_every_command_line_exists_in_help(cli_help: Help) -> None:
    problems: list[str] = []
    lines = 0
    for block in readme_blocks():
        if block.lang != "sh":
            continue
        for number, line in block.commands():
            lines += line.startswith("3cx-auditor")
            problems += _check_command(line, f"README.md:{number}", cli_help)
    assert lines >= 10
    assert not problems, "\n".join(problems)


def test_the_command_table_lists_every_command_and_only_their_options(cli_help: Help) -> None:
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Commands\n", 1)[1].split("\n### ", 1)[0]
    documented: set[str] = set()
    problems: list[str] = []
    for row in re.findall(r"^\| `.*\|$", section, flags=re.MULTILINE):
        cells = [c.strip() for c in row.replace("\\|", "\0").strip("|").split("|")]
        names = {span.split()[0] for span in re.findall(r"`([^`]+)`", cells[0])}
        documented |= names
        spans = " ".join(re.findall(r"`([^`]+)`", row.replace("\\|", "|")))
        for option in re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", spans):
            for name in names:
                known = cli_help.commands.get(name, set()) | cli_help.global_options
                if option not in known:
                    problems.append(f"Commands table: {name} has no option {option}")
    missing = sorted(set(cli_help.commands) - documented)
    unknown = sorted(documented - set(cli_help.commands))
    assert not missing, f"commands without a row in README.md's Commands table: {missing}"
    assert not unknown, f"rows of README.md's Commands table for no command: {unknown}"
    assert not problems, "\n".join(problems)


# -- configuration keys and the control API --------------------------------------------------


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def config_key_exists(path: list[str]) -> bool:
    model: type[BaseModel] | None = Settings
    for name in path:
        if model is None or name not in model.model_fields:
            return False
        model = _model_of(model.model_fields[name].annotation)
    return True


def _config_keys(spans: list[str]) -> Iterator[tuple[str, list[str]]]:
    sections = set(Settings.model_fields)
    for span in spans:
        if dotted := re.fullmatch(r"[a-z_]+(\.[a-z_]+)+", span):
            path = dotted[0].split(".")
            if path[0] in sections:
                yield span, path
        elif bracket := re.fullmatch(r"\[\[?([a-z_.]+)\]\]?(?: ([a-z_]+))?", span):
            yield span, [*bracket[1].split("."), *([bracket[2]] if bracket[2] else [])]
        elif env := re.fullmatch(r"AUDITOR_([A-Z0-9_]+?__[A-Z0-9_]+)(=.*)?", span):
            yield span, env[1].lower().split("__")


def _names_in_code() -> set[str]:
    """Dotted names the code spells out (log events such as ``schedule.missed``, alert kinds
    such as ``audit.failed``): named in the README, they are not config keys."""
    found: set[str] = set()
    for source in (ROOT / "auditor").rglob("*.py"):
        found |= set(re.findall(r"[\"']([a-z_]+\.[a-z_]+)[\"']", source.read_text("utf-8")))
    return found


def test_config_keys_named_in_the_text_exist() -> None:
    named = list(_config_keys(inline_code(README.read_text(encoding="utf-8"))))
    assert len(named) >= 10
    in_code = _names_in_code()
    unknown = [s for s, path in named if not config_key_exists(path) and s not in in_code]
    assert not unknown, f"README.md names config keys that do not exist: {unknown}"


def test_the_config_key_check_can_fail() -> None:
    assert config_key_exists(["alerts", "webhook", "min_severity"])
    assert config_key_exists(["targets", "state", "healthy"])
    spans = ["audit.timout", "[http] listne", "AUDITOR_DATABSE__URL=x", "model.field"]
    assert [span for span, path in _config_keys(spans) if not config_key_exists(path)] == [
        "audit.timout",
        "[http] listne",
        "AUDITOR_DATABSE__URL=x",
    ]


def test_the_control_api_table_is_what_the_simulator_serves() -> None:
    text = README.read_text(encoding="utf-8")
    rows = re.findall(r"^\| (GET|POST|PUT|PATCH|DELETE) \| `/_sim([^`]*)` \|", text, re.MULTILINE)
    documented = set()
    for method, path in rows:
        parts = [p for p in path.split("/") if p]
        documented.add((method, parts[1] if len(parts) > 1 else "", len(parts)))
    # The routes of /_sim itself are handled before the per-PBX table.
    served = set(_ROUTES) | {("GET", "", 0), ("POST", "", 0)}
    assert sorted(documented) == sorted(served)


# -- running the examples --------------------------------------------------------------------


@dataclass
class Scenario:
    scratch: Path
    sim_base: str
    secret: str
    port: int

    def substitute(self, text: str) -> str:
        text = EXAMPLE_HOST.sub(lambda m: f"{self.sim_base}/{m[1]}", text)
        text = text.replace(STATE_DIR, f"{self.scratch}{STATE_DIR}")
        return PORT.sub(str(self.port), text)

    def environment(self, blocks: list[Block]) -> dict[str, str]:
        """The environment of every command: this checkout's 3cx-auditor first on PATH, the
        secrets of the example PBXs, a .curlrc, nothing of the caller's AUDITOR_*."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("AUDITOR_")}
        env.pop("JOURNAL_STREAM", None)
        bin_dir = self.scratch / "bin"
        bin_dir.mkdir(exist_ok=True)
        shim = bin_dir / "3cx-auditor"
        shim.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m auditor "$@"\n')
        shim.chmod(0o755)
        credentials = self.scratch / "credentials"
        credentials.mkdir(exist_ok=True)
        (self.scratch / ".curlrc").write_text("fail-with-body\nshow-error\n")
        env |= {
            "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
            "PYTHONPATH": str(ROOT),
            "CURL_HOME": str(self.scratch),
            "CREDENTIALS_DIRECTORY": str(credentials),
            "COLUMNS": "200",
        }
        for block in blocks:
            if block.lang != "toml":
                continue
            for target in tomllib.loads(block.text).get("targets", []):
                if not EXAMPLE_HOST.match(str(target.get("url", ""))):
                    continue
                if "client_secret_env" in target:
                    env[target["client_secret_env"]] = self.secret
                if "client_secret_file" in target:
                    (credentials / target["client_secret_file"]).write_text(self.secret)
        return env

    def script(self, blocks: list[Block]) -> str:
        """One bash script running the blocks in order, each command checked."""
        out = [
            "set -o pipefail",
            "__servers=''",
            "__stop() { for p in $__servers; do kill $p 2>/dev/null; done; wait; }",
            "trap __stop EXIT",
            "__check() {",
            '  if [ "$1" -ne "$2" ]; then',
            '    echo "readme-test: README.md:$3 exited $1, the README says $2" >&2; exit 97',
            "  fi",
            "}",
            "__wait_port() {",
            "  for _ in $(seq 300); do",
            "    (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0",
            '    kill -0 "$2" 2>/dev/null || break',
            "    sleep 0.1",
            "  done",
            '  echo "readme-test: README.md:$3 never answered on port $1" >&2; exit 96',
            "}",
        ]
        for block in blocks:
            if block.lang == "toml" and block.kind == "file":
                out += [
                    f"# README.md:{block.line}",
                    f"cat > {shlex.quote(block.arg)} <<'README_TEST_EOF'",
                    self.substitute(block.text),
                    "README_TEST_EOF",
                ]
            elif block.lang == "sh" and block.kind == "serve":
                ((number, command),) = block.commands()
                port = self.substitute(block.arg)
                out += [
                    f"# README.md:{number}",
                    f"{self.substitute(command)} &",
                    '__servers="$__servers $!"',
                    f"__wait_port {port} $! {number}",
                ]
            elif block.lang == "sh" and block.kind == "run":
                for number, command in block.commands():
                    exit_code = re.search(r"\(exit (\d+)\)", command)
                    out += [
                        f"# README.md:{number}",
                        self.substitute(command),
                        f"__check $? {exit_code[1] if exit_code else 0} {number}",
                    ]
        return "\n".join(out) + "\n"


def _example_pbxs(blocks: list[Block]) -> list[str]:
    return sorted({m for b in blocks for m in EXAMPLE_HOST.findall(b.text)})


async def _bash(script: Path, cwd: Path, env: Mapping[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        "bash",
        str(script),
        cwd=cwd,
        env=dict(env),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), SCRIPT_TIMEOUT)
    except TimeoutError:
        os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_the_examples_run(tmp_path: Path) -> None:
    blocks = readme_blocks()
    secret = "readme-" + secrets.token_urlsafe(12)
    pbxs = [Pbx(name, scripts=12, client_secret=secret) for name in _example_pbxs(blocks)]
    assert pbxs, "no https://NAME.example.com PBX in the README's examples"
    (tmp_path / STATE_DIR.lstrip("/")).mkdir(parents=True)
    async with serve(Simulator(pbxs)) as base:
        scenario = Scenario(tmp_path, base, secret, free_port())
        script = tmp_path / "readme.sh"
        script.write_text(scenario.script(blocks))
        code, out, err = await _bash(script, tmp_path, scenario.environment(blocks))
    report = f"exit {code}\n--- stdout (end)\n{out[-4000:]}\n--- stderr (end)\n{err[-4000:]}"
    assert code == 0, report
    assert "Traceback" not in out + err, report
    assert secret not in out + err, report
    checked = script.read_text().count("__check $?")
    assert checked >= 20, script.read_text()
    # The commands ran against the simulators: the README's own flow left its record.
    assert (tmp_path / STATE_DIR.lstrip("/") / "audit.db").exists()
    assert (tmp_path / "sim-audit.db").exists()
    assert all(pbx.stats.logins >= 1 for pbx in pbxs)


async def test_a_command_that_fails_fails_the_run(tmp_path: Path) -> None:
    """The runner itself: an exit not documented stops the script and names the line."""
    blocks, problems = parse_blocks(
        "<!-- readme-test: run -->\n```sh\n"
        "true\nfalse    # (exit 1)\nfalse\necho not reached\n```\n"
    )
    assert problems == []
    scenario = Scenario(tmp_path, "http://127.0.0.1:9", "x", 1)
    script = tmp_path / "t.sh"
    script.write_text(scenario.script(blocks))
    code, out, err = await _bash(script, tmp_path, scenario.environment(blocks))
    assert code == 97
    assert "not reached" not in out
    assert err.strip() == "readme-test: README.md:5 exited 1, the README says 0"


# -- every TOML example is a valid config ----------------------------------------------------


async def test_every_toml_example_passes_check_config(tmp_path: Path) -> None:
    blocks = [b for b in readme_blocks() if b.lang == "toml"]
    assert len(blocks) >= 3
    scenario = Scenario(tmp_path, "http://127.0.0.1:9", "example-secret", free_port())
    env = scenario.environment(blocks)
    for block in blocks:
        for target in tomllib.loads(block.text).get("targets", []):
            if "client_secret_env" in target:
                env.setdefault(target["client_secret_env"], "example-secret")
    outcomes = []
    for block in blocks:
        config = tmp_path / f"readme-{block.line}.toml"
        config.write_text(scenario.substitute(block.text))
        config.chmod(0o600)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "auditor",
            "--config",
            str(config),
            "check-config",
            env=env,
            cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), HELP_TIMEOUT)
        outcomes.append((block.line, proc.returncode, out.decode() + err.decode()))
    failed = [f"README.md:{line}: exit {code}: {text}" for line, code, text in outcomes if code]
    assert not failed, "\n".join(failed)
