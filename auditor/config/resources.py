"""What this machine can carry: the default of ``audit.max_concurrent``, and the open-file
limit of a process that audits.

The bound is about this process's own resources, not about the PBXs: each PBX sees one
login and one request at a time from an audit whatever the bound (the client's politeness),
so a PBX's anti-hacking limits count requests that this number does not change. What an
audit in flight holds here:

- one connection to its PBX (an open file), and a second for a moment when it reconnects;
- the PBX's answers, in memory, until they are stored;
- a database connection only for its short transactions: the PostgreSQL pool is bounded on
  its own (``auditor.store``), and SQLite's group commits only grow with more audits at once.

So the default is :data:`AUDITS_CAP` unless the open-file limit cannot hold that many, with
:data:`FILES_RESERVED` kept for everything else (the database, the HTTP side, the sinks, the
logs). The limit that counts is the hard one: a process that audits first lifts its soft limit
as far as it needs (:func:`ensure_open_files`), as systemd advises a program that needs many
files and uses no ``select()`` to do (there, the soft limit is 1024 and the hard one 524288).

Reads the process's limits and may raise its own soft limit; reads no file and no environment.
"""

from __future__ import annotations

import resource

# Audits one process keeps in flight by default. One event loop does an audit's work (under
# a millisecond of CPU for a small PBX, more with TLS) while its requests travel: with PBXs
# answering in tens of milliseconds, 64 audits at once keep that loop about busy, and more
# only add connections, memory and time each request waits in the loop (a thousand such PBXs
# take about a second). With PBXs answering in hundreds of milliseconds, a higher
# audit.max_concurrent shortens a cycle in proportion until the loop is busy; for PBXs of
# tens of thousands of scripts (each listing held in memory while audited), a lower one
# bounds the memory.
AUDITS_CAP = 64
# The largest audit.max_concurrent the settings accept.
MAX_CONCURRENT_LIMIT = 1000
# Open files per audit in flight: its connection, and one more while it reconnects.
FILES_PER_AUDIT = 2
# Open files kept for everything but the audits: database connections and files, the HTTP
# server and its clients, the sinks' connections, logs, the interpreter's own.
FILES_RESERVED = 128


def open_files_limit() -> tuple[int, int]:
    """RLIMIT_NOFILE: (soft, hard); an unlimited hard limit is given as a large number."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft == resource.RLIM_INFINITY:
        soft = hard
    return soft, hard


def default_max_concurrent(files: int | None = None) -> int:
    """:data:`AUDITS_CAP`, or fewer when ``files`` (default: the hard open-file limit, which a
    process that audits makes its own) cannot hold that many audits and the reserve."""
    if files is None:
        files = open_files_limit()[1]
    fits = (files - FILES_RESERVED) // FILES_PER_AUDIT
    return max(1, min(AUDITS_CAP, fits))


def files_needed(max_concurrent: int) -> int:
    """Open files a process needs for ``max_concurrent`` audits at once and the reserve."""
    return max_concurrent * FILES_PER_AUDIT + FILES_RESERVED


def ensure_open_files(max_concurrent: int) -> int:
    """Lift the soft open-file limit, when it is lower, to what ``max_concurrent`` audits need
    (at most the hard limit); returns the soft limit in force. Never lowers it, and leaves it
    as it was when the system refuses."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = files_needed(max_concurrent)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return open_files_limit()[0]
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if target <= soft:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        return soft
    return target
