"""The command line: the only place that prints or picks exit codes.

One module per family of commands (``live``, ``audit``, ``record``, ``evidence``,
``service``, ``sim``, ``status``), the shared pieces in ``common`` (with the secrets each command
declares it reads), ``check-config --connect`` in ``connect``, and the parser built from
them in ``parser``. Exit codes: 0 success, 1 a target (PBX, database) failed, 2 usage or
configuration error. Errors are one line on stderr; ``-v`` adds the traceback.

Importing this package imports no heavy module (aiohttp, SQLAlchemy, Alembic, Apprise, the
simulator): each command imports what it needs when it runs.
"""

from auditor.cli.parser import build_parser, main

__all__ = ["build_parser", "main"]
