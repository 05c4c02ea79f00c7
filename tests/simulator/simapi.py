"""A few lines of plain aiohttp to talk to the simulator: its token, XAPI and control routes.

Shared by the simulator's tests. Uses no client code of the project (auditor.xapi), so these
tests check the simulator against HTTP itself; holds no fixture (see conftest.py).
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
from multidict import CIMultiDictProxy

from auditor.simulator import (
    SCRIPTS_PATH,
    TOKEN_PATH,
    pbx_url,
)

TOKEN_FORM = {"client_id": "auditor", "client_secret": "secret", "grant_type": "client_credentials"}


class Api:
    """A few lines of plain aiohttp, so these tests depend on no client code of the project."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base

    async def token_response(
        self, pbx: str, form: dict[str, str] | None = None, **kwargs: Any
    ) -> tuple[int, Any]:
        url = pbx_url(self.base, pbx) + TOKEN_PATH
        async with self.session.post(url, data=TOKEN_FORM if form is None else form, **kwargs) as r:
            return r.status, await r.json(content_type=None)

    async def login(
        self, pbx: str, client_id: str = "auditor", secret: str = TOKEN_FORM["client_secret"]
    ) -> str:
        form = {**TOKEN_FORM, "client_id": client_id, "client_secret": secret}
        status, body = await self.token_response(pbx, form)
        assert status == 200, body
        token = body["access_token"]
        assert isinstance(token, str)
        return token

    async def get(
        self, pbx: str, path: str, token: str | None, params: dict[str, str] | None = None
    ) -> tuple[int, Any, CIMultiDictProxy[str]]:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        url = pbx_url(self.base, pbx) + path
        async with self.session.get(url, params=params, headers=headers) as r:
            text = await r.text()
            try:
                body: Any = json.loads(text)
            except ValueError:
                body = text
            return r.status, body, r.headers

    async def page(
        self, pbx: str, token: str, params: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        status, body, _ = await self.get(pbx, SCRIPTS_PATH, token, params)
        return status, body

    async def all_names(self, pbx: str, token: str, top: int = 100) -> list[str]:
        names: list[str] = []
        while True:
            status, body = await self.page(pbx, token, {"$top": str(top), "$skip": str(len(names))})
            assert status == 200, body
            names += [item["Filename"] for item in body["value"]]
            if len(body["value"]) < top:
                return names

    async def control(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        kwargs: dict[str, Any] = {} if body is None else {"json": body}
        async with self.session.request(method, f"{self.base}/_sim{path}", **kwargs) as r:
            text = await r.text()
            return r.status, json.loads(text) if text else None
