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
integration with the local agent) on the same config directory. Our heavy
operations run in a worker process (``worker.py``); the "in a thread" rows
run the very same code in the executor thread instead, to show why.

These machines are shared VMs, and the machine itself sometimes stops
running userspace for a few to tens of milliseconds (Home Assistant idle
sees it too). A real-time probe per CPU in other processes
(``benchmarks.rtprobe``) records those stalls; "max without machine stalls"
is each beat's lag minus the time the CPU the loop thread woke up on was
stalled meanwhile: the lag Home Assistant's own threads caused.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Awaitable, Callable
import contextlib
from dataclasses import dataclass
import gc
import json
import os
from pathlib import Path
import statistics
import subprocess
import sys
import threading
import time
from typing import Any
from unittest.mock import patch

from .harness import add_location, running_hass

INTERVAL = 0.005
TARGET = 0.010
"""The target: no beat later than this (machine stalls not counted).

Home Assistant's loop must not notice our work. The fault tests check that
the loop never waits for a share; how small its delays stay is measured
here, against this target, and reported with it.
"""


@dataclass(frozen=True, slots=True)
class Late:
    """A late beat, and where the loop thread's time went meanwhile."""

    due: float
    """When it was due (time.monotonic)."""
    lag: float
    cpu: int
    """The CPU the loop thread woke up on."""
    running: float
    """Time the loop thread was on a CPU (running callbacks, or stolen)."""
    cpu_wait: float
    """Time it was ready to run but waited for a CPU."""


class Heartbeat:
    """Wakes up every ``INTERVAL`` and records how late it was."""

    def __init__(self) -> None:
        """Start with no samples."""
        self.samples: list[float] = []
        self.late: list[Late] = []
        """The beats more than 1 ms late."""
        self._task: asyncio.Task[None] | None = None
        self._running = False
        self._stat: int | None = None
        self._schedstat: int | None = None

    def _cpu(self) -> int:
        """Return the CPU the loop thread last ran on (-1: unknown)."""
        if self._stat is None:
            return -1
        # procfs is memory: pread on it does not block.
        return int(os.pread(self._stat, 4096, 0).rsplit(b")", 1)[1].split()[36])

    def _times(self) -> tuple[float, float]:
        """Return the loop thread's time on a CPU and waiting for one, so far."""
        if self._schedstat is None:
            return 0.0, 0.0
        fields = os.pread(self._schedstat, 128, 0).split()
        return int(fields[0]) / 1e9, int(fields[1]) / 1e9

    async def _beat(self) -> None:
        loop = asyncio.get_running_loop()  # its time() is time.monotonic()
        while self._running:
            start = loop.time()
            ran, waited = self._times()
            await asyncio.sleep(INTERVAL)
            lag = max(0.0, loop.time() - start - INTERVAL)
            self.samples.append(lag)
            if lag > 0.001:
                ran_after, waited_after = self._times()
                self.late.append(
                    Late(
                        due=start + INTERVAL,
                        lag=lag,
                        cpu=self._cpu(),
                        running=ran_after - ran,
                        cpu_wait=waited_after - waited,
                    )
                )

    async def start(self) -> None:
        """Start beating on the running loop."""
        loop = asyncio.get_running_loop()
        task = f"/proc/self/task/{threading.get_native_id()}"
        self._stat = await loop.run_in_executor(
            None, os.open, f"{task}/stat", os.O_RDONLY
        )
        self._schedstat = await loop.run_in_executor(
            None, os.open, f"{task}/schedstat", os.O_RDONLY
        )
        self._running = True
        self._task = loop.create_task(self._beat())

    async def stop(self) -> None:
        """Stop and wait for the last beat."""
        self._running = False
        if self._task is not None:
            await self._task
        for fd in (self._stat, self._schedstat):
            if fd is not None:
                os.close(fd)


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


