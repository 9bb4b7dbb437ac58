"""Operation state, progress and translated errors of a location."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
import subprocess
import sys
import threading
from unittest.mock import patch

from homeassistant.core import Event, EventStateChangedData, HomeAssistant, callback
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers.event import async_track_state_change_event
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.backup_offload.const import (
    CONF_KEEP_COUNT,
    CONF_KEEP_DAILY,
    CONF_KEEP_DAYS,
    CONF_KEEP_MONTHLY,
    CONF_KEEP_WEEKLY,
    CONF_KEEP_YEARLY,
    DOMAIN,
)
from custom_components.backup_offload.engine import worker
from custom_components.backup_offload.manager import LocationManager
from custom_components.backup_offload.runner import LocationRunner

from .common import call, run, wait_until


async def test_progress_while_creating(
    hass: HomeAssistant, ha_config_dir: Path, init_integration: MockConfigEntry
) -> None:
    """The state sensor shows `creating` with a rising progress, then idle."""
    for index in range(40):
        await run(
            hass, (ha_config_dir / f"file{index}.bin").write_bytes, os.urandom(1 << 18)
        )
    seen: list[tuple[str, int | None]] = []

    @callback
    def record(event: Event[EventStateChangedData]) -> None:
        state = event.data["new_state"]
        assert state is not None
        seen.append((state.state, state.attributes.get("progress")))

    unsub = async_track_state_change_event(hass, "sensor.nas_state", record)
    await hass.services.async_call(
        DOMAIN, "create", {"config_entry_id": init_integration.entry_id}, blocking=True
    )
    await hass.async_block_till_done()
    unsub()
    progress = [p for state, p in seen if state == "creating"]
    assert progress[0] == 0
    assert progress == sorted(progress)
    assert len(set(progress)) > 2, seen
    assert seen[-1] == ("idle", None)


async def test_heavy_work_in_worker_processes(
    hass: HomeAssistant, ha_config_dir: Path, init_integration: MockConfigEntry
) -> None:
    """Create, verify and a partial restore each run in a worker process.

    Home Assistant's own interpreter is started for each; listing is not
    heavy and stays in the executor thread.
    """
    await run(hass, (ha_config_dir / "automations.yaml").write_text, "[]\n")
    with patch.object(worker.subprocess, "Popen", wraps=subprocess.Popen) as spawned:
        backup = (await call(hass, "create", init_integration))["backup"]
        assert spawned.call_count == 1
        await call(hass, "list", init_integration)
        assert spawned.call_count == 1
        verified = await call(
            hass, "verify", init_integration, backup_id=backup["backup_id"]
        )
        assert verified["valid"] is True
        restored = await call(
            hass,
            "restore",
            init_integration,
            backup_id=backup["backup_id"],
            paths=["automations.yaml"],
            safety_backup=False,
        )
    assert restored["restored"] == ["automations.yaml"]
    assert spawned.call_count == 3
    for started in spawned.call_args_list:
        assert started.args[0][0] == sys.executable


async def test_busy_error_is_translated(
    hass: HomeAssistant, init_integration: MockConfigEntry
) -> None:
    """A run-time error carries the translated English message."""
    first = hass.async_create_task(
        hass.services.async_call(
            DOMAIN,
            "create",
            {"config_entry_id": init_integration.entry_id},
            blocking=True,
        )
    )
    await wait_until(lambda: init_integration.runtime_data.manager.busy)
    with pytest.raises(HomeAssistantError) as err:
        await hass.services.async_call(
            DOMAIN,
            "purge",
            {"config_entry_id": init_integration.entry_id},
            blocking=True,
        )
    assert str(err.value) == (
        "Location NAS is busy (creating). "
        "Try again when the current operation has finished"
    )
    await first


async def test_list_while_busy_returns_last_listing(
    hass: HomeAssistant, init_integration: MockConfigEntry
) -> None:
    """A listing asked for during a backup does not wait for it."""
    await hass.services.async_call(
        DOMAIN, "create", {"config_entry_id": init_integration.entry_id}, blocking=True
    )
    first = hass.async_create_task(
        hass.services.async_call(
            DOMAIN,
            "create",
            {"config_entry_id": init_integration.entry_id},
            blocking=True,
        )
    )
    await wait_until(lambda: init_integration.runtime_data.manager.runner.running)
    listing = await call(hass, "list", init_integration)
    assert listing["cached"] is True
    assert len(listing["backups"]) == 1
    await first
    listing = await call(hass, "list", init_integration)
    assert listing["cached"] is False
    assert len(listing["backups"]) == 2


async def test_list_during_a_probe_is_fresh(
    hass: HomeAssistant, init_integration: MockConfigEntry
) -> None:
    """A listing that meets the periodic probe waits for it: no stale cache.

    The probe runs every 30 seconds through the same runner; answering from
    the cache then would show the backups of a share that has just gone.
    """
    manager = init_integration.runtime_data.manager
    release = threading.Event()
    probe = hass.async_create_task(manager.runner.run(release.wait, 5))
    await wait_until(lambda: manager.runner.running)
    listing = hass.async_create_task(call(hass, "list", init_integration))
    await asyncio.sleep(0)
    release.set()
    await probe
    answer = await listing
    assert answer["cached"] is False


async def test_manager_serves_no_entry_before_it_is_attached(
    hass: HomeAssistant,
) -> None:
    """A location's manager knows its entry only once a setup attached it."""
    manager = LocationManager(hass, LocationRunner(hass, "NAS", 1.0), "instance")
    assert manager.last_data is None
    with pytest.raises(RuntimeError):
        _ = manager.entry
    with pytest.raises(RuntimeError):
        _ = manager.coordinator


@pytest.mark.parametrize(
    "entry_options",
    [
        dict.fromkeys(
            (
                CONF_KEEP_COUNT,
                CONF_KEEP_DAYS,
                CONF_KEEP_DAILY,
                CONF_KEEP_WEEKLY,
                CONF_KEEP_MONTHLY,
                CONF_KEEP_YEARLY,
            ),
            1,
        )
    ],
)
async def test_purge_reads_every_keep_option(
    hass: HomeAssistant, init_integration: MockConfigEntry
) -> None:
    """Each keep option reaches retention: each keeps the newest, and says so."""
    older = (await call(hass, "create", init_integration, name="older"))["backup"]
    newest = (await call(hass, "create", init_integration, name="newest"))["backup"]
    response = await call(hass, "purge", init_integration, dry_run=True)
    assert response["dry_run"] is True
    kept = {b["backup_id"]: b["kept_by"] for b in response["kept"]}
    assert kept[newest["backup_id"]] == [
        "newest",
        "count",
        "days",
        "daily",
        "weekly",
        "monthly",
        "yearly",
    ]
    # One day old at most: kept by keep_days only.
    assert kept[older["backup_id"]] == ["days"]
    assert init_integration.runtime_data.manager.state == "idle"
