"""One Alembic revision per file, loaded by Alembic by path (it skips this file).

A package only so that setuptools ships every script in it with ``auditor.migrations``; no
code belongs here, and the revisions import nothing of ``auditor``: each one describes its
tables as they were, not as ``auditor.store.schema`` has them today.
"""
