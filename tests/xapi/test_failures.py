"""What the XAPI client retries, and which of our errors each failure becomes: HTTP errors,
dropped connections, truncated or malformed answers, a PBX that is down."""

from __future__ import annotations

import io
import socket

import pytest

from auditor.errors import BadResponseError, UnavailableError
from auditor.simulator.pbx import DownMode
from tests.xapi.support import Hq, assert_clean, log_events, make_client, make_target

# A deprecated call in the client would break on the next release of its dependency.
pytestmark = pytest.mark.filterwarnings("error::DeprecationWarning")


# -- retries -----------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_server_errors_are_retried(hq: Hq, status: int) -> None:
    hq.pbx.add_fault("status", endpoint="scripts", skip=100, status=status, times=2)
    async with hq.client(retries=2) as client:
        listing = await client.list_failover_scripts()

        assert list(listing.items) == hq.pbx.items()
        assert hq.at_skip(100) == [status, status, 200]
        assert client.stats.retries == 2


async def test_a_persistent_500_on_page_3_names_the_pbx_and_the_page(hq: Hq) -> None:
    hq.pbx.add_fault("status", endpoint="scripts", skip=200, status=500, times=None)
    async with hq.client(retries=2) as client:
        error = await hq.failure(client.list_failover_scripts(), UnavailableError)

    assert str(error).startswith("hq, page 3: ")
    assert "HTTP 500" in str(error)
    assert (error.page, error.status) == (3, 500)
    assert hq.skips() == [0, 100, 200, 200, 200]


async def test_retry_after_is_honoured(hq: Hq, log_stream: io.StringIO) -> None:
    hq.pbx.add_fault("status", endpoint="scripts", skip=100, status=429, retry_after=1, times=1)
    async with hq.client() as client:
        listing = await client.list_failover_scripts()

    assert len(listing.items) == 250
    assert hq.at_skip(100) == [429, 200]
    retries = [e for e in log_events(log_stream) if e["event"] == "xapi.retry"]
    # Backoff alone would wait at most 0.05s here.
    assert [e["wait_s"] for e in retries] == [1.0]


async def test_retry_after_is_capped_by_max_retry_after(hq: Hq, log_stream: io.StringIO) -> None:
    hq.pbx.add_fault("status", endpoint="scripts", skip=0, status=503, retry_after=3600, times=1)
    async with make_client(hq.target(), max_retry_after=0.2) as client:
        await client.list_failover_scripts()

    retries = [e for e in log_events(log_stream) if e["event"] == "xapi.retry"]
    assert [e["wait_s"] for e in retries] == [0.2]


async def test_a_persistent_429_is_unavailable(hq: Hq) -> None:
    hq.pbx.add_fault("status", endpoint="scripts", status=429, retry_after=0, times=None)
    async with hq.client(retries=1) as client:
        error = await hq.failure(client.list_failover_scripts(), UnavailableError)

    assert (error.status, error.page) == (429, 1)
    assert hq.at_skip(0) == [429, 429]


async def test_a_login_answered_503_is_retried(hq: Hq) -> None:
    hq.pbx.add_fault("status", endpoint="token", status=503, times=1)
    async with hq.client() as client:
        await client.list_failover_scripts()

    assert hq.pbx.stats.logins == 2
    assert hq.pbx.stats.tokens_issued == 1


async def test_dropped_connections_are_retried(hq: Hq) -> None:
    # aiohttp resends a GET once by itself after a disconnect: two drops reach the client once.
    hq.pbx.add_fault("drop", endpoint="scripts", skip=100, times=2)
    async with hq.client() as client:
        listing = await client.list_failover_scripts()

        assert list(listing.items) == hq.pbx.items()
        assert hq.at_skip(100) == [None, None, 200]
        assert client.stats.retries == 1


async def test_persistently_dropped_connections_are_unavailable(hq: Hq) -> None:
    hq.pbx.add_fault("drop", endpoint="scripts", skip=100, times=None)
    async with hq.client(retries=1) as client:
        error = await hq.failure(client.list_failover_scripts(), UnavailableError)

    assert str(error) == "hq, page 2: GetFailoverScripts $skip=100: connection dropped by the PBX"


async def test_a_truncated_body_is_retried(hq: Hq) -> None:
    hq.pbx.add_fault("truncate", endpoint="scripts", skip=100, mode="length", times=1)
    async with hq.client() as client:
        listing = await client.list_failover_scripts()

        assert list(listing.items) == hq.pbx.items()
        assert client.stats.retries == 1
        assert hq.at_skip(100) == [200, 200]


