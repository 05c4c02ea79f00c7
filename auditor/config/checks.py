"""Checks across sections, made once the settings are valid: what one model cannot see alone.

A sink's ``targets`` must name configured targets, an Apprise URL must be one Apprise
understands, a target's ``ca_file`` must hold PEM certificates the client can load, and its
``filter`` and ``search`` must pass the checks the client makes before sending them;
``verify_tls = false`` earns a warning, and so does an ``audit.max_concurrent`` the open-file
limit cannot carry.
Each problem is one line ``config: <dotted.key>: <why>``. Reads no secret from the
environment or from a file, and never shows an Apprise URL (it embeds a token).

Secrets in clear: the HTTP side listening beyond this host without ``[http] token`` is
refused unless ``allow_unauthenticated = true``; an ``http://`` PBX URL beyond this host (the
client secret travels unencrypted) and a PostgreSQL database on another host without
verified TLS earn warnings.
"""

from __future__ import annotations

import ipaddress
import logging
import ssl
from pathlib import Path
from urllib.parse import urlsplit

from auditor.config.alerts import SINK_TYPES, AppriseSettings
from auditor.config.database import database_tls
from auditor.config.resources import files_needed, open_files_limit
from auditor.config.settings import Settings
from auditor.errors import QueryError
from auditor.odata import check_filter, quote_search


def check_settings(settings: Settings) -> tuple[list[str], list[str]]:
    """The problems (sinks first, then targets) and the warnings of valid settings."""
    problems = sink_problems(settings)
    warnings: list[str] = []
    http = settings.http
    if http.token is None and not http.allow_unauthenticated and beyond_loopback(http.listen):
        problems.append(
            f"config: http.token: required, as http.listen ({http.listen}) is reachable from "
            "other hosts: set a token (the API and the feed then ask for it), listen on "
            "127.0.0.1, or set http.allow_unauthenticated = true to serve them to anyone"
        )
    tls = database_tls(settings.database.url)
    if tls is not None and not tls.local and not tls.verified:
        warnings.append(
            f"config: database.url: PostgreSQL on {', '.join(tls.hosts)} is reached without "
            f"verified TLS (sslmode={tls.mode}, {tls.source}): its password and the audit "
            "record can be read or changed on the way; add "
            "sslmode=verify-full&sslrootcert=/path/to/ca.crt to the URL"
        )
    for target in settings.targets:
        if target.url.lower().startswith("http://") and not _loopback_url(target.url):
            warnings.append(
                f"config: target {target.name}: url is http://: the client secret and the "
                "access tokens travel unencrypted and can be read on the way; use https://"
            )
        if not target.verify_tls:
            warnings.append(
                f"config: target {target.name}: verify_tls = false: the PBX's identity is "
                "not checked and its traffic can be intercepted; prefer ca_file"
            )
        if target.ca_file is not None:
            index = settings.targets.index(target)
            problem = _ca_file_problem(target.ca_file)
            if problem:
                problems.append(f"config: targets[{index}].ca_file: {problem}")
    problems.extend(query_problems(settings))
    warnings.extend(_open_files_warnings(settings))
    return problems, warnings


def beyond_loopback(listen: str) -> bool:
    """Whether ``host:port`` listens on more than this host's loopback interface."""
    host = listen.rpartition(":")[0].strip("[]")
    if host.lower() == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        # Every interface (""), or a name that may resolve to any address.
        return True


def _loopback_url(url: str) -> bool:
    # Over the loopback interface nothing travels on a wire (the demo, the simulator).
    host = urlsplit(url).hostname or ""
    return host == "localhost" or not beyond_loopback(f"{host}:0")


def _ca_file_problem(path: Path) -> str | None:
    """Why the client could not load ``path`` as its trusted certificates, if it could not."""
    if not path.is_file():
        return f"{path} is not a file"
    try:
        ssl.create_default_context(cafile=str(path))
    except (OSError, ssl.SSLError) as exc:
        return f"{path} cannot be read as PEM certificates ({exc.strerror or exc})"
    return None


def query_problems(settings: Settings) -> list[str]:
    """Each target's ``filter`` and ``search`` as the client will check them before sending:
    refused here, they cannot fail every audit of the target later."""
    problems = []
    for index, target in enumerate(settings.targets):
        for key, value, check in (
            ("filter", target.filter, check_filter),
            ("search", target.search, quote_search),
        ):
            if not value:  # "" is sent as no option at all, as when the key is left out
                continue
            try:
                check(value)
            except QueryError as exc:
                why = str(exc).removeprefix(f"${key}: ")
                problems.append(f"config: targets[{index}].{key}: target {target.name}: {why}")
    return problems


def _open_files_warnings(settings: Settings) -> list[str]:
    # The default always fits; an explicit value is honoured, but said to be too many.
    concurrent = settings.audit.max_concurrent
    needed, hard = files_needed(concurrent), open_files_limit()[1]
    if needed <= hard:
        return []
    return [
        f"config: audit.max_concurrent: {concurrent} audits at once need about {needed} open "
        f"files, and this process may open {hard} (the hard RLIMIT_NOFILE; systemd: "
        "LimitNOFILE=): audits beyond that fail to connect"
    ]


def sink_problems(settings: Settings) -> list[str]:
    """Sinks naming unknown targets, and Apprise URLs that Apprise does not understand."""
    problems: list[str] = []
    alerts = settings.alerts
    known = {t.name for t in settings.targets}
    for sink_type in SINK_TYPES:
        for index, sink in enumerate(getattr(alerts, sink_type)):
            unknown = [name for name in sink.targets if name not in known]
            if unknown:
                problems.append(
                    f"config: alerts.{sink_type}[{index}].targets: no target named "
                    f"{', '.join(map(repr, unknown))} (known: {', '.join(sorted(known)) or 'none'})"
                )
    for index, sink in enumerate(alerts.apprise):
        problems.extend(
            f"config: alerts.apprise[{index}].urls[{at}]: not a URL that Apprise understands"
            for at in _unknown_apprise_urls(sink)
        )
    return problems


def _unknown_apprise_urls(sink: AppriseSettings) -> list[int]:
    # Imported here: only configurations with an Apprise sink pay for loading it.
    from apprise import Apprise

    # Apprise logs the URLs it parses (masked by its own rules, which this program cannot
    # check for every service): its log stays shut, so no token can reach a log line.
    logging.getLogger("apprise").setLevel(logging.CRITICAL + 1)
    return [
        index
        for index, url in enumerate(sink.urls)
        if Apprise.instantiate(url.get_secret_value()) is None
    ]
