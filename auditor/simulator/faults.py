"""Scriptable faults: a rule says which requests it matches and what goes wrong with them.

Matching: ``endpoint`` (``token``, ``scripts``, ``settings``, ``backups``, ``backup_extras``,
``backup_settings``, ``backup_repository``, ``xapi`` = any XAPI route, or ``any``), optionally
``skip`` (then only requests of a listing, scripts or backups, whose ``$skip`` equals it; one
without ``$skip`` counts as 0, so ``skip=0`` is the first page) and ``nth`` (the rule starts
firing at the nth request it matches, 1-based, counted from when the rule was added).
``times`` caps how often it fires (None: forever). Rules are checked in the order they were
added; ``delay``, ``expire_token``, ``shift`` and ``ignore_skip`` do their thing and let
checking go on, any
other action decides the answer and ends checking (later rules are then not consumed, though
every matching rule counts the request towards its ``nth``).

Actions and their options:

=============  ============================================================================
status         answer ``status`` (any code) with an OData error body carrying ``message``
               (default: the reason phrase), plus ``Retry-After: retry_after`` if given
drop           close the connection without an answer (the client sees a disconnect)
truncate       ``mode="length"`` (default): a 200 whose Content-Length promises more than
               is sent before the connection closes; ``mode="cut"``: a complete 200 whose
               body is the JSON cut in half
garbage        a 200 with an HTML page instead of JSON
delay          wait ``seconds`` before answering
expire_token   invalidate the token this request carries (every live token of the PBX for
               a token request) before it is served, so it is answered 401
shift          before serving, insert ``count`` items (``count`` < 0: remove ``-count``)
               that sort before the request's ``$skip``, so offset paging sees a shifted list
ignore_skip    serve the listing as if ``$skip`` were absent (every page is the first one),
               as a PBX or proxy that drops the option would; ``mode="no_count"`` also
               leaves ``@odata.count`` out (``mode="count"``, the default, keeps it)
wrong_types    a 200 of the right shape but wrong types. Listing: ``mode="value"`` (default)
               ``value`` is an object; ``"items"`` items are strings; ``"filename"``
               ``Filename`` is a number; ``"count"`` ``@odata.count`` is a string;
               ``"missing"`` no ``value`` at all. Settings: the body is a list. Token: the
               token is missing and ``expires_in`` is a string.
=============  ============================================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal, get_args

FaultAction = Literal[
    "status",
    "drop",
    "truncate",
    "garbage",
    "delay",
    "expire_token",
    "shift",
    "ignore_skip",
    "wrong_types",
]
FaultEndpoint = Literal[
    "token",
    "scripts",
    "settings",
    "backups",
    "backup_extras",
    "backup_settings",
    "backup_repository",
    "xapi",
    "any",
]
Endpoint = Literal[
    "token",
    "scripts",
    "settings",
    "backups",
    "backup_extras",
    "backup_settings",
    "backup_repository",
    "xapi",
    "other",
]
LISTINGS = frozenset({"scripts", "backups"})
"""The paged endpoints (a rule's ``skip`` and ``shift`` apply to these)."""

ACTIONS: tuple[str, ...] = get_args(FaultAction)
ENDPOINTS: tuple[str, ...] = get_args(FaultEndpoint)
PASS_THROUGH: frozenset[str] = frozenset({"delay", "expire_token", "shift", "ignore_skip"})
"""Actions after which the request goes on (to later rules and to the normal answer)."""

MODES: dict[str, tuple[str, ...]] = {
    "truncate": ("length", "cut"),
    "ignore_skip": ("count", "no_count"),
    "wrong_types": ("value", "items", "filename", "count", "missing"),
}


@dataclass(eq=False)
class Fault:
    """One fault rule. ``id``, ``seen`` and ``fired`` are kept by the simulator."""

    action: FaultAction
    endpoint: FaultEndpoint = "any"
    skip: int | None = None
    nth: int | None = None
    times: int | None = None
    status: int = 503
    message: str | None = None
    retry_after: int | str | None = None
    seconds: float = 1.0
    count: int = 1
    mode: str | None = None
    id: int = field(default=0, init=False)
    seen: int = field(default=0, init=False)
    fired: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"unknown fault action {self.action!r}; known: {', '.join(ACTIONS)}")
        if self.endpoint not in ENDPOINTS:
            raise ValueError(
                f"unknown fault endpoint {self.endpoint!r}; known: {', '.join(ENDPOINTS)}"
            )
        _check_int("skip", self.skip, minimum=0, optional=True)
        _check_int("nth", self.nth, minimum=1, optional=True)
        _check_int("times", self.times, minimum=1, optional=True)
        _check_int("status", self.status, minimum=200)
        if self.status > 599:
            raise ValueError("status must be an HTTP status code (200..599)")
        _check_int("count", self.count)
        if self.count == 0:
            raise ValueError("count must not be 0 (positive inserts, negative removes)")
        if isinstance(self.seconds, bool) or not isinstance(self.seconds, int | float):
            raise ValueError("seconds must be a number")
        if not 0 <= self.seconds <= 3600:
            raise ValueError("seconds must be between 0 and 3600")
        if self.message is not None and not isinstance(self.message, str):
            raise ValueError("message must be a string")
        if self.retry_after is not None:
            if isinstance(self.retry_after, bool) or not isinstance(self.retry_after, int | str):
                raise ValueError("retry_after must be whole seconds or an HTTP date string")
            if isinstance(self.retry_after, int) and self.retry_after < 0:
                raise ValueError("retry_after cannot be negative")
        allowed = MODES.get(self.action)
        if self.mode is not None and (allowed is None or self.mode not in allowed):
            known = ", ".join(allowed) if allowed else "none"
            raise ValueError(
                f"mode {self.mode!r} does not fit action {self.action}; known: {known}"
            )

    @property
    def remaining(self) -> int | None:
        """How many more times the rule fires (None: forever)."""
        return None if self.times is None else max(0, self.times - self.fired)

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.fired >= self.times

    def watches(self, endpoint: Endpoint, skip: int) -> bool:
        """Whether a request to ``endpoint`` at ``skip`` is one this rule counts."""
        if self.endpoint != "any":
            if self.endpoint == "xapi":
                if endpoint in ("token", "other"):
                    return False
            elif self.endpoint != endpoint:
                return False
        if self.skip is None:
            return True
        return endpoint in LISTINGS and self.skip == skip

    def observe(self, endpoint: Endpoint, skip: int) -> bool:
        """Count a request this rule watches; True when the rule is due to fire for it."""
        if self.exhausted or not self.watches(endpoint, skip):
            return False
        self.seen += 1
        return self.nth is None or self.seen >= self.nth

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["remaining"] = self.remaining
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Fault:
        """Build a rule from JSON (the control API); unknown keys are refused."""
        settable = {f.name for f in fields(cls) if f.init}
        unknown = sorted(set(data) - settable)
        if unknown:
            known = ", ".join(sorted(settable))
            raise ValueError(f"unknown fault option(s) {', '.join(unknown)}; known: {known}")
        if "action" not in data:
            raise ValueError("a fault needs an action")
        return cls(**data)


def _check_int(
    name: str, value: object, *, minimum: int | None = None, optional: bool = False
) -> None:
    if value is None and optional:
        return
    if type(value) is not int:
        raise ValueError(f"{name} must be an integer")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be at least {minimum}")
