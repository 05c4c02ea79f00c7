"""The failover scripts of one simulated PBX: the listing behind ``Pbx.GetFailoverScripts()``.

A :class:`ScriptListing` keeps its items sorted by Filename, each one's JSON encoded once
(a page is joined from those bytes), and caches the orderings/filterings queries ask for
until the listing changes. Plain synchronous data: does no I/O, knows nothing of HTTP,
tokens or faults, and is not thread-safe (mutate from the loop that serves the simulator).
Another collection of a PBX gets a module of its own like this one.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from auditor.simulator.data import DuplicateError, check_filename
from auditor.simulator.query import compile_filter, compile_search

HEALTHY_STATE = "Connected"
_MAX_VIEWS = 16


@dataclass(slots=True)
class View:
    """One ordering/filtering of a listing: item objects and their JSON, position for position."""

    version: int
    items: list[dict[str, Any]]
    frags: list[bytes]


class ScriptListing:
    """The scripts, sorted by Filename. With ``states`` a new item carries ``"State":
    "Connected"`` unless told otherwise. ``version`` grows with every change."""

    def __init__(self, filenames: Iterable[str] = (), *, states: bool = False) -> None:
        self.states = states
        self.version = 0
        self._shift_ids = 0
        self._names: list[str] = []
        self._rows: list[dict[str, Any]] = []
        self._frags: list[bytes] = []
        self._by_name: dict[str, dict[str, Any]] = {}
        self._views: dict[tuple[str | None, str | None, tuple[tuple[str, bool], ...]], View] = {}
        filenames = list(filenames)
        if len(set(filenames)) != len(filenames):
            raise DuplicateError("the script names are not unique")
        for filename in sorted(filenames):
            row = self._new_row(filename, None)
            self._names.append(filename)
            self._rows.append(row)
            self._frags.append(_encode(row))
            self._by_name[filename] = row

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, filename: object) -> bool:
        return filename in self._by_name

    @property
    def filenames(self) -> list[str]:
        """The script names in listing order (by Filename)."""
        return list(self._names)

    def items(self) -> list[dict[str, Any]]:
        """Copies of the listing's items, in listing order."""
        return [dict(row) for row in self._rows]

    def item(self, filename: str) -> dict[str, Any]:
        return dict(self._by_name[filename])

    def add(self, filename: str, *, state: str | None = None) -> None:
        """Add a script; ``state`` sets its State (default: Connected when ``states`` is on)."""
        check_filename(filename)
        if filename in self._by_name:
            raise DuplicateError(f"script {filename!r} already exists")
        row = self._new_row(filename, state)
        at = bisect.bisect_left(self._names, filename)
        self._names.insert(at, filename)
        self._rows.insert(at, row)
        self._frags.insert(at, _encode(row))
        self._by_name[filename] = row
        self.version += 1

    def remove(self, filename: str) -> None:
        """Remove a script (KeyError if there is none)."""
        if filename not in self._by_name:
            raise KeyError(filename)
        self._remove_at(bisect.bisect_left(self._names, filename))

    def rename(self, filename: str, new_name: str) -> None:
        """Rename a script, keeping its State."""
        check_filename(new_name)
        if filename not in self._by_name:
            raise KeyError(filename)
        if new_name in self._by_name:
            raise DuplicateError(f"script {new_name!r} already exists")
        state = self._by_name[filename].get("State")
        self.remove(filename)
        self.add(new_name)
        self._set_state(new_name, state)

    def set_state(self, filename: str, state: str | None) -> None:
        """Set an item's State; None removes the field. Works with ``states`` off too."""
        if filename not in self._by_name:
            raise KeyError(filename)
        if state is not None and not isinstance(state, str):
            raise ValueError("a State must be a string or None")
        self._set_state(filename, state)

    def _set_state(self, filename: str, state: str | None) -> None:
        row = self._by_name[filename]
        if state is None:
            row.pop("State", None)
        else:
            row["State"] = state
        self._frags[bisect.bisect_left(self._names, filename)] = _encode(row)
        self.version += 1

    def _new_row(self, filename: str, state: str | None) -> dict[str, Any]:
        row: dict[str, Any] = {"Filename": filename}
        if state is not None:
            row["State"] = state
        elif self.states:
            row["State"] = HEALTHY_STATE
        return row

    def _remove_at(self, at: int) -> None:
        filename = self._names.pop(at)
        del self._rows[at]
        del self._frags[at]
        del self._by_name[filename]
        self.version += 1

    def shift(self, skip: int, count: int) -> list[str]:
        """Make offset paging at ``skip`` see a moved listing: insert ``count`` new scripts
        that sort before the item now at ``skip`` (``count`` < 0: remove ``-count`` items just
        before it, or the first items when ``skip`` is 0). Returns the names added or removed."""
        touched: list[str] = []
        if count > 0:
            bound = self._names[skip] if skip < len(self._names) else None
            for _ in range(count):
                name = self._name_before(bound)
                if name is None:
                    break
                self.add(name)
                touched.append(name)
        else:
            for step in range(-count):
                if not self._names:
                    break
                at = min(max(skip - 1 - step, 0), len(self._names) - 1)
                touched.append(self._names[at])
                self._remove_at(at)
        return touched

    def _name_before(self, bound: str | None) -> str | None:
        self._shift_ids += 1
        candidates = [f"0-shift-{self._shift_ids:04d}.sh"]
        if bound is not None:
            candidates += [bound[:end] for end in range(len(bound) - 1, 0, -1)]
        for name in candidates:
            if name not in self._by_name and (bound is None or name < bound):
                return name
        return None

    def view(
        self,
        filter_text: str | None = None,
        search: str | None = None,
        orderby: tuple[tuple[str, bool], ...] = (),
    ) -> View:
        """The listing as a query sees it (cached until the next change of the listing).

        Raises :class:`~auditor.simulator.query.ODataQueryError` for a refused filter/search.
        """
        if filter_text is None and search is None and not orderby:
            return View(self.version, self._rows, self._frags)
        key = (filter_text, search, orderby)
        cached = self._views.get(key)
        if cached is not None and cached.version == self.version:
            return cached
        rows = self._rows
        if filter_text is not None:
            keep = compile_filter(filter_text)
            rows = [row for row in rows if keep(row)]
        if search is not None:
            found = compile_search(search)
            rows = [row for row in rows if found(row)]
        for field, descending in reversed(orderby):
            rows = sorted(rows, key=_sort_key(field), reverse=descending)
        positions = {id(row): at for at, row in enumerate(self._rows)}
        view = View(self.version, rows, [self._frags[positions[id(row)]] for row in rows])
        if len(self._views) >= _MAX_VIEWS:
            self._views.clear()
        self._views[key] = view
        return view


def _sort_key(field: str) -> Callable[[Mapping[str, Any]], tuple[bool, str]]:
    # Items without the field (null) sort first, as OData orders nulls.
    def key(row: Mapping[str, Any]) -> tuple[bool, str]:
        value = row.get(field)
        return (value is not None, str(value) if value is not None else "")

    return key


def _encode(row: Mapping[str, Any]) -> bytes:
    return json.dumps(row, ensure_ascii=False, separators=(",", ":")).encode()
