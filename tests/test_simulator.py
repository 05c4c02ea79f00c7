"""The built-in XAPI simulator, over real HTTP on 127.0.0.1 with a plain aiohttp client."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDictProxy

from auditor.simulator import (
    SCRIPTS_PATH,
    SETTINGS_FIELDS,
    SETTINGS_PATH,
    TOKEN_PATH,
    DuplicateError,
    Fault,
    ManualClock,
    Pbx,
    Simulator,
    generate_filenames,
    generate_settings,
    pbx_url,
    serve,
    tls_context,
    top_limit_message,
)

TOKEN_FORM = {"client_id": "auditor", "client_secret": "secret", "grant_type": "client_credentials"}


class Api:
    """A few lines of plain aiohttp, so these tests depend on no client code of the project."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base

    async def token_response(
        self, pbx: str, form: dict[str, str] | None = None, **kwargs: Any
    ) -> tuple[int, Any]:
        url = pbx_url(self.base, pbx) + TOKEN_PATH
        async with self.session.post(url, data=TOKEN_FORM if form is None else form, **kwargs) as r:
            return r.status, await r.json(content_type=None)

    async def login(
        self, pbx: str, client_id: str = "auditor", secret: str = TOKEN_FORM["client_secret"]
    ) -> str:
        form = {**TOKEN_FORM, "client_id": client_id, "client_secret": secret}
        status, body = await self.token_response(pbx, form)
        assert status == 200, body
        token = body["access_token"]
        assert isinstance(token, str)
        return token

    async def get(
        self, pbx: str, path: str, token: str | None, params: dict[str, str] | None = None
    ) -> tuple[int, Any, CIMultiDictProxy[str]]:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        url = pbx_url(self.base, pbx) + path
        async with self.session.get(url, params=params, headers=headers) as r:
            text = await r.text()
            try:
                body: Any = json.loads(text)
            except ValueError:
                body = text
            return r.status, body, r.headers

    async def page(
        self, pbx: str, token: str, params: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        status, body, _ = await self.get(pbx, SCRIPTS_PATH, token, params)
        return status, body

    async def all_names(self, pbx: str, token: str, top: int = 100) -> list[str]:
        names: list[str] = []
        while True:
            status, body = await self.page(pbx, token, {"$top": str(top), "$skip": str(len(names))})
            assert status == 200, body
            names += [item["Filename"] for item in body["value"]]
            if len(body["value"]) < top:
                return names

    async def control(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        kwargs: dict[str, Any] = {} if body is None else {"json": body}
        async with self.session.request(method, f"{self.base}/_sim{path}", **kwargs) as r:
            text = await r.text()
            return r.status, json.loads(text) if text else None


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def sim(clock: ManualClock) -> Simulator:
    return Simulator(
        [Pbx("hq", scripts=250, seed=1), Pbx("branch", scripts=5, seed=2, states=True)],
        clock=clock,
    )


@pytest.fixture
async def api(sim: Simulator) -> AsyncIterator[Api]:
    # A fresh connection per request: aiohttp silently retries an idempotent request once
    # when a reused connection is dropped, which would hide one-shot drop faults.
    connector = aiohttp.TCPConnector(force_close=True)
    async with serve(sim) as base, aiohttp.ClientSession(connector=connector) as session:
        yield Api(session, base)


# -- generated data ------------------------------------------------------------------------


def test_generated_data_is_deterministic_unique_and_plausible() -> None:
    names = generate_filenames(500, seed=7)
    assert names == generate_filenames(500, seed=7)
    assert names != generate_filenames(500, seed=8)
    assert len(set(names)) == 500
    assert {Path(name).suffix for name in names} == {".sh", ".ps1", ".py"}
    assert names[0].endswith((".sh", ".ps1", ".py"))
    assert names[0].split("-")[-1].startswith("0001")
    assert generate_settings(names, 7) == generate_settings(names, 7)

    pbx = Pbx("x", scripts=500, seed=7)
    assert pbx.filenames == sorted(names)
    settings = pbx.settings
    assert set(settings) == set(SETTINGS_FIELDS)
    assert settings["PreStartScript"] in pbx
    assert settings["PostStartScript"] in pbx
    assert settings["Condition"] in ("AllService", "AnyService")
    assert settings["Mode"] in ("Active", "Passive")
    assert Pbx("y", scripts=500, seed=7).items() == pbx.items()


def test_empty_and_explicit_listings() -> None:
    empty = Pbx("e", scripts=0)
    assert len(empty) == 0
    assert empty.settings["PreStartScript"] is None
    explicit = Pbx("x", scripts=["b.sh", "a.ps1"], states=True)
    assert explicit.items() == [
        {"Filename": "a.ps1", "State": "Connected"},
        {"Filename": "b.sh", "State": "Connected"},
    ]
    with pytest.raises(DuplicateError):
        Pbx("d", scripts=["a.sh", "a.sh"])
    with pytest.raises(ValueError, match="filename"):
        Pbx("d", scripts=["dir/a.sh"])


@settings(max_examples=40, deadline=None)
@given(count=st.integers(0, 300), seed=st.integers(0, 2**32))
def test_generated_names_are_unique_for_any_seed(count: int, seed: int) -> None:
    names = generate_filenames(count, seed)
    assert len(names) == count == len(set(names))
    pbx = Pbx("p", scripts=count, seed=seed)
    for name in (pbx.settings["PreStartScript"], pbx.settings["PostStartScript"]):
        assert (name is None) == (count == 0)
        assert name is None or name in pbx


def test_python_api_mutations_and_refusals() -> None:
    pbx = Pbx("hq", scripts=["b.sh", "d.sh"])
    pbx.add_script("c.sh", state="Disconnected")
    assert pbx.filenames == ["b.sh", "c.sh", "d.sh"]
    assert pbx.item("c.sh") == {"Filename": "c.sh", "State": "Disconnected"}
    pbx.rename_script("c.sh", "a.sh")
    assert pbx.items()[0] == {"Filename": "a.sh", "State": "Disconnected"}
    pbx.set_state("a.sh", None)
    pbx.remove_script("d.sh")
    assert pbx.items() == [{"Filename": "a.sh"}, {"Filename": "b.sh"}]
    with pytest.raises(DuplicateError):
        pbx.add_script("a.sh")
    with pytest.raises(KeyError):
        pbx.remove_script("zzz.sh")
    with pytest.raises(DuplicateError):
        pbx.rename_script("a.sh", "b.sh")
    pbx.update_settings(Mode="Passive", PreStartScript="gone.sh")
    assert pbx.settings["Mode"] == "Passive"
    with pytest.raises(ValueError, match="unknown settings field"):
        pbx.update_settings(Colour="blue")
    with pytest.raises(ValueError, match="Mode"):
        pbx.update_settings(Mode="Sideways")
    with pytest.raises(ValueError, match="Interval"):
        pbx.update_settings(Interval="60")
    for bad in ("xapi", "connect", "_sim", "a/b", "-x"):
        with pytest.raises(ValueError, match="invalid PBX name"):
            Pbx(bad)
    sim = Simulator([pbx])
    with pytest.raises(DuplicateError):
        sim.create("hq")
    fleet = Simulator.fleet(3, scripts=4, states=True)
    assert fleet.names == ["pbx-0001", "pbx-0002", "pbx-0003"]
    assert fleet["pbx-0001"].filenames != fleet["pbx-0002"].filenames


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


# -- login and tokens ----------------------------------------------------------------------


async def test_login_answers_the_oauth_shapes(api: Api, sim: Simulator) -> None:
    status, body = await api.token_response("hq")
    assert status == 200
    assert set(body) == {"token_type", "expires_in", "access_token", "refresh_token"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert body["refresh_token"] is None

    refused = [
        ({**TOKEN_FORM, "client_secret": "wrong"}, "invalid_client"),
        ({**TOKEN_FORM, "client_id": "nobody"}, "invalid_client"),
        ({**TOKEN_FORM, "grant_type": "password"}, "unsupported_grant_type"),
        ({"client_id": "auditor", "client_secret": "secret"}, "invalid_request"),
    ]
    for form, error in refused:
        status, body = await api.token_response("hq", form)
        assert status == 400
        assert body["error"] == error
        assert isinstance(body["error_description"], str)
        assert "secret" not in body["error_description"].replace("client_secret", "")
        assert "wrong" not in body["error_description"]

    basic = {"Authorization": aiohttp.encode_basic_auth("auditor", "secret")}
    status, body = await api.token_response(
        "hq", {"grant_type": "client_credentials"}, headers=basic
    )
    assert status == 200

    stats = sim["hq"].stats
    assert (stats.logins, stats.tokens_issued, stats.failed_logins) == (6, 2, 2)
    async with api.session.get(pbx_url(api.base, "hq") + TOKEN_PATH) as r:
        assert r.status == 405


async def test_one_live_token_per_client_id(api: Api, sim: Simulator) -> None:
    first = await api.login("hq")
    assert (await api.page("hq", first, {"$top": "1"}))[0] == 200
    second = await api.login("hq")
    assert second != first
    status, body = await api.page("hq", first, {"$top": "1"})
    assert status == 401
    assert set(body["error"]) >= {"code", "message"}
    assert (await api.page("hq", second, {"$top": "1"}))[0] == 200

    # Another client id has its own live token, so it does not replace the first one's.
    sim["hq"].add_client("reporter", "other-secret")
    other = await api.login("hq", "reporter", "other-secret")
    assert (await api.page("hq", second, {"$top": "1"}))[0] == 200
    assert (await api.page("hq", other, {"$top": "1"}))[0] == 200
    # A token of one PBX means nothing to another.
    assert (await api.page("branch", second, {"$top": "1"}))[0] == 401

    sim["hq"].set_credentials("auditor", "rotated")
    assert (await api.page("hq", second, {"$top": "1"}))[0] == 401
    assert (await api.token_response("hq"))[0] == 400
    await api.login("hq", "auditor", "rotated")


async def test_tokens_expire_after_their_lifetime(
    api: Api, sim: Simulator, clock: ManualClock
) -> None:
    sim["hq"].token_lifetime = 120
    status, body = await api.token_response("hq")
    assert body["expires_in"] == 120
    token = body["access_token"]
    clock.advance(119)
    assert (await api.page("hq", token, {"$top": "1"}))[0] == 200
    clock.advance(1)
    status, body = await api.page("hq", token, {"$top": "1"})
    assert status == 401
    assert "expired" in body["error"]["message"]
    assert token not in body["error"]["message"]


async def test_xapi_needs_a_bearer_token(api: Api) -> None:
    for token in (None, "made-up"):
        status, body, headers = await api.get("hq", SETTINGS_PATH, token)
        assert status == 401
        assert headers["WWW-Authenticate"].startswith("Bearer")
        assert body["error"]["code"] == ""
        assert body["error"]["message"].startswith("Authorization has been denied")
    async with api.session.get(
        pbx_url(api.base, "hq") + SETTINGS_PATH, headers={"Authorization": "Basic abc"}
    ) as r:
        assert r.status == 401


# -- the listing ---------------------------------------------------------------------------


async def test_paging_returns_the_whole_listing_in_stable_order(api: Api, sim: Simulator) -> None:
    token = await api.login("hq")
    expected = sim["hq"].filenames
    assert expected == sorted(expected)
    assert await api.all_names("hq", token, top=100) == expected
    assert await api.all_names("hq", token, top=7) == expected

    status, body = await api.page("hq", token)
    assert status == 200
    assert len(body["value"]) == 100  # the server's page default
    assert "@odata.count" not in body
    assert body["@odata.context"].endswith(
        "/hq/xapi/v1/$metadata#Collection(Pbx.FailoverScriptFile)"
    )
    assert (await api.page("hq", token, {"$top": "0"}))[1]["value"] == []
    assert (await api.page("hq", token, {"$skip": "10000"}))[1]["value"] == []
    status, body = await api.page("hq", token, {"$top": "5", "$skip": "248"})
    assert [item["Filename"] for item in body["value"]] == expected[248:]
    assert body["value"][0] == {"Filename": expected[248]}

    _, body = await api.page("branch", await api.login("branch"), {"$top": "2"})
    assert body["value"][0]["State"] == "Connected"


async def test_top_above_the_limit_gets_the_3cx_message(api: Api, sim: Simulator) -> None:
    token = await api.login("hq")
    status, body = await api.page("hq", token, {"$top": "500"})
    assert status == 400
    assert body == {
        "error": {
            "code": "",
            "message": "The query specified in the URI is not valid. The limit of '100' for "
            "Top query has been exceeded. The value from the incoming request is '500'.",
        }
    }
    assert body["error"]["message"] == top_limit_message(100, 500)
    assert (await api.page("hq", token, {"$top": "100"}))[0] == 200
    assert (await api.page("hq", token, {"$top": "101"}))[0] == 400
    assert sim["hq"].stats.max_top == 500


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"$top": "-1"}, "Invalid value '-1' for $top"),
        ({"$top": "ten"}, "non-negative integer"),
        ({"$skip": "1.5"}, "Invalid value '1.5' for $skip"),
        ({"$count": "yes"}, "not a valid count option"),
        ({"$foo": "1"}, "'$foo' is not supported"),
        ({"$orderby": "Size"}, "property named 'Size'"),
        ({"$orderby": "Filename sideways"}, "$orderby"),
        ({"$filter": "Filename eq"}, "$filter"),
        ({"$filter": "Filename eq 'a' and"}, "position"),
        ({"$filter": ""}, "empty"),
        ({"$search": '"a"b"'}, "$search"),
    ],
)
async def test_refused_query_options_get_odata_400s(
    api: Api, params: dict[str, str], fragment: str
) -> None:
    status, body = await api.page("hq", await api.login("hq"), params)
    assert status == 400
    assert set(body) == {"error"}
    assert fragment in body["error"]["message"]


