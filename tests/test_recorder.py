"""The recorder is paused around the database copy and always resumed."""

from __future__ import annotations

import os
from pathlib import Path
import sqlite3
from unittest.mock import patch

from homeassistant.components.recorder import Recorder
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.components.recorder.common import (
    async_wait_recording_done,
)

from custom_components.backup_offload.const import DOMAIN

from .common import in_executor, setup_location
from .mounts import tmpfs


@pytest.fixture
def recorder_db_url(config_dir: Path) -> str:
    """Keep the recorder's database where Home Assistant keeps it: a file."""
    return f"sqlite:///{config_dir}/home-assistant_v2.db"


def _spy(recorder: Recorder) -> tuple[list[str], object, object]:
    calls: list[str] = []
    lock, unlock = recorder.lock_database, recorder.unlock_database

    async def spy_lock() -> bool:
        calls.append("lock")
        return await lock()

    def spy_unlock() -> bool:
        calls.append("unlock")
        return unlock()

    return calls, spy_lock, spy_unlock


async def _assert_recording(hass: HomeAssistant) -> None:
    """The recorder writes again (it would hang if still paused)."""
    hass.states.async_set("sensor.after_backup", "1")
    await async_wait_recording_done(hass)


async def test_paused_and_resumed(
    hass: HomeAssistant, recorder_mock: Recorder, init_integration: MockConfigEntry
) -> None:
    """A backup with the database locks and unlocks the recorder once."""
    calls, spy_lock, spy_unlock = _spy(recorder_mock)
    with (
        patch.object(recorder_mock, "lock_database", spy_lock),
        patch.object(recorder_mock, "unlock_database", spy_unlock),
    ):
        response = await hass.services.async_call(
            DOMAIN,
            "create",
            {"config_entry_id": init_integration.entry_id},
            blocking=True,
            return_response=True,
        )
    assert response["backup"]["database_included"] is True
    assert calls == ["lock", "unlock"]
    await _assert_recording(hass)


async def test_resumed_when_create_fails(
    hass: HomeAssistant,
    recorder_mock: Recorder,
    ha_config_dir: Path,
    tmp_path: Path,
) -> None:
    """The disk fills up while the database is copied: the recorder resumes."""
    await async_wait_recording_done(hass)
    database = ha_config_dir / "home-assistant_v2.db"

    def grow_database() -> None:
        with sqlite3.connect(database) as db:
            db.execute("CREATE TABLE IF NOT EXISTS ballast (data BLOB)")
            db.execute("INSERT INTO ballast VALUES (?)", (os.urandom(3 << 20),))

    await hass.async_add_executor_job(grow_database)
    mount_point = tmp_path / "small"
    async with in_executor(hass, tmpfs(mount_point, size="1m")):
        entry = await setup_location(hass, mount_point)
        calls, spy_lock, spy_unlock = _spy(recorder_mock)
        with (
            patch.object(recorder_mock, "lock_database", spy_lock),
            patch.object(recorder_mock, "unlock_database", spy_unlock),
            pytest.raises(HomeAssistantError) as err,
        ):
            await hass.services.async_call(
                DOMAIN,
                "create",
                {"config_entry_id": entry.entry_id},
                blocking=True,
            )
        assert err.value.translation_key == "insufficient_space"
        assert calls == ["lock", "unlock"]
        await _assert_recording(hass)
        await hass.config_entries.async_unload(entry.entry_id)
