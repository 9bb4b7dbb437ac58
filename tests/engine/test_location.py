"""Tests of the location core (probe, validate, delete, cleanup) on real mounts.

Mount tests use real tmpfs, bind, loop-device ext4 and read-only mounts (see
``tests/mounts.py``); they are skipped with the reason where mounting is not
permitted. Errors a local machine cannot produce for real (a dropped network
share: ENOTCONN, ESTALE, ...) are injected at the system call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
import errno
import os
from pathlib import Path
import shutil
import subprocess
import tempfile
import time
from typing import Any

import pytest

from custom_components.backup_offload.engine import location
from custom_components.backup_offload.engine.errors import (
    BackupNotFoundError,
    BackupOffloadError,
    InsufficientSpaceError,
    LocationUnavailableError,
)
from custom_components.backup_offload.engine.location import (
    PROBE_PREFIX,
    SPACE_MARGIN_BYTES,
    LocationConfigError,
    LocationStatus,
    delete_backup,
    probe,
    validate_location,
)
from custom_components.backup_offload.engine.temporary import cleanup_temporary
from tests import mounts

TEMP_PREFIX = ".backup_offload_tmp."  # Stand-in for archive.TEMP_PREFIX.


@pytest.fixture
def share(tmp_path: Path) -> Iterator[Path]:
    """Mount a writable share (tmpfs); unmount it after the test."""
    with mounts.tmpfs(tmp_path / "share") as path:
        yield path


@pytest.fixture
def bare(tmp_path: Path) -> Path:
    """Return an ordinary directory, like the mount point of an unmounted share."""
    path = tmp_path / "bare"
    path.mkdir()
    return path


def names(path: Path) -> list[str]:
    """Return the sorted names in directory ``path``."""
    return sorted(entry.name for entry in path.iterdir())


def probe_files(path: Path) -> list[str]:
    """Return the write-test files left in ``path`` (there must be none)."""
    return [name for name in names(path) if name.startswith(PROBE_PREFIX)]


def fill(path: Path) -> None:
    """Fill the file system of ``path`` until it reports ENOSPC."""
    # Big blocks first, then single bytes: the last write before ENOSPC may
    # be short, and afterwards nothing at all may fit.
    with (path / "filler").open("ab", buffering=0) as file:
        for block in (b"\0" * 65536, b"\0"):
            with pytest.raises(OSError) as excinfo:  # noqa: PT012
                while True:
                    file.write(block)
            assert excinfo.value.errno == errno.ENOSPC


def location_error(
    excinfo: pytest.ExceptionInfo[LocationUnavailableError],
) -> str:
    """Return the location reason of a caught error."""
    return excinfo.value.location_reason


# --- probe ---------------------------------------------------------------


def test_probe_tmpfs_share(share: Path) -> None:
    status = probe(share, require_mount=True)
    vfs = os.statvfs(share)
    assert status == LocationStatus(
        path=str(share),
        mounted=True,
        writable=None,
        free_bytes=vfs.f_bavail * vfs.f_frsize,
        total_bytes=vfs.f_blocks * vfs.f_frsize,
        file_system="tmpfs",
    )
    assert status.in_ram
    assert status.free_bytes > 0
    assert status.total_bytes >= status.free_bytes


def test_probe_for_write_leaves_nothing_behind(share: Path) -> None:
    (share / "backup.tar").write_bytes(b"x")
    status = probe(str(share), require_mount=True, for_write=True)
    assert status.writable is True
    assert names(share) == ["backup.tar"]


@pytest.mark.parametrize("require_mount", [True, False])
def test_probe_bare_directory(bare: Path, require_mount: bool) -> None:
    if require_mount:
        with pytest.raises(LocationUnavailableError) as excinfo:
            probe(bare, require_mount=True, for_write=True)
        assert location_error(excinfo) == "not_a_mount"
        assert "not a mount point" in str(excinfo.value)
        assert excinfo.value.placeholders["path"] == str(bare)
        # Failed before the write test: nothing was written.
        assert names(bare) == []
    else:
        status = probe(bare, require_mount=False, for_write=True)
        assert status.mounted is False
        assert status.writable is True
        assert probe_files(bare) == []


def test_probe_share_lost_by_lazy_unmount(tmp_path: Path) -> None:
    with mounts.tmpfs(tmp_path / "share") as share:
        (share / "backup.tar").write_bytes(b"x")
        assert probe(share, require_mount=True).mounted
        mounts.lazy_unmount(share)
        # What is left is the bare local mount point directory.
        assert names(share) == []
        with pytest.raises(LocationUnavailableError) as excinfo:
            probe(share, require_mount=True, for_write=True, needed_bytes=1)
        assert location_error(excinfo) == "not_a_mount"
        assert names(share) == []


def test_probe_bind_mount_of_same_file_system(tmp_path: Path, bare: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    with mounts.bind_mount(source, tmp_path / "bound") as bound:
        # The case the device comparison (and os.path.ismount) cannot see.
        assert bound.stat().st_dev == tmp_path.stat().st_dev
        assert not os.path.ismount(bound)
        status = probe(bound, require_mount=True, for_write=True)
    assert status.mounted is True
    assert status.writable is True
    assert probe_files(source) == []


def test_probe_docker_bind_of_unmounted_host_share(
    tmp_path: Path, config_dir: Path
) -> None:
    # HA Container with "-v /mnt/nas:/media/nas" while the host has not
    # mounted the NAS: inside, /media/nas is a bind mount of the host's bare
    # directory, on the same file system as /config.
    host_mount_point = tmp_path / "host-mnt-nas"
    host_mount_point.mkdir()
    with mounts.bind_mount(host_mount_point, tmp_path / "media-nas") as media:
        assert probe(media, require_mount=True).mounted
        with pytest.raises(LocationUnavailableError) as excinfo:
            probe(media, require_mount=True, for_write=True, config_dir=config_dir)
        assert location_error(excinfo) == "not_a_mount"
        assert "same file system as the configuration directory" in str(excinfo.value)
        assert names(host_mount_point) == []
        # Without require_mount a local directory is what the user asked for.
        probe(media, require_mount=False, config_dir=config_dir)


def test_probe_share_is_not_on_config_file_system(
    share: Path, config_dir: Path
) -> None:
    assert probe(share, require_mount=True, config_dir=str(config_dir)).mounted


def test_probe_config_dir_missing(tmp_path: Path, share: Path) -> None:
    with pytest.raises(BackupOffloadError) as excinfo:
        probe(share, require_mount=True, config_dir=tmp_path / "missing")
    assert not isinstance(excinfo.value, LocationUnavailableError)
    assert "ENOENT" in str(excinfo.value)


@pytest.mark.parametrize("path", ["", "relative", Path("relative")])
def test_probe_needs_an_absolute_path(path: str | Path) -> None:
    with pytest.raises(ValueError, match="must be absolute"):
        probe(path, require_mount=False)


def test_probe_bind_mount_with_escaped_name(tmp_path: Path) -> None:
    # The mount table escapes spaces, tabs and backslashes (\040, ...).
    source = tmp_path / "source"
    source.mkdir()
    with mounts.bind_mount(source, tmp_path / "my nas\tshare\\x") as bound:
        assert probe(bound, require_mount=True).mounted


def test_probe_without_mount_table(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, share: Path
) -> None:
    # Without /proc the device comparison still finds a real file system,
    # only a bind mount of the same file system goes unnoticed.
    monkeypatch.setattr(location, "MOUNTINFO", str(tmp_path / "missing"))
    status = probe(share, require_mount=True)
    assert status.mounted
    assert status.file_system is None
    assert not status.in_ram
    source = tmp_path / "source"
    source.mkdir()
    with mounts.bind_mount(source, tmp_path / "bound") as bound:
        assert probe(bound, require_mount=False).mounted is False


def test_probe_reads_the_mount_table(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, bare: Path
) -> None:
    # A mount table that lists the bare directory (escaped as the kernel
    # does, once with an optional field), a line too short to parse, which
    # is skipped, and one without the "-" before the type.
    escaped = str(bare).replace("\\", "\\134").replace(" ", "\\040")
    table = tmp_path / "mountinfo"
    table.write_text(
        "broken line\n"
        "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n"
        f"98 27 0:99 / {escaped} rw shared:1 - tmpfs tmpfs rw\n"
        f"99 27 254:0 /x {escaped} rw,relatime - nfs4 nas:/x rw\n"
        f"100 99 0:98 / {escaped}/deeper rw\n"
    )
    monkeypatch.setattr(location, "MOUNTINFO", str(table))
    status = probe(bare, require_mount=True)
    assert status.mounted
    # The longest mount point above the path, and of the two mounts stacked
    # there the one mounted last.
    assert status.file_system == "nfs4"
    assert probe(tmp_path, require_mount=False).file_system == "ext4"


def test_probe_root_is_a_mount() -> None:
    # "/" has the same device as its parent ("/.."), but also the same inode.
    assert probe("/", require_mount=True).mounted


def test_probe_symlink_to_share(tmp_path: Path, share: Path) -> None:
    link = tmp_path / "link"
    link.symlink_to(share)
    status = probe(link, require_mount=True)
    assert status.path == str(share)
    assert status.mounted


def test_probe_ext4_loop_device(tmp_path: Path) -> None:
    with mounts.loop_ext4(tmp_path / "disk", tmp_path / "disk.img") as disk:
        status = probe(disk, require_mount=True, for_write=True)
        vfs = os.statvfs(disk)
    assert status.mounted
    assert status.writable
    assert status.file_system == "ext4"
    assert not status.in_ram
    # Free space is what a non-root process may use: root's reserve is out.
    assert status.free_bytes == vfs.f_bavail * vfs.f_frsize
    assert vfs.f_bavail < vfs.f_bfree


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        pytest.param(lambda p: p / "missing", "not_found", id="missing"),
        pytest.param(lambda p: p / "missing" / "deeper", "not_found", id="deeper"),
        pytest.param(lambda p: p / "file" / "sub", "not_found", id="under-a-file"),
        pytest.param(lambda p: p / "file", "not_a_directory", id="file"),
        pytest.param(lambda p: p / "dangling", "not_found", id="dangling-link"),
    ],
)
def test_probe_unusable_path(
    tmp_path: Path, make: Callable[[Path], Path], reason: str
) -> None:
    (tmp_path / "file").write_text("x")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(LocationUnavailableError) as excinfo:
        probe(make(tmp_path), require_mount=False, for_write=True)
    assert location_error(excinfo) == reason


@pytest.mark.parametrize("for_write", [True, False])
def test_probe_read_only_share(share: Path, for_write: bool) -> None:
    with mounts.read_only(share):
        if for_write:
            with pytest.raises(LocationUnavailableError) as excinfo:
                probe(share, require_mount=True, for_write=True)
            assert location_error(excinfo) == "not_writable"
            assert "read-only" in str(excinfo.value)
        else:
            status = probe(share, require_mount=True)
            # Known from the mount flags without a write test.
            assert status.writable is False
        assert names(share) == []


def test_probe_read_only_bind_mount(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    with (
        mounts.bind_mount(source, tmp_path / "bound") as bound,
        mounts.read_only(bound, bind=True),
        pytest.raises(LocationUnavailableError) as excinfo,
    ):
        probe(bound, require_mount=True, for_write=True)
    assert location_error(excinfo) == "not_writable"


def test_probe_write_refused_without_read_only_flag(
    monkeypatch: pytest.MonkeyPatch, share: Path
) -> None:
    # E.g. NFS root squash or a read-only export: the mount looks writable,
    # only writing tells. Root bypasses permissions, so inject the EACCES.
    real_open = os.open

    def refusing_open(name: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if str(name).startswith(PROBE_PREFIX):
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_open(name, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refusing_open)
    with pytest.raises(LocationUnavailableError) as excinfo:
        probe(share, require_mount=True, for_write=True)
    monkeypatch.undo()
    assert location_error(excinfo) == "not_writable"
    assert "EACCES" in str(excinfo.value)


def test_probe_write_test_fails_on_full_share(tmp_path: Path) -> None:
    with mounts.tmpfs(tmp_path / "tiny", size="256k") as tiny:
        fill(tiny)
        with pytest.raises(InsufficientSpaceError) as excinfo:
            probe(tiny, require_mount=True, for_write=True)
        assert "ENOSPC" in str(excinfo.value)
        assert names(tiny) == ["filler"]


def test_probe_write_test_fails_on_fsync(
    monkeypatch: pytest.MonkeyPatch, share: Path
) -> None:
    def failing_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(LocationUnavailableError) as excinfo:
        probe(share, require_mount=True, for_write=True)
    monkeypatch.undo()
    assert location_error(excinfo) == "unreachable"
    assert "EIO" in str(excinfo.value)
    assert names(share) == []


def test_probe_write_test_over_quota(
    monkeypatch: pytest.MonkeyPatch, share: Path
) -> None:
    """A quota that refuses the write test: the share is full, not unreachable."""

    def over_quota(fd: int) -> None:
        # NFS reports a quota only when the data reaches the server.
        raise OSError(errno.EDQUOT, "Disk quota exceeded")

    monkeypatch.setattr(os, "fsync", over_quota)
    with pytest.raises(InsufficientSpaceError) as excinfo:
        probe(share, require_mount=True, for_write=True)
    monkeypatch.undo()
    assert "EDQUOT" in str(excinfo.value)
    assert excinfo.value.placeholders["path"] == str(share)
    assert names(share) == []


def test_probe_tiny_share_has_insufficient_space(tmp_path: Path) -> None:
    with mounts.tmpfs(tmp_path / "tiny", size="256k") as tiny:
        with pytest.raises(InsufficientSpaceError) as excinfo:
            probe(tiny, require_mount=True, for_write=True, needed_bytes=1024 * 1024)
        assert excinfo.value.placeholders["needed"] == str(1024 * 1024)
        assert names(tiny) == []
        # Without a size to check, the same share is fine.
        assert probe(tiny, require_mount=True, for_write=True).free_bytes > 0


def test_probe_space_margin(tmp_path: Path) -> None:
    with mounts.tmpfs(tmp_path / "disk", size="32m") as disk:
        free = probe(disk, require_mount=True).free_bytes
        fits = free - SPACE_MARGIN_BYTES
        assert fits > 0
        assert probe(disk, require_mount=True, needed_bytes=fits).free_bytes == free
        with pytest.raises(InsufficientSpaceError):
            probe(disk, require_mount=True, needed_bytes=fits + 1)


@pytest.mark.parametrize(
    "code", [errno.ENOTCONN, errno.EIO, errno.ESTALE, errno.EHOSTDOWN, errno.EACCES]
)
def test_probe_unreachable_share(
    monkeypatch: pytest.MonkeyPatch, share: Path, code: int
) -> None:
    # A dropped network share answers statvfs with an error (a later suite
    # produces these for real with sshfs).
    def broken_statvfs(path: Any) -> os.statvfs_result:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "statvfs", broken_statvfs)
    with pytest.raises(LocationUnavailableError) as excinfo:
        probe(share, require_mount=True, for_write=True)
    monkeypatch.undo()
    assert location_error(excinfo) == "unreachable"
    assert errno.errorcode[code] in str(excinfo.value)
    assert names(share) == []


def test_probe_stale_handle_on_stat(
    monkeypatch: pytest.MonkeyPatch, share: Path
) -> None:
    real_stat = os.stat

    def stale_stat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        if os.fspath(path) == str(share):
            raise OSError(errno.ESTALE, "Stale file handle")
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", stale_stat)
    with pytest.raises(LocationUnavailableError) as excinfo:
        probe(share, require_mount=True)
    monkeypatch.undo()
    assert location_error(excinfo) == "unreachable"
    assert "ESTALE" in str(excinfo.value)


@pytest.mark.parametrize(
    ("error", "shown"),
    [
        pytest.param(OSError("no errno"), "unknown error", id="no-errno"),
        pytest.param(OSError(99999, "Odd"), "(99999)", id="unknown-errno"),
    ],
)
def test_probe_error_without_errno_name(
    monkeypatch: pytest.MonkeyPatch, share: Path, error: OSError, shown: str
) -> None:
    def broken_statvfs(path: Any) -> os.statvfs_result:
        raise error

    monkeypatch.setattr(os, "statvfs", broken_statvfs)
    with pytest.raises(LocationUnavailableError) as excinfo:
        probe(share, require_mount=False)
    monkeypatch.undo()
    assert location_error(excinfo) == "unreachable"
    assert shown in str(excinfo.value)


# --- places that are no place for backups --------------------------------


def tree(path: Path) -> list[str]:
    """Return every path below ``path``, hidden files included, sorted."""
    return sorted(str(entry.relative_to(path)) for entry in path.rglob("*"))


@pytest.mark.parametrize(
    "target",
    [
        pytest.param(lambda tmp, cfg: cfg, id="config"),
        pytest.param(lambda tmp, cfg: cfg / ".storage", id="inside-config"),
        pytest.param(lambda tmp, cfg: tmp, id="contains-config"),
    ],
)
@pytest.mark.parametrize("require_mount", [False, True])
def test_probe_location_swapped_for_link_into_config(
    tmp_path: Path,
    config_dir: Path,
    target: Callable[[Path, Path], Path],
    require_mount: bool,
) -> None:
    (config_dir / ".storage").mkdir()
    with mounts.tmpfs(tmp_path / "nas") as nas:
        probe(nas, require_mount=require_mount, for_write=True, config_dir=config_dir)
    # After setup, the location's directory becomes a link into the config.
    nas.rmdir()
    nas.symlink_to(target(tmp_path, config_dir))
    before = tree(config_dir)
    with pytest.raises(LocationUnavailableError) as excinfo:
        probe(
            nas,
            require_mount=require_mount,
            for_write=True,
            needed_bytes=1,
            config_dir=config_dir,
        )
    assert location_error(excinfo) == "inside_config"
    assert excinfo.value.placeholders["path"] == str(nas)
    assert "configuration directory" in str(excinfo.value)
    assert tree(config_dir) == before


def test_probe_link_into_config_that_is_a_mount(tmp_path: Path) -> None:
    # In a container /config is a mount (a bind mount of the host's
    # directory): "require mount" alone would take it for a share.
    with (
        mounts.tmpfs(tmp_path / "config") as config_dir,
        mounts.tmpfs(tmp_path / "nas") as nas,
    ):
        link = tmp_path / "link"
        link.symlink_to(config_dir)
        probe(link, require_mount=True)  # Without config_dir: only a mount.
        with pytest.raises(LocationUnavailableError) as excinfo:
            probe(link, require_mount=True, for_write=True, config_dir=config_dir)
        assert location_error(excinfo) == "inside_config"
        assert names(config_dir) == []
        probe(nas, require_mount=True, config_dir=config_dir)


@pytest.fixture
def in_dev_shm() -> Iterator[Path]:
    """Return a new directory in /dev/shm; remove it after the test."""
    path = Path(tempfile.mkdtemp(prefix="backup_offload_test.", dir="/dev/shm"))
    yield path
    shutil.rmtree(path)


@pytest.fixture
def in_run() -> Iterator[Path]:
    """Return a new directory in /run; remove it after the test."""
    path = Path(tempfile.mkdtemp(prefix="backup_offload_test.", dir="/run"))
    yield path
    shutil.rmtree(path)


@pytest.mark.parametrize(
    "path", ["/dev", "/dev/shm", "/run", "/var/run", "/dev/shm/{new}"]
)
@pytest.mark.parametrize("require_mount", [False, True])
def test_probe_refuses_the_system_folders_in_memory(
    in_dev_shm: Path, path: str, require_mount: bool
) -> None:
    path = path.format(new=in_dev_shm.name)
    if not Path(path).is_dir():
        pytest.skip(f"{path} does not exist here")
    with pytest.raises(LocationUnavailableError) as excinfo:
        probe(path, require_mount=require_mount, for_write=True)
    assert location_error(excinfo) == "system_folder"
    assert probe_files(Path(path)) == []


def test_probe_refuses_devtmpfs_elsewhere(tmp_path: Path) -> None:
    with mounts.mounted(tmp_path / "devices", "-t", "devtmpfs", "devtmpfs") as dev:
        with pytest.raises(LocationUnavailableError) as excinfo:
            probe(dev, require_mount=True, for_write=True)
        assert location_error(excinfo) == "system_folder"
        assert probe_files(dev) == []


def test_probe_disk_mounted_below_run(tmp_path: Path, in_run: Path) -> None:
    # As /run/media/<user>/<disk> for a USB disk: a disk, not the folder.
    source = tmp_path / "disk"
    source.mkdir()
    with mounts.bind_mount(source, in_run / "disk") as disk:
        status = probe(disk, require_mount=True, for_write=True)
    # The disk's own file system (in a chroot the mount table may not list
    # what holds tmp_path, so it is not compared with that).
    assert status.mounted
    assert not status.in_ram
    # A RAM disk mounted there is the system's, as /run/user/<uid> is.
    with mounts.tmpfs(in_run / "ram") as ram:
        with pytest.raises(LocationUnavailableError) as excinfo:
            probe(ram, require_mount=True)
        assert location_error(excinfo) == "system_folder"


def test_probe_system_folder_without_mount_table(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, in_run: Path
) -> None:
    # Without /proc nothing tells a disk below /run from /run itself.
    monkeypatch.setattr(location, "MOUNTINFO", str(tmp_path / "missing"))
    with pytest.raises(LocationUnavailableError) as excinfo:
        probe(in_run, require_mount=False)
    assert location_error(excinfo) == "system_folder"


def deep_directory(base: Path, length: int) -> Path:
    """Create a real directory whose path has at least ``length`` bytes.

    One level at a time, relative to its parent: no single call may take a
    path longer than PATH_MAX.
    """
    path = base
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
    try:
        while len(os.fsencode(path)) < length:
            name = "d" * max(1, min(200, length - len(os.fsencode(path)) - 1))
            os.mkdir(name, dir_fd=fd)
            parent, fd = fd, os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(parent)
            path /= name
    finally:
        os.close(fd)
    return path


@pytest.mark.parametrize(
    "length",
    [
        pytest.param(5000, id="longer-than-path-max"),
        pytest.param(3900, id="no-room-for-file-names"),
    ],
)
def test_probe_path_too_long(tmp_path: Path, length: int) -> None:
    path = deep_directory(tmp_path, length)
    with pytest.raises(LocationUnavailableError) as excinfo:
        probe(path, require_mount=False, for_write=True)
    assert location_error(excinfo) == "path_too_long"


def test_probe_longest_path_with_room_for_file_names(tmp_path: Path) -> None:
    # Room for a name of 255 bytes, a "/" and the final NUL: 4096 in all.
    path = deep_directory(tmp_path, 4096 - 255 - 2)
    assert len(os.fsencode(path)) == 4096 - 255 - 2
    assert probe(path, require_mount=False, for_write=True).writable


# --- validate_location ---------------------------------------------------


# ``config_dir`` (an empty configuration directory) is in tests/conftest.py.


def config_reason(path: str, config_dir: Path, *, require_mount: bool) -> str:
    """Return the reason validate_location rejects ``path`` with."""
    with pytest.raises(LocationConfigError) as excinfo:
        validate_location(path, require_mount=require_mount, config_dir=str(config_dir))
    assert excinfo.value.reason in location.CONFIG_REASONS
    return excinfo.value.reason


def test_validate_share(share: Path, config_dir: Path) -> None:
    result = validate_location(
        str(share), require_mount=True, config_dir=str(config_dir)
    )
    assert result.path == str(share)
    assert result.writable is True
    assert result.in_ram
    assert names(share) == []


def test_validate_symlink_resolves_to_real_path(
    tmp_path: Path, share: Path, config_dir: Path
) -> None:
    link = tmp_path / "link"
    link.symlink_to(share)
    result = validate_location(
        str(link), require_mount=True, config_dir=str(config_dir)
    )
    assert result.path == str(share)


def test_validate_bare_directory_without_require_mount(
    bare: Path, config_dir: Path
) -> None:
    result = validate_location(
        str(bare), require_mount=False, config_dir=str(config_dir)
    )
    assert result.path == str(bare)
    assert config_reason(str(bare), config_dir, require_mount=True) == "not_a_mount"


@pytest.mark.parametrize("path", ["relative/dir", "", ".", "./backups", "~/backups"])
def test_validate_not_absolute(config_dir: Path, path: str) -> None:
    assert config_reason(path, config_dir, require_mount=False) == "not_absolute"


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("missing", "not_found"),
        ("file/sub", "not_found"),
        ("dangling", "not_found"),
        ("file", "not_a_directory"),
    ],
)
def test_validate_unusable_path(
    tmp_path: Path, config_dir: Path, name: str, reason: str
) -> None:
    (tmp_path / "file").write_text("x")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    path = str(tmp_path / name)
    assert config_reason(path, config_dir, require_mount=False) == reason


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda tmp, cfg: cfg, id="is-config"),
        pytest.param(lambda tmp, cfg: cfg / "backups", id="inside-config"),
        pytest.param(lambda tmp, cfg: cfg / "a" / "b", id="deep-inside-config"),
        pytest.param(lambda tmp, cfg: tmp, id="contains-config"),
        pytest.param(lambda tmp, cfg: Path("/"), id="root-contains-config"),
        pytest.param(lambda tmp, cfg: tmp / "to-config", id="symlink-into-config"),
    ],
)
def test_validate_inside_config(
    tmp_path: Path, config_dir: Path, make: Callable[[Path, Path], Path]
) -> None:
    (config_dir / "backups").mkdir()
    (config_dir / "a" / "b").mkdir(parents=True)
    (tmp_path / "to-config").symlink_to(config_dir / "backups")
    path = str(make(tmp_path, config_dir))
    assert config_reason(path, config_dir, require_mount=False) == "inside_config"
    assert probe_files(config_dir) == []


@pytest.mark.parametrize("path", ["/dev", "/dev/shm", "/run"])
def test_validate_system_folder(config_dir: Path, path: str) -> None:
    assert config_reason(path, config_dir, require_mount=False) == "system_folder"


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda tmp: tmp / ("x" * 256), id="name-too-long"),
        pytest.param(lambda tmp: tmp / (("d" * 200 + "/") * 21), id="path-too-long"),
        pytest.param(lambda tmp: deep_directory(tmp, 5000), id="too-deep"),
    ],
)
def test_validate_path_too_long(
    tmp_path: Path, config_dir: Path, make: Callable[[Path], Path]
) -> None:
    path = str(make(tmp_path))
    assert config_reason(path, config_dir, require_mount=False) == "path_too_long"


def test_validate_sibling_with_common_prefix(tmp_path: Path, config_dir: Path) -> None:
    # "/x/config-backups" is not inside "/x/config": compare paths, not strings.
    sibling = tmp_path / "config-backups"
    sibling.mkdir()
    result = validate_location(
        str(sibling), require_mount=False, config_dir=str(config_dir)
    )
    assert result.path == str(sibling)


def test_validate_config_dir_given_through_symlink(
    tmp_path: Path, config_dir: Path
) -> None:
    (config_dir / "backups").mkdir()
    link = tmp_path / "config-link"
    link.symlink_to(config_dir)
    with pytest.raises(LocationConfigError) as excinfo:
        validate_location(
            str(config_dir / "backups"), require_mount=False, config_dir=str(link)
        )
    assert excinfo.value.reason == "inside_config"


def test_validate_docker_bind_of_unmounted_host_share(
    tmp_path: Path, config_dir: Path
) -> None:
    host_mount_point = tmp_path / "host-mnt-nas"
    host_mount_point.mkdir()
    with mounts.bind_mount(host_mount_point, tmp_path / "media-nas") as media:
        assert config_reason(str(media), config_dir, require_mount=True) == (
            "not_a_mount"
        )
        result = validate_location(
            str(media), require_mount=False, config_dir=str(config_dir)
        )
    assert result.path == str(tmp_path / "media-nas")


def test_validate_read_only_share(share: Path, config_dir: Path) -> None:
    with mounts.read_only(share):
        assert config_reason(str(share), config_dir, require_mount=True) == (
            "not_writable"
        )


def test_validate_unreachable_share(
    monkeypatch: pytest.MonkeyPatch, share: Path, config_dir: Path
) -> None:
    def broken_statvfs(path: Any) -> os.statvfs_result:
        raise OSError(errno.ENOTCONN, "Transport endpoint is not connected")

    monkeypatch.setattr(os, "statvfs", broken_statvfs)
    with pytest.raises(LocationConfigError) as excinfo:
        validate_location(str(share), require_mount=True, config_dir=str(config_dir))
    monkeypatch.undo()
    assert excinfo.value.reason == "unreachable"
    assert "ENOTCONN" in str(excinfo.value)


@pytest.mark.parametrize(
    ("code", "reason"),
    [(errno.EACCES, "not_writable"), (errno.ENOTCONN, "unreachable")],
)
def test_validate_stat_fails(
    monkeypatch: pytest.MonkeyPatch,
    share: Path,
    config_dir: Path,
    code: int,
    reason: str,
) -> None:
    real_stat = os.stat

    def failing_stat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        if os.fspath(path) == str(share):
            raise OSError(code, os.strerror(code))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", failing_stat)
    with pytest.raises(LocationConfigError) as excinfo:
        validate_location(str(share), require_mount=True, config_dir=str(config_dir))
    monkeypatch.undo()
    assert excinfo.value.reason == reason
    assert errno.errorcode[code] in str(excinfo.value)


def test_validate_config_dir_unreadable(share: Path, tmp_path: Path) -> None:
    """Not the location's fault: no reason of its own fits."""
    missing = tmp_path / "missing-config"
    with pytest.raises(LocationConfigError) as excinfo:
        validate_location(str(share), require_mount=True, config_dir=str(missing))
    assert excinfo.value.reason == "unknown"