async def test_repeated_query_option_is_refused(api: Api) -> None:
    token = await api.login("hq")
    url = pbx_url(api.base, "hq") + SCRIPTS_PATH + "?$top=1&$top=2"
    async with api.session.get(url, headers={"Authorization": f"Bearer {token}"}) as r:
        assert r.status == 400
        assert "more than once" in (await r.json(content_type=None))["error"]["message"]


async def test_count_filter_search_and_orderby(api: Api, sim: Simulator) -> None:
    hq = sim["hq"]
    token = await api.login("hq")
    status, body = await api.page("hq", token, {"$count": "true", "$top": "3"})
    assert list(body) == ["@odata.context", "@odata.count", "value"]
    assert body["@odata.count"] == 250
    assert (await api.page("hq", token, {"$count": "false"}))[1].keys() == {
        "@odata.context",
        "value",
    }

    wanted = [name for name in hq.filenames if name.endswith(".ps1")]
    params = {"$filter": "endswith(Filename,'.ps1')", "$count": "true", "$top": "4"}
    status, body = await api.page("hq", token, params)
    assert status == 200
    assert body["@odata.count"] == len(wanted)
    assert [item["Filename"] for item in body["value"]] == wanted[:4]
    status, body = await api.page("hq", token, {**params, "$skip": "4"})
    assert [item["Filename"] for item in body["value"]] == wanted[4:8]

    word = hq.filenames[0].split("-")[0]
    status, body = await api.page("hq", token, {"$search": word.upper(), "$count": "true"})
    assert body["@odata.count"] == sum(word in name for name in hq.filenames)

    status, body = await api.page("hq", token, {"$orderby": "Filename desc", "$top": "3"})
    assert [item["Filename"] for item in body["value"]] == hq.filenames[::-1][:3]

    # Filtering sees changes made between requests.
    hq.add_script("zz-new.ps1")
    status, body = await api.page("hq", token, params)
    assert body["@odata.count"] == len(wanted) + 1

    branch = sim["branch"]
    branch.set_state(branch.filenames[1], "Disconnected")
    status, body = await api.page(
        "branch", await api.login("branch"), {"$filter": "State ne 'Connected'"}
    )
    assert body["value"] == [{"Filename": branch.filenames[1], "State": "Disconnected"}]


