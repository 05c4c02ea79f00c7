"""How a failed exchange with a PBX becomes one of our errors.

Foreign errors (aiohttp, SSL, timeouts) and unhappy HTTP answers enter here and leave as an
:class:`~auditor.errors.SourceError` subclass naming the target (and page), or as one of the
two signals the client acts on itself: :class:`Retryable` (a transient failure: try again)
and :class:`TokenRejected` (a 401: log in again once). Every text that came from outside
passes through the caller's ``scrub`` (secrets and tokens removed) before it enters a message.

No I/O: these functions only look at what the client already received; they never send a
request, retry, sleep or log.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from yarl import URL

from auditor.errors import (
    AuthError,
    BadQueryError,
    BadResponseError,
    SourceError,
    UnavailableError,
)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_SNIPPET = 120

Scrub = Callable[[str], str]


class Retryable(Exception):
    """A transient failure; carries the error to raise when retries run out."""

    def __init__(self, error: SourceError, retry_after: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after


class TokenRejected(Exception):
    """The PBX answered 401 to ``token``: log in again (once)."""

    def __init__(self, token: str) -> None:
        super().__init__("token rejected")
        self.token = token


def odata_message(body: bytes) -> str | None:
    """The ``error.message`` of an OData error body (or an OAuth ``error_description``)."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    error = data.get("error")
    if isinstance(error, dict):
        message = error.get("message")
        if isinstance(message, str) and message:
            return message
        code = error.get("code")
        return code if isinstance(code, str) and code else None
    if isinstance(error, str):
        description = data.get("error_description")
        return f"{error}: {description}" if isinstance(description, str) else error
    return None


def parse_retry_after(value: str | None) -> float | None:
    """The seconds a ``Retry-After`` header asks for (a number or an HTTP date), if any."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())


def transport_failure(
    exc: BaseException,
    what: str,
    page: int | None,
    *,
    target: str,
    base: URL,
    timeout: float,
    scrub: Scrub,
) -> Exception:
    """The error for a failed exchange, wrapped as retryable unless retrying cannot help."""
    error = transport_error(exc, what, page, target=target, base=base, timeout=timeout, scrub=scrub)
    if isinstance(exc, aiohttp.ClientSSLError):
        # A certificate that fails verification, or a server that speaks no TLS, fails the
        # same way on every attempt.
        return error
    return Retryable(error)


def transport_error(
    exc: BaseException,
    what: str,
    page: int | None,
    *,
    target: str,
    base: URL,
    timeout: float,
    scrub: Scrub,
) -> SourceError:
    """The error for an exchange that failed below HTTP (timeout, connection, TLS, body)."""
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        reason = f"{what}: no answer within {timeout:g}s"
        return UnavailableError(reason, target=target, page=page)
    if isinstance(exc, aiohttp.ClientPayloadError):
        return BadResponseError(
            f"{what}: truncated body ({type(exc).__name__})", target=target, page=page
        )
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        reason = f"{what}: connection dropped by the PBX"
    elif isinstance(exc, aiohttp.ClientSSLError):
        reason = f"{what}: {tls_problem(exc, base)}"
    elif isinstance(exc, aiohttp.ClientConnectorError):
        reason = f"{what}: cannot connect to {base.host}:{base.port} ({exc.strerror})"
    else:
        reason = f"{what}: {type(exc).__name__}: {exc}"
    return UnavailableError(scrub(reason), target=target, page=page)


# What to do about a TLS failure, by words of OpenSSL's reason (lower case), first match.
_TLS_HINTS: tuple[tuple[tuple[str, ...], str], ...] = (
    (
        ("self-signed", "self signed"),
        "the PBX's certificate is self-signed: set ca_file to a copy of it",
    ),
    (
        ("local issuer", "issuer certificate", "verify the first certificate", "unknown ca"),
        "the certificate's issuer is not trusted here: set ca_file to the issuing CA's "
        "certificate, or serve the whole chain on the PBX",
    ),
    (
        ("hostname mismatch", "ip address mismatch"),
        "the certificate is issued for another name: put a name it is issued for in url",
    ),
    (
        ("expired",),
        "the PBX's certificate has expired: renew it (or check this host's clock)",
    ),
    (
        ("not yet valid",),
        "the PBX's certificate is not valid yet: check this host's clock",
    ),
    (
        ("wrong version number", "record layer failure", "http request", "packet length too long"),
        "the server does not speak TLS on this port: does the url need http://, or another port?",
    ),
)


def tls_problem(exc: aiohttp.ClientSSLError, base: URL) -> str:
    """OpenSSL's reason for a failed TLS connection, with what to do about it."""
    cause = getattr(exc, "certificate_error", None) or getattr(exc, "os_error", None) or exc
    text = str(getattr(cause, "strerror", None) or cause)
    # "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: ... (_ssl.c:1006)"
    text = re.sub(r"^\[SSL(?::\s*\w+)?\]\s*", "", re.sub(r"\s*\(_ssl\.c:\d+\)$", "", text))
    verify = getattr(cause, "verify_message", None)
    if verify and verify not in text:
        text = f"{text}: {verify}"
    text = text.rstrip(".")
    lower = text.lower()
    hint = next(
        (hint for words, hint in _TLS_HINTS if any(word in lower for word in words)),
        "for a PBX with a private CA or a self-signed certificate, set ca_file",
    )
    return f"TLS failed with {base.host}:{base.port}: {text}; {hint}"


