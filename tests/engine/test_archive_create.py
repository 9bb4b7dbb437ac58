"""Creating backups: layout, metadata, files, excludes, races, errors."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
import errno
import json
import os
from pathlib import Path, PureWindowsPath
import re
import socket
import sqlite3
import stat
import subprocess
import tarfile
import threading
import time

import pytest

from custom_components.backup_offload.engine.archive import (
    contents as snapshot,
    create as archive,
)
from custom_components.backup_offload.engine.archive.extract import extract_backup
from custom_components.backup_offload.engine.archive.read import verify_backup
from custom_components.backup_offload.engine.archive.securetar_compat import (
    WRITE_VERSION,
)
from custom_components.backup_offload.engine.errors import (
    InsufficientSpaceError,
    WriteFailedError,
)
from custom_components.backup_offload.engine.metadata import (
    TEMP_PREFIX,
    read_backup_info,
)
from tests import mounts

from .helpers import (
    PASSWORD,
    create,
    digest,
    expected_tree,
    make_database,
    outer_members,
    tree,
    write,
)

DATE = datetime(2026, 11, 28, 0, 41, 7, tzinfo=UTC)


def test_round_trip(
    config: Path, location: Path, tmp_path: Path, kind: tuple[str | None, bool]
) -> None:
    """Every kind of archive extracts to the config dir minus the excludes."""
    password, compress = kind
    source = tree(config)
    result = create(config, location, password=password, compress=compress)
    archive_path = location / result.info.file
    assert result.info.protected is (password is not None)
    assert result.info.compressed is compress
    assert result.info.size == archive_path.stat().st_size
    assert result.skipped == []

    check = verify_backup(archive_path, password)
    assert check.checksum is True
    assert check.members > 20

    target = tmp_path / "restored"
    extracted = extract_backup(archive_path, target, password)
    restored = tree(target, skip=lambda rel: rel == "home-assistant_v2.db")
    assert restored == expected_tree(config)
    assert set(extracted) == set(tree(target))
    assert tree(config) == source  # the source is untouched


def test_layout_is_home_assistants(config: Path, location: Path) -> None:
    """Outer PAX tar: ./backup.json first, then the inner archive."""
    result = create(config, location, compress=True)
    path = location / result.info.file
    members = outer_members(path)
    assert [m.name for m in members] == ["./backup.json", "homeassistant.tar.gz"]
    with tarfile.open(path, "r:") as tar:
        assert tar.format == tarfile.PAX_FORMAT
    uncompressed = create(config, location, compress=False, backup_id="b2")
    names = [m.name for m in outer_members(location / uncompressed.info.file)]
    assert names == ["./backup.json", "homeassistant.tar"]
    with tarfile.open(location / uncompressed.info.file, "r:") as outer:
        inner_file = outer.extractfile("homeassistant.tar")
        assert inner_file is not None
        with tarfile.open(fileobj=inner_file, mode="r|") as inner:
            first = next(iter(inner))
    assert first.name == "data"
    assert first.isdir()


def test_backup_json(config: Path, location: Path) -> None:
    """backup.json has Home Assistant's fields and our block in extra."""
    result = create(
        config,
        location,
        password=PASSWORD,
        include_database=False,
        excludes=["www/", "*.bak"],
        homeassistant_version="2025.4.4",
        backup_id="0123abcd",
        date=DATE,
        extra={"with_automatic_settings": False, "instance_id": "overridden"},
    )
    with tarfile.open(location / result.info.file, "r:") as tar:
        raw = tar.extractfile("./backup.json")
        assert raw is not None
        data = json.loads(raw.read())
    assert data == {
        "compressed": True,
        "date": DATE.astimezone().isoformat(),
        "extra": {
            "with_automatic_settings": False,
            "instance_id": "instance-1",
            "backup_offload": {
                "version": 1,
                "excludes": ["www", "*.bak"],
                "include_database": False,
                "compression": "gzip",
                "securetar_version": WRITE_VERSION,
            },
        },
        "folders": [],
        "addons": [],
        "homeassistant": {"exclude_database": True, "version": "2025.4.4"},
        "name": "My backup",
        "protected": True,
        "slug": "0123abcd",
        "type": "partial",
        "version": 2,
    }
    info = result.info
    assert info.backup_id == "0123abcd"
    assert info.made_by_us
    assert info.is_own("instance-1")
    assert not info.is_own("instance-2")
    assert info.database_included is False
    assert info.extra == data["extra"]
    assert read_backup_info(location / info.file) == info


