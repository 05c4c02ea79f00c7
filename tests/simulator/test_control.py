"""The control API (``/_sim``): changing a running simulator over real HTTP."""

from __future__ import annotations

import json

import aiohttp

from auditor.simulator import (
    SETTINGS_PATH,
    Pbx,
    Simulator,
    serve,
)
from tests.simulator.simapi import Api


async def test_control_api_changes_data_and_settings(api: Api, sim: Simulator) -> None:
    status, body = await api.control("GET", "")
    assert [p["name"] for p in body["pbxs"]] == ["hq", "branch"]
    assert "secret" not in json.dumps(body)

    status, body = await api.control(
        "POST", "", {"name": "lab", "scripts": ["a.sh"], "states": True, "client_secret": "s3"}
    )
    assert status == 201
    assert body["scripts"] == 1
    assert (await api.control("POST", "", {"name": "lab"}))[0] == 409
    assert (await api.control("POST", "", {"name": "x", "scripts": "many"}))[0] == 400

    assert (await api.control("POST", "/lab/scripts", {"filename": "b.sh"}))[0] == 201
    assert (await api.control("POST", "/lab/scripts", {"filename": "b.sh"}))[0] == 409
    status, body = await api.control("PATCH", "/lab/scripts/b.sh", {"state": "Disconnected"})
    assert body == {"Filename": "b.sh", "State": "Disconnected"}
    status, body = await api.control("PATCH", "/lab/scripts/b.sh", {"filename": "c.sh"})
    assert body == {"Filename": "c.sh", "State": "Disconnected"}
    assert (await api.control("DELETE", "/lab/scripts/a.sh"))[0] == 204
    assert (await api.control("DELETE", "/lab/scripts/a.sh"))[0] == 404
    status, body = await api.control("GET", "/lab/scripts")
    assert body == {"value": [{"Filename": "c.sh", "State": "Disconnected"}]}

    token = await api.login("lab", secret="s3")
    assert (await api.all_names("lab", token)) == ["c.sh"]

    status, body = await api.control("PATCH", "/lab/settings", {"Mode": "Passive"})
    assert body["Mode"] == "Passive"
    assert (await api.control("PATCH", "/lab/settings", {"Moed": "Passive"}))[0] == 400
    status, body, _ = await api.get("lab", SETTINGS_PATH, token)
    assert body["Mode"] == "Passive"

    assert (await api.control("PUT", "/lab/credentials", {"client_id": "a", "client_secret": "b"}))[
        0
    ] == 204
    assert (await api.page("lab", token))[0] == 401
    token = await api.login("lab", "a", "b")
    assert (await api.control("DELETE", "/lab/tokens"))[0] == 204
    assert (await api.page("lab", token))[0] == 401

    assert (await api.control("DELETE", "/lab"))[0] == 204
    assert (await api.control("GET", "/lab"))[0] == 404
    assert "lab" not in sim


async def test_control_api_faults_down_and_stats(api: Api, sim: Simulator) -> None:
    token = await api.login("hq")
    status, body = await api.control(
        "POST", "/hq/faults", {"action": "status", "endpoint": "scripts", "status": 500}
    )
    assert status == 201
    rule_id = body["id"]
    assert body["remaining"] is None
    assert (await api.page("hq", token))[0] == 500
    assert (await api.page("hq", token))[0] == 500
    status, body = await api.control("GET", "/hq/faults")
    assert body["faults"][0]["fired"] == 2
    assert (await api.control("DELETE", f"/hq/faults/{rule_id}"))[0] == 204
    assert (await api.control("DELETE", f"/hq/faults/{rule_id}"))[0] == 404
    assert (await api.page("hq", token))[0] == 200
    status, body = await api.control("POST", "/hq/faults", {"action": "melt"})
    assert status == 400
    assert "unknown fault action" in body["error"]
    await api.control("POST", "/hq/faults", {"action": "drop"})
    assert (await api.control("DELETE", "/hq/faults"))[0] == 204
    assert sim["hq"].faults == []

    status, body = await api.control("PUT", "/hq/down", {"down": True, "mode": "status"})
    assert body == {"down": True, "mode": "status"}
    assert (await api.page("hq", token))[0] == 503
    await api.control("PUT", "/hq/down", {"down": False})
    assert (await api.page("hq", token, {"$top": "42"}))[0] == 200

    status, body = await api.control("GET", "/hq/stats")
    assert body["logins"] == 1
    assert body["max_top"] == 42
    assert body["by_status"]["503"] == 1
    assert body["requests"][-1]["query"] == {"$top": "42"}
    assert (await api.control("DELETE", "/hq/stats"))[0] == 204
    assert (await api.control("GET", "/hq/stats"))[1]["requests_total"] == 0

    assert (await api.control("GET", "/nowhere/stats"))[0] == 404
    assert (await api.control("GET", "/hq/bogus"))[0] == 404
    async with api.session.post(f"{api.base}/_sim/hq/scripts", data=b"{not json") as r:
        assert r.status == 400


async def test_control_api_root_pbx_and_disabled_control(sim: Simulator) -> None:
    sim.add(Pbx("", scripts=2))
    async with serve(sim) as base, aiohttp.ClientSession() as session:
        api = Api(session, base)
        status, body = await api.control("GET", "/-")
        assert (status, body["name"], body["scripts"]) == (200, "", 2)
    async with (
        serve(sim, control=False) as base,
        aiohttp.ClientSession() as session,
        session.get(f"{base}/_sim") as r,
    ):
        assert r.status == 404
