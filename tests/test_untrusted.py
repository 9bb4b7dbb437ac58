"""What a share or a form hands us is untrusted: ids, dates, names, excludes.

Each test plants files in a location as someone with write access to the
share could (or sets an option as a tired user would) and drives the
integration through the real Home Assistant: actions, Home Assistant's
backup page (websocket), diagnostics.
"""

from __future__ import annotations

from datetime import timedelta
from functools import partial
import json
import logging
from pathlib import Path
from typing import Any

from homeassistant.components.backup import BackupAgentError
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError
from homeassistant.helpers import instance_id
from homeassistant.helpers.json import json_dumps
from homeassistant.util import dt as dt_util
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.backup_offload.backup import BackupOffloadAgent
from custom_components.backup_offload.diagnostics import (
    async_get_config_entry_diagnostics,
)

from .common import agent_id, call, run, setup_backup_component
from .engine.helpers import backup_json, build_archive, member

CONFIG = [member("data/configuration.yaml", b"homeassistant:\n")]


def plant(location: Path, file: str, **metadata: Any) -> Path:
    """Put a Home Assistant backup with this backup.json into the location."""
    return build_archive(location / file, CONFIG, metadata=backup_json(**metadata))


def _tree(root: Path) -> set[str]:
    return {str(path.relative_to(root)) for path in root.rglob("*")}


async def _ws(client: Any, **message: Any) -> dict[str, Any]:
    await client.send_json_auto_id(message)
    response: dict[str, Any] = await client.receive_json()
    return response


# --- ids ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "backup_id", ["../../escaped", "/tmp/escaped", "../backups/local", "a.b", ""]
)
async def test_planted_id_never_reaches_home_assistants_restore(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    hass_ws_client: Any,
    location_dir: Path,
    ha_config_dir: Path,
    tmp_path: Path,
    backup_id: str,
) -> None:
    """An id that is not a plain id is listed as invalid, never offered.

    Home Assistant names the file it downloads for a restore after the id:
    ``tmp_backups/../../escaped.tar`` would land outside its directory.
    """
    await setup_backup_component(hass)
    await run(hass, partial(plant, location_dir, "planted.tar", slug=backup_id))
    listing = await call(hass, "list", init_integration)
    assert listing["backups"] == []
    reason = listing["invalid"]["planted.tar"]
    assert "not a plain id" in reason or "'slug' is missing" in reason
    client = await hass_ws_client(hass)
    info = await _ws(client, type="backup/info")
    assert info["result"]["backups"] == []
    before = await run(hass, _tree, tmp_path)
    response = await _ws(
        client,
        type="backup/restore",
        backup_id=backup_id,
        agent_id=agent_id(init_integration),
    )
    assert not response["success"]
    assert await run(hass, _tree, tmp_path) == before


async def test_ambiguous_id_is_no_backup(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    hass_ws_client: Any,
    location_dir: Path,
    ha_config_dir: Path,
) -> None:
    """A planted archive with a real backup's id, dated later: neither is used."""
    await setup_backup_component(hass)
    real = await call(hass, "create", init_integration)
    backup_id = real["backup"]["backup_id"]
    later = (dt_util.utcnow() + timedelta(minutes=1)).isoformat()
    await run(
        hass, partial(plant, location_dir, "planted.tar", slug=backup_id, date=later)
    )
    listing = await call(hass, "list", init_integration)
    assert listing["backups"] == []
    assert sorted(listing["invalid"]) == sorted(["planted.tar", real["backup"]["file"]])
    client = await hass_ws_client(hass)
    response = await _ws(
        client,
        type="backup/restore",
        backup_id=backup_id,
        agent_id=agent_id(init_integration),
    )
    assert not response["success"]
    assert not await run(hass, (ha_config_dir / ".HA_RESTORE").exists)
    with pytest.raises(ServiceValidationError) as err:
        await call(hass, "verify", init_integration, backup_id=backup_id)
    assert err.value.translation_key == "backup_not_found"


async def test_upload_with_a_bad_id_writes_nothing(
    hass: HomeAssistant, init_integration: MockConfigEntry, location_dir: Path
) -> None:
    """Home Assistant's backup page uploads under an id: a bad one is refused."""
    from homeassistant.components.backup import AgentBackup

    agent = BackupOffloadAgent(hass, init_integration)
    opened = []

    async def open_stream() -> Any:
        opened.append(True)
        raise AssertionError("the stream must not be opened")

    backup = AgentBackup(
        addons=[],
        backup_id="../../escaped",
        date="2026-01-01T00:00:00+00:00",
        database_included=True,
        extra_metadata={},
        folders=[],
        homeassistant_included=True,
        homeassistant_version="2025.4.4",
        name="x",
        protected=False,
        size=10,
    )
    with pytest.raises(BackupAgentError, match="not a plain backup id"):
        await agent.async_upload_backup(open_stream=open_stream, backup=backup)
    assert opened == []
    assert await run(hass, _tree, location_dir) == set()


