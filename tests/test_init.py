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
