"""Home Assistant killed (SIGKILL) in the middle of writing a backup.

A real Home Assistant process (the `instance` fixture) writes a
backup to a share through the `create` action and is killed while the
archive is half written.

- Killed with its worker process, as by a power cut: the hidden temporary
  file stays behind. At the next start the listing is right (the partial
  file is never a backup), a fresh temporary file is left alone (it could be
  another instance's backup in progress), and a stale one is removed.
- Killed alone (the OOM killer, `kill -9`): the worker process notices that
  Home Assistant is gone, removes its temporary file and exits.
"""

from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path
import signal
import threading
import time
from typing import Any

from homeassistant.core import HomeAssistant
import pytest

from custom_components.backup_offload.const import STALE_TEMP_AGE
from custom_components.backup_offload.engine.metadata import TEMP_PREFIX
from tests.common import run
from tests.engine.helpers import children, running
from tests.live_hass import Instance, call_action, onboard

from .conftest import Share
from .helpers import backups_on_disk, call, setup_location, state, write_random

# How far the killed backup gets before the kill: percent of the data read,
# and bytes of archive on the share.
KILL_AT = 10
KILL_AFTER = 1 << 20
WAIT = 60.0


def _add_location(hass: Instance, path: Path) -> str:
    """Add the share as a location through the config flow; return the entry id."""
    flow = hass.request(
        "POST", "/api/config/config_entries/flow", {"handler": "backup_offload"}
    )
    result = hass.request(
        "POST",
        f"/api/config/config_entries/flow/{flow['flow_id']}",
        {"name": "NAS", "path": str(path), "require_mount": True},
    )
    if result.get("step_id") == "in_ram":
        # The share here is a tmpfs: the flow asks to confirm a RAM disk.
        result = hass.request(
            "POST", f"/api/config/config_entries/flow/{flow['flow_id']}", {}
        )
    assert result["type"] == "create_entry", result
    return str(result["result"]["entry_id"])


def _temporary_bytes(location: Path) -> int:
    """Return the size of our temporary files in the location (blocking)."""
    total = 0
    for entry in location.iterdir():
        if entry.name.startswith(TEMP_PREFIX):
            with contextlib.suppress(FileNotFoundError):  # renamed meanwhile
                total += entry.stat().st_size
    return total


def _kill_during_create(
    hass: Instance, location: Path, *, with_worker: bool
) -> dict[str, Any]:
    """Make one good backup, then SIGKILL Home Assistant during the next one.

    ``with_worker``: its worker process is killed at the same moment.
    Returns the good backup's metadata (blocking).
    """
    onboard(hass)
    entry_id = _add_location(hass, location)
    config = location.parent / "config"
    good = call_action(hass, "create", config_entry_id=entry_id, name="good")["backup"]
    # Incompressible data, so the next backup takes a while to write.
    write_random(config / "media.bin", 48 << 20)

    outcome: list[BaseException] = []

    def create() -> None:
        try:
            call_action(hass, "create", config_entry_id=entry_id, name="killed")
        except BaseException as err:  # the connection dies with the process
            outcome.append(err)

    caller = threading.Thread(target=create, name="killed create")
    caller.start()
    deadline = time.monotonic() + WAIT
    while True:
        attributes = hass.request("GET", "/api/states/sensor.nas_state")["attributes"]
        written = _temporary_bytes(location)
        # Mid-write: the backup is under way and data has reached the share.
        if (attributes.get("progress") or 0) >= KILL_AT and written >= KILL_AFTER:
            break
        if time.monotonic() > deadline or not caller.is_alive():
            pytest.fail(f"the backup did not get far: {attributes}, {written} B")
        time.sleep(0.02)
    workers = children(hass.process.pid)
    assert len(workers) == 1, workers
    if with_worker:
        os.killpg(hass.process.pid, signal.SIGKILL)
    else:
        hass.process.send_signal(signal.SIGKILL)
    assert hass.process.wait(timeout=WAIT) == -signal.SIGKILL
    deadline = time.monotonic() + WAIT
    while running(workers[0]):
        assert time.monotonic() < deadline, "the worker process outlived the kill"
        time.sleep(0.02)
    caller.join(timeout=WAIT)
    assert outcome, "the create answered although Home Assistant was killed"
    return dict(good)


def _age(path: Path, seconds: float) -> None:
    when = time.time() - seconds
    os.utime(path, (when, when))


async def test_killed_during_create(
    hass: HomeAssistant,
    share: Share,
    instance: Instance,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The partial file is no backup, stays while fresh, goes once stale."""
    good = await run(
        hass,
        functools.partial(_kill_during_create, with_worker=True),
        instance,
        share.path,
    )
    archives, sidecars, temporary = await run(hass, backups_on_disk, share.path)
    assert archives == {good["file"]}
    assert sidecars == {good["file"] + ".sha256"}
    assert len(temporary) == 1, temporary
    partial = share.path / temporary.pop()
    assert partial.name.startswith(TEMP_PREFIX)
    assert (await run(hass, partial.stat)).st_size >= KILL_AFTER

    # The next start (of the same configuration): the listing is right; the
    # partial file is recent, so it is left alone.
    hass.config.config_dir = str(share.path.parent / "config")
    entry = await setup_location(hass, share.path)
    listing = await call(hass, "list", entry)
    assert [(b["backup_id"], b["size"]) for b in listing["backups"]] == [
        (good["backup_id"], good["size"])
    ]
    assert listing["invalid"] == {}
    assert state(hass, "sensor.nas_backups") == "1"
    assert state(hass, "sensor.nas_used_space") != "unavailable"
    assert await run(hass, partial.exists)

    # Once it is older than STALE_TEMP_AGE, the next start removes it.
    assert await hass.config_entries.async_unload(entry.entry_id)
    await run(hass, _age, partial, STALE_TEMP_AGE + 60)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    assert not await run(hass, partial.exists)
    assert f"removed stale temporary files: {partial.name}" in caplog.text
    archives, sidecars, temporary = await run(hass, backups_on_disk, share.path)
    assert (archives, sidecars, temporary) == (
        {good["file"]},
        {good["file"] + ".sha256"},
        set(),
    )
    listing = await call(hass, "list", entry)
    assert [b["backup_id"] for b in listing["backups"]] == [good["backup_id"]]
    verified = await call(hass, "verify", entry, backup_id=good["backup_id"])
    assert verified["valid"] is True
    assert state(hass, "binary_sensor.nas_connected") == "on"
    await hass.config_entries.async_unload(entry.entry_id)


async def test_killed_alone(
    hass: HomeAssistant,
    share: Share,
    instance: Instance,
) -> None:
    """Home Assistant killed, its worker not: the worker leaves nothing behind."""
    good = await run(
        hass,
        functools.partial(_kill_during_create, with_worker=False),
        instance,
        share.path,
    )
    archives, sidecars, temporary = await run(hass, backups_on_disk, share.path)
    assert (archives, sidecars, temporary) == (
        {good["file"]},
        {good["file"] + ".sha256"},
        set(),
    )
    hass.config.config_dir = str(share.path.parent / "config")
    entry = await setup_location(hass, share.path)
    listing = await call(hass, "list", entry)
    assert [b["backup_id"] for b in listing["backups"]] == [good["backup_id"]]
    assert listing["invalid"] == {}
    await hass.config_entries.async_unload(entry.entry_id)
