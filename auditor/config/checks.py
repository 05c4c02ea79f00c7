"""Checks across sections, made once the settings are valid: what one model cannot see alone.

A sink's ``targets`` must name configured targets, an Apprise URL must be one Apprise
understands, a target's ``ca_file`` must exist; ``verify_tls = false`` earns a warning, and
so does an ``audit.max_concurrent`` the open-file limit cannot carry.
Each problem is one line ``config: <dotted.key>: <why>``. Reads no secret from the
environment or from a file, and never shows an Apprise URL (it embeds a token).
"""

from __future__ import annotations

import logging

from auditor.config.alerts import SINK_TYPES, AppriseSettings
from auditor.config.resources import files_needed, open_files_limit
from auditor.config.settings import Settings


def check_settings(settings: Settings) -> tuple[list[str], list[str]]:
    """The problems (sinks first, then targets) and the warnings of valid settings."""
    problems = sink_problems(settings)
    warnings: list[str] = []
    for target in settings.targets:
        if not target.verify_tls:
            warnings.append(
                f"config: target {target.name}: verify_tls = false: the PBX's identity is "
                "not checked and its traffic can be intercepted; prefer ca_file"
            )
        if target.ca_file is not None and not target.ca_file.is_file():
            index = settings.targets.index(target)
            problems.append(f"config: targets[{index}].ca_file: {target.ca_file} is not a file")
    warnings.extend(_open_files_warnings(settings))
    return problems, warnings


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
