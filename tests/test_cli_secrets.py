"""Reading the record needs no secret; the commands that talk to a PBX read theirs.

A record is made by ``once`` with every secret at hand (a PBX secret in an environment
variable, another as a systemd credential file, a webhook's signing secret in a variable),
then every command that reads the record runs as real subprocesses in a shell where none
of them can be read, as an admin's shell beside the service would be.
"""

from __future__ import annotations

import argparse
import secrets
from collections.abc import Iterator
from pathlib import Path

from auditor.cli import build_parser
from auditor.simulator import Pbx, Simulator, serve
from tests.clirun import SECRET_ENV, Cli

WEBHOOK_ENV = "AUDITOR_TEST_WEBHOOK_SECRET"


def _config(folder: Path, base: str) -> Path:
    path = folder / "auditor.toml"
    path.write_text(
        f"""
[database]
url = "sqlite:///{folder / "audit.db"}"

[[alerts.webhook]]
name = "hook"
url = "http://127.0.0.1:9/never"
secret_env = "{WEBHOOK_ENV}"

[[targets]]
name = "pbx-a"
url = "{base}/pbx-a"
client_id = "auditor"
client_secret_env = "{SECRET_ENV}"
retries = 0

[[targets]]
name = "pbx-b"
url = "{base}/pbx-b"
client_id = "auditor"
client_secret_file = "pbx-b.secret"
retries = 0
""",
        encoding="utf-8",
    )
    path.chmod(0o600)
    return path


def _without_secrets(cli: Cli) -> Cli:
    """The same configuration, in a shell that can read none of its secrets."""
    bare = Cli(cli.config, cli.secret)
    for name in (SECRET_ENV, WEBHOOK_ENV, "CREDENTIALS_DIRECTORY"):
        bare.env.pop(name, None)
    return bare


async def test_every_command_that_reads_the_record_runs_without_any_secret(
    tmp_path: Path,
) -> None:
    secret = "pbx-secret-" + secrets.token_urlsafe(16)
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "pbx-b.secret").write_text(secret + "\n")
    pbxs = [
        Pbx("pbx-a", scripts=6, seed=1, client_secret=secret),
        Pbx("pbx-b", scripts=3, seed=2, client_secret=secret),
    ]
    async with serve(Simulator(pbxs)) as base:
        cli = Cli(_config(tmp_path, base), secret)
        cli.env["CREDENTIALS_DIRECTORY"] = str(credentials)
        cli.env[WEBHOOK_ENV] = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY"
        await cli.ok("once")
        pbxs[0].add_script("added.sh")
        await cli.ok("once", "--target", "pbx-a")

        bare = _without_secrets(cli)
        runs = (await bare.ok("runs", "--json")).json()
        assert [(r["target"], r["status"]) for r in runs] == [
            ("pbx-a", "ok"),
            ("pbx-b", "ok"),
            ("pbx-a", "ok"),
        ]
        first, last = runs[0]["id"], runs[-1]["id"]
        history = (await bare.ok("history", "--json")).json()
        assert {"key": "added.sh", "kind": "added"}.items() <= history[-1].items()
        await bare.ok("alerts", "--json")
        shown = (await bare.ok("show", "--target", "pbx-a", "--json")).json()
        assert "added.sh" in str(shown)
        diffed = (await bare.ok("diff", str(first), str(last), "--json")).json()
        assert "added.sh" in str(diffed)
        assert "intact" in (await bare.ok("verify")).stdout
        assert '"added.sh"' in (await bare.ok("export", "--format", "json")).stdout
        await bare.ok("db", "upgrade")
        standing = (await bare.ok("status", "--json")).json()
        assert [(t["target"], t["state"]) for t in standing["targets"]] == [
            ("pbx-a", "ok"),
            ("pbx-b", "ok"),
        ]
        assert (await bare.ok("check-config", "--no-secrets")).stdout.startswith("config: ok:")

        # The commands that talk to a PBX (or sign webhooks) still need theirs, and say so.
        for args in (("once",), ("scripts", "--target", "pbx-a")):
            refused = await bare(*args)
            assert refused.code == 2, str(refused)
            assert (
                f"config: targets[0].client_secret_env: environment variable {SECRET_ENV} "
                "is not set or empty"
            ) in refused.stderr.splitlines()
        checked = await bare("check-config")
        assert checked.code == 2
        problems = checked.stderr.splitlines()
        assert any(
            line.startswith("config: targets[1].client_secret_file: cannot read pbx-b.secret")
            and "$CREDENTIALS_DIRECTORY is not set" in line
            and "--no-secrets" in line
            for line in problems
        ), checked.stderr
        assert (
            f"config: alerts.webhook[0].secret_env: environment variable {WEBHOOK_ENV} "
            "is not set or empty"
        ) in problems
        # `scripts` signs no webhook: the webhook's secret is not its business.
        pbx_only = Cli(cli.config, cli.secret)
        pbx_only.env["CREDENTIALS_DIRECTORY"] = str(credentials)
        pbx_only.env.pop(WEBHOOK_ENV, None)
        await pbx_only.ok("scripts", "--target", "pbx-b")


def _commands(
    parser: argparse.ArgumentParser, prefix: str = ""
) -> Iterator[tuple[str, frozenset[str]]]:
    """Every command (``db upgrade`` as one) and the secrets it declares."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, f"{prefix}{name} ")
            return
    yield prefix.strip(), frozenset(parser.get_default("secrets") or ())


def test_only_the_commands_that_talk_to_a_pbx_declare_secrets() -> None:
    """A command declares the secrets it reads; one that declares nothing reads none, so a
    new command that only reads the record needs no secret without saying anything."""
    commands = dict(_commands(build_parser()))
    assert {
        "runs",
        "history",
        "alerts",
        "show",
        "diff",
        "verify",
        "export",
        "db upgrade",
        "status",
    } <= set(commands)
    declared = {name: kinds for name, kinds in commands.items() if kinds}
    assert declared == {
        "scripts": {"targets"},
        "once": {"targets", "webhooks"},
        "run": {"targets", "webhooks"},
    }
