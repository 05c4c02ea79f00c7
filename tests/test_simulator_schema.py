"""The simulator's answers validated against the real 3CX V20 OpenAPI description.

The spec lives outside the repository (``../shared/3cx-xapi/swagger.yaml``); without it these
tests skip. Items carrying ``State`` are a simulator extension (real PBXs list only
``Filename``): the spec's ``Pbx.FailoverScriptFile`` does not forbid additional properties,
which :func:`test_script_items_allow_the_state_extension` checks, so such items still validate.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from openapi_schema_validator import OAS30Validator

from auditor.simulator import (
    BACKUP_REPOSITORY_PATH,
    BACKUP_SETTINGS_PATH,
    BACKUPS_PATH,
    SCRIPTS_PATH,
    SETTINGS_FIELDS,
    SETTINGS_PATH,
    TOKEN_PATH,
    Pbx,
    Simulator,
    backup_extras_path,
    serve,
)
from auditor.simulator.backups import (
    CONTENTS_FIELDS,
    FILE_SYSTEM_TYPES,
    LOCATION_FIELDS,
    SCHEDULE_FIELDS,
)
from auditor.simulator.backups import SETTINGS_FIELDS as BACKUP_SETTINGS_FIELDS
from auditor.simulator.data import CONDITIONS, MODES

SWAGGER = Path(__file__).resolve().parents[1].parent / "shared" / "3cx-xapi" / "swagger.yaml"
SERVICE_ROOT = "/xapi/v1"
TOKEN_FORM = {"client_id": "auditor", "client_secret": "secret", "grant_type": "client_credentials"}

Schema = dict[str, Any]


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    if not SWAGGER.is_file():
        pytest.skip(f"the 3CX OpenAPI description is not at {SWAGGER}")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with SWAGGER.open("rb") as handle:
        loaded = yaml.load(handle, Loader=loader)  # noqa: S506 - a safe loader, chosen above
    assert isinstance(loaded, dict)
    return loaded


def resolve(spec: dict[str, Any], node: Any, depth: int = 0) -> Any:
    """``node`` with every local ``$ref`` replaced by what it points at."""
    assert depth < 40, "reference chain too deep (a cycle?)"
    if isinstance(node, list):
        return [resolve(spec, item, depth + 1) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/"), ref
        target: Any = spec
        for part in ref[2:].split("/"):
            target = target[part]
        siblings = {k: v for k, v in node.items() if k != "$ref"}
        return resolve(spec, {**target, **siblings}, depth + 1)
    return {key: resolve(spec, value, depth + 1) for key, value in node.items()}


def operation(spec: dict[str, Any], path: str) -> dict[str, Any]:
    assert path.startswith(SERVICE_ROOT)
    op = spec["paths"][path[len(SERVICE_ROOT) :]]["get"]
    assert isinstance(op, dict)
    return op


def success_schema(spec: dict[str, Any], path: str) -> Schema:
    schema = resolve(spec, operation(spec, path)["responses"]["200"])
    result = schema["content"]["application/json"]["schema"]
    assert isinstance(result, dict)
    return result


def error_schema(spec: dict[str, Any], path: str) -> Schema:
    schema = resolve(spec, operation(spec, path)["responses"]["default"])
    result = schema["content"]["application/json"]["schema"]
    assert isinstance(result, dict)
    return result


def component(spec: dict[str, Any], name: str) -> Schema:
    result = resolve(spec, spec["components"]["schemas"][name])
    assert isinstance(result, dict)
    return result


def validate(schema: Schema, instance: Any) -> None:
    OAS30Validator(schema).validate(instance)


def is_valid(schema: Schema, instance: Any) -> bool:
    return bool(OAS30Validator(schema).is_valid(instance))


class Client:
    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base

    async def token(self, pbx: str) -> str:
        async with self.session.post(f"{self.base}/{pbx}{TOKEN_PATH}", data=TOKEN_FORM) as r:
            assert r.status == 200
            token = (await r.json())["access_token"]
            assert isinstance(token, str)
            return token

    async def get(
        self, pbx: str, path: str, params: dict[str, str] | None = None, *, auth: bool = True
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {await self.token(pbx)}"} if auth else {}
        url = f"{self.base}/{pbx}{path}"
        async with self.session.get(url, params=params, headers=headers) as r:
            assert r.content_type == "application/json"
            return r.status, await r.json()


@pytest.fixture
def sim() -> Simulator:
    return Simulator(
        [
            Pbx("plain", scripts=130, seed=3),
            Pbx("states", scripts=12, seed=4, states=True),
            Pbx("empty", scripts=0),
        ]
    )


@pytest.fixture
async def client(sim: Simulator) -> AsyncIterator[Client]:
    async with serve(sim) as base, aiohttp.ClientSession() as session:
        yield Client(session, base)


def test_paths_parameters_and_auth_match_the_spec(spec: dict[str, Any]) -> None:
    assert spec["servers"] == [{"url": SERVICE_ROOT}]
    listing = operation(spec, SCRIPTS_PATH)
    names = {resolve(spec, p)["name"] for p in listing["parameters"]}
    assert names == {"$top", "$skip", "$search", "$filter", "$count"}
    operation(spec, SETTINGS_PATH)
    flows = spec["components"]["securitySchemes"]["Application"]["flows"]
    assert flows["clientCredentials"]["tokenUrl"] == TOKEN_PATH


def test_settings_fields_and_enums_match_the_spec(spec: dict[str, Any]) -> None:
    schema = component(spec, "Pbx.BackupFailoverSettings")
    assert sorted(schema["properties"]) == sorted(SETTINGS_FIELDS)
    assert tuple(schema["properties"]["Condition"]["allOf"][0]["enum"]) == CONDITIONS
    assert tuple(schema["properties"]["Mode"]["allOf"][0]["enum"]) == MODES


def test_script_items_allow_the_state_extension(spec: dict[str, Any]) -> None:
    item = component(spec, "Pbx.FailoverScriptFile")
    assert set(item["properties"]) == {"Filename"}
    assert item.get("additionalProperties", True) is not False


async def test_listing_responses_validate(spec: dict[str, Any], client: Client) -> None:
    schema = success_schema(spec, SCRIPTS_PATH)
    status, body = await client.get("plain", SCRIPTS_PATH, {"$top": "100", "$count": "true"})
    assert status == 200
    assert body["@odata.count"] == 130
    assert len(body["value"]) == 100
    validate(schema, body)

    status, body = await client.get("plain", SCRIPTS_PATH, {"$top": "100", "$skip": "100"})
    assert "@odata.count" not in body
    assert len(body["value"]) == 30
    assert all(set(item) == {"Filename"} for item in body["value"])
    validate(schema, body)

    for pbx in ("states", "empty"):
        status, body = await client.get(pbx, SCRIPTS_PATH, {"$count": "true"})
        assert status == 200
        validate(schema, body)

    # The validation bites: answers of the wrong_types fault are refused.
    assert not is_valid(schema, {**body, "value": {"Filename": "a.sh"}})
    assert not is_valid(schema, {**body, "value": ["a.sh"]})
    assert not is_valid(schema, {**body, "value": [{"Filename": 1}]})
    assert not is_valid(schema, {**body, "@odata.count": "12"})


async def test_settings_responses_validate(spec: dict[str, Any], client: Client) -> None:
    schema = success_schema(spec, SETTINGS_PATH)
    for pbx in ("plain", "empty"):
        status, body = await client.get(pbx, SETTINGS_PATH)
        assert status == 200
        validate(schema, body)
        assert set(body) - {"@odata.context"} == set(schema["properties"])
    assert not is_valid(schema, [body])
    assert not is_valid(schema, {**body, "Mode": "Sideways"})


async def test_error_bodies_validate(spec: dict[str, Any], client: Client, sim: Simulator) -> None:
    schema = error_schema(spec, SCRIPTS_PATH)
    assert schema == component(spec, "Pbx.ODataErrors.ODataError")
    answers = [
        await client.get("plain", SCRIPTS_PATH, {"$top": "500"}),
        await client.get("plain", SCRIPTS_PATH, {"$filter": "Filename eq"}),
        await client.get("plain", SCRIPTS_PATH, {"$skip": "-3"}),
        await client.get("plain", SCRIPTS_PATH, auth=False),
        await client.get("plain", "/xapi/v1/Nothing"),
    ]
    sim["plain"].add_fault("status", endpoint="settings", status=503, times=1)
    answers.append(await client.get("plain", SETTINGS_PATH))
    assert [status for status, _ in answers] == [400, 400, 400, 401, 404, 503]
    for _, body in answers:
        validate(schema, body)
    assert not is_valid(schema, {"error": {"code": ""}})


def test_backup_fields_match_the_spec(spec: dict[str, Any]) -> None:
    assert sorted(component(spec, "Pbx.BackupSettings")["properties"]) == sorted(
        BACKUP_SETTINGS_FIELDS
    )
    assert sorted(component(spec, "Pbx.BackupContents")["properties"]) == sorted(CONTENTS_FIELDS)
    assert sorted(component(spec, "Pbx.BackupSchedule")["properties"]) == sorted(SCHEDULE_FIELDS)
    location = component(spec, "Pbx.LocationSettings")
    assert sorted(location["properties"]) == sorted(LOCATION_FIELDS)
    kinds = location["properties"]["FileSystemType"]["allOf"][0]["enum"]
    assert tuple(kinds) == FILE_SYSTEM_TYPES
    names = {resolve(spec, p)["name"] for p in operation(spec, BACKUPS_PATH)["parameters"]}
    assert {"$top", "$skip", "$count"} <= names


async def test_backup_responses_validate(
    spec: dict[str, Any], client: Client, sim: Simulator
) -> None:
    schema = success_schema(spec, BACKUPS_PATH)
    status, body = await client.get("plain", BACKUPS_PATH, {"$top": "3", "$count": "true"})
    assert status == 200
    assert len(body["value"]) == 3
    assert body["@odata.count"] == 5
    validate(schema, body)
    assert all(
        set(item) == set(component(spec, "Pbx.Backups")["properties"]) for item in body["value"]
    )
    assert not is_valid(schema, {**body, "value": [{"FileName": 1}]})

    extras_schema = component(spec, "Pbx.BackupExtras")
    extras_path = backup_extras_path(body["value"][0]["FileName"])
    assert spec["paths"]["/Backups({FileName})/Pbx.GetBackupExtras()"]
    status, extras = await client.get("plain", extras_path)
    assert status == 200
    validate(extras_schema, extras)
    assert set(extras) - {"@odata.context"} == set(extras_schema["properties"])

    for path in (BACKUP_SETTINGS_PATH, BACKUP_REPOSITORY_PATH):
        schema = success_schema(spec, path)
        for conceal in (False, True):
            sim["plain"].backups.conceal = conceal
            status, body = await client.get("plain", path)
            assert status == 200
            validate(schema, body)
            assert set(body) - {"@odata.context"} == set(schema["properties"])
        assert not is_valid(schema, [body])
    sim["plain"].backups.update_location({"FileSystemType": "Local"})
    status, body = await client.get("plain", BACKUP_REPOSITORY_PATH)
    validate(success_schema(spec, BACKUP_REPOSITORY_PATH), body)
    assert not is_valid(
        success_schema(spec, BACKUP_REPOSITORY_PATH), {"Location": {"FileSystemType": "Disk"}}
    )