def test_validate_full_share(tmp_path: Path, config_dir: Path) -> None:
    with mounts.tmpfs(tmp_path / "tiny", size="256k") as tiny:
        fill(tiny)
        reason = config_reason(str(tiny), config_dir, require_mount=True)
        assert names(tiny) == ["filler"]
    assert reason == "no_space"


# --- delete_backup -------------------------------------------------------


def test_delete_archive_and_sidecar(share: Path) -> None:
    (share / "Backup 2026-01-01 abc123.tar").write_bytes(b"archive")
    (share / "Backup 2026-01-01 abc123.tar.sha256").write_text("sum\n")
    (share / "other.tar").write_bytes(b"other")
    removed = delete_backup(share, "Backup 2026-01-01 abc123.tar")
    assert removed == [
        "Backup 2026-01-01 abc123.tar",
        "Backup 2026-01-01 abc123.tar.sha256",
    ]
    assert names(share) == ["other.tar"]


def test_delete_archive_without_sidecar(share: Path) -> None:
    (share / "a.tar").write_bytes(b"archive")
    assert delete_backup(str(share), "a.tar") == ["a.tar"]
    assert names(share) == []


@pytest.mark.parametrize("kind", ["symlink", "directory"])
def test_delete_leaves_odd_sidecar_alone(
    tmp_path: Path, share: Path, kind: str
) -> None:
    (share / "a.tar").write_bytes(b"archive")
    target = tmp_path / "elsewhere"
    target.write_text("keep")
    if kind == "symlink":
        (share / "a.tar.sha256").symlink_to(target)
    else:
        (share / "a.tar.sha256").mkdir()
    assert delete_backup(share, "a.tar") == ["a.tar"]
    assert names(share) == ["a.tar.sha256"]
    assert target.read_text() == "keep"


