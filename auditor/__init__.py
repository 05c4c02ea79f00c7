"""3cx-auditor: audits the failover scripts and settings of 3CX V20 phone systems.

Holds the version only and imports none of its modules, so ``--version`` stays cheap."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("3cx-auditor")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
