"""Loading and unloading a location."""

from __future__ import annotations

from pathlib import Path

from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.backup_offload.const import DOMAIN


async def test_load_unload(
    hass: HomeAssistant, ha_config_dir: Path, location_dir: Path
) -> None:
    """An entry loads and unloads."""
    entry = MockConfigEntry(
        domain=DOMAIN, data={"path": str(location_dir), "require_mount": False}
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.LOADED
    assert entry.runtime_data.coordinator.data.available
    assert await hass.config_entries.async_unload(entry.entry_id)
    assert entry.state is ConfigEntryState.NOT_LOADED


async def test_reload_keeps_the_location(
    hass: HomeAssistant, ha_config_dir: Path, location_dir: Path, tmp_path: Path
) -> None:
    """A reload gets the location's manager and runner back; another path not."""
    entry = MockConfigEntry(
        domain=DOMAIN,
        title="NAS",
        data={"path": str(location_dir), "require_mount": False},
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    manager = entry.runtime_data.manager
    coordinator = entry.runtime_data.coordinator
    runner = coordinator.runner
    backups = coordinator.data.backups

    assert await hass.config_entries.async_reload(entry.entry_id)
    assert entry.runtime_data.manager is manager
    assert entry.runtime_data.coordinator is not coordinator
    assert entry.runtime_data.coordinator.runner is runner
    assert manager.coordinator is entry.runtime_data.coordinator
    assert entry.runtime_data.coordinator.data.backups == backups

    # Moved to another path: that location has its own manager.
    other = tmp_path / "other"
    await hass.async_add_executor_job(other.mkdir)
    hass.config_entries.async_update_entry(
        entry, data={"path": str(other), "require_mount": False}
    )
    assert await hass.config_entries.async_reload(entry.entry_id)
    assert entry.runtime_data.manager is not manager
    assert entry.runtime_data.coordinator.runner is not runner
    assert await hass.config_entries.async_unload(entry.entry_id)
