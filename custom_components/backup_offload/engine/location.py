"""Probe and maintain a backup location (synchronous core).

Every function here does blocking file-system I/O and is meant to run in one
executor job per logical operation (docs/architecture.md, "The rules"). Nothing
here imports Home Assistant.

A location is a directory, usually a network share or a second disk mounted
into the machine. The dangerous case is a share that is *not* mounted: its
mount point is then an ordinary empty directory on the local disk, and a
backup written there fills the SD card instead of the NAS. ``probe`` detects
that, and the other cases that make a location unusable, with a typed reason.
"""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass
import os
from pathlib import Path
import re
import secrets
import stat

from .errors import (
    BackupNotFoundError,
    BackupOffloadError,
    InsufficientSpaceError,
    LocationUnavailableError,
)
from .fileops import Local, Place, lstat_at, open_directory, os_error
from .metadata import SIDECAR_SUFFIX, is_backup_file_name

# Free space kept in reserve on top of the caller's estimate: the sidecar,
# file-system metadata and block rounding, and an estimate that is a bit low.
SPACE_MARGIN_BYTES = 16 * 1024 * 1024

# Hidden name of the write-test file. One is left behind only if the process
# dies between create and unlink; ``cleanup_temporary`` with this prefix
# removes it.
PROBE_PREFIX = ".backup_offload_probe."


# Where the kernel lists the mount points of this process's mount namespace.
MOUNTINFO = "/proc/self/mountinfo"

# File systems held in memory: what is written there is gone at the next boot.
RAM_FILE_SYSTEMS = frozenset({"tmpfs", "ramfs"})

# The system's own folders in memory. Backups there vanish at the next boot
# (and /dev is the kernel's device nodes), so they are refused whatever the
# file system type says (in a container, /dev is often a plain tmpfs).
SYSTEM_FOLDERS = ("/dev", "/dev/shm", "/run")  # noqa: S108 - refused, not used

# Linux's limits (limits.h): a whole path with its final NUL, one name.
_PATH_MAX = 4096
_NAME_MAX = 255

# The config flow's error keys for a path: the reasons ``validate_location``
# reports, and ``not_responding`` when it does not return in time.
CONFIG_REASONS = (
    "not_absolute",
    "not_found",
    "not_a_directory",
    "not_writable",
    "not_a_mount",
    "inside_config",
    "system_folder",
    "path_too_long",
    "unreachable",
    "not_responding",
    "no_space",
    "unknown",
)

# A file-system error that is neither the location's nor a known operation's.
_UNEXPECTED = Local(space=BackupOffloadError, failed=BackupOffloadError)

# How the cleanup opens a temporary file to test its lock: for writing, as
# NFS grants an exclusive lock only on a descriptor open for writing.
# ``flock`` answers of a file system that has no locks.

_MOUNTINFO_ESCAPE = re.compile(rb"\\([0-7]{3})")


class LocationConfigError(BackupOffloadError):
    """A path entered in the config flow cannot be used as a location.

    ``reason`` is one of ``CONFIG_REASONS`` and is set per instance.
    """

    def __init__(self, message: str, reason: str, **placeholders: str) -> None:
        """Store the message and the config flow error key."""
        super().__init__(message, **placeholders)
        self.reason = reason


@dataclass(frozen=True, slots=True, kw_only=True)
class LocationStatus:
    """What one probe found out about a location."""

    path: str
    """The real path that was probed (symlinks resolved)."""
    mounted: bool
    """The path is a mount point (its own file system or a bind mount)."""
    writable: bool | None
    """True: the write test passed; False: read-only; None: not tested."""
    free_bytes: int
    """Bytes available to this process (not counting root's reserve)."""
    total_bytes: int
    file_system: str | None = None
    """The mount table's type of the file system (``nfs4``, ``tmpfs``, ...)."""

    @property
    def in_ram(self) -> bool:
        """Return True when the location's backups vanish at the next boot."""
        return self.file_system in RAM_FILE_SYSTEMS


@dataclass(frozen=True, slots=True)
class Mount:
    """One line of the mount table."""

    point: bytes
    file_system: str


def _contains[P: (str, bytes)](outer: P, inner: P) -> bool:
    """Return True when real path ``inner`` is ``outer`` or below it."""
    return os.path.commonpath((outer, inner)) == outer


def _unavailable(path: str, err: OSError, *, writing: bool) -> BackupOffloadError:
    """Return the typed error for an OSError on the location's directory."""
    return os_error(err, path, writing=writing, where=Place.LOCATION, path=path)


