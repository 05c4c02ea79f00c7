"""Configuration: validation, one line per problem, secrets, and the documented example."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from auditor.config import (
    SINK_TYPES,
    AlertmanagerSettings,
    AlertsSettings,
    AppriseSettings,
    AuditSettings,
    DatabaseSettings,
    HttpSettings,
    LogSettings,
    ScheduleSettings,
    Settings,
    StateRule,
    TargetSettings,
    WebhookSettings,
    format_duration,
    load_settings,
    normalise_url,
    parse_duration,
)
from auditor.errors import ConfigError
from auditor.model import ALERT_KINDS

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "config.example.toml"

MINIMAL_TARGET = """
[[targets]]
name = "pbx-hq"
url = "https://pbx-hq.example.com"
client_id = "auditor"
client_secret = "inline-s3cret-value"
"""


def write(tmp_path: Path, text: str, name: str = "auditor.toml", mode: int = 0o600) -> Path:
    path = tmp_path / name
    path.write_text(text)
    path.chmod(mode)
    return path


def problems_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    return list(info.value.problems)


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "auditor", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_example_config_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PBX_HQ_SECRET", "from-the-environment")
    loaded = load_settings(EXAMPLE)
    target = loaded.settings.targets[0]
    assert target.secret() == "from-the-environment"
    assert loaded.settings.schedule.every == timedelta(minutes=15)


@pytest.mark.parametrize(
    ("section", "model"),
    [
        ("database", DatabaseSettings),
        ("schedule", ScheduleSettings),
        ("audit", AuditSettings),
        ("alerts", AlertsSettings),
        ("http", HttpSettings),
        ("log", LogSettings),
        ("targets", TargetSettings),
        ("targets.state", StateRule),
        ("alerts.webhook", WebhookSettings),
        ("alerts.alertmanager", AlertmanagerSettings),
        ("alerts.apprise", AppriseSettings),
    ],
)
def test_example_documents_every_key(section: str, model: type[Any]) -> None:
    """Every key of every section appears in config.example.toml, set or commented out
    (an optional list such as a sink is shown commented out, header included)."""
    text = EXAMPLE.read_text()
    lists = ("targets", *(f"alerts.{kind}" for kind in SINK_TYPES))
    header = f"[[{section}]]" if section in lists else f"[{section}]"
    parts = re.split(rf"^(?:#\s*)?{re.escape(header)}$", text, maxsplit=1, flags=re.MULTILINE)
    assert len(parts) == 2, f"section {header} missing from the example"
    body = parts[1]
    body = re.split(r"^(?:#\s*)?\[", body, flags=re.MULTILINE)[0]
    documented = set(re.findall(r"^#?\s*([a-z_]+)\s*=", body, flags=re.MULTILINE))
    nested = {name for name, f in model.model_fields.items() if f.annotation is StateRule}
    if model is AlertsSettings:
        nested |= set(SINK_TYPES)  # each sink list is a section of its own, checked above
    missing = set(model.model_fields) - documented - nested
    assert not missing, f"[{section}] keys not documented in config.example.toml: {missing}"
    assert set(Settings.model_fields) <= set(re.findall(r"^\[\[?([a-z]+)", text, re.MULTILINE))


def test_every_problem_is_one_line_naming_its_key(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[database]
url = "mysql://x"
urll = "typo"
[schedule]
every = "15x"
[alerts]
disconnected_after = 0
[nonsense]
a = 1
[[targets]]
name = "ok"
url = "https://a.example.com"
client_id = "c"
client_secret = "s"
[[targets]]
name = "b"
url = "ftp://b.example.com"
client_id = "c"
client_secret = "s"
page_size = 500
verify_tls = "maybe"
""",
    )
    problems = problems_of(path)
    assert problems == [
        "config: database.url: must be a sqlite:///path or postgresql://user@host/db URL "
        "(got scheme 'mysql')",
        "config: database.urll: unknown key (did you mean 'url'?)",
        "config: schedule.every: must be a duration like '30s', '15m' or '1h' (got '15x')",
        "config: alerts.disconnected_after: must be between 1 and 1000 (got 0)",
        "config: targets[1].url: must start with https:// or http:// (got 'ftp://b.example.com')",
        "config: targets[1].page_size: must be between 1 and 100 (got 500)",
        "config: targets[1].verify_tls: must be true or false (got 'maybe')",
        "config: nonsense: unknown key",
    ]
    assert all("\n" not in p for p in problems)


