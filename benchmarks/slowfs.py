# ruff: noqa: D102, PTH101, PTH102, PTH104, PTH106, PTH108, PTH115, PTH118, PTH208, PTH211
# (a passthrough mirrors the os calls the kernel asks for, one by one)
"""A FUSE passthrough file system that makes every operation slow.

``python -m benchmarks.slowfs SOURCE MOUNTPOINT --delay 0.02`` mounts SOURCE
at MOUNTPOINT (foreground, until unmounted); every request the kernel sends
(lookup/getattr, open, read, write, create, flush, fsync, readdir, rename,
unlink, ...) sleeps ``delay`` seconds first, like a NAS whose every round trip
takes that long. The kernel's attribute cache (1 s) stays on, as on NFS.
Multi-threaded: concurrent requests wait concurrently, as on a real share.

Uses ``mfusepy`` (ctypes bindings for libfuse 3, from PyPI), or ``fusepy``
with libfuse 2. ``mount_slowfs`` starts and stops it from Python.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
import contextlib
import errno
import os
from pathlib import Path
import shutil
import subprocess
import sys
import time
from typing import Any

# mfusepy speaks libfuse 3, but loads "libfuse" by default: where libfuse 2
# is installed too (smbnetfs pulls it in), that one is found first and
# refuses libfuse 3's options. Ask for libfuse 3 by name.
os.environ.setdefault("FUSE_LIBRARY_NAME", "fuse3")

fuse: Any
try:
    import mfusepy as fuse
except (ImportError, OSError):  # libfuse 2 machines, or no bindings at all
    try:
        import fuse  # type: ignore[no-redef]
    except (ImportError, OSError):
        fuse = None


def unavailable() -> str | None:
    """Return why a slow FUSE mount cannot be made here, None if it can."""
    if os.environ.get("BACKUP_OFFLOAD_BENCH_NO_SLOW"):
        return "skipped (--no-slow)"
    if fuse is None:
        return "no FUSE bindings (pip install mfusepy)"
    if not Path("/dev/fuse").exists():
        return "/dev/fuse is missing"
    if not (shutil.which("fusermount3") or shutil.which("fusermount")):
        return "fusermount is missing"
    if os.geteuid() != 0:
        return "not root"
    return None


class SlowPassthrough(fuse.Operations if fuse is not None else object):  # type: ignore[misc]
    """Passthrough to ``root``, each operation delayed."""

    def __init__(self, root: str, delay: float) -> None:
        """Serve ``root``, ``delay`` seconds per operation."""
        self.root = os.path.realpath(root)
        self.delay = delay

    def _path(self, path: str) -> str:
        return os.path.join(self.root, path.lstrip("/"))

    def access(self, path: str, amode: int) -> int:
        if not os.access(self._path(path), amode):
            raise fuse.FuseOSError(errno.EACCES)
        return 0

    def chmod(self, path: str, mode: int) -> int:
        os.chmod(self._path(path), mode)
        return 0

    def chown(self, path: str, uid: int, gid: int) -> int:
        os.lchown(self._path(path), uid, gid)
        return 0

    def getattr(self, path: str, fh: Any = None) -> dict[str, Any]:
        st = os.lstat(self._path(path))
        keys = (
            "st_atime",
            "st_ctime",
            "st_gid",
            "st_mode",
            "st_mtime",
            "st_nlink",
            "st_size",
            "st_uid",
        )
        return {key: getattr(st, key) for key in keys}

    def readdir(self, path: str, fh: Any) -> Iterator[str]:
        yield "."
        yield ".."
        yield from os.listdir(self._path(path))

    def readlink(self, path: str) -> str:
        return os.readlink(self._path(path))

    def mknod(self, path: str, mode: int, dev: int) -> int:
        os.mknod(self._path(path), mode, dev)
        return 0

    def rmdir(self, path: str) -> int:
        os.rmdir(self._path(path))
        return 0

    def mkdir(self, path: str, mode: int) -> int:
        os.mkdir(self._path(path), mode)
        return 0

    def statfs(self, path: str) -> dict[str, Any]:
        st = os.statvfs(self._path(path))
        keys = (
            "f_bavail",
            "f_bfree",
            "f_blocks",
            "f_bsize",
            "f_favail",
            "f_ffree",
            "f_files",
            "f_flag",
            "f_frsize",
            "f_namemax",
        )
        return {key: getattr(st, key) for key in keys}

    def unlink(self, path: str) -> int:
        os.unlink(self._path(path))
        return 0

    def symlink(self, target: str, source: str) -> int:
        os.symlink(source, self._path(target))
        return 0

    def rename(self, old: str, new: str) -> int:
        os.rename(self._path(old), self._path(new))
        return 0

    def link(self, target: str, source: str) -> int:
        os.link(self._path(source), self._path(target))
        return 0

    def utimens(self, path: str, times: Any = None) -> int:
        os.utime(self._path(path), times)
        return 0

    def open(self, path: str, flags: int) -> int:
        return os.open(self._path(path), flags)

    def create(self, path: str, mode: int, fi: Any = None) -> int:
        return os.open(self._path(path), os.O_RDWR | os.O_CREAT | os.O_TRUNC, mode)

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        return os.pread(fh, size, offset)

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        return os.pwrite(fh, data, offset)

    def truncate(self, path: str, length: int, fh: Any = None) -> int:
        os.truncate(self._path(path), length)
        return 0

    def flush(self, path: str, fh: int) -> int:
        return 0

    def release(self, path: str, fh: int) -> int:
        os.close(fh)
        return 0

    def fsync(self, path: str, fdatasync: int, fh: int) -> int:
        os.fsync(fh)
        return 0


def _slowed(method: Any) -> Any:
    def wrapper(self: SlowPassthrough, *args: Any) -> Any:
        time.sleep(self.delay)
        try:
            return method(self, *args)
        except fuse.FuseOSError:
            raise
        except OSError as err:
            raise fuse.FuseOSError(err.errno or errno.EIO) from err

    wrapper.__name__ = method.__name__
    return wrapper


# Every operation the passthrough implements waits first (the bindings call
# the methods directly, so they are wrapped one by one).
for _name, _method in list(vars(SlowPassthrough).items()):
    if callable(_method) and not _name.startswith("_"):
        setattr(SlowPassthrough, _name, _slowed(_method))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("source")
    parser.add_argument("mountpoint")
    parser.add_argument("--delay", type=float, default=0.02)
    args = parser.parse_args()
    # It stands for a NAS, another machine: its own CPU work (a Python
    # server copying every byte) must not compete with Home Assistant's
    # here, for core's backup and ours alike.
    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    fuse.FUSE(
        SlowPassthrough(args.source, args.delay),
        args.mountpoint,
        foreground=True,
        nothreads=False,
        max_threads=64,  # a NAS serves many requests at once
        allow_other=False,
    )


def _unmount(mountpoint: Path) -> None:
    for tool in ("fusermount3", "fusermount"):
        if shutil.which(tool):
            subprocess.run(
                [tool, "-u", "-z", str(mountpoint)], check=False, capture_output=True
            )
            return
    subprocess.run(["umount", "-l", str(mountpoint)], check=False, capture_output=True)


@contextlib.contextmanager
def mount_slowfs(source: Path, mountpoint: Path, delay: float) -> Iterator[Path]:
    """Mount ``source`` at ``mountpoint`` with ``delay`` per operation."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "benchmarks.slowfs",
            str(source),
            str(mountpoint),
            "--delay",
            str(delay),
        ],
        cwd=Path(__file__).resolve().parents[1],
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while not os.path.ismount(mountpoint):
            if process.poll() is not None or time.monotonic() > deadline:
                error = process.stderr.read().decode() if process.stderr else ""
                raise RuntimeError(f"slowfs did not mount: {error.strip()[-500:]}")
            time.sleep(0.05)
        yield mountpoint
    finally:
        _unmount(mountpoint)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


if __name__ == "__main__":
    main()
