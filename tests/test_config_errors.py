"""Configuration errors say what is wrong and where, in plain words, never with a secret:
the validators' own words replaced, the environment variable named when one is the cause,
unknown ``AUDITOR_*`` variables refused, and every filter and search checked up front.

The command line is run as a real subprocess (``check-config``, ``once``), as a user runs it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from auditor.config import load_settings
from auditor.errors import ConfigError

TARGET = """
[[targets]]
name = "pbx-hq"
url = "https://pbx-hq.example.com"
client_id = "auditor"
client_secret = "s"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "auditor.toml"
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)
    return path


def problems_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    return list(info.value.problems)


def cli(
    path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("AUDITOR_")}
    environ.update(env or {})
    done = subprocess.run(
        [sys.executable, "-m", "auditor", "--config", str(path), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=environ,
        check=False,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done


def test_validator_jargon_becomes_plain_words_with_the_value(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[schedule]
cron = "61 * * * *"
[log]
level = "verbose"
[[targets]]
name = "pbx hq"
url = "https://pbx-hq.example.com"
client_id = ""
client_secret = "s"
ignore_fields = "State"
retries = 1.5
page_size = "many"
state = "State"
ca_file = 5
""",
    )
    assert problems_of(path) == [
        # As the daemon parses it: check-config passed this one, then `run` refused it.
        "config: schedule.cron: Error validating expression '61': the last value (61) is "
        "higher than the maximum value (59) (got '61 * * * *')",
        "config: log.level: must be one of 'debug', 'info', 'warning' or 'error' (got 'verbose')",
        "config: targets[0].name: must be 1 to 64 letters, digits, '.', '_' or '-', starting "
        "with a letter or digit (got 'pbx hq')",
        "config: targets[0].client_id: must not be empty (got '')",
        "config: targets[0].page_size: must be a whole number (got 'many')",
        "config: targets[0].ca_file: must be a file path in quotes (got 5)",
        "config: targets[0].retries: must be a whole number (got 1.5)",
        'config: targets[0].ignore_fields: must be a list like ["a", "b"] (got \'State\')',
        "config: targets[0].state: must be a table of keys (got 'State')",
    ]


def test_no_value_of_a_secret_key_is_ever_shown(tmp_path: Path) -> None:
    """Written with the wrong type, a secret is still a secret: the error names the key and
    the type wanted, never the value."""
    path = write(
        tmp_path,
        """
[database]
url = 7654321987
[http]
token = 1234567891
[[alerts.webhook]]
name = "hook"
url = 5550001112
secret = 8887776665
[[alerts.apprise]]
name = "chat"
urls = [4443332221]
[[targets]]
name = "pbx-hq"
url = "https://pbx-hq.example.com"
client_id = "auditor"
client_secret = 9998887776
""",
    )
    problems = problems_of(path)
    assert problems == [
        "config: database.url: must be text in quotes",
        "config: alerts.webhook[0].url: must be text in quotes",
        "config: alerts.webhook[0].secret: must be text in quotes",
        "config: alerts.apprise[0].urls[0]: must be text in quotes",
        "config: http.token: must be text in quotes",
        "config: targets[0].client_secret: must be text in quotes",
    ]
    text = "\n".join(problems)
    for value in ("7654321987", "1234567891", "5550001112", "8887776665", "4443332221"):
        assert value not in text
    assert "9998887776" not in text


def test_errors_caused_by_the_environment_name_the_variable(tmp_path: Path) -> None:
    path = write(tmp_path, '[database]\nurl = "sqlite:///x.db"\n' + TARGET)
    done = cli(
        path,
        "check-config",
        env={
            "AUDITOR_DATABASE__URL": "mysql://auditor@db/audit",
            "AUDITOR_SCHEDULE__EVERY": "15x",
            "AUDITOR_LOG": '{"level": "loud"}',
        },
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "config: database.url (from AUDITOR_DATABASE__URL): must be a sqlite:///path or "
        "postgresql://user@host/db URL (got scheme 'mysql')",
        "config: schedule.every (from AUDITOR_SCHEDULE__EVERY): must be a duration like "
        "'30s', '15m' or '1h' (got '15x')",
        "config: log.level (from AUDITOR_LOG): must be one of 'debug', 'info', 'warning' or "
        "'error' (got 'loud')",
    ]
    assert str(path) not in done.stderr

    broken = cli(path, "check-config", env={"AUDITOR_TARGETS": "[{name = 'toml, not json'}]"})
    assert broken.returncode == 2
    assert broken.stderr.splitlines() == [
        "config: targets (from AUDITOR_TARGETS): not valid JSON (a table or a list in an "
        "environment variable is written as JSON)"
    ]

    emptied = cli(path, "once", env={"AUDITOR_TARGETS": "[]"})
    assert emptied.returncode == 2
    assert emptied.stderr.splitlines() == [
        "config: targets (from AUDITOR_TARGETS): the list is empty"
    ]


def test_unknown_environment_variables_are_errors_like_unknown_keys(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        TARGET.replace('client_secret = "s"', 'client_secret_env = "AUDITOR_HQ_SECRET"'),
    )
    done = cli(
        path,
        "check-config",
        env={
            "AUDITOR_DATABSE__URL": "sqlite:///elsewhere.db",
            "AUDITOR_LOG_LEVEL": "debug",
            "AUDITOR_NONSENSE__X": "1",
            "AUDITOR_TARGETS__0__URL": "https://other.example.com",
            # Left alone: named by the file, and one that does not look like a setting.
            "AUDITOR_HQ_SECRET": "s3cret-from-env",
            "AUDITOR_BUILD_TAG": "42",
        },
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "config: targets (from AUDITOR_TARGETS__0__URL): must be a list like "
        '["a", "b"] (got a table)',
        "config: AUDITOR_DATABSE__URL: unknown section 'databse' (did you mean "
        "AUDITOR_DATABASE__URL?)",
        "config: AUDITOR_LOG_LEVEL: sets nothing: levels are separated by two underscores "
        "(did you mean AUDITOR_LOG__LEVEL?)",
        "config: AUDITOR_NONSENSE__X: unknown section 'nonsense' (the sections are alerts, "
        "audit, database, http, log, schedule, targets)",
        "config: AUDITOR_TARGETS__0__URL: the items of a list cannot be set one by one; "
        "set AUDITOR_TARGETS to the whole list, as JSON",
    ]
    assert "s3cret-from-env" not in done.stdout + done.stderr

    fine = cli(path, "check-config", env={"AUDITOR_HQ_SECRET": "x", "AUDITOR_BUILD_TAG": "42"})
    assert fine.returncode == 0, fine.stderr


@pytest.mark.parametrize(
    ("url", "meant"),
    [
        (
            "https://pbx.example.com/xapi/v1/Backups/Pbx.GetFailoverScripts()",
            "https://pbx.example.com",
        ),
        ("https://pbx.example.com:5001/connect/token", "https://pbx.example.com:5001"),
        ("https://proxy.example.com/hq/xapi/v1/Pbx.SystemStatus", "https://proxy.example.com/hq"),
    ],
)
def test_a_pasted_endpoint_address_is_refused_naming_the_base_url(
    tmp_path: Path, url: str, meant: str
) -> None:
    path = write(tmp_path, TARGET.replace("https://pbx-hq.example.com", url))
    done = cli(path, "check-config")
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"config: targets[0].url: is the address of an endpoint, not the PBX's base URL "
        f"(got {url!r}); did you mean {meant!r}?"
    ]


def test_check_config_refuses_a_filter_or_search_the_client_would_refuse(
    tmp_path: Path,
) -> None:
    second = TARGET.replace("pbx-hq", "pbx-branch")
    path = write(
        tmp_path,
        f'[database]\nurl = "sqlite:///{tmp_path / "audit.db"}"\n'
        + TARGET
        + "filter = \"startswith(Filename, 'failover')\"\n"
        + second
        + 'filter = "Filename eq"\nsearch = "  "\n',
    )
    done = cli(path, "check-config")
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "config: targets[1].filter: target pbx-branch: expected an expression at position 12 "
        'in "Filename eq" (found end of input)',
        "config: targets[1].search: target pbx-branch: must not be empty",
    ]
    # `once` refuses it the same way, before any run is recorded.
    once = cli(path, "once")
    assert once.returncode == 2
    assert once.stderr.splitlines() == done.stderr.splitlines()
    assert not (tmp_path / "audit.db").exists()


def test_a_ca_file_the_client_cannot_load_is_refused_up_front(tmp_path: Path) -> None:
    """Before, check-config passed it and every audit of the target failed."""
    bad = tmp_path / "not-a-certificate.pem"
    bad.write_text("this is not PEM\n")
    path = write(tmp_path, TARGET + f'ca_file = "{bad}"\n')
    (problem,) = problems_of(path)
    assert problem.startswith(
        f"config: targets[0].ca_file: {bad} cannot be read as PEM certificates ("
    )


@pytest.mark.parametrize(
    "url",
    ["ftp://auditor:hunter2@pbx.example.com", "https://auditor:hunter2@pbx/xapi/v1/Backups/x"],
)
def test_a_password_in_a_pbx_url_is_never_shown(tmp_path: Path, url: str) -> None:
    """Before, a URL refused for its scheme was shown whole, password included."""
    path = write(tmp_path, TARGET.replace("https://pbx-hq.example.com", url))
    assert problems_of(path) == [
        "config: targets[0].url: must not contain credentials; use client_id and client_secret"
    ]


def test_collections_are_checked_and_the_digest_key_is_never_shown(tmp_path: Path) -> None:
    unknown = write(tmp_path, TARGET + 'collections = ["backups", "backup_sets"]\n')
    result = cli(unknown, "check-config", "--no-secrets")
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if "collections" in line]
    assert len(lines) == 1, result.stderr
    assert "'backup_sets'" in lines[0]
    assert "failover_scripts" in lines[0]  # the known names

    chosen = write(tmp_path, TARGET + 'collections = ["backups", "failover_scripts"]\n')
    settings = load_settings(chosen).settings
    assert settings.targets[0].collections == ("backups", "failover_scripts")
    default = write(tmp_path, TARGET)
    assert load_settings(default).settings.targets[0].collections == (
        "failover_scripts",
        "failover_settings",
    )

    both = '[audit]\nsecret_digest_key = "k7k7k7"\nsecret_digest_key_env = "K"\n'
    two = write(tmp_path, both + TARGET)
    problems = problems_of(two)
    assert any("secret_digest_key" in p for p in problems)
    assert not any("k7k7k7" in p for p in problems), problems
