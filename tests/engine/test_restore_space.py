"""The space a restore needs, on real small file systems.

A full restore: Home Assistant's restore at startup unpacks the backup into
its temporary directory and only then empties the configuration and copies
the backup in. On Home Assistant OS both are one file system; a restore
that does not fit there leaves a configuration that is half gone. Each case
runs on a real tmpfs holding the configuration and the temporary directory,
and where Home Assistant is installed its own ``restore_backup`` shows what
the refusal prevents, or that what was let through restores completely.

A partial restore: the chosen files are counted before they are written,
and nothing is written past the free space less the reserve.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
import contextlib
import errno
import importlib.util
import json
import os
from pathlib import Path
import shutil
import tarfile
import tempfile
import threading
from typing import Any

import pytest

from custom_components.backup_offload.engine import location as location_module
from custom_components.backup_offload.engine.archive.read import verify_backup
from custom_components.backup_offload.engine.errors import (
    BackupNotFoundError,
    LocationUnavailableError,
)
from custom_components.backup_offload.engine.listing import find_backup
from custom_components.backup_offload.engine.location import SPACE_MARGIN_BYTES
from custom_components.backup_offload.engine.metadata import BackupInfo
from custom_components.backup_offload.engine.restore import (
    full as restore_full,
    partial as restore_partial,
    preview as restore_preview,
    space as restore_space,
)
from custom_components.backup_offload.engine.restore.checks import (
    STAGING_DIR,
    ConfigNotClearableError,
    FilesInodesError,
    FilesSpaceError,
    NotRestorableError,
    RestoreWriteError,
    StagingError,
    StartupInodesError,
    StartupSpaceError,
)
from custom_components.backup_offload.engine.seen import SeenSet
from tests import mounts

from .helpers import backup_json, build_archive, make_backup, member, tree, write

HAS_HOME_ASSISTANT = importlib.util.find_spec("homeassistant") is not None
needs_home_assistant = pytest.mark.skipif(
    not HAS_HOME_ASSISTANT, reason="needs Home Assistant"
)
MIB = 1 << 20
OLD_CONFIG = {
    "configuration.yaml": "old: true\n",
    "automations.yaml": "- alias: Old automation\n",
    ".storage/core.config_entries": '{"data": {"entries": []}}',
}


def never_newer(version: str) -> bool:
    return False


def free(path: Path) -> int:
    vfs = os.statvfs(path)
    return vfs.f_bavail * vfs.f_frsize


def make_source(root: Path, *, video: int = 0, small: int = 0) -> Path:
    """A configuration to back up: a video of random bytes, ``small`` tiny files."""
    write(root / "configuration.yaml", "new: true\n")
    write(root / "automations.yaml", "- alias: New automation\n")
    write(root / ".storage/core.config_entries", '{"data": {"new": true}}')
    if video:
        write(root / "www/video.bin", os.urandom(video))
    for index in range(small):
        write(root / f"many/d{index // 100}/f{index}.txt", f"{index:0100d}")
    return root


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Callable[..., tuple[Path, Path]]]:
    """Mount a tmpfs with a configuration and a temporary directory on it."""
    with contextlib.ExitStack() as stack:

        def mount(size: str, options: str = "") -> tuple[Path, Path]:
            extra = f",{options}" if options else ""
            root = stack.enter_context(
                mounts.mounted(
                    tmp_path / "disk",
                    "-t",
                    "tmpfs",
                    "-o",
                    f"size={size},mode=0755{extra}",
                    "tmpfs",
                )
            )
            config, temp = root / "config", root / "tmp"
            temp.mkdir()
            for rel, text in OLD_CONFIG.items():
                write(config / rel, text)
            return config, temp

        yield mount


def stage(path: Path, info: BackupInfo, config: Path, temp: Path) -> Any:
    return restore_full.stage(
        path, info, None, config_dir=config, is_newer=never_newer, temp_dir=temp
    )


def run_home_assistant_restore(
    config: Path, temp: Path, archive: Path, monkeypatch: pytest.MonkeyPatch
) -> bool:
    """Hand ``archive`` to Home Assistant's restore at startup; True if it worked."""
    from homeassistant.backup_restore import restore_backup

    (config / ".HA_RESTORE").write_text(
        json.dumps(
            {
                "path": str(archive),
                "password": None,
                "remove_after_restore": True,
                "restore_database": True,
                "restore_homeassistant": True,
            }
        )
    )
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    with contextlib.suppress(Exception):
        restore_backup(str(config))
    return bool(json.loads((config / ".HA_RESTORE_RESULT").read_text())["success"])


