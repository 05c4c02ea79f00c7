"""One process per SQLite file: an exclusive ``flock`` on ``<database>.lock``.

SQLite serialises writers itself, but two auditors on one file would audit the same targets
at once and record their changes twice; PostgreSQL has leases for that, SQLite has this.
It never touches the database itself.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from auditor.config import display_url
from auditor.errors import InUseError, StoreError
from auditor.store.engine import driver_url


class SqliteLock:
    """An exclusive ``flock`` on ``<database>.lock``, held while ``run`` or ``once`` works."""

    def __init__(self, fd: int, path: Path) -> None:
        self._fd: int | None = fd
        self.path = path

    @classmethod
    def acquire(cls, url: str) -> SqliteLock | None:
        """Lock the SQLite database of ``url`` (None for other databases); InUseError when
        another process holds it."""
        parsed = driver_url(url)
        if parsed.get_backend_name() != "sqlite" or not parsed.database:
            return None
        path = Path(parsed.database + ".lock")
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StoreError(
                f"database {display_url(url)}: cannot open the lock file {path}: "
                f"{exc.strerror or exc}"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise InUseError(
                f"database: {display_url(url)} is in use by another 3cx-auditor process "
                f"(pid {holder}); SQLite serves one process — use PostgreSQL for replicas"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(fd, path)

    def release(self) -> None:
        # The file stays: removing it would let a third process lock a new file while a
        # second one still waits on the old.
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