def test_file_names_modes_and_sidecar(config: Path, location: Path) -> None:
    """Readable name with name, date and id; mode 0600; sha256sum sidecar."""
    result = create(config, location, name="Küche / Wohnzimmer: täglich", date=DATE)
    local = DATE.astimezone()
    expected = rf"Küche_-_Wohnzimmer_täglich_{local:%Y-%m-%d_%H.%M}_[0-9a-f]{{8}}\.tar"
    assert re.fullmatch(expected, result.info.file)
    path = location / result.info.file
    sidecar = location / (result.info.file + ".sha256")
    assert sorted(p.name for p in location.iterdir()) == [path.name, sidecar.name]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(sidecar.stat().st_mode) == 0o600
    assert sidecar.read_text() == f"{digest(path)}  {path.name}\n"
    check = subprocess.run(
        ["sha256sum", "-c", sidecar.name],
        cwd=location,
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.parametrize(
    ("name", "stored"),
    [
        ("Daily", "Daily"),
        ("a/b\\c", "a-b-c"),
        ("C:backup", "C-backup"),
        ("  spaced   out  ", "spaced out"),
        ("..", "Backup"),
        ("", "Backup"),
    ],
)
def test_names_home_assistant_accepts(
    config: Path, location: Path, name: str, stored: str
) -> None:
    """Names that look like paths are cleaned, as Home Assistant 2026 requires."""
    info = create(config, location, name=name).info
    assert info.name == stored
    # The check Home Assistant 2026's read_backup applies to the name.
    assert PureWindowsPath(info.name).name == info.name
    assert info.name not in ("", ".", "..")
    assert info.file.endswith(f"_{info.backup_id}.tar")


def test_progress(config: Path, location: Path) -> None:
    """Progress rises monotonically in small steps and ends at 1.0."""
    seen: list[float] = []
    create(config, location, progress=seen.append)
    assert seen == sorted(seen)
    assert seen[-1] == 1.0
    assert len(seen) >= 10
    assert all(0 < value <= 1 for value in seen)


def test_excludes(config: Path, location: Path, tmp_path: Path) -> None:
    """Home Assistant's list, the database, user globs, our temp files."""
    write(config / "notes.bak", "x")
    write(config / "www/old/thing.bak", "x")
    write(config / "media/video.mp4", "x")
    write(config / f"{TEMP_PREFIX}other.tar.tmp", "ours")
    write(config / f"www/{TEMP_PREFIX}x.tmp", "ours")
    result = create(
        config,
        location,
        include_database=False,
        excludes=["**/*.bak", "./media/", " custom_components/demo "],
    )
    target = tmp_path / "out"
    extract_backup(location / result.info.file, target, None)
    restored = tree(target)
    assert "notes.bak" not in restored
    assert "www/old/thing.bak" not in restored
    assert "www/old" in restored
    assert "media" not in restored
    assert "custom_components" in restored
    assert "custom_components/demo" not in restored
    assert not any(TEMP_PREFIX in rel for rel in restored)
    assert not any(rel.startswith("home-assistant_v2.db") for rel in restored)
    assert "tts" in restored  # Home Assistant keeps the directory, not its files
    assert "tts/.keep" not in restored
    assert "configuration.yaml" in restored


@pytest.mark.parametrize("pattern", ["/etc", "../outside", "a/../../b", "  ", "./"])
def test_invalid_exclude(config: Path, location: Path, pattern: str) -> None:
    """Patterns that cannot match inside the config dir are refused up front."""
    with pytest.raises(ValueError, match="xclude pattern"):
        create(config, location, excludes=[pattern])
    assert list(location.iterdir()) == []


def test_location_inside_config_is_left_out(config: Path, tmp_path: Path) -> None:
    """A location inside the config directory is never backed up into itself."""
    inside = config / "backups_nas"
    inside.mkdir()
    first = create(config, inside)
    second = create(config, inside, backup_id="second")
    target = tmp_path / "out"
    extracted = extract_backup(inside / second.info.file, target, None)
    assert not any(rel.startswith("backups_nas") for rel in extracted)
    assert (inside / first.info.file).exists()


def test_symlinks_and_special_files(
    config: Path, location: Path, tmp_path: Path
) -> None:
    """Links are stored as links; escaping links and special files are skipped."""
    outside = tmp_path / "outside"
    write(outside / "secret.txt", "not part of the config")
    (config / "to_outside_dir").symlink_to(outside)
    (config / "absolute").symlink_to("/etc/passwd")
    (config / "climbing").symlink_to("../outside/secret.txt")
    (config / "www/chain").symlink_to("latest/../../..")
    (config / "dangling").symlink_to("does-not-exist")
    os.mkfifo(config / "pipe")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(config / "sock"))
    try:
        result = create(config, location)
    finally:
        sock.close()
    assert result.reasons == {
        "absolute": snapshot.OUTSIDE_LINK,
        "climbing": snapshot.OUTSIDE_LINK,
        "to_outside_dir": snapshot.OUTSIDE_LINK,
        "www/chain": snapshot.OUTSIDE_LINK,
        "pipe": "FIFO: skipped",
        "sock": "socket: skipped",
    }
    assert result.skipped == sorted(result.reasons)
    target = tmp_path / "out"
    extract_backup(location / result.info.file, target, None)
    assert (target / "dangling").is_symlink()
    assert os.readlink(target / "themes/current.yaml") == "../configuration.yaml"
    assert os.readlink(target / "www/latest") == "images"
    assert not (target / "to_outside_dir").exists()