def restored(config: Path) -> dict[str, Any]:
    """The configuration, without what the restore itself leaves."""
    return {
        rel: value
        for rel, value in tree(config).items()
        if rel != ".HA_RESTORE_RESULT" and rel.split("/")[0] != STAGING_DIR
    }


# --- full restore: Home Assistant's restore at startup ------------------------


def test_refused_where_the_restore_would_empty_the_config_and_fill_the_disk(
    tmp_path: Path,
    location: Path,
    disk: Callable[..., tuple[Path, Path]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """26 MiB on 100 MiB: the old check passed, Home Assistant's restore failed.

    Home Assistant needs the staged copy, the outer tar and the inner archive
    unpacked (26 MiB each) and then another 26 MiB for the copy into the
    configuration, after it emptied it.
    """
    info, path = make_backup(make_source(tmp_path / "new", video=26 * MIB), location)
    config, temp = disk("100m")
    before = tree(config)
    with pytest.raises(StartupSpaceError) as err:
        stage(path, info, config, temp)
    assert tree(config) == before
    assert free(config) > 98 * MIB  # the staged copy is gone again
    # The check before asked for the backup and its content, after the copy.
    copy = restore_space.blocks(info.size, 4096)
    old_need = info.size + verify_backup(path, None).bytes + SPACE_MARGIN_BYTES
    assert free(config) - copy >= old_need
    placeholders = err.value.placeholders
    assert placeholders["path"] == str(config)
    assert placeholders["needed"].endswith(" MiB")
    assert placeholders["free"].endswith(" MiB")
    assert placeholders["reserve"] == "16.0 MiB"
    assert float(placeholders["needed"].split()[0]) >= 26 * 3 + 16
    assert 70 < float(placeholders["free"].split()[0]) < 80

    # A dry run says so too (with the copy it does not make).
    diff = restore_preview.preview(
        path,
        info,
        None,
        config_dir=config,
        patterns=None,
        restore_database=True,
        is_newer=never_newer,
        temp_dir=temp,
    )
    (need,) = diff.space
    assert need.path == str(config)
    assert not need.fits
    assert need.needed > 3 * 26 * MIB
    assert diff.write_bytes > 26 * MIB
    assert tree(config) == before

    if not HAS_HOME_ASSISTANT:
        return
    # What the refusal prevents: Home Assistant's own restore of this backup.
    staged = config / STAGING_DIR / "by-hand.tar"
    staged.parent.mkdir()
    shutil.copyfile(path, staged)
    assert not run_home_assistant_restore(config, temp, staged, monkeypatch)
    after = restored(config)
    # Neither the old configuration (all gone) nor the new one (incomplete).
    old_files = [rel for rel, (kind, _) in before.items() if kind == "file"]
    assert all(after.get(rel) != before[rel] for rel in old_files)
    assert after != tree(tmp_path / "new")


@needs_home_assistant
def test_a_restore_that_fits_restores_the_whole_backup(
    tmp_path: Path,
    location: Path,
    disk: Callable[..., tuple[Path, Path]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Let through on the same disk: Home Assistant restores all of it."""
    source = make_source(tmp_path / "new", video=12 * MIB, small=300)
    info, path = make_backup(source, location)
    config, temp = disk("100m")
    staged = stage(path, info, config, temp)
    assert run_home_assistant_restore(config, temp, staged.path, monkeypatch)
    assert restored(config) == tree(source)


def test_small_files_are_counted_in_blocks(
    tmp_path: Path,
    location: Path,
    disk: Callable[..., tuple[Path, Path]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """6,000 files of 100 bytes take 23 MiB each time they are written."""
    info, path = make_backup(make_source(tmp_path / "new", small=6000), location)
    config, temp = disk("40m")
    old_need = info.size + verify_backup(path, None).bytes + SPACE_MARGIN_BYTES
    assert free(config) - info.size > old_need
    before = tree(config)
    with pytest.raises(StartupSpaceError):
        stage(path, info, config, temp)
    assert tree(config) == before
    if HAS_HOME_ASSISTANT:
        staged = config / STAGING_DIR / "by-hand.tar"
        staged.parent.mkdir()
        shutil.copyfile(path, staged)
        assert not run_home_assistant_restore(config, temp, staged, monkeypatch)
        assert restored(config) != before


def test_files_are_counted_where_the_file_system_limits_them(
    tmp_path: Path, location: Path, disk: Callable[..., tuple[Path, Path]]
) -> None:
    """A tmpfs with room for 2,000 files: 1,200 files are unpacked, then copied."""
    source = tmp_path / "new"
    write(source / "configuration.yaml", "new: true\n")
    for index in range(1200):
        write(source / f"empty/{index}", "")
    info, path = make_backup(source, location)
    config, temp = disk("64m", "nr_inodes=2000")
    before = tree(config)
    with pytest.raises(StartupInodesError) as err:
        stage(path, info, config, temp)
    assert int(err.value.placeholders["needed"]) > 2400
    assert int(err.value.placeholders["free"]) < 2000
    assert tree(config) == before


def test_what_emptying_the_config_frees_is_taken_off(
    tmp_path: Path, location: Path, disk: Callable[..., tuple[Path, Path]]
) -> None:
    """Replacing a large configuration needs less than adding to a small one.

    A file that a hard link in ``backups/`` keeps is not freed, nor is the
    database when it is kept.
    """
    info, path = make_backup(make_source(tmp_path / "new", video=20 * MIB), location)
    config, temp = disk("100m")
    write(config / "www/old_video.bin", os.urandom(20 * MIB))
    # Fits: the old video goes before the new one is copied in.
    restore_full.discard_staged(stage(path, info, config, temp))
    (config / "backups").mkdir()
    os.link(config / "www/old_video.bin", config / "backups/kept.bin")
    with pytest.raises(StartupSpaceError):
        stage(path, info, config, temp)
    (config / "backups/kept.bin").unlink()
    (config / "www/old_video.bin").rename(config / "home-assistant_v2.db")
    stage(path, info, config, temp)
    with pytest.raises(StartupSpaceError):
        restore_full.stage(
            path,
            info,
            None,
            config_dir=config,
            is_newer=never_newer,
            temp_dir=temp,
            restore_database=False,
        )


def test_plan_clearing_counts_only_what_surely_goes(tmp_path: Path) -> None:
    """Files whose every name goes, directories and links; nothing kept."""
    config = tmp_path / "config"
    one = write(config / "one.bin", os.urandom(100_000))
    write(config / "sub/two.bin", os.urandom(50_000))
    os.link(config / "sub/two.bin", config / "sub/two-again.bin")
    write(config / "backups/kept.bin", os.urandom(70_000))
    os.link(config / "backups/kept.bin", config / "linked-to-kept.bin")
    write(config / "home-assistant_v2.db", os.urandom(30_000))
    (config / "link").symlink_to("one.bin")
    (config / "dangling").symlink_to("nowhere")
    os.mkfifo(config / "fifo")
    seen: list[str] = []

    def visit(rel: str, path: str, info: os.stat_result) -> None:
        seen.append(rel)

    def blocks(*paths: Path) -> int:
        return sum(path.lstat().st_blocks * 512 for path in paths)

    device = config.stat().st_dev
    kept = restore_space.keep_names(restore_database=False)
    freed = restore_space.plan_clearing(config, kept, visit=visit).freed[device]
    expected = blocks(one, config / "sub", config / "sub/two.bin", config / "link")
    assert freed == restore_space.Usage(expected, 4)
    assert sorted(seen) == [
        "dangling",
        "fifo",
        "link",
        "linked-to-kept.bin",
        "one.bin",
        "sub",
        "sub/two-again.bin",
        "sub/two.bin",
    ]
    everything = restore_space.keep_names(restore_database=True)
    freed = restore_space.plan_clearing(config, everything).freed[device]
    assert freed.bytes == expected + blocks(config / "home-assistant_v2.db")
    skipped = restore_space.plan_clearing(config, kept, skip=["one.bin"])
    assert skipped.freed[device].bytes == expected - blocks(one)


def test_config_home_assistant_cannot_empty_is_refused(
    config: Path, location: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A symlink to a directory, or a mount, stops Home Assistant's clearing.

    Home Assistant's restore removes entries in sorted order and stops at
    the first it cannot remove: refused before anything is copied. In
    ``backups/``, which it keeps, either is fine.
    """
    target = tmp_path / "target"
    write(target / "configuration.yaml", "target: true\n")
    elsewhere = tmp_path / "elsewhere"
    write(elsewhere / "photo.jpg", "photo")
    (target / "media").symlink_to(elsewhere)
    info, path = make_backup(config, location)
    before = tree(target)
    for run in (stage_it, preview_it):
        with pytest.raises(ConfigNotClearableError) as err:
            run(path, info, target)
        assert err.value.placeholders["path"] == "media"
        assert tree(target) == before
    (target / "media").unlink()
    (target / "backups").symlink_to(elsewhere)
    restore_full.discard_staged(stage_it(path, info, target))
    with mounts.tmpfs(target / "www", size="1m"):
        write(target / "www/a.png", "png")
        with pytest.raises(ConfigNotClearableError) as err:
            stage_it(path, info, target)
        assert err.value.placeholders["path"] == "www"
    with mounts.tmpfs(target / "www/media", size="1m"):
        with pytest.raises(ConfigNotClearableError) as err:
            stage_it(path, info, target)
        assert err.value.placeholders["path"] == "www/media"
        # Without the mount table, the device number shows it.
        with monkeypatch.context() as patch:
            patch.setattr(location_module, "MOUNTINFO", str(tmp_path / "none"))
            with pytest.raises(ConfigNotClearableError):
                stage_it(path, info, target)
    (target / "backups").unlink()
    (target / "backups").mkdir()
    with mounts.tmpfs(target / "backups", size="1m"):
        restore_full.discard_staged(stage_it(path, info, target))
    assert not (elsewhere / "photo.jpg").is_symlink()
    assert (elsewhere / "photo.jpg").read_text() == "photo"


@needs_home_assistant
def test_home_assistant_stops_at_a_symlink_to_a_directory(tmp_path: Path) -> None:
    """Why the refusal: a part of the configuration is gone, and it stops."""
    from homeassistant.backup_restore import _clear_configuration_directory

    config = tmp_path / "config"
    write(config / "automations.yaml", "[]\n")
    write(tmp_path / "elsewhere/photo.jpg", "photo")
    (config / "media").symlink_to(tmp_path / "elsewhere")
    write(config / "www/a.png", "png")
    with pytest.raises(OSError, match="media"):
        _clear_configuration_directory(config, ["backups"])
    assert sorted(tree(config)) == ["media", "www", "www/a.png"]


def stage_it(path: Path, info: BackupInfo, target: Path) -> Any:
    return restore_full.stage(path, info, None, config_dir=target, is_newer=never_newer)


def preview_it(path: Path, info: BackupInfo, target: Path) -> Any:
    return restore_preview.preview(
        path,
        info,
        None,
        config_dir=target,
        patterns=None,
        restore_database=True,
        is_newer=never_newer,
    )


def test_stage_when_this_machine_cannot_be_read(
    config: Path,
    location: Path,
    target: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """statvfs, the configuration directory or the staged copy fail: refused."""
    info, path = make_backup(config, location)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.EIO, "I/O error")

    def unreadable(*args: Any, **kwargs: Any) -> Any:
        raise LocationUnavailableError("EIO", "unreachable")

    for name, replacement, match in (
        ("plan_clearing", broken, "Reading"),
        ("outer_usage", unreadable, "staged copy again"),
    ):
        with monkeypatch.context() as patch:
            patch.setattr(restore_full, name, replacement)
            with pytest.raises(StagingError, match=match):
                stage_it(path, info, target)
    with monkeypatch.context() as patch:
        patch.setattr(restore_space.FileSystem, "of", broken)
        with pytest.raises(StagingError, match="free space"):
            stage_it(path, info, target)
        with pytest.raises(RestoreWriteError, match="free space"):
            restore_partial.extract_selected(
                path, info, None, config_dir=target, patterns=["*.yaml"]
            )
    assert not (target / STAGING_DIR).exists()


# --- the archive: links -------------------------------------------------------


def crafted(location: Path, members: list[Any]) -> tuple[BackupInfo, Path]:
    path = build_archive(
        location / "crafted.tar", members, metadata=backup_json(compressed=True)
    )
    return find_backup(location, "abcd1234"), path


def copied(path: Path, *, restore_database: bool = True) -> restore_space.Usage:
    sizer = restore_space.ArchiveSizer(
        temp_block=4096, config_block=4096, restore_database=restore_database
    )
    verify_backup(path, None, sizer.add)
    if sizer.links:
        sizer.measure_links(path, None)
    return sizer.copied()


def test_links_are_copied_as_what_they_point_to(location: Path) -> None:
    """A symlink copies its target again, a hard link is a copy of its file."""
    _, path = crafted(
        location,
        [
            member(".", kind=tarfile.DIRTYPE),
            member("data", kind=tarfile.DIRTYPE),
            member("data/images", kind=tarfile.DIRTYPE),
            member("data/images/a.png", b"a" * 1000),
            member("data/images/b.png", b"b" * 3000),
            member("data/images/sub", kind=tarfile.DIRTYPE),
            member("data/images/sub/backups", kind=tarfile.DIRTYPE),
            member("data/images/sub/backups/c.png", b"c" * 100),
            member("data/latest", kind=tarfile.SYMTYPE, linkname="images"),
            member("data/again", kind=tarfile.SYMTYPE, linkname="./images/"),
            member("data/backups/x", kind=tarfile.SYMTYPE, linkname="../images"),
            member("data/a-link.png", kind=tarfile.SYMTYPE, linkname="images/a.png"),
            member("data/hard.png", kind=tarfile.LNKTYPE, linkname="data/images/b.png"),
            member("data/backups", kind=tarfile.DIRTYPE),
            member("data/backups/old.tar", b"x" * 5000),
            member("data/old", kind=tarfile.SYMTYPE, linkname="backups"),
            member("data/gone", kind=tarfile.SYMTYPE, linkname="nowhere"),
            member("data/home-assistant_v2.db", b"d" * 700),
        ],
    )
    usage = copied(path)
    # images three times (itself, latest, again), a.png and b.png once more,
    # backups/ only through the link old, and with it backups/x: images a
    # fourth time; the database. Never a directory named backups itself.
    assert usage.data == 4000 * 4 + 1000 + 3000 + 5000 + 700
    # Files and directories: images, its files and sub (four times), a-link,
    # hard, old (a directory) and old.tar, the database.
    assert usage.inodes == 4 * 4 + 1 + 1 + 2 + 1
    assert copied(path, restore_database=False).data == usage.data - 700


def test_symlinks_that_lead_into_each_other_are_refused(
    location: Path, target: Path
) -> None:
    """Home Assistant's restore would copy them until the disk is full."""
    info, path = crafted(
        location,
        [
            member("data", kind=tarfile.DIRTYPE),
            member("data/configuration.yaml", b"x: 1\n"),
            member("data/x", kind=tarfile.DIRTYPE),
            member("data/y", kind=tarfile.DIRTYPE),
            member("data/x/f", b"hello"),
            member("data/x/to-y", kind=tarfile.SYMTYPE, linkname="../y"),
            member("data/y/to-x", kind=tarfile.SYMTYPE, linkname="../x"),
        ],
    )
    verify_backup(path, None)  # each link alone is harmless
    with pytest.raises(NotRestorableError, match="leads back"):
        copied(path)
    with pytest.raises(NotRestorableError):
        stage_it(path, info, target)
    assert not (target / STAGING_DIR).exists()


@pytest.fixture
def target(tmp_path: Path) -> Path:
    path = tmp_path / "target"
    write(path / "configuration.yaml", "target: true\n")
    return path


def test_resolve() -> None:
    """How a path leads through the archive's symlinks (inside the root)."""
    links = {"l": "x/y", "dot": ".", "abs": "/etc", "self": "self", "up": "../.."}
    resolve = restore_space._resolve
    assert resolve(["a", ".", "", "b"], links) == "a/b"
    assert resolve(["l", "z"], links) == "x/y/z"
    assert resolve(["dot", "l"], links) == "x/y"
    assert resolve([".."], links) is None
    assert resolve(["abs"], links) is None
    assert resolve(["self"], links) is None  # nests too deep
    assert resolve(["up"], links) is None


def test_mount_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Mount points below the configuration, with their escapes decoded."""
    table = tmp_path / "mountinfo"
    table.write_text(
        "22 1 0:21 / /config rw - tmpfs tmpfs rw\n"
        "23 22 0:22 / /config/my\\040media rw - tmpfs tmpfs rw\n"
        "24 1 0:23 / /configuration rw - tmpfs tmpfs rw\n"
        "short line\n"
    )
    monkeypatch.setattr(location_module, "MOUNTINFO", str(table))
    assert restore_space._mount_points("/config") == {"/config/my media"}
    monkeypatch.setattr(location_module, "MOUNTINFO", str(tmp_path / "none"))
    assert restore_space._mount_points("/config") == set()


def test_outer_usage_of_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(BackupNotFoundError):
        restore_space.outer_usage(tmp_path / "gone.tar", 4096)


def test_seen_set() -> None:
    """Exact up to its limit; after that it never forgets a name."""
    seen = SeenSet(exact=10, bits=1 << 16)
    assert all(seen.add(f"name {i}") for i in range(10))
    assert not seen.add("name 3")
    assert "name 3" in seen
    assert "name 10" not in seen
    new = sum(seen.add(f"other {i}") for i in range(1000))
    assert new > 990
    assert not any(seen.add(f"name {i}") for i in range(10))
    assert not any(seen.add(f"other {i}") for i in range(1000))
    assert all(f"other {i}" in seen for i in range(1000))
    assert 3 not in seen


def test_readable() -> None:
    assert restore_space.readable(512) == "512 bytes"
    assert restore_space.readable(1536) == "1.5 KiB"
    assert restore_space.readable(94 * MIB) == "94.0 MiB"
    assert restore_space.readable(3 << 40) == "3072.0 GiB"


# --- partial restore ----------------------------------------------------------


def zeros_archive(location: Path, count: int, *, link_first: bool = False) -> Path:
    """``count`` files of 1 MiB of zeros: a few hundred KB, compressed."""
    members = [member("data", kind=tarfile.DIRTYPE)]
    if link_first:
        members += [
            member("data/a", kind=tarfile.DIRTYPE),
            member("data/a/target.txt", b"t"),
            member("data/link.txt", kind=tarfile.LNKTYPE, linkname="data/a/target.txt"),
        ]
    members.append(member("data/big", kind=tarfile.DIRTYPE))
    zeros = bytes(MIB)
    members += [member(f"data/big/{i:03d}.bin", zeros) for i in range(count)]
    return build_archive(location / "zeros.tar", members)


@contextlib.contextmanager
def lowest_free(path: Path) -> Iterator[list[int]]:
    """Sample the free space of ``path`` meanwhile; yield [the lowest seen]."""
    lowest = [free(path)]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            lowest[0] = min(lowest[0], free(path))

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield lowest
    finally:
        stop.set()
        thread.join()


@pytest.mark.parametrize("link_first", [False, True])
def test_partial_restore_never_fills_the_disk(
    tmp_path: Path, location: Path, link_first: bool
) -> None:
    """300 MiB from a few hundred KB, on 64 MiB: refused, the disk never full.

    With a chosen hard link to a file that is not chosen the archive is read
    twice, and the space is counted before anything is written at all.
    """
    path = zeros_archive(location, 300, link_first=link_first)
    info = find_backup(location, "abcd1234")
    assert path.stat().st_size < 1 * MIB
    patterns = ["big", "link.txt"] if link_first else ["big"]
    with mounts.tmpfs(tmp_path / "config", size="64m") as config:
        write(config / "configuration.yaml", "old: true\n")
        before = tree(config)
        start = free(config)
        with lowest_free(config) as lowest, pytest.raises(FilesSpaceError) as err:
            restore_partial.extract_selected(
                path, info, None, config_dir=config, patterns=patterns
            )
        assert tree(config) == before
        if link_first:
            assert lowest[0] > start - MIB  # nothing was written
        assert lowest[0] >= SPACE_MARGIN_BYTES - MIB
        placeholders = err.value.placeholders
        assert placeholders["path"] == str(config)
        assert 300 < float(placeholders["needed"].split()[0]) < 320
        assert placeholders["reserve"] == "16.0 MiB"

        diff = restore_preview.preview(
            path,
            info,
            None,
            config_dir=config,
            patterns=patterns,
            restore_database=True,
            is_newer=never_newer,
        )
        assert diff.write_bytes == 300 * MIB  # a hard link writes no data
        assert diff.added_count == 300 + (1 if link_first else 0)
        (need,) = diff.space
        assert need.path == str(config)
        assert not need.fits
        assert need.free == free(config)


def test_partial_restore_of_more_files_than_fit(tmp_path: Path, location: Path) -> None:
    """A tmpfs with room for 300 files: 500 empty ones do not fit."""
    members = [member("data", kind=tarfile.DIRTYPE)]
    members += [member(f"data/empty/{i}", b"") for i in range(500)]
    path = build_archive(location / "empty.tar", members)
    info = find_backup(location, "abcd1234")
    target = tmp_path / "config"
    with mounts.mounted(
        target, "-t", "tmpfs", "-o", "size=64m,nr_inodes=300,mode=0755", "tmpfs"
    ):
        write(target / "configuration.yaml", "old: true\n")
        before = tree(target)
        with pytest.raises(FilesInodesError) as err:
            restore_partial.extract_selected(
                path, info, None, config_dir=target, patterns=["empty"]
            )
        assert int(err.value.placeholders["needed"]) > 500
        assert int(err.value.placeholders["free"]) < 300
        assert tree(target) == before


@pytest.mark.parametrize("link_first", [False, True])
def test_partial_restore_that_fits(
    tmp_path: Path, location: Path, link_first: bool
) -> None:
    """Ten of those files fit on 64 MiB, and are restored."""
    path = zeros_archive(location, 10, link_first=link_first)
    info = find_backup(location, "abcd1234")
    patterns = ["big", "link.txt"] if link_first else ["big"]
    with mounts.tmpfs(tmp_path / "config", size="64m") as config:
        extracted = restore_partial.extract_selected(
            path, info, None, config_dir=config, patterns=patterns
        )
        restored_files = restore_partial.apply_files(extracted, config_dir=config)
        assert len(restored_files) == 10 + link_first
        assert (config / "big/009.bin").stat().st_size == MIB
        if link_first:
            assert (config / "link.txt").read_text() == "t"
