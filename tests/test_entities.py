"""Entities of a location: what they show, and when they are unavailable."""

from __future__ import annotations

from pathlib import Path

from homeassistant.config_entries import SOURCE_USER
from homeassistant.const import STATE_UNAVAILABLE
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import (
    device_registry as dr,
    entity_registry as er,
    issue_registry as ir,
)
from homeassistant.util import slugify
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.backup_offload.const import CONF_PATH, CONF_REQUIRE_MOUNT, DOMAIN

from .common import call, run

# entity_id: (translation_key, device_class, entity_category, unit)
DIAGNOSTIC = "diagnostic"
EXPECTED = {
    "sensor.nas_state": ("state", "enum", None, None),
    "sensor.nas_last_backup": ("last_backup", "timestamp", None, None),
    "sensor.nas_last_backup_size": ("last_backup_size", "data_size", DIAGNOSTIC, "MiB"),
    "sensor.nas_used_space": ("used_space", "data_size", "diagnostic", "GiB"),
    "sensor.nas_free_space": ("free_space", "data_size", "diagnostic", "GiB"),
    "sensor.nas_backups": ("backup_count", None, None, None),
    "sensor.nas_last_failure": ("last_failure", "timestamp", "diagnostic", None),
    "binary_sensor.nas_connected": ("connected", "connectivity", "diagnostic", None),
    "binary_sensor.nas_backup_overdue": ("backup_overdue", "problem", None, None),
    "button.nas_create_backup": ("create_backup", None, None, None),
    "button.nas_check_now": ("check_now", None, "diagnostic", None),
}  # fmt: skip


async def test_entities(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    entity_registry: er.EntityRegistry,
    device_registry: dr.DeviceRegistry,
) -> None:
    """Every entity exists with its translation key, class and category."""
    entries = er.async_entries_for_config_entry(
        entity_registry, init_integration.entry_id
    )
    assert {e.entity_id for e in entries} == set(EXPECTED)
    for entry in entries:
        key, device_class, category, unit = EXPECTED[entry.entity_id]
        assert entry.translation_key == key
        assert entry.unique_id == f"{init_integration.entry_id}_{key}"
        assert entry.original_device_class == device_class
        assert (entry.entity_category.value if entry.entity_category else None) == (
            category
        )
        state = hass.states.get(entry.entity_id)
        assert state is not None
        assert state.attributes.get("unit_of_measurement") == unit
    devices = dr.async_entries_for_config_entry(
        device_registry, init_integration.entry_id
    )
    assert len(devices) == 1
    device = devices[0]
    assert device.identifiers == {(DOMAIN, init_integration.entry_id)}
    assert device.name == "NAS"
    assert device.entry_type is dr.DeviceEntryType.SERVICE


async def test_states_after_backup(
    hass: HomeAssistant, init_integration: MockConfigEntry
) -> None:
    """The button creates a backup; the sensors follow."""
    assert hass.states.get("sensor.nas_backups").state == "0"
    assert hass.states.get("sensor.nas_last_backup").state == "unknown"
    assert hass.states.get("sensor.nas_state").state == "idle"
    # Attributes that do not apply are left out ("Unknown" in the dialog).
    assert "progress" not in hass.states.get("sensor.nas_state").attributes
    assert "error" not in hass.states.get("sensor.nas_last_failure").attributes
    assert "reason" not in hass.states.get("binary_sensor.nas_connected").attributes
    assert float(hass.states.get("sensor.nas_free_space").state) > 0

    await hass.services.async_call(
        "button", "press", {"entity_id": "button.nas_create_backup"}, blocking=True
    )
    assert hass.states.get("sensor.nas_backups").state == "1"
    assert hass.states.get("sensor.nas_last_backup").state != "unknown"
    backup_mib = float(hass.states.get("sensor.nas_last_backup_size").state)
    assert backup_mib > 0
    # The same bytes, one in MiB and the other in GiB.
    assert float(hass.states.get("sensor.nas_used_space").state) * 1024 == (
        pytest.approx(backup_mib)
    )
    assert hass.states.get("sensor.nas_last_failure").state == "unknown"
    assert hass.states.get("binary_sensor.nas_connected").state == "on"


