"""Event-loop responsiveness while backups run inside Home Assistant.

Runs Home Assistant's own test harness (``async_test_home_assistant``): a
real ``HomeAssistant`` object with its real event loop, executor, service
registry and integration loader, in this process, so that a heartbeat task
on that loop sees every delay a backup causes (blocking calls and the GIL
held by worker threads alike). Chosen over a separate ``hass`` process
because the measurement must run on Home Assistant's loop itself; the only
difference to a production instance is the number of other integrations.

The heartbeat sleeps 5 ms in a loop and records how late it wakes up. While
it runs, each operation is called as a user would: this integration's
actions ``create``, ``list``, ``verify`` and ``restore`` (partial, a few
files, live) and Home Assistant core's own ``backup.create`` (its ``backup``
integration with the local agent) on the same config directory.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
import contextlib
import gc
from pathlib import Path
import statistics
import threading
import time
from typing import Any

INTERVAL = 0.005


class Heartbeat:
    """Wakes up every ``INTERVAL`` and records how late it was."""

    def __init__(self) -> None:
        """Start with no samples."""
        self.samples: list[float] = []
        self._task: asyncio.Task[None] | None = None
        self._running = False

    async def _beat(self) -> None:
        loop = asyncio.get_running_loop()
        while self._running:
            start = loop.time()
            await asyncio.sleep(INTERVAL)
            self.samples.append(max(0.0, loop.time() - start - INTERVAL))

    def start(self) -> None:
        """Start beating on the running loop."""
        self._running = True
        self._task = asyncio.get_running_loop().create_task(self._beat())

    async def stop(self) -> None:
        """Stop and wait for the last beat."""
        self._running = False
        if self._task is not None:
            await self._task


def lag_stats(samples: list[float]) -> dict[str, float]:
    """Return p50/p99/max of the lags in milliseconds."""
    if not samples:
        return {"p50_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0, "beats": 0}
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p99_ms": round(p99 * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
        "beats": len(ordered),
    }


class GcPauses:
    """Records garbage collections that ran on the event loop's thread.

    A collection holds the GIL for its whole duration; on the loop's thread it
    is a loop stall whoever allocated the objects (the full collections of a
    large heap are Home Assistant's own, idle or not).
    """

    def __init__(self) -> None:
        """Record nothing yet."""
        self.pauses: list[tuple[float, int]] = []
        self._loop_thread = threading.get_ident()
        self._start = 0.0

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if threading.get_ident() != self._loop_thread:
            return
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.pauses.append((time.perf_counter() - self._start, info["generation"]))

    def __enter__(self) -> GcPauses:
        """Start recording."""
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop recording."""
        gc.callbacks.remove(self._callback)

    def stats(self) -> dict[str, float]:
        """Return the longest collection on the loop's thread and how many."""
        longest = max((pause for pause, _ in self.pauses), default=0.0)
        full = sum(1 for _, generation in self.pauses if generation == 2)
        return {
            "gc_on_loop_max_ms": round(longest * 1000, 2),
            "gc_full_on_loop": full,
        }


async def measured(op: Callable[[], Awaitable[Any]]) -> tuple[dict[str, float], Any]:
    """Run ``op`` under a heartbeat; return the lag statistics and its result."""
    beat = Heartbeat()
    await asyncio.sleep(0.05)  # settle
    with GcPauses() as pauses:
        beat.start()
        start = time.perf_counter()
        try:
            result = await op()
        finally:
            await asyncio.sleep(INTERVAL * 2)
            await beat.stop()
    stats = lag_stats(beat.samples) | {"seconds": round(time.perf_counter() - start, 3)}
    return stats | pauses.stats(), result


async def run_scenarios(  # noqa: PLR0915 - one scenario after the other
    config_dir: Path,
    locations: dict[str, Path],
    ha_backups: dict[str, Callable[[], contextlib.AbstractContextManager[Path]]],
    *,
    restore_paths: list[str],
    repeat: int = 1,
    slow_repeat: int = 1,
    idle_seconds: float = 1.0,
) -> dict[str, dict[str, Any]]:
    """Run every operation against every location; return lag stats by name.

    ``locations`` maps a label (``tmpfs``, ``slow``) to a mounted directory;
    ``ha_backups`` maps the same labels to a context manager that mounts the
    same kind of file system at ``config_dir/backups`` (core's local agent).
    """
    from homeassistant import loader
    from homeassistant.setup import async_setup_component
    from pytest_homeassistant_custom_component.common import (
        MockConfigEntry,
        async_test_home_assistant,
    )

    from custom_components.backup_offload.const import (
        CONF_PATH,
        CONF_REQUIRE_MOUNT,
        DOMAIN,
    )

    results: dict[str, dict[str, Any]] = {}

    def record(name: str, stats: dict[str, Any]) -> None:
        runs = results.setdefault(name, {"runs": []})["runs"]
        runs.append(stats)

    async with async_test_home_assistant(config_dir=str(config_dir)) as hass:
        hass.data.pop(loader.DATA_CUSTOM_COMPONENTS, None)  # allow ours
        with contextlib.suppress(ImportError):
            from homeassistant.helpers.backup import async_initialize_backup

            async_initialize_backup(hass)
        assert await async_setup_component(hass, "backup", {})
        await hass.async_block_till_done()

        idle, _ = await measured(lambda: asyncio.sleep(idle_seconds))
        record("idle", idle)

        for label, location in locations.items():
            entry = MockConfigEntry(
                domain=DOMAIN,
                title=f"bench-{label}",
                unique_id=str(location),
                data={CONF_PATH: str(location), CONF_REQUIRE_MOUNT: True},
                options={},
            )
            entry.add_to_hass(hass)
            assert await hass.config_entries.async_setup(entry.entry_id)
            await hass.async_block_till_done()

            async def call(service: str, **data: Any) -> Any:
                return await hass.services.async_call(
                    DOMAIN,
                    service,
                    {"config_entry_id": entry.entry_id, **data},  # noqa: B023
                    blocking=True,
                    return_response=True,
                )

            count = repeat if label == "tmpfs" else slow_repeat
            backup_id = ""
            for _ in range(count):
                gc.collect()
                stats, response = await measured(lambda: call("create"))
                backup_id = response["backup"]["backup_id"]
                record(f"ours create ({label})", stats)
            for _ in range(count):
                stats, _ = await measured(lambda: call("list"))
                record(f"ours list ({label})", stats)
            for _ in range(count):
                stats, response = await measured(
                    lambda: call("verify", backup_id=backup_id)  # noqa: B023
                )
                assert response["valid"], response
                record(f"ours verify ({label})", stats)
            if hass.services.has_service(DOMAIN, "restore"):
                for _ in range(count):
                    stats, _ = await measured(
                        lambda: call(
                            "restore",
                            backup_id=backup_id,  # noqa: B023
                            paths=restore_paths,
                            restart=False,
                            safety_backup=False,
                        )
                    )
                    record(f"ours partial restore ({label})", stats)
            assert await hass.config_entries.async_unload(entry.entry_id)
            await hass.async_block_till_done()

        for label, make_mount in ha_backups.items():
            # Mounting blocks: not on the loop.
            mount = make_mount()
            await hass.async_add_executor_job(mount.__enter__)
            try:
                for _ in range(repeat if label == "tmpfs" else slow_repeat):
                    gc.collect()
                    stats, _ = await measured(
                        lambda: hass.services.async_call(
                            "backup", "create", {}, blocking=True
                        )
                    )
                    record(f"HA core backup.create ({label})", stats)
                await hass.async_block_till_done()
            finally:
                await hass.async_add_executor_job(mount.__exit__, None, None, None)
        await hass.async_block_till_done()
    # The harness leaves Home Assistant's import executor running (the test
    # fixture shuts it down): stop it, so no thread outlives the benchmark.
    executor = getattr(hass, "import_executor", None)
    if executor is not None:
        executor.shutdown(wait=True)

    for value in results.values():
        runs = value["runs"]
        value["p50_ms"] = statistics.median(run["p50_ms"] for run in runs)
        value["p99_ms"] = statistics.median(run["p99_ms"] for run in runs)
        value["max_ms"] = max(run["max_ms"] for run in runs)
        value["seconds"] = statistics.median(run.get("seconds", 0) for run in runs)
        value["gc_on_loop_max_ms"] = max(run["gc_on_loop_max_ms"] for run in runs)
        value["gc_full_on_loop"] = sum(run["gc_full_on_loop"] for run in runs)
    return results
