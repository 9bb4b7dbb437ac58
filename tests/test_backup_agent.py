"""The backup agent through Home Assistant's real backup component.

Everything here goes through the backup component's websocket API and HTTP
views, as the backup page does: the agent list, the backup list and details,
delete, generate (manual and with the automatic settings, including Home
Assistant's retention deleting through the agent), restore, upload and
download, and a location that is down.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
import tarfile
from typing import Any

from aiohttp import FormData
from homeassistant.components.backup.const import DATA_MANAGER
from homeassistant.core import HomeAssistant
from homeassistant.helpers import issue_registry as ir
import pytest
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_capture_events,
    async_mock_service,
)

from custom_components.backup_offload.const import (
    CONF_PATH,
    CONF_REQUIRE_MOUNT,
    DOMAIN,
    EVENT_BACKUP_DELETED,
)

from .common import agent_id, in_executor, run, setup_backup_component, ws
from .mounts import tmpfs, unmount


def _files(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


async def files(hass: HomeAssistant, path: Path) -> list[str]:
    """List a directory (in the executor)."""
    return await run(hass, _files, path)


def _archives(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.suffix == ".tar")


def _backup_json(path: Path) -> dict[str, Any]:
    with tarfile.open(path) as tar:
        member = tar.extractfile("./backup.json")
        assert member is not None
        return dict(json.load(member))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
async def backup_entry(
    hass: HomeAssistant, init_integration: MockConfigEntry
) -> MockConfigEntry:
    """Set up a location, then the backup component (as at startup)."""
    await setup_backup_component(hass)
    return init_integration


async def _second_location(hass: HomeAssistant, path: Path) -> MockConfigEntry:
    await run(hass, path.mkdir)
    entry = MockConfigEntry(
        domain=DOMAIN,
        title="Disk",
        data={CONF_PATH: str(path), CONF_REQUIRE_MOUNT: False},
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    return entry


async def _generate(
    hass: HomeAssistant, client: Any, agent_ids: list[str], **options: Any
) -> str:
    result = await ws(client, type="backup/generate", agent_ids=agent_ids, **options)
    await hass.async_block_till_done()
    return str(result["backup_job_id"])


async def test_agents_follow_locations(
    hass: HomeAssistant,
    ha_config_dir: Path,
    mock_config_entry: MockConfigEntry,
    hass_ws_client: Any,
    tmp_path: Path,
) -> None:
    """One agent per loaded location, named after it; they come and go."""
    await setup_backup_component(hass)
    client = await hass_ws_client(hass)

    async def agents() -> dict[str, str]:
        result = await ws(client, type="backup/agents/info")
        return {a["agent_id"]: a["name"] for a in result["agents"]}

    assert agents_of(await agents()) == {}
    mock_config_entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(mock_config_entry.entry_id)
    await hass.async_block_till_done()
    assert agents_of(await agents()) == {agent_id(mock_config_entry): "NAS"}

    second = await _second_location(hass, tmp_path / "disk")
    assert agents_of(await agents()) == {
        agent_id(mock_config_entry): "NAS",
        agent_id(second): "Disk",
    }

    assert await hass.config_entries.async_unload(mock_config_entry.entry_id)
    await hass.async_block_till_done()
    assert agents_of(await agents()) == {agent_id(second): "Disk"}

    assert await hass.config_entries.async_setup(mock_config_entry.entry_id)
    await hass.async_block_till_done()
    assert agent_id(mock_config_entry) in await agents()
    # Home Assistant's own local agent is unaffected.
    assert "backup.local" in await agents()


def agents_of(agents: dict[str, str]) -> dict[str, str]:
    """Return only this integration's agents."""
    return {key: name for key, name in agents.items() if key.startswith(DOMAIN)}


