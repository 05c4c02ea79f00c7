"""The backups of one simulated PBX: ``GET /Backups``, ``GetBackupExtras``, the backup settings
and the backup repository, with the fields of the real spec (tag ``Backups``) and no others.

Backups are deterministic: a daily backup at the schedule's ``Time`` (UTC), kept ``Rotation``
deep, made while the schedule is enabled and the backup job is running. Time is the PBX's
clock (``clock()`` seconds, as for token expiry) mapped onto a UTC date: ``start`` is the date
at clock 0; without it, the real date when the backups are first looked at. Advancing a
:class:`~auditor.simulator.pbx.ManualClock` by a day makes the next backup.

Each backup carries a ``DownloadLink`` capability URL with a random token (a secret the
auditor must never store). The repository's passwords/data files are sent in clear unless
``conceal`` is on (a real PBX may do either).

Plain synchronous data: does no I/O, knows nothing of HTTP, tokens or faults, and is not
thread-safe (mutate from the loop that serves the simulator).
"""

from __future__ import annotations

import copy
import hashlib
import json
import secrets
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from auditor.simulator.data import DuplicateError

_NAME = "3CXScheduledBackup_%Y-%m-%d_%H%M%S.zip"
PBX_VERSION = "20.0.5.843"
FILE_SYSTEM_TYPES = (
    "Local",
    "Ftp",
    "GoogleDrive",
    "NetworkShare",
    "Logs",
    "Sftp",
    "GoogleBucket",
    "SharePoint",
    "AmazonS3",
)
CONTENTS_FIELDS = (
    "CallHistory",
    "DisableBackupCompression",
    "EncryptBackup",
    "EncryptBackupPassword",
    "FQDN",
    "License",
    "PhoneProvisioning",
    "Prompts",
    "Recordings",
    "VoiceMails",
)
SCHEDULE_FIELDS = ("Day", "RepeatHours", "RepeatMinutes", "ScheduleType", "Time")
SETTINGS_FIELDS = ("Contents", "Rotation", "Schedule", "ScheduleEnabled")
PASSWORD_FIELDS = ("FtpPassword", "NsPassword", "SftpPassword")
DATA_FILE_FIELDS = ("GbJson", "SftpPrivateKey")
LOCATION_FIELDS = (
    "FileSystemType",
    "FtpPassword",
    "FtpPath",
    "FtpUser",
    "FtpValidateCertificate",
    "GbJson",
    "GbPath",
    "LocalPath",
    "NsDomain",
    "NsPassword",
    "NsPath",
    "NsUser",
    "S3Path",
    "SftpHostKeyFingerprint",
    "SftpPassword",
    "SftpPath",
    "SftpPrivateKey",
    "SftpUser",
    "SharePointPath",
)
LOCAL_PATH = "/var/lib/3cxpbx/Instance1/Data/Backups"


