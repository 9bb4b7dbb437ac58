"""Reloading a location while an operation runs on it.

A reload (after a reconfiguration, an entity enabled or disabled, or from
the menu) must neither hand the location to a second, idle manager nor let
the new load's refresh remove the running backup's temporary file; an
unload waits for the running operation, for a bounded time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
import logging
import os
from pathlib import Path
import sqlite3
import threading
import time
from typing import Any

from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

import custom_components.backup_offload as integration
from custom_components.backup_offload.const import STALE_TEMP_AGE
from custom_components.backup_offload.engine import jobs
from custom_components.backup_offload.engine.metadata import TEMP_PREFIX
from custom_components.backup_offload.manager import DATA_LOCATIONS

from .common import call, run, setup_location

# Waits that end at once when things work; generous for a loaded machine.
WAIT = 60.0
# A pause of the running backup longer than the stale-file age.
LONG_PAUSE = STALE_TEMP_AGE + 600


class HeldCreates:
    """Backups that pause in the database copy until the test releases them.

    Home Assistant's recorder is paused around the copy of its database; here
    that pause takes as long as the test wants, while the worker process has
    the archive open and half written.
    """

    def __init__(self) -> None:
        """Hold every backup from now on."""
        self.entered = threading.Event()
        self.gate = threading.Event()

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Make every backup of the actions pause (the recorder's lock)."""
        original = jobs.create

        def create(*args: Any, **kwargs: Any) -> jobs.CreateOutcome:
            return original(*args, **{**kwargs, "database_lock": self._paused})

        monkeypatch.setattr(jobs, "create", create)

    @contextmanager
    def _paused(self) -> Iterator[None]:
        self.entered.set()
        if not self.gate.wait(WAIT):
            raise TimeoutError("the test never released the backup")
        yield

    async def wait_entered(self) -> None:
        """Wait until a backup is paused in the middle of its archive."""
        async with asyncio.timeout(WAIT):
            while not self.entered.is_set():  # noqa: ASYNC110 - a thread's event
                await asyncio.sleep(0.01)

    def release(self) -> None:
        """Let the paused backup go on."""
        self.gate.set()


def _make_database(config_dir: Path) -> None:
    """Write the recorder's database (a real SQLite file) into the config."""
    with sqlite3.connect(config_dir / "home-assistant_v2.db") as db:
        db.execute("CREATE TABLE states (state TEXT)")
        db.execute("INSERT INTO states VALUES ('on')")
    db.close()


def _temporary(location: Path) -> list[Path]:
    return sorted(p for p in location.iterdir() if p.name.startswith(TEMP_PREFIX))


def _age(path: Path, seconds: float) -> None:
    when = time.time() - seconds
    os.utime(path, (when, when))


def _names(location: Path) -> list[str]:
    return sorted(p.name for p in location.iterdir())


def _state(hass: HomeAssistant, entity_id: str) -> str:
    state = hass.states.get(entity_id)
    assert state is not None, entity_id
    return state.state


@pytest.fixture
async def hold_creates(
    hass: HomeAssistant, ha_config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Callable[[], Awaitable[HeldCreates]]]:
    """Return how to hold the backups of the actions from then on.

    The config gets a database to copy. Whatever the test does, the backups
    are let go at its end.
    """
    made: list[HeldCreates] = []

    async def hold() -> HeldCreates:
        await run(hass, _make_database, ha_config_dir)
        creates = HeldCreates()
        creates.install(monkeypatch)
        made.append(creates)
        return creates

    yield hold
    for creates in made:
        creates.release()


@pytest.fixture
async def held(hold_creates: Callable[[], Awaitable[HeldCreates]]) -> HeldCreates:
    """Hold the backups of the actions from now on."""
    return await hold_creates()


@pytest.fixture
def short_unload(monkeypatch: pytest.MonkeyPatch) -> float:
    """Bound the unload's wait for a running operation to a moment."""
    monkeypatch.setattr(integration, "UNLOAD_TIMEOUT", 0.2)
    return 0.2


def _task(coro: Any) -> asyncio.Task[Any]:
    """Start ``coro`` outside Home Assistant's task tracking.

    Home Assistant's own wait for its tasks would wait for the held backup.
    """
    return asyncio.get_running_loop().create_task(coro)


