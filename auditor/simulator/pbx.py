"""The simulated PBXs: their data, credentials, tokens, faults and request statistics.

Everything here is plain synchronous Python driven from one event loop: the HTTP handlers
and a test script share the same objects, so a mutation made between two requests is seen
by the next one. Not thread-safe: mutate from the loop that serves the simulator.
"""

from __future__ import annotations

import bisect
import hmac
import json
import re
import secrets
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from auditor.simulator.data import (
    check_filename,
    check_settings,
    generate_filenames,
    generate_settings,
)
from auditor.simulator.faults import Fault
from auditor.simulator.query import compile_filter, compile_search

Clock = Callable[[], float]
DownMode = Literal["drop", "status"]
TokenState = Literal["ok", "expired", "invalid"]

HEALTHY_STATE = "Connected"
ROOT_CONTROL_NAME = "-"
"""How the control API names the PBX mounted at the root (whose name is "")."""

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._~-]{0,63}")
_RESERVED = frozenset({"connect", "xapi"})
_MAX_VIEWS = 16


class DuplicateError(ValueError):
    """The name is already taken (a script in a PBX, or a PBX in a simulator)."""


class ManualClock:
    """A clock for token expiry that only moves when told to: ``clock.advance(3601)``."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request as the PBX saw it; ``status`` is None when the connection was dropped."""

    method: str
    path: str
    query: dict[str, str]
    status: int | None
    endpoint: str
    fault: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "status": self.status,
            "endpoint": self.endpoint,
            "fault": self.fault,
        }


class Stats:
    """Counters of one PBX plus the last ``history`` requests (a ring buffer).

    ``logins`` counts requests to the token endpoint, ``tokens_issued`` the tokens minted,
    ``failed_logins`` the refused credentials; ``max_top`` is the largest ``$top`` a listing
    request carried (None before the first one), refused values included.
    """

    __slots__ = (
        "by_endpoint",
        "by_status",
        "failed_logins",
        "logins",
        "max_top",
        "requests",
        "requests_total",
        "tokens_issued",
    )

    def __init__(self, history: int = 1000) -> None:
        self.requests: deque[RequestRecord] = deque(maxlen=history)
        self.reset()

    def reset(self) -> None:
        self.logins = 0
        self.tokens_issued = 0
        self.failed_logins = 0
        self.requests_total = 0
        self.max_top: int | None = None
        self.by_endpoint: Counter[str] = Counter()
        self.by_status: Counter[int | None] = Counter()
        self.requests.clear()

    def record(self, record: RequestRecord) -> None:
        self.requests_total += 1
        self.by_endpoint[record.endpoint] += 1
        self.by_status[record.status] += 1
        if self.requests.maxlen:
            self.requests.append(record)

    def note_top(self, top: int) -> None:
        if self.max_top is None or top > self.max_top:
            self.max_top = top

    def for_endpoint(self, endpoint: str) -> list[RequestRecord]:
        """The remembered requests to one endpoint (token, scripts, settings, xapi, other)."""
        return [r for r in self.requests if r.endpoint == endpoint]

    def to_dict(self) -> dict[str, Any]:
        return {
            "logins": self.logins,
            "tokens_issued": self.tokens_issued,
            "failed_logins": self.failed_logins,
            "requests_total": self.requests_total,
            "max_top": self.max_top,
            "by_endpoint": dict(self.by_endpoint),
            "by_status": {
                ("dropped" if k is None else str(k)): v for k, v in self.by_status.items()
            },
            "requests": [r.to_dict() for r in self.requests],
        }


@dataclass(slots=True)
class View:
    """One ordering/filtering of a listing: item objects and their JSON, position for position."""

    version: int
    items: list[dict[str, Any]]
    frags: list[bytes]


@dataclass(slots=True)
class _Token:
    client_id: str
    expires_at: float


