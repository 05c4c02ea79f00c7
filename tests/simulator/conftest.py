"""Fixtures of the simulator's tests: a manual clock, two PBXs (hq: 250 scripts, branch: 5
with States) served on 127.0.0.1, and an :class:`Api` talking to them.

Fixtures for tests/simulator/ only; the suite's shared fixtures are in tests/conftest.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from auditor.simulator import (
    ManualClock,
    Pbx,
    Simulator,
    serve,
)
from tests.simulator.simapi import Api


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def sim(clock: ManualClock) -> Simulator:
    return Simulator(
        [Pbx("hq", scripts=250, seed=1), Pbx("branch", scripts=5, seed=2, states=True)],
        clock=clock,
    )


@pytest.fixture
async def api(sim: Simulator) -> AsyncIterator[Api]:
    # A fresh connection per request: aiohttp silently retries an idempotent request once
    # when a reused connection is dropped, which would hide one-shot drop faults.
    connector = aiohttp.TCPConnector(force_close=True)
    async with serve(sim) as base, aiohttp.ClientSession(connector=connector) as session:
        yield Api(session, base)
