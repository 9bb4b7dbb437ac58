"""Verifying and extracting damaged or wrongly opened archives.

Every bad input must give a typed error, write nothing (no partial file, no
file outside the target) and leave the archive untouched.
"""

from __future__ import annotations

from collections.abc import Callable
import io
import json
from pathlib import Path
import tarfile
import threading
from typing import Any

import pytest

from custom_components.backup_offload.engine.archive import (
    read as archive_read,
    securetar_compat,
)
from custom_components.backup_offload.engine.archive.extract import extract_backup
from custom_components.backup_offload.engine.archive.read import verify_backup
from custom_components.backup_offload.engine.archive.securetar_compat import (
    READ_VERSIONS,
)
from custom_components.backup_offload.engine.errors import (
    BackupNotFoundError,
    BackupOffloadError,
    CorruptBackupError,
    InvalidBackupError,
    LocationUnavailableError,
    UnsupportedFormatError,
    WrongPasswordError,
)

from .helpers import (
    PASSWORD,
    backup_json,
    build_archive,
    digest,
    flip_bit,
    inner_offset,
    make_backup,
    member,
    truncate,
    write,
)


@pytest.fixture
def small_config(make_config: Callable[..., Path]) -> Path:
    """A realistic config directory with small files (fast tests)."""
    return make_config(big=64 * 1024)


def assert_refused(
    path: Path,
    password: str | None,
    error: type[BackupOffloadError] | tuple[type[BackupOffloadError], ...],
    tmp_path: Path,
) -> None:
    """Verify and extract both fail with ``error``; nothing is written."""
    before = digest(path)
    with pytest.raises(error):
        verify_backup(path, password)
    target = tmp_path / "target"
    with pytest.raises(error):
        extract_backup(path, target, password)
    assert not target.exists() or list(target.iterdir()) == []
    assert digest(path) == before


def test_verify_counts(small_config: Path, location: Path, kind: tuple) -> None:
    """Verify reads every member and checks the sidecar."""
    password, compress = kind
    _, path = make_backup(small_config, location, password=password, compress=compress)
    result = verify_backup(path, password)
    assert result.checksum is True
    assert result.members >= 25
    assert result.bytes >= 64 * 1024
    (location / (path.name + ".sha256")).unlink()
    assert verify_backup(path, password).checksum is None


def test_password_on_unencrypted_backup_is_ignored(
    small_config: Path, location: Path
) -> None:
    """An unencrypted backup opens whatever password is given."""
    _, path = make_backup(small_config, location)
    assert verify_backup(path, "anything").checksum is True


@pytest.mark.parametrize("compress", [True, False], ids=["gzip", "plain"])
@pytest.mark.parametrize("given", ["wrong password", None, ""])
def test_wrong_or_missing_password(
    small_config: Path,
    location: Path,
    tmp_path: Path,
    compress: bool,
    given: str | None,
) -> None:
    """Wrong and missing passwords are WrongPasswordError, not damage."""
    _, path = make_backup(small_config, location, password=PASSWORD, compress=compress)
    assert_refused(path, given, WrongPasswordError, tmp_path)
    (location / (path.name + ".sha256")).unlink()
    assert_refused(path, given, WrongPasswordError, tmp_path)


def _damage_inside_backup_json(path: Path) -> None:
    truncate(path, 512 + 20)


def _damage_inner_header(path: Path) -> None:
    offset, _ = inner_offset(path)
    truncate(path, offset + 100)


