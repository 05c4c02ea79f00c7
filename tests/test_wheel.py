"""The wheel: built from a clean checkout, installed on its own, it migrates a fresh database.

The migrations live in the top-level ``migrations/`` and ship inside the wheel as the package
``auditor.migrations`` (``pyproject.toml``); these tests prove that an installed service finds
them without the source tree.

The clean checkout is a copy of the files git tracks, with their contents in the work tree:
nothing untracked (``build/``, ``*.egg-info``, a script not yet added to
``migrations/versions``) can get into the wheel, and an edit not yet committed is tested all
the same (in CI the work tree is a fresh clone anyway). The wheel is built by the virtualenv's
own setuptools without build isolation and installed with ``--no-deps`` into a folder of its
own, so that everything runs offline in a few seconds; the program then runs with that folder
first on its path, ahead of the editable install (which only answers for what the path lacks).
These tests never change the editable install or the source tree.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import zipfile
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pytest

from auditor.store.engine import SCHEMA_HEAD, head_revisions
from auditor.store.schema import metadata

ROOT = Path(__file__).resolve().parents[1]
STEP_TIMEOUT = 300.0


@dataclass(frozen=True)
class Built:
    wheel: Path
    site: Path  # the folder the wheel was installed into
    tracked: list[str]  # the files of the clean checkout, relative to it


def _run(args: list[str], *, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        args,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=STEP_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, f"{' '.join(args)} -> {done.returncode}\n{done.stderr[-3000:]}"
    return done.stdout


def _clean_checkout(into: Path) -> list[str]:
    """Copy the files git tracks (as they are in the work tree) into ``into``."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.fail("the wheel is built from the files git tracks: git and a checkout are needed")
    listed = _run(["git", "ls-files", "-z"], cwd=ROOT).split("\0")
    tracked = [name for name in listed if name and (ROOT / name).is_file()]
    for name in tracked:
        (into / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, into / name)
    return tracked


def _quiet_env(**extra: str) -> dict[str, str]:
    """The environment without this project's settings or a path of its own."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("AUDITOR_") and key not in ("PYTHONPATH", "PYTHONHOME")
    }
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1", **extra)
    return env


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    base = tmp_path_factory.mktemp("wheel")
    source, dist, site = base / "checkout", base / "dist", base / "site"
    source.mkdir()
    tracked = _clean_checkout(source)
    pip = [sys.executable, "-m", "pip"]
    _run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(dist), "."],
        cwd=source,
        env=_quiet_env(),
    )
    (wheel,) = dist.glob("*.whl")
    _run(
        [*pip, "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)],
        cwd=base,
        env=_quiet_env(),
    )
    return Built(wheel=wheel, site=site, tracked=tracked)


def test_the_wheel_holds_every_file_of_the_package_and_of_the_migrations(built: Built) -> None:
    """Every tracked file under ``auditor/`` and ``migrations/`` (as ``auditor/migrations/``),
    and nothing else; a package missing from ``[tool.setuptools] packages`` shows here."""
    expected = {name for name in built.tracked if name.startswith("auditor/")} | {
        "auditor/" + name for name in built.tracked if name.startswith("migrations/")
    }
    with zipfile.ZipFile(built.wheel) as wheel:
        shipped = {name for name in wheel.namelist() if ".dist-info/" not in name}
    missing, extra = sorted(expected - shipped), sorted(shipped - expected)
    assert not missing, f"not in the wheel (add its package to pyproject.toml): {missing}"
    assert not extra, f"in the wheel but not tracked by git: {extra}"
    assert "auditor/migrations/env.py" in shipped
    assert any(name.startswith(f"auditor/migrations/versions/{SCHEMA_HEAD}_") for name in shipped)


def test_the_installed_wheel_migrates_a_fresh_database(built: Built, tmp_path: Path) -> None:
    env = _quiet_env(PYTHONPATH=str(built.site))
    # The wheel's copy is the one imported, not the editable install of this source tree.
    where = _run(
        [
            sys.executable,
            "-c",
            "import auditor, auditor.migrations; print(auditor.__file__); "
            "print(auditor.migrations.__file__)",
        ],
        cwd=tmp_path,
        env=env,
    ).split()
    assert [Path(p) for p in where] == [
        built.site / "auditor" / "__init__.py",
        built.site / "auditor" / "migrations" / "__init__.py",
    ]

    database = tmp_path / "fresh.db"
    config = tmp_path / "auditor.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{database}"\n', encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "auditor", "--config", str(config), "db", "upgrade"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=STEP_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-1] == f"database: at revision {SCHEMA_HEAD}"

    with closing(sqlite3.connect(database)) as db:
        tables = {
            name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        revisions = {found for (found,) in db.execute("SELECT version_num FROM alembic_version")}
    assert tables == {table.name for table in metadata.sorted_tables} | {"alembic_version"}
    assert revisions == head_revisions() == {SCHEMA_HEAD}
