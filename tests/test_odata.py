"""Table tests and properties of the OData query options: $top, $skip, $search, $filter."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auditor.errors import QueryError
from auditor.odata import (
    INT64_MAX,
    MAX_NESTING,
    Filter,
    check_filter,
    dump,
    parse_filter,
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


# ---------------------------------------------------------------------------------------
# $filter: what parses, and into what


@pytest.mark.parametrize(
    ("text", "tree"),
    [
        ("Filename eq 'a'", "(eq Filename 'a')"),
        ("  Filename\teq 'a' ", "(eq Filename 'a')"),
        ("a eq 1 or b eq 2 and c eq 3", "(or (eq a 1) (and (eq b 2) (eq c 3)))"),
        ("(a eq 1 or b eq 2) and c eq 3", "(and (or (eq a 1) (eq b 2)) (eq c 3))"),
        ("a or b or c", "(or a b c)"),
        ("a and b or c and d", "(or (and a b) (and c d))"),
        ("not a eq 1 and b", "(and (not (eq a 1)) b)"),
        ("not not a", "(not (not a))"),
        ("not(contains(a, 'x'))", "(not (contains() a 'x'))"),
        ("a add 2 mul 3 eq 7", "(eq (add a (mul 2 3)) 7)"),
        ("a sub 1 sub 2 eq 0", "(eq (sub (sub a 1) 2) 0)"),
        ("a div 2 divby 3 mod 4 eq 0", "(eq (mod (divby (div a 2) 3) 4) 0)"),
        ("-a eq -1.5", "(eq (- a) -1.5)"),
        ("a eq - 2", "(eq a -2)"),
        ("a has Pbx.Mode'Active'", "(has a Pbx.Mode'Active')"),
        ("x in ('a', 'b')", "(in x ['a' 'b'])"),
        ("x in ('a') and y", "(and (in x ['a']) y)"),
        ("'a' in Tags", "(in 'a' Tags)"),
        ("a/b/c eq null", "(eq a/b/c null)"),
        ("$it/Filename eq 'x'", "(eq $it/Filename 'x')"),
        ("Tags/any(t: t eq 'x')", "(any Tags t (eq t 'x'))"),
        ("Tags/any()", "(any Tags)"),
        ("Owner/Tags/all(t:contains(t/Name, 'a'))", "(all Owner/Tags t (contains() t/Name 'a'))"),
        ("'it''s' eq a", "(eq 'it''s' a)"),
        ("a eq ''''", "(eq a '''')"),
        ("a eq true and b ne false", "(and (eq a true) (ne b false))"),
        ("x eq 007", "(eq x 7)"),
        ("x eq 2e3", "(eq x 2000.0)"),
        ("d eq 2024-01-31", "(eq d 2024-01-31)"),
        ("d lt 2024-01-31T12:00:00Z", "(lt d 2024-01-31T12:00:00+00:00)"),
        ("d lt 2024-01-31T12:00:00.5-05:30", "(lt d 2024-01-31T12:00:00.500000-05:30)"),
        ("t eq 12:30", "(eq t 12:30:00)"),
        (
            "g eq 01234567-89AB-cdef-0123-456789abcdef",
            "(eq g 01234567-89ab-cdef-0123-456789abcdef)",
        ),
        (
            "g eq abcdef01-2345-6789-abcd-ef0123456789",
            "(eq g abcdef01-2345-6789-abcd-ef0123456789)",
        ),
        ("d eq duration'P1D'", "(eq d duration'P1D')"),
        ("substring(a, 1) eq 'b'", "(eq (substring() a 1) 'b')"),
        ("substring(a, 1, 2) eq 'b'", "(eq (substring() a 1 2) 'b')"),
        ("now() gt d", "(gt (now()) d)"),
        ("contains (a, 'b')", "(contains() a 'b')"),
        ("cast(a, Edm.Int32) eq 1", "(eq (cast() a Edm.Int32) 1)"),
        ("isof(Pbx.FailoverScriptFile)", "(isof() Pbx.FailoverScriptFile)"),
        ("matchesPattern(a, '^x')", "(matchesPattern() a '^x')"),
        ("round(a) eq floor(b) add ceiling(c)", "(eq (round() a) (add (floor() b) (ceiling() c)))"),
        ("year(d) eq 2024 and month(d) le 6", "(and (eq (year() d) 2024) (le (month() d) 6))"),
        (
            "length(trim(concat(a, 'b'))) ge indexof(a, 'c')",
            "(ge (length() (trim() (concat() a 'b'))) (indexof() a 'c'))",
        ),
        ("Ns.Type/a eq 1", "(eq Ns.Type/a 1)"),
        ("é eq 'ü'", "(eq é 'ü')"),
        ("true", "true"),
        ("null", "null"),
        ("cast(a, Edm.Boolean)", "(cast() a Edm.Boolean)"),
    ],
)
def test_filter_parses(text: str, tree: str) -> None:
    parsed = parse_filter(text)
    assert dump(parsed.ast) == tree
    assert parsed.text == text
    assert str(parsed) == text
    assert check_filter(text) == text.strip()


def test_filter_value_semantics() -> None:
    assert parse_filter("a eq 1") == parse_filter("a eq 1")
    assert parse_filter("a eq 1") != parse_filter("a eq 2")
    assert isinstance(parse_filter("a eq 1"), Filter)


def test_nesting_up_to_the_limit_parses() -> None:
    depth = MAX_NESTING - 1
    assert dump(parse_filter("(" * depth + "a" + ")" * depth).ast) == "a"
    assert dump(parse_filter("not " * 40 + "a").ast).count("(not") == 40


# ---------------------------------------------------------------------------------------
# $filter: what is refused, and how it is told


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "Filename eqq 'a'",
            "$filter: unknown operator 'eqq' at position 10 in \"Filename eqq 'a'\""
            " (did you mean 'eq'?)",
        ),
        (
            "Filename EQ 'a'",
            "$filter: unknown operator 'EQ' at position 10 in \"Filename EQ 'a'\""
            " (did you mean 'eq'?)",
        ),
        (
            "Filename contains 'a'",
            "$filter: unknown operator 'contains' at position 10 in \"Filename contains 'a'\""
            " ('contains' is a function: contains(a, b))",
        ),
        (
            "Filename eq 'a",
            '$filter: unterminated string starting at position 13 in "Filename eq \'a"',
        ),
        (
            "a eq 'it''s",
            "$filter: unterminated string starting at position 6 in \"a eq 'it''s\"",
        ),
        (
            "(Filename eq 'a'",
            "$filter: unbalanced parenthesis at position 1 in \"(Filename eq 'a'\"",
        ),
        (
            "Filename eq 'a')",
            "$filter: unbalanced parenthesis at position 16 in \"Filename eq 'a')\"",
        ),
        (
            "contains(Filename, 'a'",
            "$filter: unbalanced parenthesis at position 9 in \"contains(Filename, 'a'\"",
        ),
        (
            "startwith(Filename, 'a')",
            "$filter: unknown function 'startwith' at position 1 in"
            " \"startwith(Filename, 'a')\" (did you mean 'startswith'?)",
        ),
        (
            "Contains(Filename, 'a')",
            "$filter: unknown function 'Contains' at position 1 in"
            " \"Contains(Filename, 'a')\" (did you mean 'contains'?)",
        ),
        (
            "Filename eq",
            '$filter: expected an expression at position 12 in "Filename eq" (found end of input)',
        ),
        (
            "eq 'a'",
            "$filter: expected an expression at position 1 in \"eq 'a'\" (found 'eq')",
        ),
        (
            "a eq 1 and ()",
            "$filter: expected an expression at position 13 in \"a eq 1 and ()\" (found ')')",
        ),
        (
            "x eq 1 'a'",
            "$filter: expected an operator at position 8 in \"x eq 1 'a'\" (found 'a')",
        ),
        (
            "contains(Filename 'a')",
            "$filter: expected an operator, ',' or ')' at position 19 in"
            " \"contains(Filename 'a')\" (found 'a')",
        ),
        (
            "Filename = 'a'",
            "$filter: unexpected '=' at position 10 in \"Filename = 'a'\" (did you mean 'eq'?)",
        ),
        (
            "Size >= 1",
            "$filter: unexpected '>=' at position 6 in \"Size >= 1\" (did you mean 'ge'?)",
        ),
        (
            'Filename eq "a"',
            '$filter: unexpected \'"\' at position 13 in "Filename eq "a"" (strings use single'
            " quotes)",
        ),
        (
            "$root/a eq 1",
            "$filter: unexpected '$' at position 1 in \"$root/a eq 1\""
            " (of the $ names only $it is supported)",
        ),
        (
            "a eq #",
            "$filter: unexpected character '#' at position 6 in \"a eq #\"",
        ),
        (
            "contains(Filename)",
            "$filter: wrong number of arguments for contains() at position 1 in"
            ' "contains(Filename)" (takes 2, got 1)',
        ),
        (
            "substring(a) eq 'b'",
            "$filter: wrong number of arguments for substring() at position 1 in"
            " \"substring(a) eq 'b'\" (takes 2 or 3, got 1)",
        ),
        (
            "now(1) gt d",
            "$filter: wrong number of arguments for now() at position 1 in"
            ' "now(1) gt d" (takes 0, got 1)',
        ),
        (
            "isof(a, 5)",
            '$filter: isof() needs a type name as its last argument at position 9 in "isof(a, 5)"',
        ),
        (
            "length(Filename)",
            '$filter: expected a boolean expression at position 1 in "length(Filename)"',
        ),
        (
            "a eq 1 and 'x'",
            "$filter: expected a boolean expression at position 12 in \"a eq 1 and 'x'\"",
        ),
        (
            "not 5",
            '$filter: expected a boolean expression at position 5 in "not 5"',
        ),
        (
            "x eq 2024-13-01",
            "$filter: invalid date or time '2024-13-01' at position 6 in \"x eq 2024-13-01\"",
        ),
        (
            "x eq 2024-01-01T10:00",
            "$filter: invalid date-time '2024-01-01T10:00' at position 6 in"
            ' "x eq 2024-01-01T10:00" (use a full form with a time zone, e.g.'
            " 2024-01-31T12:00:00Z)",
        ),
        (
            "x eq 12abc",
            "$filter: invalid number '12abc' at position 6 in \"x eq 12abc\"",
        ),
        (
            "a/ eq 1",
            "$filter: expected a member name after '/' at position 4 in \"a/ eq 1\" (found 'eq')",
        ),
        (
            "Tags/all()",
            '$filter: expected a variable name for all() at position 10 in "Tags/all()"'
            " (found ')')",
        ),
        (
            "Tags/any(t t eq 1)",
            "$filter: expected ':' after the variable at position 12 in"
            " \"Tags/any(t t eq 1)\" (found 't')",
        ),
        (
            "x in 5",
            "$filter: expected a parenthesised list after 'in' at position 6 in \"x in 5\""
            " (found '5')",
        ),
        ("", "$filter: must not be empty"),
        (" \t", "$filter: must not be empty"),
        (
            "a eq 1\nand b eqq 2",
            "$filter: unknown operator 'eqq' at position 14 in \"a eq 1\\nand b eqq 2\""
            " (did you mean 'eq'?)",
        ),
        (
            "(" * (MAX_NESTING + 5) + "a" + ")" * (MAX_NESTING + 5),
            f"$filter: expression nested too deeply at position {MAX_NESTING + 1} in"
            f' "{"(" * (MAX_NESTING + 5)}a{")" * (MAX_NESTING + 5)}"',
        ),
        (
            " add ".join(["1"] * 150) + " eq 1",
            "$filter: expression nested too deeply (over 100 levels)",
        ),
    ],
)
def test_filter_refused(text: str, message: str) -> None:
    with pytest.raises(QueryError) as caught:
        parse_filter(text)
    assert str(caught.value) == message
    with pytest.raises(QueryError):
        check_filter(text)


@pytest.mark.parametrize(
    "text",
    [
        "a eq",
        "()",
        "(1, 2) eq a",
        "not",
        "-",
        "a eq --",
        "a eq 1,",
        "contains(a,)",
        "contains(,a)",
        "a eq 1 not b",
        "a eq 'x' and",
        "Tags/any(eq: 1)",
        "Tags/any(t: 5)",
        "1.5.3 eq x",
        "2024-01-01T25:00:00Z eq x",
        "x eq 1-2",
        "x in ['a']",
        "a eq @p",
        "Pbx.Do(1)",
        "a eq 1 (",
        "a eq binary'AQ=='",
        "TRUE eq",
    ],
)
def test_filter_refused_in_one_line(text: str) -> None:
    with pytest.raises(QueryError) as caught:
        parse_filter(text)
    message = str(caught.value)
    assert message.startswith("$filter: ")
    assert len(message.splitlines()) == 1


def test_long_filter_is_shown_around_the_error() -> None:
    text = " and ".join(f"a{i} eq {i}" for i in range(60)) + " and b eqq 1"
    with pytest.raises(QueryError) as caught:
        parse_filter(text)
    message = str(caught.value)
    assert message.startswith(f"$filter: unknown operator 'eqq' at position {len(text) - 4} in")
    assert '"...' in message
    assert 'b eqq 1"' in message
    assert len(message) < 300


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


# ---------------------------------------------------------------------------------------
# $filter: properties

TOKENS = [
    "(", ")", ",", "/", ":", "-", "'", "'a'", "''", "1", "2.5", "null", "true", "not",
    "eq", "ne", "gt", "and", "or", "in", "add", "has", "eqq", "Filename", "Size", "$it",
    "Tags/any(t:", "t", "contains(", "length(", "now()", "cast(", "Edm.String",
    "2024-01-31", "2024-01-31T12:00:00Z", "12:30", "duration'P1D'", "=", '"',
]  # fmt: skip
token_soup = st.lists(
    st.tuples(st.sampled_from(TOKENS), st.sampled_from(["", " "])), max_size=14
).map(lambda parts: "".join(token + space for token, space in parts))
SAMPLE = {"Filename": "pre.sh", "Size": 3, "Tags": ["a"], "Enabled": True}


@settings(deadline=None, max_examples=300)
@given(st.one_of(st.text(max_size=60), token_soup))
def test_parse_filter_raises_only_query_errors(text: str) -> None:
    """parse_filter either parses or raises a one-line QueryError; so does matches()."""
    try:
        parsed = parse_filter(text)
    except QueryError as error:
        refused = str(error)
    else:
        refused = ""
    if refused:
        assert refused.startswith("$filter: ")
        assert len(refused.splitlines()) == 1
        return
    assert check_filter(text) == text.strip()
    outcome: object
    try:
        outcome = parsed.matches(SAMPLE)
    except QueryError as error:
        outcome = str(error)
    assert isinstance(outcome, bool) or (
        isinstance(outcome, str) and outcome.endswith("not supported by the simulator")
    )


ATOMS = [
    ("true", True),
    ("false", False),
    ("1 eq 1", True),
    ("2 lt 1", False),
    ("Size ge 10", True),
    ("Name eq 'x'", False),
    ("contains(Name, 'y')", True),
]
BoolTree = Any  # an atom index, ("not", tree) or ("and"|"or", tree, tree)
bool_trees = st.recursive(
    st.integers(0, len(ATOMS) - 1),
    lambda kids: st.one_of(
        st.tuples(st.just("not"), kids),
        st.tuples(st.sampled_from(["and", "or"]), kids, kids),
    ),
    max_leaves=10,
)
PRECEDENCE = {"or": 1, "and": 2, "not": 3}


def truth(tree: BoolTree) -> bool:
    if isinstance(tree, int):
        return ATOMS[tree][1]
    if tree[0] == "not":
        return not truth(tree[1])
    if tree[0] == "and":
        return truth(tree[1]) and truth(tree[2])
    return truth(tree[1]) or truth(tree[2])


def render(tree: BoolTree, context: int, minimal: bool) -> str:
    """The tree as filter text; minimal=True uses only the parentheses precedence needs."""
    if isinstance(tree, int):
        return ATOMS[tree][0]
    op = tree[0]
    if op == "not":
        text = "not " + render(tree[1], PRECEDENCE["not"], minimal)
    else:
        left = render(tree[1], PRECEDENCE[op], minimal)
        right = render(tree[2], PRECEDENCE[op] + 1, minimal)
        text = f"{left} {op} {right}"
    return f"({text})" if not minimal or PRECEDENCE[op] < context else text


@settings(deadline=None)
@given(bool_trees)
def test_precedence_matches_a_reference_evaluation(tree: BoolTree) -> None:
    item = {"Size": 10, "Name": "y"}
    for minimal in (True, False):
        assert parse_filter(render(tree, 0, minimal)).matches(item) is truth(tree)