def _damage_file_data(path: Path) -> None:
    offset, size = inner_offset(path)
    truncate(path, offset + size // 2)


def _cut_inner_consistently(path: Path) -> None:
    """Cut the inner archive in half and fix the outer header to match."""
    with tarfile.open(path, "r:") as outer:
        members = [(m, outer.extractfile(m).read()) for m in outer]  # type: ignore[union-attr]
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as outer:
        for info, data in members:
            if info.name.startswith("homeassistant.tar"):
                data = data[: len(data) // 2]
                info.size = len(data)
            outer.addfile(info, io.BytesIO(data))


def _flip_in_data(path: Path) -> None:
    offset, size = inner_offset(path)
    flip_bit(path, offset + size // 2)


def _flip_in_last_block(path: Path) -> None:
    offset, size = inner_offset(path)
    flip_bit(path, offset + size - 20)


def _flip_in_inner_start(path: Path) -> None:
    offset, _ = inner_offset(path)
    flip_bit(path, offset + 60)


DAMAGE = {
    "truncated inside backup.json": _damage_inside_backup_json,
    "truncated inside the inner tar header": _damage_inner_header,
    "truncated inside file data": _damage_file_data,
    "inner archive cut, outer tar consistent": _cut_inner_consistently,
    "bit flip in file data": _flip_in_data,
    "bit flip near the end": _flip_in_last_block,
    "bit flip at the inner archive's start": _flip_in_inner_start,
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_archive(
    small_config: Path, location: Path, tmp_path: Path, kind: tuple, damage: str
) -> None:
    """Truncations and bit flips are CorruptBackupError (sidecar present)."""
    password, compress = kind
    _, path = make_backup(small_config, location, password=password, compress=compress)
    DAMAGE[damage](path)
    assert_refused(path, password, CorruptBackupError, tmp_path)


@pytest.mark.parametrize(
    "damage",
    [
        "truncated inside file data",
        "inner archive cut, outer tar consistent",
        "bit flip in file data",
    ],
)
@pytest.mark.parametrize("password", [None, PASSWORD], ids=["gzip", "encrypted-gzip"])
def test_damage_found_without_sidecar(
    small_config: Path,
    location: Path,
    tmp_path: Path,
    password: str | None,
    damage: str,
) -> None:
    """Without the sidecar, gzip's CRC (and the tar structure) catch damage."""
    _, path = make_backup(small_config, location, password=password)
    (location / (path.name + ".sha256")).unlink()
    DAMAGE[damage](path)
    assert_refused(path, password, CorruptBackupError, tmp_path)


def test_sidecar_mismatch_and_malformed(
    small_config: Path, location: Path, tmp_path: Path
) -> None:
    """A wrong or unreadable sidecar is reported as damage."""
    _, path = make_backup(small_config, location)
    sidecar = location / (path.name + ".sha256")
    sidecar.write_text(f"{'0' * 64}  {path.name}\n")
    assert_refused(path, None, CorruptBackupError, tmp_path)
    sidecar.write_text("not a checksum\n")
    with pytest.raises(CorruptBackupError, match="sha256sum format"):
        verify_backup(path, None)


def test_wrong_password_on_damaged_start_is_damage(
    small_config: Path, location: Path, tmp_path: Path
) -> None:
    """The sidecar tells a damaged start from a wrong password."""
    _, path = make_backup(small_config, location, password=PASSWORD)
    _flip_in_inner_start(path)
    assert_refused(path, PASSWORD, CorruptBackupError, tmp_path)


def _metadata_cases() -> dict[str, dict | bytes]:
    missing = {key: backup_json() for key in ("slug", "name", "date")}
    for key, data in missing.items():
        del data[key]
    return {
        **{f"missing {key}": data for key, data in missing.items()},
        "invalid JSON": b"{not json",
        "not UTF-8": b"\xff\xfe{}",
        "not an object": b"[1, 2]",
        "slug not a string": backup_json(slug=5),
        "empty name": backup_json(name=""),
        "date not ISO": backup_json(date="yesterday"),
        "extra not an object": backup_json(extra=["x"]),
    }


METADATA = _metadata_cases()


@pytest.mark.parametrize("case", list(METADATA))
def test_invalid_backup_json(tmp_path: Path, case: str) -> None:
    """backup.json problems are InvalidBackupError."""
    path = build_archive(
        tmp_path / "bad.tar",
        [member("data", kind=tarfile.DIRTYPE)],
        metadata=METADATA[case],
    )
    assert_refused(path, None, InvalidBackupError, tmp_path)


def test_backup_json_missing(tmp_path: Path) -> None:
    """An archive without backup.json is not a backup."""
    inner = io.BytesIO()
    with tarfile.open(fileobj=inner, mode="w") as tar:
        tar.addfile(member("data", kind=tarfile.DIRTYPE)[0])
    path = tmp_path / "nojson.tar"
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("homeassistant.tar")
        info.size = len(inner.getvalue())
        tar.addfile(info, io.BytesIO(inner.getvalue()))
    assert_refused(path, None, InvalidBackupError, tmp_path)


def test_backup_json_too_large(tmp_path: Path) -> None:
    """A huge backup.json is refused instead of loaded."""
    big = json.dumps(backup_json(padding="x" * (2 << 20))).encode()
    path = build_archive(tmp_path / "big.tar", [], metadata=big)
    assert_refused(path, None, InvalidBackupError, tmp_path)


@pytest.mark.parametrize(
    "content", [b"", b"just some text\n" * 100, bytes(range(256)) * 8]
)
def test_not_a_tar(tmp_path: Path, content: bytes) -> None:
    """A file named *.tar that is not a tar archive."""
    path = write(tmp_path / "fake.tar", content)
    assert_refused(path, None, InvalidBackupError, tmp_path)


def test_missing_inner_archive(tmp_path: Path) -> None:
    """backup.json says Home Assistant is included, but its archive is gone."""
    path = tmp_path / "noinner.tar"
    raw = json.dumps(backup_json()).encode()
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("./backup.json")
        info.size = len(raw)
        tar.addfile(info, io.BytesIO(raw))
    assert_refused(path, None, CorruptBackupError, tmp_path)


@pytest.mark.parametrize("payload", [b"", b"\x00" * 600, b"random bytes" * 100])
def test_inner_archive_garbage(tmp_path: Path, payload: bytes) -> None:
    """An inner archive that is neither gzip, tar nor SecureTar is damage."""
    path = tmp_path / "garbage.tar"
    raw = json.dumps(backup_json()).encode()
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in (("./backup.json", raw), ("homeassistant.tar.gz", payload)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    assert_refused(path, None, CorruptBackupError, tmp_path)


def test_protected_backup_with_empty_inner_needs_password(tmp_path: Path) -> None:
    """A protected backup asks for the password before anything else."""
    path = tmp_path / "empty.tar"
    raw = json.dumps(backup_json(protected=True)).encode()
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in (("./backup.json", raw), ("homeassistant.tar.gz", b"")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    assert_refused(path, None, WrongPasswordError, tmp_path)


def test_newer_securetar_format(
    small_config: Path, location: Path, tmp_path: Path
) -> None:
    """A header version the installed securetar cannot read is unsupported."""
    _, path = make_backup(small_config, location, password=PASSWORD)
    offset, _ = inner_offset(path)
    data = bytearray(path.read_bytes())
    assert data[offset : offset + 9] == b"SecureTar"
    data[offset + 9] = max(READ_VERSIONS) + 1
    path.write_bytes(bytes(data))
    (location / (path.name + ".sha256")).unlink()
    with pytest.raises(UnsupportedFormatError, match="newer Home Assistant"):
        verify_backup(path, PASSWORD)
    assert_refused(path, PASSWORD, UnsupportedFormatError, tmp_path)


def test_version_2_archive(
    small_config: Path,
    location: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Archives of securetar 2025.x (format v2) are read by every securetar."""
    monkeypatch.setattr(securetar_compat, "WRITE_VERSION", 2)
    _, path = make_backup(small_config, location, password=PASSWORD)
    offset, _ = inner_offset(path)
    assert path.read_bytes()[offset : offset + 10] == b"SecureTar\x02"
    assert verify_backup(path, PASSWORD).checksum is True
    assert "configuration.yaml" in extract_backup(path, tmp_path / "out", PASSWORD)
    with pytest.raises(WrongPasswordError):
        verify_backup(path, "wrong")


def test_magicless_version_1_archive(
    small_config: Path,
    location: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first SecureTar format (no header, only the IV) is still read.

    v1 and v2 share the cipher; v2 only adds 32 bytes in front of the IV.
    """
    monkeypatch.setattr(securetar_compat, "WRITE_VERSION", 2)
    _, path = make_backup(small_config, location, password=PASSWORD)
    with tarfile.open(path, "r:") as outer:
        members = [(m, outer.extractfile(m).read()) for m in outer]  # type: ignore[union-attr]
    v1 = tmp_path / "v1.tar"
    with tarfile.open(v1, "w", format=tarfile.PAX_FORMAT) as outer:
        for info, data in members:
            if info.name.startswith("homeassistant.tar"):
                assert data[9] == 2
                data = data[32:]
                info.size = len(data)
            outer.addfile(info, io.BytesIO(data))
    assert verify_backup(v1, PASSWORD).members > 20
    assert "configuration.yaml" in extract_backup(v1, tmp_path / "out", PASSWORD)
    with pytest.raises(WrongPasswordError):
        verify_backup(v1, "wrong")
    with pytest.raises(CorruptBackupError):
        verify_backup(v1, None)  # no magic and no password: cannot be read


def test_missing_file(tmp_path: Path) -> None:
    """A file that does not exist is BackupNotFoundError."""
    with pytest.raises(BackupNotFoundError):
        verify_backup(tmp_path / "gone.tar", None)
    with pytest.raises(BackupNotFoundError):
        extract_backup(tmp_path / "gone.tar", tmp_path / "out", None)
    assert not (tmp_path / "out").exists()


def test_io_error_while_reading(
    small_config: Path, location: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An I/O error of the share is LocationUnavailableError, not damage.

    It comes after some data was read (and hashed): no thread is left.
    """
    _, path = make_backup(small_config, location)
    real_open = archive_read.open_regular

    class Failing(io.FileIO):
        def readinto(self, buffer: Any) -> int:
            if self.tell() > 2000:
                raise OSError(5, "Input/output error")
            return super().readinto(memoryview(buffer)[:1000])

    def opener(name: Path, **kwargs: Any) -> object:
        if name == path:
            return io.BufferedReader(Failing(path))
        return real_open(name, **kwargs)

    monkeypatch.setattr(archive_read, "open_regular", opener)
    with pytest.raises(LocationUnavailableError, match="Input/output"):
        verify_backup(path, None)
    assert [t.name for t in threading.enumerate() if "backup_offload" in t.name] == []


def test_sidecar_io_error(
    small_config: Path, location: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An I/O error reading the sidecar is LocationUnavailableError."""
    _, path = make_backup(small_config, location)
    real_open = archive_read.open_regular

    def opener(name: Path, **kwargs: Any) -> object:
        if name.name.endswith(".sha256"):
            raise OSError(5, "Input/output error")
        return real_open(name, **kwargs)

    monkeypatch.setattr(archive_read, "open_regular", opener)
    with pytest.raises(LocationUnavailableError):
        verify_backup(path, None)
