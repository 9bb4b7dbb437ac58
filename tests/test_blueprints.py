"""The shipped blueprints: valid, and run by Home Assistant's automations.

Each test copies the blueprints into the test configuration, sets up an
automation from one with `use_blueprint`, moves the clock to its time and
checks what happened on a real location.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
import shutil
from typing import Any
from urllib.parse import quote

from freezegun.api import FrozenDateTimeFactory
from homeassistant.components.automation.config import AUTOMATION_BLUEPRINT_SCHEMA
from homeassistant.components.blueprint import Blueprint
from homeassistant.const import EVENT_CALL_SERVICE
from homeassistant.core import Event, HomeAssistant, ServiceCall, callback
from homeassistant.setup import async_setup_component
from homeassistant.util import dt as dt_util, yaml as yaml_util
import pytest
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_capture_events,
    async_fire_time_changed,
    async_mock_service,
)

from custom_components.backup_offload.const import (
    CONF_PASSWORD,
    DOMAIN,
    EVENT_BACKUP_CREATED,
)
from custom_components.backup_offload.models import DATA_RESTORING

from .common import call, run
from .engine.helpers import inner_offset

ROOT = Path(__file__).parent.parent
SOURCE = ROOT / "blueprints" / "automation" / DOMAIN
REPOSITORY = "https://github.com/backup-offload/backup_offload"
BLUEPRINTS = ("scheduled_backup.yaml", "weekly_verify.yaml")
# Monday, 7 December 2026, a minute before 3:00 (in the test's time zone).
MONDAY = "2026-12-07 02:59:00"
NOTIFY = [{"action": "notify.test", "data": {"message": "{{ message }}"}}]


def _load(name: str) -> Blueprint:
    """Load a blueprint as Home Assistant does, with the automation schema."""
    return Blueprint(
        yaml_util.load_yaml_dict(SOURCE / name),
        path=name,
        expected_domain="automation",
        schema=AUTOMATION_BLUEPRINT_SCHEMA,
    )


@pytest.mark.parametrize("name", BLUEPRINTS)
def test_blueprint_is_valid(name: str) -> None:
    """The blueprint passes the schema; its source and the README point to it."""
    blueprint = _load(name)
    assert blueprint.validate() is None  # min_version met by this Home Assistant
    assert blueprint.inputs["location"]["selector"] == {
        "config_entry": {"integration": DOMAIN}
    }
    path = f"blueprints/automation/{DOMAIN}/{name}"
    assert blueprint.metadata["source_url"] == f"{REPOSITORY}/blob/main/{path}"
    raw = f"https://raw.githubusercontent.com/backup-offload/backup_offload/main/{path}"
    link = (
        "https://my.home-assistant.io/create-link/?redirect=blueprint_import"
        f"&blueprint_url={quote(raw, safe='')}"
    )
    assert link in (ROOT / "README.md").read_text()


@pytest.fixture
async def blueprints(hass: HomeAssistant, ha_config_dir: Path) -> AsyncIterator[None]:
    """Copy the blueprints where Home Assistant looks for them.

    The automations are turned off after the test: their time triggers
    would outlive it.
    """
    target = ha_config_dir / "blueprints" / "automation" / DOMAIN
    await run(hass, shutil.copytree, SOURCE, target)
    yield
    await hass.services.async_call(
        "automation", "turn_off", {"entity_id": "all"}, blocking=True
    )


@pytest.fixture
def notifications(hass: HomeAssistant) -> list[ServiceCall]:
    """Record the calls of the test's notify action."""
    return async_mock_service(hass, "notify", "test")


@pytest.fixture
def frozen(hass: HomeAssistant, freezer: FrozenDateTimeFactory) -> datetime:
    """Stop the clock a minute before 3:00 on a Monday (local time)."""
    local = dt_util.parse_datetime(MONDAY)
    assert local is not None
    start = dt_util.as_utc(local.replace(tzinfo=dt_util.get_default_time_zone()))
    freezer.move_to(start)
    return start


async def _automation(hass: HomeAssistant, name: str, inputs: dict[str, Any]) -> None:
    """Set up one automation from a blueprint; it must be valid and on."""
    config = {
        "alias": "blueprinted",
        "use_blueprint": {"path": f"{DOMAIN}/{name}", "input": inputs},
    }
    assert await async_setup_component(hass, "automation", {"automation": config})
    await hass.async_block_till_done()
    state = hass.states.get("automation.blueprinted")
    assert state is not None
    assert state.state == "on"


