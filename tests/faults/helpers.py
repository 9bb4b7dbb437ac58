"""Helpers of the fault-injection tests: actions, oracles, loop lag, threads.

The oracles look at the file system and the process themselves (directory
listings, inotify, thread stacks) instead of asking the code under test.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
from dataclasses import dataclass
import gc
import os
from pathlib import Path
import struct
import sys
import tempfile
import threading
import time
from typing import Any

from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import issue_registry as ir
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from benchmarks.loop import MachineStalls
import custom_components.backup_offload as integration
from custom_components.backup_offload.const import DOMAIN
from custom_components.backup_offload.engine.metadata import TEMP_PREFIX
from tests.common import call, setup_location  # noqa: F401 (the fault tests' too)

OUR_CODE = str(Path(integration.__file__).resolve().parent)


async def call_error(
    hass: HomeAssistant, service: str, entry: MockConfigEntry, **data: Any
) -> HomeAssistantError:
    """Call an action that must fail; return the error."""
    with pytest.raises(HomeAssistantError) as err:
        await call(hass, service, entry, **data)
    return err.value


def files(path: Path) -> list[str]:
    """Return the names in a directory, sorted (blocking)."""
    return sorted(entry.name for entry in path.iterdir())


async def listdir(hass: HomeAssistant, path: Path) -> list[str]:
    """Return the names in a directory, sorted, from the executor."""
    return await hass.async_add_executor_job(files, path)


def backups_on_disk(path: Path) -> tuple[set[str], set[str], set[str]]:
    """Return (archives, sidecars, our temporary files) in a location root."""
    names = files(path)
    archives = {n for n in names if n.endswith(".tar") and not n.startswith(".")}
    sidecars = {n for n in names if n.endswith(".tar.sha256")}
    temporary = {n for n in names if n.startswith(TEMP_PREFIX)}
    return archives, sidecars, temporary


def every_action(backup_id: str) -> list[tuple[str, dict[str, Any]]]:
    """One call of each action that touches the location (restore three ways).

    The full restore is asked not to restart, so that a restore that wrongly
    went ahead could not stop the test's Home Assistant.
    """
    return [
        ("create", {}),
        ("list", {}),
        ("verify", {"backup_id": backup_id}),
        ("delete", {"backup_id": backup_id}),
        ("purge", {}),
        ("restore", {"backup_id": backup_id, "dry_run": True}),
        ("restore", {"backup_id": backup_id, "paths": ["automations.yaml"]}),
        ("restore", {"backup_id": backup_id, "restart": False}),
    ]


def tree(path: Path) -> dict[str, tuple[int, int]]:
    """Return relative path -> (size, mtime_ns) of every file below (blocking)."""
    return {
        str(file.relative_to(path)): (info.st_size, info.st_mtime_ns)
        for file in sorted(path.rglob("*"))
        if (info := file.lstat()) and not file.is_dir()
    }


def write_random(path: Path, size: int) -> None:
    """Write ``size`` incompressible bytes (blocking)."""
    chunk = 1 << 20
    with path.open("wb") as file:
        for offset in range(0, size, chunk):
            file.write(os.urandom(min(chunk, size - offset)))


def state(hass: HomeAssistant, entity_id: str) -> str:
    """Return an entity's state."""
    current = hass.states.get(entity_id)
    assert current is not None, entity_id
    return current.state


def attributes(hass: HomeAssistant, entity_id: str) -> dict[str, Any]:
    """Return an entity's attributes."""
    current = hass.states.get(entity_id)
    assert current is not None, entity_id
    return dict(current.attributes)


def repair_issue(hass: HomeAssistant, entry: MockConfigEntry) -> ir.IssueEntry | None:
    """Return the location's repair issue, if one is raised."""
    return ir.async_get(hass).async_get_issue(
        DOMAIN, f"location_unavailable_{entry.entry_id}"
    )


def threads_in_our_code() -> list[str]:
    """Return the threads (other than this one) now running our code.

    A thread blocked on a hung share sits in a frame of the integration
    (the probe's ``statvfs``, a read, a write); an idle executor thread does
    not. Read from the interpreter's own stacks, not from the code under test.
    """
    frames = sys._current_frames()
    me = threading.get_ident()
    found: list[str] = []
    for thread in threading.enumerate():
        if thread.ident is None or thread.ident == me:
            continue
        frame = frames.get(thread.ident)
        while frame is not None:
            if frame.f_code.co_filename.startswith(OUR_CODE):
                found.append(f"{thread.name}: {frame.f_code.co_name}")
                break
            frame = frame.f_back
    return found