@pytest.mark.parametrize(
    "filename",
    [
        "../outside.tar",
        "sub/inner.tar",
        "./a.tar",
        ".hidden.tar",
        "notes.txt",
        "a.tar.sha256",
        ".tar",
        "",
        "a\0.tar",
        "a.TAR",
    ],
)
def test_delete_refuses_bad_names(tmp_path: Path, share: Path, filename: str) -> None:
    (tmp_path / "outside.tar").write_bytes(b"x")
    (share / "sub").mkdir()
    for name in ("sub/inner.tar", "a.tar", ".hidden.tar", "notes.txt", "a.TAR"):
        (share / name).write_bytes(b"x")
    (share / "a.tar.sha256").write_text("sum\n")
    before = names(share)
    with pytest.raises(BackupNotFoundError):
        delete_backup(share, filename)
    assert names(share) == before
    assert (share / "sub" / "inner.tar").exists()
    assert (tmp_path / "outside.tar").exists()


@pytest.mark.parametrize("kind", ["symlink", "directory", "fifo", "missing"])
def test_delete_refuses_non_regular_files(
    tmp_path: Path, share: Path, kind: str
) -> None:
    target = tmp_path / "target.tar"
    target.write_bytes(b"not in the location")
    name = "x.tar"
    if kind == "symlink":
        (share / name).symlink_to(target)
    elif kind == "directory":
        (share / name).mkdir()
    elif kind == "fifo":
        os.mkfifo(share / name)
    (share / "x.tar.sha256").write_text("sum\n")
    before = names(share)
    with pytest.raises(BackupNotFoundError) as excinfo:
        delete_backup(share, name)
    assert "not found" in str(excinfo.value) or "not a regular file" in str(
        excinfo.value
    )
    assert names(share) == before
    assert target.read_bytes() == b"not in the location"


