"""The OData query options of the simulated listing: parsing, validation and the messages a
real 3CX (ASP.NET Core OData) answers with when it refuses one. Pure: no HTTP, no state."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from multidict import MultiMapping

from auditor.errors import QueryError
from auditor.odata import parse_filter, search_matches

ENTITY_TYPE = "Pbx.FailoverScriptFile"
ORDERABLE = ("Filename", "State")

# $select, $expand and $format are valid OData options the listing accepts and ignores.
_KNOWN = frozenset(
    {"$top", "$skip", "$search", "$filter", "$count", "$orderby", "$select", "$expand", "$format"}
)
_DIGITS = re.compile(r"[0-9]+")

Predicate = Callable[[Mapping[str, Any]], bool]


class ODataQueryError(Exception):
    """A query option the simulated PBX refuses with HTTP 400; ``str()`` is the message."""


@dataclass(frozen=True, slots=True)
class ListingQuery:
    top: int | None
    skip: int
    count: bool
    filter: str | None
    search: str | None
    orderby: tuple[tuple[str, bool], ...]
    """(property, descending) pairs; empty for the natural order (Filename ascending)."""


def top_limit_message(limit: int, value: int) -> str:
    """The exact message a 3CX V20 answers when ``$top`` exceeds its limit."""
    return (
        "The query specified in the URI is not valid. "
        f"The limit of '{limit}' for Top query has been exceeded. "
        f"The value from the incoming request is '{value}'."
    )


def parse_listing_query(query: MultiMapping[str]) -> ListingQuery:
    """Validate the options of one listing request (the ``$top`` limit is checked by the caller,
    so that the value can be counted first)."""
    names = set(query.keys())
    if len(names) != len(query):
        repeated = next(name for name in names if len(query.getall(name)) > 1)
        raise ODataQueryError(
            f"Query option '{repeated}' was specified more than once, "
            "but it must be specified at most once."
        )
    for name in names:
        if name.startswith("$") and name not in _KNOWN:
            raise ODataQueryError(f"The query parameter '{name}' is not supported.")
    count_text = query.get("$count")
    if count_text is None or count_text.lower() == "false":
        count = False
    elif count_text.lower() == "true":
        count = True
    else:
        raise ODataQueryError(f"'{count_text}' is not a valid count option.")
    return ListingQuery(
        top=_non_negative("$top", query.get("$top")),
        skip=_non_negative("$skip", query.get("$skip")) or 0,
        count=count,
        filter=query.get("$filter"),
        search=query.get("$search"),
        orderby=_orderby(query.get("$orderby")),
    )


def lenient_skip(query: Mapping[str, str]) -> int:
    """``$skip`` as fault rules see it: 0 when absent or not a valid number."""
    text = query.get("$skip")
    return int(text) if text is not None and _DIGITS.fullmatch(text) else 0


@lru_cache(maxsize=256)
def compile_filter(text: str) -> Predicate:
    """The predicate of a ``$filter`` text, cached: a paged audit sends the same one per page."""
    try:
        parsed = parse_filter(text)
    except QueryError as exc:
        raise _refused(exc) from None

    def matches(item: Mapping[str, Any]) -> bool:
        try:
            return parsed.matches(item)
        except QueryError as exc:
            raise _refused(exc) from None

    return matches


def compile_search(text: str) -> Predicate:
    try:
        # Checks the phrase itself, so a malformed one is refused even on an empty listing.
        search_matches(text, {})
    except QueryError as exc:
        raise _refused(exc) from None

    def matches(item: Mapping[str, Any]) -> bool:
        return search_matches(text, item)

    return matches


def _refused(exc: QueryError) -> ODataQueryError:
    return ODataQueryError(f"The query specified in the URI is not valid. {exc}")


def _non_negative(name: str, text: str | None) -> int | None:
    if text is None:
        return None
    if not _DIGITS.fullmatch(text):
        raise ODataQueryError(
            f"Invalid value '{text}' for {name} query option found. "
            f"The {name} query option requires a non-negative integer value."
        )
    return int(text)


def _orderby(text: str | None) -> tuple[tuple[str, bool], ...]:
    if text is None:
        return ()
    keys: list[tuple[str, bool]] = []
    for part in text.split(","):
        words = part.split()
        if not words or len(words) > 2 or (len(words) == 2 and words[1] not in ("asc", "desc")):
            raise ODataQueryError(
                f"The query specified in the URI is not valid. Syntax error in $orderby: '{text}'."
            )
        if words[0] not in ORDERABLE:
            raise ODataQueryError(
                f"Could not find a property named '{words[0]}' on type '{ENTITY_TYPE}'."
            )
        keys.append((words[0], len(words) == 2 and words[1] == "desc"))
    if keys == [("Filename", False)]:
        return ()
    return tuple(keys)