async def test_generate_lands_in_location(
    hass: HomeAssistant,
    backup_entry: MockConfigEntry,
    hass_ws_client: Any,
    location_dir: Path,
    ha_config_dir: Path,
) -> None:
    """A backup Home Assistant makes for the agent is stored in the location.

    It is Home Assistant's archive as it is (backup.json included), under a
    readable name with a sha256sum sidecar; nothing temporary is left, and
    the location's sensors and `list` action see it.
    """
    client = await hass_ws_client(hass)
    backup_id = await _generate(
        hass, client, [agent_id(backup_entry)], name="Before update"
    )

    names = await files(hass, location_dir)
    assert len(names) == 2, names
    archive = location_dir / names[0]
    assert names[1] == names[0] + ".sha256"
    assert names[0].startswith("Before_update_")
    assert names[0].endswith(f"_{backup_id}.tar")
    sidecar = await run(hass, (location_dir / names[1]).read_text)
    assert sidecar == f"{await run(hass, _sha256, archive)}  {names[0]}\n"
    meta = await run(hass, _backup_json, archive)
    assert meta["slug"] == backup_id
    assert meta["name"] == "Before update"
    assert "instance_id" in meta["extra"]
    # Home Assistant removed its own temporary copy after the upload.
    assert await files(hass, ha_config_dir / "tmp_backups") == []

    info = await ws(client, type="backup/info")
    assert info["agent_errors"] == {}
    [backup] = info["backups"]
    assert backup["backup_id"] == backup_id
    assert backup["name"] == "Before update"
    assert backup["database_included"] is True
    assert backup["homeassistant_included"] is True
    assert backup["extra_metadata"]["with_automatic_settings"] is False
    size = (await run(hass, archive.stat)).st_size
    assert backup["agents"] == {
        agent_id(backup_entry): {"protected": False, "size": size}
    }

    details = await ws(client, type="backup/details", backup_id=backup_id)
    assert details["agent_errors"] == {}
    assert details["backup"]["backup_id"] == backup_id

    # The same listing as the actions, and the sensors follow.
    listing = await hass.services.async_call(
        DOMAIN,
        "list",
        {"config_entry_id": backup_entry.entry_id},
        blocking=True,
        return_response=True,
    )
    assert listing is not None
    [listed] = listing["backups"]
    assert listed["backup_id"] == backup_id
    assert listed["file"] == names[0]
    assert listed["own"] is False  # Home Assistant's, not ours: no retention
    assert hass.states.get("sensor.nas_backups").state == "1"


async def test_generate_encrypted_and_verify(
    hass: HomeAssistant,
    backup_entry: MockConfigEntry,
    hass_ws_client: Any,
) -> None:
    """An encrypted backup from Home Assistant is protected and verifies."""
    client = await hass_ws_client(hass)
    backup_id = await _generate(
        hass, client, [agent_id(backup_entry)], name="Secret", password="s3cret"
    )
    info = await ws(client, type="backup/info")
    [backup] = info["backups"]
    assert backup["agents"][agent_id(backup_entry)]["protected"] is True

    result = await hass.services.async_call(
        DOMAIN,
        "verify",
        {
            "config_entry_id": backup_entry.entry_id,
            "backup_id": backup_id,
            "password": "s3cret",
        },
        blocking=True,
        return_response=True,
    )
    assert result is not None
    assert result["valid"] is True


async def test_delete_through_backup_page(
    hass: HomeAssistant,
    backup_entry: MockConfigEntry,
    hass_ws_client: Any,
    location_dir: Path,
    ha_config_dir: Path,
) -> None:
    """Deleting removes the archive and its sidecar, as the action does.

    A backup that is only in another agent is "not found" here, which Home
    Assistant expects, not an error.
    """
    deleted = async_capture_events(hass, EVENT_BACKUP_DELETED)
    client = await hass_ws_client(hass)
    ours = await _generate(hass, client, [agent_id(backup_entry)], name="ours")
    local = await _generate(hass, client, ["backup.local"], name="local")
    assert len(await files(hass, location_dir)) == 2

    result = await ws(client, type="backup/delete", backup_id=local)
    assert result["agent_errors"] == {}
    assert len(await files(hass, location_dir)) == 2
    assert await files(hass, ha_config_dir / "backups") == []

    result = await ws(client, type="backup/delete", backup_id=ours)
    assert result["agent_errors"] == {}
    assert await files(hass, location_dir) == []
    assert [event.data["backup_id"] for event in deleted] == [ours]
    assert (await ws(client, type="backup/info"))["backups"] == []
    assert hass.states.get("sensor.nas_backups").state == "0"

    details = await ws(client, type="backup/details", backup_id=ours)
    assert details == {"agent_errors": {}, "backup": None}