def test_delete_in_missing_location(tmp_path: Path) -> None:
    with pytest.raises(LocationUnavailableError) as excinfo:
        delete_backup(tmp_path / "missing", "a.tar")
    assert location_error(excinfo) == "not_found"


def test_delete_on_read_only_share(share: Path) -> None:
    (share / "a.tar").write_bytes(b"archive")
    with mounts.read_only(share), pytest.raises(LocationUnavailableError) as excinfo:
        delete_backup(share, "a.tar")
    assert location_error(excinfo) == "not_writable"
    assert "EROFS" in str(excinfo.value)
    assert (share / "a.tar").read_bytes() == b"archive"


# --- cleanup_temporary ---------------------------------------------------

NOW = 1_800_000_000.0
HOUR = 3600.0


def make_file(path: Path, *, age: float, now: float = NOW) -> Path:
    """Create a file whose mtime is ``age`` seconds before ``now``."""
    path.write_bytes(b"partial")
    os.utime(path, (now - age, now - age))
    return path


def test_cleanup_removes_only_old_temporary_files(tmp_path: Path, share: Path) -> None:
    old_temp = make_file(share / f"{TEMP_PREFIX}abc.tar", age=2 * HOUR)
    make_file(share / f"{PROBE_PREFIX}123.beef", age=2 * HOUR)
    make_file(share / f"{TEMP_PREFIX}fresh.tar", age=10)
    make_file(share / f"{TEMP_PREFIX}edge.tar", age=HOUR)  # Not *more* than.
    make_file(share / "backup.tar", age=100 * HOUR)
    make_file(share / ".other_hidden", age=100 * HOUR)
    (share / f"{TEMP_PREFIX}dir").mkdir()
    os.utime(share / f"{TEMP_PREFIX}dir", (NOW - 9 * HOUR, NOW - 9 * HOUR))
    outside = make_file(tmp_path / "outside", age=9 * HOUR)
    link = share / f"{TEMP_PREFIX}link"
    link.symlink_to(outside)
    os.utime(link, (NOW - 9 * HOUR, NOW - 9 * HOUR), follow_symlinks=False)

    removed = cleanup_temporary(share, prefix=TEMP_PREFIX, now=NOW)
    assert removed == [old_temp.name]
    # Stale write-test files of probe() go the same way, with their prefix.
    removed = cleanup_temporary(share, prefix=PROBE_PREFIX, now=NOW)
    assert removed == [f"{PROBE_PREFIX}123.beef"]

    assert names(share) == sorted(
        [
            f"{TEMP_PREFIX}fresh.tar",
            f"{TEMP_PREFIX}edge.tar",
            "backup.tar",
            ".other_hidden",
            f"{TEMP_PREFIX}dir",
            f"{TEMP_PREFIX}link",
        ]
    )
    assert outside.exists()


