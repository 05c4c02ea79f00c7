"""Listing failover scripts against the simulator and a server of our own, over HTTP:
paging, proving the listing complete (re-listing when it shifted), and the query options."""

from __future__ import annotations

import pytest

from auditor.errors import BadQueryError, IncompleteListingError, QueryError
from tests.xapi.support import (
    Hq,
    PlainPbx,
    assert_clean,
    make_client,
    make_target,
    served,
    served_plain,
)

# A deprecated call in the client would break on the next release of its dependency.
pytestmark = pytest.mark.filterwarnings("error::DeprecationWarning")


# -- paging ----------------------------------------------------------------------------------


async def test_pages_through_1000_scripts_with_one_login() -> None:
    async with served(scripts=1000) as hq, hq.client() as client:
        listing = await client.list_failover_scripts()

        assert list(listing.items) == hq.pbx.items()
        assert len(listing.items) == 1000
        assert (listing.pages, listing.reported_count, listing.relists, listing.top) == (
            10,
            1000,
            0,
            100,
        )
        assert hq.pbx.stats.logins == 1
        assert client.stats.logins == 1
        assert hq.pbx.stats.max_top == 100
        queries = [r.query for r in hq.listing_requests()]
        assert queries == [
            {"$top": "100", "$skip": str(skip), "$count": "true"} for skip in range(0, 1000, 100)
        ]
        assert all(r.status == 200 for r in hq.listing_requests())


async def test_a_pbx_limit_below_page_size_makes_the_client_continue_with_that_limit() -> None:
    async with served(scripts=1000, max_top=40) as hq, hq.client() as client:
        listing = await client.list_failover_scripts()

        assert list(listing.items) == hq.pbx.items()
        assert (listing.top, listing.pages, listing.reported_count) == (40, 25, 1000)
        first, *rest = hq.listing_requests()
        assert (first.query["$top"], first.query["$skip"], first.status) == ("100", "0", 400)
        assert [(r.query["$top"], r.query["$skip"], r.status) for r in rest] == [
            ("40", str(skip), 200) for skip in range(0, 1000, 40)
        ]
        # The refused $top is counted too: the client sent 100, never more.
        assert hq.pbx.stats.max_top == 100
        assert hq.pbx.stats.logins == 1


async def test_a_smaller_page_size_ends_on_a_short_page_without_an_extra_request() -> None:
    async with served(scripts=95) as hq, hq.client(page_size=30) as client:
        listing = await client.list_failover_scripts()

        assert list(listing.items) == hq.pbx.items()
        assert hq.skips() == [0, 30, 60, 90]
        assert {r.query["$top"] for r in hq.listing_requests()} == {"30"}
        assert listing.pages == 4


async def test_an_empty_listing_is_complete_after_one_page() -> None:
    async with served(scripts=0) as hq, hq.client() as client:
        listing = await client.list_failover_scripts()

        assert (listing.items, listing.pages, listing.reported_count) == ((), 1, 0)


async def test_short_pages_advance_skip_by_the_items_received() -> None:
    plain = PlainPbx(scripts=250, page_cap=30)
    async with served_plain(plain) as url, make_client(make_target(url)) as client:
        listing = await client.list_failover_scripts()

    assert [item["Filename"] for item in listing.items] == [
        f"script-{n:04d}.sh" for n in range(250)
    ]
    assert [int(s.query["$skip"]) for s in plain.listing()] == list(range(0, 250, 30))
    assert {s.query["$top"] for s in plain.listing()} == {"100"}
    assert (listing.pages, listing.reported_count) == (9, 250)


async def test_without_a_count_the_client_pages_until_an_empty_page() -> None:
    plain = PlainPbx(scripts=250, page_cap=30, count=False)
    async with served_plain(plain) as url, make_client(make_target(url)) as client:
        listing = await client.list_failover_scripts()

    assert len(listing.items) == 250
    assert [int(s.query["$skip"]) for s in plain.listing()] == [*range(0, 250, 30), 250]
    assert (listing.pages, listing.reported_count) == (10, None)


# -- a listing that shifts ---------------------------------------------------------------------


