"""The aiohttp application: routes requests to PBXs by path prefix and answers like 3CX V20.

One catch-all route dispatches by dictionary look-up, so a thousand PBXs cost no more per
request than one. ``/_sim/...`` is the control API (see :mod:`auditor.simulator.control`).
Holds no state of its own: what a PBX knows and counts lives in :mod:`auditor.simulator.pbx`
and the modules it puts together; a request's headers and body are never recorded.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import replace
from http import HTTPStatus
from typing import Any, NoReturn

from aiohttp import web

from auditor.simulator.control import handle_control
from auditor.simulator.faults import PASS_THROUGH, Endpoint, Fault
from auditor.simulator.pbx import Pbx, Simulator
from auditor.simulator.query import (
    ODataQueryError,
    compile_filter,
    compile_search,
    lenient_skip,
    parse_listing_query,
    top_limit_message,
)
from auditor.simulator.stats import RequestRecord

TOKEN_PATH = "/connect/token"  # noqa: S105 - a URL path, not a password
SCRIPTS_PATH = "/xapi/v1/Backups/Pbx.GetFailoverScripts()"
SETTINGS_PATH = "/xapi/v1/Backups/Pbx.GetBackupFailoverSettings()"
BACKUPS_PATH = "/xapi/v1/Backups"
BACKUP_SETTINGS_PATH = "/xapi/v1/Backups/Pbx.GetBackupSettings()"
BACKUP_REPOSITORY_PATH = "/xapi/v1/Backups/Pbx.GetBackupRepositorySettings()"
_EXTRAS = re.compile(r"/xapi/v1/Backups\((?P<key>.+)\)/Pbx\.GetBackupExtras\(\)")
_ENDPOINTS: dict[str, Endpoint] = {
    TOKEN_PATH: "token",
    SCRIPTS_PATH: "scripts",
    SETTINGS_PATH: "settings",
    BACKUPS_PATH: "backups",
    BACKUP_SETTINGS_PATH: "backup_settings",
    BACKUP_REPOSITORY_PATH: "backup_repository",
}


def backup_extras_path(filename: str) -> str:
    """The path of ``GetBackupExtras`` for one backup (the key as an OData string literal)."""
    return "/xapi/v1/Backups('" + filename.replace("'", "''") + "')/Pbx.GetBackupExtras()"


def _endpoint(sub: str) -> Endpoint:
    known = _ENDPOINTS.get(sub)
    if known is not None:
        return known
    if _EXTRAS.fullmatch(sub):
        return "backup_extras"
    return "xapi" if sub.startswith("/xapi/") else "other"


ODATA_CONTENT_TYPE = "application/json; odata.metadata=minimal; odata.streaming=true; charset=utf-8"
_ODATA_HEADERS = {"Content-Type": ODATA_CONTENT_TYPE, "OData-Version": "4.0"}
_TOKEN_HEADERS = {
    "Content-Type": "application/json; charset=utf-8",
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
}
_GARBAGE = (
    b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head>"
    b"<body><h1>Bad Gateway</h1><p>nginx</p></body></html>"
)
_NO_BODY = frozenset({204, 205, 304})

SIMULATOR_KEY = web.AppKey("simulator", Simulator)


def make_app(sim: Simulator, *, control: bool = True) -> web.Application:
    """The aiohttp application serving ``sim``; ``control=False`` leaves out ``/_sim``."""
    app = web.Application()
    app[SIMULATOR_KEY] = sim

    async def handle(request: web.Request) -> web.StreamResponse:
        path = request.path
        if path == "/_sim" or path.startswith("/_sim/"):
            if control:
                return await handle_control(request, sim, path[len("/_sim") :])
            return odata_error(404, _no_resource(path))
        segment, _, rest = path[1:].partition("/")
        pbx = sim.get(segment) if segment else None
        if pbx is not None:
            return await serve_pbx(request, pbx, "/" + rest, f"/{segment}")
        root = sim.get("")
        if root is not None:
            return await serve_pbx(request, root, path, "")
        return odata_error(404, f"No PBX is served at '/{segment}'.")

    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def odata_error(
    status: int, message: str, *, headers: Mapping[str, str] | None = None
) -> web.Response:
    """An answer in the OData error shape of the 3CX spec: ``{"error": {"code", "message"}}``."""
    all_headers = {**_ODATA_HEADERS, **(headers or {})}
    if status in _NO_BODY:
        del all_headers["Content-Type"]
        return web.Response(status=status, headers=all_headers)
    body = json.dumps({"error": {"code": "", "message": message}}).encode()
    return web.Response(status=status, body=body, headers=all_headers)


async def serve_pbx(request: web.Request, pbx: Pbx, sub: str, mount: str) -> web.StreamResponse:
    """Answer one request to ``pbx``; ``sub`` is the path below its ``mount`` prefix."""
    pbx.stats.enter()
    try:
        return await _answer(request, pbx, sub, mount)
    finally:
        pbx.stats.leave()


async def _answer(request: web.Request, pbx: Pbx, sub: str, mount: str) -> web.StreamResponse:
    endpoint = _endpoint(sub)
    query = request.query
    stats = pbx.stats
    if endpoint == "token":
        stats.logins += 1

    def record(status: int | None, fault: str | None) -> None:
        stats.record(RequestRecord(request.method, sub, dict(query), status, endpoint, fault))

    if pbx.down:
        if pbx.down_mode == "drop":
            record(None, "down")
            _drop(request)
        response = odata_error(503, "The PBX is not reachable.")
        record(503, "down")
        return response

    decisive: Fault | None = None
    label: str | None = None
    ignore_skip: str | None = None
    if pbx.faults:
        skip = lenient_skip(query)
        due = [fault for fault in pbx.faults if fault.observe(endpoint, skip)]
        applied: list[str] = []
        for fault in due:
            fault.fired += 1
            applied.append(fault.action)
            if fault.action not in PASS_THROUGH:
                decisive = fault
                break
            if fault.action == "delay":
                await asyncio.sleep(fault.seconds)
            elif fault.action == "expire_token":
                _expire_for(request, pbx, endpoint)
            elif fault.action == "ignore_skip":
                ignore_skip = fault.mode or "count"
            else:
                pbx.shift(skip, fault.count, endpoint)
        label = "+".join(applied) or None

    if decisive is not None:
        if decisive.action == "drop":
            record(None, label)
            _drop(request)
        if decisive.action == "status":
            response = _status_answer(decisive)
            record(response.status, label)
            return response
        if decisive.action == "garbage":
            record(200, label)
            return web.Response(status=200, body=_GARBAGE, content_type="text/html")

    wrong = None
    if decisive is not None and decisive.action == "wrong_types":
        wrong = decisive.mode or "value"
    if endpoint == "token":
        response = await _token(request, pbx, wrong)
    elif endpoint == "other":
        response = odata_error(404, _no_resource(sub))
    else:
        response = _xapi(request, pbx, endpoint, sub, mount, wrong, ignore_skip)

    if decisive is not None and decisive.action == "truncate":
        record(response.status, label)
        return await _truncate(request, response, decisive.mode or "length")
    record(response.status, label)
    return response


def _xapi(
    request: web.Request,
    pbx: Pbx,
    endpoint: Endpoint,
    sub: str,
    mount: str,
    wrong: str | None,
    ignore_skip: str | None = None,
) -> web.Response:
    refused = _check_bearer(request, pbx)
    if refused is not None:
        return refused
    if endpoint == "xapi":
        return odata_error(404, _no_resource(sub))
    if request.method != "GET":
        return odata_error(
            405, f"The requested resource does not support http method '{request.method}'."
        )
    service = f"{request.scheme}://{request.host}{mount}/xapi/v1/$metadata#"
    if endpoint == "settings":
        return _settings(pbx, service, wrong)
    if endpoint == "scripts":
        return _listing(request, pbx, service, wrong, ignore_skip)
    if endpoint == "backups":
        link_base = f"{request.scheme}://{request.host}{mount}"
        return _backups(request, pbx, service, link_base, wrong, ignore_skip)
    if endpoint == "backup_extras":
        return _extras(pbx, sub, service, wrong)
    if endpoint == "backup_settings":
        body = {"@odata.context": service + "Pbx.BackupSettings", **pbx.backups.settings}
    else:
        body = {"@odata.context": service + "Pbx.BackupRepositorySettings"}
        body.update(pbx.backups.repository())
    return _single(body, wrong)


def _single(body: dict[str, Any], wrong: str | None) -> web.Response:
    data: Any = [body] if wrong is not None else body
    return web.Response(body=json.dumps(data).encode(), headers=_ODATA_HEADERS)


def _extras(pbx: Pbx, sub: str, service: str, wrong: str | None) -> web.Response:
    match = _EXTRAS.fullmatch(sub)
    key = match["key"] if match else ""
    if len(key) >= 2 and key[0] == key[-1] == "'":
        key = key[1:-1].replace("''", "'")
    pbx.backups.catch_up()
    try:
        extras = pbx.backups.extras(key)
    except KeyError:
        return odata_error(404, f"The backup '{key}' was not found.")
    return _single({"@odata.context": service + "Pbx.BackupExtras", **extras}, wrong)


def _backups(
    request: web.Request,
    pbx: Pbx,
    service: str,
    link_base: str,
    wrong: str | None,
    ignore_skip: str | None,
) -> web.Response:
    try:
        query = parse_listing_query(request.query)
        if ignore_skip is not None:
            query = replace(query, skip=0, count=query.count and ignore_skip != "no_count")
        if query.top is not None:
            pbx.stats.note_top(query.top)
            if query.top > pbx.max_top:
                raise ODataQueryError(top_limit_message(pbx.max_top, query.top))
        rows = pbx.backups.items(link_base)
        if query.filter is not None:
            keep = compile_filter(query.filter)
            rows = [row for row in rows if keep(row)]
        if query.search is not None:
            found = compile_search(query.search)
            rows = [row for row in rows if found(row)]
        for field, descending in reversed(query.orderby):
            rows = sorted(rows, key=lambda row: str(row.get(field) or ""), reverse=descending)
    except ODataQueryError as exc:
        return odata_error(400, str(exc))
    end = query.skip + (query.top if query.top is not None else pbx.page_default)
    data: dict[str, Any] = {"@odata.context": service + "Backups"}
    if query.count:
        data["@odata.count"] = len(rows)
    data["value"] = rows[query.skip : end] if wrong is None else {}
    return web.Response(body=json.dumps(data).encode(), headers=_ODATA_HEADERS)


def _check_bearer(request: web.Request, pbx: Pbx) -> web.Response | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        problem = "no bearer token was sent"
    else:
        state = pbx.token_state(token)
        if state == "ok":
            return None
        problem = (
            "the access token has expired"
            if state == "expired"
            else "the access token is not valid (unknown, revoked or replaced by a newer one)"
        )
    return odata_error(
        401,
        f"Authorization has been denied for this request: {problem}.",
        headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
    )


def _listing(
    request: web.Request, pbx: Pbx, service: str, wrong: str | None, ignore_skip: str | None
) -> web.Response:
    try:
        query = parse_listing_query(request.query)
        if ignore_skip is not None:
            # The ignore_skip fault: $skip never reaches the listing (nor $count, if asked).
            query = replace(query, skip=0, count=query.count and ignore_skip != "no_count")
        if query.top is not None:
            pbx.stats.note_top(query.top)
            if query.top > pbx.max_top:
                raise ODataQueryError(top_limit_message(pbx.max_top, query.top))
        view = pbx.view(query.filter, query.search, query.orderby)
    except ODataQueryError as exc:
        return odata_error(400, str(exc))
    end = query.skip + (query.top if query.top is not None else pbx.page_default)
    context = json.dumps(service + "Collection(Pbx.FailoverScriptFile)").encode()
    if wrong is not None:
        return _wrong_listing(context, view.items[query.skip : end], len(view.items), wrong)
    head = b'{"@odata.context":' + context
    if query.count:
        head += b',"@odata.count":' + str(len(view.frags)).encode()
    body = head + b',"value":[' + b",".join(view.frags[query.skip : end]) + b"]}"
    return web.Response(body=body, headers=_ODATA_HEADERS)


def _wrong_listing(
    context: bytes, rows: list[dict[str, Any]], total: int, mode: str
) -> web.Response:
    data: dict[str, Any] = {"@odata.context": json.loads(context), "@odata.count": total}
    if mode == "value":
        data["value"] = {"Filename": rows[0]["Filename"]} if rows else {}
    elif mode == "items":
        data["value"] = [row["Filename"] for row in rows]
    elif mode == "filename":
        data["value"] = [{**row, "Filename": number} for number, row in enumerate(rows, 1)]
    elif mode == "count":
        data["@odata.count"] = str(total)
        data["value"] = rows
    return web.Response(body=json.dumps(data).encode(), headers=_ODATA_HEADERS)


def _settings(pbx: Pbx, service: str, wrong: str | None) -> web.Response:
    data: Any = {"@odata.context": service + "Pbx.BackupFailoverSettings", **pbx.settings}
    if wrong is not None:
        data = [data]
    return web.Response(body=json.dumps(data).encode(), headers=_ODATA_HEADERS)


async def _token(request: web.Request, pbx: Pbx, wrong: str | None) -> web.Response:
    if request.method != "POST":
        return _oauth_error(405, "invalid_request", "The token endpoint only accepts POST.")
    form = await request.post()
    fields = {key: value for key, value in form.items() if isinstance(value, str)}
    client_id, client_secret = fields.get("client_id"), fields.get("client_secret")
    basic = _basic_credentials(request)
    if basic is not None:
        client_id, client_secret = basic
    grant_type = fields.get("grant_type")
    if not grant_type:
        return _oauth_error(400, "invalid_request", "The mandatory 'grant_type' is missing.")
    if grant_type != "client_credentials":
        return _oauth_error(
            400, "unsupported_grant_type", f"The grant type '{grant_type}' is not supported."
        )
    if not client_id or client_secret is None or not pbx.check_client(client_id, client_secret):
        pbx.stats.failed_logins += 1
        return _oauth_error(400, "invalid_client", "The client credentials are invalid.")
    if wrong is not None:
        body: dict[str, Any] = {"token_type": "Bearer", "expires_in": "soon"}
        return web.Response(body=json.dumps(body).encode(), headers=_TOKEN_HEADERS)
    token = pbx.issue_token(client_id)
    body = {
        "token_type": "Bearer",
        "expires_in": int(pbx.token_lifetime),
        "access_token": token,
        "refresh_token": None,
    }
    return web.Response(body=json.dumps(body).encode(), headers=_TOKEN_HEADERS)


def _basic_credentials(request: web.Request) -> tuple[str, str] | None:
    scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    client_id, sep, secret = decoded.partition(":")
    return (client_id, secret) if sep else None


def _oauth_error(status: int, error: str, description: str) -> web.Response:
    body = json.dumps({"error": error, "error_description": description}).encode()
    return web.Response(status=status, body=body, headers=_TOKEN_HEADERS)


def _status_answer(fault: Fault) -> web.Response:
    headers: dict[str, str] = {}
    if fault.retry_after is not None:
        headers["Retry-After"] = str(fault.retry_after)
    try:
        reason = HTTPStatus(fault.status).phrase
    except ValueError:
        reason = f"HTTP {fault.status}"
    return odata_error(fault.status, fault.message or reason, headers=headers)


def _expire_for(request: web.Request, pbx: Pbx, endpoint: Endpoint) -> None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        pbx.revoke_token(token.strip())
    elif endpoint == "token":
        pbx.expire_tokens()


async def _truncate(request: web.Request, response: web.Response, mode: str) -> web.StreamResponse:
    body = response.body if isinstance(response.body, bytes) else b""
    if mode == "cut":
        return web.Response(
            status=response.status, body=body[: len(body) // 2], headers=response.headers
        )
    # Promise the whole body, send half, then hang up: the client must notice the shortfall.
    stream = web.StreamResponse(status=response.status, headers=response.headers)
    stream.content_length = len(body)
    await stream.prepare(request)
    await stream.write(body[: len(body) // 2])
    if request.transport is not None:
        request.transport.close()
    return stream


def _drop(request: web.Request) -> NoReturn:
    """Hang up without answering; the client sees the server disconnect."""
    if request.transport is not None:
        request.transport.close()
    # aiohttp lets a cancelled handler end the connection quietly (no 500, no log line).
    raise asyncio.CancelledError


def _no_resource(path: str) -> str:
    return f"No HTTP resource was found that matches the request URI '{path}'."
