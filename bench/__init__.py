"""Benchmarks of one audit cycle against a floor measured in the same run.

``./dev bench`` (``python -m bench``) starts the XAPI simulator in a process of its own and
times, for a fleet of small PBXs and for one very large PBX, on SQLite and on PostgreSQL:

* the **floor**: the HTTP requests an audit makes (login, every page with the same
  ``$top``/``$skip``/``$count``, the settings), sent by a bare aiohttp loop at the same
  concurrency, each answer parsed and then dropped;
* the **baseline** audit cycle (an empty database) and the **no-change** cycle (the steady
  state: the PBXs answer exactly as before), with ``audit_many`` as the service calls it.

Every measurement runs in a fresh child process (:mod:`bench.child`), so its peak RSS is its
own and the timer never shares an event loop with the server. Database growth is measured
between processes: SQLite after a WAL checkpoint, PostgreSQL after VACUUM.
"""
