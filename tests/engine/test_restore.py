"""The restore core: staging, partial restore, dry run, result after a start.

Plain functions on real files, like the other engine tests; they run without
Home Assistant too (``scripts/test-securetar``), except the one that hands
a staged backup to Home Assistant's own restore.
"""

from __future__ import annotations

from collections.abc import Callable
import dataclasses
import errno
import hashlib
import importlib.util
import json
import os
from pathlib import Path
import shutil
import tarfile
import tracemalloc
from typing import Any

import pytest

from custom_components.backup_offload.engine import fileops
from custom_components.backup_offload.engine.errors import (
    BackupNotFoundError,
    CorruptBackupError,
    InvalidBackupError,
    LocationUnavailableError,
    UnsafeArchiveError,
    WrongPasswordError,
)
from custom_components.backup_offload.engine.listing import find_backup
from custom_components.backup_offload.engine.metadata import (
    BackupInfo,
    read_backup_info,
)
from custom_components.backup_offload.engine.restore import (
    checks as restore,
    full as restore_full,
    outcome as restore_outcome,
    partial as restore_partial,
    preview as restore_preview,
    space as restore_space,
)
from custom_components.backup_offload.engine.restore.checks import (
    MARKER_NAME,
    STAGING_DIR,
    BackupTooNewError,
    NothingToRestoreError,
    NotRestorableError,
    RestorePathError,
    RestoreWriteError,
    StagingError,
    StagingSpaceError,
)

from .helpers import (
    PASSWORD,
    backup_json,
    build_archive,
    make_backup,
    member,
    write,
)

HAS_HOME_ASSISTANT = importlib.util.find_spec("homeassistant") is not None


def never_newer(version: str) -> bool:
    """Accept every Home Assistant version."""
    return False


def crafted(
    location: Path, members: list[Any], **metadata: Any
) -> tuple[BackupInfo, Path]:
    """Write a hand-made backup; return its info and path."""
    compress = metadata.pop("compress", True)
    inner_name = metadata.pop("inner_name", None)
    path = build_archive(
        location / "crafted.tar",
        members,
        compress=compress,
        metadata=backup_json(compressed=compress, **metadata),
        inner_name=inner_name,
    )
    return find_backup(location, metadata.get("slug", "abcd1234")), path


def digest(path: Path) -> str:
    """Return a file's SHA-256."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def target(tmp_path: Path) -> Path:
    """A second config directory to restore into."""
    path = tmp_path / "target"
    write(path / "configuration.yaml", "target: true\n")
    write(path / "automations.yaml", "- broken\n")
    return path


# --- full restore -------------------------------------------------------------


def test_stage(
    config: Path, location: Path, target: Path, kind: tuple[str | None, bool]
) -> None:
    """The staged copy is verified and complete; only it was added."""
    password, compress = kind
    info, path = make_backup(config, location, password=password, compress=compress)
    staged = restore_full.stage(
        path, info, password, config_dir=target, is_newer=never_newer
    )
    assert staged.path == target / STAGING_DIR / f"backup_offload_{info.backup_id}.tar"
    assert digest(staged.path) == digest(path)
    assert staged.password == password
    assert staged.created_dir is True
    assert staged.verified.members > 10
    assert sorted(p.name for p in staged.path.parent.iterdir()) == [staged.path.name]
    restore_full.discard_staged(staged)
    assert not (target / STAGING_DIR).exists()


@pytest.mark.skipif(not HAS_HOME_ASSISTANT, reason="needs Home Assistant")
def test_home_assistant_restores_the_staged_copy(
    config: Path, location: Path, target: Path, kind: tuple[str | None, bool]
) -> None:
    """Home Assistant's own restore at startup consumes what was staged."""
    from homeassistant.backup_restore import restore_backup

    password, compress = kind
    info, path = make_backup(config, location, password=password, compress=compress)
    staged = restore_full.stage(
        path, info, password, config_dir=target, is_newer=never_newer
    )
    restore_full.write_instruction(
        staged,
        config_dir=target,
        instruction_name=".HA_RESTORE",
        instruction={
            "path": staged.path.as_posix(),
            "password": staged.password,
            "remove_after_restore": True,
            "restore_database": True,
            "restore_homeassistant": True,
        },
        marker={"name": info.name},
    )
    assert restore_backup(str(target)) is True
    assert json.loads((target / ".HA_RESTORE_RESULT").read_text())["success"]
    for rel in ("automations.yaml", "www/big.bin", ".storage/auth"):
        assert digest(target / rel) == digest(config / rel), rel
    assert (target / "configuration.yaml").read_text() != "target: true\n"
    # The backup has an empty tmp_backups (its archives are left out).
    assert list((target / STAGING_DIR).iterdir()) == []
    outcome = restore_outcome.collect_outcome(
        target, instruction_name=".HA_RESTORE", result_name=".HA_RESTORE_RESULT"
    )
    assert outcome.result == restore_outcome.RestoreResult(success=True)
    assert outcome.marker is None


