"""The async client for one PBX's 3CX V20 Configuration API (XAPI), on aiohttp.

It owns the connection pool (TLS options, timeouts, User-Agent), the two exchanges (the
login at ``POST {url}/connect/token`` and authenticated GETs), retries with backoff for
transient failures, one re-login on a 401, and the API methods the audit calls. A 401 on an
API call means "log in again once, then give up"; failed logins are never retried.

What it hands to others: tokens (:mod:`~auditor.xapi.tokens`), turning failures into our
errors (:mod:`~auditor.xapi.failures`), and paging a collection and proving it complete
(:mod:`~auditor.xapi.paging`). Never prints, never touches the store; secrets and tokens are
scrubbed from every message. It follows no redirect: the login would re-send the client secret
wherever a 307/308 points, and a GET could be led from https:// to http://; a redirect is
reported as a failure naming where it pointed.
"""

from __future__ import annotations

import functools
import json
import random
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
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
from auditor.collections import Collection, odata_key
from auditor.config import TargetSettings
from auditor.errors import AuthError, BadResponseError, UnavailableError
from auditor.model import JSON, SCRIPT_KEY_FIELD
from auditor.model import SCRIPTS as SCRIPTS_COLLECTION
from auditor.odata import check_filter
from auditor.xapi.answers import Listing, Page, SettingsAnswer, answer_digest
from auditor.xapi.failures import (
    REDIRECT_STATUSES,
    Retryable,
    TokenRejected,
    answer_failure,
    login_failure,
    no_token_endpoint,
    parse_json,
    parse_retry_after,
    redirect_failure,
    transport_failure,
)
from auditor.xapi.paging import list_all, parse_page, query_options
from auditor.xapi.tokens import TokenCache

USER_AGENT = f"3cx-auditor/{__version__}"
SCRIPTS_PATH = "xapi/v1/Backups/Pbx.GetFailoverScripts()"
SETTINGS_PATH = "xapi/v1/Backups/Pbx.GetBackupFailoverSettings()"
LOGIN_PATH = "connect/token"
SCRIPTS = "GetFailoverScripts"

log = structlog.get_logger("auditor.xapi")

T = TypeVar("T")