async def _at(
    hass: HomeAssistant, freezer: FrozenDateTimeFactory, when: datetime
) -> None:
    """Move the clock to ``when``, run what is due and wait for it."""
    freezer.move_to(when)
    async_fire_time_changed(hass, when)
    await hass.async_block_till_done()


def _backups(location: Path) -> list[str]:
    return sorted(path.name for path in location.glob("*.tar"))


def _verified(events: list[Event]) -> list[str]:
    """Return the backup ids the verify action was called with.

    A template that renders an id of digits only ("44935775") gives a number,
    as Home Assistant's templates do; the action's schema makes it the same
    string again.
    """
    return [
        str(event.data["service_data"]["backup_id"])
        for event in events
        if event.data["domain"] == DOMAIN and event.data["service"] == "verify"
    ]


@pytest.mark.usefixtures("blueprints")
async def test_scheduled_backup_and_verify(
    hass: HomeAssistant,
    freezer: FrozenDateTimeFactory,
    frozen: datetime,
    init_integration: MockConfigEntry,
    location_dir: Path,
    notifications: list[ServiceCall],
) -> None:
    """At its time on a chosen day a backup is made and verified; no message."""
    calls = async_capture_events(hass, EVENT_CALL_SERVICE)
    await _automation(
        hass,
        "scheduled_backup.yaml",
        {
            "location": init_integration.entry_id,
            "time": "03:00:00",
            "weekdays": ["mon", "thu"],
            "verify": True,
            "on_failure": NOTIFY,
        },
    )
    await _at(hass, freezer, frozen + timedelta(seconds=30))
    assert await run(hass, _backups, location_dir) == []

    await _at(hass, freezer, frozen + timedelta(minutes=1))
    (file,) = await run(hass, _backups, location_dir)
    listing = await call(hass, "list", init_integration)
    (backup,) = listing["backups"]
    assert backup["file"] == file
    assert _verified(calls) == [backup["backup_id"]]
    assert notifications == []
    assert hass.states.get("sensor.nas_state").state == "idle"


@pytest.mark.usefixtures("blueprints")
async def test_scheduled_backup_not_on_other_days(
    hass: HomeAssistant,
    freezer: FrozenDateTimeFactory,
    frozen: datetime,
    init_integration: MockConfigEntry,
    location_dir: Path,
) -> None:
    """A weekday not chosen makes no backup."""
    await _automation(
        hass,
        "scheduled_backup.yaml",
        {"location": init_integration.entry_id, "weekdays": ["tue"]},
    )
    await _at(hass, freezer, frozen + timedelta(minutes=1))
    assert await run(hass, _backups, location_dir) == []


@pytest.mark.usefixtures("blueprints")
async def test_scheduled_backup_failure_notifies(
    hass: HomeAssistant,
    freezer: FrozenDateTimeFactory,
    frozen: datetime,
    init_integration: MockConfigEntry,
    location_dir: Path,
    notifications: list[ServiceCall],
) -> None:
    """A backup that fails (the location is gone) sends its reason."""
    calls = async_capture_events(hass, EVENT_CALL_SERVICE)
    await _automation(
        hass,
        "scheduled_backup.yaml",
        {
            "location": init_integration.entry_id,
            "verify": True,
            "on_failure": NOTIFY,
        },
    )
    await run(hass, location_dir.rmdir)
    await _at(hass, freezer, frozen + timedelta(minutes=1))

    failure = hass.states.get("sensor.nas_last_failure")
    assert failure.attributes["operation"] == "creating"
    (notification,) = notifications
    assert notification.data["message"] == (
        f"Backup to NAS failed: {failure.attributes['error']}"
    )
    assert str(location_dir) in notification.data["message"]
    assert _verified(calls) == []


