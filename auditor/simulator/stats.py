"""What a simulated PBX saw: one :class:`RequestRecord` per request and the :class:`Stats`.

Plain counters and a bounded history of requests, filled by the HTTP handlers and read by
tests, benchmarks and the control API. Does no I/O and knows nothing of HTTP or of the data
a PBX holds; a record keeps a request's method, path and query, never its headers or body.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass
from typing import Any


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
    request carried (None before the first one), refused values included. ``in_flight`` is
    how many requests are being answered now, ``max_in_flight`` the most there ever were at
    once (an auditor sends one at a time; more means two audits of this PBX overlapped).
    """

    __slots__ = (
        "by_endpoint",
        "by_status",
        "failed_logins",
        "in_flight",
        "logins",
        "max_in_flight",
        "max_top",
        "requests",
        "requests_total",
        "tokens_issued",
    )

    def __init__(self, history: int = 1000) -> None:
        self.requests: deque[RequestRecord] = deque(maxlen=history)
        self.in_flight = 0
        self.reset()

    def reset(self) -> None:
        self.logins = 0
        self.tokens_issued = 0
        self.failed_logins = 0
        self.requests_total = 0
        self.max_top: int | None = None
        self.max_in_flight = self.in_flight
        self.by_endpoint: Counter[str] = Counter()
        self.by_status: Counter[int | None] = Counter()
        self.requests.clear()

    def record(self, record: RequestRecord) -> None:
        self.requests_total += 1
        self.by_endpoint[record.endpoint] += 1
        self.by_status[record.status] += 1
        if self.requests.maxlen:
            self.requests.append(record)

    def enter(self) -> None:
        """A request is being answered (until :meth:`leave`)."""
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def leave(self) -> None:
        self.in_flight -= 1

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
            "max_in_flight": self.max_in_flight,
            "by_endpoint": dict(self.by_endpoint),
            "by_status": {
                ("dropped" if k is None else str(k)): v for k, v in self.by_status.items()
            },
            "requests": [r.to_dict() for r in self.requests],
        }
