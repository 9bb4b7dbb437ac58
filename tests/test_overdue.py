"""The overdue alarm: sensor, repair issue and event, on a frozen clock."""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import partial
import json
from pathlib import Path
import shutil
from typing import Any

from freezegun.api import FrozenDateTimeFactory
from homeassistant.core import Event, HomeAssistant
from homeassistant.helpers import instance_id, issue_registry as ir
from homeassistant.util import dt as dt_util
import pytest
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_capture_events,
    async_fire_time_changed,
)

from custom_components.backup_offload.const import (
    CONF_OVERDUE_HOURS,
    DOMAIN,
    EVENT_BACKUP_OVERDUE,
)
from custom_components.backup_offload.overdue import SAVE_DELAY, STORAGE_KEY

from .common import agent_id, call, run, setup_backup_component, ws
from .engine.helpers import backup_json, build_archive, make_backup, member

SENSOR = "binary_sensor.nas_backup_overdue"
STRINGS = json.loads(
    (
        Path(__file__).parent.parent
        / "custom_components"
        / "backup_offload"
        / "strings.json"
    ).read_text()
)


@pytest.fixture
def entry_options() -> dict[str, Any]:
    """Overdue after 2 hours."""
    return {CONF_OVERDUE_HOURS: 2}


@pytest.fixture
def events(hass: HomeAssistant) -> list[Event]:
    """Capture the overdue events."""
    return async_capture_events(hass, EVENT_BACKUP_OVERDUE)


async def _own_backup(
    hass: HomeAssistant, config_dir: Path, location: Path, date: datetime
) -> datetime:
    """Write a backup of ours dated ``date``; return its date as listed."""
    info, _ = await run(
        hass,
        partial(
            make_backup,
            config_dir,
            location,
            date=date,
            instance_id=await instance_id.async_get(hass),
        ),
    )
    parsed = dt_util.parse_datetime(info.date)
    assert parsed is not None
    return parsed


async def _set_up(hass: HomeAssistant, entry: MockConfigEntry) -> None:
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()


async def _at(
    hass: HomeAssistant, freezer: FrozenDateTimeFactory, when: datetime
) -> None:
    """Move the clock to ``when`` and run what is due."""
    freezer.move_to(when)
    async_fire_time_changed(hass, when)
    await hass.async_block_till_done()


def _issue(hass: HomeAssistant, entry: MockConfigEntry) -> ir.IssueEntry | None:
    return ir.async_get(hass).async_get_issue(
        DOMAIN, f"backup_overdue_{entry.entry_id}"
    )


async def test_alarm_at_the_deadline_not_at_the_refresh(
    hass: HomeAssistant,
    freezer: FrozenDateTimeFactory,
    ha_config_dir: Path,
    location_dir: Path,
    mock_config_entry: MockConfigEntry,
    events: list[Event],
) -> None:
    """The timer turns the alarm on at the deadline, between two refreshes.

    The newest backup of ours is 2 hours old less one minute: the deadline
    comes a minute after set-up, four minutes before the next refresh.
    """
    now = dt_util.utcnow().replace(microsecond=0)
    made = await _own_backup(
        hass, ha_config_dir, location_dir, now - timedelta(hours=2, seconds=-60)
    )
    await _set_up(hass, mock_config_entry)
    deadline = made + timedelta(hours=2)

    state = hass.states.get(SENSOR)
    assert state.state == "off"
    assert state.attributes["device_class"] == "problem"
    assert dt_util.parse_datetime(state.attributes["last_backup"]) == made
    assert dt_util.parse_datetime(state.attributes["deadline"]) == deadline
    assert state.attributes["overdue_hours"] == 2
    assert _issue(hass, mock_config_entry) is None

    await _at(hass, freezer, deadline - timedelta(seconds=2))
    assert hass.states.get(SENSOR).state == "off"
    assert not events

    await _at(hass, freezer, deadline + timedelta(seconds=1))
    assert hass.states.get(SENSOR).state == "on"
    issue = _issue(hass, mock_config_entry)
    assert issue is not None
    assert issue.translation_key == "backup_overdue"
    assert issue.severity is ir.IssueSeverity.WARNING
    assert issue.translation_placeholders == {
        "location": "NAS",
        "since": dt_util.as_local(made).strftime("%Y-%m-%d %H:%M"),
        "hours": "2",
    }
    assert STRINGS["issues"]["backup_overdue"]["title"]
    assert len(events) == 1
    assert events[0].data == {
        "config_entry_id": mock_config_entry.entry_id,
        "location": "NAS",
        "last_backup": made.isoformat(),
        "overdue_since": deadline.isoformat(),
        "overdue_hours": 2,
    }

    # Refreshes go on: the same episode fires no second event.
    await _at(hass, freezer, deadline + timedelta(minutes=11))
    assert hass.states.get(SENSOR).state == "on"
    assert len(events) == 1


