"""Pure comparison of snapshots: item changes, field-level diffs and state evaluation.

Nothing here does I/O; everything is deterministic (sorted) so that the same two snapshots
always give the same changes in the same order, which the history hash chain relies on.

Field paths
    A path names one value inside an item's JSON: ``a.b`` for a key of an object, ``a[2]``
    for a position of a list, combined as ``a[2].c``. A key that is empty, is ``*`` or
    contains ``.``, ``[`` or ``]`` is written quoted, as a JSON string in brackets
    (``a["x.y"]``), so that every path reads back unambiguously. The root value itself
    has the empty path ``""`` (only when two non-object roots differ).

Missing versus null
    A key present on one side only is reported with ``None`` as its value on the side that
    lacks it, and :attr:`FieldChange.missing` says which side that is (``"old"`` or
    ``"new"``). An explicit JSON ``null`` has ``missing = None``. So ``{"a": 1} -> {}``
    and ``{"a": 1} -> {"a": null}`` are two different changes, and :func:`apply` rebuilds
    either exactly. Lists are compared position by position; when their lengths differ,
    each extra position is reported as missing on the shorter side.

Equality
    Values are equal when their canonical JSON is equal (the content hash is taken over
    that): ``1``, ``1.0`` and ``true`` differ; ``-0.0`` differs from ``0.0``.

Ignore patterns
    A pattern is a path, in which a segment ``*`` (``a.*`` or ``a[*]``) stands for any one
    key or position. A pattern suppresses every path it matches and everything below it:
    ``Stats`` and ``Stats.*`` both hide ``Stats.calls``; only ``Stats`` also hides a change
    of ``Stats`` as a whole (for example it appearing, disappearing or becoming ``null``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any, Final

from auditor.model import (
    Change,
    ChangeKind,
    FieldChange,
    Item,
    Snapshot,
)

__all__ = [
    "SCRIPT_FIELDS",
    "DiffResult",
    "apply",
    "diff",
    "field_diff",
    "format_path",
    "missing_scripts",
    "parse_path",
    "state_transitions",
    "unhealthy",
]

SCRIPT_FIELDS: Final[tuple[str, ...]] = ("PreStartScript", "PostStartScript")
"""The settings fields that name a failover script, in the order they are checked."""


class _Wildcard:
    """The ``*`` segment of an ignore pattern: matches any one key or position."""

    def __repr__(self) -> str:
        return "*"


WILDCARD: Final = _Wildcard()
Segment = str | int
PatternSegment = str | int | _Wildcard

_QUOTE_CHARS: Final = frozenset(".[]")
_KIND_ORDER: Final[dict[ChangeKind, int]] = {"added": 0, "removed": 1, "changed": 2}
_decoder: Final = json.JSONDecoder()


# ---------------------------------------------------------------------------- paths


def _key_needs_quotes(key: str) -> bool:
    return not key or key == "*" or not _QUOTE_CHARS.isdisjoint(key)


def _join_key(prefix: str, key: str) -> str:
    if _key_needs_quotes(key):
        return f"{prefix}[{json.dumps(key, ensure_ascii=False)}]"
    return f"{prefix}.{key}" if prefix else key


def format_path(segments: Sequence[Segment]) -> str:
    """The path string of ``segments`` (``str`` keys and ``int`` positions)."""
    path = ""
    for seg in segments:
        path = f"{path}[{seg}]" if isinstance(seg, int) else _join_key(path, seg)
    return path


def _parse(path: str, *, wildcards: bool) -> tuple[PatternSegment, ...]:
    segments: list[PatternSegment] = []
    i, n = 0, len(path)

    def name(start: int) -> int:
        end = start
        while end < n and path[end] not in ".[":
            end += 1
        text = path[start:end]
        if not text or "]" in text:
            raise ValueError(f"bad field path {path!r}: bad name at {start}")
        segments.append(WILDCARD if wildcards and text == "*" else text)
        return end

    if n and path[0] != "[":
        i = name(0)
    while i < n:
        char = path[i]
        if char == ".":
            if not segments:
                raise ValueError(f"bad field path {path!r}: starts with '.'")
            i = name(i + 1)
        elif char == "[":
            close = i + 1
            if close < n and path[close] == '"':
                try:
                    key, close = _decoder.raw_decode(path, close)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"bad field path {path!r}: {exc.msg} at {exc.pos}") from None
                segments.append(key)
            else:
                end = path.find("]", close)
                inner = path[close:end] if end >= 0 else ""
                if wildcards and inner == "*":
                    segments.append(WILDCARD)
                elif inner.isascii() and inner.isdigit():
                    segments.append(int(inner))
                else:
                    raise ValueError(f"bad field path {path!r}: bad index at {i}")
                close = end
            if close >= n or path[close] != "]":
                raise ValueError(f"bad field path {path!r}: missing ']' after {i}")
            i = close + 1
        else:
            raise ValueError(f"bad field path {path!r}: unexpected {char!r} at {i}")
    return tuple(segments)


def parse_path(path: str) -> tuple[Segment, ...]:
    """The segments of a path as written by :func:`field_diff`; ``ValueError`` if malformed.

    ``parse_path(format_path(s)) == s`` for every sequence of keys and positions.
    """
    return tuple(s for s in _parse(path, wildcards=False) if not isinstance(s, _Wildcard))


def _compile(ignore: Collection[str]) -> dict[int, list[tuple[PatternSegment, ...]]]:
    """Ignore patterns grouped by length; ``ValueError`` names a malformed one."""
    by_length: dict[int, list[tuple[PatternSegment, ...]]] = {}
    for pattern in sorted(set(ignore)):
        segments = _parse(pattern, wildcards=True)
        if not segments:
            raise ValueError("bad ignore pattern '': it would hide every field")
        by_length.setdefault(len(segments), []).append(segments)
    return by_length


def _ignored(
    segments: Sequence[Segment], patterns: Mapping[int, list[tuple[PatternSegment, ...]]]
) -> bool:
    # Only patterns exactly as long as the path are tried: the walk visits every ancestor
    # first, so a shorter (prefix) pattern has already pruned the subtree.
    for pattern in patterns.get(len(segments), ()):
        if all(p is WILDCARD or p == s for p, s in zip(pattern, segments, strict=True)):
            return True
    return False


# ---------------------------------------------------------------------------- field diff


def _is_object(value: Any) -> bool:
    return isinstance(value, Mapping)


def _is_array(value: Any) -> bool:
    return isinstance(value, list | tuple)


def _same(old: Any, new: Any) -> bool:
    """Equal as JSON (the content hash's view): type-strict, containers compared deeply."""
    if old is new:
        return True
    if _is_object(old):
        return (
            _is_object(new) and old.keys() == new.keys() and all(_same(old[k], new[k]) for k in old)
        )
    if _is_array(old):
        return (
            _is_array(new)
            and len(old) == len(new)
            and all(_same(a, b) for a, b in zip(old, new, strict=True))
        )
    if type(old) is not type(new):
        return False
    if isinstance(old, float):
        # ``==`` calls -0.0 equal to 0.0 and NaN unequal to itself; the JSON text does not.
        if math.isnan(old) or math.isnan(new):
            return math.isnan(old) and math.isnan(new)
        return old == new and math.copysign(1.0, old) == math.copysign(1.0, new)
    return bool(old == new)


def _walk(
    old: Any,
    new: Any,
    segments: list[Segment],
    patterns: Mapping[int, list[tuple[PatternSegment, ...]]],
) -> Iterator[FieldChange]:
    if _is_object(old) and _is_object(new):
        for key in sorted(old.keys() | new.keys()):
            segments.append(key)
            if not _ignored(segments, patterns):
                if key not in new:
                    yield FieldChange(format_path(segments), old[key], None, "new")
                elif key not in old:
                    yield FieldChange(format_path(segments), None, new[key], "old")
                else:
                    yield from _walk(old[key], new[key], segments, patterns)
            segments.pop()
    elif _is_array(old) and _is_array(new):
        for index in range(max(len(old), len(new))):
            segments.append(index)
            if not _ignored(segments, patterns):
                if index >= len(new):
                    yield FieldChange(format_path(segments), old[index], None, "new")
                elif index >= len(old):
                    yield FieldChange(format_path(segments), None, new[index], "old")
                else:
                    yield from _walk(old[index], new[index], segments, patterns)
            segments.pop()
    elif not _same(old, new):
        yield FieldChange(format_path(segments), old, new)


def field_diff(old: Any, new: Any, *, ignore: Collection[str] = ()) -> tuple[FieldChange, ...]:
    """The field-level differences from ``old`` to ``new`` (two JSON values).

    Object keys are visited in sorted order and list positions in ascending order, so the
    result is deterministic. A value whose type differs between the sides (object, list,
    scalar) is reported once, at its own path, with both whole values. ``ignore`` holds
    patterns (see the module docstring); a malformed pattern raises ``ValueError``.
    """
    return tuple(_walk(old, new, [], _compile(ignore)))


def _copy(value: Any) -> Any:
    if _is_object(value):
        return {k: _copy(v) for k, v in value.items()}
    if _is_array(value):
        return [_copy(v) for v in value]
    return value


def apply(base: Mapping[str, Any], fields: Sequence[FieldChange]) -> dict[str, Any]:
    """``base`` with ``fields`` applied, as a new dict (``base`` is not modified).

    For ``fields = field_diff(a, b)`` (no ignore patterns), ``apply(a, fields) == b``.
    A change missing on the new side deletes the key, or cuts the list at that position
    (the later positions of the same list are then already gone). ``ValueError`` when a
    path does not lead through ``base`` or a change of the root is not an object.
    """
    root: dict[str, Any] = _copy(base)
    for change in fields:
        segments = parse_path(change.field)
        if not segments:
            if not _is_object(change.new):
                raise ValueError("a change of the whole item must leave an object")
            root = _copy(change.new)
            continue
        parent: Any = root
        for seg in segments[:-1]:
            parent = _step(parent, seg, change.field)
        last = segments[-1]
        if isinstance(last, int):
            if not isinstance(parent, list):
                raise ValueError(f"{change.field}: not a list position")
            if change.missing == "new":
                del parent[last:]
            elif last < len(parent):
                parent[last] = _copy(change.new)
            elif last == len(parent):
                parent.append(_copy(change.new))
            else:
                raise ValueError(f"{change.field}: position beyond the end of the list")
        else:
            if not isinstance(parent, dict):
                raise ValueError(f"{change.field}: not an object key")
            if change.missing == "new":
                parent.pop(last, None)
            else:
                parent[last] = _copy(change.new)
    return root


def _step(container: Any, seg: Segment, path: str) -> Any:
    if isinstance(seg, int):
        if isinstance(container, list) and seg < len(container):
            return container[seg]
    elif isinstance(container, dict) and seg in container:
        return container[seg]
    raise ValueError(f"{path}: does not lead through the item")


# ---------------------------------------------------------------------------- snapshots


@dataclass(frozen=True, slots=True)
class DiffResult:
    """The outcome of :func:`diff`.

    ``changes`` are ordered by collection, then kind (added, removed, changed), then key.
    ``suppressed`` counts the items present in both snapshots whose content hash differs
    but which have no field difference outside the ignore patterns, so were not reported
    as ``changed``. Added and removed items are never suppressed: ignore patterns hide
    fields, not the presence of an item.
    """

    changes: tuple[Change, ...]
    suppressed: int = 0


def _by_collection(snapshot: Snapshot) -> dict[str, dict[str, Item]]:
    grouped: dict[str, dict[str, Item]] = {}
    for (collection, key), item in snapshot.items.items():
        grouped.setdefault(collection, {})[key] = item
    return grouped


def diff(
    previous: Snapshot, current: Snapshot, *, ignore_fields: Collection[str] = ()
) -> DiffResult:
    """What changed from ``previous`` to ``current``, per collection and key.

    ``added``/``removed`` carry the one body they have (``after``/``before``) and no fields;
    ``changed`` carries both full bodies and the field diff. Content hashes are compared
    first, so only items whose hash differs are walked. The settings object is one item
    (key ``settings``) and is diffed like any other. ``ignore_fields`` are field patterns
    (see the module docstring) applied to every collection; ``ValueError`` if malformed.
    """
    patterns = _compile(ignore_fields)
    before_all, after_all = _by_collection(previous), _by_collection(current)
    changes: list[Change] = []
    suppressed = 0
    for collection in sorted(before_all.keys() | after_all.keys()):
        old_items = before_all.get(collection, {})
        new_items = after_all.get(collection, {})
        found: list[Change] = []
        for key in new_items.keys() - old_items.keys():
            found.append(Change(collection, key, "added", None, new_items[key].body))
        for key in old_items.keys() - new_items.keys():
            found.append(Change(collection, key, "removed", old_items[key].body, None))
        for key in old_items.keys() & new_items.keys():
            old, new = old_items[key], new_items[key]
            if old.hash == new.hash:
                continue
            fields = tuple(_walk(old.body, new.body, [], patterns))
            if fields:
                found.append(Change(collection, key, "changed", old.body, new.body, fields))
            else:
                suppressed += 1
        found.sort(key=lambda c: (_KIND_ORDER[c.kind], c.key))
        changes.extend(found)
    return DiffResult(tuple(changes), suppressed)


def missing_scripts(
    settings: Mapping[str, Any] | None, scripts: Collection[str]
) -> list[tuple[str, str]]:
    """``(field, filename)`` for each Pre/PostStartScript of ``settings`` naming a file that
    is not among ``scripts`` (the listed filenames).

    The names are compared exactly, case and spaces included: the PBX runs on Linux, where
    ``Failover.sh`` and ``failover.sh`` are two files, and it runs the script by the name
    stored in the settings. A field that is absent, ``null``, not a string or ``""`` names
    no script. Without settings, nothing can be missing: ``[]``.
    """
    if settings is None:
        return []
    missing: list[tuple[str, str]] = []
    for name in SCRIPT_FIELDS:
        value = settings.get(name)
        if isinstance(value, str) and value and value not in scripts:
            missing.append((name, value))
    return missing


# ---------------------------------------------------------------------------- states


def unhealthy(
    bodies: Mapping[str, Mapping[str, Any]], field: str, healthy: Collection[str]
) -> dict[str, str]:
    """``{key: value}`` of the items (``bodies`` by key) whose state ``field`` is not healthy.

    Only items that carry ``field`` (a top-level key) are judged; an item without it is
    neither healthy nor unhealthy. A value that is not a string is compared and reported
    as ``str(value)`` (so ``null`` becomes ``"None"``). Comparison is exact.
    """
    allowed = frozenset(healthy)
    found: dict[str, str] = {}
    for key, body in bodies.items():
        if field not in body:
            continue
        raw = body[field]
        value = raw if isinstance(raw, str) else str(raw)
        if value not in allowed:
            found[key] = value
    return dict(sorted(found.items()))


def state_transitions(
    previous_unhealthy: Mapping[str, str],
    current_unhealthy: Mapping[str, str],
    current_keys: Collection[str],
) -> tuple[list[tuple[str, str]], list[str]]:
    """``(newly_unhealthy, recovered)`` between two results of :func:`unhealthy`.

    ``newly_unhealthy`` holds ``(key, value)`` for keys unhealthy now and not before;
    a key unhealthy in both is in neither list, even when its value changed. ``recovered``
    holds keys unhealthy before that are in ``current_keys`` and no longer unhealthy
    (healthy again, or no longer carrying the field). A key that left the listing is in
    neither list: its removal is reported by :func:`diff`. Both lists are sorted by key.
    """
    present = current_keys if isinstance(current_keys, AbstractSet) else set(current_keys)
    newly = [(k, v) for k, v in sorted(current_unhealthy.items()) if k not in previous_unhealthy]
    recovered = [
        k for k in sorted(previous_unhealthy) if k not in current_unhealthy and k in present
    ]
    return newly, recovered