async def test_restore_from_agent(
    hass: HomeAssistant,
    backup_entry: MockConfigEntry,
    hass_ws_client: Any,
    location_dir: Path,
    ha_config_dir: Path,
) -> None:
    """Home Assistant restores a backup of the agent, end to end.

    Only the restart is a mock (it would stop the test). Home Assistant
    downloads the backup from the agent, checks it, and writes its restore
    instructions; its own restore-at-startup code then restores the config.
    """
    restart = async_mock_service(hass, "homeassistant", "restart")
    client = await hass_ws_client(hass)
    backup_id = await _generate(hass, client, [agent_id(backup_entry)], name="good")
    automations = ha_config_dir / "automations.yaml"
    await run(hass, automations.write_text, "broken: [\n")

    await ws(
        client,
        type="backup/restore",
        backup_id=backup_id,
        agent_id=agent_id(backup_entry),
    )
    assert len(restart) == 1
    instructions = json.loads(
        await run(hass, (ha_config_dir / ".HA_RESTORE").read_text)
    )
    downloaded = Path(instructions["path"])
    [archive] = await run(hass, _archives, location_dir)
    assert await run(hass, downloaded.read_bytes) == await run(hass, archive.read_bytes)

    from homeassistant import backup_restore

    assert await run(hass, backup_restore.restore_backup, str(ha_config_dir))
    assert await run(hass, automations.read_text) == "[]\n"
    # The location's copy stays; Home Assistant removed its download.
    assert await run(hass, archive.exists)
    assert not await run(hass, downloaded.exists)


async def test_http_download(
    hass: HomeAssistant,
    backup_entry: MockConfigEntry,
    hass_ws_client: Any,
    hass_client: Any,
    location_dir: Path,
) -> None:
    """The backup page's download link streams the archive from the location."""
    client = await hass_ws_client(hass)
    backup_id = await _generate(hass, client, [agent_id(backup_entry)], name="dl")
    [archive] = await run(hass, _archives, location_dir)

    http = await hass_client()
    response = await http.get(
        f"/api/backup/download/{backup_id}?agent_id={agent_id(backup_entry)}"
    )
    assert response.status == 200
    assert await response.read() == await run(hass, archive.read_bytes)

    response = await http.get(
        f"/api/backup/download/deadbeef?agent_id={agent_id(backup_entry)}"
    )
    assert response.status == 404


async def test_http_upload(
    hass: HomeAssistant,
    backup_entry: MockConfigEntry,
    hass_ws_client: Any,
    hass_client: Any,
    location_dir: Path,
    tmp_path: Path,
) -> None:
    """A backup uploaded on the backup page lands in the chosen location.

    The archive is one this integration created in another location: our
    archives are Home Assistant backups.
    """
    created = await hass.services.async_call(
        DOMAIN,
        "create",
        {"config_entry_id": backup_entry.entry_id, "name": "Made by us"},
        blocking=True,
        return_response=True,
    )
    assert created is not None
    original = location_dir / created["backup"]["file"]
    backup_id = created["backup"]["backup_id"]
    content = await run(hass, original.read_bytes)
    disk = await _second_location(hass, tmp_path / "disk")

    http = await hass_client()
    upload_url = f"/api/backup/upload?agent_id={agent_id(disk)}"
    form = FormData()
    form.add_field("file", content, filename="upload.tar")
    response = await http.post(upload_url, data=form)
    assert response.status == 201
    await hass.async_block_till_done()

    names = await files(hass, tmp_path / "disk")
    assert names == [created["backup"]["file"], created["backup"]["file"] + ".sha256"]
    assert await run(hass, (tmp_path / "disk" / names[0]).read_bytes) == content

    client = await hass_ws_client(hass)
    info = await ws(client, type="backup/info")
    [backup] = info["backups"]
    assert backup["backup_id"] == backup_id
    assert set(backup["agents"]) == {agent_id(backup_entry), agent_id(disk)}

    # The same backup again: refused by the agent (one id, one archive),
    # reported by Home Assistant, and the stored copy is untouched.
    form = FormData()
    form.add_field("file", content, filename="upload.tar")
    response = await http.post(upload_url, data=form)
    await hass.async_block_till_done()
    assert await files(hass, tmp_path / "disk") == names
    info = await ws(client, type="backup/info")
    assert info["backups"][0]["failed_agent_ids"] == [agent_id(disk)]