async def test_next_backup_clears_and_starts_a_new_episode(
    hass: HomeAssistant,
    freezer: FrozenDateTimeFactory,
    ha_config_dir: Path,
    location_dir: Path,
    mock_config_entry: MockConfigEntry,
    events: list[Event],
) -> None:
    """A backup clears sensor and issue; the next episode fires again."""
    now = dt_util.utcnow()
    await _own_backup(hass, ha_config_dir, location_dir, now - timedelta(hours=3))
    await _set_up(hass, mock_config_entry)
    assert hass.states.get(SENSOR).state == "on"
    assert _issue(hass, mock_config_entry) is not None
    assert len(events) == 1

    response = await call(hass, "create", mock_config_entry)
    made = dt_util.parse_datetime(response["backup"]["date"])
    assert made is not None
    state = hass.states.get(SENSOR)
    assert state.state == "off"
    assert dt_util.parse_datetime(state.attributes["last_backup"]) == made
    assert _issue(hass, mock_config_entry) is None

    await _at(hass, freezer, made + timedelta(hours=2, seconds=1))
    assert hass.states.get(SENSOR).state == "on"
    assert len(events) == 2
    assert events[1].data["last_backup"] == made.isoformat()


async def test_counts_on_while_the_location_is_down(
    hass: HomeAssistant,
    freezer: FrozenDateTimeFactory,
    ha_config_dir: Path,
    location_dir: Path,
    mock_config_entry: MockConfigEntry,
    events: list[Event],
) -> None:
    """A location that lists nothing still has the backup it had."""
    now = dt_util.utcnow()
    made = await _own_backup(
        hass, ha_config_dir, location_dir, now - timedelta(hours=1)
    )
    await _set_up(hass, mock_config_entry)

    await run(hass, shutil.rmtree, location_dir)
    await mock_config_entry.runtime_data.coordinator.async_refresh()
    await hass.async_block_till_done()
    assert hass.states.get("binary_sensor.nas_connected").state == "off"
    state = hass.states.get(SENSOR)
    assert state.state == "off"
    assert dt_util.parse_datetime(state.attributes["last_backup"]) == made

    await _at(hass, freezer, made + timedelta(hours=2, seconds=1))
    assert hass.states.get(SENSOR).state == "on"
    assert hass.states.get("binary_sensor.nas_connected").state == "off"
    assert len(events) == 1
    assert events[0].data["last_backup"] == made.isoformat()


def _stored(entry_id: str, time: datetime, *, alerted: bool) -> dict[str, Any]:
    return {
        "version": 1,
        "minor_version": 1,
        "key": STORAGE_KEY,
        "data": {
            entry_id: {"time": time.isoformat(), "backup": True, "alerted": alerted}
        },
    }


@pytest.mark.parametrize("alerted", [False, True])
async def test_restart_while_the_location_is_down(
    hass: HomeAssistant,
    hass_storage: dict[str, Any],
    ha_config_dir: Path,
    location_dir: Path,
    mock_config_entry: MockConfigEntry,
    events: list[Event],
    alerted: bool,
) -> None:
    """After a restart with the NAS down, the stored backup date counts.

    An episode whose event fired before the restart does not fire again.
    """
    made = dt_util.utcnow() - timedelta(hours=5)
    hass_storage[STORAGE_KEY] = _stored(
        mock_config_entry.entry_id, made, alerted=alerted
    )
    await run(hass, location_dir.rmdir)
    await _set_up(hass, mock_config_entry)

    assert hass.states.get("binary_sensor.nas_connected").state == "off"
    state = hass.states.get(SENSOR)
    assert state.state == "on"
    assert dt_util.parse_datetime(state.attributes["last_backup"]) == made
    assert _issue(hass, mock_config_entry) is not None
    assert len(events) == (0 if alerted else 1)


