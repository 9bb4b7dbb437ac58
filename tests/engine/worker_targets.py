"""Functions the worker tests run in the worker process (importable there).

The worker imports a function by its module and name, so these live in a
module of their own, which imports nothing of Home Assistant.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
import os
from pathlib import Path
import signal
import sys
import tarfile
import tempfile
import threading
import time

from custom_components.backup_offload.engine.errors import (
    InsufficientSpaceError,
    LocationUnavailableError,
)


def identify(value: object) -> tuple[int, object]:
    """Return the process id it ran in, and ``value`` back."""
    return os.getpid(), value


def scheduling() -> tuple[int, int]:
    """Return the scheduling policy of this thread and of a new one."""
    seen: list[int] = []
    thread = threading.Thread(target=lambda: seen.append(os.sched_getscheduler(0)))
    thread.start()
    thread.join()
    return os.sched_getscheduler(0), seen[0]


def chatty() -> str:
    """Print to stdout, which belongs to the protocol: it must not break."""
    print("stray output")  # noqa: T201 - the point of the test
    sys.stdout.flush()
    return "answered"


def fail(kind: str) -> None:
    """Raise one of a few kinds of error."""
    if kind == "location":
        raise LocationUnavailableError(
            "/nas is gone", "not_a_mount", path="/nas", errno="ENOENT"
        )
    if kind == "space":
        raise InsufficientSpaceError("disk full", needed="10", free="1")
    if kind == "bug":
        raise KeyError("a bug in the engine")

    class Local(Exception):  # noqa: N818 - cannot be pickled: defined here
        pass

    raise Local("not picklable")


def report(progress: Callable[[float], None]) -> int:
    """Report progress in four steps."""
    for step in (0.25, 0.5, 0.75, 1.0):
        progress(step)
    return 4


def locked(
    database_lock: Callable[[], AbstractContextManager[None]], marker: Path
) -> int:
    """Write ``marker`` while holding the lock; return the pid."""
    with database_lock():
        marker.write_text(str(os.getpid()))
    return os.getpid()


def die_holding(database_lock: Callable[[], AbstractContextManager[None]]) -> None:
    """Die (SIGKILL) while the lock is held."""
    with database_lock():
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(10)  # pragma: no cover - killed above


def die() -> None:
    """Exit at once, as if the kernel killed it."""
    os._exit(3)


def work_until_stopped(temp: Path, ready: Path) -> None:
    """Create ``temp``, then work until stopped; remove it on the way out.

    ``ready`` appears only once the cleanup is armed: ``temp`` itself exists
    while it is still being written, and a stop then would leave it behind.
    """
    temp.write_text("partial")
    try:
        ready.touch()
        while True:
            time.sleep(0.01)
    finally:
        temp.unlink()


def checksum_function() -> str:
    """Return the module whose header checksum tarfile uses here."""
    return tarfile.calc_chksums.__module__.rpartition(".")[2]  # type: ignore[attr-defined]


def surroundings() -> dict[str, object]:
    """Return what the child runs with: environment, directories, flags."""
    return {
        "environ": dict(os.environ),
        "cwd": os.getcwd(),
        "path": list(sys.path),
        "isolated": sys.flags.isolated,
        "tempdir": tempfile.gettempdir(),
    }


def send_garbage(progress: Callable[[float], None], garbage: bytes, temp: Path) -> None:
    """Write ``garbage`` where the parent reads frames, then work until stopped.

    The progress stand-in belongs to the child's end of the protocol; its
    stream is the one the parent reads.
    """
    temp.write_text("partial")
    try:
        out = progress.__self__._out  # type: ignore[attr-defined]
        out.write(garbage)
        out.flush()
        while True:
            time.sleep(0.01)
    finally:
        temp.unlink()
