"""What the daemon tells systemd: sd_notify(3) datagrams and the watchdog's pings.

``READY=1``, ``WATCHDOG=1``, ``STATUS=`` and ``STOPPING=1`` go to ``$NOTIFY_SOCKET``
without libsystemd. This module only sends: it never decides what the status says nor
when the daemon is ready or stopping, and never touches the store or the scheduler.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Mapping

import structlog

log = structlog.get_logger("auditor.service")


class Notifier:
    """sd_notify(3) without libsystemd: datagrams to ``$NOTIFY_SOCKET``; a no-op without it.

    ``@name`` is a socket in the abstract namespace. ``watchdog_interval`` is half of
    ``$WATCHDOG_USEC`` when that is set (and ``$WATCHDOG_PID``, if set, is this process).
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        path = env.get("NOTIFY_SOCKET", "")
        self._address: str | bytes | None = None
        if path.startswith("@"):
            self._address = b"\0" + path[1:].encode()
        elif path.startswith("/"):
            self._address = path
        self._socket: socket.socket | None = None
        self._warned = False
        self.watchdog_interval: float | None = None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_interval = int(usec) / 2 / 1_000_000

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def send(self, *fields: str) -> None:
        """Send ``KEY=value`` fields in one datagram; failures are logged once, never raised."""
        if self._address is None:
            return
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._socket.setblocking(False)
            self._socket.sendto("\n".join(fields).encode(), self._address)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning("service.notify_failed", error=exc.strerror or str(exc))

    def status(self, text: str) -> None:
        self.send(f"STATUS={text}")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


async def watchdog(notify: Notifier, interval: float) -> None:
    """Ping systemd's watchdog every ``interval`` seconds, until cancelled."""
    # From the event loop itself: a blocked loop stops the pings and systemd restarts us.
    while True:
        notify.send("WATCHDOG=1")
        await asyncio.sleep(interval)


__all__ = ["Notifier", "watchdog"]