def test_symlinked_directory_is_not_descended(
    config: Path, location: Path, tmp_path: Path
) -> None:
    """A symlink to a directory inside the config is stored as a link only."""
    result = create(config, location)
    with tarfile.open(location / result.info.file, "r:") as outer:
        inner_file = outer.extractfile("homeassistant.tar.gz")
        assert inner_file is not None
        with tarfile.open(fileobj=inner_file, mode="r|gz") as inner:
            names = {m.name: m for m in inner}
    assert names["data/www/latest"].issym()
    assert not any(name.startswith("data/www/latest/") for name in names)
    # Hard links become two regular files (no hard link members are written).
    assert names["data/blueprints/a-hardlink.yaml"].isfile()


@contextmanager
def after_plan(action: Callable[[], None]) -> Iterator[None]:
    """Run ``action`` between the directory walk and the writing."""
    original = snapshot.plan

    def planned(*args: object, **kwargs: object) -> snapshot.Plan:
        result = original(*args, **kwargs)  # type: ignore[arg-type]
        action()
        return result

    snapshot.plan = planned  # type: ignore[assignment]
    try:
        yield
    finally:
        snapshot.plan = original  # type: ignore[assignment]


def test_vanished_files_are_skipped_and_reported(
    config: Path, location: Path, tmp_path: Path
) -> None:
    """Files, links and directories removed after the walk are reported."""

    def remove() -> None:
        (config / "secrets.yaml").unlink()
        (config / "themes/current.yaml").unlink()
        (config / "empty_dir").rmdir()

    with after_plan(remove):
        result = create(config, location)
    assert result.reasons == {
        "secrets.yaml": snapshot.VANISHED,
        "themes/current.yaml": snapshot.VANISHED,
        "empty_dir": snapshot.VANISHED,
    }
    extracted = extract_backup(location / result.info.file, tmp_path / "out", None)
    assert "secrets.yaml" not in extracted
    assert "configuration.yaml" in extracted


def test_replaced_entries_are_skipped(config: Path, location: Path) -> None:
    """A file that became a link, a FIFO or a directory is not followed."""

    def replace() -> None:
        (config / "secrets.yaml").unlink()
        (config / "secrets.yaml").symlink_to("/etc/passwd")
        (config / "automations.yaml").unlink()
        os.mkfifo(config / "automations.yaml")
        (config / "empty_dir").rmdir()
        write(config / "empty_dir", "now a file")
        (config / "www/latest").unlink()
        (config / "www/latest").symlink_to("/etc")
        (config / "themes/current.yaml").unlink()
        write(config / "themes/current.yaml", "now a file")

    with after_plan(replace):
        result = create(config, location)
    assert result.reasons == {
        "secrets.yaml": snapshot.REPLACED,
        "automations.yaml": snapshot.REPLACED,
        "empty_dir": snapshot.REPLACED,
        "www/latest": snapshot.REPLACED,
        "themes/current.yaml": snapshot.REPLACED,
    }