async def test_automatic_backups(
    hass: HomeAssistant,
    backup_entry: MockConfigEntry,
    hass_ws_client: Any,
    location_dir: Path,
) -> None:
    """Automatic backups configured for the agent land in the location.

    Home Assistant's retention (1 copy) deletes the older one through the
    agent.
    """
    client = await hass_ws_client(hass)
    await ws(
        client,
        type="backup/config/update",
        create_backup={
            "agent_ids": [agent_id(backup_entry)],
            "include_database": True,
            "name": "Automatic",
            "password": None,
        },
        retention={"copies": 1, "days": None},
    )
    await ws(client, type="backup/generate_with_automatic_settings")
    await hass.async_block_till_done()
    [first] = await run(hass, _archives, location_dir)
    assert first.name.startswith("Automatic_")
    info = await ws(client, type="backup/info")
    [backup] = info["backups"]
    assert backup["with_automatic_settings"] is True
    assert info["last_completed_automatic_backup"] is not None

    await ws(client, type="backup/generate_with_automatic_settings")
    await hass.async_block_till_done()
    [second] = await run(hass, _archives, location_dir)
    assert second != first
    assert len(await files(hass, location_dir)) == 2  # archive and sidecar


async def test_location_down_is_an_agent_error(
    hass: HomeAssistant,
    ha_config_dir: Path,
    hass_ws_client: Any,
    tmp_path: Path,
) -> None:
    """A share that is not mounted is an agent error; the rest still works."""
    mount_point = tmp_path / "nas"
    async with in_executor(hass, tmpfs(mount_point)):
        entry = MockConfigEntry(
            domain=DOMAIN,
            title="NAS",
            data={CONF_PATH: str(mount_point), CONF_REQUIRE_MOUNT: True},
        )
        entry.add_to_hass(hass)
        assert await hass.config_entries.async_setup(entry.entry_id)
        await setup_backup_component(hass)
        client = await hass_ws_client(hass)
        on_nas = await _generate(hass, client, [agent_id(entry)], name="nas")
        local = await _generate(hass, client, ["backup.local"], name="local")
        await run(hass, unmount, mount_point)

        info = await ws(client, type="backup/info")
        assert set(info["agent_errors"]) == {agent_id(entry)}
        assert "NAS is unavailable" in info["agent_errors"][agent_id(entry)]
        assert "not a mount point" in info["agent_errors"][agent_id(entry)]
        assert [b["backup_id"] for b in info["backups"]] == [local]
        # The agent's finding reaches the location's sensors and repairs.
        assert hass.states.get("binary_sensor.nas_connected").state == "off"
        issue = (DOMAIN, f"location_unavailable_{entry.entry_id}")
        assert issue in ir.async_get(hass).issues

        details = await ws(client, type="backup/details", backup_id=on_nas)
        assert set(details["agent_errors"]) == {agent_id(entry)}

        # A backup for both: the local copy is made, the NAS one fails, and
        # nothing is written to the bare mount point (the local disk).
        both = await _generate(
            hass, client, [agent_id(entry), "backup.local"], name="both"
        )
        assert await files(hass, mount_point) == []
        info = await ws(client, type="backup/info")
        by_id = {b["backup_id"]: b for b in info["backups"]}
        assert set(by_id[both]["agents"]) == {"backup.local"}
        assert by_id[both]["failed_agent_ids"] == [agent_id(entry)]

        # Deleting while it is down reports the agent, not a crash.
        result = await ws(client, type="backup/delete", backup_id=on_nas)
        assert set(result["agent_errors"]) == {agent_id(entry)}
        await hass.config_entries.async_unload(entry.entry_id)


async def test_manager_is_home_assistants(
    hass: HomeAssistant, backup_entry: MockConfigEntry
) -> None:
    """The agent is registered with Home Assistant's backup manager."""
    manager = hass.data[DATA_MANAGER]
    agent = manager.backup_agents[agent_id(backup_entry)]
    assert agent.name == "NAS"
    assert agent.unique_id == backup_entry.entry_id
    assert agent.domain == DOMAIN
