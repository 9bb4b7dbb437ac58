"""The actions, end to end inside Home Assistant, on real files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from freezegun.api import FrozenDateTimeFactory
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import (
    HomeAssistantError,
    ServiceValidationError,
    Unauthorized,
)
from homeassistant.helpers import instance_id, issue_registry as ir
import pytest
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_capture_events,
)

from custom_components.backup_offload.const import (
    CONF_KEEP_COUNT,
    CONF_KEEP_DAILY,
    CONF_KEEP_MONTHLY,
    DOMAIN,
    EVENT_BACKUP_CREATED,
    EVENT_BACKUP_DELETED,
    EVENT_BACKUP_FAILED,
)

from .common import call, in_executor, run, setup_location, wait_until
from .engine.helpers import backup_json, build_archive, member
from .mounts import tmpfs, unmount


def _files(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


async def _listdir(hass: HomeAssistant, path: Path) -> list[str]:
    return await hass.async_add_executor_job(_files, path)


async def test_create_list_verify_delete(
    hass: HomeAssistant, init_integration: MockConfigEntry, location_dir: Path
) -> None:
    """A backup is created, listed, verified and deleted; events fire."""
    created = async_capture_events(hass, EVENT_BACKUP_CREATED)
    deleted = async_capture_events(hass, EVENT_BACKUP_DELETED)

    response = await call(hass, "create", init_integration, name="Before update")
    backup = response["backup"]
    assert backup["name"] == "Before update"
    assert backup["own"] is True
    assert backup["protected"] is False
    assert backup["database_included"] is True
    assert backup["size"] > 0
    backup_id = backup["backup_id"]
    assert await _listdir(hass, location_dir) == sorted(
        [backup["file"], backup["file"] + ".sha256"]
    )
    assert [e.data for e in created] == [
        {
            "config_entry_id": init_integration.entry_id,
            "location": "NAS",
            "backup_id": backup_id,
            "name": "Before update",
        }
    ]

    listing = await call(hass, "list", init_integration)
    assert listing["backups"] == [backup]
    assert listing["invalid"] == {}

    verified = await call(hass, "verify", init_integration, backup_id=backup_id)
    assert verified["valid"] is True
    assert verified["members"] > 0

    response = await call(hass, "delete", init_integration, backup_id=backup_id)
    assert response["backup"]["backup_id"] == backup_id
    assert await _listdir(hass, location_dir) == []
    assert [e.data["backup_id"] for e in deleted] == [backup_id]
    assert (await call(hass, "list", init_integration))["backups"] == []


async def test_create_says_why_it_skipped(
    hass: HomeAssistant, ha_config_dir: Path, location_dir: Path
) -> None:
    """Each skipped path comes with the reason, as the engine found it."""
    await run(hass, (ha_config_dir / "elsewhere").symlink_to, "/etc")
    entry = await setup_location(hass, location_dir, require_mount=False)
    response = await call(hass, "create", entry)
    assert response["skipped"] == [
        {
            "path": "elsewhere",
            "reason": "symlink pointing outside the config directory",
        }
    ]


async def test_default_name_tells_backups_apart(
    hass: HomeAssistant,
    ha_config_dir: Path,
    location_dir: Path,
    freezer: FrozenDateTimeFactory,
) -> None:
    """A backup made without a name is named by the local date and time."""
    await hass.config.async_set_time_zone("Europe/Berlin")
    freezer.move_to("2026-12-06 02:30:00+00:00")
    entry = await setup_location(hass, location_dir, require_mount=False)
    backup = (await call(hass, "create", entry))["backup"]
    assert backup["name"] == "Backup Offload 2026-12-06 03:30"


async def test_create_encrypted_with_options(
    hass: HomeAssistant, ha_config_dir: Path, location_dir: Path
) -> None:
    """The location's password encrypts; verify needs it."""
    entry = await setup_location(
        hass,
        location_dir,
        require_mount=False,
        options={"password": "s3cret", "compress": False, "include_database": False},
    )
    backup = (await call(hass, "create", entry))["backup"]
    assert backup["protected"] is True
    assert backup["database_included"] is False
    assert backup["name"].startswith("Backup Offload ")

    assert (await call(hass, "verify", entry, backup_id=backup["backup_id"]))["valid"]
    with pytest.raises(ServiceValidationError) as err:
        await call(hass, "verify", entry, backup_id=backup["backup_id"], password="no")
    assert err.value.translation_key == "wrong_password"


