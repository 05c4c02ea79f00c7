"""The one exception tree of 3cx-auditor.

::

    AuditorError                 anything this program reports as a readable line
    ├── ConfigError              invalid configuration; ``.problems`` holds one line per key
    ├── QueryError               a query option refused locally ($top, $skip, $filter ...)
    ├── SourceError              talking to a PBX failed; names the target (and page, if any)
    │   ├── UnavailableError     connection refused/reset, timeout, 5xx, 429 after retries
    │   ├── AuthError            the PBX refused the credentials or the token (401/403)
    │   ├── BadQueryError        the PBX answered 400 to a query option (its message kept)
    │   ├── BadResponseError     not JSON, truncated, missing ``value``, wrong types
    │   └── IncompleteListingError  the listing kept shifting while it was paged
    ├── StoreError               the database refused or is unreachable
    │   └── InUseError           a SQLite database is already used by another daemon
    └── DeliveryError            an alert sink refused or is unreachable

Foreign exceptions (aiohttp, SQLAlchemy, OSError) are translated where they enter the
program, so callers above that point only ever see these classes. No message built here
may contain a secret: callers pass names, URLs without credentials and PBX messages only.
"""

from __future__ import annotations

from collections.abc import Iterable


class AuditorError(Exception):
    """Base of every error this program reports as one readable line."""


class ConfigError(AuditorError):
    """The configuration is invalid. ``problems`` holds ``config: <key>: <why>`` lines."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems: tuple[str, ...] = tuple(problems)
        super().__init__("\n".join(self.problems) or "config: invalid")


class QueryError(AuditorError):
    """A query option was refused before any request was made."""


class SourceError(AuditorError):
    """Talking to one PBX failed.

    ``target`` names the PBX (its configured name), ``page`` the 1-based page of a listing
    when the failure happened while paging, ``status`` the HTTP status when there was one.
    """

    def __init__(
        self,
        message: str,
        *,
        target: str,
        page: int | None = None,
        status: int | None = None,
    ) -> None:
        self.target = target
        self.page = page
        self.status = status
        self.detail = message
        where = f"{target}" if page is None else f"{target}, page {page}"
        super().__init__(f"{where}: {message}")


class UnavailableError(SourceError):
    """The PBX could not be reached or kept failing (after retries)."""


class AuthError(SourceError):
    """The PBX refused the client credentials or the access token."""


class BadQueryError(SourceError):
    """The PBX refused a query option with HTTP 400; the message is the PBX's own."""


class BadResponseError(SourceError):
    """The PBX answered something that is not the documented JSON."""


class IncompleteListingError(SourceError):
    """The listing could not be proved complete (it kept shifting while it was paged)."""


class StoreError(AuditorError):
    """The database refused an operation or could not be reached."""


class InUseError(StoreError):
    """The SQLite database is held by another ``run`` process (SQLite serves one process)."""


class DeliveryError(AuditorError):
    """An alert sink refused a delivery or could not be reached.

    ``permanent``: retrying cannot help (the delivery is marked dead). ``retry_after``: the
    seconds the sink asked to wait (HTTP ``Retry-After``). ``disable``: the endpoint is gone
    for good (HTTP 410) and receives nothing more.
    """

    def __init__(
        self,
        message: str,
        *,
        permanent: bool = False,
        retry_after: float | None = None,
        disable: bool = False,
    ) -> None:
        self.permanent = permanent or disable
        self.retry_after = retry_after
        self.disable = disable
        super().__init__(message)
