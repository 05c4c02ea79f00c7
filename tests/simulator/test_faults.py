"""Fault rules (validated, matched, and applied over real HTTP), a PBX that is down, and the
request statistics."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from auditor.simulator import (
    SCRIPTS_PATH,
    SETTINGS_PATH,
    Fault,
    Pbx,
    Simulator,
    pbx_url,
    serve,
)
from tests.simulator.simapi import Api


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"action": "explode"}, "unknown fault action"),
        ({"action": "drop", "endpoint": "web"}, "unknown fault endpoint"),
        ({"action": "drop", "times": 0}, "times must be at least 1"),
        ({"action": "drop", "nth": 0}, "nth must be at least 1"),
        ({"action": "drop", "skip": -1}, "skip must be at least 0"),
        ({"action": "status", "status": 99}, "status"),
        ({"action": "status", "status": 600}, "status"),
        ({"action": "shift", "count": 0}, "count must not be 0"),
        ({"action": "delay", "seconds": -1}, "seconds"),
        ({"action": "truncate", "mode": "value"}, "does not fit"),
        ({"action": "drop", "mode": "cut"}, "does not fit"),
        ({"action": "drop", "colour": 1}, "unknown fault option"),
        ({"endpoint": "token"}, "needs an action"),
        ({"action": "status", "retry_after": -5}, "retry_after"),
    ],
)
def test_fault_rules_are_validated(options: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        Fault.from_dict(options)


def test_fault_rules_match_endpoints_and_pages() -> None:
    first_page = Fault("status", skip=0)
    assert first_page.watches("scripts", 0)
    assert not first_page.watches("scripts", 100)
    assert not first_page.watches("settings", 0)
    assert not first_page.watches("token", 0)
    xapi = Fault("drop", endpoint="xapi")
    assert [xapi.watches(e, 0) for e in ("scripts", "settings", "xapi", "token", "other")] == [
        True,
        True,
        True,
        False,
        False,
    ]
    assert Fault("drop").watches("other", 5)


# -- faults --------------------------------------------------------------------------------


async def test_status_fault_with_retry_after_skip_and_times(api: Api, sim: Simulator) -> None:
    hq = sim["hq"]
    token = await api.login("hq")
    rule = hq.add_fault(
        "status", endpoint="scripts", skip=100, status=503, retry_after=7, message="busy", times=2
    )
    assert (await api.page("hq", token, {"$top": "100"}))[0] == 200
    for _ in range(2):
        status, body, headers = await api.get("hq", SCRIPTS_PATH, token, {"$skip": "100"})
        assert status == 503
        assert headers["Retry-After"] == "7"
        assert body == {"error": {"code": "", "message": "busy"}}
    assert (await api.page("hq", token, {"$skip": "100"}))[0] == 200
    assert rule.fired == 2
    assert rule.remaining == 0

    hq.clear_faults()
    hq.add_fault("status", endpoint="any", status=429, nth=2, times=1)
    assert (await api.page("hq", token))[0] == 200
    status, body, _ = await api.get("hq", SETTINGS_PATH, token)
    assert status == 429
    assert body["error"]["message"] == "Too Many Requests"
    assert (await api.page("hq", token))[0] == 200
    assert [r.fault for r in hq.stats.requests][-3:] == [None, "status", None]


async def test_token_endpoint_faults(api: Api, sim: Simulator) -> None:
    hq = sim["hq"]
    hq.add_fault("status", endpoint="token", status=500, times=1)
    assert (await api.token_response("hq"))[0] == 500
    hq.add_fault("wrong_types", endpoint="token", times=1)
    status, body = await api.token_response("hq")
    assert status == 200
    assert "access_token" not in body
    assert isinstance(body["expires_in"], str)
    assert hq.stats.tokens_issued == 0
    await api.login("hq")
    assert hq.stats.tokens_issued == 1


async def test_drop_fault_disconnects(api: Api, sim: Simulator) -> None:
    token = await api.login("hq")
    # aiohttp resends a GET once by itself after a disconnect: one drop goes unnoticed.
    sim["hq"].add_fault("drop", endpoint="scripts", times=1)
    assert (await api.page("hq", token))[0] == 200
    sim["hq"].add_fault("drop", endpoint="scripts", times=2)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await api.page("hq", token)
    assert (await api.page("hq", token))[0] == 200
    statuses = [r.status for r in sim["hq"].stats.for_endpoint("scripts")]
    assert statuses == [None, 200, None, None, 200]
    # A POST is not resent: one drop at the token endpoint is seen.
    sim["hq"].add_fault("drop", endpoint="token", times=1)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await api.token_response("hq")


async def test_truncate_faults(api: Api, sim: Simulator) -> None:
    token = await api.login("hq")
    sim["hq"].add_fault("truncate", endpoint="scripts", times=1)
    with pytest.raises(aiohttp.ClientPayloadError):
        await api.page("hq", token)
    sim["hq"].add_fault("truncate", endpoint="settings", mode="cut", times=1)
    status, body, _ = await api.get("hq", SETTINGS_PATH, token)
    assert status == 200
    assert isinstance(body, str)
    assert body.startswith('{"@odata.context"')
    with pytest.raises(ValueError, match=r"Unterminated|Expecting"):
        json.loads(body)


async def test_garbage_fault(api: Api, sim: Simulator) -> None:
    token = await api.login("hq")
    sim["hq"].add_fault("garbage", endpoint="xapi", times=1)
    status, body, headers = await api.get("hq", SCRIPTS_PATH, token)
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    assert isinstance(body, str)
    assert body.startswith("<!DOCTYPE html>")


async def test_delay_fault_outlasts_a_short_client_timeout(api: Api, sim: Simulator) -> None:
    token = await api.login("hq")
    sim["hq"].add_fault("delay", endpoint="settings", seconds=30, times=1)
    url = pbx_url(api.base, "hq") + SETTINGS_PATH
    with pytest.raises(asyncio.TimeoutError):
        async with api.session.get(
            url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=aiohttp.ClientTimeout(total=0.3),
        ) as r:
            await r.read()
    # A short delay before a decisive rule: both apply, in order.
    sim["hq"].add_fault("delay", endpoint="settings", seconds=0.01, times=1)
    sim["hq"].add_fault("status", endpoint="settings", status=502, times=1)
    status, _, _ = await api.get("hq", SETTINGS_PATH, token)
    assert status == 502
    assert sim["hq"].stats.requests[-1].fault == "delay+status"


async def test_expire_token_fault(api: Api, sim: Simulator) -> None:
    token = await api.login("hq")
    sim["hq"].add_fault("expire_token", endpoint="scripts", skip=100, times=1)
    assert (await api.page("hq", token))[0] == 200
    assert (await api.page("hq", token, {"$skip": "100"}))[0] == 401
    assert (await api.page("hq", token, {"$skip": "100"}))[0] == 401
    fresh = await api.login("hq")
    assert (await api.page("hq", fresh, {"$skip": "100"}))[0] == 200


async def test_shift_fault_moves_the_listing_under_offset_paging(api: Api, sim: Simulator) -> None:
    hq = sim["hq"]
    before = hq.filenames
    token = await api.login("hq")
    hq.add_fault("shift", endpoint="scripts", skip=100, count=1, times=1)
    seen = await api.all_names("hq", token)
    # An item sorting before the page start was inserted: the last item of page 1 comes again.
    assert len(seen) == 251
    assert seen[100] == before[99]
    assert len(hq) == 251
    assert set(hq.filenames) - set(before) == {hq.filenames[0]}

    hq.add_fault("shift", endpoint="scripts", skip=200, count=-2, times=1)
    current = hq.filenames
    seen = await api.all_names("hq", token)
    assert len(seen) == 249
    # Two items before the page start went away: the first two of the next page are missed.
    assert set(current) - set(seen) == {current[200], current[201]}
    assert set(seen) - set(hq.filenames) == {current[198], current[199]}


@pytest.mark.parametrize(
    ("mode", "check"),
    [
        ("value", lambda b: isinstance(b["value"], dict)),
        ("items", lambda b: all(isinstance(i, str) for i in b["value"])),
        ("filename", lambda b: all(isinstance(i["Filename"], int) for i in b["value"])),
        ("count", lambda b: isinstance(b["@odata.count"], str)),
        ("missing", lambda b: "value" not in b),
    ],
)
async def test_wrong_types_fault(api: Api, sim: Simulator, mode: str, check: Any) -> None:
    token = await api.login("hq")
    sim["hq"].add_fault("wrong_types", endpoint="scripts", mode=mode, times=1)
    status, body = await api.page("hq", token, {"$top": "3"})
    assert status == 200
    assert check(body)
    assert isinstance((await api.page("hq", token, {"$top": "3"}))[1]["value"], list)


async def test_wrong_types_settings_is_a_list(api: Api, sim: Simulator) -> None:
    token = await api.login("hq")
    sim["hq"].add_fault("wrong_types", endpoint="settings", times=1)
    status, body, _ = await api.get("hq", SETTINGS_PATH, token)
    assert status == 200
    assert isinstance(body, list)


async def test_down_pbx_drops_or_answers_503(api: Api, sim: Simulator) -> None:
    token = await api.login("hq")
    sim["hq"].set_down()
    with pytest.raises(aiohttp.ClientConnectionError):
        await api.token_response("hq")
    assert (await api.page("branch", await api.login("branch")))[0] == 200
    sim["hq"].set_down(mode="status")
    assert (await api.page("hq", token))[0] == 503
    sim["hq"].set_down(False)
    assert (await api.page("hq", token))[0] == 200


async def test_stats_keep_a_bounded_history() -> None:
    sim = Simulator([Pbx("hq", scripts=3, history=4)])
    async with serve(sim) as base, aiohttp.ClientSession() as session:
        api = Api(session, base)
        token = await api.login("hq")
        for top in (1, 2, 3, 1, 2, 3):
            await api.page("hq", token, {"$top": str(top), "$filter": "Filename ne 'x'"})
    stats = sim["hq"].stats
    assert stats.requests_total == 7
    assert len(stats.requests) == 4
    assert stats.requests[-1].query == {"$top": "3", "$filter": "Filename ne 'x'"}
    assert stats.requests[-1].path == SCRIPTS_PATH
    assert stats.requests[-1].method == "GET"
    assert stats.by_endpoint == {"token": 1, "scripts": 6}
    assert stats.max_top == 3
    stats.reset()
    assert (stats.requests_total, len(stats.requests)) == (0, 0)
    assert sim["hq"].stats.max_top is None


async def test_stats_count_the_requests_answered_at_once(api: Api, sim: Simulator) -> None:
    token = await api.login("hq")
    await api.get("hq", SETTINGS_PATH, token)
    assert (sim["hq"].stats.in_flight, sim["hq"].stats.max_in_flight) == (0, 1)
    sim["hq"].add_fault("delay", endpoint="settings", seconds=0.3, times=2)
    await asyncio.gather(*(api.get("hq", SETTINGS_PATH, token) for _ in range(2)))
    assert (sim["hq"].stats.in_flight, sim["hq"].stats.max_in_flight) == (0, 2)
    assert sim["branch"].stats.max_in_flight == 0
    assert (await api.control("GET", "/hq/stats"))[1]["max_in_flight"] == 2