async def _create_held(
    hass: HomeAssistant, entry: MockConfigEntry, held: HeldCreates, name: str
) -> asyncio.Task[dict[str, Any]]:
    creating = _task(call(hass, "create", entry, name=name))
    await held.wait_entered()
    return creating


async def test_reload_during_create_keeps_the_location_busy(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    location_dir: Path,
    held: HeldCreates,
    short_unload: float,
) -> None:
    """After the reload: `creating`, a second create is busy, the first ends well."""
    entry = init_integration
    creating = await _create_held(hass, entry, held, "long")
    assert await hass.config_entries.async_reload(entry.entry_id)
    assert entry.state is ConfigEntryState.LOADED
    assert _state(hass, "sensor.nas_state") == "creating"
    assert hass.states.get("sensor.nas_state").attributes["progress"] is not None

    with pytest.raises(HomeAssistantError) as err:
        await call(hass, "create", entry, name="second")
    assert err.value.translation_key == "busy"
    assert err.value.translation_placeholders == {
        "location": "NAS",
        "state": "creating",
    }
    # Nor may a delete or a purge run in the middle of it.
    with pytest.raises(HomeAssistantError) as err:
        await call(hass, "purge", entry)
    assert err.value.translation_key == "busy"

    held.release()
    backup = (await creating)["backup"]
    await hass.async_block_till_done()
    assert await run(hass, _names, location_dir) == sorted(
        [backup["file"], f"{backup['file']}.sha256"]
    )
    # The reloaded entry's entities show the end of it.
    assert _state(hass, "sensor.nas_state") == "idle"
    assert _state(hass, "sensor.nas_backups") == "1"
    assert [b["backup_id"] for b in (await call(hass, "list", entry))["backups"]] == [
        backup["backup_id"]
    ]


async def test_reload_keeps_the_running_backups_file(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    location_dir: Path,
    held: HeldCreates,
    short_unload: float,
) -> None:
    """The new load's refreshes leave the running backup's temporary file alone.

    The backup paused longer than the stale-file age (the recorder took its
    time): only the running operation and the file's lock protect it.
    """
    entry = init_integration
    creating = await _create_held(hass, entry, held, "paused")
    [temp] = await run(hass, _temporary, location_dir)
    await run(hass, _age, temp, LONG_PAUSE)

    assert await hass.config_entries.async_reload(entry.entry_id)
    assert await run(hass, temp.exists)
    await entry.runtime_data.coordinator.async_refresh()
    assert await run(hass, temp.exists)

    held.release()
    backup = (await creating)["backup"]
    assert await run(hass, _names, location_dir) == sorted(
        [backup["file"], f"{backup['file']}.sha256"]
    )


async def test_restore_stays_exclusive_across_a_reload(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    ha_config_dir: Path,
    tmp_path: Path,
    hold_creates: Callable[[], Awaitable[HeldCreates]],
    short_unload: float,
) -> None:
    """A backup on a reloaded location still keeps a restore elsewhere out."""
    nas = init_integration
    backup = (await call(hass, "create", nas, name="to restore"))["backup"]
    held = await hold_creates()
    usb_dir = tmp_path / "usb"
    await run(hass, usb_dir.mkdir)
    usb = await setup_location(hass, usb_dir, title="USB", require_mount=False)

    creating = await _create_held(hass, usb, held, "on usb")
    assert await hass.config_entries.async_reload(usb.entry_id)
    restore = {"backup_id": backup["backup_id"], "safety_backup": False}
    for data in ({**restore, "paths": ["automations.yaml"]}, restore):
        with pytest.raises(HomeAssistantError) as err:
            await call(hass, "restore", nas, **data)
        assert err.value.translation_key == "busy"
        assert err.value.translation_placeholders == {
            "location": "USB",
            "state": "creating",
        }

    held.release()
    await creating
    assert _state(hass, "sensor.usb_state") == "idle"
    # Done: the restore runs now.
    restored = await call(hass, "restore", nas, **restore, paths=["automations.yaml"])
    assert restored["restored"] == ["automations.yaml"]