def _unescape_mountinfo(field: bytes) -> bytes:
    r"""Undo the octal escapes (``\040`` for a space, ...) of mountinfo fields."""
    return _MOUNTINFO_ESCAPE.sub(lambda m: bytes([int(m.group(1), 8)]), field)


def mount_table() -> list[Mount] | None:
    """Return the mounts of this mount namespace in mount order, or None.

    Mount points are bytes, because they are not necessarily valid UTF-8.
    """
    try:
        content = Path(MOUNTINFO).read_bytes()
    except OSError:
        # No /proc (unusual chroot): fall back to the device comparison alone.
        return None
    mounts: list[Mount] = []
    for line in content.splitlines():
        fields = line.split(b" ")
        if len(fields) <= 4:
            continue
        # The type follows the "-" that ends the optional fields (from the 7th).
        try:
            file_system = fields[fields.index(b"-", 6) + 1]
        except (ValueError, IndexError):
            file_system = b""
        mounts.append(
            Mount(
                _unescape_mountinfo(fields[4]),
                os.fsdecode(_unescape_mountinfo(file_system)),
            )
        )
    return mounts


def _holding_mount(real_path: str, table: list[Mount] | None) -> Mount | None:
    """Return the mount that holds ``real_path``: the longest mount point above it.

    Of mounts stacked on one point the last listed is the visible one.
    """
    path = os.fsencode(real_path)
    holder: Mount | None = None
    for mount in table or ():
        if _contains(mount.point, path) and (
            holder is None or len(mount.point) >= len(holder.point)
        ):
            holder = mount
    return holder


def _is_mount_point(
    real_path: str, path_stat: os.stat_result, table: list[Mount] | None
) -> bool:
    """Return True when ``real_path`` (no symlinks) is a mount point.

    Like the Supervisor: a mount point has another device than its parent,
    or the parent's inode when it is ``/``. That misses a bind mount of a
    directory of the same file system, which only the mount table shows.
    """
    parent = Path(real_path, os.pardir).stat()
    if path_stat.st_dev != parent.st_dev or path_stat.st_ino == parent.st_ino:
        return True
    path = os.fsencode(real_path)
    return table is not None and any(mount.point == path for mount in table)


def _write_test(path: str) -> None:
    """Create, write, fsync and remove a hidden file; raise ``OSError`` if not.

    A real write is the only reliable test: permissions, ACLs, root squash on
    NFS, a read-only export or a full disk all show up only when writing.
    The file is removed whatever happens.
    """
    name = f"{PROBE_PREFIX}{os.getpid()}.{secrets.token_hex(4)}"
    with open_directory(path) as dir_fd:
        fd = os.open(
            name,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
            0o600,
            dir_fd=dir_fd,
        )
        try:
            try:
                os.write(fd, b"backup_offload write test\n")
                os.fsync(fd)
            finally:
                os.close(fd)
        finally:
            with suppress(FileNotFoundError):
                os.unlink(name, dir_fd=dir_fd)


def _check_not_on_config_device(
    shown: str, path_stat: os.stat_result, config_dir: str
) -> None:
    """Raise ``not_a_mount`` when the location shares the config's file system."""
    try:
        config_dev = Path(config_dir).stat().st_dev
    except OSError as err:
        # Not a problem of the location: no location reason fits.
        raise os_error(err, config_dir, writing=False, where=_UNEXPECTED) from err
    if path_stat.st_dev == config_dev:
        raise LocationUnavailableError(
            f"{shown}: on the same file system as the configuration directory"
            f" {config_dir}, so the share is not mounted (on a Docker host,"
            " check the host's mount); turn off 'require mount' to use a"
            " local directory",
            "not_a_mount",
            path=shown,
        )


def _check_place(
    shown: str, real: str, holder: Mount | None, config_dir: str | None
) -> None:
    """Refuse a real path that is not a place for backups, whatever it is called.

    Run before each operation, not only in the config flow: a location can
    be replaced by a symlink to such a place after it was set up.
    """
    # Room below it for a name, the "/" before it and the final NUL: else
    # the files in it are out of reach of a path.
    longest = _PATH_MAX - _NAME_MAX - 2
    if (size := len(os.fsencode(real))) > longest:
        raise LocationUnavailableError(
            f"{shown}: the path is too long ({size} bytes, at most {longest})",
            "path_too_long",
            path=shown,
        )
    if config_dir is not None:
        config_real = os.path.realpath(config_dir)
        # Inside: the backup would back itself up. Containing: the location's
        # listing and retention would walk the config directory.
        if _contains(config_real, real) or _contains(real, config_real):
            raise LocationUnavailableError(
                f"{shown}: it leads to {real}, which is inside the configuration"
                f" directory {config_real} or contains it",
                "inside_config",
                path=shown,
            )
    if _in_system_folder(real, holder):
        raise LocationUnavailableError(
            f"{shown}: it leads to {real}, a folder of the system in memory"
            " (/dev, /dev/shm, /run) where backups vanish at the next boot",
            "system_folder",
            path=shown,
        )


