"""Table tests and properties of the query options other than $filter: $top, $skip, $search."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auditor.errors import QueryError
from auditor.odata.options import (
    INT64_MAX,
    quote_search,
    search_matches,
    unquote_search,
    validate_skip,
    validate_top,
)

# ---------------------------------------------------------------------------------------
# $top and $skip


@pytest.mark.parametrize(
    ("value", "maximum", "expected"),
    [
        (1, 100, 1),
        (100, 100, 100),
        ("50", 100, 50),
        (" 7 ", 100, 7),
        ("007", 100, 7),
        (50, 50, 50),
        (1, 1, 1),
    ],
)
def test_top_accepts(value: object, maximum: int, expected: int) -> None:
    assert validate_top(value, maximum=maximum) == expected


@pytest.mark.parametrize(
    ("value", "maximum", "message"),
    [
        ("50x", 100, "$top: must be an integer between 1 and 100 (got '50x')"),
        (0, 100, "$top: must be an integer between 1 and 100 (got 0)"),
        (101, 100, "$top: must be an integer between 1 and 100 (got 101)"),
        (51, 50, "$top: must be an integer between 1 and 50 (got 51)"),
        (-1, 100, "$top: must be an integer between 1 and 100 (got -1)"),
        ("-1", 100, "$top: must be an integer between 1 and 100 (got '-1')"),
        ("", 100, "$top: must be an integer between 1 and 100 (got '')"),
        ("1e2", 100, "$top: must be an integer between 1 and 100 (got '1e2')"),
        ("\u0663", 100, "$top: must be an integer between 1 and 100 (got '\u0663')"),
        (True, 100, "$top: must be an integer between 1 and 100 (got True)"),
        (5.0, 100, "$top: must be an integer between 1 and 100 (got 5.0)"),
        (None, 100, "$top: must be an integer between 1 and 100 (got None)"),
        ("1\n2", 100, "$top: must be an integer between 1 and 100 (got '1\\n2')"),
        ("9" * 60, 100, "$top: must be an integer between 1 and 100 (got '" + "9" * 36 + "...)"),
    ],
)
def test_top_refuses(value: object, maximum: int, message: str) -> None:
    with pytest.raises(QueryError) as caught:
        validate_top(value, maximum=maximum)
    assert str(caught.value) == message


@pytest.mark.parametrize("maximum", [0, -5, True])
def test_top_maximum_must_be_positive(maximum: int) -> None:
    with pytest.raises(ValueError, match="maximum"):
        validate_top(1, maximum=maximum)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0, 0), ("0", 0), (250, 250), (" 12 ", 12), (INT64_MAX, INT64_MAX)],
)
def test_skip_accepts(value: object, expected: int) -> None:
    assert validate_skip(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (-1, "$skip: must be an integer >= 0 (got -1)"),
        ("-1", "$skip: must be an integer >= 0 (got '-1')"),
        ("ten", "$skip: must be an integer >= 0 (got 'ten')"),
        (False, "$skip: must be an integer >= 0 (got False)"),
        (1.5, "$skip: must be an integer >= 0 (got 1.5)"),
        (INT64_MAX + 1, f"$skip: must be at most {INT64_MAX} (got {INT64_MAX + 1})"),
    ],
)
def test_skip_refuses(value: object, message: str) -> None:
    with pytest.raises(QueryError) as caught:
        validate_skip(value)
    assert str(caught.value) == message


# ---------------------------------------------------------------------------------------
# $search


@pytest.mark.parametrize(
    ("phrase", "expected"),
    [
        ("failover", "failover"),
        ("  failover\t", "failover"),
        ("pre-start.sh", "pre-start.sh"),
        ("ä.sh", "ä.sh"),
        ("pre start", '"pre start"'),
        ("a\tb", '"a\tb"'),
        ('"pre start"', '"pre start"'),
        ('"word"', '"word"'),
        ('say "hi"', '"say \\"hi\\""'),
        ('it"s', '"it\\"s"'),
        ("C:\\scripts", '"C:\\\\scripts"'),
        ("OR", '"OR"'),
        ("or", "or"),
        ("(x)", '"(x)"'),
        ('"unbalanced', '"\\"unbalanced"'),
        ('"a" "b"', '"\\"a\\" \\"b\\""'),
        ('"a\\"', '"\\"a\\\\\\""'),
    ],
)
def test_quote_search(phrase: str, expected: str) -> None:
    assert quote_search(phrase) == expected


@pytest.mark.parametrize("phrase", ["", "   ", "\t\n"])
def test_quote_search_refuses_blank(phrase: str) -> None:
    with pytest.raises(QueryError, match=r"^\$search: must not be empty$"):
        quote_search(phrase)


def test_quote_search_refuses_non_text() -> None:
    with pytest.raises(QueryError, match=r"^\$search: must be text \(got 5\)$"):
        quote_search(5)  # type: ignore[arg-type]  # what a caller ignoring the types may pass


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("word", "word"),
        ("  word ", "word"),
        ('"pre start"', "pre start"),
        ('"say \\"hi\\""', 'say "hi"'),
        ('"C:\\\\scripts"', "C:\\scripts"),
        ('a"b', 'a"b'),
        ('"open', '"open'),
    ],
)
def test_unquote_search(value: str, expected: str) -> None:
    assert unquote_search(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('""', "$search: malformed quoted phrase '\"\"'"),
        ('"a"b"', '$search: malformed quoted phrase \'"a"b"\''),
        ('"a\\x"', "$search: malformed quoted phrase '\"a\\\\x\"'"),
        ("  ", "$search: must not be empty"),
    ],
)
def test_unquote_search_refuses(value: str, message: str) -> None:
    with pytest.raises(QueryError) as caught:
        unquote_search(value)
    assert str(caught.value) == message


# Written from the OData ABNF, independently of the module: searchPhrase with escapes.
SEARCH_PHRASE = re.compile(r'"(?:[^"\\]|\\["\\])+"', re.DOTALL)

printable = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1)
tricky = st.text(st.sampled_from('ab "\\()\t'), min_size=1)
search_inputs = st.one_of(printable, tricky).filter(lambda s: bool(s.strip()))


@settings(deadline=None)
@given(search_inputs)
def test_quote_search_properties(phrase: str) -> None:
    """For every printable phrase that is not blank, with t = phrase.strip():

    - quote_search gives a bare word (no blank, quote, backslash, parenthesis; not an
      operator) or one well-formed searchPhrase;
    - if t is already a well-formed searchPhrase it is kept as it is;
    - otherwise unquote_search(quote_search(phrase)) == t;
    - quote_search is idempotent.
    """
    stripped = phrase.strip()
    quoted = quote_search(phrase)
    bare = not any(ch.isspace() or ch in '"\\()' for ch in quoted) and quoted not in (
        "AND",
        "OR",
        "NOT",
    )
    assert bare or SEARCH_PHRASE.fullmatch(quoted)
    if SEARCH_PHRASE.fullmatch(stripped):
        assert quoted == stripped
    else:
        assert unquote_search(quoted) == stripped
    assert quote_search(quoted) == quoted


ITEM = {"Filename": "Pre-Start.sh", "Size": 5, "Note": None, "Owner": {"Name": "ann"}}


@pytest.mark.parametrize(
    ("phrase", "expected"),
    [
        ("pre-start", True),
        ("PRE", True),
        ('"start.sh"', True),
        ('"-Start"', True),
        ("post", False),
        ('"Pre Start"', False),
        ("5", False),
        ("ann", False),
    ],
)
def test_search_matches(phrase: str, expected: bool) -> None:
    assert search_matches(phrase, ITEM) is expected