def check_pbx_name(name: object) -> str:
    if name == "":
        return ""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name in _RESERVED:
        raise ValueError(
            f"invalid PBX name {name!r}: use letters, digits, '.', '_', '~', '-' "
            "(starting with a letter or digit; not 'connect' or 'xapi'), or '' for the root"
        )
    return name


class Pbx:
    """One simulated 3CX V20 PBX.

    ``scripts`` is a number of generated names (deterministic from ``seed``) or the names
    themselves. With ``states`` every item also carries ``"State": "Connected"``.
    ``settings`` overrides fields of the generated failover settings.
    """

    def __init__(
        self,
        name: str = "",
        *,
        scripts: int | Iterable[str] = 20,
        seed: int = 0,
        states: bool = False,
        settings: Mapping[str, Any] | None = None,
        client_id: str = "auditor",
        client_secret: str = "secret",  # noqa: S107 - the simulator's documented demo secret
        token_lifetime: float = 3600.0,
        max_top: int = 100,
        page_default: int = 100,
        history: int = 1000,
        clock: Clock = time.monotonic,
    ) -> None:
        self.name = check_pbx_name(name)
        if token_lifetime < 0:
            raise ValueError("token_lifetime cannot be negative")
        if max_top < 1 or page_default < 1:
            raise ValueError("max_top and page_default must be at least 1")
        self.seed = seed
        self.states = states
        self.token_lifetime = float(token_lifetime)
        self.max_top = max_top
        self.page_default = page_default
        self.clock = clock
        self.stats = Stats(history)
        self.down = False
        self.down_mode: DownMode = "drop"
        self.faults: list[Fault] = []
        self.version = 0
        self._fault_ids = 0
        self._shift_ids = 0
        self._clients: dict[str, str] = {}
        self._tokens: dict[str, _Token] = {}
        self._live: dict[str, str] = {}
        self._names: list[str] = []
        self._rows: list[dict[str, Any]] = []
        self._frags: list[bytes] = []
        self._by_name: dict[str, dict[str, Any]] = {}
        self._views: dict[tuple[str | None, str | None, tuple[tuple[str, bool], ...]], View] = {}

        self.set_credentials(client_id, client_secret)
        filenames = (
            generate_filenames(scripts, seed)
            if isinstance(scripts, int)
            else [check_filename(f) for f in scripts]
        )
        if len(set(filenames)) != len(filenames):
            raise DuplicateError("the script names are not unique")
        for filename in sorted(filenames):
            row = self._new_row(filename, None)
            self._names.append(filename)
            self._rows.append(row)
            self._frags.append(_encode(row))
            self._by_name[filename] = row
        self._settings = generate_settings(filenames, seed)
        if settings:
            self._settings.update(check_settings(settings))

    def __repr__(self) -> str:
        return f"Pbx({self.name!r}, scripts={len(self._names)})"

    @property
    def control_name(self) -> str:
        """The name in control API paths (``-`` for the root PBX)."""
        return self.name or ROOT_CONTROL_NAME

    # -- the listing ---------------------------------------------------------------------

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

    def add_script(self, filename: str, *, state: str | None = None) -> None:
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

    def remove_script(self, filename: str) -> None:
        """Remove a script (KeyError if there is none). Settings naming it are left as they are."""
        if filename not in self._by_name:
            raise KeyError(filename)
        self._remove_at(bisect.bisect_left(self._names, filename))

    def rename_script(self, filename: str, new_name: str) -> None:
        """Rename a script, keeping its State. Settings naming the old name are not updated,
        as on a real PBX where the file was renamed behind the failover configuration."""
        check_filename(new_name)
        if filename not in self._by_name:
            raise KeyError(filename)
        if new_name in self._by_name:
            raise DuplicateError(f"script {new_name!r} already exists")
        state = self._by_name[filename].get("State")
        self.remove_script(filename)
        self.add_script(new_name)
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
                self.add_script(name)
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

    # -- settings ------------------------------------------------------------------------

    @property
    def settings(self) -> dict[str, Any]:
        """A copy of the failover settings."""
        return dict(self._settings)

    def update_settings(self, changes: Mapping[str, Any] | None = None, /, **fields: Any) -> None:
        """Replace some settings fields: ``pbx.update_settings(Mode="Passive")``."""
        merged = {**(changes or {}), **fields}
        self._settings.update(check_settings(merged))

    # -- credentials and tokens ----------------------------------------------------------

    @property
    def client_ids(self) -> list[str]:
        return list(self._clients)

    def set_credentials(self, client_id: str, client_secret: str) -> None:
        """Make ``client_id``/``client_secret`` the only valid credentials; revokes every token."""
        self._clients.clear()
        self.add_client(client_id, client_secret)
        self.expire_tokens()

    def add_client(self, client_id: str, client_secret: str) -> None:
        """Accept one more client (or a new secret for one, revoking its token)."""
        if not isinstance(client_id, str) or not client_id:
            raise ValueError("client_id must be a non-empty string")
        if not isinstance(client_secret, str) or not client_secret:
            raise ValueError("client_secret must be a non-empty string")
        self._clients[client_id] = client_secret
        self.expire_tokens(client_id)

    def check_client(self, client_id: str, client_secret: str) -> bool:
        expected = self._clients.get(client_id)
        return expected is not None and hmac.compare_digest(
            expected.encode(), client_secret.encode()
        )

    def issue_token(self, client_id: str | None = None) -> str:
        """Mint the one live token of a client (default: the first), replacing its previous one."""
        client = client_id if client_id is not None else next(iter(self._clients))
        if client not in self._clients:
            raise KeyError(client)
        self.expire_tokens(client)
        token = secrets.token_urlsafe(32)
        self._tokens[token] = _Token(client, self.clock() + self.token_lifetime)
        self._live[client] = token
        self.stats.tokens_issued += 1
        return token

    def token_state(self, token: str) -> TokenState:
        entry = self._tokens.get(token)
        if entry is None:
            return "invalid"
        if self.clock() >= entry.expires_at:
            self._drop_token(token)
            return "expired"
        return "ok"

    def live_token(self, client_id: str | None = None) -> str | None:
        """The live token of a client (default: the first), if it has one that has not expired."""
        client = client_id if client_id is not None else next(iter(self._clients), "")
        token = self._live.get(client)
        return token if token is not None and self.token_state(token) == "ok" else None

    def expire_tokens(self, client_id: str | None = None) -> None:
        """Invalidate the live token of one client, or of every client."""
        clients = list(self._live) if client_id is None else [client_id]
        for client in clients:
            token = self._live.get(client)
            if token is not None:
                self._drop_token(token)

    def revoke_token(self, token: str) -> None:
        if token in self._tokens:
            self._drop_token(token)

    def _drop_token(self, token: str) -> None:
        entry = self._tokens.pop(token)
        if self._live.get(entry.client_id) == token:
            del self._live[entry.client_id]

    # -- availability and faults ---------------------------------------------------------

    def set_down(self, down: bool = True, *, mode: DownMode = "drop") -> None:
        """Take the PBX off the air: ``drop`` closes every connection unanswered (the nearest
        an in-process server gets to "connection refused"), ``status`` answers 503."""
        if mode not in ("drop", "status"):
            raise ValueError("mode must be 'drop' or 'status'")
        self.down = bool(down)
        self.down_mode = mode

    def add_fault(self, fault: Fault | str, **options: Any) -> Fault:
        """Add a fault rule: ``pbx.add_fault("status", endpoint="scripts", skip=100, status=503,
        times=1)`` or ``pbx.add_fault(Fault(...))``. Returns the rule (with its ``id``)."""
        if isinstance(fault, str):
            fault = Fault.from_dict({"action": fault, **options})
        elif options:
            raise TypeError("options go into the Fault when one is given")
        self._fault_ids += 1
        fault.id = self._fault_ids
        self.faults.append(fault)
        return fault

    def remove_fault(self, fault_id: int) -> None:
        for at, fault in enumerate(self.faults):
            if fault.id == fault_id:
                del self.faults[at]
                return
        raise KeyError(fault_id)

    def clear_faults(self) -> None:
        self.faults.clear()

    def summary(self) -> dict[str, Any]:
        """What the control API shows of this PBX (never a secret or a token)."""
        return {
            "name": self.name,
            "control_name": self.control_name,
            "path": f"/{self.name}" if self.name else "",
            "scripts": len(self._names),
            "seed": self.seed,
            "states": self.states,
            "down": self.down,
            "down_mode": self.down_mode,
            "clients": self.client_ids,
            "token_lifetime": self.token_lifetime,
            "max_top": self.max_top,
            "page_default": self.page_default,
            "faults": [f.to_dict() for f in self.faults],
            "version": self.version,
        }