@pytest.mark.usefixtures("init_integration")
async def test_down_location(
    hass: HomeAssistant, init_integration: MockConfigEntry, location_dir: Path
) -> None:
    """Location data goes unavailable; state, failure and connectivity stay."""
    await hass.async_add_executor_job(location_dir.rmdir)
    await init_integration.runtime_data.coordinator.async_refresh()
    for entity_id in (
        "sensor.nas_last_backup",
        "sensor.nas_last_backup_size",
        "sensor.nas_used_space",
        "sensor.nas_free_space",
        "sensor.nas_backups",
        "button.nas_create_backup",
    ):
        assert hass.states.get(entity_id).state == STATE_UNAVAILABLE, entity_id
    connected = hass.states.get("binary_sensor.nas_connected")
    assert connected.state == "off"
    assert connected.attributes["reason"] == "not_found"
    assert hass.states.get("sensor.nas_state").state == "idle"
    assert hass.states.get("sensor.nas_last_failure").state == "unknown"
    # What checks the location again is there when it is wanted.
    assert hass.states.get("button.nas_check_now").state != STATE_UNAVAILABLE


@pytest.mark.parametrize(
    ("name", "object_id_start"),
    [
        pytest.param("🗄️💾", None, id="emoji-only"),
        pytest.param("!?", None, id="punctuation-only"),
        pytest.param("NAS 🗄️", "nas", id="emoji-and-letters"),
    ],
)
async def test_entity_ids_when_the_name_has_no_letters(
    hass: HomeAssistant,
    ha_config_dir: Path,
    location_dir: Path,
    entity_registry: er.EntityRegistry,
    device_registry: dr.DeviceRegistry,
    name: str,
    object_id_start: str | None,
) -> None:
    """A name that leaves nothing in an id: the ids name the integration and path.

    Otherwise they would be "sensor.state", "button.create_backup", ...
    The names shown stay the user's.
    """
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_USER}
    )
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"],
        {"name": name, CONF_PATH: str(location_dir), CONF_REQUIRE_MOUNT: False},
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    entry = result["result"]
    await hass.async_block_till_done()

    start = object_id_start or f"backup_offload_{slugify(str(location_dir))}"
    expected = {entity_id.replace(".nas_", f".{start}_", 1) for entity_id in EXPECTED}
    entities = er.async_entries_for_config_entry(entity_registry, entry.entry_id)
    assert {e.entity_id for e in entities} == expected
    state = hass.states.get(f"sensor.{start}_state")
    assert state is not None
    assert state.attributes["friendly_name"] == f"{name} State"
    (device,) = dr.async_entries_for_config_entry(device_registry, entry.entry_id)
    assert device.name == name
    await hass.config_entries.async_unload(entry.entry_id)


def _tree(path: Path) -> dict[str, tuple[int, int]]:
    """Return every path below ``path`` with its size and modification time."""
    return {
        str(entry.relative_to(path)): (entry.lstat().st_size, entry.lstat().st_mtime_ns)
        for entry in path.rglob("*")
    }


async def test_location_swapped_for_link_into_config(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    location_dir: Path,
    ha_config_dir: Path,
) -> None:
    """After setup the location becomes a link to the configuration: refused.

    The probe before each operation checks the real path again; the
    location is reported down with its own reason.
    """
    assert hass.states.get("binary_sensor.nas_connected").state == "on"
    await run(hass, location_dir.rmdir)
    await run(hass, location_dir.symlink_to, ha_config_dir)
    before = await run(hass, _tree, ha_config_dir)

    with pytest.raises(HomeAssistantError) as err:
        await call(hass, "create", init_integration)
    assert err.value.translation_key == "location_inside_config"
    # The location, what is wrong and what to do, each once.
    message = str(err.value)
    assert message.startswith("Location NAS is unavailable: it leads to ")
    assert "inside the configuration directory" in message
    assert message.count("Reconfigure") == 1
    assert message.count(str(location_dir)) == 0
    assert await run(hass, _tree, ha_config_dir) == before

    connected = hass.states.get("binary_sensor.nas_connected")
    assert connected.state == "off"
    assert connected.attributes["reason"] == "inside_config"
    issue = ir.async_get(hass).async_get_issue(
        DOMAIN, f"location_unavailable_{init_integration.entry_id}"
    )
    assert issue is not None
    assert issue.translation_placeholders["reason"] == "inside_config"

    # The next refresh says the same; the backups sensor has nothing to show.
    await init_integration.runtime_data.coordinator.async_refresh()
    assert hass.states.get("binary_sensor.nas_connected").state == "off"
    assert hass.states.get("sensor.nas_backups").state == STATE_UNAVAILABLE
    assert await run(hass, _tree, ha_config_dir) == before
