"""Deterministic sample data: plausible failover script names and failover settings, and
the checks a name or a settings update passes before a simulated PBX takes it.

The same ``(count, seed)`` always gives the same names and settings, on every platform and
Python version (:class:`random.Random` seeded with an ``int`` is stable), so tests and
benchmarks can rely on exact values without storing them. Pure: no I/O, no clock, no state.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

SETTINGS_FIELDS: tuple[str, ...] = (
    "Condition",
    "Enabled",
    "Interval",
    "Mode",
    "PostStartScript",
    "PreStartScript",
    "RemoteServer",
    "TestSIPServer",
    "TestTunnel",
    "TestWebServer",
)
"""The properties of ``Pbx.BackupFailoverSettings`` in the 3CX V20 OpenAPI description."""

CONDITIONS = ("AllService", "AnyService")
MODES = ("Active", "Passive")


_STEMS = (
    "failover-pre",
    "failover-post",
    "start-services",
    "stop-services",
    "notify-ops",
    "sync-config",
    "switch-dns",
    "update-routes",
    "check-trunks",
    "mount-backup",
    "restart-sbc",
    "announce-failover",
    "reset-leases",
    "flush-arp",
)
# Weighted towards shell scripts, as on most Linux PBXs; Windows PBXs bring .ps1.
_EXTENSIONS = (".sh", ".sh", ".sh", ".ps1", ".py")


class DuplicateError(ValueError):
    """The name is already taken (a script in a PBX, or a PBX in a simulator)."""


def check_filename(filename: object) -> str:
    """Return ``filename`` if it can name a failover script, else raise ValueError."""
    if not isinstance(filename, str) or not filename:
        raise ValueError("a script filename must be a non-empty string")
    if "/" in filename or "\x00" in filename:
        raise ValueError(f"a script filename cannot contain '/' or NUL: {filename!r}")
    return filename


def generate_filenames(count: int, seed: int = 0) -> list[str]:
    """``count`` unique, plausible script names such as ``failover-pre-0001.sh``.

    Uniqueness comes from the running number; the seed picks each name's stem and extension,
    so different seeds give differently shaped (and differently sorted) listings.
    """
    if count < 0:
        raise ValueError("the number of scripts cannot be negative")
    rng = random.Random(seed)
    width = max(4, len(str(count)))
    return [
        f"{rng.choice(_STEMS)}-{number:0{width}d}{rng.choice(_EXTENSIONS)}"
        for number in range(1, count + 1)
    ]


def generate_settings(filenames: Sequence[str], seed: int = 0) -> dict[str, Any]:
    """Failover settings whose Pre/PostStartScript name files of ``filenames`` (None if empty)."""
    # A separate stream from the names, so adding scripts does not reshuffle the settings.
    rng = random.Random(seed * 7919 + 17)
    pre = _pick(filenames, "failover-pre", rng)
    post = _pick(filenames, "failover-post", rng)
    return {
        "Condition": rng.choice(CONDITIONS),
        "Enabled": True,
        "Interval": rng.choice((30, 60, 120, 300)),
        "Mode": rng.choice(MODES),
        "PostStartScript": post,
        "PreStartScript": pre,
        "RemoteServer": f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(2, 254)}",
        "TestSIPServer": True,
        "TestTunnel": rng.random() < 0.5,
        "TestWebServer": True,
    }


def check_settings(changes: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a partial settings update against the schema's property names and types."""
    unknown = sorted(set(changes) - set(SETTINGS_FIELDS))
    if unknown:
        raise ValueError(
            f"unknown settings field(s) {', '.join(unknown)}; known: {', '.join(SETTINGS_FIELDS)}"
        )
    for key, value in changes.items():
        if value is None:
            continue
        if key == "Condition" and value not in CONDITIONS:
            raise ValueError(f"Condition must be one of {', '.join(CONDITIONS)}")
        if key == "Mode" and value not in MODES:
            raise ValueError(f"Mode must be one of {', '.join(MODES)}")
        if key == "Interval" and (type(value) is not int or not -(2**31) <= value < 2**31):
            raise ValueError("Interval must be a 32-bit integer")
        if (key.startswith("Test") or key == "Enabled") and type(value) is not bool:
            raise ValueError(f"{key} must be true or false")
        if key in ("PreStartScript", "PostStartScript", "RemoteServer") and not isinstance(
            value, str
        ):
            raise ValueError(f"{key} must be a string or null")
    return dict(changes)


def _pick(filenames: Sequence[str], stem: str, rng: random.Random) -> str | None:
    if not filenames:
        return None
    fitting = [name for name in filenames if name.startswith(stem)]
    return rng.choice(fitting or list(filenames))
