"""The floor: an audit's HTTP requests sent by a bare aiohttp loop, each answer parsed and dropped.

What no auditor can beat: the same requests as an audit (one login per PBX, every page with
the same ``$top``/``$skip``/``$count=true``, the settings), one connection pool per PBX as
the auditor keeps, at most ``concurrency`` PBXs at once; each answer is parsed (paging needs
``@odata.count`` and the page length) and then dropped.

This module imports nothing but the standard library, aiohttp and yarl, so that run as a
whole process (``python -m bench.floor JOB_JSON``, timed from outside by :mod:`bench.once`)
its start-up is that of the leanest client a user could write. The job is ``{"base",
"pbxs": [[name, scripts], ...], "concurrency"}``; the process makes one cycle, checks it,
and prints ``{"requests": N}``. The paths are the simulator's (a test keeps them equal).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Sequence
from typing import Any

import aiohttp
from yarl import URL

TOKEN_PATH = "/connect/token"
SCRIPTS_PATH = "/xapi/v1/Backups/Pbx.GetFailoverScripts()"
SETTINGS_PATH = "/xapi/v1/Backups/Pbx.GetBackupFailoverSettings()"
PAGE_SIZE = 100
CLIENT_ID = "auditor"
CLIENT_SECRET = "secret"


class FloorError(Exception):
    """The floor did not list what the PBX holds."""


def pbx_url(base: str, name: str) -> str:
    return f"{base.rstrip('/')}/{name}"


async def floor_one(url: str, expected: int) -> int:
    """One PBX the bare way; returns the number of requests made."""
    connector = aiohttp.TCPConnector(limit=4)
    async with aiohttp.ClientSession(connector=connector) as session:
        form = {
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "grant_type": "client_credentials",
        }
        async with session.post(url + TOKEN_PATH, data=form) as response:
            token = json.loads(await response.read())["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        requests, skip = 1, 0
        while True:
            query = f"$top={PAGE_SIZE}&$skip={skip}&$count=true"
            page = URL(f"{url}{SCRIPTS_PATH}?{query}", encoded=True)
            async with session.get(page, headers=headers) as response:
                data = json.loads(await response.read())
            requests += 1
            value = data["value"]
            if not value:
                break
            skip += len(value)
            if skip >= data["@odata.count"]:
                break
        async with session.get(url + SETTINGS_PATH, headers=headers) as response:
            json.loads(await response.read())
        requests += 1
    if skip != expected:
        raise FloorError(f"floor: {url} listed {skip} scripts, expected {expected}")
    return requests


async def floor_cycle(base: str, pbxs: Sequence[tuple[str, int]], concurrency: int) -> int:
    """Every PBX once, at most ``concurrency`` at a time; returns the number of requests."""
    limit = asyncio.Semaphore(concurrency)

    async def one(name: str, scripts: int) -> int:
        async with limit:
            return await floor_one(pbx_url(base, name), scripts)

    return sum(await asyncio.gather(*(one(name, scripts) for name, scripts in pbxs)))


def main(argv: Sequence[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m bench.floor JOB_JSON", file=sys.stderr)
        return 2
    job: dict[str, Any] = json.loads(argv[0])
    pbxs = [(str(n), int(s)) for n, s in job["pbxs"]]
    try:
        requests = asyncio.run(floor_cycle(job["base"], pbxs, int(job["concurrency"])))
    except FloorError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"requests": requests}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
