"""The database URL as users write it: the secrets it holds, the TLS mode it asks for, and the
parameters the driver understands.

Secrets: a PostgreSQL URL may carry a password in its user part
(``postgresql://user:PASSWORD@host/db``) and, as libpq and asyncpg accept them, in the
``password`` and ``sslpassword`` (a client key's passphrase) query parameters.
:func:`display_url` shows the URL with every one of them replaced by ``***``;
:func:`url_secrets` lists their values, as written and decoded, for scrubbing foreign
messages. ``passfile``, ``sslkey`` and ``sslrootcert`` are paths, not secrets: shown.

TLS: ``sslmode`` (libpq's name) or ``ssl`` (asyncpg's) picks the mode, else ``$PGSSLMODE``,
else the driver's default ``prefer`` (TLS when the server offers it, its certificate not
checked). :func:`database_tls` says which mode is in effect, where it came from, and whether
the server's certificate is verified. :func:`url_problems` names what the driver would refuse.

Parses with SQLAlchemy's ``make_url``, imported on first use (a SQLite configuration never
pays for it), so that what is masked here is exactly what the engine connects with. Never
logs; reads the environment's ``PGSSLMODE`` / ``PGSSLROOTCERT`` and looks whether libpq's
default root certificate (``~/.postgresql/root.crt``) exists.
"""

from __future__ import annotations

import ipaddress
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
# libpq's parameters that asyncpg reads from a connection string only: the engine hands
# them to the driver as one (auditor.store.engine), so that they mean what libpq says.
DSN_PARAMETERS = frozenset(
    {
        "sslmode",
        "sslcert",
        "sslkey",
        "sslrootcert",
        "sslcrl",
        "sslpassword",
        "sslnegotiation",
        "ssl_min_protocol_version",
        "ssl_max_protocol_version",
        "application_name",
    }
)
# asyncpg's keyword arguments a URL may set (SQLAlchemy passes each query parameter as one).
KEYWORD_PARAMETERS = frozenset(
    {
        "password",
        "passfile",
        "ssl",
        "host",
        "port",
        "target_session_attrs",
        "krbsrvname",
        "gsslib",
        "prepared_statement_cache_size",
    }
)
_MASK = "***"


def _is_secret(key: str) -> bool:
    lowered = key.lower()
    return any(word in lowered for word in ("password", "secret", "token"))


def _parse(url: str) -> URL | None:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url)
    except (ArgumentError, ValueError):
        return None


def _values(value: str | tuple[str, ...]) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


def is_postgres(url: str) -> bool:
    return url.split(":", 1)[0].split("+", 1)[0].lower() in ("postgresql", "postgres")


def display_url(url: str) -> str:
    """The URL as it may be shown: the password and every secret parameter as ``***``."""
    parsed = _parse(url)
    if parsed is None:
        return "<invalid database URL>"
    secret_keys = [key for key in parsed.query if _is_secret(key)]
    if not secret_keys:
        return parsed.render_as_string(hide_password=True)
    # SQLAlchemy percent-encodes query values: a placeholder of letters survives that.
    placeholder = "MASKED" + uuid.uuid4().hex
    masked = parsed.update_query_dict(dict.fromkeys(secret_keys, placeholder))
    return masked.render_as_string(hide_password=True).replace(placeholder, _MASK)


def url_secrets(url: str) -> tuple[str, ...]:
    """Every secret the URL holds, as written in it and decoded, longest first."""
    from urllib.parse import quote, quote_plus

    parsed = _parse(url)
    if parsed is None:
        return ()
    found = {parsed.password} if parsed.password else set()
    for key, value in parsed.query.items():
        if _is_secret(key):
            found.update(v for v in _values(value) if v)
    for value in list(found):
        found.update({quote(value, safe=""), quote_plus(value)})
    return tuple(sorted(found, key=len, reverse=True))