async def test_a_body_that_stays_truncated_is_a_bad_response(hq: Hq) -> None:
    hq.pbx.add_fault("truncate", endpoint="scripts", skip=100, mode="length", times=None)
    async with hq.client(retries=2) as client:
        error = await hq.failure(client.list_failover_scripts(), BadResponseError)

    assert str(error).startswith("hq, page 2: ")
    assert "truncated body" in str(error)
    assert len(hq.at_skip(100)) == 3


@pytest.mark.parametrize("action", ["truncate", "garbage"])
async def test_a_200_that_is_not_json_is_a_bad_response_without_retry(hq: Hq, action: str) -> None:
    # "cut": a complete 200 whose body is half a JSON document.
    mode = {"mode": "cut"} if action == "truncate" else {}
    hq.pbx.add_fault(action, endpoint="scripts", skip=100, times=None, **mode)
    async with hq.client(retries=3) as client:
        error = await hq.failure(client.list_failover_scripts(), BadResponseError)

        assert str(error).startswith("hq, page 2: GetFailoverScripts $skip=100: answer is not JSON")
        assert error.page == 2
        assert hq.at_skip(100) == [200]
        assert client.stats.retries == 0
    if action == "garbage":
        assert "Bad Gateway" in str(error)


@pytest.mark.parametrize(
    ("mode", "why"),
    [
        ("value", "'value' is a dict, not a list"),
        ("items", "item 100 is a str, not an object"),
        ("filename", "item 100 has no string 'Filename'"),
        ("count", "'@odata.count' is '250', not an integer"),
        ("missing", "answer has no 'value' list"),
    ],
)
async def test_wrong_types_are_bad_responses(hq: Hq, mode: str, why: str) -> None:
    hq.pbx.add_fault("wrong_types", endpoint="scripts", skip=100, mode=mode, times=None)
    async with hq.client() as client:
        error = await hq.failure(client.list_failover_scripts(), BadResponseError)

    assert str(error) == f"hq, page 2: GetFailoverScripts: {why}"
    assert hq.at_skip(100) == [200]


async def test_settings_of_the_wrong_type_are_a_bad_response(hq: Hq) -> None:
    hq.pbx.add_fault("wrong_types", endpoint="settings")
    async with hq.client() as client:
        error = await hq.failure(client.get_failover_settings(), BadResponseError)

    assert str(error) == "hq: GetBackupFailoverSettings: answer is a JSON list, not an object"


async def test_a_login_answer_without_a_token_is_a_bad_response(hq: Hq) -> None:
    hq.pbx.add_fault("wrong_types", endpoint="token")
    async with hq.client() as client:
        error = await hq.failure(client.list_failover_scripts(), BadResponseError)

    assert str(error) == "hq: login answer has no access_token"
    assert hq.pbx.stats.logins == 1


# -- a PBX that is down ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def test_a_closed_port_is_unavailable_after_retries() -> None:
    port = free_port()
    async with make_client(make_target(f"http://127.0.0.1:{port}/hq", retries=2)) as client:
        with pytest.raises(UnavailableError) as caught:
            await client.list_failover_scripts()

        error = caught.value
        assert_clean(str(error), [])
        assert str(error).startswith(f"hq: login: cannot connect to 127.0.0.1:{port}")
        assert (client.stats.requests, client.stats.retries) == (3, 2)


@pytest.mark.parametrize(
    ("mode", "why", "status"),
    [
        ("drop", "hq: login: connection dropped by the PBX", None),
        ("status", "hq: login answered HTTP 503", 503),
    ],
)
async def test_a_pbx_that_is_down(hq: Hq, mode: DownMode, why: str, status: int | None) -> None:
    hq.pbx.set_down(True, mode=mode)
    async with hq.client(retries=2) as client:
        error = await hq.failure(client.list_failover_scripts(), UnavailableError)

    assert str(error) == why
    assert error.status == status
    assert hq.pbx.stats.by_endpoint["token"] == 3


async def test_a_pbx_going_down_mid_listing_names_the_page(hq: Hq) -> None:
    async with hq.client(retries=1) as client:
        await client.list_failover_scripts()
        hq.pbx.set_down(True, mode="status")
        error = await hq.failure(client.list_failover_scripts(), UnavailableError)

    assert str(error).startswith("hq, page 1: GetFailoverScripts: HTTP 503")