def test_cleanup_uses_the_clock_by_default(share: Path) -> None:
    now = time.time()
    make_file(share / f"{TEMP_PREFIX}old", age=2 * HOUR, now=now)
    make_file(share / f"{TEMP_PREFIX}new", age=60, now=now)
    assert cleanup_temporary(str(share), prefix=TEMP_PREFIX) == [f"{TEMP_PREFIX}old"]
    assert cleanup_temporary(share, prefix=TEMP_PREFIX, older_than=30) == [
        f"{TEMP_PREFIX}new"
    ]


@pytest.mark.parametrize("prefix", ["", "sub/x"])
def test_cleanup_refuses_bad_prefix(share: Path, prefix: str) -> None:
    make_file(share / "anything", age=100 * HOUR)
    with pytest.raises(ValueError, match="prefix"):
        cleanup_temporary(share, prefix=prefix, now=NOW)
    assert names(share) == ["anything"]


def test_cleanup_file_removed_meanwhile(
    monkeypatch: pytest.MonkeyPatch, share: Path
) -> None:
    # Another instance sharing the NAS may remove the same file first.
    make_file(share / f"{TEMP_PREFIX}a", age=2 * HOUR)
    make_file(share / f"{TEMP_PREFIX}b", age=2 * HOUR)
    real_unlink = os.unlink

    def racing_unlink(name: Any, *args: Any, **kwargs: Any) -> None:
        real_unlink(name, *args, **kwargs)
        if name == f"{TEMP_PREFIX}a":
            raise FileNotFoundError(errno.ENOENT, "No such file or directory")

    monkeypatch.setattr(os, "unlink", racing_unlink)
    removed = cleanup_temporary(share, prefix=TEMP_PREFIX, now=NOW)
    monkeypatch.undo()
    assert removed == [f"{TEMP_PREFIX}b"]
    assert names(share) == []