class Simulator:
    """The PBXs one server answers for, each under ``/{name}`` (the one named "" at the root).

    ``clock``, when given, is used by every PBX added (for token expiry).
    """

    def __init__(self, pbxs: Iterable[Pbx] = (), *, clock: Clock | None = None) -> None:
        self.clock = clock
        self._pbxs: dict[str, Pbx] = {}
        for pbx in pbxs:
            self.add(pbx)

    @classmethod
    def fleet(
        cls,
        count: int,
        *,
        prefix: str = "pbx",
        seed: int = 0,
        clock: Clock | None = None,
        **options: Any,
    ) -> Simulator:
        """``count`` PBXs named ``{prefix}-0001`` ... with seeds ``seed+1`` ...; ``options`` go
        to every :class:`Pbx` (``scripts=``, ``states=``, ``client_secret=`` ...)."""
        width = max(4, len(str(count)))
        return cls(
            (
                Pbx(f"{prefix}-{number:0{width}d}", seed=seed + number, **options)
                for number in range(1, count + 1)
            ),
            clock=clock,
        )

    def add(self, pbx: Pbx) -> Pbx:
        if pbx.name in self._pbxs:
            raise DuplicateError(f"a PBX named {pbx.name!r} is already served")
        if self.clock is not None:
            pbx.clock = self.clock
        self._pbxs[pbx.name] = pbx
        return pbx

    def create(self, name: str = "", **options: Any) -> Pbx:
        """``sim.create("hq", scripts=50)`` is ``sim.add(Pbx("hq", scripts=50))``."""
        return self.add(Pbx(name, **options))

    def remove(self, name: str) -> Pbx:
        return self._pbxs.pop(name)

    def get(self, name: str) -> Pbx | None:
        return self._pbxs.get(name)

    def __getitem__(self, name: str) -> Pbx:
        return self._pbxs[name]

    def __contains__(self, name: object) -> bool:
        return name in self._pbxs

    def __iter__(self) -> Iterator[Pbx]:
        return iter(list(self._pbxs.values()))

    def __len__(self) -> int:
        return len(self._pbxs)

    @property
    def names(self) -> list[str]:
        return list(self._pbxs)


def pbx_url(base_url: str, name: str) -> str:
    """The URL a client is configured with for one PBX: ``http://127.0.0.1:PORT/hq``."""
    base = base_url.rstrip("/")
    return f"{base}/{name}" if name else base


def _sort_key(field: str) -> Callable[[Mapping[str, Any]], tuple[bool, str]]:
    # Items without the field (null) sort first, as OData orders nulls.
    def key(row: Mapping[str, Any]) -> tuple[bool, str]:
        value = row.get(field)
        return (value is not None, str(value) if value is not None else "")

    return key


def _encode(row: Mapping[str, Any]) -> bytes:
    return json.dumps(row, ensure_ascii=False, separators=(",", ":")).encode()
