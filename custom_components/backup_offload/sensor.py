"""Sensors of a location: what it does, what it holds, how full it is."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from homeassistant.components.sensor import (
    SensorDeviceClass,
    SensorEntity,
    SensorEntityDescription,
    SensorStateClass,
)
from homeassistant.const import EntityCategory, UnitOfInformation
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddEntitiesCallback
from homeassistant.helpers.typing import StateType
from homeassistant.util import dt as dt_util

from .const import OperationState
from .engine.jobs import LocationState
from .entity import BackupOffloadEntity
from .manager import LocationManager
from .models import BackupOffloadConfigEntry

# Updates come from the coordinator; nothing is polled per entity.
PARALLEL_UPDATES = 0


@dataclass(frozen=True, kw_only=True)
class BackupOffloadSensorDescription(SensorEntityDescription):
    """How a sensor reads its value from the location's state."""

    value_fn: Callable[[LocationState, LocationManager], StateType | datetime]
    attributes_fn: (
        Callable[[LocationState, LocationManager], Mapping[str, Any]] | None
    ) = None
    needs_location: bool = True
    shows_progress: bool = False
    """Written on every progress step of a backup (only this one, not all)."""


def _newest_date(data: LocationState, _: LocationManager) -> datetime | None:
    if not data.backups:
        return None
    return dt_util.parse_datetime(data.backups[0].date)


def _newest_size(data: LocationState, _: LocationManager) -> int | None:
    return data.backups[0].size if data.backups else None


# Attributes that do not apply are left out, not set to None: the more-info
# dialog shows None as "Unknown".


def _state_attributes(_: LocationState, manager: LocationManager) -> dict[str, Any]:
    return {} if manager.progress is None else {"progress": manager.progress}


def _failure_attributes(_: LocationState, manager: LocationManager) -> dict[str, Any]:
    failure = manager.last_failure
    if failure is None:
        return {}
    return {"operation": failure.operation.value, "error": failure.error}


# Sizes are measured in bytes and shown in a unit that gives a meaningful
# figure for what each sensor typically holds (the user can pick another):
# one backup in MiB (a small configuration is tens of KiB, 0.04 MiB; a large
# one a few GiB, 4,768.37 MiB), what a location holds and has free in GiB.
_BYTES = {
    "device_class": SensorDeviceClass.DATA_SIZE,
    "native_unit_of_measurement": UnitOfInformation.BYTES,
    "suggested_unit_of_measurement": UnitOfInformation.GIBIBYTES,
    "suggested_display_precision": 2,
}
_BACKUP_BYTES = {
    **_BYTES,
    "suggested_unit_of_measurement": UnitOfInformation.MEBIBYTES,
}

SENSORS: tuple[BackupOffloadSensorDescription, ...] = (
    BackupOffloadSensorDescription(
        key="state",
        translation_key="state",
        device_class=SensorDeviceClass.ENUM,
        options=[state.value for state in OperationState],
        value_fn=lambda _, manager: manager.state.value,
        attributes_fn=_state_attributes,
        needs_location=False,
        shows_progress=True,
    ),
    BackupOffloadSensorDescription(
        key="last_backup",
        translation_key="last_backup",
        device_class=SensorDeviceClass.TIMESTAMP,
        value_fn=_newest_date,
    ),
    BackupOffloadSensorDescription(
        key="last_backup_size",
        translation_key="last_backup_size",
        entity_category=EntityCategory.DIAGNOSTIC,
        value_fn=_newest_size,
        **_BACKUP_BYTES,  # type: ignore[arg-type]
    ),
    BackupOffloadSensorDescription(
        key="used_space",
        translation_key="used_space",
        state_class=SensorStateClass.MEASUREMENT,
        entity_category=EntityCategory.DIAGNOSTIC,
        value_fn=lambda data, _: data.used_bytes,
        **_BYTES,  # type: ignore[arg-type]
    ),
    BackupOffloadSensorDescription(
        key="free_space",
        translation_key="free_space",
        state_class=SensorStateClass.MEASUREMENT,
        entity_category=EntityCategory.DIAGNOSTIC,
        value_fn=lambda data, _: data.status.free_bytes if data.status else None,
        **_BYTES,  # type: ignore[arg-type]
    ),
    BackupOffloadSensorDescription(
        key="backup_count",
        translation_key="backup_count",
        state_class=SensorStateClass.MEASUREMENT,
        value_fn=lambda data, _: len(data.backups),
    ),
    BackupOffloadSensorDescription(
        key="last_failure",
        translation_key="last_failure",
        device_class=SensorDeviceClass.TIMESTAMP,
        entity_category=EntityCategory.DIAGNOSTIC,
        value_fn=lambda _, manager: (
            manager.last_failure.time if manager.last_failure else None
        ),
        attributes_fn=_failure_attributes,
        needs_location=False,
    ),
)


async def async_setup_entry(
    hass: HomeAssistant,
    entry: BackupOffloadConfigEntry,
    async_add_entities: AddEntitiesCallback,
) -> None:
    """Add the sensors of a location."""
    async_add_entities(
        BackupOffloadSensor(entry, description) for description in SENSORS
    )


class BackupOffloadSensor(BackupOffloadEntity, SensorEntity):
    """A sensor of a location."""

    entity_description: BackupOffloadSensorDescription

    def __init__(
        self,
        entry: BackupOffloadConfigEntry,
        description: BackupOffloadSensorDescription,
    ) -> None:
        """Set up the sensor."""
        super().__init__(entry, description)
        self.needs_location = description.needs_location

    async def async_added_to_hass(self) -> None:
        """Also follow a backup's progress, if this sensor shows it."""
        await super().async_added_to_hass()
        if self.entity_description.shows_progress:
            self.async_on_remove(
                self.manager.async_add_progress_listener(self.async_write_ha_state)
            )

    @property
    def native_value(self) -> StateType | datetime:
        """Return the sensor's value."""
        return self.entity_description.value_fn(self.coordinator.data, self.manager)

    @property
    def extra_state_attributes(self) -> Mapping[str, Any] | None:
        """Return the progress of a backup, or the last failure's reason."""
        if self.entity_description.attributes_fn is None:
            return None
        return self.entity_description.attributes_fn(
            self.coordinator.data, self.manager
        )
