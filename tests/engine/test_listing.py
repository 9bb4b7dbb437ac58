"""Reading one archive's metadata cheaply, and listing a location."""

from __future__ import annotations

from collections.abc import Callable, Iterator
import errno
import io
import json
import os
from pathlib import Path
import tarfile
from typing import Any

import pytest

from custom_components.backup_offload.engine import listing, metadata
from custom_components.backup_offload.engine.errors import (
    BackupNotFoundError,
    CorruptBackupError,
    InvalidBackupError,
    LocationUnavailableError,
)
from custom_components.backup_offload.engine.listing import BackupScanner, find_backup
from custom_components.backup_offload.engine.metadata import (
    TEMP_PREFIX,
    BackupInfo,
    read_backup_info,
)

from .helpers import backup_json, build_archive, create, member, truncate, write

SAFE = [member("data", kind=tarfile.DIRTYPE), member("data/a.yaml", b"a: 1\n")]


def make(location: Path, name: str, **metadata: Any) -> Path:
    """Write a small valid backup with the given backup.json changes."""
    return build_archive(location / name, SAFE, metadata=backup_json(**metadata))


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Record every archive the scanner opens."""
    seen: list[Path] = []
    real = listing.read_backup_info

    def counting(path: Path) -> BackupInfo:
        seen.append(path)
        return real(path)

    monkeypatch.setattr(listing, "read_backup_info", counting)
    return seen


@pytest.fixture
def scandirs(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Record every directory the scanner lists."""
    seen: list[Path] = []
    real = os.scandir

    def counting(path: Any) -> Any:
        seen.append(Path(path))
        return real(path)

    monkeypatch.setattr(listing.os, "scandir", counting)
    return seen


# --- read_backup_info -------------------------------------------------------


