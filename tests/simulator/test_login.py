"""The simulated token endpoint and bearer tokens, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import aiohttp

from auditor.simulator import (
    SETTINGS_PATH,
    TOKEN_PATH,
    ManualClock,
    Simulator,
    pbx_url,
)
from tests.simulator.simapi import TOKEN_FORM, Api


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