class MachineStalls:
    """The real-time probes (``benchmarks.rtprobe``), one per CPU, meanwhile."""

    def __init__(self, scratch: Path) -> None:
        """Write the probes' findings under ``scratch``."""
        self._scratch = scratch
        self._processes: dict[int, subprocess.Popen[str]] = {}
        self.unavailable: str | None = None
        self._stalls: dict[int, list[tuple[float, float]]] = {}

    def _out(self, cpu: int) -> Path:
        return self._scratch / f"rtprobe-{cpu}.json"

    def __enter__(self) -> MachineStalls:
        """Start the probes (real-time priority needs root)."""
        if os.geteuid() != 0:
            self.unavailable = "not root: no real-time probe"
            return self
        for cpu in sorted(os.sched_getaffinity(0)):
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "benchmarks.rtprobe",
                    str(cpu),
                    str(self._out(cpu)),
                ],
                cwd=Path(__file__).resolve().parents[1],
                stdout=subprocess.PIPE,
                text=True,
            )
            self._processes[cpu] = process
            assert process.stdout is not None
            if process.stdout.readline().strip() != "ready":
                self.unavailable = "a real-time probe did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop the probes and read what they found."""
        for cpu, process in self._processes.items():
            process.terminate()
            process.wait()
            out = self._out(cpu)
            if out.exists():
                found = json.loads(out.read_text())
                self._stalls[cpu] = sorted((start, lag) for start, lag in found)
                out.unlink()

    def overlap(self, cpu: int, start: float, end: float) -> float:
        """Return how long ``cpu`` was stalled between ``start`` and ``end``."""
        stalls = self._stalls.get(cpu, [])
        first = max(0, bisect.bisect_left(stalls, (start,)) - 1)
        total = 0.0
        for stall_start, lag in stalls[first:]:
            if stall_start >= end:
                break
            total += max(0.0, min(end, stall_start + lag) - max(start, stall_start))
        return total

    def attribute(self, run: dict[str, Any]) -> None:
        """Add the lag without machine stalls to a run's statistics."""
        late = run.pop("_late")
        window = run.pop("_window")
        on_time = run.pop("_on_time_max")
        if self.unavailable is not None:
            run["beats_over_10ms"] = sum(beat.lag > TARGET for beat in late)
            run["max_without_machine_ms"] = None
            run["machine_stall_max_ms"] = None
            return
        worst: tuple[float, Late | None, float] = (on_time, None, 0.0)
        over = 0
        for beat in late:
            stalled = self.overlap(beat.cpu, beat.due, beat.due + beat.lag)
            over += beat.lag - stalled > TARGET
            if beat.lag - stalled > worst[0]:
                worst = (beat.lag - stalled, beat, stalled)
        run["beats_over_10ms"] = over
        inside = [
            lag
            for stalls in self._stalls.values()
            for start, lag in stalls
            if window[0] <= start < window[1]
        ]
        run["max_without_machine_ms"] = round(worst[0] * 1000, 2)
        run["machine_stall_max_ms"] = round(max(inside, default=0.0) * 1000, 2)
        beat, stalled = worst[1], worst[2]
        if beat is not None:
            # Where that beat's time went: on a CPU (minus the stall, which
            # counts as running), waiting for one, or neither - asleep on a
            # lock, which in Python is usually the GIL.
            running = max(0.0, beat.running - stalled)
            asleep = max(0.0, beat.lag - stalled - running - beat.cpu_wait)
            run["worst_beat_ms"] = {
                "running": round(running * 1000, 2),
                "waiting for a CPU": round(beat.cpu_wait * 1000, 2),
                "asleep": round(asleep * 1000, 2),
            }


async def measured(op: Callable[[], Awaitable[Any]]) -> tuple[dict[str, Any], Any]:
    """Run ``op`` under a heartbeat; return the lag statistics and its result.

    The statistics carry the late beats and the time window (``_late``,
    ``_window``) until ``MachineStalls.attribute`` has used them.
    """
    beat = Heartbeat()
    await asyncio.sleep(0.05)  # settle
    with GcPauses() as pauses:
        await beat.start()
        start = time.perf_counter()
        begin = time.monotonic()
        try:
            result = await op()
        finally:
            await asyncio.sleep(INTERVAL * 2)
            await beat.stop()
    stats = lag_stats(beat.samples) | {"seconds": round(time.perf_counter() - start, 3)}
    stats |= {
        "_late": beat.late,
        "_on_time_max": max((lag for lag in beat.samples if lag <= 0.001), default=0),
        "_window": (begin, time.monotonic()),
    }
    return stats | pauses.stats(), result