async def test_verify_reports_corruption(
    hass: HomeAssistant, init_integration: MockConfigEntry, location_dir: Path
) -> None:
    """A damaged archive is reported in the response, not raised."""
    backup = (await call(hass, "create", init_integration))["backup"]
    path = location_dir / backup["file"]

    def damage() -> None:
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))

    await hass.async_add_executor_job(damage)
    result = await call(hass, "verify", init_integration, backup_id=backup["backup_id"])
    assert result["valid"] is False
    assert result["problem"] == "corrupt_backup"


async def test_retention_after_create_and_purge(
    hass: HomeAssistant, init_integration: MockConfigEntry
) -> None:
    """Retention runs after each create; purge applies new settings now."""
    ids = [
        (await call(hass, "create", init_integration, name=f"b{i}"))["backup"][
            "backup_id"
        ]
        for i in range(3)
    ]
    hass.config_entries.async_update_entry(
        init_integration, options={CONF_KEEP_COUNT: 2}
    )
    response = await call(hass, "create", init_integration, name="b3")
    new = response["backup"]["backup_id"]
    assert set(response["purged"]) == set(ids[:2])
    retention = response["retention"]
    assert retention["dry_run"] is False
    assert {b["backup_id"] for b in retention["deleted"]} == set(ids[:2])
    assert {b["backup_id"]: b["kept_by"] for b in retention["kept"]} == {
        new: ["newest", "just_created", "count"],
        ids[2]: ["count"],
    }

    hass.config_entries.async_update_entry(
        init_integration, options={CONF_KEEP_COUNT: 1}
    )
    response = await call(hass, "purge", init_integration)
    assert response["dry_run"] is False
    assert [b["backup_id"] for b in response["deleted"]] == [ids[2]]
    assert [(b["name"], b["kept_by"]) for b in response["kept"]] == [
        ("b3", ["newest", "count"])
    ]
    listing = await call(hass, "list", init_integration)
    assert [b["name"] for b in listing["backups"]] == ["b3"]


async def test_retention_off_deletes_nothing(
    hass: HomeAssistant, init_integration: MockConfigEntry
) -> None:
    """With every keep option 0 (the default), purge keeps all and says so."""
    for name in ("one", "two"):
        await call(hass, "create", init_integration, name=name)
    response = await call(hass, "purge", init_integration)
    assert response["deleted"] == []
    assert [(b["name"], b["kept_by"]) for b in response["kept"]] == [
        ("two", ["newest", "retention_off"]),
        ("one", ["retention_off"]),
    ]


def _plant(location: Path, file: str, slug: str, date: str, owner: str | None) -> None:
    """Put a backup of ``owner``'s Backup Offload (None: not ours) there."""
    extra = {} if owner is None else {"instance_id": owner, "backup_offload": {}}
    build_archive(
        location / file,
        [member("data/configuration.yaml", b"homeassistant:\n")],
        metadata=backup_json(slug=slug, name=file, date=date, extra=extra),
    )


async def test_retention_keeps_backups_of_others(
    hass: HomeAssistant, init_integration: MockConfigEntry, location_dir: Path
) -> None:
    """Another instance's and a foreign backup, older than ours, stay.

    Each has its own id and name, so their survival is told apart from ours.
    """
    ours = await instance_id.async_get(hass)
    old = "2020-01-01T03:00:00+00:00"
    await run(hass, _plant, location_dir, "mine.tar", "0000aaaa", old, ours)
    await run(hass, _plant, location_dir, "theirs.tar", "0000bbbb", old, "other")
    await run(hass, _plant, location_dir, "foreign.tar", "0000cccc", old, None)
    hass.config_entries.async_update_entry(
        init_integration, options={CONF_KEEP_COUNT: 1}
    )
    response = await call(hass, "create", init_integration, name="newer")
    assert response["purged"] == ["0000aaaa"]
    kept = {b["backup_id"]: b["kept_by"] for b in response["retention"]["kept"]}
    assert kept == {
        response["backup"]["backup_id"]: ["newest", "just_created", "count"],
        "0000bbbb": ["not_own"],
        "0000cccc": ["not_own"],
    }
    listing = await call(hass, "list", init_integration)
    assert {(b["name"], b["own"]) for b in listing["backups"]} == {
        ("newer", True),
        ("theirs.tar", False),
        ("foreign.tar", False),
    }


