"""What the XAPI client hands back: one page, a listing proved complete, a settings answer.

Frozen data and :func:`answer_digest`; no I/O, no HTTP, no parsing of answers (that is
:mod:`auditor.xapi.paging`'s and the client's job).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from auditor.model import JSON


@dataclass(frozen=True, slots=True)
class Page:
    """One answer of a paged collection such as ``GetFailoverScripts()``."""

    items: tuple[JSON, ...]
    count: int | None
    top: int | None
    skip: int
    # The answer exactly as received, for :func:`answer_digest`.
    body: bytes = field(default=b"", repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class Listing:
    """Every item of a paged collection (the failover scripts of a PBX), proved complete.

    ``reported_count`` is the PBX's ``@odata.count`` (None when the PBX did not send one);
    ``relists`` how many times the listing had to start over because it shifted;
    ``digest`` the :func:`answer_digest` of the pages that made the listing.
    """

    items: tuple[JSON, ...]
    pages: int
    reported_count: int | None
    relists: int
    top: int
    digest: str = ""


@dataclass(frozen=True, slots=True)
class SettingsAnswer:
    """``GetBackupFailoverSettings()``: the object (OData annotations removed) and the
    :func:`answer_digest` of the answer."""

    value: JSON
    digest: str


def answer_digest(bodies: Iterable[bytes]) -> str:
    """SHA-256 (hex) over answers exactly as the PBX sent them, each prefixed by its length.

    Equal digests mean byte-identical answers, hence identical parsed contents: an audit
    can tell that nothing changed without looking at a single item.
    """
    digest = hashlib.sha256()
    for body in bodies:
        digest.update(len(body).to_bytes(8, "big"))
        digest.update(body)
    return digest.hexdigest()