def test_cleanup_on_read_only_share(share: Path) -> None:
    make_file(share / f"{TEMP_PREFIX}a", age=2 * HOUR)
    with mounts.read_only(share), pytest.raises(LocationUnavailableError) as excinfo:
        cleanup_temporary(share, prefix=TEMP_PREFIX, now=NOW)
    assert location_error(excinfo) == "not_writable"
    assert names(share) == [f"{TEMP_PREFIX}a"]


def test_cleanup_missing_location(tmp_path: Path) -> None:
    with pytest.raises(LocationUnavailableError) as excinfo:
        cleanup_temporary(tmp_path / "missing", prefix=TEMP_PREFIX)
    assert location_error(excinfo) == "not_found"


# --- the helpers in tests/mounts.py --------------------------------------


def test_mounts_clean_up_after_a_failing_test(tmp_path: Path) -> None:
    target = tmp_path / "share"

    def failing_test() -> None:
        with mounts.tmpfs(target):
            assert mounts.is_mounted(target)
            raise RuntimeError("test failed")

    with pytest.raises(RuntimeError, match="test failed"):
        failing_test()
    assert not mounts.is_mounted(target)


def test_mounts_stacked_mount_removes_only_its_own(tmp_path: Path) -> None:
    target = tmp_path / "share"
    with mounts.tmpfs(target):
        with mounts.tmpfs(target):
            assert mounts.mount_count(target) == 2
        assert mounts.mount_count(target) == 1
    assert mounts.mount_count(target) == 0