async def test_purge_dry_run_explains_every_decision(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    location_dir: Path,
    freezer: FrozenDateTimeFactory,
) -> None:
    """A dry run deletes nothing and says what would go and why the rest stays.

    Berlin changed to summer time on 29 March 2026: the days and months are
    Home Assistant's, each starting at local midnight.
    """
    await hass.config.async_set_time_zone("Europe/Berlin")
    freezer.move_to("2026-04-05T12:00:00+02:00")
    ours = await instance_id.async_get(hass)
    planted = [
        ("theirs.tar", "0000bbbb", "2026-04-04T12:00:00+02:00", "other"),
        ("mar29.tar", "00000029", "2026-03-29T00:30:00+01:00", ours),
        ("mar28.tar", "00000028", "2026-03-28T23:30:00+01:00", ours),
        ("mar27.tar", "00000027", "2026-03-27T12:00:00+01:00", ours),
        ("feb15.tar", "00000215", "2026-02-15T12:00:00+01:00", ours),
        ("foreign.tar", "0000cccc", "2026-01-01T12:00:00+01:00", None),
    ]
    for file, slug, date, owner in planted:
        await run(hass, _plant, location_dir, file, slug, date, owner)
    hass.config_entries.async_update_entry(
        init_integration, options={CONF_KEEP_DAILY: 2, CONF_KEEP_MONTHLY: 2}
    )
    before = await _listdir(hass, location_dir)
    deleted = async_capture_events(hass, EVENT_BACKUP_DELETED)
    expected_kept = [
        ("0000bbbb", ["not_own"]),
        ("00000029", ["newest", "daily", "monthly"]),
        ("00000028", ["daily"]),
        ("00000215", ["monthly"]),
        ("0000cccc", ["not_own"]),
    ]

    dry = await call(hass, "purge", init_integration, dry_run=True)
    assert dry["dry_run"] is True
    assert [b["backup_id"] for b in dry["deleted"]] == ["00000027"]
    assert [(b["backup_id"], b["kept_by"]) for b in dry["kept"]] == expected_kept
    assert dry["kept"][0]["own"] is False
    assert await _listdir(hass, location_dir) == before
    assert deleted == []

    real = await call(hass, "purge", init_integration)
    assert real == {**dry, "dry_run": False}
    assert "mar27.tar" not in await _listdir(hass, location_dir)
    assert [event.data["backup_id"] for event in deleted] == ["00000027"]


@pytest.mark.parametrize(
    ("service", "data", "key"),
    [
        ("list", {"config_entry_id": "nope"}, "entry_not_found"),
        ("delete", {"backup_id": "../../etc"}, "invalid_backup_id"),
        ("delete", {"backup_id": "a/b"}, "invalid_backup_id"),
        ("delete", {"backup_id": ".."}, "invalid_backup_id"),
        ("delete", {"backup_id": "deadbeef"}, "backup_not_found"),
        ("verify", {"backup_id": "deadbeef"}, "backup_not_found"),
        ("create", {"exclude": ["/etc/*"]}, "invalid_glob"),
        ("create", {"exclude": ["../secrets.yaml"]}, "invalid_glob"),
    ],
)
async def test_bad_input(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    location_dir: Path,
    service: str,
    data: dict[str, Any],
    key: str,
) -> None:
    """Bad input is a translated ServiceValidationError; nothing changes."""
    with pytest.raises(ServiceValidationError) as err:
        await hass.services.async_call(
            DOMAIN,
            service,
            {"config_entry_id": init_integration.entry_id} | data,
            blocking=True,
            return_response=True,
        )
    assert err.value.translation_domain == DOMAIN
    assert err.value.translation_key == key
    assert await _listdir(hass, location_dir) == []
    # Bad input is not a failure of the location.
    assert hass.states.get("sensor.nas_last_failure").state == "unknown"
    # The location recovers: the next good call works.
    assert (await call(hass, "list", init_integration))["backups"] == []


async def test_entry_not_loaded(
    hass: HomeAssistant, init_integration: MockConfigEntry
) -> None:
    """An unloaded location is refused with its own error."""
    await hass.config_entries.async_unload(init_integration.entry_id)
    with pytest.raises(ServiceValidationError) as err:
        await call(hass, "list", init_integration)
    assert err.value.translation_key == "entry_not_loaded"