async def test_long_id_is_stored_under_a_short_name(
    hass: HomeAssistant, init_integration: MockConfigEntry, location_dir: Path
) -> None:
    """A 300-character id is valid; its file name is cut and given a hash."""
    backup_id = "a" * 300
    await run(hass, partial(plant, location_dir, "long.tar", slug=backup_id))
    listing = await call(hass, "list", init_integration)
    assert [b["backup_id"] for b in listing["backups"]] == [backup_id]
    from custom_components.backup_offload.engine.metadata import file_name

    name = file_name("x", dt_util.now(), backup_id)
    assert len(name) < 100
    assert name != file_name("x", dt_util.now(), "a" * 299)


# --- dates --------------------------------------------------------------------


@pytest.mark.parametrize(
    "date", ["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00"]
)
async def test_extreme_date_does_not_stop_the_location(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    location_dir: Path,
    date: str,
) -> None:
    """A foreign backup dated beyond what UTC can hold is invalid, not fatal."""
    await run(
        hass, partial(plant, location_dir, "extreme.tar", slug="e0e0e0e0", date=date)
    )
    listing = await call(hass, "list", init_integration)
    assert "date" in listing["invalid"]["extreme.tar"]
    created = await call(hass, "create", init_integration)
    assert created["backup"]["backup_id"]
    await call(hass, "purge", init_integration)
    state = hass.states.get("sensor.nas_state")
    assert state is not None
    assert state.state == "idle"
    last = hass.states.get("sensor.nas_last_backup")
    assert last is not None
    assert last.state == dt_util.parse_datetime(created["backup"]["date"]).astimezone(
        dt_util.UTC
    ).isoformat(timespec="seconds")


async def test_a_failing_entity_does_not_freeze_the_state_sensor(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One entity that cannot write its state must not keep the others stale."""
    coordinator = init_integration.runtime_data.coordinator

    def broken() -> None:
        raise ValueError("an entity that cannot show its value")

    remove = coordinator.async_add_listener(broken)
    try:
        await call(hass, "create", init_integration)
    finally:
        remove()
    state = hass.states.get("sensor.nas_state")
    assert state is not None
    assert state.state == "idle"
    assert "updating an entity failed" in caplog.text


@pytest.mark.parametrize("entry_options", [{"keep_count": 1}])
async def test_own_backup_dated_in_the_future(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    location_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A backup of ours dated 2099 must not make retention delete each new one."""
    ours = await instance_id.async_get(hass)
    await run(
        hass,
        partial(
            plant,
            location_dir,
            "future.tar",
            slug="f0f0f0f0",
            date="2099-01-01T00:00:00+00:00",
            extra={"instance_id": ours, "backup_offload": {"version": 1}},
        ),
    )
    caplog.set_level(logging.WARNING)
    first = await call(hass, "create", init_integration)
    second = await call(hass, "create", init_integration)
    assert first["purged"] == []
    assert second["purged"] == [first["backup"]["backup_id"]]
    listing = await call(hass, "list", init_integration)
    by_id = {b["backup_id"]: b for b in listing["backups"]}
    assert set(by_id) == {"f0f0f0f0", second["backup"]["backup_id"]}
    assert by_id["f0f0f0f0"]["date_in_future"] is True
    assert by_id[second["backup"]["backup_id"]]["date_in_future"] is False
    assert caplog.text.count("is dated 2099-01-01T00:00:00+00:00, in the future") == 1


# --- text that is not UTF-8 ---------------------------------------------------


async def test_names_that_are_not_utf8(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    hass_ws_client: Any,
    location_dir: Path,
) -> None:
    """A lone surrogate in a name, a file name that is not UTF-8: all still work."""
    await setup_backup_component(hass)

    def plant_odd() -> None:
        raw = json.dumps(backup_json(slug="5a5a5a5a", name="Bad \ud800 name"))
        assert "\\ud800" in raw  # JSON can carry it; UTF-8 cannot
        build_archive(location_dir / "odd.tar", CONFIG, metadata=raw.encode())
        junk = build_archive(location_dir / "tmp.tar", CONFIG, metadata=backup_json())
        junk.rename(location_dir / "junk\udcff.tar")  # the bytes b"junk\xff.tar"

    await run(hass, plant_odd)
    listing = await call(hass, "list", init_integration)
    json_dumps(listing)
    [backup] = listing["backups"]
    assert backup["name"] == "Bad \ufffd name"
    assert "not valid UTF-8" in listing["invalid"]["junk\ufffd.tar"]
    client = await hass_ws_client(hass)
    info = await _ws(client, type="backup/info")
    assert info["success"], info
    assert [b["name"] for b in info["result"]["backups"]] == ["Bad \ufffd name"]
    json_dumps(await async_get_config_entry_diagnostics(hass, init_integration))


# --- excludes -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "path"),
    [
        ("**", "configuration.yaml"),
        ("*", "configuration.yaml"),
        ("*.yaml", "configuration.yaml"),
        (".storage", ".storage"),
        (".storage/*", ".storage/auth"),
    ],
)
async def test_excludes_that_would_empty_a_backup(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    location_dir: Path,
    pattern: str,
    path: str,
) -> None:
    """The options form and the create action refuse such a pattern, by name."""
    flow = await hass.config_entries.options.async_init(init_integration.entry_id)
    result = await hass.config_entries.options.async_configure(
        flow["flow_id"],
        {
            "keep_count": 0,
            "keep_days": 0,
            "include_database": True,
            "compress": True,
            "exclude": ["www/**", pattern],
        },
    )
    assert result["errors"] == {"exclude": "excludes_essential"}
    assert result["description_placeholders"] == {"pattern": pattern, "path": path}
    with pytest.raises(ServiceValidationError) as err:
        await call(hass, "create", init_integration, exclude=[pattern])
    assert err.value.translation_key == "excludes_essential"
    assert err.value.translation_placeholders == {"pattern": pattern, "path": path}
    assert await run(hass, _tree, location_dir) == set()


