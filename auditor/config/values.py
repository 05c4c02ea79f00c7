"""The value types the settings share: durations, bounded integers, the PBX's base URL.

Pure functions and pydantic annotations, plus :class:`Section`, the base of every section
model (unknown keys refused, frozen). Does no I/O, reads no environment and knows no
section: the settings models build on it, never the reverse.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated
from urllib.parse import urlsplit, urlunsplit

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: object) -> timedelta:
    """``"15m"``, ``"1h30m"``, ``"500ms"``, ``"2d"`` or a number of seconds -> timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError(f"must be a duration like '30s', '15m' or '1h' (got {value!r})")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"must not be negative (got {value!r})")
        return timedelta(seconds=value)
    if isinstance(value, str):
        text = value.strip().replace(" ", "")
        if text and _DURATION_PART.sub("", text) == "":
            seconds = sum(
                float(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(text)
            )
            return timedelta(seconds=seconds)
        try:
            return parse_duration(float(text))
        except ValueError:
            pass
    raise ValueError(f"must be a duration like '30s', '15m' or '1h' (got {value!r})")


def format_duration(value: timedelta) -> str:
    """The inverse of :func:`parse_duration` for display: ``timedelta(seconds=90)`` -> ``1m30s``."""
    total = value.total_seconds()
    if total < 1:
        return f"{round(total * 1000)}ms"
    out = []
    for unit in ("d", "h", "m", "s"):
        size = _UNIT_SECONDS[unit]
        count, total = divmod(total, size)
        if count:
            out.append(f"{int(count)}{unit}")
    return "".join(out) or "0s"


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


def _positive(value: timedelta) -> timedelta:
    if value.total_seconds() <= 0:
        raise ValueError("must be longer than zero")
    return value


PositiveDuration = Annotated[Duration, AfterValidator(_positive)]


def between(low: int, high: int) -> AfterValidator:
    """A validator for ``Annotated[int, between(1, 100)]``: the bounds are inclusive."""

    def check(value: int) -> int:
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high} (got {value})")
        return value

    return AfterValidator(check)


def normalise_url(value: str) -> str:
    """The PBX's base URL: scheme and host, no trailing ``/`` or ``/xapi/v1``.

    A path prefix is kept (a PBX behind a reverse proxy, or one of the simulator's PBXs).
    Credentials, queries and fragments are refused: they would end up in logs. So is the
    address of an endpoint (``.../xapi/v1/Backups/...``, ``.../connect/token``) pasted in
    place of the base URL: the message names the base URL meant.
    """
    parts = urlsplit(value.strip())
    # Before any message that shows the value: the part before "@" may be a password.
    if parts.username or parts.password or "@" in value:
        raise ValueError("must not contain credentials; use client_id and client_secret")
    if parts.scheme not in ("http", "https"):
        hint = ""
        if "://" not in value and value.strip():
            hint = f"; did you mean 'https://{value.strip()}'?"
        raise ValueError(f"must start with https:// or http:// (got {value!r}){hint}")
    if not parts.hostname:
        raise ValueError(f"has no host name (got {value!r})")
    if parts.query or parts.fragment:
        base = urlunsplit((parts.scheme, parts.netloc.lower(), "", "", ""))
        raise ValueError(
            "must not contain a query or a fragment: it is the PBX's base URL, "
            f"like {base!r}, not the address of a page"
        )
    path = parts.path.rstrip("/")
    for suffix in ("/xapi/v1", "/xapi"):
        if path.lower().endswith(suffix):
            path = path[: -len(suffix)]
            break
    endpoint = _ENDPOINT.search(path)
    if endpoint is not None:
        base = urlunsplit((parts.scheme, parts.netloc.lower(), path[: endpoint.start()], "", ""))
        raise ValueError(
            f"is the address of an endpoint, not the PBX's base URL (got {value!r}); "
            f"did you mean {base!r}?"
        )
    return urlunsplit((parts.scheme, parts.netloc.lower(), path.rstrip("/"), "", ""))


# Where a pasted endpoint address starts: the XAPI's path or the token endpoint.
_ENDPOINT = re.compile(r"/(?:xapi(?:/|$)|connect/token$)", re.IGNORECASE)


class Section(BaseModel):
    """A table of the config file: unknown keys are refused, the value is frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)