async def test_admin_only(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    hass_read_only_user: Any,
) -> None:
    """A non-admin user cannot run the actions."""
    from homeassistant.core import Context

    with pytest.raises(Unauthorized):
        await hass.services.async_call(
            DOMAIN,
            "list",
            {"config_entry_id": init_integration.entry_id},
            blocking=True,
            return_response=True,
            context=Context(user_id=hass_read_only_user.id),
        )


def _state(hass: HomeAssistant) -> str | None:
    state = hass.states.get("sensor.nas_state")
    return None if state is None else state.state


async def test_two_creates_at_once(
    hass: HomeAssistant, init_integration: MockConfigEntry, location_dir: Path
) -> None:
    """The second create on a busy location fails at once; the first succeeds."""
    first = hass.async_create_task(call(hass, "create", init_integration, name="a"))
    await wait_until(lambda: _state(hass) == "creating")
    with pytest.raises(HomeAssistantError) as err:
        await call(hass, "create", init_integration, name="b")
    assert err.value.translation_key == "busy"
    backup = (await first)["backup"]
    assert backup["name"] == "a"
    assert len(await _listdir(hass, location_dir)) == 2
    assert hass.states.get("sensor.nas_state").state == "idle"


async def test_create_on_unmounted_location(
    hass: HomeAssistant, ha_config_dir: Path, tmp_path: Path
) -> None:
    """A share that is not mounted: error, nothing written, event, failure, repair."""
    mount_point = tmp_path / "nas"
    failed = async_capture_events(hass, EVENT_BACKUP_FAILED)
    async with in_executor(hass, tmpfs(mount_point)):
        entry = await setup_location(hass, mount_point)
        assert hass.states.get("binary_sensor.nas_connected").state == "on"
        await run(hass, unmount, mount_point)

        with pytest.raises(HomeAssistantError) as err:
            await call(hass, "create", entry)
        assert err.value.translation_key == "location_not_a_mount"
        # The location, what is wrong and what to do, each once.
        assert str(err.value) == (
            f"Location NAS is unavailable: nothing is mounted at {mount_point}."
            " Mount the share or disk; nothing was written"
        )
        assert await _listdir(hass, mount_point) == []
        assert len(failed) == 1
        assert failed[0].data["error"]
        assert hass.states.get("sensor.nas_last_failure").state != "unknown"
        assert hass.states.get("binary_sensor.nas_connected").state == "off"
        assert hass.states.get("sensor.nas_backups").state == "unavailable"
        assert hass.states.get("sensor.nas_state").state == "idle"
        issue = ir.async_get(hass).async_get_issue(
            DOMAIN, f"location_unavailable_{entry.entry_id}"
        )
        assert issue is not None
        await hass.config_entries.async_unload(entry.entry_id)


async def test_create_on_full_disk(
    hass: HomeAssistant, ha_config_dir: Path, tmp_path: Path
) -> None:
    """ENOSPC in the middle of a write: error and no partial file."""
    mount_point = tmp_path / "nas"

    await run(hass, (ha_config_dir / "big.bin").write_bytes, os.urandom(3 << 20))
    async with in_executor(hass, tmpfs(mount_point, size="1m")):
        entry = await setup_location(hass, mount_point)
        with pytest.raises(HomeAssistantError) as err:
            await call(hass, "create", entry)
        assert err.value.translation_key == "insufficient_space"
        assert await _listdir(hass, mount_point) == []
        await hass.config_entries.async_unload(entry.entry_id)


async def test_location_removed_while_running(
    hass: HomeAssistant, init_integration: MockConfigEntry, location_dir: Path
) -> None:
    """The directory disappears: actions fail clearly, sensors say so."""
    await hass.async_add_executor_job(location_dir.rmdir)
    with pytest.raises(HomeAssistantError) as err:
        await call(hass, "list", init_integration)
    assert err.value.translation_key == "location_not_found"
    with pytest.raises(HomeAssistantError) as err:
        await call(hass, "create", init_integration)
    assert err.value.translation_key == "location_not_found"
    assert not await hass.async_add_executor_job(location_dir.exists)
    assert hass.states.get("binary_sensor.nas_connected").state == "off"

    # It comes back: the next refresh recovers by itself.
    await hass.async_add_executor_job(location_dir.mkdir)
    await init_integration.runtime_data.coordinator.async_refresh()
    assert hass.states.get("binary_sensor.nas_connected").state == "on"
    assert not ir.async_get(hass).issues