def test_reads_only_the_start(
    make_config: Callable[..., Path], location: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Metadata of a large archive costs a few small reads, not the file."""
    config = make_config(big=8 << 20)
    result = create(config, location, name="Big", compress=False)
    path = location / result.info.file
    assert path.stat().st_size > 8 << 20
    read = 0
    real_open = Path.open

    class Counting(io.FileIO):
        def readinto(self, buffer: Any) -> int | None:
            nonlocal read
            count = super().readinto(buffer)
            read += count or 0
            return count

    def opener(self: Path, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if self == path:
            return io.BufferedReader(Counting(path), buffer_size=8192)
        return real_open(self, mode, *args, **kwargs)

    monkeypatch.setattr(Path, "open", opener)
    assert read_backup_info(path) == result.info
    assert read < 64 * 1024


def test_backup_json_last_and_foreign(location: Path) -> None:
    """backup.json may come after the inner archives (the Supervisor's order)."""
    path = location / "supervisor.tar"
    inner = io.BytesIO()
    with tarfile.open(fileobj=inner, mode="w:gz") as tar:
        tar.addfile(tarfile.TarInfo("data"))
    raw = json.dumps(
        backup_json(
            slug="sup1",
            type="full",
            extra={"supervisor.backup_request_date": "2026-11-01T08:00:00+00:00"},
        )
    ).encode()
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as outer:
        for name, data in (
            ("./addon_core_ssh.tar.gz", inner.getvalue()),
            ("./homeassistant.tar.gz", inner.getvalue()),
            ("./backup.json", raw),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            outer.addfile(info, io.BytesIO(data))
    info = read_backup_info(path)
    assert info.backup_id == "sup1"
    assert info.date == "2026-11-01T08:00:00+00:00"
    assert info.made_by_us is False
    assert info.instance_id is None
    assert info.is_own("anything") is False
    assert info.database_included is True


def test_addon_only_backup(location: Path) -> None:
    """A Supervisor backup without Home Assistant is still a valid backup."""
    path = build_archive(
        location / "addons.tar",
        SAFE,
        metadata=backup_json(homeassistant=None, date="2026-11-01T08:00:00"),
        inner_name="addon_core_ssh.tar.gz",
    )
    info = read_backup_info(path)
    assert info.homeassistant_version is None
    assert info.database_included is False
    assert info.date == "2026-11-01T08:00:00+00:00"  # no zone: taken as UTC


@pytest.mark.parametrize(
    ("setup", "error"),
    [
        (lambda p: write(p, b"not a tar at all" * 64), InvalidBackupError),
        (lambda p: write(p, b""), InvalidBackupError),
        (lambda p: (make(p.parent, p.name), truncate(p, 600)), CorruptBackupError),
        (lambda p: (make(p.parent, p.name), truncate(p, 1600)), CorruptBackupError),
    ],
    ids=["not a tar", "empty", "truncated in backup.json", "truncated inner"],
)
def test_read_errors(
    location: Path, setup: Callable[[Path], object], error: type
) -> None:
    """Bad files give typed errors."""
    path = location / "bad.tar"
    setup(path)
    with pytest.raises(error):
        read_backup_info(path)


def test_backup_json_directory_or_huge(location: Path) -> None:
    """backup.json must be a small regular file."""
    path = location / "dir.tar"
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("./backup.json")
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
    with pytest.raises(InvalidBackupError, match=r"backup\.json is not a regular file"):
        read_backup_info(path)
    huge = json.dumps(backup_json(padding="x" * (2 << 20))).encode()
    path = build_archive(location / "huge.tar", SAFE, metadata=huge)
    with pytest.raises(InvalidBackupError, match="small file"):
        read_backup_info(path)


def test_damaged_second_header(location: Path) -> None:
    """A damaged header after backup.json hides the inner archive: damage."""
    path = make(location, "hdr.tar")
    data = bytearray(path.read_bytes())
    second = 512 + ((len(json.dumps(backup_json())) + 511) // 512) * 512
    data[second + 148 : second + 156] = b"garbage!"  # the header checksum
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptBackupError, match=r"homeassistant\.tar"):
        read_backup_info(path)


def test_missing_and_unreadable(
    location: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A missing file and an I/O error have their own errors."""
    with pytest.raises(BackupNotFoundError):
        read_backup_info(location / "gone.tar")
    path = make(location, "ok.tar")

    def failing(*args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(metadata, "open_regular", failing)
    with pytest.raises(LocationUnavailableError) as caught:
        read_backup_info(path)
    assert caught.value.location_reason == "unreachable"


# --- scanning ----------------------------------------------------------------


@pytest.fixture
def populated(location: Path) -> Path:
    """A location with backups, broken files and things that are not backups."""
    make(location, "old.tar", slug="old", date="2026-01-01T00:00:00+00:00")
    make(location, "new.tar", slug="new", date="2026-11-27T23:00:00-02:00")
    make(location, "mid.tar", slug="mid", date="2026-11-28T00:30:00+01:00")
    write(location / "old.tar.sha256", "0" * 64 + "  old.tar\n")
    write(location / "notes.txt", "hello")
    write(location / "broken.tar", b"garbage" * 100)
    build_archive(location / "nometa.tar", SAFE, metadata=b"{oops")
    make(location, ".hidden.tar", slug="hidden")
    write(location / f"{TEMP_PREFIX}abc.tar.tmp", b"partial")
    (location / "folder.tar").mkdir()
    (location / "link.tar").symlink_to(location / "old.tar")
    return location


def test_scan(populated: Path) -> None:
    """Valid backups newest first (by instant), invalid ones with a reason."""
    result = BackupScanner().scan(populated)
    assert [b.backup_id for b in result.backups] == ["new", "mid", "old"]
    assert sorted(result.invalid) == [
        "broken.tar",
        "folder.tar",
        "link.tar",
        "nometa.tar",
    ]
    assert "not a tar" in result.invalid["broken.tar"]
    assert "JSON" in result.invalid["nometa.tar"]
    assert "is a directory" in result.invalid["folder.tar"]
    assert "is a symbolic link" in result.invalid["link.tar"]


def test_rescan_without_changes_opens_nothing(
    populated: Path, reads: list[Path], scandirs: list[Path]
) -> None:
    """A refresh with no change costs one directory scan and no file opens."""
    scanner = BackupScanner()
    first = scanner.scan(populated)
    assert len(reads) == 5
    reads.clear()
    scandirs.clear()
    assert scanner.scan(populated) == first
    assert reads == []
    assert scandirs == [populated]


def test_rescan_reads_what_changed(populated: Path, reads: list[Path]) -> None:
    """New, changed and deleted files are noticed; the rest comes from cache."""
    scanner = BackupScanner()
    scanner.scan(populated)
    reads.clear()
    (populated / "old.tar").unlink()
    make(populated, "added.tar", slug="added")
    mid = populated / "mid.tar"
    os.utime(mid, ns=(mid.stat().st_atime_ns, mid.stat().st_mtime_ns + 1000))
    result = scanner.scan(populated)
    assert sorted(p.name for p in reads) == ["added.tar", "mid.tar"]
    assert {b.backup_id for b in result.backups} == {"new", "mid", "added"}
    reads.clear()
    scanner.forget()
    scanner.scan(populated)
    assert len(reads) == 5


def test_other_location_resets_the_cache(
    populated: Path, tmp_path: Path, reads: list[Path]
) -> None:
    """A scanner belongs to one location; another one starts afresh."""
    scanner = BackupScanner()
    scanner.scan(populated)
    other = tmp_path / "other"
    other.mkdir()
    make(other, "x.tar", slug="x")
    assert [b.backup_id for b in scanner.scan(other).backups] == ["x"]
    reads.clear()
    scanner.scan(populated)
    assert len(reads) == 5


def test_transient_errors_are_not_cached(
    location: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An I/O error is asked again next time; a deleted file disappears."""
    make(location, "a.tar", slug="a")
    make(location, "b.tar", slug="b")
    real = listing.read_backup_info
    failures = {"a.tar": LocationUnavailableError("EIO", "unreachable")}

    def flaky(path: Path) -> BackupInfo:
        if path.name == "b.tar":
            raise BackupNotFoundError("deleted meanwhile")
        if error := failures.pop(path.name, None):
            raise error
        return real(path)

    monkeypatch.setattr(listing, "read_backup_info", flaky)
    scanner = BackupScanner()
    first = scanner.scan(location)
    assert first.backups == []
    assert first.invalid == {"a.tar": "EIO"}
    assert [b.backup_id for b in scanner.scan(location).backups] == ["a"]


def test_entry_vanishing_during_scan(
    location: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file deleted between readdir and stat is simply not listed."""
    make(location, "a.tar", slug="a")
    make(location, "b.tar", slug="b")
    real = os.scandir

    class Vanishing:
        def __init__(self, entry: os.DirEntry[str]) -> None:
            self._entry = entry
            self.name = entry.name

        def stat(self, *, follow_symlinks: bool = True) -> os.stat_result:
            if self.name == "b.tar":
                raise FileNotFoundError(self.name)
            return self._entry.stat(follow_symlinks=follow_symlinks)

    class Listing:
        def __init__(self, path: Any) -> None:
            self._iterator = real(path)

        def __enter__(self) -> Iterator[Vanishing]:
            return (Vanishing(e) for e in self._iterator)

        def __exit__(self, *args: object) -> None:
            self._iterator.close()

    monkeypatch.setattr(listing.os, "scandir", Listing)
    assert [b.backup_id for b in BackupScanner().scan(location).backups] == ["a"]


@pytest.mark.parametrize(
    ("make_location", "reason"),
    [
        (lambda tmp: tmp / "missing", "not_found"),
        (lambda tmp: write(tmp / "a-file", "x"), "not_a_directory"),
    ],
)
def test_location_errors(
    tmp_path: Path, make_location: Callable[[Path], Path], reason: str
) -> None:
    """A location that cannot be listed raises with the reason."""
    with pytest.raises(LocationUnavailableError) as caught:
        BackupScanner().scan(make_location(tmp_path))
    assert caught.value.location_reason == reason


def test_location_io_error(location: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOTCONN and friends while listing: unreachable."""

    def failing(path: Any) -> Any:
        raise OSError(errno.ENOTCONN, "Transport endpoint is not connected")

    monkeypatch.setattr(listing.os, "scandir", failing)
    with pytest.raises(LocationUnavailableError) as caught:
        BackupScanner().scan(location)
    assert caught.value.location_reason == "unreachable"


def test_find_backup(populated: Path, reads: list[Path]) -> None:
    """Find by backup id, with or without a scanner (whose cache is used)."""
    assert find_backup(populated, "mid").file == "mid.tar"
    scanner = BackupScanner()
    scanner.scan(populated)
    reads.clear()
    assert find_backup(populated, "old", scanner).file == "old.tar"
    assert reads == []
    with pytest.raises(BackupNotFoundError) as caught:
        find_backup(populated, "nope", scanner)
    assert caught.value.placeholders["backup_id"] == "nope"