@pytest.mark.parametrize("change", ["grow", "shrink"])
def test_file_changing_while_read(
    make_config: Callable[..., Path], location: Path, tmp_path: Path, change: str
) -> None:
    """A file changing during its read is stored at its opened size, reported."""
    config = make_config(big=4 << 20)
    big = config / "www/big.bin"
    original = big.read_bytes()
    changed: list[bool] = []

    def progress(fraction: float) -> None:
        # Called while big.bin is being read (it is most of the data).
        if not changed and fraction > 0.1:
            changed.append(True)
            if change == "grow":
                with big.open("ab") as file:
                    file.write(b"x" * 100_000)
            else:
                os.truncate(big, 1000)

    result = create(config, location, progress=progress, compress=False)
    assert result.reasons == {"www/big.bin": snapshot.CHANGED}
    target = tmp_path / "out"
    extract_backup(location / result.info.file, target, None)
    stored = (target / "www/big.bin").read_bytes()
    assert len(stored) == len(original)
    if change == "grow":
        assert stored == original
    else:
        assert stored[:1000] == original[:1000]
        assert stored[-1000:] == bytes(1000)


def test_unreadable_file_is_skipped(
    config: Path, location: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file we may not read is skipped and reported (root reads anything)."""
    real_open = os.open

    def guarded(path: object, flags: int, *args: object, **kwargs: object) -> int:
        if str(path).endswith("secrets.yaml"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(snapshot.os, "open", guarded)
    result = create(config, location)
    assert result.reasons == {"secrets.yaml": snapshot.UNREADABLE}


def test_unreadable_directory_is_skipped(
    config: Path, location: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A directory we may not list is reported; the rest is backed up."""
    real_scandir = os.scandir

    def guarded(path: object) -> object:
        if str(path).endswith("custom_components"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_scandir(path)  # type: ignore[call-overload]

    monkeypatch.setattr(snapshot.os, "scandir", guarded)
    result = create(config, location)
    assert result.reasons == {"custom_components": snapshot.UNREADABLE}


@pytest.mark.parametrize("where", ["open", "read"])
def test_source_io_error_fails_cleanly(
    config: Path, location: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """An I/O error reading the config dir fails the backup, leaves nothing."""
    error = OSError(errno.EIO, "Input/output error")
    if where == "open":
        real_open = os.open

        def failing_open(
            path: object, flags: int, *args: object, **kwargs: object
        ) -> int:
            if str(path).endswith("big.bin"):
                raise error
            return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(snapshot.os, "open", failing_open)
    else:

        def failing_read(fd: int, size: int) -> bytes:
            raise error

        monkeypatch.setattr(snapshot.os, "read", failing_read)
    with pytest.raises(WriteFailedError, match=r"Reading .* failed.*Input/output"):
        create(config, location)
    assert list(location.iterdir()) == []


def test_write_error_names_errno_and_cleans_up(
    config: Path, location: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EIO (or ENOTCONN, EACCES...) while writing: WriteFailedError, no files."""

    def failing_fsync(fd: int) -> None:
        raise OSError(errno.ENOTCONN, "Transport endpoint is not connected")

    monkeypatch.setattr(archive.os, "fsync", failing_fsync)
    with pytest.raises(WriteFailedError, match="ENOTCONN") as caught:
        create(config, location)
    assert caught.value.placeholders["errno"] == "ENOTCONN"
    assert list(location.iterdir()) == []


def test_location_not_writable(
    config: Path, location: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Creating the temporary file fails: typed error, nothing written."""
    real_open = os.open

    def refusing(path: object, flags: int, *args: object, **kwargs: object) -> int:
        if TEMP_PREFIX in str(path):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(archive.os, "open", refusing)
    with pytest.raises(WriteFailedError, match="EACCES"):
        create(config, location)
    assert list(location.iterdir()) == []


def test_enospc_on_a_small_tmpfs(
    make_config: Callable[..., Path], tmp_path: Path, kind: tuple[str | None, bool]
) -> None:
    """A full location mid-write: InsufficientSpaceError, no partial file."""
    password, compress = kind
    config = make_config(big=3 << 20)  # random data: does not compress
    source = tree(config)
    with mounts.tmpfs(tmp_path / "small", size="1m") as small:
        with pytest.raises(InsufficientSpaceError, match="ENOSPC"):
            create(config, small, password=password, compress=compress)
        assert list(small.iterdir()) == []
    assert tree(config) == source


def test_existing_file_is_not_overwritten(config: Path, location: Path) -> None:
    """A backup id that would reuse an existing file name is refused."""
    first = create(config, location, backup_id="same", date=DATE)
    before = digest(location / first.info.file)
    with pytest.raises(WriteFailedError, match="already exists"):
        create(config, location, backup_id="same", date=DATE)
    assert digest(location / first.info.file) == before
    assert len(list(location.iterdir())) == 2


def test_stale_temp_file_is_never_reused(config: Path, location: Path) -> None:
    """A leftover temporary file of the same id makes the backup fail, not mix."""
    write(location / f"{TEMP_PREFIX}dup.tar.tmp", b"old contents" * 1000)
    with pytest.raises(WriteFailedError, match="EEXIST"):
        create(config, location, backup_id="dup")
    # Not ours to remove (another backup may be writing it); cleanup does that.
    assert (location / f"{TEMP_PREFIX}dup.tar.tmp").exists()


def test_publish_failure_leaves_neither_file(
    config: Path, location: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If renaming the archive fails, the already renamed sidecar goes too."""
    real_rename = os.rename

    def rename(source: str, target: str, **kwargs: int) -> None:
        if str(source).endswith(".tar.tmp"):
            raise OSError(errno.EIO, "Input/output error")
        real_rename(source, target, **kwargs)

    monkeypatch.setattr(archive.os, "rename", rename)
    with pytest.raises(WriteFailedError, match="EIO"):
        create(config, location)
    assert list(location.iterdir()) == []


def test_directory_fsync_unsupported_is_fine(
    config: Path, location: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CIFS refuses fsync on directories (EINVAL); the backup still succeeds."""
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "Invalid argument")
        real_fsync(fd)

    monkeypatch.setattr(archive.os, "fsync", fsync)
    result = create(config, location)
    assert (location / result.info.file).exists()


# --- database ------------------------------------------------------------------


def _writer(path: Path, stop: threading.Event, counter: list[int]) -> None:
    """Write to the database in small transactions until stopped."""
    db = sqlite3.connect(path, timeout=30)
    try:
        while not stop.is_set():
            with db:
                db.execute("INSERT INTO states (value) VALUES (?)", ("x" * 500,))
            counter[0] += 1
    finally:
        db.close()


def test_database_snapshot_while_written(
    config: Path, location: Path, tmp_path: Path
) -> None:
    """A WAL database written during the backup restores intact."""
    database = config / "home-assistant_v2.db"
    stop = threading.Event()
    counter = [0]
    thread = threading.Thread(target=_writer, args=(database, stop, counter))
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while counter[0] < 50:
            assert thread.is_alive(), "the database writer stopped"
            assert time.monotonic() < deadline, "the database writer is stuck"
            time.sleep(0.01)
        assert (config / "home-assistant_v2.db-wal").exists()
        result = create(config, location)
        written_before_end = counter[0]
    finally:
        stop.set()
        thread.join()
    target = tmp_path / "out"
    extracted = extract_backup(location / result.info.file, target, None)
    assert "home-assistant_v2.db" in extracted
    assert "home-assistant_v2.db-wal" not in extracted
    restored = sqlite3.connect(target / "home-assistant_v2.db")
    try:
        assert restored.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        rows = restored.execute("SELECT COUNT(*) FROM states").fetchone()[0]
    finally:
        restored.close()
    assert 200 + 50 <= rows <= 200 + written_before_end + 1


def test_database_lock_is_held_around_database_files(
    config: Path, location: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a lock, the DB and its WAL are stored as they are, inside the lock."""
    database = config / "home-assistant_v2.db"
    keeper = sqlite3.connect(database)  # keeps the WAL file alive
    keeper.execute("INSERT INTO states (value) VALUES ('in the wal')")
    keeper.commit()
    locked = threading.Event()
    opened: dict[str, bool] = {}
    real_open_file = snapshot.open_file

    def open_file(path: Path) -> int | str:
        opened[path.name] = locked.is_set()
        return real_open_file(path)

    @contextmanager
    def lock() -> Iterator[None]:
        locked.set()
        try:
            yield
        finally:
            locked.clear()

    monkeypatch.setattr(snapshot, "open_file", open_file)
    try:
        result = create(config, location, database_lock=lock)
    finally:
        keeper.close()
    assert opened["home-assistant_v2.db"] is True
    assert opened["home-assistant_v2.db-wal"] is True
    assert opened["configuration.yaml"] is False
    target = tmp_path / "out"
    extracted = extract_backup(location / result.info.file, target, None)
    assert {"home-assistant_v2.db", "home-assistant_v2.db-wal"} <= set(extracted)
    restored = sqlite3.connect(target / "home-assistant_v2.db")
    try:
        assert restored.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert restored.execute(
            "SELECT COUNT(*) FROM states WHERE value = 'in the wal'"
        ).fetchone() == (1,)
    finally:
        restored.close()


def test_not_a_database_is_stored_as_is(
    config: Path, location: Path, tmp_path: Path
) -> None:
    """A file with the database's name that SQLite cannot read is kept as is."""
    database = config / "home-assistant_v2.db"
    database.unlink()
    write(database, b"this is not sqlite" * 100)
    write(config / "home-assistant_v2.db-journal", b"journal")
    result = create(config, location)
    assert result.reasons["home-assistant_v2.db"].startswith(snapshot.NOT_SQLITE)
    target = tmp_path / "out"
    extract_backup(location / result.info.file, target, None)
    assert (target / "home-assistant_v2.db").read_bytes() == database.read_bytes()
    assert (target / "home-assistant_v2.db-journal").read_bytes() == b"journal"
    assert not any(p.name.startswith(TEMP_PREFIX) for p in config.iterdir())


def test_snapshot_leaves_out_live_journal_files(
    config: Path, location: Path, tmp_path: Path
) -> None:
    """A snapshot holds everything: the live -journal is not stored."""
    database = config / "home-assistant_v2.db"
    database.unlink()
    with sqlite3.connect(database) as db:
        db.execute("CREATE TABLE t (x)")
    db.close()
    write(config / "home-assistant_v2.db-journal", b"")  # not a hot journal
    result = create(config, location)
    assert result.reasons == {}
    target = tmp_path / "out"
    extracted = extract_backup(location / result.info.file, target, None)
    assert "home-assistant_v2.db-journal" not in extracted
    assert not any(p.name.startswith(TEMP_PREFIX) for p in config.iterdir())


def test_database_excluded_keeps_other_sqlite_files(
    config: Path, location: Path, tmp_path: Path
) -> None:
    """Without the database, other databases are still backed up as files."""
    make_database(config / "zigbee.db", rows=5)
    write(config / "home-assistant_v2.db-journal", b"journal")
    result = create(config, location, include_database=False)
    assert result.info.database_included is False
    extracted = extract_backup(location / result.info.file, tmp_path / "out", None)
    assert "zigbee.db" in extracted
    assert "home-assistant_v2.db" not in extracted
    # Home Assistant's list does not name the journal; neither do we.
    assert "home-assistant_v2.db-journal" in extracted


def test_stale_database_copies_are_removed(config: Path, location: Path) -> None:
    """Database copies a crashed backup left in the config dir are cleaned up."""
    stale = write(config / f"{TEMP_PREFIX}dead-home-assistant_v2.db.tmp", b"x")
    fresh = write(config / f"{TEMP_PREFIX}busy-home-assistant_v2.db.tmp", b"x")
    old = time.time() - 7 * 3600
    os.utime(stale, (old, old))
    create(config, location)
    assert not stale.exists()
    assert fresh.exists()
