"""Refreshing a location: outages are logged once, repaired, and recovered."""

from __future__ import annotations

import logging
import os
from pathlib import Path
import threading
import time
from unittest.mock import patch

from freezegun.api import FrozenDateTimeFactory
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import issue_registry as ir
import pytest
from pytest_homeassistant_custom_component.common import async_fire_time_changed

from custom_components.backup_offload.const import (
    DOMAIN,
    PROBE_INTERVAL,
    PROBE_RETRY_MAX,
    SCAN_INTERVAL,
    STALE_TEMP_AGE,
    OperationState,
)
from custom_components.backup_offload.engine import jobs
from custom_components.backup_offload.engine.errors import LocationUnavailableError
from custom_components.backup_offload.engine.metadata import TEMP_PREFIX

from .common import in_executor, run, setup_location, wait_until
from .locks import locked_by_another_process
from .mounts import tmpfs, unmount


async def test_down_at_startup_still_loads(
    hass: HomeAssistant,
    ha_config_dir: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A share that is not mounted at startup: loaded, disconnected, repair issue."""
    mount_point = tmp_path / "nas"
    await run(hass, mount_point.mkdir)
    entry = await setup_location(hass, mount_point)
    assert hass.states.get("binary_sensor.nas_connected").state == "off"
    issue = ir.async_get(hass).async_get_issue(
        DOMAIN, f"location_unavailable_{entry.entry_id}"
    )
    assert issue is not None
    assert issue.translation_placeholders["location"] == "NAS"
    coordinator = entry.runtime_data.coordinator

    # Further refreshes while it stays down do not log again.
    await coordinator.async_refresh()
    await coordinator.async_refresh()
    assert caplog.text.count("NAS is unavailable") == 1

    async with in_executor(hass, tmpfs(mount_point)):
        await coordinator.async_refresh()
        assert hass.states.get("binary_sensor.nas_connected").state == "on"
        assert "NAS is available again" in caplog.text
        assert not ir.async_get(hass).issues
        await hass.config_entries.async_unload(entry.entry_id)


async def test_stale_temporary_files_removed_at_setup(
    hass: HomeAssistant, ha_config_dir: Path, location_dir: Path
) -> None:
    """Leftovers of a crash (ours, old) go; anything else stays."""
    from custom_components.backup_offload.engine.metadata import TEMP_PREFIX

    old = location_dir / f"{TEMP_PREFIX}crashed.tar.tmp"
    recent = location_dir / f"{TEMP_PREFIX}running.tar.tmp"
    other = location_dir / ".someone-elses.tmp"

    def prepare() -> None:
        for path in (old, recent, other):
            path.write_bytes(b"partial")
        stale = time.time() - STALE_TEMP_AGE - 60
        os.utime(old, (stale, stale))
        os.utime(other, (stale, stale))

    await hass.async_add_executor_job(prepare)
    entry = await setup_location(hass, location_dir, require_mount=False)
    remaining = await hass.async_add_executor_job(
        lambda: sorted(p.name for p in location_dir.iterdir())
    )
    assert remaining == sorted([recent.name, other.name])
    await hass.config_entries.async_unload(entry.entry_id)


async def test_unmounted_between_refreshes(
    hass: HomeAssistant, ha_config_dir: Path, tmp_path: Path
) -> None:
    """Unmounting is noticed by the next refresh; remounting recovers."""
    mount_point = tmp_path / "nas"
    async with in_executor(hass, tmpfs(mount_point)):
        entry = await setup_location(hass, mount_point)
        coordinator = entry.runtime_data.coordinator
        await run(hass, unmount, mount_point)
        await coordinator.async_refresh()
        assert hass.states.get("binary_sensor.nas_connected").state == "off"
        assert (
            hass.states.get("binary_sensor.nas_connected").attributes["reason"]
            == "not_a_mount"
        )
    async with in_executor(hass, tmpfs(mount_point)):
        await coordinator.async_refresh()
        assert hass.states.get("binary_sensor.nas_connected").state == "on"
        await hass.config_entries.async_unload(entry.entry_id)


def _names(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


def _leftover(path: Path, age: float) -> None:
    """Write a temporary file nobody has written to for ``age`` seconds."""
    path.write_bytes(b"partial")
    _age(path, age)


def _age(path: Path, age: float) -> None:
    when = time.time() - age
    os.utime(path, (when, when))


async def test_young_leftover_removed_by_a_later_refresh(
    hass: HomeAssistant, ha_config_dir: Path, location_dir: Path
) -> None:
    """Too young at setup; a later idle refresh removes it (not the next start)."""
    leftover = location_dir / f"{TEMP_PREFIX}crashed.tar.tmp"
    await run(hass, _leftover, leftover, 10)
    entry = await setup_location(hass, location_dir, require_mount=False)
    assert await run(hass, _names, location_dir) == [leftover.name]

    await run(hass, _age, leftover, STALE_TEMP_AGE + 10)  # time passes
    await entry.runtime_data.coordinator.async_refresh()
    assert await run(hass, _names, location_dir) == []
    await hass.config_entries.async_unload(entry.entry_id)


async def test_no_cleanup_while_an_operation_holds_the_location(
    hass: HomeAssistant, ha_config_dir: Path, location_dir: Path
) -> None:
    """A refresh between two jobs of an operation (an upload) lists only."""
    entry = await setup_location(hass, location_dir, require_mount=False)
    manager = entry.runtime_data.manager
    coordinator = entry.runtime_data.coordinator
    paused = location_dir / f"{TEMP_PREFIX}agent-abc-1234.tar.tmp"
    async with manager.operation(OperationState.CREATING):
        # The stream paused; another instance's crash left a file meanwhile.
        await run(hass, _leftover, paused, STALE_TEMP_AGE + 10)
        await coordinator.async_refresh()
        assert coordinator.last_update_success
        assert await run(hass, _names, location_dir) == [paused.name]
    await coordinator.async_refresh()
    assert await run(hass, _names, location_dir) == []
    await hass.config_entries.async_unload(entry.entry_id)


async def test_refresh_leaves_another_instances_backup_alone(
    hass: HomeAssistant, ha_config_dir: Path, location_dir: Path
) -> None:
    """Another Home Assistant writes into the folder: its locked file stays.

    However long it has not written (a slow upload, a recorder that takes
    its time); the stale leftover next to it goes.
    """
    theirs = location_dir / f"{TEMP_PREFIX}theirs.tar.tmp"
    stale = location_dir / f"{TEMP_PREFIX}crashed.tar.tmp"
    await run(hass, _leftover, theirs, STALE_TEMP_AGE + 600)
    await run(hass, _leftover, stale, STALE_TEMP_AGE + 600)
    async with in_executor(hass, locked_by_another_process(theirs)):
        entry = await setup_location(hass, location_dir, require_mount=False)
        assert await run(hass, _names, location_dir) == [theirs.name]
        await entry.runtime_data.coordinator.async_refresh()
        assert await run(hass, _names, location_dir) == [theirs.name]
    # Its writer is gone and nobody has written to it since: a leftover.
    await entry.runtime_data.coordinator.async_refresh()
    assert await run(hass, _names, location_dir) == []
    await hass.config_entries.async_unload(entry.entry_id)


def _step(hass: HomeAssistant, freezer: FrozenDateTimeFactory, seconds: float) -> None:
    freezer.tick(seconds)
    async_fire_time_changed(hass)


async def test_probe_between_listings_does_not_list(
    hass: HomeAssistant,
    ha_config_dir: Path,
    location_dir: Path,
    freezer: FrozenDateTimeFactory,
) -> None:
    """Ten minutes of a usable location: a probe every 30 s, two listings."""
    entry = await setup_location(hass, location_dir, require_mount=False)
    scanner = entry.runtime_data.manager.scanner
    with (
        patch.object(scanner, "scan", wraps=scanner.scan) as scans,
        patch.object(jobs, "probe_location", wraps=jobs.probe_location) as probes,
    ):
        # Ten minutes, and 10 s for the refresh's jitter (under a second each).
        for _ in range(int((SCAN_INTERVAL.total_seconds() * 2 + 10) / 5)):
            _step(hass, freezer, 5)
            await hass.async_block_till_done(wait_background_tasks=True)
    # Each listing probes too (prepare); a probe due while a listing holds
    # the location is skipped (at 300 s and 600 s, when both are due, the
    # listing may come first; a listing that finds a probe waits for it).
    assert scans.call_count == 2
    due = 2 * SCAN_INTERVAL.total_seconds() / PROBE_INTERVAL
    assert due - 2 <= probes.call_count - scans.call_count <= due
    assert hass.states.get("binary_sensor.nas_connected").state == "on"
    await hass.config_entries.async_unload(entry.entry_id)


async def test_probe_skipped_while_the_location_is_held(
    hass: HomeAssistant, ha_config_dir: Path, location_dir: Path
) -> None:
    """An operation, or a job, holds the location: the probe starts no job."""
    entry = await setup_location(hass, location_dir, require_mount=False)
    manager = entry.runtime_data.manager
    coordinator = entry.runtime_data.coordinator
    release = threading.Event()
    with patch.object(jobs, "probe_location", wraps=jobs.probe_location) as probes:
        async with manager.operation(OperationState.CREATING):
            await coordinator.async_probe()
        job = hass.async_create_task(manager.runner.run(release.wait, 10))
        await wait_until(lambda: manager.runner.running)
        await coordinator.async_probe()
        release.set()
        assert await job
        assert probes.call_count == 0
        await coordinator.async_probe()
        assert probes.call_count == 1
    await hass.config_entries.async_unload(entry.entry_id)


async def test_probe_that_waited_for_the_location_is_not_an_outage(
    hass: HomeAssistant, ha_config_dir: Path, location_dir: Path
) -> None:
    """A "not responding" probe with no job stuck: the location was taken first."""
    entry = await setup_location(hass, location_dir, require_mount=False)
    coordinator = entry.runtime_data.coordinator
    # The race (the location taken between the check and the job), directly.
    coordinator._apply_probe_failure(
        LocationUnavailableError("NAS is not responding", "not_responding", path="x")
    )
    assert hass.states.get("binary_sensor.nas_connected").state == "on"
    await hass.config_entries.async_unload(entry.entry_id)


async def test_back_off_while_down(
    hass: HomeAssistant,
    ha_config_dir: Path,
    location_dir: Path,
    freezer: FrozenDateTimeFactory,
) -> None:
    """Down: probes after 5, 10, 20, 20 s; back: every 30 s again."""
    entry = await setup_location(hass, location_dir, require_mount=False)
    await run(hass, location_dir.rmdir)
    await entry.runtime_data.coordinator.async_check_now()
    assert hass.states.get("binary_sensor.nas_connected").state == "off"
    times: list[int] = []
    with patch.object(jobs, "probe_location", wraps=jobs.probe_location) as probes:
        for second in range(1, 81):
            _step(hass, freezer, 1)
            await hass.async_block_till_done(wait_background_tasks=True)
            if probes.call_count > len(times):
                times.append(second)
    assert times == [5, 15, 35, 55, 75]
    await run(hass, location_dir.mkdir)
    with patch.object(jobs, "probe_location", wraps=jobs.probe_location) as probes:
        back_after = 0
        while hass.states.get("binary_sensor.nas_connected").state != "on":
            assert back_after < PROBE_RETRY_MAX
            _step(hass, freezer, 1)
            back_after += 1
            await hass.async_block_till_done(wait_background_tasks=True)
        # At the next step of the back-off (75 + 20 s); found by the probe,
        # then listed (the listing probes again).
        assert back_after == 95 - 80
        assert probes.call_count == 2
        for _ in range(int(PROBE_INTERVAL)):
            _step(hass, freezer, 1)
            await hass.async_block_till_done(wait_background_tasks=True)
        assert probes.call_count == 3
    await hass.config_entries.async_unload(entry.entry_id)


async def test_outage_found_by_an_operation_is_not_a_second_warning(
    hass: HomeAssistant,
    ha_config_dir: Path,
    location_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The operation logs its failure; the outage itself is information."""
    entry = await setup_location(hass, location_dir, require_mount=False)
    await run(hass, location_dir.rmdir)
    caplog.clear()
    with pytest.raises(HomeAssistantError):
        await hass.services.async_call(
            "button", "press", {"entity_id": "button.nas_create_backup"}, blocking=True
        )
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.getMessage().split(":")[:2] for r in warnings] == [
        ["NAS", " creating failed"]
    ]
    assert "NAS is unavailable" in caplog.text  # at INFO
    assert hass.states.get("binary_sensor.nas_connected").state == "off"
    await hass.config_entries.async_unload(entry.entry_id)
