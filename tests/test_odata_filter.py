"""Table tests and properties of the $filter parser: what parses, into what, and what is
refused with which message."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auditor.errors import QueryError
from auditor.odata.parser import MAX_NESTING, Filter, check_filter, parse_filter
from auditor.odata.syntax import dump

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
