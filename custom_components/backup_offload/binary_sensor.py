"""Binary sensors of a location: is it usable, and is a backup overdue."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from homeassistant.components.binary_sensor import (
    BinarySensorDeviceClass,
    BinarySensorEntity,
    BinarySensorEntityDescription,
)
from homeassistant.const import EntityCategory
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddEntitiesCallback

from .entity import BackupOffloadEntity
from .models import BackupOffloadConfigEntry, BackupOffloadData

PARALLEL_UPDATES = 0


@dataclass(frozen=True, kw_only=True)
class BackupOffloadBinarySensorDescription(BinarySensorEntityDescription):
    """How a binary sensor reads its state from the location's runtime data."""

    value_fn: Callable[[BackupOffloadData], bool | None]
    attributes_fn: Callable[[BackupOffloadData], Mapping[str, Any]]
    needs_location: bool = True


def _connected(runtime: BackupOffloadData) -> bool:
    """Return True when the last probe passed and backups can be written."""
    return runtime.coordinator.usable


def _connected_attributes(runtime: BackupOffloadData) -> dict[str, Any]:
    """Return why the location is unusable; nothing while it is usable."""
    if (problem := runtime.coordinator.problem()) is None:
        return {}
    return {"reason": problem.reason_code, "error": str(problem)}


def _overdue(runtime: BackupOffloadData) -> bool | None:
    """Return whether a backup is overdue; None (unknown) while the alarm is off."""
    watcher = runtime.overdue
    return watcher.overdue if watcher.hours else None


def _overdue_attributes(runtime: BackupOffloadData) -> dict[str, Any]:
    watcher = runtime.overdue
    last, deadline = watcher.last_backup, watcher.deadline
    attributes: dict[str, Any] = {"overdue_hours": watcher.hours}
    if last is not None:
        attributes["last_backup"] = last.isoformat()
    if deadline is not None:
        attributes["deadline"] = deadline.isoformat()
    return attributes


CONNECTED = BackupOffloadBinarySensorDescription(
    key="connected",
    translation_key="connected",
    device_class=BinarySensorDeviceClass.CONNECTIVITY,
    entity_category=EntityCategory.DIAGNOSTIC,
    value_fn=_connected,
    attributes_fn=_connected_attributes,
    needs_location=False,
)
# Stays available while the location is down: the alarm counts on.
BACKUP_OVERDUE = BackupOffloadBinarySensorDescription(
    key="backup_overdue",
    translation_key="backup_overdue",
    device_class=BinarySensorDeviceClass.PROBLEM,
    value_fn=_overdue,
    attributes_fn=_overdue_attributes,
    needs_location=False,
)
BINARY_SENSORS: tuple[BackupOffloadBinarySensorDescription, ...] = (
    CONNECTED,
    BACKUP_OVERDUE,
)


async def async_setup_entry(
    hass: HomeAssistant,
    entry: BackupOffloadConfigEntry,
    async_add_entities: AddEntitiesCallback,
) -> None:
    """Add the binary sensors of a location."""
    async_add_entities(
        BackupOffloadBinarySensor(entry, description) for description in BINARY_SENSORS
    )


class BackupOffloadBinarySensor(BackupOffloadEntity, BinarySensorEntity):
    """A binary sensor of a location, read from its runtime data."""

    entity_description: BackupOffloadBinarySensorDescription

    def __init__(
        self,
        entry: BackupOffloadConfigEntry,
        description: BackupOffloadBinarySensorDescription,
    ) -> None:
        """Set up the sensor for a location."""
        super().__init__(entry, description)
        self.runtime = entry.runtime_data
        self.needs_location = description.needs_location

    @property
    def is_on(self) -> bool | None:
        """Return the sensor's state."""
        return self.entity_description.value_fn(self.runtime)

    @property
    def extra_state_attributes(self) -> Mapping[str, Any]:
        """Return what explains the state.

        An attribute that does not apply is left out: the more-info dialog
        would show it as "Unknown".
        """
        return self.entity_description.attributes_fn(self.runtime)