def url_problems(url: str) -> list[str]:
    """What the driver would refuse in a PostgreSQL URL (no value of a secret is named)."""
    if not is_postgres(url):
        return []
    parsed = _parse(url)
    if parsed is None:
        return ["is not a valid URL: expected postgresql://user@host/db"]
    problems = []
    known = DSN_PARAMETERS | KEYWORD_PARAMETERS
    unknown = sorted(key for key in parsed.query if key not in known)
    if unknown:
        problems.append(
            f"unknown parameter {', '.join(map(repr, unknown))} (known: {', '.join(sorted(known))})"
        )
    twice = sorted(
        key for key, value in parsed.query.items() if key != "host" and not isinstance(value, str)
    )
    if twice:
        problems.append(f"parameter {', '.join(map(repr, twice))} is given more than once")
    if "ssl" in parsed.query and "sslmode" in parsed.query:
        problems.append("set sslmode or ssl, not both")
    for key in ("sslmode", "ssl"):
        for value in _values(parsed.query.get(key, ())):
            if value not in SSL_MODES:
                problems.append(f"{key} {value!r} is not one of {', '.join(SSL_MODES)}")
    return problems


@dataclass(frozen=True)
class DatabaseTls:
    """The TLS a PostgreSQL URL asks for (with the environment's ``PGSSL*`` variables)."""

    mode: str
    # "sslmode in the URL", "ssl in the URL", "$PGSSLMODE" or "the driver's default"
    source: str
    # Where the server's certificate is checked against; None: it is not checked.
    root_cert: str | None
    hosts: tuple[str, ...]

    @property
    def verified(self) -> bool:
        """Whether the server's certificate is verified (against ``root_cert``)."""
        return self.root_cert is not None

    @property
    def local(self) -> bool:
        """Whether every host is this machine (loopback or a Unix socket)."""
        return all(_is_local(host) for host in self.hosts)

    def describe(self) -> str:
        what = {
            "disable": "no TLS",
            "allow": "TLS only if the server insists, its certificate not verified",
            "prefer": "TLS when the server offers it, its certificate not verified",
        }.get(self.mode)
        if what is None:
            if self.mode == "verify-full":
                what = "TLS required, the certificate and host name verified"
            elif self.verified:
                what = "TLS required, the certificate verified, not the host name"
            else:
                what = "TLS required, the certificate not verified"
        return f"sslmode={self.mode}, {self.source}: {what}"


def _is_local(host: str) -> bool:
    name = host
    if name.startswith("["):  # "[::1]" or "[::1]:5432"
        name = name[1:].split("]", 1)[0]
    elif name.count(":") == 1:  # "host:5432"
        name = name.split(":", 1)[0]
    if not name or name.startswith("/") or name.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _root_cert(query: Mapping[str, str | tuple[str, ...]], environ: Mapping[str, str]) -> str:
    given = query.get("sslrootcert")
    if isinstance(given, str) and given:
        return given
    if environ.get("PGSSLROOTCERT"):
        return environ["PGSSLROOTCERT"]
    try:
        default = Path.home() / ".postgresql" / "root.crt"
    except (RuntimeError, KeyError):
        return ""
    return str(default) if default.is_file() else ""


def database_tls(url: str, environ: Mapping[str, str] | None = None) -> DatabaseTls | None:
    """The TLS mode a PostgreSQL URL connects with; None for SQLite or an invalid URL."""
    if not is_postgres(url):
        return None
    parsed = _parse(url)
    if parsed is None:
        return None
    environ = os.environ if environ is None else environ
    query = parsed.query
    hosts = _values(query["host"]) if "host" in query else (parsed.host or "",)
    mode, source = "", ""
    for key in ("sslmode", "ssl"):  # the driver lets ssl win; url_problems refuses both
        value = query.get(key)
        if isinstance(value, str) and value:
            mode, source = value, f"{key} in the URL"
    if not mode and environ.get("PGSSLMODE"):
        mode, source = environ["PGSSLMODE"], "$PGSSLMODE"
    if not mode:
        over_tcp = any(not host.startswith("/") for host in hosts)
        mode, source = ("prefer" if over_tcp else "disable"), "the driver's default"
    root: str | None = None
    if mode in ("verify-ca", "verify-full"):
        root = _root_cert(query, environ) or "~/.postgresql/root.crt"
    elif mode == "require":
        # libpq and asyncpg: "require" checks the chain when a root certificate is found.
        root = _root_cert(query, environ) or None
    return DatabaseTls(mode=mode, source=source, root_cert=root, hosts=hosts)