def _in_system_folder(real: str, holder: Mount | None) -> bool:
    """Return True for devtmpfs and the system's folders in memory."""
    if holder is not None and holder.file_system == "devtmpfs":
        return True
    path = os.fsencode(real)
    for name in SYSTEM_FOLDERS:
        for folder in {os.fsencode(name), os.fsencode(os.path.realpath(name))}:
            if not _contains(folder, path):
                continue
            # A disk mounted below the folder, as /run/media/<user>/<disk>,
            # is not the folder itself.
            if (
                holder is not None
                and holder.point != folder
                and _contains(folder, holder.point)
                and holder.file_system not in RAM_FILE_SYSTEMS
            ):
                continue
            return True
    return False


def probe(
    path: str | Path,
    *,
    require_mount: bool,
    for_write: bool = False,
    needed_bytes: int = 0,
    config_dir: str | Path | None = None,
) -> LocationStatus:
    """Check that a location can be used now, and return its status.

    Raises ``LocationUnavailableError`` (``location_reason``: ``not_found``,
    ``not_a_directory``, ``not_a_mount``, ``not_writable``, ``unreachable``,
    ``path_too_long``, ``inside_config``, ``system_folder``) or
    ``InsufficientSpaceError`` when ``needed_bytes`` (plus
    ``SPACE_MARGIN_BYTES``) do not fit. Nothing is left behind in the location.

    Whatever ``require_mount`` says, the real path (symlinks resolved) must
    not be inside ``config_dir`` nor contain it, nor be one of the system's
    folders in memory (``SYSTEM_FOLDERS``, devtmpfs).

    With ``require_mount`` and ``config_dir``, a location on the same file
    system as the configuration directory is ``not_a_mount`` too: that is
    how a share that is not mounted on a Docker host looks from inside the
    container (a bind mount of the host's bare mount point directory).
    """
    shown = os.fspath(path)
    if not Path(shown).is_absolute():
        # The caller's bug, not the location's state: "" would probe the cwd.
        raise ValueError(f"location path must be absolute: {shown!r}")
    config = None if config_dir is None else os.fspath(config_dir)
    path_stat = _stat_directory(shown)
    real = os.path.realpath(shown)
    table = mount_table()
    holder = _holding_mount(real, table)
    _check_place(shown, real, holder, config)
    try:
        # statvfs asks the file system itself: a stale or cached mount fails
        # (or hangs, which the caller's timeout handles) here, where stat may
        # still answer from the cache.
        vfs = os.statvfs(real)
        mounted = _is_mount_point(real, path_stat, table)
    except OSError as err:
        raise _unavailable(shown, err, writing=False) from err
    if require_mount:
        _check_mounted(shown, mounted, path_stat, config)
    writable = _check_writable(shown, real, vfs, for_write=for_write)
    free_bytes = vfs.f_bavail * vfs.f_frsize
    _check_space(shown, free_bytes, needed_bytes)
    return LocationStatus(
        path=real,
        mounted=mounted,
        writable=writable,
        free_bytes=free_bytes,
        total_bytes=vfs.f_blocks * vfs.f_frsize,
        file_system=None if holder is None else holder.file_system,
    )


def _stat_directory(shown: str) -> os.stat_result:
    """Return the stat of the location, which must be a directory."""
    try:
        path_stat = Path(shown).stat()
    except OSError as err:
        raise _unavailable(shown, err, writing=False) from err
    if not stat.S_ISDIR(path_stat.st_mode):
        raise LocationUnavailableError(
            f"{shown}: not a directory", "not_a_directory", path=shown
        )
    return path_stat


def _check_mounted(
    shown: str, mounted: bool, path_stat: os.stat_result, config_dir: str | None
) -> None:
    """Raise ``not_a_mount`` unless a share or disk is mounted there."""
    if not mounted:
        raise LocationUnavailableError(
            f"{shown}: not a mount point",
            "not_a_mount",
            path=shown,
        )
    if config_dir is not None:
        _check_not_on_config_device(shown, path_stat, config_dir)


