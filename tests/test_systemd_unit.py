"""systemd/3cx-auditor.service: systemd accepts it, it is hardened, it matches the program.

``systemd-analyze verify`` checks that ExecStart= names an existing executable, and
``/usr/local/bin/3cx-auditor`` exists only on an installed host. The tests therefore check a
copy in which that one path is replaced by this interpreter running ``-m auditor`` (the
same program); everything else is verified as shipped.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
from sqlalchemy import make_url

from auditor.config import DEFAULT_PATHS, DatabaseSettings, Settings
from auditor.service.daemon import descriptor_reserve

UNIT = Path(__file__).resolve().parent.parent / "systemd" / "3cx-auditor.service"
INSTALLED_COMMAND = "/usr/local/bin/3cx-auditor"
ANALYZE = shutil.which("systemd-analyze")

needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


def directives(text: str) -> dict[str, list[str]]:
    """``Key`` -> every value it is given (a key may repeat), sections flattened."""
    found: dict[str, list[str]] = defaultdict(list)
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not a key=value line: {raw!r}"
        found[key.strip()].append(value.strip())
    return found


@pytest.fixture
def testable_unit(tmp_path: Path) -> Path:
    lines = UNIT.read_text(encoding="utf-8").splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.startswith("ExecStart=")]
    assert len(starts) == 1
    assert INSTALLED_COMMAND in lines[starts[0]]
    lines[starts[0]] = lines[starts[0]].replace(INSTALLED_COMMAND, f"{sys.executable} -m auditor")
    copy = tmp_path / UNIT.name
    copy.write_text("".join(lines))
    return copy


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    return subprocess.run([ANALYZE, *args], capture_output=True, text=True, timeout=60, check=False)


@needs_analyze
def test_verify_prints_nothing(testable_unit: Path) -> None:
    result = analyze("verify", str(testable_unit))
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert result.stderr == ""


@needs_analyze
def test_verify_would_fail_on_a_missing_executable(tmp_path: Path) -> None:
    # The reason for the copy above: the shipped path does not exist on a build machine.
    if Path(INSTALLED_COMMAND).exists():
        pytest.skip(f"{INSTALLED_COMMAND} exists on this machine")
    copy = tmp_path / UNIT.name
    shutil.copy(UNIT, copy)
    result = analyze("verify", str(copy))
    assert result.returncode != 0
    assert INSTALLED_COMMAND in result.stdout + result.stderr


@needs_analyze
def test_security_exposure_is_at_most_2(testable_unit: Path) -> None:
    result = analyze("security", "--offline=yes", "--threshold=20", str(testable_unit))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert "Overall exposure level" in result.stdout


def test_unit_declares_the_daemon_contract() -> None:
    unit = directives(UNIT.read_text(encoding="utf-8"))
    single = {key: values[-1] for key, values in unit.items()}
    assert single["Type"] == "notify"
    assert single["NotifyAccess"] == "main"
    assert single["WatchdogSec"] == "60"
    assert single["Restart"] == "on-failure"
    assert single["KillSignal"] == "SIGTERM"
    assert single["DynamicUser"] == "yes"
    assert single["UMask"] == "0077"
    for key in (
        "ProtectSystem",
        "ProtectHome",
        "PrivateTmp",
        "PrivateDevices",
        "NoNewPrivileges",
        "RestrictNamespaces",
        "RestrictRealtime",
        "RestrictSUIDSGID",
        "LockPersonality",
        "MemoryDenyWriteExecute",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectKernelLogs",
        "ProtectControlGroups",
        "ProtectClock",
        "ProtectHostname",
    ):
        assert single[key] in ("yes", "strict"), key
    assert single["CapabilityBoundingSet"] == ""
    assert set(single["RestrictAddressFamilies"].split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}
    assert "@system-service" in unit["SystemCallFilter"]
    # systemd SIGKILLs at TimeoutStopSec: it must leave room for the daemon's drain.
    assert int(single["TimeoutStopSec"]) > 60
    # Descriptors for the largest fleet the config allows (max_concurrent 1000) and the
    # default connection limit, with the daemon's headroom (auditor.web.limits).
    settings = Settings(audit={"max_concurrent": 1000})
    needed = descriptor_reserve(settings) + 2 * settings.http.max_connections
    assert int(single["LimitNOFILE"]) >= needed


def test_unit_paths_match_the_program_defaults() -> None:
    unit = {k: v[-1] for k, v in directives(UNIT.read_text(encoding="utf-8")).items()}
    config = DEFAULT_PATHS[-1]
    assert unit["ExecStart"] == f"{INSTALLED_COMMAND} --config {config} run"
    assert config.parent == Path("/etc") / unit["ConfigurationDirectory"]
    # The default database file must land in the one writable directory of the service.
    database = make_url(DatabaseSettings().url).database
    assert database is not None
    where = Path(unit["WorkingDirectory"]) / database
    assert where.parent == Path("/var/lib") / unit["StateDirectory"]
