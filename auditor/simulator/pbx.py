"""The simulated PBXs: one :class:`Pbx` (its scripts, settings, clients and tokens, faults and
request statistics) and the :class:`Simulator` that serves many of them.

A :class:`Pbx` puts together the parts that live in their own modules (the script listing
in :mod:`~auditor.simulator.scripts`, the OAuth clients and tokens in
:mod:`~auditor.simulator.tokens`, the counters in :mod:`~auditor.simulator.stats`) behind
one Python API, and holds the failover settings, the availability and the fault rules.

Everything here is plain synchronous Python driven from one event loop: the HTTP handlers
and a test script share the same objects, so a mutation made between two requests is seen
by the next one. Not thread-safe: mutate from the loop that serves the simulator. Does no
I/O and knows nothing of HTTP (the handlers in :mod:`~auditor.simulator.app` use this).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any, Literal

from auditor.simulator.backups import BackupStore
from auditor.simulator.data import (
    DuplicateError,
    check_filename,
    check_settings,
    generate_filenames,
    generate_settings,
)
from auditor.simulator.faults import Fault
from auditor.simulator.scripts import HEALTHY_STATE, ScriptListing, View
from auditor.simulator.stats import RequestRecord, Stats
from auditor.simulator.tokens import Credentials, TokenState

__all__ = [
    "HEALTHY_STATE",
    "ROOT_CONTROL_NAME",
    "Clock",
    "DownMode",
    "DuplicateError",
    "ManualClock",
    "Pbx",
    "RequestRecord",
    "Simulator",
    "Stats",
    "TokenState",
    "View",
    "check_pbx_name",
    "pbx_url",
]

Clock = Callable[[], float]
DownMode = Literal["drop", "status"]

ROOT_CONTROL_NAME = "-"
"""How the control API names the PBX mounted at the root (whose name is "")."""

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._~-]{0,63}")
_RESERVED = frozenset({"connect", "xapi"})


class ManualClock:
    """A clock for token expiry that only moves when told to: ``clock.advance(3601)``."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


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
    ``settings`` overrides fields of the generated failover settings. ``backups`` holds its
    backups, backup settings and repository (``backup_start``: the UTC date at clock 0).
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
        backup_start: datetime | None = None,
    ) -> None:
        self.name = check_pbx_name(name)
        if token_lifetime < 0:
            raise ValueError("token_lifetime cannot be negative")
        if max_top < 1 or page_default < 1:
            raise ValueError("max_top and page_default must be at least 1")
        self.seed = seed
        self.token_lifetime = float(token_lifetime)
        self.max_top = max_top
        self.page_default = page_default
        self.clock = clock
        self.stats = Stats(history)
        self.down = False
        self.down_mode: DownMode = "drop"
        self.faults: list[Fault] = []
        self._fault_ids = 0
        self.credentials = Credentials()

        self.set_credentials(client_id, client_secret)
        filenames = (
            generate_filenames(scripts, seed)
            if isinstance(scripts, int)
            else [check_filename(f) for f in scripts]
        )
        self.scripts = ScriptListing(filenames, states=states)
        self._settings = generate_settings(filenames, seed)
        if settings:
            self._settings.update(check_settings(settings))
        self.backups = BackupStore(seed, lambda: self.clock(), start=backup_start)

    def __repr__(self) -> str:
        return f"Pbx({self.name!r}, scripts={len(self.scripts)})"

    @property
    def control_name(self) -> str:
        """The name in control API paths (``-`` for the root PBX)."""
        return self.name or ROOT_CONTROL_NAME

    # -- the listing (kept in self.scripts) ----------------------------------------------

    @property
    def states(self) -> bool:
        """Whether a new script carries ``"State": "Connected"`` unless told otherwise."""
        return self.scripts.states

    @states.setter
    def states(self, value: bool) -> None:
        self.scripts.states = value

    @property
    def version(self) -> int:
        """Grows with every change of the listing."""
        return self.scripts.version

    def __len__(self) -> int:
        return len(self.scripts)

    def __contains__(self, filename: object) -> bool:
        return filename in self.scripts

    @property
    def filenames(self) -> list[str]:
        """The script names in listing order (by Filename)."""
        return self.scripts.filenames

    def items(self) -> list[dict[str, Any]]:
        """Copies of the listing's items, in listing order."""
        return self.scripts.items()

    def item(self, filename: str) -> dict[str, Any]:
        return self.scripts.item(filename)

    def add_script(self, filename: str, *, state: str | None = None) -> None:
        """Add a script; ``state`` sets its State (default: Connected when ``states`` is on)."""
        self.scripts.add(filename, state=state)

    def remove_script(self, filename: str) -> None:
        """Remove a script (KeyError if there is none). Settings naming it are left as they are."""
        self.scripts.remove(filename)

    def rename_script(self, filename: str, new_name: str) -> None:
        """Rename a script, keeping its State. Settings naming the old name are not updated,
        as on a real PBX where the file was renamed behind the failover configuration."""
        self.scripts.rename(filename, new_name)

    def set_state(self, filename: str, state: str | None) -> None:
        """Set an item's State; None removes the field. Works with ``states`` off too."""
        self.scripts.set_state(filename, state)

    def shift(self, skip: int, count: int, endpoint: str = "scripts") -> list[str]:
        """See :meth:`ScriptListing.shift <auditor.simulator.scripts.ScriptListing.shift>` (and
        :meth:`BackupStore.shift <auditor.simulator.backups.BackupStore.shift>` for backups)."""
        if endpoint == "backups":
            return self.backups.shift(count)
        return self.scripts.shift(skip, count)

    def view(
        self,
        filter_text: str | None = None,
        search: str | None = None,
        orderby: tuple[tuple[str, bool], ...] = (),
    ) -> View:
        """The listing as a query sees it (cached until the next change of the listing).

        Raises :class:`~auditor.simulator.query.ODataQueryError` for a refused filter/search.
        """
        return self.scripts.view(filter_text, search, orderby)

    # -- settings ------------------------------------------------------------------------

    @property
    def settings(self) -> dict[str, Any]:
        """A copy of the failover settings."""
        return dict(self._settings)

    def update_settings(self, changes: Mapping[str, Any] | None = None, /, **fields: Any) -> None:
        """Replace some settings fields: ``pbx.update_settings(Mode="Passive")``."""
        merged = {**(changes or {}), **fields}
        self._settings.update(check_settings(merged))

    # -- credentials and tokens (kept in self.credentials) -------------------------------

    @property
    def client_ids(self) -> list[str]:
        return self.credentials.client_ids

    def set_credentials(self, client_id: str, client_secret: str) -> None:
        """Make ``client_id``/``client_secret`` the only valid credentials; revokes every token."""
        self.credentials.replace(client_id, client_secret)

    def add_client(self, client_id: str, client_secret: str) -> None:
        """Accept one more client (or a new secret for one, revoking its token)."""
        self.credentials.add(client_id, client_secret)

    def check_client(self, client_id: str, client_secret: str) -> bool:
        return self.credentials.check(client_id, client_secret)

    def issue_token(self, client_id: str | None = None) -> str:
        """Mint the one live token of a client (default: the first), replacing its previous one."""
        token = self.credentials.issue(client_id, now=self.clock(), lifetime=self.token_lifetime)
        self.stats.tokens_issued += 1
        return token

    def token_state(self, token: str) -> TokenState:
        return self.credentials.state(token, now=self.clock())

    def live_token(self, client_id: str | None = None) -> str | None:
        """The live token of a client (default: the first), if it has one that has not expired."""
        return self.credentials.live(client_id, now=self.clock())

    def expire_tokens(self, client_id: str | None = None) -> None:
        """Invalidate the live token of one client, or of every client."""
        self.credentials.expire(client_id)

    def revoke_token(self, token: str) -> None:
        self.credentials.revoke(token)

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
            "scripts": len(self.scripts),
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
            "backups": len(self.backups),
            "backup_job_running": self.backups.running,
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