async def test_settings_and_unknown_routes(api: Api, sim: Simulator) -> None:
    token = await api.login("hq")
    status, body, headers = await api.get("hq", SETTINGS_PATH, token)
    assert status == 200
    assert headers["OData-Version"] == "4.0"
    assert body.pop("@odata.context").endswith("/hq/xapi/v1/$metadata#Pbx.BackupFailoverSettings")
    assert body == sim["hq"].settings

    for path in ("/xapi/v1/Users", "/xapi/v1/Backups/Pbx.GetFailoverScripts"):
        status, body, _ = await api.get("hq", path, token)
        assert status == 404
        assert path in body["error"]["message"]
    status, body, _ = await api.get("hq", "/index.html", None)
    assert status == 404
    status, body, _ = await api.get("nowhere", SETTINGS_PATH, token)
    assert status == 404
    assert "nowhere" in body["error"]["message"]
    async with api.session.post(
        pbx_url(api.base, "hq") + SCRIPTS_PATH, headers={"Authorization": f"Bearer {token}"}
    ) as r:
        assert r.status == 405
        assert "error" in await r.json(content_type=None)


async def test_pbx_at_the_root_and_many_pbxs(api: Api, sim: Simulator) -> None:
    sim.add(Pbx("", scripts=3, seed=9))
    for number in range(40):
        sim.create(f"site-{number}", scripts=number, seed=number)
    token = await api.login("")
    assert await api.all_names("", token) == sim[""].filenames
    assert (await api.get("", SETTINGS_PATH, token))[0] == 200
    # The named PBXs are still reached by their prefix, not by the root.
    for number in (0, 1, 39):
        name = f"site-{number}"
        assert await api.all_names(name, await api.login(name)) == sim[name].filenames
    assert (await api.all_names("hq", await api.login("hq"))) == sim["hq"].filenames


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


# -- control API ---------------------------------------------------------------------------


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


# -- serving -------------------------------------------------------------------------------


async def test_tls_with_a_self_signed_certificate(self_signed: tuple[Path, Path]) -> None:
    cert, key = self_signed
    sim = Simulator([Pbx("hq", scripts=3)])
    async with serve(sim, ssl_context=tls_context(cert, key)) as base:
        assert base.startswith("https://127.0.0.1:")
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await Api(session, base).login("hq")
            trusted = ssl.create_default_context(cafile=str(cert))
            async with session.post(f"{base}/hq{TOKEN_PATH}", data=TOKEN_FORM, ssl=trusted) as r:
                assert r.status == 200


def test_run_serves_until_sigterm(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from auditor.simulator import Pbx, Simulator, run\n"
        "run(Simulator([Pbx('hq', scripts=2)]), port=0,\n"
        "    ready=lambda url: print(url, flush=True))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stdout is not None
        base = proc.stdout.readline().strip()
        assert base.startswith("http://127.0.0.1:")

        async def login() -> int:
            async with aiohttp.ClientSession() as session:
                return (await Api(session, base).token_response("hq"))[0]

        assert asyncio.run(login()) == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
