"""The fault tests' loop monitor sees a stalled loop (it must be able to fail)."""

from __future__ import annotations

import asyncio
import time

from homeassistant.core import HomeAssistant

from .helpers import LoopLag


async def test_loop_lag_counts_a_busy_loop(hass: HomeAssistant) -> None:
    """30 ms of work on the loop is counted, not explained away."""
    async with LoopLag() as lag:
        await asyncio.sleep(0.02)
        lag.phase = "busy"
        # 30 ms of the loop thread's own CPU time: the monitor subtracts what
        # the thread spent waiting for a CPU, so a busy machine must not make
        # the work shorter than that.
        end = time.thread_time() + 0.030
        while time.thread_time() < end:  # work on the loop thread
            pass
        await asyncio.sleep(0.02)
    assert lag.beats > 0
    assert lag.worst >= 0.020, lag.report()
    assert any(beat[0] == "busy" for beat in lag.late), lag.report()
