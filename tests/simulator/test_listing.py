"""The simulated listing and settings over real HTTP: paging, query options, routes, many PBXs."""

from __future__ import annotations

import pytest

from auditor.simulator import (
    SCRIPTS_PATH,
    SETTINGS_PATH,
    Pbx,
    Simulator,
    pbx_url,
    top_limit_message,
)
from tests.simulator.simapi import Api


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
