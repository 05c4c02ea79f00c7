"""Table tests and properties of the pure diff: field paths, item changes, states."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auditor.config import StateRule
from auditor.diff import (
    DiffResult,
    apply,
    diff,
    field_diff,
    format_path,
    missing_scripts,
    parse_path,
    state_transitions,
    unhealthy,
)
from auditor.model import (
    SCRIPTS,
    SETTINGS,
    SETTINGS_KEY,
    Change,
    FieldChange,
    Item,
    Snapshot,
    canonical_json,
)

FC = FieldChange


def script(name: str, **extra: Any) -> Item:
    return Item(SCRIPTS, name, {"Filename": name, **extra})


def settings_item(**body: Any) -> Item:
    return Item(SETTINGS, SETTINGS_KEY, body)


def snap(*items: Item) -> Snapshot:
    return Snapshot.of("pbx", list(items))


def scripts_of(snapshot: Snapshot) -> dict[str, Mapping[str, Any]]:
    """The scripts of ``snapshot`` by key, as an audit hands them to ``unhealthy``."""
    return {key: item.body for key, item in snapshot.collection(SCRIPTS).items()}


# ---------------------------------------------------------------------------- field_diff


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        pytest.param({"a": 1}, {"a": 1}, (), id="equal"),
        pytest.param({"a": 1}, {"a": 2}, (FC("a", 1, 2),), id="scalar"),
        pytest.param({"a": 1}, {}, (FC("a", 1, None, "new"),), id="key-removed"),
        pytest.param({}, {"a": 1}, (FC("a", None, 1, "old"),), id="key-added"),
        pytest.param({"a": 1}, {"a": None}, (FC("a", 1, None),), id="set-to-null"),
        pytest.param({"a": None}, {}, (FC("a", None, None, "new"),), id="null-removed"),
        pytest.param({}, {"a": None}, (FC("a", None, None, "old"),), id="null-added"),
        pytest.param({"a": 1}, {"a": True}, (FC("a", 1, True),), id="int-vs-bool"),
        pytest.param({"a": 1}, {"a": 1.0}, (FC("a", 1, 1.0),), id="int-vs-float"),
        pytest.param({"a": 0.0}, {"a": -0.0}, (FC("a", 0.0, -0.0),), id="signed-zero"),
        pytest.param({"a": float("nan")}, {"a": float("nan")}, (), id="nan-equals-nan"),
        pytest.param({"a": "1"}, {"a": 1}, (FC("a", "1", 1),), id="str-vs-int"),
        pytest.param(
            {"a": {"b": {"c": 1}}}, {"a": {"b": {"c": 2}}}, (FC("a.b.c", 1, 2),), id="nested"
        ),
        pytest.param(
            {"a": {"b": 1}},
            {"a": [1]},
            (FC("a", {"b": 1}, [1]),),
            id="type-change-reported-whole",
        ),
        pytest.param({"a": [1, 2, 3]}, {"a": [1, 5, 3]}, (FC("a[1]", 2, 5),), id="list-position"),
        pytest.param(
            {"a": [1, 2, 3]},
            {"a": [1]},
            (FC("a[1]", 2, None, "new"), FC("a[2]", 3, None, "new")),
            id="list-shrinks",
        ),
        pytest.param(
            {"a": []},
            {"a": [7, None]},
            (FC("a[0]", None, 7, "old"), FC("a[1]", None, None, "old")),
            id="list-grows",
        ),
        pytest.param(
            {"a": [{"c": 1}, {"c": 2}]},
            {"a": [{"c": 1}, {"c": 3, "d": 4}]},
            (FC("a[1].c", 2, 3), FC("a[1].d", None, 4, "old")),
            id="list-of-objects",
        ),
        pytest.param(
            {"b": 1, "a": 1, "c": 1},
            {"c": 2, "b": 2, "a": 2},
            (FC("a", 1, 2), FC("b", 1, 2), FC("c", 1, 2)),
            id="keys-sorted",
        ),
        pytest.param(
            {"a": list(range(11))},
            {"a": [*range(10), 99]},
            (FC("a[10]", 10, 99),),
            id="positions-numeric",
        ),
        pytest.param({"x.y": 1}, {"x.y": 2}, (FC('["x.y"]', 1, 2),), id="quoted-root-key"),
        pytest.param({"a": {"": 1}}, {"a": {"": 2}}, (FC('a[""]', 1, 2),), id="empty-key"),
        pytest.param({"a": {"*": 1}}, {"a": {"*": 2}}, (FC('a["*"]', 1, 2),), id="star-key"),
        pytest.param(1, 2, (FC("", 1, 2),), id="scalar-roots"),
        pytest.param([1], [2], (FC("[0]", 1, 2),), id="list-roots"),
    ],
)
def test_field_diff(old: Any, new: Any, expected: tuple[FieldChange, ...]) -> None:
    assert field_diff(old, new) == expected


@pytest.mark.parametrize(
    ("ignore", "expected_fields"),
    [
        pytest.param((), ["Stats.calls", "Stats.list[0]", "Updated", "name"], id="none"),
        pytest.param(("Stats",), ["Updated", "name"], id="top-level-covers-below"),
        pytest.param(("Stats.*",), ["Updated", "name"], id="wildcard"),
        pytest.param(("Stats.calls",), ["Stats.list[0]", "Updated", "name"], id="exact"),
        pytest.param(("Stats.list[*]",), ["Stats.calls", "Updated", "name"], id="index-wildcard"),
        pytest.param(("Stats.list",), ["Stats.calls", "Updated", "name"], id="prefix-path"),
        pytest.param(
            ("Stat",), ["Stats.calls", "Stats.list[0]", "Updated", "name"], id="no-partial"
        ),
        pytest.param(("Updated", "name", "Stats"), [], id="all"),
        pytest.param(("*.calls",), ["Stats.list[0]", "Updated", "name"], id="leading-wildcard"),
    ],
)
def test_field_diff_ignore(ignore: tuple[str, ...], expected_fields: list[str]) -> None:
    old = {"name": "a", "Updated": "1", "Stats": {"calls": 1, "list": [1]}}
    new = {"name": "b", "Updated": "2", "Stats": {"calls": 2, "list": [2]}}
    assert [c.field for c in field_diff(old, new, ignore=ignore)] == expected_fields


def test_wildcard_pattern_does_not_hide_the_whole_value() -> None:
    # ``Stats.*`` hides what is inside Stats, not Stats itself disappearing.
    changes = field_diff({"Stats": {"x": 1}}, {"Stats": None}, ignore=["Stats.*"])
    assert changes == (FC("Stats", {"x": 1}, None),)
    assert field_diff({"Stats": {"x": 1}}, {"Stats": None}, ignore=["Stats"]) == ()


@pytest.mark.parametrize("pattern", ["", ".a", "a.", "a[", "a[x]", "a]b", 'a["x', "a..b", "a[1"])
def test_malformed_ignore_pattern_is_refused(pattern: str) -> None:
    with pytest.raises(ValueError, match="bad"):
        field_diff({}, {}, ignore=[pattern])


@pytest.mark.parametrize(
    ("path", "segments"),
    [
        ("a", ("a",)),
        ("a.b[2].c", ("a", "b", 2, "c")),
        ("[0][1]", (0, 1)),
        ('a["x.y"]["[0]"]', ("a", "x.y", "[0]")),
        ('["é.\\" \\\\"]', ('é." \\',)),
        ('é " \\', ('é " \\',)),
        ("0.1", ("0", "1")),
    ],
)
def test_paths_round_trip(path: str, segments: tuple[str | int, ...]) -> None:
    assert parse_path(path) == segments
    assert format_path(segments) == path


# ---------------------------------------------------------------------------- apply


@pytest.mark.parametrize(
    ("base", "fields", "expected"),
    [
        ({"a": 1}, [FC("a", 1, None, "new")], {}),
        ({"a": 1}, [FC("a", 1, None)], {"a": None}),
        ({"a": [1, 2, 3]}, [FC("a[1]", 2, None, "new"), FC("a[2]", 3, None, "new")], {"a": [1]}),
        ({"a": [1]}, [FC("a[1]", None, 2, "old"), FC("a[2]", None, 3, "old")], {"a": [1, 2, 3]}),
        ({"a": {"b": [{"c": 1}]}}, [FC("a.b[0].c", 1, 2)], {"a": {"b": [{"c": 2}]}}),
        ({"a": 1}, [FC("", {"a": 1}, {"z": 0})], {"z": 0}),
    ],
)
def test_apply(base: dict[str, Any], fields: list[FieldChange], expected: dict[str, Any]) -> None:
    before = canonical_json(base)
    assert apply(base, fields) == expected
    assert canonical_json(base) == before, "apply must not modify its base"


@pytest.mark.parametrize(
    "change",
    [
        FC("a.b", 1, 2),  # a is not an object
        FC("x.y", 1, 2),  # x does not exist
        FC("a[5]", None, 1, "old"),  # position far beyond the end
        FC("", 1, 2),  # the root must stay an object
    ],
)
def test_apply_refuses_paths_that_do_not_fit(change: FieldChange) -> None:
    with pytest.raises(ValueError, match=r"."):
        apply({"a": 1}, [change])


# ---------------------------------------------------------------------------- diff


def test_diff_added_removed_changed_in_order() -> None:
    previous = snap(script("b.sh", Size=1), script("gone.sh"), script("same.sh"))
    current = snap(script("new2.sh"), script("b.sh", Size=2), script("new1.sh"), script("same.sh"))
    result = diff(previous, current)
    assert [(c.kind, c.key) for c in result.changes] == [
        ("added", "new1.sh"),
        ("added", "new2.sh"),
        ("removed", "gone.sh"),
        ("changed", "b.sh"),
    ]
    assert result.suppressed == 0
    added, _, removed, changed = result.changes
    assert added == Change(SCRIPTS, "new1.sh", "added", None, {"Filename": "new1.sh"})
    assert removed == Change(SCRIPTS, "gone.sh", "removed", {"Filename": "gone.sh"}, None)
    assert changed.before == {"Filename": "b.sh", "Size": 1}
    assert changed.after == {"Filename": "b.sh", "Size": 2}
    assert changed.fields == (FC("Size", 1, 2),)


def test_diff_orders_collections() -> None:
    previous = snap(settings_item(Enabled=False), script("a.sh"))
    current = snap(settings_item(Enabled=True), script("b.sh"))
    result = diff(previous, current)
    assert [(c.collection, c.kind, c.key) for c in result.changes] == [
        (SCRIPTS, "added", "b.sh"),
        (SCRIPTS, "removed", "a.sh"),
        (SETTINGS, "changed", SETTINGS_KEY),
    ]


@pytest.mark.parametrize(
    ("old", "new", "fields"),
    [
        (
            {"Enabled": True, "PreStartScript": "a.sh"},
            {"Enabled": True, "PreStartScript": "b.sh"},
            (FC("PreStartScript", "a.sh", "b.sh"),),
        ),
        (
            {"Mode": "Active", "Interval": 60},
            {"Mode": "Passive", "Interval": 30},
            (FC("Interval", 60, 30), FC("Mode", "Active", "Passive")),
        ),
        (
            {"PostStartScript": "x.sh"},
            {"PostStartScript": None},
            (FC("PostStartScript", "x.sh", None),),
        ),
    ],
)
def test_diff_settings_as_one_object(
    old: dict[str, Any], new: dict[str, Any], fields: tuple[FieldChange, ...]
) -> None:
    result = diff(snap(settings_item(**old)), snap(settings_item(**new)))
    assert result.changes == (Change(SETTINGS, SETTINGS_KEY, "changed", old, new, fields),)


def test_settings_appearing_and_disappearing() -> None:
    with_settings, without = snap(settings_item(Enabled=True)), snap()
    assert [c.kind for c in diff(without, with_settings).changes] == ["added"]
    assert [c.kind for c in diff(with_settings, without).changes] == ["removed"]


@pytest.mark.parametrize(
    ("ignore", "kinds", "suppressed"),
    [
        pytest.param((), ["changed", "changed", "changed"], 0, id="no-ignore"),
        pytest.param(("Updated",), ["changed"], 2, id="one-field"),
        pytest.param(("Updated", "Size"), [], 3, id="all-changes-ignored"),
        pytest.param(("Stats.*",), ["changed", "changed", "changed"], 0, id="unrelated-pattern"),
    ],
)
def test_diff_ignore_fields_counts_suppressed(
    ignore: tuple[str, ...], kinds: list[str], suppressed: int
) -> None:
    previous = snap(
        script("a.sh", Updated="1"),
        script("b.sh", Updated="1"),
        script("c.sh", Size=1, Updated="1"),
    )
    current = snap(
        script("a.sh", Updated="2"),
        script("b.sh", Updated="2"),
        script("c.sh", Size=2, Updated="2"),
    )
    result = diff(previous, current, ignore_fields=ignore)
    assert [c.kind for c in result.changes] == kinds
    assert result.suppressed == suppressed


def test_ignore_fields_never_hide_added_or_removed_items() -> None:
    result = diff(snap(script("a.sh")), snap(script("b.sh")), ignore_fields=["Filename"])
    assert [(c.kind, c.key) for c in result.changes] == [("added", "b.sh"), ("removed", "a.sh")]
    assert result.suppressed == 0


def test_ignored_change_keeps_full_bodies_of_reported_change() -> None:
    previous = snap(script("a.sh", Size=1, Updated="1"))
    current = snap(script("a.sh", Size=2, Updated="2"))
    (change,) = diff(previous, current, ignore_fields=["Updated"]).changes
    assert change.fields == (FC("Size", 1, 2),)
    assert change.before == {"Filename": "a.sh", "Size": 1, "Updated": "1"}
    assert change.after == {"Filename": "a.sh", "Size": 2, "Updated": "2"}


def test_diff_is_driven_by_the_content_hash() -> None:
    # Items that carry the same hash are not walked: that is what keeps big listings cheap.
    old = Item(SCRIPTS, "a.sh", {"Filename": "a.sh", "Size": 1}, hash="h")
    new = Item(SCRIPTS, "a.sh", {"Filename": "a.sh", "Size": 2}, hash="h")
    assert diff(snap(old), snap(new)) == DiffResult((), 0)


def test_diff_of_many_items_finds_exactly_the_changed_ones() -> None:
    previous = snap(*(script(f"s{i:05}.sh", State="Connected", N=i) for i in range(20_000)))
    current = snap(
        *(
            script(f"s{i:05}.sh", State="Connected", N=-i if i % 1000 == 1 else i)
            for i in range(1, 20_001)
        )
    )
    result = diff(previous, current)
    assert [(c.kind, c.key) for c in result.changes] == [
        ("added", "s20000.sh"),
        ("removed", "s00000.sh"),
        *(("changed", f"s{i:05}.sh") for i in range(1, 20_000, 1000)),
    ]


# ---------------------------------------------------------------------------- missing_scripts


@pytest.mark.parametrize(
    ("body", "scripts", "expected"),
    [
        pytest.param(
            {"PreStartScript": "a.sh", "PostStartScript": "b.sh"},
            ["a.sh", "b.sh"],
            [],
            id="both-present",
        ),
        pytest.param(
            {"PreStartScript": "a.sh", "PostStartScript": "b.sh"},
            [],
            [("PreStartScript", "a.sh"), ("PostStartScript", "b.sh")],
            id="both-missing",
        ),
        pytest.param(
            {"PostStartScript": "b.sh"}, ["a.sh"], [("PostStartScript", "b.sh")], id="post-only"
        ),
        pytest.param(
            {"PreStartScript": "A.sh"}, ["a.sh"], [("PreStartScript", "A.sh")], id="case-sensitive"
        ),
        pytest.param(
            {"PreStartScript": " a.sh"}, ["a.sh"], [("PreStartScript", " a.sh")], id="exact-spaces"
        ),
        pytest.param({"PreStartScript": "", "PostStartScript": None}, [], [], id="empty-and-null"),
        pytest.param({"PreStartScript": 5}, [], [], id="not-a-string"),
        pytest.param({"Enabled": True}, [], [], id="fields-absent"),
    ],
)
def test_missing_scripts(
    body: dict[str, Any], scripts: list[str], expected: list[tuple[str, str]]
) -> None:
    assert missing_scripts(body, set(scripts)) == expected
    assert missing_scripts(body, {s: {"Filename": s} for s in scripts}) == expected


def test_missing_scripts_without_settings() -> None:
    assert missing_scripts(None, {"a.sh"}) == []


# ---------------------------------------------------------------------------- states


def test_unhealthy_judges_only_items_carrying_the_field() -> None:
    rule = StateRule()
    snapshot = snap(
        script("ok.sh", State="Connected"),
        script("down.sh", State="Disconnected"),
        script("plain.sh"),
        script("null.sh", State=None),
        script("num.sh", State=3),
        script("case.sh", State="connected"),
        settings_item(State="Disconnected"),
    )
    assert unhealthy(scripts_of(snapshot), rule.field, rule.healthy) == {
        "case.sh": "connected",
        "down.sh": "Disconnected",
        "null.sh": "None",
        "num.sh": "3",
    }


def test_unhealthy_with_several_healthy_values_and_another_field() -> None:
    snapshot = snap(
        script("a.sh", Link="Up"), script("b.sh", Link="Standby"), script("c.sh", Link="Down")
    )
    assert unhealthy(scripts_of(snapshot), "Link", ("Up", "Standby")) == {"c.sh": "Down"}
    assert unhealthy(scripts_of(snapshot), "State", ("Connected",)) == {}


@pytest.mark.parametrize(
    ("previous", "current", "keys", "newly", "recovered"),
    [
        pytest.param({}, {"a": "Down"}, {"a"}, [("a", "Down")], [], id="goes-down"),
        pytest.param({"a": "Down"}, {}, {"a"}, [], ["a"], id="recovers"),
        pytest.param({"a": "Down"}, {}, set(), [], [], id="removed-is-neither"),
        pytest.param({"a": "Down"}, {"a": "Failed"}, {"a"}, [], [], id="still-down-other-value"),
        pytest.param(
            {"b": "Down", "c": "Down"},
            {"c": "Down", "e": "X", "d": "Y"},
            ["b", "c", "d", "e"],
            [("d", "Y"), ("e", "X")],
            ["b"],
            id="mixed-sorted",
        ),
    ],
)
def test_state_transitions(
    previous: dict[str, str],
    current: dict[str, str],
    keys: set[str] | list[str],
    newly: list[tuple[str, str]],
    recovered: list[str],
) -> None:
    assert state_transitions(previous, current, keys) == (newly, recovered)


def test_states_end_to_end_across_two_snapshots() -> None:
    first = snap(
        script("a.sh", State="Connected"),
        script("b.sh", State="Down"),
        script("c.sh", State="Down"),
    )
    second = snap(script("a.sh", State="Down"), script("b.sh", State="Connected"))
    before = unhealthy(scripts_of(first), "State", ["Connected"])
    after = unhealthy(scripts_of(second), "State", ["Connected"])
    keys = second.collection(SCRIPTS).keys()
    assert state_transitions(before, after, keys) == ([("a.sh", "Down")], ["b.sh"])


# ---------------------------------------------------------------------------- properties

KEYS = st.text(alphabet=st.sampled_from('ab.[]"*\\ 0é'), max_size=3)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-3, 3)
    | st.floats(allow_nan=False, allow_infinity=False, width=16)
    | st.text(alphabet="xy", max_size=2)
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=8,
)
OBJECTS = st.dictionaries(KEYS, JSON_VALUES, max_size=5)
# Smaller bodies for whole snapshots: the snapshot properties are about keys and kinds.
SMALL_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
    max_leaves=4,
)
BODIES = st.dictionaries(KEYS, SMALL_VALUES, max_size=4)
ITEM_KEYS = st.sampled_from(["a.sh", "b.sh", "c.sh", "d.sh", "e.sh", "f.sh"])


@st.composite
def snapshot_pairs(draw: st.DrawFn) -> tuple[Snapshot, Snapshot]:
    """Two snapshots sharing some keys, some bodies equal, some edited, some replaced."""
    previous: list[Item] = []
    current: list[Item] = []
    for collection in (SCRIPTS, SETTINGS):
        for key in draw(st.sets(ITEM_KEYS, max_size=5)):
            previous.append(Item(collection, key, draw(BODIES)))
        for item in list(previous):
            if item.collection != collection:
                continue
            fate = draw(st.sampled_from(["keep", "edit", "drop"]))
            if fate == "keep":
                current.append(Item(collection, item.key, dict(item.body)))
            elif fate == "edit":
                edited = {**item.body, **draw(st.dictionaries(KEYS, SMALL_VALUES, max_size=2))}
                for gone in draw(st.lists(st.sampled_from(sorted(edited) or [""]), max_size=2)):
                    edited.pop(gone, None)
                current.append(Item(collection, item.key, edited))
        taken = {i.key for i in current if i.collection == collection}
        for key in draw(st.sets(ITEM_KEYS, max_size=3)) - taken:
            current.append(Item(collection, key, draw(BODIES)))
    return snap(*previous), snap(*current)


def bodies(snapshot: Snapshot) -> dict[tuple[str, str], bytes]:
    return {k: canonical_json(v.body) for k, v in snapshot.items.items()}


@settings(max_examples=100, deadline=None)
@given(JSON_VALUES)
def test_field_diff_of_a_value_with_itself_is_empty(value: Any) -> None:
    assert field_diff(value, value) == ()


@settings(max_examples=60, deadline=None)
@given(st.floats(allow_infinity=True, allow_nan=True))
def test_field_diff_agrees_with_the_content_hash_on_floats(x: float) -> None:
    # The diff reports a change exactly when the canonical JSON (hence the hash) differs.
    for y in (x, -x, 0.0, float("nan")):
        assert (field_diff({"v": x}, {"v": y}) == ()) == (
            canonical_json({"v": x}) == canonical_json({"v": y})
        )


@settings(max_examples=100, deadline=None)
@given(OBJECTS, OBJECTS)
def test_apply_of_field_diff_rebuilds_the_new_value(
    old: dict[str, Any], new: dict[str, Any]
) -> None:
    changes = field_diff(old, new)
    assert canonical_json(apply(old, changes)) == canonical_json(new)
    assert (changes == ()) == (canonical_json(old) == canonical_json(new))
    for change in changes:
        assert parse_path(change.field) is not None


@settings(max_examples=40, deadline=None)
@given(snapshot_pairs())
def test_diff_of_a_snapshot_with_itself_is_empty(pair: tuple[Snapshot, Snapshot]) -> None:
    for snapshot in pair:
        assert diff(snapshot, snapshot) == DiffResult((), 0)


@settings(max_examples=80, deadline=None)
@given(snapshot_pairs())
def test_applying_the_diff_rebuilds_the_current_snapshot(pair: tuple[Snapshot, Snapshot]) -> None:
    previous, current = pair
    result = diff(previous, current)
    assert result.suppressed == 0
    rebuilt = {k: dict(v.body) for k, v in previous.items.items()}
    for change in result.changes:
        where = (change.collection, change.key)
        if change.kind == "added":
            assert where not in rebuilt
            assert change.after is not None
            rebuilt[where] = dict(change.after)
        elif change.kind == "removed":
            assert rebuilt.pop(where) == change.before
        else:
            assert change.before is not None
            assert change.after is not None
            assert change.fields
            assert rebuilt[where] == change.before
            rebuilt[where] = apply(change.before, change.fields)
            assert canonical_json(rebuilt[where]) == canonical_json(change.after)
    assert {k: canonical_json(v) for k, v in rebuilt.items()} == bodies(current)


@settings(max_examples=60, deadline=None)
@given(snapshot_pairs(), st.sampled_from([(), ("a",), ("a.*",), ("*",), ("b[*]", '["a."]')]))
def test_diff_shape(pair: tuple[Snapshot, Snapshot], ignore: tuple[str, ...]) -> None:
    previous, current = pair
    result = diff(previous, current, ignore_fields=ignore)
    by_kind: dict[str, set[tuple[str, str]]] = {"added": set(), "removed": set(), "changed": set()}
    for change in result.changes:
        by_kind[change.kind].add((change.collection, change.key))
    assert by_kind["added"] == current.items.keys() - previous.items.keys()
    assert by_kind["removed"] == previous.items.keys() - current.items.keys()
    both = previous.items.keys() & current.items.keys()
    differing = {k for k in both if previous.items[k].hash != current.items[k].hash}
    assert by_kind["changed"] <= differing
    assert result.suppressed == len(differing) - len(by_kind["changed"])
    order = [
        (c.collection, ["added", "removed", "changed"].index(c.kind), c.key) for c in result.changes
    ]
    assert order == sorted(order)
    for change in result.changes:
        if change.kind == "changed":
            assert change.fields == field_diff(change.before, change.after, ignore=ignore)
        else:
            assert change.fields == ()
    assert diff(previous, current, ignore_fields=ignore) == result
