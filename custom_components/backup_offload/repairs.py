"""The fix of a location that is down: check it now; close the issue if it is back."""

from __future__ import annotations

from typing import Any

from homeassistant import data_entry_flow
from homeassistant.components.repairs import RepairsFlow
from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant
import voluptuous as vol

from .boundary import translated_message
from .const import CONF_PATH
from .coordinator import ISSUE_PREFIX
from .models import BackupOffloadConfigEntry


class LocationUnavailableRepairFlow(RepairsFlow):
    """Checks the location when the user says it is back; says what is still wrong."""

    def __init__(self, entry_id: str) -> None:
        """Fix the issue of the location of config entry ``entry_id``."""
        self._entry_id = entry_id

    async def async_step_init(
        self, user_input: dict[str, Any] | None = None
    ) -> data_entry_flow.FlowResult:
        """Start with the confirmation."""
        return await self.async_step_confirm()

    async def async_step_confirm(
        self, user_input: dict[str, Any] | None = None
    ) -> data_entry_flow.FlowResult:
        """Probe and list the location when the user confirms.

        Back: the coordinator has deleted the issue, the flow ends. Still
        down: the form again, with what is wrong now.
        """
        entry: BackupOffloadConfigEntry | None = (
            self.hass.config_entries.async_get_entry(self._entry_id)
        )
        if entry is None or entry.state is not ConfigEntryState.LOADED:
            return self.async_abort(reason="not_loaded")
        coordinator = entry.runtime_data.coordinator
        errors: dict[str, str] = {}
        if user_input is not None:
            await coordinator.async_check_now()
            if coordinator.usable:
                return self.async_create_entry(data={})
            errors["base"] = "still_unavailable"
        problem = coordinator.problem()
        return self.async_show_form(
            step_id="confirm",
            data_schema=vol.Schema({}),
            errors=errors,
            description_placeholders={
                "location": entry.title,
                "path": entry.data[CONF_PATH],
                "error": ""
                if problem is None
                else translated_message(problem, entry.title),
            },
        )


async def async_create_fix_flow(
    hass: HomeAssistant, issue_id: str, data: dict[str, str | int | float | None] | None
) -> RepairsFlow:
    """Return the fix flow of a location's issue (the only fixable one)."""
    return LocationUnavailableRepairFlow(issue_id.removeprefix(ISSUE_PREFIX))
