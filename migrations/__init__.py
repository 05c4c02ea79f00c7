"""The Alembic scripts (``env.py``, ``versions/``), shipped as the package ``auditor.migrations``.

They live beside ``alembic.ini`` at the top of the source tree, where the ``alembic`` command
finds them; ``pyproject.toml`` maps this folder to the package ``auditor.migrations``, so that
a wheel carries them and an installed service migrates its own database
(``auditor.store.engine`` finds them through that package, installed or editable alike).
The program imports only this package, to find the folder; Alembic loads the scripts by
their paths. No code belongs here.
"""