@pytest.mark.parametrize("count", [2, -1], ids=["inserted", "removed"])
async def test_a_listing_that_shifted_is_listed_again(hq: Hq, count: int) -> None:
    hq.pbx.add_fault("shift", endpoint="scripts", skip=100, count=count, times=1)
    async with hq.client() as client:
        listing = await client.list_failover_scripts()

    assert len(hq.pbx) == 250 + count
    assert list(listing.items) == hq.pbx.items()
    assert (listing.relists, listing.reported_count) == (1, 250 + count)
    assert hq.skips().count(0) == 2


async def test_a_listing_that_keeps_shifting_is_incomplete(hq: Hq) -> None:
    hq.pbx.add_fault("shift", endpoint="scripts", skip=100, count=1, times=None)
    async with hq.client(max_relist=2) as client:
        error = await hq.failure(client.list_failover_scripts(), IncompleteListingError)

    assert "shifted while paging 3 times" in str(error)
    assert hq.skips().count(0) == 3
    assert hq.pbx.stats.logins == 1


@pytest.mark.parametrize("mode", ["count", "no_count"])
async def test_a_pbx_ignoring_skip_is_incomplete_at_once(hq: Hq, mode: str) -> None:
    """Every page is the first one: a page of keys already listed ends each attempt (without
    @odata.count paging would otherwise go on until listing_timeout)."""
    hq.pbx.add_fault("ignore_skip", endpoint="scripts", mode=mode, times=None)
    async with hq.client(max_relist=2, listing_timeout="60s") as client:
        error = await hq.failure(client.list_failover_scripts(), IncompleteListingError)

    assert "shifted while paging 3 times" in str(error)
    assert "page 2 held only keys already listed" in str(error)
    assert "ignoring $skip" in str(error)
    # Two pages per attempt, three attempts, one login.
    assert hq.skips() == [0, 100] * 3
    assert hq.pbx.stats.logins == 1


# -- query options -----------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["argument", "target", "single page"])
async def test_a_bad_filter_is_refused_before_any_request(hq: Hq, where: str) -> None:
    bad = "Filename eq 'a' and"
    async with hq.client(filter=bad if where == "target" else None) as client:
        work = (
            client.get_failover_scripts(top=10, filter=bad)
            if where == "single page"
            else client.list_failover_scripts(filter=bad if where == "argument" else None)
        )
        with pytest.raises(QueryError, match=r"^\$filter: ") as caught:
            await work

    assert_clean(str(caught.value), hq.pbx.issued)
    assert hq.pbx.stats.requests_total == 0


async def test_a_filter_the_pbx_refuses_keeps_its_message(hq: Hq) -> None:
    async with hq.client() as client:
        error = await hq.failure(
            client.list_failover_scripts(filter="matchesPattern(Filename,'^flush')"),
            BadQueryError,
        )

    assert str(error).startswith(
        "hq, page 1: GetFailoverScripts: the PBX refused the query: "
        "The query specified in the URI is not valid. $filter: matchesPattern()"
    )
    assert error.status == 400
    assert hq.at_skip(0) == [400]


async def test_search_and_filter_reach_the_pbx_unchanged() -> None:
    names = ["a b.sh", "x & y+z.sh", "50% #1.sh", "plain.sh"]
    async with served(scripts=0) as hq:
        for name in names:
            hq.pbx.add_script(name)
        async with hq.client() as client:
            found = await client.list_failover_scripts(search="x & y+z")
            filtered = await client.list_failover_scripts(
                filter="Filename eq '50% #1.sh' or Filename eq 'a b.sh'"
            )

    assert [i["Filename"] for i in found.items] == ["x & y+z.sh"]
    assert [i["Filename"] for i in filtered.items] == ["50% #1.sh", "a b.sh"]
    first, second = hq.listing_requests()
    assert first.query["$search"] == '"x & y+z"'
    assert second.query["$filter"] == "Filename eq '50% #1.sh' or Filename eq 'a b.sh'"


async def test_one_page_with_every_option(hq: Hq) -> None:
    async with hq.client() as client:
        page = await client.get_failover_scripts(
            top=5, skip=10, search="flush arp", filter="endswith(Filename,'.sh')", count=True
        )

    (request,) = hq.listing_requests()
    assert request.query == {
        "$top": "5",
        "$skip": "10",
        "$search": '"flush arp"',
        "$filter": "endswith(Filename,'.sh')",
        "$count": "true",
    }
    assert (page.top, page.skip, page.count, page.items) == (5, 10, 0, ())
