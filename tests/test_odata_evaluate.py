"""Table tests of $filter evaluation: the subset the built-in simulator answers itself."""

from __future__ import annotations

from typing import Any

import pytest

from auditor.errors import QueryError
from auditor.odata.parser import parse_filter

# ---------------------------------------------------------------------------------------
# $filter: evaluation (the simulator's subset)

ITEMS: list[dict[str, Any]] = [
    {"Id": 1, "Filename": "pre.sh", "Size": 10, "Enabled": True, "Owner": {"Name": "Ann"},
     "Tags": ["a", "b"]},
    {"Id": 2, "Filename": "Post.sh", "Size": 2.5, "Enabled": False, "Owner": {"Name": "bob"}},
    {"Id": 3, "Filename": "notes.txt", "Size": None},
    {"Id": 4, "Size": 7},
]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "ids"),
    [
        ("Filename eq 'pre.sh'", {1}),
        ("Filename eq 'PRE.sh'", set()),
        ("Filename ne 'pre.sh'", {2, 3, 4}),
        ("Filename eq null", {4}),
        ("Size eq null", {3}),
        ("Size ne null", {1, 2, 4}),
        ("null eq null", {1, 2, 3, 4}),
        ("tolower(Filename) eq 'post.sh'", {2}),
        ("toupper(Filename) eq 'NOTES.TXT'", {3}),
        ("startswith(Filename, 'p')", {1}),
        ("endswith(Filename, '.sh')", {1, 2}),
        ("contains(Filename, 'o')", {2, 3}),
        ("contains(Filename, 'O')", set()),
        ("not contains(Filename, 'o')", {1}),
        ("length(Filename) gt 6", {2, 3}),
        ("indexof(Filename, 's') eq 4", {1, 3}),
        ("indexof(Filename, 'z') eq -1", {1, 2, 3}),
        ("concat(Filename, '!') eq 'pre.sh!'", {1}),
        ("trim(concat('  ', Filename)) eq 'pre.sh'", {1}),
        ("Size gt 5", {1, 4}),
        ("Size ge 10", {1}),
        ("Size lt 5", {2}),
        ("Size le 2.5", {2}),
        ("Size gt -1 and Size lt 8", {2, 4}),
        ("Size eq 10.0", {1}),
        ("Filename gt 'a'", {1, 3}),
        ("Filename le 'Post.sh'", {2}),
        ("Size eq '10'", set()),
        ("Size gt 'a'", set()),
        ("Enabled eq 1", set()),
        ("Enabled", {1}),
        ("Enabled eq false", {2}),
        ("not Enabled", {2}),
        ("Owner/Name eq 'Ann'", {1}),
        ("Owner/Missing eq null", {1, 2, 3, 4}),
        ("Filename/Deeper eq null", {1, 2, 3, 4}),
        ("$it/Filename eq 'pre.sh'", {1}),
        ("Filename in ('pre.sh', 'notes.txt')", {1, 3}),
        ("'b' in Tags", {1}),
        ("(Size gt 5 or Filename eq 'Post.sh') and not (Size eq 7)", {1, 2}),
        ("Size gt 5 or Filename eq 'Post.sh' and not Size eq 7", {1, 2, 4}),
        # Three-valued logic: contains() of a missing Filename is null.
        ("not (contains(Filename, 'x') or Size eq 7)", {1, 2}),
        ("not (contains(Filename, 'x') and Size eq 7)", {1, 2, 3}),
        ("contains(Filename, 'x') or Id eq 4", {3, 4}),
        ("true", {1, 2, 3, 4}),
        ("false", set()),
        ("Id eq 1 or Id eq 2 or Id eq 3", {1, 2, 3}),
    ],
)
def test_filter_matches(text: str, ids: set[int]) -> None:
    parsed = parse_filter(text)
    assert {item["Id"] for item in ITEMS if parsed.matches(item)} == ids


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Size add 1 eq 11", "$filter: 'add' at position 6 is not supported by the simulator"),
        ("year(Created) eq 2024",
         "$filter: year() at position 1 is not supported by the simulator"),
        ("Tags/any(t: t eq 'a')", "$filter: any() at position 6 is not supported by the simulator"),
        ("Id eq 01234567-89ab-cdef-0123-456789abcdef",
         "$filter: a guid literal at position 7 is not supported by the simulator"),
        ("Filename has Pbx.Mode'A'",
         "$filter: 'has' at position 10 is not supported by the simulator"),
        ("-Size eq -10",
         "$filter: '-' on a non-literal at position 1 is not supported by the simulator"),
        ("Pbx.X/Filename eq 'a'",
         "$filter: the type cast 'Pbx.X' at position 1 is not supported by the simulator"),
    ],
)  # fmt: skip
def test_filter_outside_the_simulator_subset(text: str, message: str) -> None:
    parsed = parse_filter(text)
    with pytest.raises(QueryError) as caught:
        parsed.matches(ITEMS[0])
    assert str(caught.value) == message
