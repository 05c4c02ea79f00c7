"""JSON answers and JSON errors, shared by every route of the web application.

A handler refuses a parameter by raising :class:`BadRequest`; :func:`errors_middleware`
turns it, a :class:`~auditor.errors.StoreError` and aiohttp's HTTP errors (404, 405, ...)
into ``{"error": "<one line>"}`` with the status they call for. This module reads no
request parameters, touches no store and decides nothing about who may ask.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from auditor.errors import StoreError
from auditor.model import JSON

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class BadRequest(Exception):
    """A parameter the API refuses; its text is the one-line error shown to the client."""


def json_response(
    body: JSON, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.json_response(body, status=status, headers=headers, dumps=_dumps)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def error_response(
    status: int, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    return json_response({"error": message}, status=status, headers=headers)


def errors_middleware() -> Any:
    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except BadRequest as exc:
            return error_response(400, str(exc))
        except StoreError as exc:
            # One line naming the database without its password: safe to show.
            return error_response(503, str(exc).splitlines()[0])
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            message = f"{request.path}: {exc.reason.lower()}"
            return error_response(exc.status, message, headers=_allow_header(exc))

    return errors


def _allow_header(exc: web.HTTPException) -> Mapping[str, str] | None:
    allow = exc.headers.get("Allow")
    return {"Allow": allow} if allow else None