def _in_this_thread(func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """``worker.run`` without the worker: the job's own thread does the work."""
    return func(*args, **kwargs)


def summarize(
    results: dict[str, dict[str, Any]], stalls: MachineStalls
) -> dict[str, dict[str, Any]]:
    """Attribute machine stalls and combine the runs of each operation."""
    for value in results.values():
        for run in value["runs"]:
            stalls.attribute(run)
        runs = value["runs"]
        value["p50_ms"] = statistics.median(run["p50_ms"] for run in runs)
        value["p99_ms"] = statistics.median(run["p99_ms"] for run in runs)
        value["max_ms"] = max(run["max_ms"] for run in runs)
        value["seconds"] = statistics.median(run.get("seconds", 0) for run in runs)
        value["gc_on_loop_max_ms"] = max(run["gc_on_loop_max_ms"] for run in runs)
        value["gc_full_on_loop"] = sum(run["gc_full_on_loop"] for run in runs)
        for key in ("max_without_machine_ms", "machine_stall_max_ms"):
            known = [run[key] for run in runs if run[key] is not None]
            value[key] = max(known) if known else None
        value["beats_over_10ms"] = sum(run["beats_over_10ms"] for run in runs)
        value["beats"] = sum(run["beats"] for run in runs)
        worst_run = max(runs, key=lambda run: run["max_without_machine_ms"] or 0)
        value["worst_beat_ms"] = worst_run.get("worst_beat_ms")
    return results


async def run_scenarios(
    config_dir: Path,
    locations: dict[str, Path],
    ha_backups: dict[str, Callable[[], contextlib.AbstractContextManager[Path]]],
    *,
    restore_paths: list[str],
    repeat: int,
    slow_repeat: int,
    idle_seconds: float,
) -> dict[str, dict[str, Any]]:
    """Run every operation against every location; return lag stats by name.

    ``locations`` maps a label (``tmpfs``, ``slow``) to a mounted directory;
    ``ha_backups`` maps the same labels to a context manager that mounts the
    same kind of file system at ``config_dir/backups`` (core's local agent).
    The runs still carry their late beats, for ``summarize``.
    """
    from custom_components.backup_offload.const import DOMAIN
    from custom_components.backup_offload.engine import worker

    results: dict[str, dict[str, Any]] = {}

    def record(name: str, stats: dict[str, Any]) -> None:
        runs = results.setdefault(name, {"runs": []})["runs"]
        runs.append(stats)

    async with running_hass(config_dir) as hass:
        idle, _ = await measured(lambda: asyncio.sleep(idle_seconds))
        record("idle", idle)

        for label, location in locations.items():
            entry = await add_location(hass, label, location)

            async def call(service: str, **data: Any) -> Any:
                return await hass.services.async_call(
                    DOMAIN,
                    service,
                    {"config_entry_id": entry.entry_id, **data},  # noqa: B023
                    blocking=True,
                    return_response=True,
                )

            count = repeat if label == "tmpfs" else slow_repeat
            modes = [("", contextlib.nullcontext)]
            if label == "tmpfs":
                # The same operations with the work in the executor thread.
                modes.append(
                    (
                        ", in a thread",
                        lambda: patch.object(worker, "run", _in_this_thread),
                    )
                )
            for suffix, mode in modes:
                with mode():
                    await _our_operations(
                        call,
                        record,
                        f"{label}{suffix}",
                        count,
                        restore_paths,
                        listing=not suffix,
                    )
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
    return results


async def _our_operations(
    call: Callable[..., Awaitable[Any]],
    record: Callable[[str, dict[str, Any]], None],
    label: str,
    count: int,
    restore_paths: list[str],
    *,
    listing: bool,
) -> None:
    """Measure create, list, verify and a partial restore."""
    backup_id = ""
    for _ in range(count):
        gc.collect()
        stats, response = await measured(lambda: call("create"))
        backup_id = response["backup"]["backup_id"]
        record(f"ours create ({label})", stats)
    for _ in range(count if listing else 0):
        stats, _ = await measured(lambda: call("list"))
        record(f"ours list ({label})", stats)
    for _ in range(count):
        stats, response = await measured(lambda: call("verify", backup_id=backup_id))
        assert response["valid"], response
        record(f"ours verify ({label})", stats)
    for _ in range(count):
        stats, _ = await measured(
            lambda: call(
                "restore",
                backup_id=backup_id,
                paths=restore_paths,
                restart=False,
                safety_backup=False,
            )
        )
        record(f"ours partial restore ({label})", stats)