def test_stage_keeps_an_existing_staging_dir_and_older_copy(
    config: Path,
    location: Path,
    target: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A failure removes only this attempt's files."""
    info, path = make_backup(config, location)
    older = write(target / STAGING_DIR / f"backup_offload_{info.backup_id}.tar", "x")
    temp_dir = tmp_path / "tmp"
    temp_dir.mkdir()
    real = restore_full._file_system

    def file_system(where: Path) -> restore_space.FileSystem:
        # Plenty for the copy, none for Home Assistant's unpacking at startup.
        found = real(where)
        return (
            dataclasses.replace(found, free=0) if where in (temp_dir, target) else found
        )

    monkeypatch.setattr(restore_full, "_file_system", file_system)
    with pytest.raises(StagingSpaceError, match="restore at startup"):
        restore_full.stage(
            path,
            info,
            None,
            config_dir=target,
            is_newer=never_newer,
            temp_dir=temp_dir,
        )
    assert [p.name for p in (target / STAGING_DIR).iterdir()] == [older.name]
    assert older.read_text() == "x"


def test_stage_space_checks(
    config: Path, location: Path, target: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No room for the copy, or no answer from statvfs: refused, nothing left."""
    info, path = make_backup(config, location)
    before = sorted(target.rglob("*"))
    monkeypatch.setattr(restore_full, "_free_bytes", lambda where: 1000)
    with pytest.raises(StagingSpaceError) as err:
        restore_full.stage(path, info, None, config_dir=target, is_newer=never_newer)
    assert err.value.placeholders["free"] == "1000"

    def broken(where: Path) -> int:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(restore_full, "_free_bytes", broken)
    with pytest.raises(StagingError):
        restore_full.stage(path, info, None, config_dir=target, is_newer=never_newer)
    assert sorted(target.rglob("*")) == before


def test_stage_checksum(config: Path, location: Path, target: Path) -> None:
    """The copy must match the location's checksum file, which must be sane."""
    info, path = make_backup(config, location)
    sidecar = Path(f"{path}.sha256")
    sidecar.write_text("0" * 64 + "  " + path.name + "\n")
    with pytest.raises(CorruptBackupError, match="checksum"):
        restore_full.stage(path, info, None, config_dir=target, is_newer=never_newer)
    sidecar.write_text("not a checksum\n")
    with pytest.raises(CorruptBackupError, match="sha256sum format"):
        restore_full.stage(path, info, None, config_dir=target, is_newer=never_newer)
    sidecar.unlink()
    sidecar.mkdir()
    with pytest.raises(CorruptBackupError, match="is a directory"):
        restore_full.stage(path, info, None, config_dir=target, is_newer=never_newer)
    assert not (target / STAGING_DIR).exists()


def test_read_sidecar(tmp_path: Path) -> None:
    """The location's checksum file: absent, sane, garbage, unreadable."""
    archive = tmp_path / "a.tar"
    sidecar = tmp_path / "a.tar.sha256"
    assert restore_full._read_sidecar(archive) is None
    sidecar.write_text("AB" * 32 + "  a.tar\n")
    assert restore_full._read_sidecar(archive) == "ab" * 32
    sidecar.write_text("garbage\n")
    with pytest.raises(CorruptBackupError):
        restore_full._read_sidecar(archive)
    sidecar.unlink()
    sidecar.mkdir()
    with pytest.raises(CorruptBackupError, match="is a directory"):
        restore_full._read_sidecar(archive)
    sidecar.rmdir()
    os.mkfifo(sidecar)  # a FIFO: opening it would wait forever for a writer
    with pytest.raises(CorruptBackupError, match="is a FIFO"):
        restore_full._read_sidecar(archive)


def test_discard_keeps_a_staging_dir_it_did_not_make(
    config: Path, location: Path, target: Path
) -> None:
    """Home Assistant's own tmp_backups stays when a staged copy goes."""
    (target / STAGING_DIR).mkdir()
    info, path = make_backup(config, location)
    staged = restore_full.stage(
        path, info, None, config_dir=target, is_newer=never_newer
    )
    assert staged.created_dir is False
    restore_full.discard_staged(staged)
    assert list((target / STAGING_DIR).iterdir()) == []


def test_stage_verify_and_rename_failures(
    config: Path, location: Path, target: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A local read error of the copy, a failed rename: nothing is left."""
    info, path = make_backup(config, location)

    def unreadable(*args: Any) -> Any:
        raise LocationUnavailableError("EIO", "unreachable")

    with monkeypatch.context() as patch:
        patch.setattr(restore_full, "verify_backup", unreadable)
        with pytest.raises(StagingError, match="staged copy"):
            restore_full.stage(
                path, info, None, config_dir=target, is_newer=never_newer
            )
    assert not (target / STAGING_DIR).exists()

    def no_fsync(directory: Path) -> None:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(restore_full, "fsync_dir", no_fsync)
    with pytest.raises(StagingError, match="Renaming"):
        restore_full.stage(path, info, None, config_dir=target, is_newer=never_newer)
    assert not (target / STAGING_DIR).exists()


def test_stage_checksum_file_of_the_copy_fails(
    config: Path, location: Path, target: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The staged copy's checksum file cannot be written: a staging error."""
    info, path = make_backup(config, location)

    def full(where: Path, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(restore_full, "_write_new", full)
    with pytest.raises(StagingSpaceError, match="ENOSPC") as err:
        restore_full.stage(path, info, None, config_dir=target, is_newer=never_newer)
    assert err.value.placeholders["errno"] == "ENOSPC"
    assert not (target / STAGING_DIR).exists()


def test_check_version() -> None:
    """No Home Assistant part, an unreadable version, a newer version."""
    info = BackupInfo(
        backup_id="a",
        name="Old",
        date="2026-01-01T00:00:00+00:00",
        size=1,
        protected=False,
        compressed=True,
        database_included=True,
        homeassistant_version=None,
        file="a.tar",
        instance_id=None,
        made_by_us=False,
    )
    with pytest.raises(NotRestorableError, match="no Home Assistant"):
        restore.check_version(info, never_newer)
    info = dataclasses.replace(info, homeassistant_version="2999.1")

    def fails(version: str) -> bool:
        raise ValueError(version)

    with pytest.raises(NotRestorableError, match="cannot be compared"):
        restore.check_version(info, fails)
    with pytest.raises(BackupTooNewError) as err:
        restore.check_version(info, lambda version: True)
    assert err.value.placeholders["backup_version"] == "2999.1"
    restore.check_version(info, never_newer)


def test_check_start(location: Path) -> None:
    """The inner archive must be named as Home Assistant's restore expects.

    The listing already refuses such a backup; ``check_start`` checks the
    file it is given again (it may have changed since).
    """
    info, _ = crafted(location, [member("data/a.yaml", b"a: 1\n")])
    path = build_archive(
        location / "renamed.tar",
        [member("data/a.yaml", b"a: 1\n")],
        compress=True,
        metadata=backup_json(compressed=True),
        inner_name="homeassistant.tar",
    )
    with pytest.raises(InvalidBackupError, match=r"looks for homeassistant\.tar\.gz"):
        read_backup_info(path)
    with pytest.raises(NotRestorableError, match=r"looks for homeassistant\.tar\.gz"):
        restore.check_start(path, info, None)


def test_check_start_password(config: Path, location: Path) -> None:
    """A wrong or missing password is found at the start of the archive."""
    info, path = make_backup(config, location, password=PASSWORD)
    restore.check_start(path, info, PASSWORD)
    for password in (None, "wrong"):
        with pytest.raises(WrongPasswordError):
            restore.check_start(path, info, password)


def test_effective_password(config: Path, location: Path) -> None:
    """An unencrypted backup gets no password, whatever the location's is."""
    info, _ = make_backup(config, location)
    assert restore.effective_password(info, "location password") is None


# --- copying ------------------------------------------------------------------


class _FailingFile:
    """A file object whose write or flush fails."""

    def __init__(self, fd: int, *, fail: str, code: int) -> None:
        self._fd = fd
        self._fail = fail
        self._code = code

    def __enter__(self) -> _FailingFile:
        return self

    def __exit__(self, *args: object) -> None:
        os.close(self._fd)

    def fileno(self) -> int:
        return self._fd

    def write(self, data: bytes) -> int:
        if self._fail == "write":
            raise OSError(self._code, os.strerror(self._code))
        return len(data)

    def flush(self) -> None:
        raise OSError(self._code, os.strerror(self._code))


@pytest.mark.parametrize(
    ("fail", "code", "error"),
    [
        ("write", errno.ENOSPC, StagingSpaceError),
        ("write", errno.EIO, StagingError),
        ("flush", errno.EIO, StagingError),
    ],
)
def test_copy_write_errors(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fail: str,
    code: int,
    error: type[Exception],
) -> None:
    """Errors writing the copy are this machine's, by errno."""
    source = write(tmp_path / "a.tar", "data")
    monkeypatch.setattr(
        restore_full.os,
        "fdopen",
        lambda fd, mode: _FailingFile(fd, fail=fail, code=code),
    )
    with pytest.raises(error):
        restore_full._copy(source, tmp_path / "copy")


def test_copy_read_errors(tmp_path: Path) -> None:
    """Errors reading the source are the location's."""
    with pytest.raises(BackupNotFoundError):
        restore_full._copy(tmp_path / "missing.tar", tmp_path / "copy")
    with pytest.raises(LocationUnavailableError):
        restore_full._copy(tmp_path, tmp_path / "copy")
    # Reading /proc/self/mem at offset 0 fails with EIO.
    with pytest.raises(LocationUnavailableError):
        restore_full._copy(Path("/proc/self/mem"), tmp_path / "copy2")
    source = write(tmp_path / "a.tar", "data")
    with pytest.raises(StagingError):
        restore_full._copy(source, source)  # the target must be new


def test_fsync_dir_tolerates_file_systems_that_cannot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EINVAL (CIFS) is fine; other errors are not."""
    for code, raises in ((errno.EINVAL, False), (errno.EIO, True)):

        def fsync(fd: int, code: int = code) -> None:
            raise OSError(code, os.strerror(code))

        monkeypatch.setattr(fileops.os, "fsync", fsync)
        if raises:
            with pytest.raises(OSError):
                fileops.fsync_dir(tmp_path)
        else:
            fileops.fsync_dir(tmp_path)


def test_ensure_dir(tmp_path: Path) -> None:
    """The staging directory: created, reused, or a clear error."""
    assert restore_full._ensure_dir(tmp_path / "new") is True
    assert restore_full._ensure_dir(tmp_path / "new") is False
    write(tmp_path / "file", "x")
    with pytest.raises(StagingError, match="not a directory"):
        restore_full._ensure_dir(tmp_path / "file")
    with pytest.raises(StagingError):
        restore_full._ensure_dir(tmp_path / "missing" / "deep")


def test_write_instruction_failures(
    config: Path, location: Path, target: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The instruction is written last; if it fails, the marker goes too."""
    info, path = make_backup(config, location)
    staged = restore_full.stage(
        path, info, None, config_dir=target, is_newer=never_newer
    )
    (target / ".HA_RESTORE").mkdir()  # cannot be replaced by a file
    with pytest.raises(StagingError):
        restore_full.write_instruction(
            staged,
            config_dir=target,
            instruction_name=".HA_RESTORE",
            instruction={},
            marker={},
        )
    assert sorted(p.name for p in staged.path.parent.iterdir()) == [staged.path.name]
    assert [p.name for p in target.iterdir() if p.name.startswith(".")] == [
        ".HA_RESTORE"
    ]


# --- partial restore ----------------------------------------------------------


def test_partial_restore(config: Path, location: Path, target: Path) -> None:
    """Files, links and hard links come back; parents are created."""
    info, path = make_backup(config, location)
    extracted = restore_partial.extract_selected(
        path,
        info,
        None,
        config_dir=target,
        patterns=["automations.yaml", "themes", "blueprints/*", "www/images"],
    )
    assert extracted.temp_dir.parent == target
    restored = restore_partial.apply_files(extracted, config_dir=target)
    assert set(restored) == {
        "automations.yaml",
        "themes/current.yaml",
        "blueprints/a.yaml",
        "blueprints/a-hardlink.yaml",
        "www/images/Küche mit Blick.png",
    }
    assert (target / "automations.yaml").read_text() == "[]\n"
    assert os.readlink(target / "themes/current.yaml") == "../configuration.yaml"
    assert digest(target / "blueprints/a-hardlink.yaml") == digest(
        config / "blueprints/a.yaml"
    )
    assert not extracted.temp_dir.exists()


@pytest.mark.parametrize(
    ("prepare", "rel", "match"),
    [
        (lambda t: write(t / "packages", "a file"), "packages/x.yaml", "is a file"),
        (lambda t: (t / "x.yaml").mkdir(), "x.yaml", "is a directory"),
        (lambda t: (t / "store").symlink_to(".storage"), "store/core", "never"),
        (
            lambda t: (t / "out").symlink_to(t.parent),
            "out/x.yaml",
            "leads outside",
        ),
    ],
)
def test_partial_restore_destinations(
    location: Path,
    target: Path,
    prepare: Callable[[Path], object],
    rel: str,
    match: str,
) -> None:
    """A destination that conflicts or leads elsewhere refuses the restore."""
    info, path = crafted(location, [member(f"data/{rel}", b"new\n")])
    (target / ".storage").mkdir()
    prepare(target)
    before = {p: p.lstat().st_mtime_ns for p in target.rglob("*")}
    with pytest.raises(RestorePathError, match=match):
        restore_partial.extract_selected(
            path, info, None, config_dir=target, patterns=[rel]
        )
    with pytest.raises(RestorePathError, match=match):
        restore_preview.preview(
            path,
            info,
            None,
            config_dir=target,
            patterns=[rel],
            restore_database=True,
            is_newer=never_newer,
        )
    assert {p: p.lstat().st_mtime_ns for p in target.rglob("*")} == before


def test_partial_restore_refuses_forbidden_matches(
    config: Path, location: Path, target: Path
) -> None:
    """A broad pattern that reaches .storage refuses the restore."""
    info, path = make_backup(config, location)
    with pytest.raises(RestorePathError, match=r"\.storage"):
        restore_partial.extract_selected(
            path, info, None, config_dir=target, patterns=["*"]
        )
    with pytest.raises(NothingToRestoreError):
        restore_partial.extract_selected(
            path, info, None, config_dir=target, patterns=["empty_dir"]
        )
    assert sorted(p.name for p in target.iterdir()) == [
        "automations.yaml",
        "configuration.yaml",
    ]


def test_apply_across_file_systems(
    config: Path, location: Path, target: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A destination on another file system: copied next to it, then renamed."""
    info, path = make_backup(config, location)
    extracted = restore_partial.extract_selected(
        path, info, None, config_dir=target, patterns=["automations.yaml"]
    )
    real_replace = Path.replace

    def replace(self: Path, other: Path) -> Path:
        if extracted.temp_dir in self.parents:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real_replace(self, other)

    monkeypatch.setattr(Path, "replace", replace)
    assert restore_partial.apply_files(extracted, config_dir=target) == [
        "automations.yaml"
    ]
    assert (target / "automations.yaml").read_text() == "[]\n"
    assert not [p for p in target.iterdir() if p.name.startswith(".backup_offload")]


def test_apply_failures(
    config: Path, location: Path, target: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failing rename or copy: an error that lists what was restored."""
    info, path = make_backup(config, location)

    def extract() -> restore_partial.Extracted:
        return restore_partial.extract_selected(
            path,
            info,
            None,
            config_dir=target,
            patterns=["automations.yaml", "secrets.yaml"],
        )

    real_replace = Path.replace

    def failing(self: Path, other: Path) -> Path:
        if self.name == "secrets.yaml":
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real_replace(self, other)

    def no_copy(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "replace", failing)
    monkeypatch.setattr(restore_partial.shutil, "copy2", no_copy)
    extracted = extract()
    with pytest.raises(RestoreWriteError) as err:
        restore_partial.apply_files(extracted, config_dir=target)
    assert err.value.placeholders["restored"] == "automations.yaml"
    assert not extracted.temp_dir.exists()
    assert not [p for p in target.iterdir() if p.name.startswith(".backup_offload")]

    def eio(self: Path, other: Path) -> Path:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(Path, "replace", eio)
    extracted = extract()
    with pytest.raises(RestoreWriteError) as err:
        restore_partial.apply_files(extracted, config_dir=target)
    assert err.value.placeholders["restored"] == "none"
    restore_partial.discard_extracted(extracted)


# --- dry run ------------------------------------------------------------------


def test_preview_of_the_same_config(config: Path, location: Path) -> None:
    """Restoring a config's own backup: only what backups leave out goes."""
    info, path = make_backup(config, location)
    os.mkfifo(config / "fifo")
    diff = restore_preview.preview(
        path,
        info,
        None,
        config_dir=config,
        patterns=None,
        restore_database=False,
        is_newer=never_newer,
    )
    assert diff.added == []
    assert diff.changed == []
    assert "home-assistant.log" in diff.removed
    assert "tts/.keep" in diff.removed
    assert "fifo" in diff.removed
    assert "backups/old.tar" not in diff.removed
    assert "home-assistant_v2.db" not in diff.removed
    assert diff.unchanged > 10


def test_preview_kinds_of_change(location: Path, target: Path) -> None:
    """A file that became a link, a link with another target, a new file."""
    info, path = crafted(
        location,
        [
            member("data", kind=tarfile.DIRTYPE),
            member("data/configuration.yaml", b"target: true\n"),
            member("data/automations.yaml", b"- broken\n"),
            member("data/link", kind=tarfile.SYMTYPE, linkname="automations.yaml"),
            member("data/was_link", b"file now\n"),
            member("data/same_size.yaml", b"aaaa\n"),
            member("data/new.yaml", b"new\n"),
        ],
    )
    (target / "link").symlink_to("configuration.yaml")
    (target / "was_link").symlink_to("configuration.yaml")
    write(target / "same_size.yaml", "bbbb\n")
    diff = restore_preview.preview(
        path,
        info,
        None,
        config_dir=target,
        patterns=None,
        restore_database=True,
        is_newer=never_newer,
    )
    assert diff.added == ["new.yaml"]
    assert diff.changed == ["link", "same_size.yaml", "was_link"]
    assert diff.removed == []
    assert diff.unchanged == 2


def test_preview_refuses_unsafe(location: Path, target: Path) -> None:
    """A dry run reads and checks the whole backup like the restore."""
    info, path = crafted(
        location,
        [
            member("data/pipe", kind=tarfile.FIFOTYPE),
            member("data/hard", kind=tarfile.LNKTYPE, linkname="data/nothing"),
        ],
    )
    os.mkfifo(target / "pipe")
    with pytest.raises(UnsafeArchiveError):
        restore_preview.preview(
            path,
            info,
            None,
            config_dir=target,
            patterns=None,
            restore_database=True,
            is_newer=never_newer,
        )


def test_preview_ignores_files_that_vanish(
    config: Path, location: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file removed while the config dir is walked is simply not there."""
    info, path = make_backup(config, location)
    real_lstat, real_scandir = os.lstat, os.scandir

    def lstat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        if Path(path).name in ("secrets.yaml", "manifest.json"):
            raise FileNotFoundError(path)
        return real_lstat(path, *args, **kwargs)

    def scandir(path: Any) -> Any:
        if Path(path).name == "themes":
            raise FileNotFoundError(path)
        return real_scandir(path)

    monkeypatch.setattr(restore_space.os, "lstat", lstat)
    monkeypatch.setattr(restore_space.os, "scandir", scandir)
    diff = restore_preview.preview(
        path,
        info,
        None,
        config_dir=config,
        patterns=None,
        restore_database=True,
        is_newer=never_newer,
    )
    assert diff.added == [
        "custom_components/demo/manifest.json",
        "secrets.yaml",
        "themes/current.yaml",
    ]


def _tiny_members(count: int, *, start: int = 0) -> list[Any]:
    return [
        member(f"data/d{index // 100}/f{index}.txt", b"%d" % index)
        for index in range(start, start + count)
    ]


def _preview_full(path: Path, info: BackupInfo, config_dir: Path) -> Any:
    return restore_preview.preview(
        path,
        info,
        None,
        config_dir=config_dir,
        patterns=None,
        restore_database=True,
        is_newer=never_newer,
    )


def test_preview_memory_does_not_grow_with_members(
    tmp_path: Path, target: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four times the members, the same memory: counts, not lists, are kept.

    The exact part of the bounded sets is made small, so that a small
    archive shows what a million members would.
    """
    monkeypatch.setattr(restore_preview, "ADDED_EXACT", 500)
    monkeypatch.setattr(restore_space, "DIRECTORIES_EXACT", 20)
    peaks = []
    for count in (8_000, 32_000):
        location = tmp_path / f"share-{count}"
        location.mkdir()
        info, path = crafted(
            location,
            [
                member("data", kind=tarfile.DIRTYPE),
                member("data/configuration.yaml", b"target: true\n"),
                *_tiny_members(count),
            ],
            compress=False,
        )
        tracemalloc.start()
        try:
            diff = _preview_full(path, info, target)
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
        assert diff.added_count == count
        assert diff.added == sorted(f"d0/f{i}.txt" for i in range(100))[:20]
    assert peaks[1] - peaks[0] < 512 * 1024, peaks


@pytest.mark.parametrize("exact", [100_000, 5])
def test_preview_counts_each_path_once(
    location: Path, target: Path, monkeypatch: pytest.MonkeyPatch, exact: int
) -> None:
    """A path twice in the backup counts once, as the last one (the restored).

    Also once the added paths are only remembered in the Bloom filter.
    """
    monkeypatch.setattr(restore_preview, "ADDED_EXACT", exact)
    info, path = crafted(
        location,
        [
            member("data", kind=tarfile.DIRTYPE),
            member("data/configuration.yaml", b"other: true\n"),
            member("data/automations.yaml", b"- broken\n"),
            *_tiny_members(30),
            member("data/configuration.yaml", b"target: true\n"),
            member("data/automations.yaml", b"- fixed\n"),
            *_tiny_members(30),
            member("data/d0/f0.txt", b"last"),
        ],
    )
    diff = _preview_full(path, info, target)
    assert diff.added_count == 30
    assert diff.added == sorted(f"d0/f{i}.txt" for i in range(30))[:20]
    assert (diff.changed, diff.changed_count) == (["automations.yaml"], 1)
    assert diff.unchanged == 1
    assert (diff.removed, diff.removed_count) == ([], 0)


def test_preview_reports_what_is_written(config: Path, location: Path) -> None:
    """The data a full restore copies in, and the space it needs, per disk."""
    info, path = make_backup(config, location)
    diff = _preview_full(path, info, config)
    big = (config / "www/big.bin").stat().st_size
    # www/latest is a symlink to www/images: Home Assistant copies it again.
    assert diff.write_bytes > big + 2 * 5000
    (need,) = diff.space  # one file system for all here
    assert need.free > need.needed > 2 * diff.write_bytes
    assert need.fits


def test_preview_of_hard_links(location: Path, target: Path) -> None:
    """A hard link restores as a copy of its file: compared with that content."""
    info, path = crafted(
        location,
        [
            member("data", kind=tarfile.DIRTYPE),
            member("data/configuration.yaml", b"target: true\n"),
            member("data/a.txt", b"same"),
            member("data/b.txt", kind=tarfile.LNKTYPE, linkname="data/a.txt"),
            member("data/c.txt", kind=tarfile.LNKTYPE, linkname="data/b.txt"),
            member("data/d.txt", kind=tarfile.LNKTYPE, linkname="data/a.txt"),
            member("data/e.txt", kind=tarfile.LNKTYPE, linkname="data/a.txt"),
            member("data/new.txt", kind=tarfile.LNKTYPE, linkname="data/a.txt"),
        ],
    )
    write(target / "a.txt", "same")
    write(target / "b.txt", "same")  # the same content
    write(target / "c.txt", "diff")  # the same size, through a link to a link
    write(target / "d.txt", "longer")
    (target / "e.txt").symlink_to("a.txt")
    diff = _preview_full(path, info, target)
    assert diff.added == ["new.txt"]
    assert diff.changed == ["c.txt", "d.txt", "e.txt"]
    assert diff.unchanged == 3  # configuration.yaml too
    assert diff.removed == ["automations.yaml"]


def test_preview_of_files_that_change_meanwhile(
    location: Path, target: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file that shrinks, goes or cannot be read while compared: changed."""
    names = ("shrinks", "goes", "unreadable", "kept")
    info, path = crafted(
        location,
        [
            member("data", kind=tarfile.DIRTYPE),
            member("data/configuration.yaml", b"target: true\n"),
            *[member(f"data/{name}", b"content") for name in names],
        ],
    )
    for name in names:
        write(target / name, "content")
    real_open, real_read = os.open, os.read
    unreadable: set[int] = set()

    def open_(file: Any, flags: int, *args: Any) -> int:
        name = Path(file).name
        if name == "shrinks":
            Path(file).write_text("con")
        if name == "goes":
            raise FileNotFoundError(file)
        fd = real_open(file, flags, *args)
        if name == "unreadable":
            unreadable.add(fd)
        return fd

    def read(fd: int, size: int) -> bytes:
        if fd in unreadable:
            unreadable.discard(fd)  # the number is used again once closed
            raise OSError(errno.EIO, "I/O error")
        return real_read(fd, size)

    monkeypatch.setattr(restore_preview.os, "open", open_)
    monkeypatch.setattr(restore_preview.os, "read", read)
    diff = _preview_full(path, info, target)
    assert diff.changed == ["goes", "shrinks", "unreadable"]
    assert diff.unchanged == 2  # kept, configuration.yaml


def test_selector() -> None:
    """Patterns are anchored; a directory chooses what is inside."""
    chosen = restore.selector(["packages", "*.yaml", "www/**/*.png"])
    assert chosen("packages/lights/a.yaml")
    assert chosen("automations.yaml")
    assert not chosen("custom/x.yaml")
    assert chosen("www/a/b/c.png")
    assert not chosen("www/a.jpg")
    assert restore.pattern_is_forbidden("./.storage/auth")
    assert restore.pattern_is_forbidden("home-assistant_v2.db-wal")
    assert not restore.pattern_is_forbidden("custom/.storage")
    assert restore.is_live_forbidden(".HA_RESTORE")
    assert not restore.is_live_forbidden("")


# --- after a start ------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "success", "error"),
    [
        ('{"success": true, "error": null, "error_type": null}', True, None),
        ('{"success": false, "error": "boom", "error_type": "OSError"}', False, "boom"),
        ("not json", False, "could not be read"),
        ('{"error": "x"}', False, "could not be read"),
        ('{"success": "yes"}', False, "not a boolean"),
        (None, False, "could not be read"),
    ],
)
def test_result_file(
    tmp_path: Path, content: str | None, success: bool, error: str | None
) -> None:
    """Home Assistant's result file is read once, whatever it holds."""
    result_path = tmp_path / ".HA_RESTORE_RESULT"
    if content is None:
        result_path.mkdir()  # unreadable
    else:
        result_path.write_text(content)
    outcome = restore_outcome.collect_outcome(
        tmp_path, instruction_name=".HA_RESTORE", result_name=".HA_RESTORE_RESULT"
    )
    assert outcome.result is not None
    assert outcome.result.success is success
    if error is None:
        assert outcome.result.error is None
    else:
        assert error in str(outcome.result.error)
    if content is not None:
        assert not result_path.exists()


def test_outcome_cleans_up(tmp_path: Path) -> None:
    """Leftovers of ours go; the marker is read once; other files stay."""
    staging = tmp_path / STAGING_DIR
    write(staging / MARKER_NAME, "{not json")
    write(staging / "backup_offload_x.tar", "staged")
    write(staging / ".backup_offload-x-1.tar.tmp", "temp")
    write(staging / "homeassistant_own.tar", "not ours")
    write(tmp_path / f"{restore.PARTIAL_PREFIX}1234/automations.yaml", "x")
    outcome = restore_outcome.collect_outcome(
        tmp_path,
        instruction_name=".HA_RESTORE",
        result_name=".HA_RESTORE_RESULT",
        known=restore_outcome.RestoreResult(
            success=False, error="from the backup integration"
        ),
    )
    assert outcome.marker == {"unreadable": True}
    assert outcome.result == restore_outcome.RestoreResult(
        success=False, error="from the backup integration"
    )
    assert outcome.removed == sorted(
        [
            f"{restore.PARTIAL_PREFIX}1234",
            f"{STAGING_DIR}/.backup_offload-x-1.tar.tmp",
            f"{STAGING_DIR}/{MARKER_NAME}",
            f"{STAGING_DIR}/backup_offload_x.tar",
        ]
    )
    assert [p.name for p in staging.iterdir()] == ["homeassistant_own.tar"]
    again = restore_outcome.collect_outcome(
        tmp_path, instruction_name=".HA_RESTORE", result_name=".HA_RESTORE_RESULT"
    )
    assert again.marker is None
    assert again.result is None
    write(staging / MARKER_NAME, "[1, 2]")
    assert restore_outcome.collect_outcome(
        tmp_path, instruction_name=".HA_RESTORE", result_name=".HA_RESTORE_RESULT"
    ).marker == {"unreadable": True}
    shutil.rmtree(staging)
    assert restore_outcome.collect_outcome(
        tmp_path, instruction_name=".HA_RESTORE", result_name=".HA_RESTORE_RESULT"
    ) == restore_outcome.Outcome(result=None, marker=None, pending=False)
