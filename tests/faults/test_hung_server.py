"""A network share whose server stops answering (sshfs, sshd frozen by SIGSTOP).

The kernel sends every request on the share to sshfs, sshfs sends it to the
server, and the answer never comes: each thread that touches the share
blocks, for as long as the server stays frozen. Home Assistant must not
notice: the event loop keeps its pace, at most one executor thread per
location is stuck, every call on the location fails at once with "not
responding", another location goes on working, and everything recovers by
itself when the server answers again.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from unittest.mock import patch

from homeassistant.core import HomeAssistant
from homeassistant.exceptions import ServiceValidationError
from pytest_homeassistant_custom_component.common import MockConfigEntry

from tests.common import run

from .conftest import Share, SshfsShare
from .helpers import (
    LoopLag,
    attributes,
    call,
    call_error,
    every_action,
    repair_issue,
    setup_location,
    state,
    threads_in_our_code,
)

# The probe timeout in these tests (10 s in production); only timing is patched.
PROBE_TIMEOUT = 2.0
# How late the "not responding" answer may come after the timeout.
TIMEOUT_SLACK = 1.0
# Calls that must not start a thread while a probe hangs: "at once", well
# under the probe timeout (no call waited for the share).
AT_ONCE = PROBE_TIMEOUT / 4
# The event loop never waited for the share: no beat was held up for anything
# like the probe timeout (the frozen share blocks for as long as it is
# frozen). How small the loop's delays stay is the benchmarks' target
# (benchmarks/loop.py, TARGET), not a threshold of this test.
MAX_LOOP_LAG = AT_ONCE
ROUNDS = 3


async def _setup(
    hass: HomeAssistant, sshfs_share: SshfsShare, share: Share
) -> tuple[MockConfigEntry, MockConfigEntry]:
    with patch("custom_components.backup_offload.PROBE_TIMEOUT", PROBE_TIMEOUT):
        nas = await setup_location(hass, sshfs_share.path, title="NAS")
        disk = await setup_location(hass, share.path, title="Disk")
    assert nas.runtime_data.coordinator.runner._timeout == PROBE_TIMEOUT
    return nas, disk


async def _assert_fails_at_once(
    hass: HomeAssistant, service: str, entry: MockConfigEntry, **data: Any
) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    err = await call_error(hass, service, entry, **data)
    elapsed = loop.time() - start
    assert not isinstance(err, ServiceValidationError), service
    assert err.translation_key == "location_not_responding", service
    assert elapsed < AT_ONCE, f"{service} took {elapsed:.3f}s"


async def test_server_stops_answering(
    hass: HomeAssistant,
    ha_config_dir: Path,
    sshfs_share: SshfsShare,
    share: Share,
) -> None:
    """Frozen server: not responding in time, one thread, a free loop; recovers.

    The loop's delays are measured while every call on the frozen share is
    made, and through the recovery. The work done meanwhile on the other location
    (listing, verifying, a backup) is outside the measured windows: the CPU
    work of a healthy operation in its executor thread competes with the
    loop for the GIL, which is a matter for the benchmarks, not for a hung
    share.
    """
    nas, disk = await _setup(hass, sshfs_share, share)
    coordinator = nas.runtime_data.coordinator
    runner = coordinator.runner
    backup = (await call(hass, "create", nas, name="over ssh"))["backup"]
    backup_id = backup["backup_id"]
    other = (await call(hass, "create", disk, name="elsewhere"))["backup"]
    assert state(hass, "binary_sensor.nas_connected") == "on"
    loop = asyncio.get_running_loop()

    async with LoopLag() as outage:
        outage.phase = "stop"
        frozen = await run(hass, sshfs_share.server.stop)
        assert len(frozen) >= 2  # the listener and the connection's session

        # The first probe on the frozen share: not responding, in time.
        outage.phase = "first probe"
        start = loop.time()
        await coordinator.async_refresh()
        elapsed = loop.time() - start
        assert PROBE_TIMEOUT - 0.05 <= elapsed <= PROBE_TIMEOUT + TIMEOUT_SLACK
        assert state(hass, "binary_sensor.nas_connected") == "off"
        assert (
            attributes(hass, "binary_sensor.nas_connected")["reason"]
            == "not_responding"
        )
        issue = repair_issue(hass, nas)
        assert issue is not None
        assert issue.translation_placeholders["reason"] == "not_responding"
        assert runner.stuck
        # Exactly one thread is stuck on the share: the probe's.
        assert len(threads_in_our_code()) == 1, threads_in_our_code()

        # Every further call fails at once and starts no thread.
        outage.phase = "calls"
        for _ in range(ROUNDS):
            for service, data in every_action(backup_id):
                await _assert_fails_at_once(hass, service, nas, **data)
                assert len(threads_in_our_code()) == 1, threads_in_our_code()
            start = loop.time()
            await coordinator.async_refresh()
            assert loop.time() - start < AT_ONCE
            assert len(threads_in_our_code()) == 1, threads_in_our_code()
        assert state(hass, "binary_sensor.nas_connected") == "off"
        assert state(hass, "sensor.nas_state") == "idle"
        assert state(hass, "sensor.nas_last_failure") != "unknown"

    # Still frozen: another location is not affected.
    assert await run(hass, lambda: sshfs_share.server.frozen)
    assert (await call(hass, "list", disk))["backups"] == [other]
    verified = await call(hass, "verify", disk, backup_id=other["backup_id"])
    assert verified["valid"] is True
    newer_other = (await call(hass, "create", disk, name="meanwhile"))["backup"]
    assert len((await call(hass, "list", disk))["backups"]) == 2
    await disk.runtime_data.coordinator.async_refresh()
    assert state(hass, "binary_sensor.disk_connected") == "on"
    assert len(threads_in_our_code()) == 1, threads_in_our_code()

    async with LoopLag() as recovery:
        # The server answers again: everything recovers, no restart.
        recovery.phase = "resume"
        await run(hass, sshfs_share.server.resume)
        async with asyncio.timeout(PROBE_TIMEOUT * 5):
            while runner.stuck:  # noqa: ASYNC110 - the runner has no event
                await asyncio.sleep(0.02)
        await hass.async_block_till_done()
        assert threads_in_our_code() == []
        recovery.phase = "refresh"
        await coordinator.async_refresh()
        assert state(hass, "binary_sensor.nas_connected") == "on"
        assert repair_issue(hass, nas) is None
        recovery.phase = "list and verify"
        assert (await call(hass, "list", nas))["backups"] == [backup]
        verified = await call(hass, "verify", nas, backup_id=backup_id)
        assert verified["valid"] is True

    newer = (await call(hass, "create", nas, name="after"))["backup"]
    listing = await call(hass, "list", nas)
    assert [b["backup_id"] for b in listing["backups"]] == [
        newer["backup_id"],
        backup_id,
    ]
    assert newer_other["backup_id"] != newer["backup_id"]

    for window in (outage, recovery):
        assert window.beats > 0
        assert window.worst <= MAX_LOOP_LAG, window.report()
    assert threads_in_our_code() == []
    for entry in (nas, disk):
        await hass.config_entries.async_unload(entry.entry_id)
