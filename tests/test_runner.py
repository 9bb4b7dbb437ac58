"""A hung location costs at most one thread, and recovers by itself."""

from __future__ import annotations

from collections.abc import Callable
import threading

from homeassistant.core import HomeAssistant
import pytest

from custom_components.backup_offload.engine.errors import LocationUnavailableError
from custom_components.backup_offload.runner import LocationRunner


class Share:
    """A stand-in for a share: calls block while it is hung."""

    def __init__(self) -> None:
        self.awake = threading.Event()
        self.awake.set()
        self.calls = 0
        self.lock = threading.Lock()

    def probe(self) -> str:
        with self.lock:
            self.calls += 1
        self.awake.wait(timeout=30)
        return "ok"

    def operation(self, checked: Callable[[], None]) -> str:
        self.probe()
        checked()
        return "done"


async def test_hung_probe_reports_not_responding(hass: HomeAssistant) -> None:
    """The first call times out; later calls fail at once without a thread."""
    share = Share()
    runner = LocationRunner(hass, "NAS", probe_timeout=0.2)
    assert await runner.run(share.probe) == "ok"

    share.awake.clear()
    with pytest.raises(LocationUnavailableError) as err:
        await runner.run(share.probe)
    assert err.value.location_reason == "not_responding"
    assert runner.stuck
    for _ in range(5):
        with pytest.raises(LocationUnavailableError):
            await runner.run(share.probe)
        with pytest.raises(LocationUnavailableError):
            await runner.run_checked(share.operation)
    # One probe reached the share while it hung, not six or eleven.
    assert share.calls == 2

    share.awake.set()
    await hass.async_block_till_done()
    while runner.stuck:
        await hass.async_add_executor_job(share.awake.wait)
        await hass.async_block_till_done()
    assert await runner.run_checked(share.operation) == "done"
    assert not runner.running


async def test_operation_only_its_probe_is_timed(hass: HomeAssistant) -> None:
    """Once its probe passed, an operation may take longer than the timeout."""
    runner = LocationRunner(hass, "NAS", probe_timeout=0.2)
    release = threading.Event()

    def slow(checked: Callable[[], None]) -> str:
        checked()
        release.wait(timeout=0.6)
        return "slow but fine"

    task = hass.async_create_task(runner.run_checked(slow))
    await hass.async_add_executor_job(release.wait, 0.5)
    assert runner.running
    release.set()
    assert await task == "slow but fine"


async def test_errors_pass_through(hass: HomeAssistant) -> None:
    """An error of the job reaches the caller; the runner stays usable."""
    runner = LocationRunner(hass, "NAS", probe_timeout=1)

    def broken() -> None:
        raise LocationUnavailableError("gone", "not_found")

    with pytest.raises(LocationUnavailableError) as err:
        await runner.run(broken)
    assert err.value.location_reason == "not_found"
    assert not runner.stuck
    assert await runner.run(lambda: 42) == 42