def parse_json(body: bytes, what: str, page: int | None, *, target: str, scrub: Scrub) -> Any:
    """The parsed body, or a :class:`BadResponseError` quoting its start."""
    try:
        return json.loads(body)
    except ValueError:
        snippet = body[:_SNIPPET].decode("utf-8", "replace").replace("\n", " ")
        raise BadResponseError(
            f"{what}: answer is not JSON ({len(body)} bytes: {scrub(snippet)!r})",
            target=target,
            page=page,
        ) from None


# OAuth errors that mean "these client credentials are wrong" (RFC 6749, section 5.2).
_CREDENTIAL_ERRORS = frozenset({"invalid_client", "unauthorized_client"})


def oauth_error(body: bytes) -> tuple[str, str | None] | None:
    """``(error, error_description)`` of an OAuth error body, else None."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("error"), str):
        return None
    description = data.get("error_description")
    return data["error"], description if isinstance(description, str) else None


def body_kind(body: bytes) -> str:
    """What an unexpected answer's body looks like, in a few words (never its content)."""
    head = body[:512].lstrip().lower()
    if not head:
        return "an empty body"
    if head.startswith(b"<") or b"<html" in head:
        return "an HTML page"
    try:
        json.loads(body)
    except ValueError:
        return "not JSON"
    return "JSON that is not a token"


def login_failure(
    status: int,
    body: bytes,
    retry_after: float | None,
    *,
    target: str,
    client_id: str,
    url: URL,
    scrub: Scrub,
) -> Exception:
    """The error for a login answered with ``status`` (not 200).

    Only an OAuth error (or a 401/403) is about the credentials; any other answer (404,
    405, 501, an HTML page ...) means there is no 3CX token endpoint at that address.
    """
    if status in RETRY_STATUSES:
        error = UnavailableError(f"login answered HTTP {status}", target=target, status=status)
        return Retryable(error, retry_after)
    oauth = oauth_error(body)
    if oauth is None and status not in (401, 403):
        return no_token_endpoint(status, body, target=target, url=url)
    check = (
        f": check client_id {client_id!r} and its secret (API key) in the 3CX admin console"
        if oauth is None or oauth[0] in _CREDENTIAL_ERRORS
        else ""
    )
    if oauth is not None:
        code, description = oauth
        message = f"{code}: {description}" if description else code
    else:
        message = odata_message(body) or f"HTTP {status}"
    return AuthError(f"login refused ({scrub(message)}){check}", target=target, status=status)


# How web servers say that plain HTTP reached their HTTPS port (nginx, Apache).
_PLAIN_HTTP_REFUSED = (b"plain http", b"https port", b"ssl-enabled")


def no_token_endpoint(status: int, body: bytes, *, target: str, url: URL) -> BadResponseError:
    """The error for a login address that answers, but not as a 3CX token endpoint."""
    hint = "check the target's url: the PBX's base address, like https://pbx.example.com"
    if url.scheme == "http" and any(w in body[:2048].lower() for w in _PLAIN_HTTP_REFUSED):
        hint = "the server asks for HTTPS: the url must start with https://"
    return BadResponseError(
        f"login: no 3CX token endpoint at {url} (HTTP {status}, {body_kind(body)}); {hint}",
        target=target,
        status=status,
    )


def answer_failure(
    status: int,
    body: bytes,
    retry_after: float | None,
    *,
    token: str,
    url: URL,
    what: str,
    page: int | None,
    target: str,
    scrub: Scrub,
) -> Exception:
    """The error for an API request (GET ``url`` with ``token``) answered with ``status``
    (not 200)."""
    message = scrub(odata_message(body) or "")
    if status == 401:
        return TokenRejected(token)
    if status in RETRY_STATUSES:
        detail = f"{what}: HTTP {status}" + (f" ({message})" if message else "")
        error = UnavailableError(detail, target=target, page=page, status=status)
        return Retryable(error, retry_after)
    if status == 400:
        return BadQueryError(
            f"{what}: the PBX refused the query: {message or 'HTTP 400'}",
            target=target,
            page=page,
            status=status,
        )
    if status == 403:
        return AuthError(
            f"{what}: forbidden (403): the API client needs the right role, and XAPI "
            "an Enterprise licence" + (f" ({message})" if message else ""),
            target=target,
            page=page,
            status=status,
        )
    if status == 404:
        return BadResponseError(
            f"{what}: not found (404) at {url.with_query(None)}: is this a 3CX V20 "
            "with the XAPI enabled?",
            target=target,
            page=page,
            status=status,
        )
    return BadResponseError(
        f"{what}: unexpected HTTP {status}" + (f" ({message})" if message else ""),
        target=target,
        page=page,
        status=status,
    )


def redirect_failure(
    status: int,
    location: str | None,
    url: URL,
    what: str,
    page: int | None,
    *,
    target: str,
    scrub: Scrub,
) -> SourceError:
    """The error for a redirect (never followed): where it pointed, resolved against ``url``.

    Not retryable: the PBX would point elsewhere again, and the fix is the target's URL.
    """
    where = "an unnamed location"
    if location:
        try:
            pointed = url.join(URL(location.strip()))
            where = str(pointed.with_user(None).with_password(None))
        except ValueError:
            where = "an invalid location"
        where = scrub(where[:_SNIPPET] + ("..." if len(where) > _SNIPPET else ""))
    return BadResponseError(
        f"the PBX redirected the {what} to {where} (HTTP {status}): fix the target URL",
        target=target,
        page=page,
        status=status,
    )