@dataclass(slots=True)
class ClientStats:
    """What one client did: requests sent, logins, retries and re-logins after a 401."""

    requests: int = 0
    logins: int = 0
    retries: int = 0
    relogins: int = 0


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
        except Retryable as exc:
            if self.target.retries == 0:
                raise exc.error from None
            first: Retryable | None = exc

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
            if isinstance(exc, Retryable) and exc.retry_after is not None:
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
                reason=exc.error.detail if isinstance(exc, Retryable) else str(exc),
                wait_s=round(state.upcoming_sleep, 3),
            )

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.target.retries + 1),
            wait=wait,
            retry=retry_if_exception_type(Retryable),
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await again()
        except Retryable as exc:
            raise exc.error from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def _login(self) -> str:
        """A valid token: the cached one, or one fresh login (single-flight)."""
        return await self._tokens.get_or_login(
            self._token_key,
            lambda: self._with_retries(self._login_once, "login"),
            target=self.name,
        )

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
            # Never followed: a 307/308 would send the client secret wherever it points.
            async with session.post(url, data=form, allow_redirects=False) as response:
                body = await response.read()
                status = response.status
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                location = response.headers.get("Location")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._transport_failure(exc, "login", None) from None
        if status in REDIRECT_STATUSES:
            raise redirect_failure(
                status, location, url, "login", None, target=self.name, scrub=self._scrub
            )
        if status != 200:
            raise login_failure(
                status,
                body,
                retry_after,
                target=self.name,
                client_id=self.target.client_id,
                url=url,
                scrub=self._scrub,
            )
        try:
            data = json.loads(body)
        except ValueError:
            # A web server's page (a wrong base URL), not a token endpoint's answer.
            raise no_token_endpoint(status, body, target=self.name, url=url) from None
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
        return transport_failure(
            exc,
            what,
            page,
            target=self.name,
            base=self.base,
            timeout=self.target.request_timeout.total_seconds(),
            scrub=self._scrub,
        )

    def _json(self, body: bytes, what: str, page: int | None) -> Any:
        return parse_json(body, what, page, target=self.name, scrub=self._scrub)

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
            except TokenRejected as rejected:
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
        headers = {"Authorization": f"Bearer {token}"}
        try:
            # Not followed either: the answer must come from the configured PBX, and a
            # redirect could lead from https:// to http://.
            async with session.get(url, headers=headers, allow_redirects=False) as response:
                body = await response.read()
                status = response.status
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                location = response.headers.get("Location")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._transport_failure(exc, what, page) from None
        if status == 200:
            return self._json(body, what, page), body
        if status in REDIRECT_STATUSES:
            raise redirect_failure(
                status, location, url, what, page, target=self.name, scrub=self._scrub
            )
        raise answer_failure(
            status,
            body,
            retry_after,
            token=token,
            url=url,
            what=what,
            page=page,
            target=self.name,
            scrub=self._scrub,
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
        query = query_options(top=top, skip=skip, search=search, filter=filter, count=count)
        what = SCRIPTS + (f" $skip={skip}" if skip else "")
        data, body = await self._get(SCRIPTS_PATH, query, what, page)
        return parse_page(
            data,
            body,
            collection=SCRIPTS,
            key=SCRIPT_KEY_FIELD,
            top=top,
            skip=skip or 0,
            page=page,
            target=self.name,
        )

    async def list_failover_scripts(
        self, *, search: str | None = None, filter: str | None = None
    ) -> Listing:
        """Every failover script, paged and proved complete (see :mod:`auditor.xapi.paging`)."""
        search = self.target.search if search is None else search
        filter = self.target.filter if filter is None else filter
        if filter:
            check_filter(filter)

        async def fetch(top: int, skip: int, page: int) -> Page:
            return await self.get_failover_scripts(
                top=top, skip=skip, search=search, filter=filter, count=True, page=page
            )

        return await list_all(
            fetch,
            collection=SCRIPTS,
            key=SCRIPT_KEY_FIELD,
            top=self.target.page_size,
            max_relist=self.target.max_relist,
            deadline=self.target.listing_timeout.total_seconds(),
            target=self.name,
            log=self._log,
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

    # -- any collection of auditor.collections -------------------------------------------

    async def list_collection(self, entry: Collection) -> Listing:
        """Every item of a paged collection, proved complete like the failover scripts (the
        target's filter and search apply to the failover scripts only)."""
        if entry.name == SCRIPTS_COLLECTION:
            return await self.list_failover_scripts()
        key = entry.key
        if key is None:
            raise ValueError(f"{entry.name} is not a paged collection")
        path = entry.path.lstrip("/")

        async def fetch(top: int, skip: int, page: int) -> Page:
            query = query_options(top=top, skip=skip, count=True)
            what = entry.name + (f" $skip={skip}" if skip else "")
            data, body = await self._get(path, query, what, page)
            return parse_page(
                data,
                body,
                collection=entry.name,
                key=key,
                top=top,
                skip=skip,
                page=page,
                target=self.name,
            )

        return await list_all(
            fetch,
            collection=entry.name,
            key=key,
            top=self.target.page_size,
            max_relist=self.target.max_relist,
            deadline=self.target.listing_timeout.total_seconds(),
            target=self.name,
            log=self._log,
        )

    async def fetch_object(self, entry: Collection, item_key: str | None = None) -> SettingsAnswer:
        """A single-object collection (``item_key`` None) or the extras of one item of a paged
        one (``entry.extras_path``): the object, OData annotations removed, and its digest."""
        if item_key is None:
            path, what = entry.path, entry.name
        else:
            if entry.extras_path is None:
                raise ValueError(f"{entry.name} has no per-item extras")
            path = entry.extras_path.replace("{key}", odata_key(item_key))
            what = f"{entry.name} extras of {item_key!r}"
        data, body = await self._get(path.lstrip("/"), {}, what, None)
        if not isinstance(data, dict):
            raise BadResponseError(
                f"{what}: answer is a JSON {type(data).__name__}, not an object",
                target=self.name,
            )
        value = {k: v for k, v in data.items() if not k.startswith("@odata.")}
        return SettingsAnswer(value=value, digest=answer_digest([body]))
