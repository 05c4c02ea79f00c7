"""The simulated backups over real HTTP: daily backups with rotation on the PBX's clock,
GetBackupExtras, the backup settings and repository, and the control routes that break them."""

from __future__ import annotations

from typing import Any

from auditor.simulator import (
    BACKUP_REPOSITORY_PATH,
    BACKUP_SETTINGS_PATH,
    BACKUPS_PATH,
    ManualClock,
    Simulator,
    backup_extras_path,
)
from tests.simulator.simapi import Api

DAY = 86400


async def listing(api: Api, pbx: str, token: str) -> list[dict[str, Any]]:
    status, body, _ = await api.get(pbx, BACKUPS_PATH, token, {"$count": "true"})
    assert status == 200, body
    assert body["@odata.count"] == len(body["value"])
    items = body["value"]
    assert isinstance(items, list)
    return items


async def test_daily_backups_rotate_with_the_clock(
    api: Api, sim: Simulator, clock: ManualClock
) -> None:
    token = await api.login("hq")
    first = await listing(api, "hq", token)
    assert len(first) == 5  # Rotation 5, one a day
    names = [item["FileName"] for item in first]
    assert names == sorted(names)
    assert all(set(item) == {"CreationTime", "DownloadLink", "FileName", "Size"} for item in first)
    assert all(str(item["DownloadLink"]).startswith(api.base) for item in first)

    clock.advance(DAY)
    token = await api.login("hq")  # the clock expired the token too
    second = await listing(api, "hq", token)
    assert [item["FileName"] for item in second][:4] == names[1:]
    assert second[-1]["FileName"] not in names
    assert len(second) == 5

    # Paged like the scripts: $top/$skip.
    status, body, _ = await api.get("hq", BACKUPS_PATH, token, {"$top": "2", "$skip": "4"})
    assert [item["FileName"] for item in body["value"]] == [second[4]["FileName"]]
    status, body, _ = await api.get("hq", BACKUPS_PATH, token, {"$top": "500"})
    assert status == 400


async def test_extras_settings_and_repository(api: Api, sim: Simulator) -> None:
    token = await api.login("hq")
    newest = (await listing(api, "hq", token))[-1]["FileName"]
    assert isinstance(newest, str)
    status, body, _ = await api.get("hq", backup_extras_path(newest), token)
    assert status == 200
    assert body["IsEncrypted"] is True
    assert set(body) - {"@odata.context"} == {"Footprint", "IsEncrypted", "Version"}
    status, body, _ = await api.get("hq", backup_extras_path("nothing.zip"), token)
    assert status == 404
    assert sim["hq"].stats.for_endpoint("backup_extras")[-1].status == 404

    status, body, _ = await api.get("hq", BACKUP_SETTINGS_PATH, token)
    assert body["ScheduleEnabled"] is True
    assert body["Contents"]["EncryptBackup"] is True
    status, body, _ = await api.get("hq", BACKUP_REPOSITORY_PATH, token)
    location = body["Location"]
    assert location["FileSystemType"] == "Sftp"
    assert location["SftpPassword"]["Value"] in sim["hq"].backups.secrets()


async def test_control_routes_break_the_backups(
    api: Api, sim: Simulator, clock: ManualClock
) -> None:
    token = await api.login("hq")
    before = await listing(api, "hq", token)

    assert (await api.control("PUT", "/hq/backup-job", {"running": False}))[0] == 200
    clock.advance(3 * DAY)
    token = await api.login("hq")
    assert [i["FileName"] for i in await listing(api, "hq", token)] == [
        i["FileName"] for i in before
    ]
    assert (await api.control("PUT", "/hq/backup-job", {"running": "no"}))[0] == 400

    newest = before[-1]["FileName"]
    status, item = await api.control("PATCH", f"/hq/backups/{newest}", {"size": 1000})
    assert (status, item["Size"]) == (200, 1000)
    assert (await api.control("PATCH", "/hq/backups/none.zip", {"size": 1}))[0] == 404
    status, body = await api.control("PATCH", f"/hq/backups/{newest}", {"encrypted": False})
    _, extras, _ = await api.get("hq", backup_extras_path(str(newest)), token)
    assert extras["IsEncrypted"] is False

    status, body = await api.control(
        "PATCH", "/hq/backup-settings", {"Contents": {"EncryptBackup": False}}
    )
    assert body["Contents"]["EncryptBackup"] is False
    assert body["Contents"]["VoiceMails"] is True  # merged, not replaced
    assert (await api.control("PATCH", "/hq/backup-settings", {"Rotaton": 3}))[0] == 400
    _, settings, _ = await api.get("hq", BACKUP_SETTINGS_PATH, token)
    assert settings["Contents"]["EncryptBackup"] is False

    status, made = await api.control("POST", "/hq/backups", {"size": 5})
    assert status == 201
    _, extras, _ = await api.get("hq", backup_extras_path(str(made["FileName"])), token)
    assert extras["IsEncrypted"] is False  # made with encryption off
    assert (await api.control("DELETE", f"/hq/backups/{made['FileName']}"))[0] == 204

    status, body = await api.control(
        "PATCH", "/hq/backup-repository", {"Location": {"FileSystemType": "Local"}}
    )
    assert body["Location"]["FileSystemType"] == "Local"
    assert body["Location"]["LocalPath"]
    assert (
        await api.control("PATCH", "/hq/backup-repository", {"Location": {"FileSystemType": "X"}})
    )[0] == 400
    status, body = await api.control("PATCH", "/hq/backup-repository", {"conceal": True})
    assert body["Location"]["SftpPassword"] == {"Concealed": True, "Value": "********"}


async def test_faults_refuse_and_shift_the_backups(api: Api, sim: Simulator) -> None:
    token = await api.login("hq")
    status, _ = await api.control(
        "POST", "/hq/faults", {"action": "status", "endpoint": "backup_repository", "status": 403}
    )
    assert status == 201
    assert (await api.get("hq", BACKUP_REPOSITORY_PATH, token))[0] == 403
    assert (await api.get("hq", BACKUP_SETTINGS_PATH, token))[0] == 200
    assert (await api.control("DELETE", "/hq/faults"))[0] == 204

    before = await listing(api, "hq", token)
    sim["hq"].add_fault("shift", endpoint="backups", skip=2, count=1, times=1)
    status, body, _ = await api.get("hq", BACKUPS_PATH, token, {"$top": "2", "$skip": "2"})
    after = await listing(api, "hq", token)
    assert len(after) == len(before) + 1
    assert body["value"][0]["FileName"] == before[1]["FileName"]  # the page moved
