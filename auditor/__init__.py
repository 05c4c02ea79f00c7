"""3cx-auditor: audits the failover scripts and settings of 3CX V20 phone systems.

Holds the version only and imports none of its modules, so ``--version`` stays cheap."""

# The one place the version is written: pyproject.toml reads it from here (setuptools'
# dynamic version), so the code needs no importlib.metadata look-up, which cost every command
# a scan of the installed distributions at start-up.
__version__ = "0.1.0"

__all__ = ["__version__"]