async def _damage(hass: HomeAssistant, location: Path, file: str) -> None:
    def damage() -> None:
        path = location / file
        offset, size = inner_offset(path)
        data = bytearray(path.read_bytes())
        data[offset + size // 2] ^= 0xFF
        path.write_bytes(bytes(data))

    await run(hass, damage)


@pytest.mark.parametrize("damaged", [False, True])
@pytest.mark.usefixtures("blueprints")
async def test_weekly_verify(
    hass: HomeAssistant,
    freezer: FrozenDateTimeFactory,
    frozen: datetime,
    init_integration: MockConfigEntry,
    location_dir: Path,
    notifications: list[ServiceCall],
    damaged: bool,
) -> None:
    """The newest backup is verified on its day; damage is reported."""
    await call(hass, "create", init_integration, name="Older")
    newest = (await call(hass, "create", init_integration, name="Newest"))["backup"]
    if damaged:
        await _damage(hass, location_dir, newest["file"])
    calls = async_capture_events(hass, EVENT_CALL_SERVICE)
    await _automation(
        hass,
        "weekly_verify.yaml",
        {
            "location": init_integration.entry_id,
            "weekday": "mon",
            "time": "03:00:00",
            "on_damaged": NOTIFY,
        },
    )
    await _at(hass, freezer, frozen + timedelta(minutes=1))

    assert _verified(calls) == [newest["backup_id"]]
    if not damaged:
        assert notifications == []
        return
    (notification,) = notifications
    message = notification.data["message"]
    assert message.startswith(f"Backup {newest['name']} in NAS is damaged: ")
    assert "the log" not in message


@pytest.mark.usefixtures("blueprints")
async def test_weekly_verify_without_backups(
    hass: HomeAssistant,
    freezer: FrozenDateTimeFactory,
    frozen: datetime,
    init_integration: MockConfigEntry,
    notifications: list[ServiceCall],
) -> None:
    """A location with no backup is reported too."""
    await _automation(
        hass,
        "weekly_verify.yaml",
        {"location": init_integration.entry_id, "on_damaged": NOTIFY},
    )
    # Sunday is the default day: Monday runs nothing.
    await _at(hass, freezer, frozen + timedelta(minutes=1))
    assert notifications == []
    await _at(hass, freezer, frozen + timedelta(days=6, minutes=1))
    (notification,) = notifications
    assert notification.data["message"] == (
        "No backup in NAS to verify: it holds no backup"
    )


@pytest.mark.usefixtures("blueprints")
async def test_weekly_verify_location_down(
    hass: HomeAssistant,
    freezer: FrozenDateTimeFactory,
    frozen: datetime,
    init_integration: MockConfigEntry,
    location_dir: Path,
    notifications: list[ServiceCall],
) -> None:
    """A location that cannot be listed is reported, not silently skipped."""
    await call(hass, "create", init_integration)
    await _automation(
        hass,
        "weekly_verify.yaml",
        {
            "location": init_integration.entry_id,
            "weekday": "mon",
            "time": "03:00:00",
            "on_damaged": NOTIFY,
        },
    )
    await run(hass, shutil.rmtree, location_dir)
    await _at(hass, freezer, frozen + timedelta(minutes=1))
    (notification,) = notifications
    assert notification.data["message"] == (
        "No backup in NAS to verify: it could not be listed (is it connected?)"
    )


@pytest.mark.parametrize("entry_options", [{CONF_PASSWORD: "old password"}])
@pytest.mark.usefixtures("blueprints")
async def test_weekly_verify_cannot_verify(
    hass: HomeAssistant,
    freezer: FrozenDateTimeFactory,
    frozen: datetime,
    init_integration: MockConfigEntry,
    notifications: list[ServiceCall],
) -> None:
    """A backup the location's password no longer opens is reported."""
    newest = (await call(hass, "create", init_integration))["backup"]
    hass.config_entries.async_update_entry(
        init_integration, options={CONF_PASSWORD: "new password"}
    )
    await _automation(
        hass,
        "weekly_verify.yaml",
        {
            "location": init_integration.entry_id,
            "weekday": "mon",
            "time": "03:00:00",
            "on_damaged": NOTIFY,
        },
    )
    await _at(hass, freezer, frozen + timedelta(minutes=1))
    (notification,) = notifications
    assert notification.data["message"] == (
        f"Backup {newest['name']} in NAS could not be verified:"
        " the verification did not complete (see the log)"
    )


@pytest.mark.usefixtures("blueprints")
async def test_scheduled_backup_not_verified_notifies(
    hass: HomeAssistant,
    freezer: FrozenDateTimeFactory,
    frozen: datetime,
    init_integration: MockConfigEntry,
    notifications: list[ServiceCall],
) -> None:
    """A verify that cannot run after the backup is reported.

    A restore (of another location, say) starts between the backup and its
    verification: every location refuses operations meanwhile.
    """

    @callback
    def restore_starts(event: Event) -> None:
        hass.data[DATA_RESTORING] = "Other NAS"

    hass.bus.async_listen_once(EVENT_BACKUP_CREATED, restore_starts)
    await _automation(
        hass,
        "scheduled_backup.yaml",
        {
            "location": init_integration.entry_id,
            "verify": True,
            "on_failure": NOTIFY,
        },
    )
    await _at(hass, freezer, frozen + timedelta(minutes=1))
    hass.data.pop(DATA_RESTORING)

    (backup,) = (await call(hass, "list", init_integration))["backups"]
    (notification,) = notifications
    assert notification.data["message"] == (
        f"Backup {backup['name']} in NAS could not be verified:"
        " the verification did not complete (see the log)"
    )
