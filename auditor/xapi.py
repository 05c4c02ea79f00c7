"""Async client for the 3CX V20 Configuration API (XAPI) on aiohttp.

What it knows about real PBXs (see ``shared/3cx-xapi/README.md``):

* Login is OAuth2 client credentials at ``POST {url}/connect/token``. A PBX keeps one live
  token per client id: a second login invalidates the first. So logins are single-flight per
  (PBX, client id) through a :class:`TokenCache`, tokens are reused until shortly before they
  expire, and a 401 on an API call means "log in again once, then give up". Failed logins are
  never retried: repeated failures get the client's address blocked by the PBX.
* ``GetFailoverScripts()`` has no ``@odata.nextLink``: the client pages itself with
  ``$top``/``$skip``, advancing ``$skip`` by the items actually received, and asks for
  ``$count=true`` to prove the listing complete. ``$top`` above the PBX's limit (100) is
  refused with a 400 naming the limit; the client continues with that limit.
* Offset paging over a changing listing can skip or repeat items: duplicate keys or a count
  that does not match trigger a fresh listing, up to ``max_relist`` times.

Every failure leaves this module as an :class:`~auditor.errors.SourceError` subclass naming
the target (and page). Secrets and tokens are scrubbed from every message.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import random
import re
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
import structlog
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
)
from yarl import URL

from auditor import __version__
from auditor.config import TargetSettings
from auditor.errors import (
    AuthError,
    BadQueryError,
    BadResponseError,
    IncompleteListingError,
    SourceError,
    UnavailableError,
)
from auditor.model import JSON, SCRIPT_KEY_FIELD
from auditor.odata import check_filter, quote_search, validate_skip, validate_top

USER_AGENT = f"3cx-auditor/{__version__}"
SCRIPTS_PATH = "xapi/v1/Backups/Pbx.GetFailoverScripts()"
SETTINGS_PATH = "xapi/v1/Backups/Pbx.GetBackupFailoverSettings()"
LOGIN_PATH = "connect/token"

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_TOP_LIMIT = re.compile(r"limit of '(\d+)' for Top query", re.IGNORECASE)
_SNIPPET = 120

log = structlog.get_logger("auditor.xapi")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page:
    """One answer of ``GetFailoverScripts()``."""

    items: tuple[JSON, ...]
    count: int | None
    top: int | None
    skip: int
    # The answer exactly as received, for :func:`answer_digest`.
    body: bytes = field(default=b"", repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class Listing:
    """Every failover script of a PBX, proved complete.

    ``reported_count`` is the PBX's ``@odata.count`` (None when the PBX did not send one);
    ``relists`` how many times the listing had to start over because it shifted;
    ``digest`` the :func:`answer_digest` of the pages that made the listing.
    """

    items: tuple[JSON, ...]
    pages: int
    reported_count: int | None
    relists: int
    top: int
    digest: str = ""


@dataclass(frozen=True, slots=True)
class SettingsAnswer:
    """``GetBackupFailoverSettings()``: the object (OData annotations removed) and the
    :func:`answer_digest` of the answer."""

    value: JSON
    digest: str


def answer_digest(bodies: Iterable[bytes]) -> str:
    """SHA-256 (hex) over answers exactly as the PBX sent them, each prefixed by its length.

    Equal digests mean byte-identical answers, hence identical parsed contents: an audit
    can tell that nothing changed without looking at a single item.
    """
    digest = hashlib.sha256()
    for body in bodies:
        digest.update(len(body).to_bytes(8, "big"))
        digest.update(body)
    return digest.hexdigest()


@dataclass(slots=True)
class ClientStats:
    requests: int = 0
    logins: int = 0
    retries: int = 0
    relogins: int = 0


@dataclass(slots=True)
class _Token:
    value: str
    expires_at: float


@dataclass(slots=True)
class TokenCache:
    """Tokens by (PBX base URL, client id), with one login at a time for each.

    Share one cache between every client of a process that may talk to the same PBX with
    the same client id: a second, independent login would invalidate the first's token.
    A refused login is not repeated by the clients that were waiting for it.
    """

    _tokens: dict[tuple[str, str], _Token] = field(default_factory=dict)
    _locks: dict[tuple[str, str], asyncio.Lock] = field(default_factory=dict)
    _refusals: dict[tuple[str, str], tuple[int, AuthError]] = field(default_factory=dict)

    def lock(self, key: tuple[str, str]) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    def get(self, key: tuple[str, str]) -> str | None:
        token = self._tokens.get(key)
        if token is None or token.expires_at <= time.monotonic():
            return None
        return token.value

    def put(self, key: tuple[str, str], value: str, lifetime: float) -> None:
        # Renew a little early so a token never expires between check and use.
        margin = min(60.0, lifetime * 0.1)
        self._tokens[key] = _Token(value, time.monotonic() + max(lifetime - margin, 1.0))

    def discard(self, key: tuple[str, str], value: str) -> None:
        token = self._tokens.get(key)
        if token is not None and token.value == value:
            del self._tokens[key]

    def refusals(self, key: tuple[str, str]) -> int:
        """How many logins the PBX has refused for ``key`` so far."""
        refusal = self._refusals.get(key)
        return refusal[0] if refusal is not None else 0

    def refuse(self, key: tuple[str, str], error: AuthError) -> None:
        self._refusals[key] = (self.refusals(key) + 1, error)

    def refused_since(self, key: tuple[str, str], seen: int) -> AuthError | None:
        """The last refusal, when there was one after ``refusals(key)`` returned ``seen``."""
        refusal = self._refusals.get(key)
        return refusal[1] if refusal is not None and refusal[0] > seen else None


class _Retryable(Exception):
    """A transient failure; carries the error to raise when retries run out."""

    def __init__(self, error: SourceError, retry_after: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after


class _TokenRejected(Exception):
    def __init__(self, token: str) -> None:
        super().__init__("token rejected")
        self.token = token


def _odata_message(body: bytes) -> str | None:
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


def _retry_after(value: str | None) -> float | None:
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


@functools.lru_cache(maxsize=4096)
def _joined(base: URL, path: str) -> URL:
    # A client lives for one audit; the addresses it asks for are the same every time.
    return base.join(URL(path, encoded=True))


class XapiClient:
    """A client for one PBX. Use as ``async with XapiClient(target) as client``."""

    def __init__(
        self,
        target: TargetSettings,
        *,
        tokens: TokenCache | None = None,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        max_retry_after: float = 120.0,
        connections: int = 4,
    ) -> None:
        self.target = target
        self.name = target.name
        self.base = URL(target.url + "/")
        self.stats = ClientStats()
        self._tokens = tokens if tokens is not None else TokenCache()
        self._token_key = (target.url, target.client_id)
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._max_retry_after = max_retry_after
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        self._log = log.bind(target=target.name)

    async def __aenter__(self) -> XapiClient:
        # The connection pool is made by the first request: a ca_file that cannot be loaded
        # then fails that request, and the audit records it like any other failure.
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection pool. Idempotent; the client refuses requests afterwards."""
        self._closed = True
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def _ssl(self) -> ssl.SSLContext | bool:
        if not self.target.verify_tls:
            return False
        if self.target.ca_file is not None:
            return ssl.create_default_context(cafile=str(self.target.ca_file))
        return True

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise UnavailableError("client is closed", target=self.name)
        if self._session is None:
            try:
                ssl_option = self._ssl()
            except (OSError, ssl.SSLError) as exc:
                raise UnavailableError(
                    f"cannot load ca_file {self.target.ca_file}: {exc}", target=self.name
                ) from None
            connector = aiohttp.TCPConnector(limit=self._connections, ssl=ssl_option)
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=self.target.request_timeout.total_seconds()),
                headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
                # Query strings are built here, exactly as OData expects them.
                requote_redirect_url=False,
            )
        return self._session

    def _url(self, path: str) -> URL:
        """The address of ``path`` (relative, already encoded) on this PBX."""
        return _joined(self.base, path)

    def _scrub(self, text: str) -> str:
        """Remove the secret and any known token from text that came from outside."""
        secrets = [self.target.secret()]
        token = self._tokens.get(self._token_key)
        if token:
            secrets.append(token)
        for secret in secrets:
            if secret:
                text = text.replace(secret, "***")
        return text

    # -- low level -------------------------------------------------------------------------

    async def _with_retries(self, call: Callable[[], Awaitable[T]], what: str) -> T:
        # The first attempt runs bare: almost every request succeeds at once, and setting up
        # the retry machinery for each one cost more than the request's own client work.
        try:
            return await call()
        except _Retryable as exc:
            if self.target.retries == 0:
                raise exc.error from None
            first: _Retryable | None = exc

        async def again() -> T:
            # Attempt 1 already failed: hand its error to tenacity (which waits, logs and
            # counts it as before), then make the real attempts.
            nonlocal first
            if first is not None:
                failed, first = first, None
                raise failed
            return await call()

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            if isinstance(exc, _Retryable) and exc.retry_after is not None:
                return min(exc.retry_after, self._max_retry_after)
            # Exponential backoff with up to a second of jitter, computed here: tenacity's
            # wait_exponential_jitter renamed its `initial` within the versions allowed.
            backoff = self._backoff_initial * 2.0 ** min(state.attempt_number - 1, 32)
            return min(backoff + random.uniform(0.0, 1.0), self._backoff_max)

        def before_sleep(state: RetryCallState) -> None:
            self.stats.retries += 1
            exc = state.outcome.exception() if state.outcome else None
            self._log.warning(
                "xapi.retry",
                what=what,
                attempt=state.attempt_number,
                reason=exc.error.detail if isinstance(exc, _Retryable) else str(exc),
                wait_s=round(state.upcoming_sleep, 3),
            )

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.target.retries + 1),
            wait=wait,
            retry=retry_if_exception_type(_Retryable),
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await again()
        except _Retryable as exc:
            raise exc.error from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def _login(self) -> str:
        """A valid token: the cached one, or one fresh login (single-flight)."""
        token = self._tokens.get(self._token_key)
        if token is not None:
            return token
        refusals = self._tokens.refusals(self._token_key)
        async with self._tokens.lock(self._token_key):
            token = self._tokens.get(self._token_key)
            if token is not None:
                return token
            refused = self._tokens.refused_since(self._token_key, refusals)
            if refused is not None:
                # The login this one waited for was refused: trying the same credentials
                # again would only be one more failed login for the PBX to block us for.
                raise AuthError(refused.detail, target=self.name, status=refused.status)
            try:
                return await self._with_retries(self._login_once, "login")
            except AuthError as exc:
                self._tokens.refuse(self._token_key, exc)
                raise

    async def _login_once(self) -> str:
        session = self._ensure_session()
        url = self._url(LOGIN_PATH)
        form = {
            "client_id": self.target.client_id,
            "client_secret": self.target.secret(),
            "grant_type": "client_credentials",
        }
        self.stats.requests += 1
        try:
            async with session.post(url, data=form) as response:
                body = await response.read()
                status = response.status
                retry_after = _retry_after(response.headers.get("Retry-After"))
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._transport_failure(exc, "login", None) from None
        if status in RETRY_STATUSES:
            error = UnavailableError(
                f"login answered HTTP {status}", target=self.name, status=status
            )
            raise _Retryable(error, retry_after)
        if status != 200:
            message = _odata_message(body) or f"HTTP {status}"
            raise AuthError(
                f"login refused ({self._scrub(message)}): check client_id "
                f"{self.target.client_id!r} and its secret (API key) in the 3CX admin console",
                target=self.name,
                status=status,
            )
        data = self._json(body, "login", None)
        token = data.get("access_token") if isinstance(data, dict) else None
        if not isinstance(token, str) or not token:
            raise BadResponseError("login answer has no access_token", target=self.name)
        expires_in = data.get("expires_in", 3600) if isinstance(data, dict) else 3600
        lifetime = float(expires_in) if isinstance(expires_in, int | float) else 3600.0
        self._tokens.put(self._token_key, token, lifetime)
        self.stats.logins += 1
        self._log.info("xapi.login", expires_in=lifetime)
        return token

    def _transport_failure(self, exc: BaseException, what: str, page: int | None) -> Exception:
        """The error for a failed exchange, wrapped as retryable unless retrying cannot help."""
        error = self._transport_error(exc, what, page)
        if isinstance(exc, aiohttp.ClientConnectorCertificateError):
            # A certificate that fails verification fails the same way on every attempt.
            return error
        return _Retryable(error)

    def _transport_error(self, exc: BaseException, what: str, page: int | None) -> SourceError:
        if isinstance(exc, TimeoutError | asyncio.TimeoutError):
            reason = f"{what}: no answer within {self.target.request_timeout.total_seconds():g}s"
            return UnavailableError(reason, target=self.name, page=page)
        if isinstance(exc, aiohttp.ClientPayloadError):
            return BadResponseError(
                f"{what}: truncated body ({type(exc).__name__})", target=self.name, page=page
            )
        if isinstance(exc, aiohttp.ServerDisconnectedError):
            reason = f"{what}: connection dropped by the PBX"
        elif isinstance(exc, aiohttp.ClientSSLError | aiohttp.ClientConnectorCertificateError):
            reason = f"{what}: TLS failed ({type(exc).__name__}); for a self-signed PBX set ca_file"
        elif isinstance(exc, aiohttp.ClientConnectorError):
            reason = f"{what}: cannot connect to {self.base.host}:{self.base.port} ({exc.strerror})"
        else:
            reason = f"{what}: {type(exc).__name__}: {exc}"
        return UnavailableError(self._scrub(reason), target=self.name, page=page)

    def _json(self, body: bytes, what: str, page: int | None) -> Any:
        try:
            return json.loads(body)
        except ValueError:
            snippet = body[:_SNIPPET].decode("utf-8", "replace").replace("\n", " ")
            raise BadResponseError(
                f"{what}: answer is not JSON ({len(body)} bytes: {self._scrub(snippet)!r})",
                target=self.name,
                page=page,
            ) from None

    async def _get(
        self, path: str, query: Mapping[str, str], what: str, page: int | None
    ) -> tuple[Any, bytes]:
        """GET a JSON document (parsed, and as received), with retries and one re-login on
        401."""
        for relogin in (False, True):
            token = await self._login()
            try:
                return await self._with_retries(
                    functools.partial(self._get_once, path, query, token, what, page), what
                )
            except _TokenRejected as rejected:
                self._tokens.discard(self._token_key, rejected.token)
                if relogin:
                    break
                self.stats.relogins += 1
                self._log.info("xapi.relogin", what=what, page=page)
        raise AuthError(
            f"{what}: the PBX rejected a fresh access token (401); another client may be "
            f"logging in with client id {self.target.client_id!r}",
            target=self.name,
            page=page,
            status=401,
        )

    async def _get_once(
        self, path: str, query: Mapping[str, str], token: str, what: str, page: int | None
    ) -> tuple[Any, bytes]:
        session = self._ensure_session()
        url = self._url(path)
        if query:
            url = url.with_query(query)
        self.stats.requests += 1
        try:
            async with session.get(url, headers={"Authorization": f"Bearer {token}"}) as response:
                body = await response.read()
                status = response.status
                retry_after = _retry_after(response.headers.get("Retry-After"))
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._transport_failure(exc, what, page) from None
        if status == 200:
            return self._json(body, what, page), body
        message = self._scrub(_odata_message(body) or "")
        if status == 401:
            raise _TokenRejected(token)
        if status in RETRY_STATUSES:
            detail = f"{what}: HTTP {status}" + (f" ({message})" if message else "")
            error = UnavailableError(detail, target=self.name, page=page, status=status)
            raise _Retryable(error, retry_after)
        if status == 400:
            raise BadQueryError(
                f"{what}: the PBX refused the query: {message or 'HTTP 400'}",
                target=self.name,
                page=page,
                status=status,
            )
        if status == 403:
            raise AuthError(
                f"{what}: forbidden (403): the API client needs the right role, and XAPI "
                "an Enterprise licence" + (f" ({message})" if message else ""),
                target=self.name,
                page=page,
                status=status,
            )
        if status == 404:
            raise BadResponseError(
                f"{what}: not found (404) at {url.with_query(None)}: is this a 3CX V20 "
                "with the XAPI enabled?",
                target=self.name,
                page=page,
                status=status,
            )
        raise BadResponseError(
            f"{what}: unexpected HTTP {status}" + (f" ({message})" if message else ""),
            target=self.name,
            page=page,
            status=status,
        )

    # -- the API -----------------------------------------------------------------------------

    async def get_failover_scripts(
        self,
        *,
        top: int | None = None,
        skip: int | None = None,
        search: str | None = None,
        filter: str | None = None,
        count: bool = False,
        page: int | None = None,
    ) -> Page:
        """One request to ``GetFailoverScripts()`` with the given query options."""
        query: dict[str, str] = {}
        if top is not None:
            query["$top"] = str(validate_top(top))
        if skip is not None:
            query["$skip"] = str(validate_skip(skip))
        if search:
            query["$search"] = quote_search(search)
        if filter:
            query["$filter"] = check_filter(filter)
        if count:
            query["$count"] = "true"
        what = "GetFailoverScripts" + (f" $skip={skip}" if skip else "")
        data, body = await self._get(SCRIPTS_PATH, query, what, page)
        return self._parse_page(data, body, top, skip or 0, page)

    def _parse_page(
        self, data: Any, body: bytes, top: int | None, skip: int, page: int | None
    ) -> Page:
        def bad(why: str) -> BadResponseError:
            return BadResponseError(f"GetFailoverScripts: {why}", target=self.name, page=page)

        if not isinstance(data, dict):
            raise bad(f"answer is a JSON {type(data).__name__}, not an object")
        if "value" not in data:
            raise bad("answer has no 'value' list")
        value = data["value"]
        if not isinstance(value, list):
            raise bad(f"'value' is a {type(value).__name__}, not a list")
        for index, item in enumerate(value):
            if not isinstance(item, dict):
                raise bad(f"item {skip + index} is a {type(item).__name__}, not an object")
            if not isinstance(item.get(SCRIPT_KEY_FIELD), str):
                raise bad(f"item {skip + index} has no string {SCRIPT_KEY_FIELD!r}")
        count = data.get("@odata.count")
        if count is not None and (isinstance(count, bool) or not isinstance(count, int)):
            raise bad(f"'@odata.count' is {count!r}, not an integer")
        return Page(items=tuple(value), count=count, top=top, skip=skip, body=body)

    async def list_failover_scripts(
        self, *, search: str | None = None, filter: str | None = None
    ) -> Listing:
        """Every failover script, paged and proved complete (see the module docstring)."""
        search = self.target.search if search is None else search
        filter = self.target.filter if filter is None else filter
        if filter:
            check_filter(filter)
        deadline = self.target.listing_timeout.total_seconds()
        try:
            async with asyncio.timeout(deadline):
                return await self._list(search, filter)
        except TimeoutError:
            raise UnavailableError(
                f"GetFailoverScripts: listing not finished within {deadline:g}s (listing_timeout)",
                target=self.name,
            ) from None

    async def _list(self, search: str | None, filter: str | None) -> Listing:
        top = self.target.page_size
        problem = ""
        for attempt in range(self.target.max_relist + 1):
            if attempt:
                self._log.warning("xapi.relist", attempt=attempt, reason=problem)
            items: list[JSON] = []
            bodies: list[bytes] = []
            seen: set[str] = set()
            duplicates: list[str] = []
            repeated = False
            counts: set[int] = set()
            skip = 0
            pages = 0
            while True:
                try:
                    page = await self.get_failover_scripts(
                        top=top,
                        skip=skip,
                        search=search,
                        filter=filter,
                        count=True,
                        page=pages + 1,
                    )
                except BadQueryError as exc:
                    limit = _TOP_LIMIT.search(exc.detail)
                    if limit and 0 < int(limit.group(1)) < top:
                        top = int(limit.group(1))
                        self._log.warning("xapi.top_limited", top=top)
                        continue
                    raise
                pages += 1
                bodies.append(page.body)
                if page.count is not None:
                    counts.add(page.count)
                if not page.items:
                    break
                known = len(seen)
                for item in page.items:
                    key = item[SCRIPT_KEY_FIELD]
                    if key in seen:
                        duplicates.append(key)
                    seen.add(key)
                    items.append(item)
                skip += len(page.items)
                if page.count is not None and skip >= page.count:
                    break
                if len(seen) == known:
                    # Nothing but keys already listed: the PBX answers the same items whatever
                    # $skip says, or the listing moved by a page or more. Without
                    # @odata.count paging on would never end; start over instead.
                    repeated = True
                    break
            reported = max(counts) if counts else None
            if repeated:
                problem = (
                    f"page {pages} held only keys already listed, e.g. {duplicates[0]!r} (a PBX "
                    "or proxy ignoring $skip, or a listing that moved by a whole page)"
                )
            elif duplicates:
                problem = f"{len(duplicates)} duplicate key(s), e.g. {duplicates[0]!r}"
            elif len(counts) > 1:
                problem = f"@odata.count changed while paging ({sorted(counts)})"
            elif reported is not None and reported != len(items):
                problem = f"received {len(items)} items but @odata.count is {reported}"
            else:
                return Listing(
                    items=tuple(items),
                    pages=pages,
                    reported_count=reported,
                    relists=attempt,
                    top=top,
                    digest=answer_digest(bodies),
                )
        raise IncompleteListingError(
            f"GetFailoverScripts: listing shifted while paging {self.target.max_relist + 1} "
            f"times ({problem})",
            target=self.name,
        )

    async def get_failover_settings(self) -> JSON:
        """``GetBackupFailoverSettings()``: the settings object, OData annotations removed."""
        return (await self.fetch_failover_settings()).value

    async def fetch_failover_settings(self) -> SettingsAnswer:
        """:meth:`get_failover_settings`, with the digest of the answer."""
        what = "GetBackupFailoverSettings"
        data, body = await self._get(SETTINGS_PATH, {}, what, None)
        if not isinstance(data, dict):
            raise BadResponseError(
                f"{what}: answer is a JSON {type(data).__name__}, not an object",
                target=self.name,
            )
        value = {k: v for k, v in data.items() if not k.startswith("@odata.")}
        return SettingsAnswer(value=value, digest=answer_digest([body]))
