"""A command imports what it needs and no more: start-up is most of a short command's time.

Each command runs as a real subprocess under ``python -X importtime``, which names every
module the process imported (on stderr); the heavy ones a command does not need must not be
among them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Never needed to answer --version or --help, to check a config, or to read the record.
NEVER = ("aiohttp", "alembic", "apprise", "auditor.simulator", "apscheduler")
# Not even needed to check a config.
NOT_FOR_CONFIG = ("sqlalchemy", "structlog", "aiosqlite", "asyncpg", "rich")
# Not even needed to say the version or the usage.
NOT_FOR_VERSION = ("pydantic", "pydantic_settings", "asyncio", "auditor.config")


def imported_by(tmp_path: Path, *args: str) -> set[str]:
    """Every module ``3cx-auditor ARGS`` imported, from ``-X importtime``; the command must
    succeed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDITOR_")}
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "auditor", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    modules = set()
    for line in done.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            modules.add(line.rsplit("|", 1)[1].strip())
    assert "auditor.cli" in modules  # the trace is there at all
    return modules


def heavy(modules: set[str], packages: tuple[str, ...]) -> list[str]:
    return sorted(p for p in packages if any(m == p or m.startswith(p + ".") for m in modules))


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "auditor.toml"
    path.write_text(
        f"""
[database]
url = "sqlite:///{tmp_path / "audit.db"}"

[[targets]]
name = "pbx-hq"
url = "https://pbx-hq.example.com"
client_id = "auditor"
client_secret_file = "{tmp_path / "pbx.secret"}"
"""
    )
    path.chmod(0o600)
    (tmp_path / "pbx.secret").write_text("s3cret\n")
    return path


@pytest.mark.parametrize("args", [("--version",), ("--help",), ("history", "--help")])
def test_version_and_usage_import_only_the_parser(tmp_path: Path, args: tuple[str, ...]) -> None:
    modules = imported_by(tmp_path, *args)
    assert heavy(modules, NEVER + NOT_FOR_CONFIG + NOT_FOR_VERSION) == []


def test_check_config_imports_no_store_client_or_logging(tmp_path: Path, config: Path) -> None:
    modules = imported_by(tmp_path, "--config", str(config), "check-config")
    assert "pydantic" in modules
    assert heavy(modules, NEVER + NOT_FOR_CONFIG) == []


@pytest.mark.parametrize(
    "command",
    [
        ("history",),
        ("runs",),
        ("alerts",),
        ("status",),
        ("verify",),
        ("export", "--format", "json"),
    ],
)
def test_reading_the_record_imports_no_client_migrations_or_simulator(
    tmp_path: Path, config: Path, command: tuple[str, ...]
) -> None:
    # A database already at the newest schema, as any but the first command finds it.
    imported_by(tmp_path, "--config", str(config), "db", "upgrade")
    modules = imported_by(tmp_path, "--config", str(config), *command)
    assert "sqlalchemy" in modules
    assert heavy(modules, NEVER) == []


def test_the_parser_spells_the_secret_kinds_as_the_settings_do() -> None:
    """``auditor.cli.common`` writes the set out rather than load pydantic to import it."""
    from auditor.cli.common import ALL_SECRETS
    from auditor.config import SECRET_KINDS

    assert ALL_SECRETS == SECRET_KINDS
