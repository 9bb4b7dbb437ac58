"""Engine errors become Home Assistant errors in one place: what users get."""

from __future__ import annotations

from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError
import pytest
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_capture_events,
)

from custom_components.backup_offload.boundary import to_ha_error
from custom_components.backup_offload.const import (
    EVENT_BACKUP_FAILED,
    EVENT_RESTORE_FAILED,
)
from custom_components.backup_offload.engine.errors import (
    BackupOffloadError,
    LocationBusyError,
    LocationUnavailableError,
    WriteFailedError,
    WrongPasswordError,
)
from custom_components.backup_offload.engine.restore.checks import (
    NothingToRestoreError,
)

from .common import call, wait_until


@pytest.mark.parametrize(
    ("error", "kind", "key", "code"),
    [
        (
            LocationUnavailableError("/mnt/nas: not mounted", "not_a_mount"),
            HomeAssistantError,
            "location_not_a_mount",
            "not_a_mount",
        ),
        (WriteFailedError("EIO"), HomeAssistantError, "write_failed", "write_failed"),
        (
            WrongPasswordError("wrong"),
            ServiceValidationError,
            "wrong_password",
            "wrong_password",
        ),
        (
            NothingToRestoreError("none", patterns="x"),
            ServiceValidationError,
            "restore_nothing_matched",
            "restore_nothing_matched",
        ),
        (BackupOffloadError("odd"), HomeAssistantError, "unknown", "unknown"),
    ],
)
def test_to_ha_error(
    error: BackupOffloadError, kind: type[HomeAssistantError], key: str, code: str
) -> None:
    """The caller's input is a validation error; the key follows the reason."""
    translated = to_ha_error(error, "NAS")
    assert type(translated) is kind
    assert translated.translation_key == key
    assert translated.translation_placeholders == {
        "location": "NAS",
        **error.placeholders,
    }
    assert error.reason_code == code


def test_busy_names_the_busy_location() -> None:
    """While a restore runs elsewhere, the error names that location."""
    translated = to_ha_error(LocationBusyError("USB", "restoring"), "NAS")
    assert translated.translation_key == "busy"
    assert translated.translation_placeholders == {
        "location": "USB",
        "state": "restoring",
    }


async def test_events_carry_the_translated_message(
    hass: HomeAssistant, init_integration: MockConfigEntry
) -> None:
    """A failed create's and restore's events carry what the action raises."""
    backup_failed = async_capture_events(hass, EVENT_BACKUP_FAILED)
    restore_failed = async_capture_events(hass, EVENT_RESTORE_FAILED)
    first = hass.async_create_task(call(hass, "create", init_integration))
    await wait_until(lambda: init_integration.runtime_data.manager.busy)
    with pytest.raises(HomeAssistantError) as err:
        await call(hass, "create", init_integration, name="second")
    await first
    assert str(err.value).startswith("Location NAS is busy (creating).")
    assert [event.data["error"] for event in backup_failed] == [str(err.value)]

    with pytest.raises(ServiceValidationError) as err:
        await call(
            hass, "restore", init_integration, backup_id="deadbeef", restart=False
        )
    assert err.value.translation_key == "backup_not_found"
    assert "in location NAS" in str(err.value)
    assert [event.data["error"] for event in restore_failed] == [str(err.value)]
    # The caller's input is not a failure of the location.
    assert hass.states.get("sensor.nas_last_failure").state == "unknown"


async def test_button_error_is_translated(
    hass: HomeAssistant, init_integration: MockConfigEntry
) -> None:
    """A press while the location is busy fails with the translated error."""
    first = hass.async_create_task(call(hass, "create", init_integration))
    await wait_until(lambda: init_integration.runtime_data.manager.busy)
    with pytest.raises(HomeAssistantError) as err:
        await hass.services.async_call(
            "button", "press", {"entity_id": "button.nas_create_backup"}, blocking=True
        )
    await first
    assert err.value.translation_key == "busy"
    assert err.value.translation_placeholders == {
        "location": "NAS",
        "state": "creating",
    }
