"""Reloading a location whose network share stops answering (sshfs, SIGSTOP).

The thread stuck on the frozen share belongs to the location, not to one
load of its entry: reloading the entry (as a reconfiguration does) must not
start another thread on the share each time.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from unittest.mock import patch

from homeassistant.core import HomeAssistant

from tests.common import run

from .conftest import SshfsShare
from .helpers import (
    attributes,
    call,
    call_error,
    setup_location,
    state,
    threads_in_our_code,
)

# The probe timeout in these tests (10 s in production); only timing is patched.
PROBE_TIMEOUT = 2.0
RELOADS = 3
# A reload on the frozen share answers at once: it starts no probe.
AT_ONCE = 1.0


async def test_reloads_on_a_hung_share_keep_one_thread(
    hass: HomeAssistant, ha_config_dir: Path, sshfs_share: SshfsShare
) -> None:
    """Frozen server: each reload is quick, shows the outage, adds no thread."""
    with patch("custom_components.backup_offload.PROBE_TIMEOUT", PROBE_TIMEOUT):
        nas = await setup_location(hass, sshfs_share.path, title="NAS")
    backup = (await call(hass, "create", nas, name="over ssh"))["backup"]
    runner = nas.runtime_data.coordinator.runner

    await run(hass, sshfs_share.server.stop)
    await nas.runtime_data.coordinator.async_refresh()
    assert runner.stuck
    assert len(threads_in_our_code()) == 1, threads_in_our_code()

    loop = asyncio.get_running_loop()
    for _ in range(RELOADS):
        start = loop.time()
        assert await hass.config_entries.async_reload(nas.entry_id)
        assert loop.time() - start < AT_ONCE
        assert nas.runtime_data.coordinator.runner is runner
        assert state(hass, "binary_sensor.nas_connected") == "off"
        assert (
            attributes(hass, "binary_sensor.nas_connected")["reason"]
            == "not_responding"
        )
        await nas.runtime_data.coordinator.async_refresh()
        err = await call_error(hass, "list", nas)
        assert err.translation_key == "location_not_responding"
        assert len(threads_in_our_code()) == 1, threads_in_our_code()

    # The server answers again: the location recovers, no restart.
    await run(hass, sshfs_share.server.resume)
    async with asyncio.timeout(PROBE_TIMEOUT * 5):
        while runner.stuck:  # noqa: ASYNC110 - the runner has no event
            await asyncio.sleep(0.02)
    await nas.runtime_data.coordinator.async_refresh()
    assert state(hass, "binary_sensor.nas_connected") == "on"
    assert (await call(hass, "list", nas))["backups"] == [backup]
    assert threads_in_our_code() == []
    await hass.config_entries.async_unload(nas.entry_id)
