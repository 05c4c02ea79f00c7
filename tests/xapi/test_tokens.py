"""Tokens: one login per (PBX, client id) shared through a TokenCache, one re-login on a
401, and a refused login that is never repeated."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import SecretStr

from auditor.errors import AuthError
from auditor.xapi.tokens import TokenCache
from tests.xapi.support import WRONG_SECRET, Hq, assert_clean

# A deprecated call in the client would break on the next release of its dependency.
pytestmark = pytest.mark.filterwarnings("error::DeprecationWarning")


# -- tokens ------------------------------------------------------------------------------------


async def test_a_token_expiring_mid_listing_costs_one_login(hq: Hq) -> None:
    hq.pbx.add_fault("expire_token", endpoint="scripts", skip=100, times=1)
    async with hq.client() as client:
        listing = await client.list_failover_scripts()

        assert list(listing.items) == hq.pbx.items()
        assert hq.at_skip(100) == [401, 200]
        assert hq.pbx.stats.logins == 2
        assert (client.stats.logins, client.stats.relogins) == (2, 1)


async def test_a_second_401_is_an_auth_error(hq: Hq) -> None:
    hq.pbx.add_fault("expire_token", endpoint="scripts", skip=100, times=2)
    async with hq.client() as client:
        error = await hq.failure(client.list_failover_scripts(), AuthError)

    assert (error.page, error.status) == (2, 401)
    assert "another client may be logging in with client id 'auditor'" in str(error)
    assert hq.at_skip(100) == [401, 401]
    assert hq.pbx.stats.logins == 2


async def test_clients_sharing_a_token_cache_log_in_once(hq: Hq) -> None:
    tokens = TokenCache()
    async with hq.client(tokens) as first, hq.client(tokens) as second:
        one, two = await asyncio.gather(
            first.list_failover_scripts(), second.list_failover_scripts()
        )

        assert list(one.items) == list(two.items) == hq.pbx.items()
        assert hq.pbx.stats.logins == 1
        assert first.stats.logins + second.stats.logins == 1
        assert first.stats.relogins == second.stats.relogins == 0


async def test_clients_with_their_own_caches_break_each_other_but_recover(hq: Hq) -> None:
    # One live token per client id: each login revokes the other client's token, so every
    # request after the other's login is answered 401 once and costs a login. Both finish,
    # at the price of many logins: share one TokenCache instead.
    async with hq.client() as first, hq.client() as second:
        await first.list_failover_scripts()
        await second.list_failover_scripts()
        again = await first.list_failover_scripts()

        assert list(again.items) == hq.pbx.items()
        assert (first.stats.logins, first.stats.relogins) == (2, 1)
        assert hq.pbx.stats.logins == 3

        one, two = await asyncio.gather(
            first.list_failover_scripts(), second.list_failover_scripts()
        )
        assert list(one.items) == list(two.items) == hq.pbx.items()
        assert first.stats.relogins > 1
        assert second.stats.relogins >= 1
        assert hq.pbx.stats.logins > 4


async def test_a_wrong_secret_is_an_auth_error_and_not_retried(hq: Hq) -> None:
    async with hq.client(client_secret=SecretStr(WRONG_SECRET), retries=4) as client:
        error = await hq.failure(client.list_failover_scripts(), AuthError)

    assert str(error).startswith("hq: login refused (invalid_client: ")
    assert "client_id 'auditor'" in str(error)
    assert (hq.pbx.stats.logins, hq.pbx.stats.failed_logins) == (1, 1)
    assert hq.listing_requests() == []


async def test_clients_waiting_on_a_refused_login_do_not_log_in_again(hq: Hq) -> None:
    tokens = TokenCache()
    wrong = SecretStr(WRONG_SECRET)
    async with (
        hq.client(tokens, client_secret=wrong) as one,
        hq.client(tokens, client_secret=wrong) as two,
    ):
        outcomes = await asyncio.gather(
            one.list_failover_scripts(), two.get_failover_settings(), return_exceptions=True
        )

    assert [type(o) for o in outcomes] == [AuthError, AuthError]
    assert_clean(repr(outcomes), hq.pbx.issued)
    assert str(outcomes[0]) == str(outcomes[1])
    assert hq.pbx.stats.failed_logins == 1
