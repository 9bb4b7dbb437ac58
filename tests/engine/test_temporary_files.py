"""Temporary files being written are safe from the stale-file cleanup.

A writer (the backup's worker process, the backup agent's upload) holds an
``flock`` on its temporary file; the cleanup removes only old files whose
lock nobody holds, and never opens the files this process writes. The
lock holders here are real processes (another Home Assistant writing into
the same folder is one).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
import errno
import fcntl
import os
from pathlib import Path
import threading
import time
from typing import Any

import pytest

from custom_components.backup_offload.engine import (
    jobs,
    temporary as location_module,
    transfer as agent_files,
    worker,
)
from custom_components.backup_offload.engine.archive.create import (
    create_backup,
    temporary_names,
)
from custom_components.backup_offload.engine.errors import (
    InsufficientSpaceError,
    LocationUnavailableError,
)
from custom_components.backup_offload.engine.listing import BackupScanner
from custom_components.backup_offload.engine.location import PROBE_PREFIX
from custom_components.backup_offload.engine.metadata import TEMP_PREFIX
from custom_components.backup_offload.engine.temporary import (
    LiveFiles,
    cleanup_temporary,
)
from tests import mounts
from tests.locks import locked_by_another_process

from .helpers import backup_options

HOUR = 3600.0
STALE = 120.0
# Waits that end at once when things work; generous for a loaded machine.
WAIT = 60.0


def make_file(path: Path, *, age: float) -> Path:
    """Create a file whose mtime is ``age`` seconds old."""
    path.write_bytes(b"partial")
    aged(path, age)
    return path


def aged(path: Path, age: float) -> None:
    """Set the mtime of ``path`` ``age`` seconds back (a writer that paused)."""
    when = time.time() - age
    os.utime(path, (when, when))


def names(path: Path) -> list[str]:
    """Return the sorted names in directory ``path``."""
    return sorted(entry.name for entry in path.iterdir())


def temporary(path: Path) -> list[Path]:
    """Return the temporary files of ours in ``path``."""
    return sorted(p for p in path.iterdir() if p.name.startswith(TEMP_PREFIX))


# --- the cleanup ----------------------------------------------------------


def test_cleanup_skips_a_file_another_process_has_locked(location: Path) -> None:
    """Locked: kept however old; the stale unlocked one next to it goes."""
    written = make_file(location / f"{TEMP_PREFIX}other-instance.tar.tmp", age=HOUR)
    stale = make_file(location / f"{TEMP_PREFIX}crashed.tar.tmp", age=HOUR)
    with locked_by_another_process(written):
        assert cleanup_temporary(location, prefix=TEMP_PREFIX, older_than=STALE) == [
            stale.name
        ]
        assert names(location) == [written.name]
        # The writer goes on undisturbed: its lock is still its own.
        fd = os.open(written, os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    # The writer is gone (crashed) and the file stays old: a leftover now.
    assert cleanup_temporary(location, prefix=TEMP_PREFIX, older_than=STALE) == [
        written.name
    ]
    assert names(location) == []


def test_cleanup_without_locks_goes_by_age(
    location: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file system without locks (ENOLCK): the age alone decides."""
    old = make_file(location / f"{TEMP_PREFIX}old.tar.tmp", age=HOUR)
    young = make_file(location / f"{TEMP_PREFIX}young.tar.tmp", age=10)

    def no_locks(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(location_module.fcntl, "flock", no_locks)
    assert cleanup_temporary(location, prefix=TEMP_PREFIX, older_than=STALE) == [
        old.name
    ]
    assert names(location) == [young.name]


def test_cleanup_lock_error_is_a_location_error(
    location: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An I/O error testing the lock is the location's problem, as any other."""
    make_file(location / f"{TEMP_PREFIX}old.tar.tmp", age=HOUR)

    def broken(fd: int, operation: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(location_module.fcntl, "flock", broken)
    with pytest.raises(LocationUnavailableError) as excinfo:
        cleanup_temporary(location, prefix=TEMP_PREFIX, older_than=STALE)
    assert excinfo.value.location_reason == "unreachable"


def test_cleanup_leaves_what_it_may_not_open(
    location: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another user's file (root squashed on the NAS) is not ours to judge."""
    theirs = make_file(location / f"{TEMP_PREFIX}theirs.tar.tmp", age=HOUR)
    real_open = os.open

    def squashed(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if path == theirs.name:
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", squashed)
    assert cleanup_temporary(location, prefix=TEMP_PREFIX, older_than=STALE) == []
    monkeypatch.undo()
    assert names(location) == [theirs.name]


def _acting_before_open(
    monkeypatch: pytest.MonkeyPatch, name: str, act: Callable[[], None]
) -> None:
    """Let ``act`` run the moment the cleanup opens ``name`` (another process)."""
    real_open = os.open

    def racing(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if path == name:
            act()
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", racing)


def test_cleanup_file_removed_before_it_is_opened(
    location: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another instance's cleanup got there first: fine."""
    gone = make_file(location / f"{TEMP_PREFIX}gone.tar.tmp", age=HOUR)
    _acting_before_open(monkeypatch, gone.name, gone.unlink)
    assert cleanup_temporary(location, prefix=TEMP_PREFIX, older_than=STALE) == []
    monkeypatch.undo()
    assert names(location) == []


def test_cleanup_file_replaced_before_it_is_opened(
    location: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new file under the old name is not the old one: it stays."""
    old = make_file(location / f"{TEMP_PREFIX}reused.tar.tmp", age=HOUR)
    replacement = location / "replacement"

    def replace() -> None:
        replacement.write_bytes(b"new")
        replacement.replace(old)

    _acting_before_open(monkeypatch, old.name, replace)
    assert cleanup_temporary(location, prefix=TEMP_PREFIX, older_than=STALE) == []
    monkeypatch.undo()
    assert old.read_bytes() == b"new"


def test_cleanup_skips_the_files_this_process_writes(location: Path) -> None:
    """Live names are not even opened (NFS: that would drop our own lock)."""
    live = LiveFiles()
    ours = make_file(location / f"{TEMP_PREFIX}ours.tar.tmp", age=HOUR)
    stale = make_file(location / f"{TEMP_PREFIX}stale.tar.tmp", age=HOUR)
    with live.holding(ours.name):
        assert ours.name in live
        assert cleanup_temporary(
            location, prefix=TEMP_PREFIX, older_than=STALE, keep=live
        ) == [stale.name]
    assert ours.name not in live
    assert cleanup_temporary(
        location, prefix=TEMP_PREFIX, older_than=STALE, keep=live
    ) == [ours.name]


def test_cleanup_of_listed_names_only(location: Path) -> None:
    """Given the names a listing found, it looks at those and lists nothing."""
    listed = make_file(location / f"{TEMP_PREFIX}listed.tar.tmp", age=HOUR)
    later = make_file(location / f"{PROBE_PREFIX}later", age=HOUR)
    removed = cleanup_temporary(
        location,
        prefix=(TEMP_PREFIX, PROBE_PREFIX),
        older_than=STALE,
        names=[listed.name, "backup.tar", f"{TEMP_PREFIX}gone.tar.tmp"],
    )
    assert removed == [listed.name]
    assert names(location) == [later.name]


def test_prepare_lists_the_location_once(
    location: Path, config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refresh's cleanup takes its candidates from the refresh's listing."""
    archive = make_file(location / f"{TEMP_PREFIX}x.tar.tmp", age=HOUR)
    probe_file = make_file(location / f"{PROBE_PREFIX}1234", age=HOUR)
    young = make_file(location / f"{TEMP_PREFIX}y.tar.tmp", age=10)
    ours = make_file(location / f"{TEMP_PREFIX}ours.tar.tmp", age=HOUR)
    where = jobs.Location(
        path=location,
        require_mount=False,
        scanner=BackupScanner(),
        config_dir=config,
    )
    where.live.add(ours.name)
    listings: list[object] = []
    real_scandir, real_listdir = os.scandir, os.listdir

    def scandir(path: Any = ".") -> Any:
        listings.append(path)
        return real_scandir(path)

    def listdir(path: Any = ".") -> list[str]:
        listings.append(path)
        return real_listdir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    monkeypatch.setattr(os, "listdir", listdir)
    removed, snapshot = jobs.prepare(where, stale_after=STALE)
    monkeypatch.undo()
    assert listings == [location]
    assert removed == sorted([archive.name, probe_file.name])
    assert snapshot.backups == []
    assert names(location) == sorted([young.name, ours.name])


def test_prepare_lists_a_read_only_location(tmp_path: Path, config: Path) -> None:
    """Mounted read-only: listed, nothing removed, no error from the cleanup."""
    with mounts.tmpfs(tmp_path / "share") as share:
        stale = make_file(share / f"{TEMP_PREFIX}x.tar.tmp", age=HOUR)
        where = jobs.Location(
            path=share,
            require_mount=True,
            scanner=BackupScanner(),
            config_dir=config,
        )
        with mounts.read_only(share):
            removed, snapshot = jobs.prepare(where, stale_after=STALE)
            assert removed == []
            assert snapshot.status.writable is False
            assert names(share) == [stale.name]
        assert jobs.prepare(where, stale_after=STALE)[0] == [stale.name]


def test_scan_reports_hidden_names(location: Path) -> None:
    """The listing hands its hidden names on; backups are listed as before."""
    make_file(location / f"{TEMP_PREFIX}a.tar.tmp", age=0)
    make_file(location / ".hidden", age=0)
    make_file(location / "not-a-backup.txt", age=0)
    result = BackupScanner().scan(location)
    assert sorted(result.hidden) == sorted([f"{TEMP_PREFIX}a.tar.tmp", ".hidden"])
    assert result.backups == []


# --- the writers ----------------------------------------------------------


def _held_create(
    config: Path, location: Path
) -> tuple[Callable[[], Any], threading.Event, threading.Event]:
    """Return a backup call that pauses in the database copy, and its events."""
    entered, gate = threading.Event(), threading.Event()

    @contextmanager
    def recorder_paused() -> Iterator[None]:
        # The recorder takes its time to pause: the archive is open meanwhile.
        entered.set()
        assert gate.wait(WAIT)
        yield

    def backup() -> Any:
        return worker.run(
            create_backup,
            config,
            location,
            database_lock=recorder_paused,
            **backup_options(name="held", backup_id="0123abcd"),
        )

    return backup, entered, gate


def test_backup_being_written_is_locked(config: Path, location: Path) -> None:
    """The worker process locks its temporary archive: an old one is kept."""
    backup, entered, gate = _held_create(config, location)
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(backup)
        try:
            assert entered.wait(WAIT)
            [archive] = temporary(location)
            assert archive.name == temporary_names("0123abcd")[0]
            aged(archive, HOUR)  # A long pause, as seen from another instance.
            removed = cleanup_temporary(location, prefix=TEMP_PREFIX, older_than=STALE)
            assert removed == []
        finally:
            gate.set()
        result = running.result(WAIT)
    assert names(location) == sorted([result.info.file, f"{result.info.file}.sha256"])


def test_upload_being_written_is_locked_and_live(config: Path, location: Path) -> None:
    """The agent's upload: locked, and known as this process's own."""
    where = jobs.Location(
        path=location,
        require_mount=False,
        scanner=BackupScanner(),
        config_dir=config,
    )
    upload = agent_files.start_upload(where, "abc123", 0)
    agent_files.write_chunk(upload, b"partial")
    assert upload.temp.name in where.live
    assert f"{upload.temp.name}.sha256" in where.live
    aged(upload.temp, HOUR)  # The stream paused for an hour.
    # Even without the live names, its lock keeps it (another instance's
    # cleanup sees exactly this).
    assert cleanup_temporary(location, prefix=TEMP_PREFIX, older_than=STALE) == []
    agent_files.abort_upload(upload)
    assert upload.temp.name not in where.live
    assert names(location) == []


def test_writer_without_locks_still_writes(
    config: Path, location: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the file system has no locks, a backup is written all the same."""

    def no_locks(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(location_module.fcntl, "flock", no_locks)
    where = jobs.Location(
        path=location,
        require_mount=False,
        scanner=BackupScanner(),
        config_dir=config,
    )
    upload = agent_files.start_upload(where, "abc123", 0)
    agent_files.write_chunk(upload, b"partial")
    assert upload.temp.name in where.live
    agent_files.abort_upload(upload)
    assert names(location) == []


def test_upload_published_is_no_longer_live(config: Path, location: Path) -> None:
    """A finished upload leaves the live names."""
    backup, _, gate = _held_create(config, location)
    gate.set()
    made = backup()
    source = location / made.info.file
    where = jobs.Location(
        path=location / "incoming",
        require_mount=False,
        scanner=BackupScanner(),
        config_dir=config,
    )
    where.path.mkdir()
    upload = agent_files.start_upload(where, made.info.backup_id, 0)
    agent_files.write_chunk(upload, source.read_bytes())
    agent_files.finish_upload(where, upload, made.info.backup_id, checked=lambda: None)
    assert upload.temp.name not in where.live
    assert names(where.path) == sorted([made.info.file, f"{made.info.file}.sha256"])


def test_upload_refused_at_start_is_not_live(
    config: Path, location: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An upload whose file cannot be created leaves no live name behind."""
    where = jobs.Location(
        path=location,
        require_mount=False,
        scanner=BackupScanner(),
        config_dir=config,
    )

    tried: list[str] = []

    def full(path: str, flags: int) -> int:
        tried.append(Path(path).name)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(agent_files, "_private", full)
    with pytest.raises(InsufficientSpaceError):
        agent_files.start_upload(where, "def456", 0)
    [name] = tried
    assert name.startswith(f"{TEMP_PREFIX}agent-def456-")
    assert name not in where.live
    assert f"{name}.sha256" not in where.live