@pytest.mark.parametrize("entry_options", [{"exclude": ["**"]}])
async def test_stored_exclude_that_empties_a_backup(
    hass: HomeAssistant, init_integration: MockConfigEntry, location_dir: Path
) -> None:
    """An option saved before the check existed: create fails, writes nothing."""
    with pytest.raises(HomeAssistantError) as err:
        await call(hass, "create", init_integration)
    assert err.value.translation_key == "backup_incomplete"
    assert await run(hass, _tree, location_dir) == set()


@pytest.mark.parametrize("entry_options", [{"exclude": ["www/**"]}])
async def test_safety_backup_ignores_user_excludes(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    ha_config_dir: Path,
    location_dir: Path,
) -> None:
    """The backup made before a restore holds everything a user may want back."""
    await run(hass, (ha_config_dir / "www").mkdir)
    await run(hass, (ha_config_dir / "www" / "photo.jpg").write_bytes, b"jpeg")
    made = await call(hass, "create", init_integration)
    result = await call(
        hass,
        "restore",
        init_integration,
        backup_id=made["backup"]["backup_id"],
        paths=["automations.yaml"],
    )
    with pytest.raises(ServiceValidationError) as err:
        await call(
            hass,
            "restore",
            init_integration,
            backup_id=made["backup"]["backup_id"],
            paths=["www/photo.jpg"],
            dry_run=True,
        )
    assert err.value.translation_key == "restore_nothing_matched"
    preview = await call(
        hass,
        "restore",
        init_integration,
        backup_id=result["safety_backup"]["backup_id"],
        paths=["www/photo.jpg"],
        dry_run=True,
    )
    assert preview["unchanged"] == 1


async def test_full_restore_refuses_a_backup_without_configuration(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    location_dir: Path,
    ha_config_dir: Path,
) -> None:
    """Neither configuration.yaml nor .storage: restoring would leave nothing."""

    def plant_empty() -> None:
        build_archive(
            location_dir / "empty.tar",
            [member("data/www/x.txt", b"x")],
            metadata=backup_json(slug="e1e1e1e1"),
        )

    await run(hass, plant_empty)
    before = await run(hass, _tree, ha_config_dir)
    for extra in ({"restart": False}, {"dry_run": True}):
        with pytest.raises(HomeAssistantError) as err:
            await call(hass, "restore", init_integration, backup_id="e1e1e1e1", **extra)
        assert err.value.translation_key == "not_restorable"
        assert "neither configuration.yaml nor .storage" in str(err.value)
        assert await run(hass, _tree, ha_config_dir) == before
