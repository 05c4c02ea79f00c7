"""Who may ask: the bearer-token check in front of the JSON API and the Atom feed.

With ``[http] token`` set, ``/api/...`` and ``/feed.atom`` need ``Authorization: Bearer
<token>`` (401 and ``WWW-Authenticate: Bearer`` otherwise; 400 for a header that is not
UTF-8). A token in the query string is never accepted (it would end up in proxy and
access logs): a feed reader must be able to send the header. The probes and ``/metrics``
stay open, so that orchestrators and Prometheus need no secret.

This module only lets a request through or answers 401 (or 400): it never logs or echoes
a token, and touches no store.
"""

from __future__ import annotations

import hmac
from typing import Any

from aiohttp import web
from pydantic import SecretStr

from auditor.web.api import API_PREFIX
from auditor.web.feed import FEED_PATH
from auditor.web.responses import Handler, error_response


def bearer_middleware(token: SecretStr) -> Any:
    expected = token.get_secret_value().encode()

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not (request.path.startswith(API_PREFIX) or request.path == FEED_PATH):
            return await handler(request)
        header = request.headers.get("Authorization", "")
        try:
            # aiohttp keeps bytes that are not UTF-8 as lone surrogates, which no token has.
            header.encode("utf-8")
        except UnicodeEncodeError:
            return error_response(
                400,
                "Authorization: not valid UTF-8",
                headers={"WWW-Authenticate": 'Bearer realm="3cx-auditor", error="invalid_request"'},
            )
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return error_response(
                401,
                "this API needs an 'Authorization: Bearer <token>' header",
                headers={"WWW-Authenticate": 'Bearer realm="3cx-auditor"'},
            )
        # Constant time, so the answer's timing does not reveal how much of a guess was right.
        if not hmac.compare_digest(given.strip().encode(), expected):
            return error_response(
                401,
                "the bearer token is not valid",
                headers={"WWW-Authenticate": 'Bearer realm="3cx-auditor", error="invalid_token"'},
            )
        return await handler(request)

    return auth