def _check_writable(
    shown: str, real: str, vfs: os.statvfs_result, *, for_write: bool
) -> bool | None:
    """Return whether the location is writable: tested only ``for_write``.

    False for a read-only mount; with ``for_write``, that raises
    ``not_writable``, and so does a write test that fails.
    """
    writable: bool | None = False if vfs.f_flag & os.ST_RDONLY else None
    if not for_write:
        return writable
    if writable is False:
        raise LocationUnavailableError(
            f"{shown}: mounted read-only", "not_writable", path=shown
        )
    try:
        _write_test(real)
    except OSError as err:
        raise _unavailable(shown, err, writing=True) from err
    return True


def _check_space(shown: str, free_bytes: int, needed_bytes: int) -> None:
    """Raise InsufficientSpaceError unless ``needed_bytes`` and the reserve fit."""
    if needed_bytes > 0 and free_bytes < needed_bytes + SPACE_MARGIN_BYTES:
        raise InsufficientSpaceError(
            f"{shown}: {free_bytes} bytes free, {needed_bytes} needed"
            f" plus {SPACE_MARGIN_BYTES} in reserve",
            path=shown,
            free=str(free_bytes),
            needed=str(needed_bytes),
        )


def validate_location(
    path: str, *, require_mount: bool, config_dir: str
) -> LocationStatus:
    """Validate a path for the config flow; return the probe's status.

    The status has the resolved real path, and the file system type for a
    warning about a location in memory. Raises ``LocationConfigError`` whose
    ``reason`` is a config flow error key (``CONFIG_REASONS``). One executor
    job does all the checks.
    """
    if not path or not Path(path).is_absolute():
        raise LocationConfigError(f"{path!r} is not an absolute path", "not_absolute")
    try:
        return _probe_new(path, require_mount=require_mount, config_dir=config_dir)
    except LocationUnavailableError as err:
        # probe's reasons are all config flow error keys too.
        raise LocationConfigError(str(err), err.location_reason) from err
    except InsufficientSpaceError as err:
        # Full during the write test: usable later, but not now.
        raise LocationConfigError(str(err), "no_space") from err
    except BackupOffloadError as err:
        raise LocationConfigError(str(err), "unknown") from err


def _probe_new(path: str, *, require_mount: bool, config_dir: str) -> LocationStatus:
    """Probe a path entered in the config flow, for writing.

    A permission refused on the way there is "not writable" here (the user
    can fix that), where the probe of a location in use says "unreachable".
    The probe also refuses the configuration directory, the system's folders
    in memory and a path too long, as before each operation.
    """
    try:
        Path(path).stat()
    except OSError as err:
        raise _unavailable(path, err, writing=True) from err
    return probe(
        path, require_mount=require_mount, for_write=True, config_dir=config_dir
    )


def delete_backup(location: str | Path, filename: str) -> list[str]:
    """Delete a backup archive and its ``.sha256`` sidecar; return removed names.

    Only a regular ``*.tar`` file directly in the location is deleted (no
    path separators, no hidden name, no symlink, no directory); anything
    else raises ``BackupNotFoundError`` and nothing is touched. The caller
    probes the location first, in the same job.
    """
    loc = os.fspath(location)
    if not is_backup_file_name(filename):
        raise BackupNotFoundError(
            f"{filename!r} is not a backup file name", file=filename
        )
    removed: list[str] = []
    try:
        with open_directory(loc) as dir_fd:
            archive = lstat_at(filename, dir_fd)
            if archive is None or not stat.S_ISREG(archive.st_mode):
                what = "not found" if archive is None else "not a regular file"
                raise BackupNotFoundError(
                    f"{Path(loc, filename)}: {what}", file=filename
                )
            os.unlink(filename, dir_fd=dir_fd)
            removed.append(filename)
            # The archive goes first: a crash in between leaves an orphan
            # checksum (ignored by listings), never a backup without its
            # checksum that looks complete.
            sidecar = filename + SIDECAR_SUFFIX
            sidecar_stat = lstat_at(sidecar, dir_fd)
            if sidecar_stat is not None and stat.S_ISREG(sidecar_stat.st_mode):
                os.unlink(sidecar, dir_fd=dir_fd)
                removed.append(sidecar)
    except OSError as err:
        raise _unavailable(loc, err, writing=True) from err
    return removed
