"""The collections audited on a PBX, declared once: where each lives in the XAPI, whether it
is paged and by which key, what of it is never stored, and whether its changes alert.

Every part of the auditor that needs to know about a collection (the config's
``collections = [...]``, the client, the audit, the alerts) reads :data:`COLLECTIONS`; adding
one is adding an entry here (and its alert kinds in the lifecycle).

What is never stored: fields in ``never_store`` (``DownloadLink``, a capability URL) are
dropped from an item before it becomes part of a snapshot, so no record, log, export or
alert can hold them. Every object carrying a ``Concealed`` flag (3CX's
``Pbx.ConcealedPassword`` ``{Concealed, Value}`` and ``Pbx.ConcealedDataFile``
``{Concealed, Name, Contents}``; a PBX may send the value masked or in clear) has its
``Value``/``Contents`` replaced by :func:`conceal`: ``hmac-sha256:<hex>`` with the
configured digest key, so a changed password is a recorded change without the password, or,
without a key, only ``"set"`` (a changed password then goes unseen; set/unset does not).

Pure data and functions; no I/O, no HTTP, no configuration reading.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from auditor.model import SCRIPT_KEY_FIELD, SCRIPTS, SETTINGS, SETTINGS_KEY

BACKUPS = "backups"
BACKUP_SETTINGS = "backup_settings"
BACKUP_REPOSITORY = "backup_repository"
BACKUP_KEY_FIELD = "FileName"
EXTRAS_FIELD = "Extras"
"""Where a backup's ``GetBackupExtras`` answer is kept inside its item."""

CONCEALED_FLAG = "Concealed"
CONCEALED_VALUES = ("Value", "Contents")
DIGEST_PREFIX = "hmac-sha256:"
SET_WITHOUT_KEY = "set"


@dataclass(frozen=True, slots=True)
class Collection:
    """One thing audited on a PBX.

    ``path``: below the XAPI root. ``key``: the key field of a paged collection's items
    (None: a single object, recorded under ``single_key``). ``alerts``: whether a change
    raises a change alert by default (the history records it either way). ``extras_path``:
    a per-item function read once per new item (``{key}`` is the item's key as an OData
    string literal).
    """

    name: str
    path: str
    key: str | None
    alerts: bool
    never_store: tuple[str, ...] = ()
    extras_path: str | None = None
    single_key: str = SETTINGS_KEY

    @property
    def paged(self) -> bool:
        return self.key is not None


COLLECTIONS: tuple[Collection, ...] = (
    Collection(SCRIPTS, "/xapi/v1/Backups/Pbx.GetFailoverScripts()", SCRIPT_KEY_FIELD, True),
    Collection(SETTINGS, "/xapi/v1/Backups/Pbx.GetBackupFailoverSettings()", None, True),
    Collection(
        BACKUPS,
        "/xapi/v1/Backups",
        BACKUP_KEY_FIELD,
        False,
        never_store=("DownloadLink",),
        extras_path="/xapi/v1/Backups({key})/Pbx.GetBackupExtras()",
    ),
    Collection(BACKUP_SETTINGS, "/xapi/v1/Backups/Pbx.GetBackupSettings()", None, True),
    Collection(BACKUP_REPOSITORY, "/xapi/v1/Backups/Pbx.GetBackupRepositorySettings()", None, True),
)
BY_NAME: Mapping[str, Collection] = {c.name: c for c in COLLECTIONS}
NAMES: tuple[str, ...] = tuple(BY_NAME)


def collection(name: str) -> Collection:
    """The entry named ``name`` (KeyError naming the known ones)."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown collection {name!r}; known: {', '.join(NAMES)}") from None


def unknown_names(names: object) -> list[str]:
    """The names in ``names`` that are not collections (for the config's check)."""
    if not isinstance(names, list | tuple):
        return []
    return [str(n) for n in names if n not in BY_NAME]


def odata_key(value: str) -> str:
    """``value`` as an OData string literal for a key segment: ``'a''b.zip'``."""
    return "'" + value.replace("'", "''") + "'"


def conceal(value: Any, key: bytes | None) -> str | None:
    """What is stored of a concealed value: None stays None (unset); otherwise the keyed
    digest of its text, or ``"set"`` without a key."""
    if value is None or value == "":
        return None
    if key is None:
        return SET_WITHOUT_KEY
    text = value if isinstance(value, str) else repr(value)
    return DIGEST_PREFIX + hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def storable(
    entry: Collection, body: Mapping[str, Any], digest_key: bytes | None
) -> dict[str, Any]:
    """``body`` as it may be stored: ``never_store`` fields dropped, concealed values digested
    (at any depth), OData annotations removed. Never keeps a secret of the PBX."""
    return {
        k: _scrubbed(v, digest_key)
        for k, v in body.items()
        if k not in entry.never_store and not k.startswith("@odata.")
    }


def _scrubbed(value: Any, digest_key: bytes | None) -> Any:
    if isinstance(value, list):
        return [_scrubbed(v, digest_key) for v in value]
    if not isinstance(value, Mapping):
        return value
    concealed = CONCEALED_FLAG in value
    return {
        k: conceal(v, digest_key)
        if concealed and k in CONCEALED_VALUES
        else _scrubbed(v, digest_key)
        for k, v in value.items()
    }
