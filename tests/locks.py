"""Another writer, for real: a child process that holds an ``flock`` on a file.

It stands for another Home Assistant writing a backup into the same folder
(or this one's worker process): the lock is taken by another process, as
the kernel (or the NAS) sees it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
import subprocess
import sys

# Opens the file, locks it, says so, and holds the lock until stdin closes.
_HOLDER = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
sys.stdin.read()
"""
# Starting Python takes well under a second; generous for a loaded machine.
_WAIT = 60.0


@contextmanager
def locked_by_another_process(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` in a child process (blocking)."""
    with subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        assert holder.stdin is not None
        assert holder.stdout is not None
        try:
            assert holder.stdout.readline() == "locked\n"
            yield
        finally:
            holder.stdin.close()
            holder.wait(_WAIT)
