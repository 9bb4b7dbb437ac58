"""A share that is unmounted: between operations, and in the middle of a create.

The Home Assistant backup agent's calls on an unmounted share are covered by
the agent's own tests (tests/test_backup_agent*.py), not here.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from homeassistant.const import STATE_UNAVAILABLE
from homeassistant.core import CoreState, HomeAssistant
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError
from homeassistant.util import dt as dt_util
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_capture_events,
    async_fire_time_changed,
)

from custom_components.backup_offload.const import (
    EVENT_BACKUP_CREATED,
    EVENT_BACKUP_FAILED,
    SCAN_INTERVAL,
)
from tests.common import run

from .conftest import Share
from .helpers import (
    attributes,
    backups_on_disk,
    call,
    call_error,
    every_action,
    listdir,
    repair_issue,
    setup_location,
    state,
    tree,
    write_random,
)


async def test_unmounted_between_operations(
    hass: HomeAssistant, ha_config_dir: Path, share: Share
) -> None:
    """Every action fails with not_a_mount; nothing is written; it recovers."""
    entry = await setup_location(hass, share.path)
    backup = (await call(hass, "create", entry, name="before"))["backup"]
    backup_id = backup["backup_id"]
    failed = async_capture_events(hass, EVENT_BACKUP_FAILED)

    config_before = await run(hass, tree, ha_config_dir)

    await run(hass, share.unmount)
    for service, data in every_action(backup_id):
        err = await call_error(hass, service, entry, **data)
        # A failure of the location, not the caller's input.
        assert not isinstance(err, ServiceValidationError), service
        assert err.translation_key == "location_not_a_mount", service
        assert err.translation_placeholders["location"] == "NAS"

    # Nothing reached the bare mount point, not even for a moment (inotify
    # on its own inode sees every file created there).
    assert await listdir(hass, share.path) == []
    assert await run(hass, share.bare.created) == []
    # The share itself is untouched: the backup is still there.
    archives, _, temporary = await run(hass, backups_on_disk, share.store)
    assert archives == {backup["file"]}
    assert temporary == set()

    assert len(failed) == 1  # the create; the others fire no event
    # The restores touched nothing in the configuration either.
    assert await run(hass, tree, ha_config_dir) == config_before
    assert failed[0].data["error"]
    assert state(hass, "binary_sensor.nas_connected") == "off"
    assert attributes(hass, "binary_sensor.nas_connected")["reason"] == "not_a_mount"
    assert state(hass, "sensor.nas_backups") == STATE_UNAVAILABLE
    assert state(hass, "sensor.nas_free_space") == STATE_UNAVAILABLE
    assert state(hass, "sensor.nas_state") == "idle"
    assert state(hass, "sensor.nas_last_failure") != "unknown"
    issue = repair_issue(hass, entry)
    assert issue is not None
    assert issue.translation_placeholders["reason"] == "not_a_mount"
    assert issue.translation_placeholders["path"] == str(share.path)

    # Remounted: the next periodic refresh recovers by itself.
    await run(hass, share.mount)
    async_fire_time_changed(
        hass, dt_util.utcnow() + SCAN_INTERVAL + timedelta(seconds=2)
    )
    await hass.async_block_till_done(wait_background_tasks=True)
    assert state(hass, "binary_sensor.nas_connected") == "on"
    assert repair_issue(hass, entry) is None
    assert state(hass, "sensor.nas_backups") == "1"
    listing = await call(hass, "list", entry)
    assert listing["backups"] == [backup]
    assert (await call(hass, "verify", entry, backup_id=backup_id))["valid"] is True
    await hass.config_entries.async_unload(entry.entry_id)


@dataclass
class Interrupted:
    """What a create cut short by a lazy unmount left behind."""

    error: HomeAssistantError
    bare_created: list[str]
    """Names created in the bare mount point (inotify), even for a moment."""
    bare_left: list[str]
    """What is left in the bare mount point afterwards."""
    on_share: tuple[set[str], set[str], set[str]]
    """Archives, sidecars and temporary files on the share afterwards."""


async def _create_and_unmount(
    hass: HomeAssistant, config_dir: Path, share: Share
) -> tuple[MockConfigEntry, Interrupted]:
    """Start a create, lazily unmount the share at 10 %, wait for the end."""
    # Incompressible data, so the backup takes a while to write.
    await run(hass, write_random, config_dir / "media.bin", 48 << 20)
    entry = await setup_location(hass, share.path)
    manager = entry.runtime_data.manager
    task = hass.async_create_task(call_error(hass, "create", entry, name="cut"))
    async with asyncio.timeout(30):
        while (manager.progress or 0) < 10:  # noqa: ASYNC110 - polled state
            await asyncio.sleep(0.01)
    assert not task.done()
    await run(hass, share.lazy_unmount)
    async with asyncio.timeout(60):
        error = await task
    return entry, Interrupted(
        error=error,
        bare_created=await run(hass, share.bare.created),
        bare_left=await listdir(hass, share.path),
        on_share=await run(hass, backups_on_disk, share.store),
    )


async def test_unmounted_during_create(
    hass: HomeAssistant, ha_config_dir: Path, share: Share
) -> None:
    """The share goes away mid-write: the create fails, no archive is visible."""
    failed = async_capture_events(hass, EVENT_BACKUP_FAILED)
    created = async_capture_events(hass, EVENT_BACKUP_CREATED)
    entry, result = await _create_and_unmount(hass, ha_config_dir, share)

    assert not isinstance(result.error, ServiceValidationError)
    assert result.error.translation_placeholders["location"] == "NAS"
    # Home Assistant keeps running; the failure event and sensors say so.
    assert hass.state is CoreState.running
    assert [e.data["name"] for e in failed] == ["cut"]
    assert failed[0].data["error"] == str(result.error)
    assert created == []
    assert state(hass, "sensor.nas_state") == "idle"
    assert "progress" not in attributes(hass, "sensor.nas_state")
    assert state(hass, "sensor.nas_last_failure") != "unknown"
    failure = attributes(hass, "sensor.nas_last_failure")
    assert failure["operation"] == "creating"
    assert failure["error"]
    # No archive (nor checksum) is visible, here or on the share.
    assert result.bare_left == []
    archives, sidecars, _ = result.on_share
    assert archives == set()
    assert sidecars == set()
    # The next refresh sees the share is gone.
    await entry.runtime_data.coordinator.async_refresh()
    assert state(hass, "binary_sensor.nas_connected") == "off"
    assert repair_issue(hass, entry) is not None

    # Back: the listing is right, and the next backup works.
    await run(hass, share.mount)
    await entry.runtime_data.coordinator.async_refresh()
    assert state(hass, "binary_sensor.nas_connected") == "on"
    assert (await call(hass, "list", entry))["backups"] == []
    backup = (await call(hass, "create", entry, name="after"))["backup"]
    assert (await call(hass, "list", entry))["backups"] == [backup]
    await hass.config_entries.async_unload(entry.entry_id)


async def test_unmounted_during_create_touches_only_the_share(
    hass: HomeAssistant, ha_config_dir: Path, share: Share
) -> None:
    """Nothing goes into the bare mount point; the partial file is removed."""
    entry, result = await _create_and_unmount(hass, ha_config_dir, share)
    problems = []
    if result.bare_created:
        problems.append(f"written into the bare mount point: {result.bare_created}")
    if result.error.translation_key != "location_not_a_mount":
        problems.append(f"reported as {result.error.translation_key}")
    if result.on_share[2]:
        problems.append(f"left on the share: {sorted(result.on_share[2])}")
    await hass.config_entries.async_unload(entry.entry_id)
    assert problems == []
