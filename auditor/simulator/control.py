"""The control API: change a running simulator from outside its process (JSON over HTTP).

Every route is under ``/_sim``; ``{pbx}`` is a PBX name, ``-`` for the PBX at the root.
It only translates requests into calls on :mod:`auditor.simulator.pbx` objects: it holds
no state and never answers with a client secret or a token. Answers are JSON; a refused
request gets ``{"error": "<why>"}`` with 400 (invalid), 404 (no such PBX/script/fault) or
409 (name taken).

=======  ================================  =================================================
GET      /_sim                             ``{"pbxs": [summary, ...]}``
POST     /_sim                             add a PBX: ``{"name", "scripts", "seed", "states",
                                           "settings", "client_id", "client_secret",
                                           "token_lifetime", "max_top", "page_default",
                                           "history"}`` (all but name optional) -> 201 summary
GET      /_sim/{pbx}                       summary (counts, down, clients, faults; no secret)
DELETE   /_sim/{pbx}                       stop serving the PBX -> 204
GET      /_sim/{pbx}/scripts               ``{"value": [item, ...]}`` in listing order
POST     /_sim/{pbx}/scripts               ``{"filename", "state"?}`` -> 201 item
PATCH    /_sim/{pbx}/scripts/{filename}    ``{"filename"?: new name, "state"?: str | null}``
                                           -> 200 item (rename and/or set/clear State)
DELETE   /_sim/{pbx}/scripts/{filename}    -> 204
GET      /_sim/{pbx}/settings              the failover settings
PATCH    /_sim/{pbx}/settings              replace some fields -> 200 settings
PUT      /_sim/{pbx}/credentials           ``{"client_id", "client_secret"}`` the only valid
                                           credentials from now on (tokens revoked) -> 204
DELETE   /_sim/{pbx}/tokens                revoke live tokens (``?client_id=`` for one) -> 204
PUT      /_sim/{pbx}/down                  ``{"down": bool, "mode"?: "drop" | "status"}`` -> 200
GET      /_sim/{pbx}/faults                ``{"faults": [rule, ...]}``
POST     /_sim/{pbx}/faults                a rule (see :mod:`auditor.simulator.faults`) -> 201
DELETE   /_sim/{pbx}/faults                remove every rule -> 204
DELETE   /_sim/{pbx}/faults/{id}           remove one rule -> 204
GET      /_sim/{pbx}/backups               ``{"value": [item, ...]}`` as the PBX lists them
POST     /_sim/{pbx}/backups               make one now: ``{"size"?: int}`` -> 201 item
PATCH    /_sim/{pbx}/backups/{filename}    ``{"size"?: int, "encrypted"?: bool}`` -> 200 item
                                           (shrink a backup, or say it is not encrypted)
DELETE   /_sim/{pbx}/backups/{filename}    -> 204
PUT      /_sim/{pbx}/backup-job            ``{"running": bool}``: stop/resume making backups
                                           (the settings still say scheduled) -> 200
GET      /_sim/{pbx}/backup-settings       ``Pbx.BackupSettings``
PATCH    /_sim/{pbx}/backup-settings       replace fields (``Contents``/``Schedule`` merged;
                                           ``{"Contents": {"EncryptBackup": false}}`` turns
                                           encryption off) -> 200 settings
GET      /_sim/{pbx}/backup-repository     ``{"Location": {...}}`` as the PBX sends it
PATCH    /_sim/{pbx}/backup-repository     ``{"Location"?: {fields}, "conceal"?: bool}``
                                           (``{"Location": {"FileSystemType": "Local"}}``
                                           moves the repository to the PBX's disk) -> 200
GET      /_sim/{pbx}/stats                 the PBX's :class:`~auditor.simulator.stats.Stats`
DELETE   /_sim/{pbx}/stats                 reset them -> 204
=======  ================================  =================================================
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from auditor.simulator.data import DuplicateError
from auditor.simulator.faults import Fault
from auditor.simulator.pbx import ROOT_CONTROL_NAME, Pbx, Simulator

_PBX_OPTIONS: dict[str, tuple[type, ...]] = {
    "name": (str,),
    "scripts": (int, list),
    "seed": (int,),
    "states": (bool,),
    "settings": (dict,),
    "client_id": (str,),
    "client_secret": (str,),
    "token_lifetime": (int, float),
    "max_top": (int,),
    "page_default": (int,),
    "history": (int,),
}


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def handle_control(request: web.Request, sim: Simulator, rest: str) -> web.Response:
    """Answer one control request; ``rest`` is the path after ``/_sim``."""
    parts = [part for part in rest.split("/") if part]
    try:
        return await _route(request, sim, parts)
    except _Refused as exc:
        return _error(exc.status, str(exc))
    except DuplicateError as exc:
        return _error(409, str(exc))
    except KeyError as exc:
        return _error(404, f"not found: {exc.args[0]}")
    except (ValueError, TypeError) as exc:
        return _error(400, str(exc))


async def _route(request: web.Request, sim: Simulator, parts: list[str]) -> web.Response:
    method = request.method
    if not parts:
        if method == "GET":
            return web.json_response({"pbxs": [pbx.summary() for pbx in sim]})
        if method == "POST":
            return web.json_response(_create(sim, await _body(request)).summary(), status=201)
        raise _Refused(405, f"{method} is not allowed here")
    name = "" if parts[0] == ROOT_CONTROL_NAME else parts[0]
    pbx = sim.get(name)
    if pbx is None:
        raise _Refused(404, f"no PBX named {parts[0]!r}")
    handler = _ROUTES.get((method, parts[1] if len(parts) > 1 else "", len(parts)))
    if handler is None:
        raise _Refused(404, f"no control route {method} /_sim/{'/'.join(parts)}")
    return await handler(request, sim, pbx, parts[2:])


Handler = Callable[[web.Request, Simulator, Pbx, list[str]], Awaitable[web.Response]]


async def _summary(request: web.Request, sim: Simulator, pbx: Pbx, args: list[str]) -> web.Response:
    return web.json_response(pbx.summary())


async def _remove_pbx(
    request: web.Request, sim: Simulator, pbx: Pbx, args: list[str]
) -> web.Response:
    sim.remove(pbx.name)
    return web.Response(status=204)


async def _list_scripts(
    request: web.Request, sim: Simulator, pbx: Pbx, args: list[str]
) -> web.Response:
    return web.json_response({"value": pbx.items()})


async def _add_script(
    request: web.Request, sim: Simulator, pbx: Pbx, args: list[str]
) -> web.Response:
    body = await _body(request)
    _only(body, {"filename", "state"})
    filename = _get(body, "filename", str)
    state = _get(body, "state", str, optional=True)
    pbx.add_script(filename, state=state)
    return web.json_response(pbx.item(filename), status=201)


async def _change_script(
    request: web.Request, sim: Simulator, pbx: Pbx, args: list[str]
) -> web.Response:
    filename = args[0]
    body = await _body(request)
    _only(body, {"filename", "state"})
    if filename not in pbx:
        raise KeyError(filename)
    new_name = _get(body, "filename", str, optional=True)
    if new_name is not None and new_name != filename:
        pbx.rename_script(filename, new_name)
        filename = new_name
    if "state" in body:
        pbx.set_state(filename, _get(body, "state", str, optional=True))
    return web.json_response(pbx.item(filename))


async def _remove_script(
    request: web.Request, sim: Simulator, pbx: Pbx, args: list[str]
) -> web.Response:
    pbx.remove_script(args[0])
    return web.Response(status=204)


async def _get_settings(
    request: web.Request, sim: Simulator, pbx: Pbx, args: list[str]
) -> web.Response:
    return web.json_response(pbx.settings)


async def _patch_settings(
    request: web.Request, sim: Simulator, pbx: Pbx, args: list[str]
) -> web.Response:
    pbx.update_settings(await _body(request))
    return web.json_response(pbx.settings)


async def _credentials(
    request: web.Request, sim: Simulator, pbx: Pbx, args: list[str]
) -> web.Response:
    body = await _body(request)
    _only(body, {"client_id", "client_secret"})
    pbx.set_credentials(_get(body, "client_id", str), _get(body, "client_secret", str))
    return web.Response(status=204)


async def _expire_tokens(
    request: web.Request, sim: Simulator, pbx: Pbx, args: list[str]
) -> web.Response:
    pbx.expire_tokens(request.query.get("client_id"))
    return web.Response(status=204)


async def _down(request: web.Request, sim: Simulator, pbx: Pbx, args: list[str]) -> web.Response:
    body = await _body(request)
    _only(body, {"down", "mode"})
    mode = _get(body, "mode", str, optional=True) or "drop"
    if mode not in ("drop", "status"):
        raise ValueError("mode must be 'drop' or 'status'")
    pbx.set_down(_get(body, "down", bool), mode="drop" if mode == "drop" else "status")
    return web.json_response({"down": pbx.down, "mode": pbx.down_mode})


async def _list_faults(
    request: web.Request, sim: Simulator, pbx: Pbx, args: list[str]
) -> web.Response:
    return web.json_response({"faults": [fault.to_dict() for fault in pbx.faults]})


async def _add_fault(
    request: web.Request, sim: Simulator, pbx: Pbx, args: list[str]
) -> web.Response:
    fault = pbx.add_fault(Fault.from_dict(await _body(request)))
    return web.json_response(fault.to_dict(), status=201)


async def _clear_faults(
    request: web.Request, sim: Simulator, pbx: Pbx, args: list[str]
) -> web.Response:
    pbx.clear_faults()
    return web.Response(status=204)


async def _remove_fault(
    request: web.Request, sim: Simulator, pbx: Pbx, args: list[str]
) -> web.Response:
    if not args[0].isdigit():
        raise _Refused(404, f"no fault {args[0]!r}")
    pbx.remove_fault(int(args[0]))
    return web.Response(status=204)


async def _stats(request: web.Request, sim: Simulator, pbx: Pbx, args: list[str]) -> web.Response:
    return web.json_response(pbx.stats.to_dict())


async def _reset_stats(
    request: web.Request, sim: Simulator, pbx: Pbx, args: list[str]
) -> web.Response:
    pbx.stats.reset()
    return web.Response(status=204)


async def _list_backups(
    request: web.Request, sim: Simulator, pbx: Pbx, args: list[str]
) -> web.Response:
    return web.json_response({"value": pbx.backups.items()})


async def _make_backup(
    request: web.Request, sim: Simulator, pbx: Pbx, args: list[str]
) -> web.Response:
    body = await _body(request)
    _only(body, {"size"})
    return web.json_response(pbx.backups.make(_get(body, "size", int, optional=True)), status=201)


async def _change_backup(
    request: web.Request, sim: Simulator, pbx: Pbx, args: list[str]
) -> web.Response:
    body = await _body(request)
    _only(body, {"size", "encrypted"})
    size = _get(body, "size", int, optional=True)
    if size is not None and size < 0:
        raise ValueError("size cannot be negative")
    pbx.backups.change(args[0], size=size, encrypted=_get(body, "encrypted", bool, optional=True))
    item = next(row for row in pbx.backups.items() if row["FileName"] == args[0])
    return web.json_response(item)


async def _remove_backup(
    request: web.Request, sim: Simulator, pbx: Pbx, args: list[str]
) -> web.Response:
    pbx.backups.remove(args[0])
    return web.Response(status=204)


async def _backup_job(
    request: web.Request, sim: Simulator, pbx: Pbx, args: list[str]
) -> web.Response:
    body = await _body(request)
    _only(body, {"running"})
    pbx.backups.catch_up()
    pbx.backups.running = _get(body, "running", bool)
    return web.json_response({"running": pbx.backups.running})


async def _get_backup_settings(
    request: web.Request, sim: Simulator, pbx: Pbx, args: list[str]
) -> web.Response:
    return web.json_response(pbx.backups.settings)


async def _patch_backup_settings(
    request: web.Request, sim: Simulator, pbx: Pbx, args: list[str]
) -> web.Response:
    pbx.backups.update_settings(await _body(request))
    return web.json_response(pbx.backups.settings)


async def _get_repository(
    request: web.Request, sim: Simulator, pbx: Pbx, args: list[str]
) -> web.Response:
    return web.json_response(pbx.backups.repository())


async def _patch_repository(
    request: web.Request, sim: Simulator, pbx: Pbx, args: list[str]
) -> web.Response:
    body = await _body(request)
    _only(body, {"Location", "conceal"})
    location = _get(body, "Location", dict, optional=True)
    if location is not None:
        pbx.backups.update_location(location)
    conceal = _get(body, "conceal", bool, optional=True)
    if conceal is not None:
        pbx.backups.conceal = conceal
    return web.json_response(pbx.backups.repository())


_ROUTES: dict[tuple[str, str, int], Handler] = {
    ("GET", "", 1): _summary,
    ("DELETE", "", 1): _remove_pbx,
    ("GET", "scripts", 2): _list_scripts,
    ("POST", "scripts", 2): _add_script,
    ("PATCH", "scripts", 3): _change_script,
    ("DELETE", "scripts", 3): _remove_script,
    ("GET", "settings", 2): _get_settings,
    ("PATCH", "settings", 2): _patch_settings,
    ("PUT", "credentials", 2): _credentials,
    ("DELETE", "tokens", 2): _expire_tokens,
    ("PUT", "down", 2): _down,
    ("GET", "faults", 2): _list_faults,
    ("POST", "faults", 2): _add_fault,
    ("DELETE", "faults", 2): _clear_faults,
    ("DELETE", "faults", 3): _remove_fault,
    ("GET", "backups", 2): _list_backups,
    ("POST", "backups", 2): _make_backup,
    ("PATCH", "backups", 3): _change_backup,
    ("DELETE", "backups", 3): _remove_backup,
    ("PUT", "backup-job", 2): _backup_job,
    ("GET", "backup-settings", 2): _get_backup_settings,
    ("PATCH", "backup-settings", 2): _patch_backup_settings,
    ("GET", "backup-repository", 2): _get_repository,
    ("PATCH", "backup-repository", 2): _patch_repository,
    ("GET", "stats", 2): _stats,
    ("DELETE", "stats", 2): _reset_stats,
}


def _create(sim: Simulator, body: dict[str, Any]) -> Pbx:
    _only(body, set(_PBX_OPTIONS))
    for key, value in body.items():
        kinds = _PBX_OPTIONS[key]
        if isinstance(value, bool) and bool not in kinds:
            raise ValueError(f"{key} must be {' or '.join(k.__name__ for k in kinds)}")
        if not isinstance(value, kinds):
            raise ValueError(f"{key} must be {' or '.join(k.__name__ for k in kinds)}")
    if isinstance(body.get("scripts"), list) and not all(
        isinstance(name, str) for name in body["scripts"]
    ):
        raise ValueError("scripts must be a number or a list of filenames")
    options = dict(body)
    name = options.pop("name", None)
    if name is None:
        raise ValueError("a new PBX needs a name ('' for the root)")
    return sim.add(Pbx(name, **options))


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json(loads=json.loads)
    except json.JSONDecodeError as exc:
        raise _Refused(400, f"the body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise _Refused(400, "the body must be a JSON object")
    return body


def _only(body: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise ValueError(
            f"unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(allowed))}"
        )


def _get(body: dict[str, Any], key: str, kind: type, *, optional: bool = False) -> Any:
    value = body.get(key)
    if value is None:
        if optional:
            return None
        raise ValueError(f"{key} is required")
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise ValueError(f"{key} must be {kind.__name__}")
    return value


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)