def test_mounts_failing_mount_raises(tmp_path: Path) -> None:
    with (
        pytest.raises(mounts.MountError, match="nonexistent"),
        mounts.mounted(tmp_path / "t", "--bind", str(tmp_path / "nonexistent")),
    ):
        pass  # pragma: no cover - the mount fails before the body runs


def test_mounts_loop_device_released(tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    with mounts.loop_ext4(tmp_path / "disk", image, size_mb=8) as disk:
        (disk / "file").write_text("x")
    assert not mounts.is_mounted(disk)
    assert not image.exists()


@pytest.mark.parametrize("required", [False, True])
def test_mounts_skip_without_root(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, required: bool
) -> None:
    # Skipped with the reason, or failed when CI requires the mount tests.
    expected = pytest.fail.Exception if required else pytest.skip.Exception
    monkeypatch.setenv(mounts.REQUIRE_ENV, "1" if required else "0")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with (
        pytest.raises(expected, match="needs root; running as uid 1000"),
        mounts.tmpfs(tmp_path / "share"),
    ):
        pass  # pragma: no cover - never mounted
    monkeypatch.undo()
    assert not mounts.is_mounted(tmp_path / "share")


def test_mounts_skip_when_mounting_is_denied(monkeypatch: pytest.MonkeyPatch) -> None:
    # What a container without CAP_SYS_ADMIN answers.
    monkeypatch.delenv(mounts.REQUIRE_ENV, raising=False)
    denied = subprocess.CompletedProcess(
        ["mount", "-t", "tmpfs"], 32, "", "mount: /x: permission denied.\n"
    )
    with pytest.raises(pytest.skip.Exception, match="not permitted here"):
        mounts._check(denied)


def test_mounts_skip_without_tool(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(mounts.REQUIRE_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match="Debian package sshfs"):
        mounts.require_tools("mount", "sshfs-not-installed-here")