async def test_reference_is_stored(
    hass: HomeAssistant,
    hass_storage: dict[str, Any],
    freezer: FrozenDateTimeFactory,
    ha_config_dir: Path,
    location_dir: Path,
    mock_config_entry: MockConfigEntry,
) -> None:
    """The newest backup's date and the episode reach the store; removal drops it."""
    made = await _own_backup(
        hass, ha_config_dir, location_dir, dt_util.utcnow() - timedelta(hours=3)
    )
    await _set_up(hass, mock_config_entry)
    await _at(hass, freezer, dt_util.utcnow() + timedelta(seconds=SAVE_DELAY + 1))
    stored = hass_storage[STORAGE_KEY]["data"][mock_config_entry.entry_id]
    assert stored == {"time": made.isoformat(), "backup": True, "alerted": True}

    await hass.config_entries.async_remove(mock_config_entry.entry_id)
    await hass.async_block_till_done()
    assert _issue(hass, mock_config_entry) is None
    await _at(hass, freezer, dt_util.utcnow() + timedelta(seconds=SAVE_DELAY + 1))
    assert hass_storage[STORAGE_KEY]["data"] == {}


async def test_counts_only_backups_of_this_instance(
    hass: HomeAssistant,
    ha_config_dir: Path,
    location_dir: Path,
    mock_config_entry: MockConfigEntry,
) -> None:
    """Home Assistant's own backups of this instance count; others' do not."""
    ours = await instance_id.async_get(hass)
    now = dt_util.utcnow().replace(microsecond=0)
    core_made = now - timedelta(hours=1)
    archives = {
        # Made by Home Assistant's backup page: this instance's id, not our block.
        "core.tar": backup_json(
            slug="c0ffee01",
            date=core_made.isoformat(),
            extra={"instance_id": ours, "with_automatic_settings": True},
        ),
        # Newer, but from another Home Assistant.
        "other.tar": backup_json(
            slug="c0ffee02", date=now.isoformat(), extra={"instance_id": "someone"}
        ),
    }
    for name, metadata in archives.items():
        await run(
            hass,
            partial(
                build_archive,
                location_dir / name,
                [member("data/x", b"x")],
                metadata=metadata,
            ),
        )
    await _set_up(hass, mock_config_entry)
    state = hass.states.get(SENSOR)
    assert state.state == "off"
    assert dt_util.parse_datetime(state.attributes["last_backup"]) == core_made


async def test_a_backup_dated_in_the_future_does_not_silence_it(
    hass: HomeAssistant,
    ha_config_dir: Path,
    location_dir: Path,
    mock_config_entry: MockConfigEntry,
) -> None:
    """A planted backup of "ours" dated 2099 would hold the alarm off till then."""
    ours = await instance_id.async_get(hass)
    made = dt_util.utcnow().replace(microsecond=0) - timedelta(hours=100)
    archives = {
        "old.tar": backup_json(
            slug="c0ffee01", date=made.isoformat(), extra={"instance_id": ours}
        ),
        "planted.tar": backup_json(
            slug="c0ffee02",
            date="2099-01-01T00:00:00+00:00",
            extra={"instance_id": ours},
        ),
    }
    for name, metadata in archives.items():
        await run(
            hass,
            partial(
                build_archive,
                location_dir / name,
                [member("data/x", b"x")],
                metadata=metadata,
            ),
        )
    await _set_up(hass, mock_config_entry)
    state = hass.states.get(SENSOR)
    assert state.state == "on"
    assert dt_util.parse_datetime(state.attributes["last_backup"]) == made


async def test_no_backup_yet_counts_from_the_start(
    hass: HomeAssistant,
    freezer: FrozenDateTimeFactory,
    init_integration: MockConfigEntry,
    events: list[Event],
) -> None:
    """A location with no backup of ours is overdue once the hours passed."""
    started = dt_util.utcnow()
    state = hass.states.get(SENSOR)
    assert state.state == "off"
    assert "last_backup" not in state.attributes

    await _at(hass, freezer, started + timedelta(hours=2, seconds=1))
    assert hass.states.get(SENSOR).state == "on"
    issue = _issue(hass, init_integration)
    assert issue is not None
    assert issue.translation_key == "backup_overdue_never"
    assert issue.translation_placeholders["since"] == dt_util.as_local(
        started
    ).strftime("%Y-%m-%d %H:%M")
    assert STRINGS["issues"]["backup_overdue_never"]["title"]
    assert len(events) == 1
    assert events[0].data["last_backup"] is None


