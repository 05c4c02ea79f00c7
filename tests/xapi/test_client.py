"""The XAPI client as a whole, over HTTP: the requests it sends, the settings answer, TLS,
time limits, closing, and secrets kept out of errors and logs."""

from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path

import pytest

from auditor import __version__
from auditor.errors import BadQueryError, UnavailableError
from auditor.simulator import Simulator, serve, tls_context
from tests.xapi.support import (
    SECRET,
    Hq,
    PlainPbx,
    RecordingPbx,
    assert_clean,
    log_events,
    make_client,
    make_target,
    served_plain,
)

# A deprecated call in the client would break on the next release of its dependency.
pytestmark = pytest.mark.filterwarnings("error::DeprecationWarning")


# -- requests and settings ---------------------------------------------------------------------


async def test_request_headers() -> None:
    plain = PlainPbx(scripts=5)
    async with served_plain(plain) as url, make_client(make_target(url)) as client:
        await client.list_failover_scripts()
        await client.get_failover_settings()

    login, *calls = plain.seen
    assert (login.method, login.path) == ("POST", "/pbx/connect/token")
    assert login.form == {
        "client_id": "auditor",
        "client_secret": SECRET,
        "grant_type": "client_credentials",
    }
    assert "Authorization" not in login.headers
    assert [c.method for c in calls] == ["GET", "GET"]
    for request in plain.seen:
        assert request.headers["Accept"] == "application/json"
        assert request.headers["User-Agent"] == f"3cx-auditor/{__version__}"
    for call in calls:
        assert call.headers["Authorization"] == f"Bearer {plain.tokens[0]}"
    assert len(plain.tokens) == 1


async def test_settings_drop_odata_annotations_and_keep_unknown_fields() -> None:
    plain = PlainPbx()
    async with served_plain(plain) as url, make_client(make_target(url)) as client:
        settings = await client.get_failover_settings()

    assert settings == {
        "Mode": "Passive",
        "Interval": 30,
        "FutureField": {"added": "in a later 3CX build"},
    }


async def test_settings_from_the_simulator(hq: Hq) -> None:
    async with hq.client() as client:
        settings = await client.get_failover_settings()

    assert settings == hq.pbx.settings
    assert not any(key.startswith("@") for key in settings)


# -- TLS and time limits -----------------------------------------------------------------------


async def test_tls_with_a_self_signed_certificate(self_signed: tuple[Path, Path]) -> None:
    cert, key = self_signed
    pbx = RecordingPbx("hq", scripts=3)
    async with serve(Simulator([pbx]), ssl_context=tls_context(cert, key)) as base:
        hq = Hq(base, pbx)
        assert hq.url.startswith("https://")
        async with hq.client(retries=3) as client:
            error = await hq.failure(client.list_failover_scripts(), UnavailableError)
            assert "TLS failed" in str(error)
            assert "ca_file" in str(error)
            # A certificate that does not verify fails the same way every time.
            assert client.stats.requests == 1
        assert pbx.stats.requests_total == 0

        async with hq.client(ca_file=cert) as client:
            assert len((await client.list_failover_scripts()).items) == 3
        async with hq.client(verify_tls=False) as client:
            assert len((await client.list_failover_scripts()).items) == 3


async def test_listing_timeout_bounds_the_whole_listing(hq: Hq) -> None:
    hq.pbx.add_fault("delay", endpoint="scripts", skip=100, seconds=10)
    async with hq.client(listing_timeout=timedelta(milliseconds=200)) as client:
        error = await hq.failure(client.list_failover_scripts(), UnavailableError)

    assert (
        str(error) == "hq: GetFailoverScripts: listing not finished within 0.2s (listing_timeout)"
    )


async def test_a_slow_answer_times_out_and_is_retried(hq: Hq) -> None:
    hq.pbx.add_fault("delay", endpoint="scripts", skip=100, seconds=10, times=1)
    async with hq.client(request_timeout=timedelta(milliseconds=200)) as client:
        listing = await client.list_failover_scripts()

        assert len(listing.items) == 250
        assert client.stats.retries == 1


async def test_a_closed_client_refuses_requests(hq: Hq) -> None:
    client = hq.client()
    await client.list_failover_scripts()
    await client.close()
    await client.close()
    error = await hq.failure(client.list_failover_scripts(), UnavailableError)

    assert str(error) == "hq: client is closed"


# -- secrets -----------------------------------------------------------------------------------


async def test_secret_and_token_echoed_by_the_pbx_are_scrubbed(hq: Hq) -> None:
    async with hq.client(retries=0) as client:
        await client.list_failover_scripts()
        token = hq.pbx.issued[-1]
        hq.pbx.add_fault(
            "status", endpoint="scripts", status=400, message=f"bad {SECRET} or {token}"
        )
        error = await hq.failure(client.list_failover_scripts(), BadQueryError)

    assert str(error) == "hq, page 1: GetFailoverScripts: the PBX refused the query: bad *** or ***"


async def test_no_secret_or_token_in_the_logs_of_a_troubled_listing(
    hq: Hq, log_stream: io.StringIO
) -> None:
    pbx = hq.pbx
    pbx.add_fault("status", endpoint="token", status=503, message=f"echo {SECRET}", times=1)
    pbx.add_fault("status", endpoint="scripts", skip=0, status=502, times=2)
    pbx.add_fault("drop", endpoint="scripts", skip=100, times=2)
    pbx.add_fault("expire_token", endpoint="scripts", skip=100, times=1)
    pbx.add_fault("truncate", endpoint="scripts", skip=200, times=1)
    pbx.add_fault(
        "status", endpoint="scripts", skip=200, status=500, message=f"x {SECRET}", times=1
    )
    async with hq.client(retries=4) as client:
        listing = await client.list_failover_scripts()

        assert list(listing.items) == pbx.items()
        events = log_events(log_stream)
        assert sum(e["event"] == "xapi.retry" for e in events) == client.stats.retries >= 5
        assert sum(e["event"] == "xapi.relogin" for e in events) == client.stats.relogins == 1
        assert len(pbx.issued) == 2
    assert_clean(log_stream.getvalue(), pbx.issued)