def _hold_job(
    gate: threading.Event, entered: threading.Event, original: Callable[..., Any]
) -> Callable[..., Any]:
    """Return a job that passes its probe, then waits for ``gate``."""

    def held(*args: Any, **kwargs: Any) -> Any:
        *job_args, checked = args  # the runner passes it last
        checked()
        entered.set()
        assert gate.wait(WAIT)
        return original(*job_args, lambda: None, **kwargs)

    return held


async def test_reload_during_restore_keeps_it_exclusive(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    ha_config_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    short_unload: float,
) -> None:
    """A restore running on a reloaded location: shown, and still exclusive."""
    nas = init_integration
    backup = (await call(hass, "create", nas, name="to restore"))["backup"]
    usb_dir = tmp_path / "usb"
    await run(hass, usb_dir.mkdir)
    usb = await setup_location(hass, usb_dir, title="USB", require_mount=False)
    gate, entered = threading.Event(), threading.Event()
    monkeypatch.setattr(
        jobs, "restore_extract", _hold_job(gate, entered, jobs.restore_extract)
    )
    restoring = _task(
        call(
            hass,
            "restore",
            nas,
            backup_id=backup["backup_id"],
            paths=["automations.yaml"],
            safety_backup=False,
        )
    )
    try:
        async with asyncio.timeout(WAIT):
            while not entered.is_set():  # noqa: ASYNC110 - a thread's event
                await asyncio.sleep(0.01)

        assert await hass.config_entries.async_reload(nas.entry_id)
        assert _state(hass, "sensor.nas_state") == "restoring"
        for entry in (nas, usb):
            with pytest.raises(HomeAssistantError) as err:
                await call(hass, "create", entry)
            assert err.value.translation_placeholders == {
                "location": "NAS",
                "state": "restoring",
            }
    finally:
        gate.set()
    assert (await restoring)["restored"] == ["automations.yaml"]
    assert _state(hass, "sensor.nas_state") == "idle"
    await call(hass, "create", usb)


async def test_unload_waits_for_the_running_operation(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    location_dir: Path,
    held: HeldCreates,
) -> None:
    """The unload returns once the running backup is done, not before."""
    entry = init_integration
    creating = await _create_held(hass, entry, held, "before unload")

    async def unload() -> tuple[bool, bool]:
        unloaded = await hass.config_entries.async_unload(entry.entry_id)
        return unloaded, creating.done()

    unloading = _task(unload())
    await asyncio.sleep(0.5)
    assert not unloading.done()
    assert entry.state is ConfigEntryState.UNLOAD_IN_PROGRESS

    held.release()
    backup = (await creating)["backup"]
    # Unloaded, and the backup was done by then.
    assert await unloading == (True, True)
    assert entry.state is ConfigEntryState.NOT_LOADED
    assert await run(hass, _names, location_dir) == sorted(
        [backup["file"], f"{backup['file']}.sha256"]
    )


async def test_unload_wait_is_bounded(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    location_dir: Path,
    held: HeldCreates,
    short_unload: float,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """After the bound the unload ends; the backup goes on, still exclusive."""
    entry = init_integration
    creating = await _create_held(hass, entry, held, "outlasts")
    loop = asyncio.get_running_loop()
    start = loop.time()
    with caplog.at_level(logging.INFO):
        assert await hass.config_entries.async_unload(entry.entry_id)
    elapsed = loop.time() - start
    assert short_unload <= elapsed < short_unload + 5
    assert entry.state is ConfigEntryState.NOT_LOADED
    assert "NAS: waiting for the running operation (creating) to end" in caplog.text
    assert "NAS: the running operation (creating) goes on" in caplog.text
    assert not creating.done()
    [manager] = hass.data[DATA_LOCATIONS].values()
    assert manager.busy

    # Loaded again meanwhile: it shows the backup and refuses a second one.
    assert await hass.config_entries.async_setup(entry.entry_id)
    assert _state(hass, "sensor.nas_state") == "creating"
    with pytest.raises(HomeAssistantError) as err:
        await call(hass, "create", entry)
    assert err.value.translation_key == "busy"

    held.release()
    backup = (await creating)["backup"]
    await hass.async_block_till_done()
    assert _state(hass, "sensor.nas_state") == "idle"
    assert _state(hass, "sensor.nas_backups") == "1"
    assert await run(hass, _names, location_dir) == sorted(
        [backup["file"], f"{backup['file']}.sha256"]
    )