@pytest.mark.parametrize("entry_options", [{}])
async def test_option_turns_the_alarm_on_and_off(
    hass: HomeAssistant,
    freezer: FrozenDateTimeFactory,
    ha_config_dir: Path,
    location_dir: Path,
    mock_config_entry: MockConfigEntry,
    events: list[Event],
) -> None:
    """Off by default (unknown); the option applies at once, without a reload."""
    made = await _own_backup(
        hass, ha_config_dir, location_dir, dt_util.utcnow() - timedelta(hours=3)
    )
    await _set_up(hass, mock_config_entry)
    state = hass.states.get(SENSOR)
    assert state.state == "unknown"
    assert "deadline" not in state.attributes
    assert state.attributes["overdue_hours"] == 0

    hass.config_entries.async_update_entry(
        mock_config_entry, options={CONF_OVERDUE_HOURS: 4}
    )
    await hass.async_block_till_done()
    assert hass.states.get(SENSOR).state == "off"

    hass.config_entries.async_update_entry(
        mock_config_entry, options={CONF_OVERDUE_HOURS: 1}
    )
    await hass.async_block_till_done()
    assert hass.states.get(SENSOR).state == "on"
    assert _issue(hass, mock_config_entry) is not None
    assert len(events) == 1

    hass.config_entries.async_update_entry(
        mock_config_entry, options={CONF_OVERDUE_HOURS: 0}
    )
    await hass.async_block_till_done()
    assert hass.states.get(SENSOR).state == "unknown"
    assert _issue(hass, mock_config_entry) is None
    # Off means no timer either.
    await _at(hass, freezer, made + timedelta(hours=5))
    assert hass.states.get(SENSOR).state == "unknown"
    assert len(events) == 1


async def test_unload_stops_the_timer(
    hass: HomeAssistant,
    freezer: FrozenDateTimeFactory,
    init_integration: MockConfigEntry,
    events: list[Event],
) -> None:
    """An unloaded location raises nothing at its deadline."""
    started = dt_util.utcnow()
    assert await hass.config_entries.async_unload(init_integration.entry_id)
    await _at(hass, freezer, started + timedelta(hours=3))
    assert _issue(hass, init_integration) is None
    assert not events


async def test_reload_keeps_the_episode(
    hass: HomeAssistant,
    ha_config_dir: Path,
    location_dir: Path,
    mock_config_entry: MockConfigEntry,
    events: list[Event],
) -> None:
    """A reload shows the alarm again without a second event."""
    await _own_backup(
        hass, ha_config_dir, location_dir, dt_util.utcnow() - timedelta(hours=3)
    )
    await _set_up(hass, mock_config_entry)
    assert len(events) == 1
    assert await hass.config_entries.async_reload(mock_config_entry.entry_id)
    await hass.async_block_till_done()
    assert hass.states.get(SENSOR).state == "on"
    assert _issue(hass, mock_config_entry) is not None
    assert len(events) == 1


async def test_backup_page_backup_clears(
    hass: HomeAssistant,
    freezer: FrozenDateTimeFactory,
    init_integration: MockConfigEntry,
    hass_ws_client: Any,
    events: list[Event],
) -> None:
    """A backup Home Assistant's backup page stores in the location counts."""
    await setup_backup_component(hass)
    # Connected before the clock moves on: its access token would expire.
    client = await hass_ws_client(hass)
    await _at(hass, freezer, dt_util.utcnow() + timedelta(hours=2, seconds=1))
    assert hass.states.get(SENSOR).state == "on"
    assert len(events) == 1

    await ws(client, type="backup/generate", agent_ids=[agent_id(init_integration)])
    await hass.async_block_till_done()

    (backup,) = (await call(hass, "list", init_integration))["backups"]
    assert backup["own"] is False  # not made by our actions, but by this instance
    state = hass.states.get(SENSOR)
    assert state.state == "off"
    assert state.attributes["last_backup"] == (
        dt_util.parse_datetime(backup["date"]).isoformat()
    )
    assert _issue(hass, init_integration) is None