def test_missing_keys_and_secret_choice(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[[targets]]
name = "x"
url = "https://a.example.com"
[[targets]]
name = "y"
url = "https://a.example.com"
client_id = "c"
client_secret = "s"
client_secret_env = "E"
""",
    )
    assert problems_of(path) == [
        "config: targets[0].client_id: required",
        "config: targets[1]: set exactly one of client_secret, client_secret_env, "
        "client_secret_file (got client_secret, client_secret_env)",
    ]


def test_duplicate_target_names(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL_TARGET + MINIMAL_TARGET)
    assert problems_of(path) == ["config: targets: target name 'pbx-hq' is used twice"]


def test_toml_syntax_error_is_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, "[database\nurl = 1\n")
    (problem,) = problems_of(path)
    assert problem.startswith(f"config: {path}: not valid TOML: ")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("https://pbx.example.com", "https://pbx.example.com"),
        ("https://pbx.example.com/", "https://pbx.example.com"),
        ("https://pbx.example.com/xapi/v1", "https://pbx.example.com"),
        ("https://pbx.example.com/xapi/v1/", "https://pbx.example.com"),
        ("https://PBX.Example.com:5001/", "https://pbx.example.com:5001"),
        ("http://127.0.0.1:8080/hq/xapi/v1", "http://127.0.0.1:8080/hq"),
        ("https://proxy.example.com/pbx/", "https://proxy.example.com/pbx"),
    ],
)
def test_url_normalisation(raw: str, expected: str) -> None:
    assert normalise_url(raw) == expected


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("pbx.example.com", "must start with https://"),
        ("https://user:pw@pbx.example.com", "must not contain credentials"),
        ("https://pbx.example.com/?a=b", "must not contain a query"),
        ("https:///path", "has no host name"),
    ],
)
def test_bad_urls(raw: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        normalise_url(raw)


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [("30s", 30), ("15m", 900), ("1h30m", 5400), ("500ms", 0.5), ("2d", 172800), (45, 45)],
)
def test_durations(raw: object, seconds: float) -> None:
    value = parse_duration(raw)
    assert value.total_seconds() == seconds
    assert parse_duration(format_duration(value)) == value


@pytest.mark.parametrize("raw", ["", "15", "m", "15x", "-5s", True, None, "1h-"])
def test_bad_durations(raw: object) -> None:
    if raw == "15":  # a plain number of seconds as a string is accepted
        assert parse_duration(raw).total_seconds() == 15
        return
    with pytest.raises(ValueError, match=r"duration|negative"):
        parse_duration(raw)


def test_schedule_every_or_cron_not_both(tmp_path: Path) -> None:
    path = write(tmp_path, '[schedule]\nevery = "5m"\ncron = "*/5 * * * *"\n')
    assert problems_of(path) == ["config: schedule: set either every or cron, not both"]


def test_secret_from_env_file_and_credentials_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "hq.secret").write_text("from-credentials-dir\n")
    (tmp_path / "abs.secret").write_text("from-absolute-file")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    monkeypatch.setenv("B_SECRET", "from-env")
    path = write(
        tmp_path,
        f"""
[[targets]]
name = "a"
url = "https://a.example.com"
client_id = "c"
client_secret_file = "hq.secret"
[[targets]]
name = "b"
url = "https://b.example.com"
client_id = "c"
client_secret_env = "B_SECRET"
[[targets]]
name = "c"
url = "https://c.example.com"
client_id = "c"
client_secret_file = "{tmp_path / "abs.secret"}"
""",
    )
    targets = load_settings(path).settings.targets
    assert [t.secret() for t in targets] == [
        "from-credentials-dir",
        "from-env",
        "from-absolute-file",
    ]


def test_unresolvable_secrets_are_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    path = write(
        tmp_path,
        f"""
[[targets]]
name = "a"
url = "https://a.example.com"
client_id = "c"
client_secret_env = "NOT_SET_ANYWHERE"
[[targets]]
name = "b"
url = "https://b.example.com"
client_id = "c"
client_secret_file = "{tmp_path / "missing.secret"}"
""",
    )
    assert problems_of(path) == [
        "config: targets[0].client_secret_env: environment variable NOT_SET_ANYWHERE is not "
        "set or empty",
        f"config: targets[1].client_secret_file: cannot read {tmp_path / 'missing.secret'}: "
        "No such file or directory",
    ]


def test_secrets_never_print(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL_TARGET + '[http]\ntoken = "api-token-value"\n')
    settings = load_settings(path).settings
    rendered = " ".join(
        [repr(settings), str(settings), settings.model_dump_json(), repr(settings.targets[0])]
    )
    assert "inline-s3cret-value" not in rendered
    assert "api-token-value" not in rendered
    assert settings.targets[0].secret() == "inline-s3cret-value"


def test_world_readable_file_with_inline_secret_warns(tmp_path: Path) -> None:
    private = write(tmp_path, MINIMAL_TARGET, "private.toml", 0o600)
    public = write(tmp_path, MINIMAL_TARGET, "public.toml", 0o644)
    assert load_settings(private).warnings == ()
    (warning,) = load_settings(public).warnings
    assert "readable by other users" in warning
    assert "inline-s3cret-value" not in warning


def test_environment_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, '[database]\nurl = "sqlite:///from-file.db"\n')
    monkeypatch.setenv("AUDITOR_DATABASE__URL", "postgresql://auditor@db/audit")
    monkeypatch.setenv("AUDITOR_AUDIT__MAX_CONCURRENT", "3")
    settings = load_settings(path).settings
    assert settings.database.url == "postgresql://auditor@db/audit"
    assert settings.audit.max_concurrent == 3


def test_config_path_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "[audit]\nmax_concurrent = 5\n", "elsewhere.toml")
    monkeypatch.setenv("AUDITOR_CONFIG", str(path))
    loaded = load_settings(None)
    assert loaded.path == path
    assert loaded.settings.audit.max_concurrent == 5


def test_check_config_cli(tmp_path: Path) -> None:
    good = write(tmp_path, MINIMAL_TARGET, "good.toml")
    result = run_cli("--config", str(good), "check-config")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"config: ok: {good} (1 target)"

    bad = write(tmp_path, MINIMAL_TARGET + "page_size = 500\nfoo = 1\n", "bad.toml")
    result = run_cli("--config", str(bad), "check-config")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "config: targets[0].page_size: must be between 1 and 100 (got 500)",
        "config: targets[0].foo: unknown key",
    ]
    assert "Traceback" not in result.stderr
    assert "inline-s3cret-value" not in result.stdout + result.stderr

    result = run_cli("--config", str(tmp_path / "nope.toml"), "check-config")
    assert result.returncode == 2
    assert result.stderr.strip() == f"config: {tmp_path / 'nope.toml'}: file not found"


def test_usage_error_is_one_line() -> None:
    result = run_cli("no-such-command")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "invalid choice" in result.stderr


WEBHOOK_SECRET = "whsec_" + "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="  # 32 bytes


def test_sinks_names_keys_and_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOK_SECRET", WEBHOOK_SECRET)
    path = write(
        tmp_path,
        MINIMAL_TARGET
        + """
[alerts]
delivery_retry_max = "30m"
[[alerts.webhook]]
url = "https://hooks.example.com/a?token=abc"
secret_env = "HOOK_SECRET"
[[alerts.webhook]]
name = "ops"
url = "https://hooks.example.com/b"
secret_file = "hook.secret"
min_severity = "critical"
kinds = ["script.disconnected"]
targets = ["pbx-hq"]
[[alerts.alertmanager]]
url = "http://127.0.0.1:9093"
resend_every = "2m"
[[alerts.apprise]]
name = "chat"
urls = ["json://127.0.0.1:8000/notify"]
""",
    )
    (tmp_path / "hook.secret").write_text(WEBHOOK_SECRET + "\n")
    monkeypatch.chdir(tmp_path)
    alerts = load_settings(path).settings.alerts
    assert [s.key for s in alerts.sinks] == [
        "webhook:webhook-1",
        "webhook:ops",
        "alertmanager:alertmanager-1",
        "apprise:chat",
    ]
    assert alerts.webhook[0].signing_key() == b"0123456789abcdef0123456789abcdef"
    assert alerts.webhook[1].signing_key() == alerts.webhook[0].signing_key()
    assert alerts.webhook[1].kinds == ("script.disconnected",)
    assert alerts.alertmanager[0].resend_every == timedelta(minutes=2)
    assert alerts.delivery_retry_max == timedelta(minutes=30)
    assert "json://" not in repr(alerts.apprise[0])


def test_sink_problems_are_one_line_each_and_show_no_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHORT_SECRET", "whsec_c2hvcnQ=")
    path = write(
        tmp_path,
        MINIMAL_TARGET
        + """
[alerts]
delivery_retry_min = "2h"
[[alerts.webhook]]
url = "https://hooks.example.com/a"
secret = "not-a-standard-webhooks-secret"
[[alerts.webhook]]
url = "https://user:hunter2@hooks.example.com/b"
secret_env = "SHORT_SECRET"
kinds = ["script.gone"]
[[alerts.webhook]]
name = "x"
url = "https://hooks.example.com/c"
secret = "whsec_!!!"
[[alerts.alertmanager]]
name = "am"
url = "http://127.0.0.1:9093"
targets = ["pbx-nowhere"]
[[alerts.apprise]]
urls = ["nonsense-service://s3cr3t-token@example.com"]
""",
    )
    problems = problems_of(path)
    assert problems == [
        "config: alerts.webhook[1].kinds: unknown alert kind 'script.gone' (known: "
        + ", ".join(ALERT_KINDS)
        + ")",
        "config: alerts.webhook[1].url: must not contain credentials",
    ]
    assert all("hunter2" not in p for p in problems)

    # Checks across a section come once its keys are valid ...
    text = path.read_text()
    path.write_text(text.replace("user:hunter2@", "").replace('kinds = ["script.gone"]', ""))
    assert problems_of(path) == [
        "config: alerts: delivery_retry_min must not be longer than delivery_retry_max"
    ]
    # ... and secrets and filters once the whole file is.
    path.write_text(path.read_text().replace('delivery_retry_min = "2h"', ""))
    problems = problems_of(path)
    assert problems == [
        "config: alerts.webhook[0].secret: must start with whsec_ (a Standard Webhooks secret)",
        "config: alerts.webhook[1].secret_env: must be whsec_ followed by the base64 of 24 to "
        "64 random bytes (got 5 bytes)",
        "config: alerts.webhook[2].secret: must be whsec_ followed by base64",
        "config: alerts.alertmanager[0].targets: no target named 'pbx-nowhere' (known: pbx-hq)",
        "config: alerts.apprise[0].urls[0]: not a URL that Apprise understands",
    ]
    for secret in ("not-a-standard", "c2hvcnQ", "s3cr3t", "!!!"):
        assert all(secret not in p for p in problems)


def test_sink_names_are_unique_per_kind(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[[alerts.alertmanager]]
name = "am"
url = "http://a.example.com"
[[alerts.alertmanager]]
name = "am"
url = "http://b.example.com"
[[alerts.apprise]]
name = "am"
urls = ["json://127.0.0.1/"]
""",
    )
    assert problems_of(path) == ["config: alerts: alertmanager sink name 'am' is used twice"]


def test_world_readable_file_with_inline_webhook_secret_warns(tmp_path: Path) -> None:
    text = f"""
[[alerts.webhook]]
url = "https://hooks.example.com/a"
secret = "{WEBHOOK_SECRET}"
"""
    loaded = load_settings(write(tmp_path, text, mode=0o644))
    assert any("readable by other users" in w for w in loaded.warnings)
    assert all(WEBHOOK_SECRET not in w for w in loaded.warnings)
    assert not load_settings(write(tmp_path, text, "private.toml", mode=0o600)).warnings


def test_a_lease_shorter_than_a_second_is_refused(tmp_path: Path) -> None:
    assert problems_of(write(tmp_path, '[schedule]\nlease = "500ms"\n')) == [
        "config: schedule.lease: must be at least 1s (got 500ms)"
    ]
    loaded = load_settings(write(tmp_path, '[schedule]\nlease = "1m"\n', "ok.toml"))
    assert loaded.settings.schedule.lease == timedelta(minutes=1)