class BackupStore:
    """The backups of one PBX, their settings and repository (see the module docstring)."""

    def __init__(
        self,
        seed: int,
        clock: Callable[[], float],
        *,
        start: datetime | None = None,
        rotation: int = 5,
        encrypted: bool = True,
    ) -> None:
        self.seed = seed
        self.clock = clock
        self.start = start
        self._anchor: float = 0.0
        self.running = True
        self.conceal = False
        self.version = 0
        self._rows: dict[str, dict[str, Any]] = {}
        self._extras: dict[str, dict[str, Any]] = {}
        self._made_until: datetime | None = None
        secret = hashlib.sha256(f"backup-secret-{seed}".encode()).hexdigest()[:16]
        self._settings: dict[str, Any] = {
            "Contents": {
                "CallHistory": True,
                "DisableBackupCompression": False,
                "EncryptBackup": encrypted,
                "EncryptBackupPassword": {"Concealed": True, "Value": None},
                "FQDN": True,
                "License": True,
                "PhoneProvisioning": True,
                "Prompts": True,
                "Recordings": False,
                "VoiceMails": True,
            },
            "Rotation": rotation,
            "Schedule": {
                "Day": "Sunday",
                "RepeatHours": None,
                "RepeatMinutes": None,
                "ScheduleType": "Daily",
                "Time": "02:00:00",
            },
            "ScheduleEnabled": True,
        }
        location: dict[str, Any] = dict.fromkeys(LOCATION_FIELDS)
        # Unused credentials come as empty objects (a null would not fit the spec's allOf).
        location.update({key: {"Concealed": False, "Value": None} for key in PASSWORD_FIELDS})
        location.update(
            {key: {"Concealed": False, "Contents": None, "Name": None} for key in DATA_FILE_FIELDS}
        )
        location.update(
            FileSystemType="Sftp",
            SftpPath=f"sftp://backup.example.net:22/pbx-{seed}",
            SftpUser=f"pbx{seed}",
            SftpPassword={"Concealed": False, "Value": f"sftp-pw-{secret}"},
            SftpHostKeyFingerprint=f"SHA256:{secret}",
        )
        self._location = location

    # -- time ----------------------------------------------------------------------------

    def now(self) -> datetime:
        if self.start is None:
            self._anchor = self.clock()
            self.start = datetime.now(UTC).replace(microsecond=0)
        return self.start + timedelta(seconds=self.clock() - self._anchor)

    def _slot(self, day: datetime) -> datetime:
        time_text = str(self._settings["Schedule"]["Time"])[:8]
        hours, minutes, seconds = (int(part) for part in time_text.split(":"))
        return day.replace(hour=hours, minute=minutes, second=seconds, microsecond=0)

    def catch_up(self) -> None:
        """Make the backups whose time has come since the last look, then rotate."""
        now = self.now()
        rotation = max(int(self._settings.get("Rotation") or 1), 1)
        making = self.running and bool(self._settings.get("ScheduleEnabled"))
        first = now - timedelta(days=rotation) if self._made_until is None else self._made_until
        day = first.replace(hour=0, minute=0, second=0, microsecond=0)
        made = False
        while making and day <= now:
            slot = self._slot(day)
            if first < slot <= now and slot.strftime(_NAME) not in self._rows:
                self._make(slot)
                made = True
            day += timedelta(days=1)
        self._made_until = now
        if made:
            self._rotate(rotation)

    def _make(self, when: datetime, size: int | None = None) -> str:
        name = when.strftime(_NAME)
        if name in self._rows:
            raise DuplicateError(f"backup {name!r} already exists")
        digest = hashlib.sha256(f"{self.seed}/{name}".encode()).digest()
        if size is None:
            size = 40_000_000 + int.from_bytes(digest[:3], "big") * 4
        self._rows[name] = {
            "CreationTime": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "FileName": name,
            "Size": size,
            "_token": secrets.token_urlsafe(24),
        }
        self._extras[name] = {
            "Footprint": size * 3,
            "IsEncrypted": bool(self._settings["Contents"].get("EncryptBackup")),
            "Version": PBX_VERSION,
        }
        self.version += 1
        return name

    def _rotate(self, rotation: int) -> None:
        for name in sorted(self._rows)[: max(len(self._rows) - rotation, 0)]:
            self.remove(name)

    # -- the listing ---------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def filenames(self) -> list[str]:
        return sorted(self._rows)

    def items(self, link_base: str = "") -> list[dict[str, Any]]:
        """The listing in FileName order, as the PBX sends it (``DownloadLink`` included)."""
        self.catch_up()
        return [self._public(self._rows[name], link_base) for name in sorted(self._rows)]

    def _public(self, row: Mapping[str, Any], link_base: str) -> dict[str, Any]:
        link = f"{link_base}/download/backups/{row['FileName']}?token={row['_token']}"
        return {
            "CreationTime": row["CreationTime"],
            "DownloadLink": link,
            "FileName": row["FileName"],
            "Size": row["Size"],
        }

    def make(self, size: int | None = None) -> dict[str, Any]:
        """Make a backup now (whatever the schedule); returns its listing item."""
        name = self._make(self.now().replace(microsecond=0), size)
        return self._public(self._rows[name], "")

    def remove(self, name: str) -> None:
        del self._rows[name]
        self._extras.pop(name, None)
        self.version += 1

    def change(self, name: str, *, size: int | None = None, encrypted: bool | None = None) -> None:
        """Shrink (or grow) a backup, or say whether it is encrypted."""
        row = self._rows[name]
        if size is not None:
            row["Size"] = size
            self._extras[name]["Footprint"] = size * 3
        if encrypted is not None:
            self._extras[name]["IsEncrypted"] = encrypted
        self.version += 1

    def shift(self, count: int) -> list[str]:
        """Make offset paging see a moved listing: ``count`` > 0 adds backups that sort first,
        ``count`` < 0 removes the oldest ones. Returns the names added or removed."""
        touched: list[str] = []
        if count > 0:
            oldest = min((r["CreationTime"] for r in self._rows.values()), default=None)
            base = self.now() if oldest is None else datetime.fromisoformat(oldest)
            for step in range(1, count + 1):
                touched.append(self._make(base - timedelta(minutes=step)))
        else:
            for name in self.filenames[:-count]:
                self.remove(name)
                touched.append(name)
        return touched

    def extras(self, name: str) -> dict[str, Any]:
        """``GetBackupExtras`` of one backup (KeyError if there is none)."""
        return dict(self._extras[name])

    # -- settings and repository ---------------------------------------------------------

    @property
    def settings(self) -> dict[str, Any]:
        return copy.deepcopy(self._settings)

    def update_settings(self, changes: Mapping[str, Any]) -> None:
        """Replace fields; ``Contents`` and ``Schedule`` are merged field by field."""
        unknown = sorted(set(changes) - set(SETTINGS_FIELDS))
        if unknown:
            raise ValueError(f"unknown backup settings field(s) {', '.join(unknown)}")
        for key, value in changes.items():
            allowed = {"Contents": CONTENTS_FIELDS, "Schedule": SCHEDULE_FIELDS}.get(key)
            if allowed is not None:
                if not isinstance(value, dict) or set(value) - set(allowed):
                    raise ValueError(f"{key} takes an object with fields of {', '.join(allowed)}")
                self._settings[key].update(copy.deepcopy(value))
            else:
                self._settings[key] = value
        self.catch_up()

    def repository(self) -> dict[str, Any]:
        """``{"Location": {...}}`` with concealed fields masked when ``conceal`` is on."""
        location = copy.deepcopy(self._location)
        if self.conceal:
            for key in PASSWORD_FIELDS:
                if isinstance(location.get(key), dict) and location[key].get("Value"):
                    location[key] = {"Concealed": True, "Value": "********"}
            for key in DATA_FILE_FIELDS:
                if isinstance(location.get(key), dict) and location[key].get("Contents"):
                    location[key] = {**location[key], "Concealed": True, "Contents": None}
        return {"Location": location}

    def update_location(self, changes: Mapping[str, Any]) -> None:
        """Replace fields of ``Location`` (``FileSystemType="Local"`` moves it to the PBX)."""
        unknown = sorted(set(changes) - set(LOCATION_FIELDS))
        if unknown:
            raise ValueError(f"unknown Location field(s) {', '.join(unknown)}")
        kind = changes.get("FileSystemType", self._location["FileSystemType"])
        if kind not in FILE_SYSTEM_TYPES:
            raise ValueError(f"FileSystemType must be one of {', '.join(FILE_SYSTEM_TYPES)}")
        self._location.update(copy.deepcopy(dict(changes)))
        if kind == "Local" and not self._location.get("LocalPath"):
            self._location["LocalPath"] = LOCAL_PATH

    def secrets(self) -> list[str]:
        """Every secret value this PBX sends (download tokens, clear passwords), for tests that
        look for leaks."""
        found = [row["_token"] for row in self._rows.values()]
        for key in PASSWORD_FIELDS:
            value = self._location.get(key)
            if isinstance(value, dict) and value.get("Value"):
                found.append(str(value["Value"]))
        for key in DATA_FILE_FIELDS:
            value = self._location.get(key)
            if isinstance(value, dict) and value.get("Contents"):
                found.append(str(value["Contents"]))
        return found


def encode(row: Mapping[str, Any]) -> bytes:
    return json.dumps(row, ensure_ascii=False, separators=(",", ":")).encode()
