"""structlog set-up: JSON lines for machines, readable lines for people.

* ``json``: one JSON object per line. Under systemd (``$JOURNAL_STREAM`` set) each line starts
  with the ``<N>`` priority prefix that journald understands (sd-daemon(3)), so ``journalctl
  -p warning`` works without a logging library of its own.
* ``console``: structlog's console renderer, chosen by ``auto`` when stderr is a terminal.

Log lines go to stderr. Alerts are written by :func:`alert_logger` as JSON lines on stdout,
whatever the log format, because scripts read them there (``once``).

A last processor drops the value of any key that looks like a credential, so a mistake
elsewhere cannot print one. This module decides how lines look, never what is logged.

Foreign loggers (the standard library's ``logging``: aiohttp, asyncio, APScheduler ...) write
through the same renderer, at warning and above. Their records and exceptions are not ours to
trust: aiohttp's exceptions for a malformed request quote the raw bytes received, a bearer
token included, so an exception raised by aiohttp, and any record of an ``aiohttp`` logger,
is shown by its class (and HTTP status) only, never by its message or traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Any, Literal, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from auditor.model import Alert

LogFormat = Literal["auto", "json", "console"]

_SYSLOG_PRIORITY = {
    "critical": 2,
    "error": 3,
    "warning": 4,
    "warn": 4,
    "info": 6,
    "debug": 7,
}
_SECRET_KEYS = ("secret", "password", "token", "authorization", "api_key")
_REDACTED = "[redacted]"


def redact_secrets(_logger: WrappedLogger, _name: str, event: EventDict) -> EventDict:
    for key in list(event):
        lowered = key.lower()
        if any(word in lowered for word in _SECRET_KEYS) and event[key] is not None:
            event[key] = _REDACTED
    return event


class _JsonRenderer:
    def __init__(self, journald: bool) -> None:
        self._json = structlog.processors.JSONRenderer(sort_keys=False)
        self._journald = journald

    def __call__(self, logger: WrappedLogger, name: str, event: EventDict) -> str:
        level = str(event.get("level", "info"))
        line = self._json(logger, name, event)
        assert isinstance(line, str)
        return f"<{_SYSLOG_PRIORITY.get(level, 6)}>{line}" if self._journald else line


def _from_aiohttp(exc: BaseException | None) -> bool:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if type(exc).__module__.split(".", 1)[0] == "aiohttp":
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def hide_request_data(_logger: WrappedLogger, _name: str, event: EventDict) -> EventDict:
    """An aiohttp exception (or any exception logged by an ``aiohttp`` logger) as its class
    and status only: its message and traceback can quote request headers."""
    exc_info = event.get("exc_info")
    if not exc_info:
        return event
    if exc_info is True:
        exc_info = sys.exc_info()
    exc = exc_info if isinstance(exc_info, BaseException) else exc_info[1]
    record = event.get("_record")
    by_aiohttp = isinstance(record, logging.LogRecord) and record.name.split(".")[0] == "aiohttp"
    if by_aiohttp or _from_aiohttp(exc):
        del event["exc_info"]
        event.pop("stack_info", None)
        if exc is not None:
            event["error"] = type(exc).__name__
            code = getattr(exc, "code", None)
            if isinstance(code, int) and not isinstance(code, bool):
                event["status"] = code
    return event


def _name_foreign(_logger: WrappedLogger, _name: str, event: EventDict) -> EventDict:
    record = event.get("_record")
    if isinstance(record, logging.LogRecord):
        event["logger"] = record.name
    return event


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
        hide_request_data,
        redact_secrets,
    ]


class _ForeignHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler :func:`configure` puts on the root logger (replaced on each call)."""


def _route_foreign_logs(level: str, stream: TextIO, exc: Processor, renderer: Processor) -> None:
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[_name_foreign, *_shared_processors()],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, exc, renderer],
    )
    handler = _ForeignHandler(stream)
    handler.setFormatter(formatter)
    # Warnings and above only: below that, SQLAlchemy's engine logs every statement.
    handler.setLevel(max(logging.WARNING, _level_number(level)))
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _ForeignHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)


def _level_number(level: str) -> int:
    return int(logging.getLevelNamesMapping()[level.upper()])


def under_journald() -> bool:
    return bool(os.environ.get("JOURNAL_STREAM"))


def configure(
    level: str = "info",
    fmt: LogFormat = "auto",
    stream: TextIO | None = None,
) -> None:
    """Configure structlog for the whole process (idempotent)."""
    stream = stream if stream is not None else sys.stderr
    if fmt == "auto":
        fmt = "console" if stream.isatty() and not under_journald() else "json"
    renderer: Processor
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=stream.isatty())
    else:
        renderer = _JsonRenderer(journald=under_journald())
    exc: Processor = (
        structlog.processors.format_exc_info if fmt == "json" else structlog.dev.set_exc_info
    )
    _route_foreign_logs(level, stream, exc, renderer)
    structlog.configure(
        processors=[*_shared_processors(), exc, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(_level_number(level)),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )


def alert_logger(stream: TextIO | None = None) -> Any:
    """A logger whose lines are alerts: JSON on stdout, independent of the log format."""
    return structlog.wrap_logger(
        structlog.PrintLogger(file=stream if stream is not None else sys.stdout),
        processors=[
            structlog.processors.add_log_level,
            redact_secrets,
            _JsonRenderer(journald=under_journald()),
        ],
        wrapper_class=structlog.BoundLogger,
    )


_ALERT_LEVEL = {"info": "info", "warning": "warning", "critical": "critical"}


def alert_printer(stream: TextIO | None = None) -> Callable[[Alert], None]:
    """Alerts as JSON log lines: ``"alert": true``, ``event`` = the alert's kind.

    The one way alerts are printed, by ``once`` and by the daemon alike.
    """
    logger = alert_logger(stream)

    def emit(alert: Alert) -> None:
        getattr(logger, _ALERT_LEVEL.get(alert.severity, "info"))(
            alert.kind, alert=True, **alert.as_json()
        )

    return emit
