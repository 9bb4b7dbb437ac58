"""Real mounts for tests: small context managers that always clean up.

Each helper mounts something real (tmpfs, bind mount, ext4 image on a loop
device, or whatever ``mount`` arguments a caller passes, e.g. sshfs) on a
directory under the test's ``tmp_path`` and unmounts it on exit, also when
the test fails or has already unmounted it itself. A mount that will not go
away normally is detached lazily, so no test leaves a mount behind.

When this machine does not let us mount (not root, a container without
CAP_SYS_ADMIN, no loop devices, a missing tool), the test is skipped with
the reason. Set ``BACKUP_OFFLOAD_REQUIRE_MOUNTS=1`` (CI does) to make that
a failure instead, so a misconfigured runner cannot skip the mount tests
silently.

The helpers read the mount table themselves instead of using the code under
test, so they stay an independent oracle.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
import importlib.util
import os
from pathlib import Path
import re
import shutil
import subprocess
import sys
import time
from typing import NoReturn

import pytest

__all__ = [
    "MountError",
    "bind_mount",
    "fuse_passthrough",
    "is_mounted",
    "lazy_unmount",
    "loop_ext4",
    "mount_count",
    "mounted",
    "read_only",
    "require_command",
    "require_root",
    "require_tools",
    "skip_or_fail",
    "sshfs",
    "tmpfs",
    "unmount",
]

REQUIRE_ENV = "BACKUP_OFFLOAD_REQUIRE_MOUNTS"

# A mount or unmount on a dead network share can hang; never wait forever.
COMMAND_TIMEOUT = 60.0

# How many mounts stacked on one directory ``unmount`` removes at most.
_MAX_STACKED = 8

# Debian packages that provide the tools, for the skip message.
_PACKAGES = {
    "mount": "mount",
    "umount": "mount",
    "losetup": "mount",
    "mkfs.ext4": "e2fsprogs",
    "sshfs": "sshfs",
    "fusermount": "fuse3",
}

# ``mount`` messages that mean "not allowed here", not "broken".
_NOT_PERMITTED = re.compile(
    r"permission denied|operation not permitted|must be superuser|only root"
    r"|failed to setup loop device|could not find any free loop device",
    re.IGNORECASE,
)

_ESCAPE = re.compile(rb"\\([0-7]{3})")


class MountError(RuntimeError):
    """A mount command failed for a reason other than missing permission."""


def skip_or_fail(reason: str) -> NoReturn:
    """Skip the test, or fail it when CI requires the system tests to run.

    For anything the machine may lack: mounting, FUSE, a tool, a privilege.
    """
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} (and {REQUIRE_ENV}=1)", pytrace=False)
    pytest.skip(reason)


def require_tools(*names: str) -> None:
    """Skip unless every command in ``names`` is installed."""
    for name in names:
        if shutil.which(name) is None:
            package = _PACKAGES.get(name, name)
            skip_or_fail(f"{name} is not installed (Debian package {package})")


def require_command(name: str, package: str) -> str:
    """Return the path of command ``name`` (sbin included), or skip.

    For commands outside the table above, e.g. ``sshd`` (``openssh-server``).
    """
    search = os.pathsep.join(
        filter(None, (os.environ.get("PATH"), "/usr/local/sbin", "/usr/sbin", "/sbin"))
    )
    found = shutil.which(name, path=search)
    if found is None:
        skip_or_fail(f"{name} is not installed (Debian package {package})")
    return found


def require_root() -> None:
    """Skip unless running as root (mounting, an sshd of the test's own)."""
    _require_root()


def _require_root() -> None:
    """Skip unless we can mount at all: only root (with CAP_SYS_ADMIN) can."""
    if os.geteuid() != 0:
        skip_or_fail(f"mounting needs root; running as uid {os.geteuid()}")
    require_tools("mount", "umount")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    """Run a command and return the result; a timeout counts as a failure."""
    try:
        return subprocess.run(
            args,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as err:
        return subprocess.CompletedProcess(args, -1, "", f"timed out: {err}")


def _check(result: subprocess.CompletedProcess[str]) -> None:
    """Skip on "not permitted", raise ``MountError`` on any other failure."""
    if result.returncode == 0:
        return
    message = f"{' '.join(result.args)}: {result.stderr.strip() or result.stdout}"
    if _NOT_PERMITTED.search(result.stderr):
        skip_or_fail(f"mounting is not permitted here: {message}")
    raise MountError(message)


def _mount_point_key(path: Path) -> bytes:
    """Return the path as the mount table spells it, without touching it.

    Only the parent is resolved: the mount point itself may be a hung mount
    that any access would block on.
    """
    absolute = path.absolute()
    return os.fsencode(absolute.parent.resolve() / absolute.name)


def mount_count(path: Path) -> int:
    """Return how many mounts are stacked on ``path`` (mount table)."""
    key = _mount_point_key(path)
    count = 0
    with Path("/proc/self/mountinfo").open("rb") as file:
        for line in file:
            point = _ESCAPE.sub(lambda m: bytes([int(m[1], 8)]), line.split(b" ")[4])
            count += point == key
    return count


def is_mounted(path: Path) -> bool:
    """Return True when something is mounted on ``path`` (mount table)."""
    return mount_count(path) > 0


def lazy_unmount(path: Path) -> None:
    """Detach the top mount on ``path`` now (``umount -l``), like a lost share.

    The mount point is left behind as a bare directory, which is what the
    code under test must not mistake for the share.
    """
    _check(_run("umount", "-l", str(path)))


def unmount(path: Path, *, keep: int = 0) -> None:
    """Unmount ``path`` until only ``keep`` stacked mounts are left on it.

    A no-op when there are no more than that (e.g. the test already
    unmounted it). Tries a normal unmount first and falls back to a lazy one
    (busy, hung). Raises ``MountError`` only when a mount cannot be removed.
    """
    for _ in range(_MAX_STACKED):
        if mount_count(path) <= keep:
            return
        if _run("umount", str(path)).returncode != 0:
            result = _run("umount", "-l", str(path))
            if result.returncode != 0:
                raise MountError(f"cannot unmount {path}: {result.stderr.strip()}")
    if mount_count(path) > keep:
        raise MountError(f"{path} is still mounted after {_MAX_STACKED} unmounts")


@contextmanager
def mounted(target: Path, *mount_args: str) -> Iterator[Path]:
    """Run ``mount MOUNT_ARGS TARGET``; yield ``target``; unmount on exit.

    ``target`` is created when missing. The generic building block of the
    other helpers, and of others such as sshfs:
    ``mounted(target, "-t", "fuse.sshfs", "user@host:/dir")``.
    """
    _require_root()
    target.mkdir(parents=True, exist_ok=True)
    # Only what this call mounts is removed again, whatever was there before.
    before = mount_count(target)
    try:
        # Inside the try: a mount that timed out may still have happened.
        _check(_run("mount", *mount_args, str(target)))
        yield target
    finally:
        unmount(target, keep=before)


@contextmanager
def tmpfs(target: Path, *, size: str = "16m") -> Iterator[Path]:
    """Mount a tmpfs of ``size`` (``mount`` syntax: ``256k``, ``16m``)."""
    with mounted(target, "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs"):
        yield target


@contextmanager
def bind_mount(source: Path, target: Path) -> Iterator[Path]:
    """Bind-mount directory ``source`` on ``target`` (same file system)."""
    with mounted(target, "--bind", str(source)):
        yield target


@contextmanager
def read_only(target: Path, *, bind: bool = False) -> Iterator[Path]:
    """Remount the mount on ``target`` read-only; make it writable again on exit.

    ``bind=True`` for a bind mount, whose read-only flag is per mount.
    """
    _require_root()
    options = "remount,ro,bind" if bind else "remount,ro"
    _check(_run("mount", "-o", options, str(target)))
    try:
        yield target
    finally:
        # The test may have unmounted it meanwhile; then there is nothing to do.
        if is_mounted(target):
            options = "remount,rw,bind" if bind else "remount,rw"
            _check(_run("mount", "-o", options, str(target)))


@contextmanager
def loop_ext4(target: Path, image: Path, *, size_mb: int = 16) -> Iterator[Path]:
    """Mount a fresh ext4 image file of ``size_mb`` MiB on a loop device.

    A real block-device file system (reserved blocks, journal), unlike tmpfs.
    The loop device is released and the image removed on exit.
    """
    _require_root()
    require_tools("mkfs.ext4", "losetup")
    image.parent.mkdir(parents=True, exist_ok=True)
    with image.open("wb") as file:
        file.truncate(size_mb * 1024 * 1024)
    try:
        _check(_run("mkfs.ext4", "-q", "-F", str(image)))
        # mount -o loop sets the loop device to detach itself on unmount.
        with mounted(target, "-o", "loop", str(image)):
            yield target
    finally:
        # If the automatic detach did not happen, release the device here.
        attached = _run("losetup", "-j", str(image)).stdout.splitlines()
        for line in attached:
            _run("losetup", "-d", line.split(":", 1)[0])
        image.unlink(missing_ok=True)


# How long ``sshfs`` may take to connect and mount.
SSHFS_MOUNT_TIMEOUT = 20.0
# How long a FUSE unmount may take before the daemon is killed instead.
_FUSE_UNMOUNT_TIMEOUT = 10.0

# FUSE messages that mean "FUSE is not usable here", not "broken" (an ssh
# "Permission denied (publickey)" is broken: it does not mention fuse).
_FUSE_UNAVAILABLE = re.compile(
    r"fuse[^\n]*(device not found|no such file|not permitted|permission denied)",
    re.IGNORECASE,
)


def _fusermount() -> str | None:
    return shutil.which("fusermount3") or shutil.which("fusermount")


def _stop_fuse_daemon(
    process: subprocess.Popen[bytes], target: Path, before: int
) -> None:
    """Unmount the FUSE mount of ``process`` on ``target``; end the process.

    A normal unmount first, retried for a while: a request still under way
    (a thread just released by a server that answers again) keeps the mount
    busy for a moment; sshfs exits by itself once unmounted. If that does not
    happen in time (a server that stays hung), the daemon is killed, which
    aborts the FUSE connection and fails every request still waiting on it,
    and the dead mount is detached.
    """
    fusermount = _fusermount()
    deadline = time.monotonic() + _FUSE_UNMOUNT_TIMEOUT
    while (
        fusermount is not None
        and mount_count(target) > before
        and process.poll() is None
        and time.monotonic() < deadline
    ):
        with suppress(subprocess.TimeoutExpired):
            result = subprocess.run(
                [fusermount, "-u", str(target)],
                capture_output=True,
                timeout=max(deadline - time.monotonic(), 0.1),
                check=False,
            )
            if result.returncode == 0:
                break
        time.sleep(0.1)
    try:
        process.wait(timeout=max(deadline - time.monotonic(), 1.0))
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    # Killing the daemon leaves a dead mount ("transport endpoint is not
    # connected") behind: remove it too.
    unmount(target, keep=before)


@contextmanager
def sshfs(
    target: Path,
    remote: str,
    *,
    port: int,
    identity: Path,
    log: Path,
    options: tuple[str, ...] = (),
) -> Iterator[subprocess.Popen[bytes]]:
    """Mount ``remote`` (``user@127.0.0.1:/dir``) with sshfs on ``target``.

    sshfs runs in the foreground (``-f``) as a child process, so it can be
    found and killed; the process is yielded and its output goes to ``log``.
    Host keys are not checked (the server is a test's own, on the loopback
    address); ``options`` are more ``-o`` options. On exit the share is
    unmounted and sshfs ended, also when the server hangs or is gone. Skips
    (or fails, with ``BACKUP_OFFLOAD_REQUIRE_MOUNTS=1``) where FUSE cannot be
    used.
    """
    _require_root()
    require_tools("sshfs")
    if _fusermount() is None:
        require_tools("fusermount")
    if not Path("/dev/fuse").exists():
        skip_or_fail("/dev/fuse is missing: FUSE is not available here")
    target.mkdir(parents=True, exist_ok=True)
    before = mount_count(target)
    ssh_options = (
        f"port={port}",
        f"IdentityFile={identity}",
        "IdentitiesOnly=yes",
        "StrictHostKeyChecking=no",
        "UserKnownHostsFile=/dev/null",
        "BatchMode=yes",
        "LogLevel=ERROR",
        *options,
    )
    args = ["sshfs", "-f", remote, str(target), "-o", ",".join(ssh_options)]
    with log.open("ab") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + SSHFS_MOUNT_TIMEOUT
        while mount_count(target) <= before:
            if process.poll() is not None:
                message = log.read_text(errors="replace").strip()
                reason = f"{' '.join(args)} exited with {process.returncode}"
                if _FUSE_UNAVAILABLE.search(message):
                    skip_or_fail(f"FUSE is not usable here: {reason}: {message}")
                raise MountError(f"{reason}: {message}")
            if time.monotonic() > deadline:
                raise MountError(
                    f"{' '.join(args)}: not mounted after {SSHFS_MOUNT_TIMEOUT}s"
                )
            time.sleep(0.05)
        yield process
    finally:
        _stop_fuse_daemon(process, target, before)


@contextmanager
def fuse_passthrough(
    target: Path, *, delay: float = 0.0
) -> Iterator[subprocess.Popen[bytes]]:
    """Mount an empty directory on ``target`` through a FUSE passthrough.

    The daemon is the benchmarks' passthrough file system (Python FUSE
    bindings, ``mfusepy``), whose every operation waits ``delay`` seconds;
    its process is yielded. Kill it and every operation on ``target`` fails
    with ENOTCONN ("transport endpoint is not connected"), as on a share
    whose sshfs or rclone process died; give it a delay of an hour and
    ``target`` hangs like a server that stopped answering. On exit the
    daemon is killed (which fails every request still waiting on it) and
    the mount detached.
    """
    _require_root()
    if _fusermount() is None:
        require_tools("fusermount")
    if not Path("/dev/fuse").exists():
        skip_or_fail("/dev/fuse is missing: FUSE is not available here")
    if importlib.util.find_spec("mfusepy") is None:
        skip_or_fail("no FUSE bindings (pip install mfusepy)")
    source = target.with_name(target.name + ".source")
    source.mkdir(parents=True, exist_ok=True)
    target.mkdir(parents=True, exist_ok=True)
    before = mount_count(target)
    command = [sys.executable, "-m", "benchmarks.slowfs", str(source), str(target)]
    process = subprocess.Popen(
        [*command, "--delay", str(delay)],
        cwd=Path(__file__).resolve().parents[1],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + SSHFS_MOUNT_TIMEOUT
        while mount_count(target) <= before:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                _, error = process.communicate()
                raise MountError(f"the FUSE passthrough did not mount: {error!r}")
            time.sleep(0.05)
        yield process
    finally:
        process.kill()
        process.wait()
        if process.stderr is not None:
            process.stderr.close()
        unmount(target, keep=before)