class LoopLag:
    """A heartbeat on the event loop every 5 ms; records how late it ran.

    A blocking call on the loop delays the heartbeat by as long as it
    blocks, so the worst delay is the worst freeze Home Assistant saw.

    The kernel's own scheduling is not Home Assistant's doing: on a loaded
    machine (two CPUs, the other test worker, sshfs) a thread that is ready
    to run may wait a few milliseconds for a CPU. Each beat's delay is
    therefore counted without the time the loop thread spent waiting for a
    CPU meanwhile (``run_delay`` in ``/proc/self/task/<tid>/schedstat``).
    Neither is a garbage collection that ran on the loop thread: it walks
    the test process's whole heap (pytest's, the harness's, coverage's) and
    happens wherever the allocations add up, so its time is subtracted too
    (and reported). Nor are the moments when the (virtual) CPU the loop
    thread ran on did not run anything at all: these machines are shared
    VMs, and real-time probes per CPU (``benchmarks.loop.MachineStalls``, as
    the benchmarks use them; root only) record those stalls. Time the loop
    thread spent running our code, blocked in a system call (a hung share)
    or waiting for the GIL is all counted. ``raw_worst`` keeps the plain
    wall-clock figure. Where schedstat is not available, the CPU wait is not
    subtracted; without root, the machine stalls are not.

    Inside the window the loop runs as in a production Home Assistant, with
    asyncio's debug mode off. The test harness turns it on, and it then
    records a stack trace (reading every source file's status through
    linecache) for each callback and task scheduled. Measured on the loop
    thread (CPU time of one ``list`` or ``verify`` call, median of 5): 4-7 ms
    with it, 1-2.5 ms without; under coverage 11-13 ms against 2-4.5 ms -
    the harness's cost, which a loop-lag figure would count as ours.
    """

    def __init__(self, interval: float = 0.005) -> None:
        """Set up the monitor (started with ``async with``)."""
        self.interval = interval
        self.worst = 0.0
        """The worst delay of a beat caused by the loop thread itself."""
        self.raw_worst = 0.0
        """The worst wall-clock delay of a beat."""
        self.beats = 0
        self.phase = ""
        self.late: list[tuple[str, float, float, float, float]] = []
        """(phase, delay ms, waiting for a CPU ms, in GC ms, CPU stalled ms) of
        each beat late by more than 5 ms."""
        self._task: asyncio.Task[None] | None = None
        self._schedstat: int | None = None
        self._stat: int | None = None
        self._scratch: Path | None = None
        self._stalls = MachineStalls(Path())
        # (phase, due, delay, waited, collecting, cpu) of beats over 1 ms
        self._pending: list[tuple[str, float, float, float, float, int]] = []
        self._gc_total = 0.0
        self._gc_start = 0.0
        self._loop_thread = 0
        self._debug = False

    def _gc(self, phase: str, info: dict[str, Any]) -> None:
        """Add up the time of collections on the loop thread (gc.callbacks)."""
        if threading.get_ident() != self._loop_thread:
            return
        if phase == "start":
            self._gc_start = time.monotonic()
        else:
            self._gc_total += time.monotonic() - self._gc_start

    def _cpu_wait(self) -> float:
        """Return the loop thread's total wait for a CPU, in seconds."""
        if self._schedstat is None:
            return 0.0
        # procfs is memory, not storage: pread on it cannot hang.
        fields = os.pread(self._schedstat, 128, 0).split()
        return int(fields[1]) / 1e9

    async def _beat(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            waited = self._cpu_wait()
            collecting = self._gc_total
            await asyncio.sleep(self.interval)
            delay = loop.time() - start - self.interval
            waited = self._cpu_wait() - waited
            collecting = self._gc_total - collecting
            own = max(0.0, delay - waited - collecting)
            self.raw_worst = max(self.raw_worst, delay)
            if own > 0.001:  # settled once the machine stalls are known
                self._pending.append(
                    (self.phase, start, delay, waited, collecting, self._cpu())
                )
            else:
                self.worst = max(self.worst, own)
            self.beats += 1

    def _cpu(self) -> int:
        """Return the CPU the loop thread last ran on (-1: unknown)."""
        if self._stat is None:
            return -1
        return int(os.pread(self._stat, 4096, 0).rsplit(b")", 1)[1].split()[36])

    def _settle(self) -> None:
        """Count the late beats without the machine's stalls."""
        for phase, start, delay, waited, collecting, cpu in self._pending:
            due = start + self.interval
            stalled = (
                0.0
                if self._stalls.unavailable
                else self._stalls.overlap(cpu, due, due + delay)
            )
            own = max(0.0, delay - waited - collecting - stalled)
            self.worst = max(self.worst, own)
            if delay > 0.005:
                self.late.append(
                    (
                        phase,
                        round(delay * 1000, 1),
                        round(waited * 1000, 1),
                        round(collecting * 1000, 1),
                        round(stalled * 1000, 1),
                    )
                )

    async def __aenter__(self) -> LoopLag:
        """Start the heartbeat."""
        loop = asyncio.get_running_loop()
        task = Path(f"/proc/self/task/{threading.get_native_id()}")
        self._schedstat = await loop.run_in_executor(
            None, _open_schedstat, task / "schedstat"
        )
        self._stat = await loop.run_in_executor(
            None, os.open, task / "stat", os.O_RDONLY | os.O_CLOEXEC
        )
        # Its own folder: the other test worker may watch its loop too.
        self._scratch = Path(await loop.run_in_executor(None, tempfile.mkdtemp))
        self._stalls = MachineStalls(self._scratch)
        await loop.run_in_executor(None, self._stalls.__enter__)
        self._loop_thread = threading.get_ident()
        gc.callbacks.append(self._gc)
        self._debug = loop.get_debug()
        loop.set_debug(False)
        self._task = loop.create_task(self._beat())
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Stop the heartbeat."""
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        gc.callbacks.remove(self._gc)
        loop = asyncio.get_running_loop()
        loop.set_debug(self._debug)
        await loop.run_in_executor(None, self._stalls.__exit__, None, None, None)
        if self._scratch is not None:
            await loop.run_in_executor(None, self._scratch.rmdir)
        self._settle()
        for fd in (self._schedstat, self._stat):
            if fd is not None:
                os.close(fd)

    def report(self) -> str:
        """Describe the worst delays, for an assertion message."""
        return (
            f"event loop lag {self.worst * 1000:.1f} ms"
            f" ({self.raw_worst * 1000:.1f} ms wall clock);"
            " late beats (phase, ms, ms waiting for a CPU, ms in GC,"
            " ms the CPU was stalled):"
            f" {self.late}"
        )


def _open_schedstat(path: Path) -> int | None:
    """Open a thread's schedstat, or None where the kernel does not keep it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    fields = os.pread(fd, 128, 0).split()
    if len(fields) < 3 or fields[0] == b"0":
        os.close(fd)
        return None
    return fd


# --- inotify: every file created in a directory, even for a moment ----------

_IN_CREATE = 0x00000100
_IN_MOVED_TO = 0x00000080
_IN_NONBLOCK = 0o4000
_IN_CLOEXEC = 0o2000000
_EVENT = struct.Struct("iIII")


@dataclass
class DirectoryWatch:
    """Names created in (or moved into) one directory inode, via inotify.

    The watch follows the inode, not the path: set on a mount point's bare
    directory before the share is mounted over it, it sees exactly what is
    written into the bare directory once the share is gone, even a file that
    is removed again at once.
    """

    fd: int

    @classmethod
    def start(cls, path: Path) -> DirectoryWatch:
        """Watch ``path`` (blocking)."""
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        fd = libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        if libc.inotify_add_watch(fd, os.fsencode(path), _IN_CREATE | _IN_MOVED_TO) < 0:
            os.close(fd)
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {path}")
        return cls(fd)

    def created(self) -> list[str]:
        """Return the names created since the last call (blocking)."""
        names: list[str] = []
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return names
            offset = 0
            while offset < len(data):
                _, _, _, length = _EVENT.unpack_from(data, offset)
                start = offset + _EVENT.size
                names.append(data[start : start + length].rstrip(b"\0").decode())
                offset = start + length

    def close(self) -> None:
        """Stop watching."""
        os.close(self.fd)
