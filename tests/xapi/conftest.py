"""Fixtures of the XAPI client's tests: the simulated PBX "hq" served on 127.0.0.1, and the
structlog output of a test.

Fixtures for tests/xapi/ only; the suite's shared fixtures are in tests/conftest.py, the
helpers in tests/xapi/support.py.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Iterator

import pytest
import structlog

from auditor.logs import configure
from tests.xapi.support import Hq, served


@pytest.fixture
async def hq() -> AsyncIterator[Hq]:
    async with served() as running:
        yield running


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    """structlog output of the test, as JSON lines (configured before any client is made)."""
    stream = io.StringIO()
    configure("debug", "json", stream=stream)
    try:
        yield stream
    finally:
        structlog.reset_defaults()
