"""Diagnostics show the location's state; the password never leaves."""

from __future__ import annotations

from homeassistant.components.diagnostics import REDACTED
from homeassistant.core import HomeAssistant
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.backup_offload.diagnostics import (
    async_get_config_entry_diagnostics,
)


@pytest.fixture
def entry_options() -> dict[str, object]:
    """Encrypt the test location's backups."""
    return {"password": "hunter2", "keep_count": 3}


async def test_diagnostics(
    hass: HomeAssistant, init_integration: MockConfigEntry
) -> None:
    """The password is redacted; the state and listing are there."""
    await hass.services.async_call(
        "backup_offload",
        "create",
        {"config_entry_id": init_integration.entry_id},
        blocking=True,
    )
    diagnostics = await async_get_config_entry_diagnostics(hass, init_integration)
    assert diagnostics["entry"]["options"] == {"password": REDACTED, "keep_count": 3}
    assert "hunter2" not in repr(diagnostics)
    assert diagnostics["state"] == "idle"
    assert diagnostics["location"]["available"] is True
    assert len(diagnostics["location"]["backups"]) == 1
    assert diagnostics["location"]["backups"][0]["protected"] is True
    assert diagnostics["last_failure"] is None
    assert diagnostics["runner"] == {"running": False, "stuck": False}
