"""Paging through an XAPI collection and proving the listing complete.

3CX collections such as ``GetFailoverScripts()`` have no ``@odata.nextLink``: the client pages
itself with ``$top``/``$skip``, advancing ``$skip`` by the items actually received, and asks
for ``$count=true`` to prove the listing complete. ``$top`` above the PBX's limit (100) is
refused with a 400 naming the limit; paging continues with that limit. Offset paging over a
changing listing can skip or repeat items: duplicate keys, a page of keys already listed, or
a count that does not match trigger a fresh listing, up to ``max_relist`` times.

Knows nothing of HTTP, tokens or retries: one page is fetched by the callable the client
hands in; this module builds the query options, checks each page's shape and decides when
the listing is complete. It works for any paged collection whose items carry a string key.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any

from structlog.typing import FilteringBoundLogger

from auditor.errors import (
    BadQueryError,
    BadResponseError,
    IncompleteListingError,
    UnavailableError,
)
from auditor.model import JSON
from auditor.odata import check_filter, quote_search, validate_skip, validate_top
from auditor.xapi.answers import Listing, Page, answer_digest

_TOP_LIMIT = re.compile(r"limit of '(\d+)' for Top query", re.IGNORECASE)

# One page: (top, skip, page number counted from 1) -> the parsed page.
FetchPage = Callable[[int, int, int], Awaitable[Page]]


def query_options(
    *,
    top: int | None = None,
    skip: int | None = None,
    search: str | None = None,
    filter: str | None = None,
    count: bool = False,
) -> dict[str, str]:
    """The OData query string of one request, each option checked (:class:`QueryError`)."""
    query: dict[str, str] = {}
    if top is not None:
        query["$top"] = str(validate_top(top))
    if skip is not None:
        query["$skip"] = str(validate_skip(skip))
    if search:
        query["$search"] = quote_search(search)
    if filter:
        query["$filter"] = check_filter(filter)
    if count:
        query["$count"] = "true"
    return query


def parse_page(
    data: Any,
    body: bytes,
    *,
    collection: str,
    key: str,
    top: int | None,
    skip: int,
    page: int | None,
    target: str,
) -> Page:
    """One answer of ``collection``: an object with a ``value`` list of objects, each with a
    string ``key``, and an optional integer ``@odata.count``; else :class:`BadResponseError`."""

    def bad(why: str) -> BadResponseError:
        return BadResponseError(f"{collection}: {why}", target=target, page=page)

    if not isinstance(data, dict):
        raise bad(f"answer is a JSON {type(data).__name__}, not an object")
    if "value" not in data:
        raise bad("answer has no 'value' list")
    value = data["value"]
    if not isinstance(value, list):
        raise bad(f"'value' is a {type(value).__name__}, not a list")
    for index, item in enumerate(value):
        if not isinstance(item, dict):
            raise bad(f"item {skip + index} is a {type(item).__name__}, not an object")
        if not isinstance(item.get(key), str):
            raise bad(f"item {skip + index} has no string {key!r}")
    count = data.get("@odata.count")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int)):
        raise bad(f"'@odata.count' is {count!r}, not an integer")
    return Page(items=tuple(value), count=count, top=top, skip=skip, body=body)


async def list_all(
    fetch: FetchPage,
    *,
    collection: str,
    key: str,
    top: int,
    max_relist: int,
    deadline: float,
    target: str,
    log: FilteringBoundLogger,
) -> Listing:
    """Every item of ``collection``, paged with ``fetch`` and proved complete, within
    ``deadline`` seconds (else :class:`UnavailableError`)."""
    try:
        async with asyncio.timeout(deadline):
            return await _list(
                fetch,
                collection=collection,
                key=key,
                top=top,
                max_relist=max_relist,
                target=target,
                log=log,
            )
    except TimeoutError:
        raise UnavailableError(
            f"{collection}: listing not finished within {deadline:g}s (listing_timeout)",
            target=target,
        ) from None


async def _list(
    fetch: FetchPage,
    *,
    collection: str,
    key: str,
    top: int,
    max_relist: int,
    target: str,
    log: FilteringBoundLogger,
) -> Listing:
    problem = ""
    for attempt in range(max_relist + 1):
        if attempt:
            log.warning("xapi.relist", attempt=attempt, reason=problem)
        items: list[JSON] = []
        bodies: list[bytes] = []
        seen: set[str] = set()
        duplicates: list[str] = []
        repeated = False
        counts: set[int] = set()
        skip = 0
        pages = 0
        while True:
            try:
                page = await fetch(top, skip, pages + 1)
            except BadQueryError as exc:
                limit = _TOP_LIMIT.search(exc.detail)
                if limit and 0 < int(limit.group(1)) < top:
                    top = int(limit.group(1))
                    log.warning("xapi.top_limited", top=top)
                    continue
                raise
            pages += 1
            bodies.append(page.body)
            if page.count is not None:
                counts.add(page.count)
            if not page.items:
                break
            known = len(seen)
            for item in page.items:
                name = item[key]
                if name in seen:
                    duplicates.append(name)
                seen.add(name)
                items.append(item)
            skip += len(page.items)
            if page.count is not None and skip >= page.count:
                break
            if len(seen) == known:
                # Nothing but keys already listed: the PBX answers the same items whatever
                # $skip says, or the listing moved by a page or more. Without
                # @odata.count paging on would never end; start over instead.
                repeated = True
                break
        reported = max(counts) if counts else None
        if repeated:
            problem = (
                f"page {pages} held only keys already listed, e.g. {duplicates[0]!r} (a PBX "
                "or proxy ignoring $skip, or a listing that moved by a whole page)"
            )
        elif duplicates:
            problem = f"{len(duplicates)} duplicate key(s), e.g. {duplicates[0]!r}"
        elif len(counts) > 1:
            problem = f"@odata.count changed while paging ({sorted(counts)})"
        elif reported is not None and reported != len(items):
            problem = f"received {len(items)} items but @odata.count is {reported}"
        else:
            return Listing(
                items=tuple(items),
                pages=pages,
                reported_count=reported,
                relists=attempt,
                top=top,
                digest=answer_digest(bodies),
            )
    raise IncompleteListingError(
        f"{collection}: listing shifted while paging {max_relist + 1} times ({problem})",
        target=target,
    )
