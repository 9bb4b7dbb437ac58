"""The backup agent's streams (``engine/transfer.py``): upload and download."""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path
import stat
from typing import Any

import pytest

from custom_components.backup_offload.engine import transfer as agent_files
from custom_components.backup_offload.engine.errors import (
    BackupNotFoundError,
    BackupOffloadError,
    CopyMismatchError,
    CopySourceError,
    CorruptBackupError,
    InsufficientSpaceError,
    InvalidBackupError,
    LocationUnavailableError,
    WriteFailedError,
)
from custom_components.backup_offload.engine.jobs import Location
from custom_components.backup_offload.engine.listing import BackupScanner

from .helpers import backup_bytes

FINAL = "Uploaded_2026-01-02_03.04_c0ffee01.tar"
CHUNK = agent_files.CHUNK


@pytest.fixture
def location(location_dir: Path, config_dir: Path) -> Location:
    """Return a plain directory as a location (here a Location, not a path)."""
    return Location(
        path=location_dir,
        require_mount=False,
        scanner=BackupScanner(),
        config_dir=config_dir,
    )


def _receive(location: Location, data: bytes, backup_id: str = "c0ffee01") -> Any:
    upload = agent_files.start_upload(location, backup_id, len(data))
    agent_files.write_chunk(upload, data)
    return upload


def _open(
    location: Location, backup_id: str, passwords: tuple[str, ...] = ()
) -> agent_files.Download:
    return agent_files.open_backup(location, backup_id, passwords, checked=lambda: None)


def _names(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


def test_receive_and_publish(location: Location, location_dir: Path) -> None:
    """Hidden while written; published with a sha256sum sidecar."""
    data = backup_bytes()
    upload = agent_files.start_upload(location, "c0ffee01", len(data))
    assert upload.temp.name.startswith(agent_files.UPLOAD_PREFIX)
    assert stat.S_IMODE(upload.temp.stat().st_mode) == 0o600
    assert agent_files.write_chunk(upload, data[:1000]) == 1000
    assert agent_files.write_chunk(upload, data[1000:]) == len(data)
    assert location.scanner.scan(location_dir).backups == []

    calls: list[None] = []
    info, snapshot = agent_files.finish_upload(
        location, upload, "c0ffee01", checked=lambda: calls.append(None)
    )
    assert calls == [None]
    assert info.file == FINAL
    assert info.size == len(data)
    assert [b.file for b in snapshot.backups] == [FINAL]
    assert _names(location_dir) == [FINAL, FINAL + ".sha256"]
    digest = hashlib.sha256(data).hexdigest()
    assert (location_dir / (FINAL + ".sha256")).read_text() == f"{digest}  {FINAL}\n"
    assert (location_dir / FINAL).read_bytes() == data


def test_download(location: Location) -> None:
    """The archive is read chunk by chunk."""
    data = backup_bytes(payload=agent_files.CHUNK + 10)
    agent_files.finish_upload(
        location, _receive(location, data), "c0ffee01", checked=lambda: None
    )
    download = _open(location, "c0ffee01")
    chunks = []
    while chunk := agent_files.read_chunk(download):
        chunks.append(chunk)
    agent_files.close_download(download)
    agent_files.close_download(download)  # twice is harmless
    assert len(chunks[0]) == agent_files.CHUNK
    assert b"".join(chunks) == data
    with pytest.raises(BackupNotFoundError):
        _open(location, "deadbeef")


def test_start_refuses(location: Location, location_dir: Path) -> None:
    """A duplicate id, a location that is gone, a temp file that cannot be made."""
    data = backup_bytes()
    agent_files.finish_upload(
        location, _receive(location, data), "c0ffee01", checked=lambda: None
    )
    with pytest.raises(BackupOffloadError, match="already exists"):
        agent_files.start_upload(location, "c0ffee01", 0)
    with pytest.raises(LocationUnavailableError):
        agent_files.start_upload(
            Location(
                path=location_dir / "gone",
                require_mount=False,
                scanner=BackupScanner(),
                config_dir=location.config_dir,
            ),
            "other",
            0,
        )


@pytest.mark.parametrize(
    ("code", "error"),
    [(errno.ENOSPC, InsufficientSpaceError), (errno.EIO, WriteFailedError)],
)
def test_write_errors(
    location: Location,
    location_dir: Path,
    code: int,
    error: type[Exception],
) -> None:
    """OS errors become typed errors; abort removes everything."""
    upload = agent_files.start_upload(location, "c0ffee01", 0)
    real = upload.file

    class Broken:
        def write(self, data: bytes) -> int:
            raise OSError(code, os.strerror(code))

        def close(self) -> None:
            real.close()

    upload.file = Broken()  # type: ignore[assignment]
    with pytest.raises(error, match=errno.errorcode[code]):
        agent_files.write_chunk(upload, b"x")
    agent_files.abort_upload(upload)
    agent_files.abort_upload(upload)  # twice is harmless
    assert _names(location_dir) == []


def test_temp_file_cannot_be_created(
    location: Location, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failing create is a typed write error."""

    def refuse(path: str, flags: int) -> int:
        raise OSError(errno.EDQUOT, "Disk quota exceeded")

    monkeypatch.setattr(agent_files, "_private", refuse)
    with pytest.raises(InsufficientSpaceError, match="EDQUOT"):
        agent_files.start_upload(location, "c0ffee01", 0)


def test_finish_refuses_and_abort_cleans(
    location: Location, location_dir: Path
) -> None:
    """Not a backup, another id, a name taken: an error; abort leaves nothing."""
    upload = _receive(location, b"junk" * 100)
    with pytest.raises(InvalidBackupError, match="not a complete"):
        agent_files.finish_upload(location, upload, "c0ffee01", checked=lambda: None)
    agent_files.abort_upload(upload)
    assert _names(location_dir) == []

    upload = _receive(location, backup_bytes(), "0ther1d0")
    with pytest.raises(InvalidBackupError, match="expected 0ther1d0"):
        agent_files.finish_upload(location, upload, "0ther1d0", checked=lambda: None)
    agent_files.abort_upload(upload)
    assert _names(location_dir) == []

    (location_dir / FINAL).mkdir()  # not a backup, but the name is taken
    upload = _receive(location, backup_bytes())
    with pytest.raises(WriteFailedError, match="already exists"):
        agent_files.finish_upload(location, upload, "c0ffee01", checked=lambda: None)
    agent_files.abort_upload(upload)
    assert _names(location_dir) == [FINAL]


def test_temp_file_removed_by_someone_else(
    location: Location, location_dir: Path
) -> None:
    """Our temporary file vanished before the end: a write failure."""
    upload = _receive(location, backup_bytes())
    upload.temp.unlink()
    with pytest.raises(WriteFailedError, match="vanished"):
        agent_files.finish_upload(location, upload, "c0ffee01", checked=lambda: None)
    agent_files.abort_upload(upload)
    assert _names(location_dir) == []


def test_fsync_fails(
    location: Location, location_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An fsync error (the share lost the data) fails the upload."""
    upload = _receive(location, backup_bytes())

    def fail(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(agent_files.os, "fsync", fail)
    with pytest.raises(WriteFailedError, match="EIO"):
        agent_files.finish_upload(location, upload, "c0ffee01", checked=lambda: None)
    monkeypatch.undo()
    agent_files.abort_upload(upload)
    assert _names(location_dir) == []


@pytest.mark.parametrize(
    ("code", "published"), [(errno.EINVAL, True), (errno.EIO, False)]
)
def test_directory_fsync(
    location: Location,
    location_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    code: int,
    published: bool,
) -> None:
    """A share that cannot fsync a directory is fine; an I/O error is not."""
    upload = _receive(location, backup_bytes())
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(code, os.strerror(code))
        real_fsync(fd)

    monkeypatch.setattr(agent_files.os, "fsync", fsync)
    if published:
        agent_files.finish_upload(location, upload, "c0ffee01", checked=lambda: None)
        assert _names(location_dir) == [FINAL, FINAL + ".sha256"]
        return
    with pytest.raises(WriteFailedError, match="EIO"):
        agent_files.finish_upload(location, upload, "c0ffee01", checked=lambda: None)
    agent_files.abort_upload(upload)
    assert _names(location_dir) == []


def test_open_and_read_errors(
    location: Location, location_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Opening or reading a listed archive can still fail: typed errors."""
    agent_files.finish_upload(
        location, _receive(location, backup_bytes()), "c0ffee01", checked=lambda: None
    )
    path = location_dir / FINAL

    def refuse(name: Path, **kwargs: Any) -> Any:
        raise OSError(errno.EACCES, "Permission denied")

    with monkeypatch.context() as patch:
        patch.setattr(agent_files, "open_regular", refuse)
        with pytest.raises(LocationUnavailableError, match="Permission denied"):
            _open(location, "c0ffee01")

    real_run = agent_files.worker.run

    def check_then_swap(func: Any, *args: Any, **kwargs: Any) -> Any:
        # Someone replaces the archive by a FIFO between the check and the
        # open: opening it must neither block nor follow it.
        result = real_run(func, *args, **kwargs)
        path.rename(path.with_name("moved.bin"))
        os.mkfifo(path)
        return result

    with monkeypatch.context() as patch:
        patch.setattr(agent_files.worker, "run", check_then_swap)
        with pytest.raises(InvalidBackupError, match="is a FIFO"):
            _open(location, "c0ffee01")
    path.unlink()
    path.with_name("moved.bin").rename(path)

    download = _open(location, "c0ffee01")

    class Broken:
        def read(self, size: int) -> bytes:
            raise OSError(errno.EIO, "Input/output error")

    real = download.file
    download.file = Broken()  # type: ignore[assignment]
    with pytest.raises(LocationUnavailableError, match="Input/output error"):
        agent_files.read_chunk(download)
    real.close()


def test_download_changed_after_the_check(
    location: Location, location_dir: Path
) -> None:
    """Bytes that differ from what was checked: the end is never sent."""
    data = backup_bytes(payload=3 * agent_files.CHUNK)
    agent_files.finish_upload(
        location, _receive(location, data), "c0ffee01", checked=lambda: None
    )
    download = _open(location, "c0ffee01")
    # Rewritten in place (same file, same size) after the check.
    with (location_dir / FINAL).open("r+b") as file:
        file.seek(len(data) // 2)
        file.write(b"X" * 1000)
    sent = [agent_files.read_chunk(download) for _ in range(len(data) // CHUNK)]
    with pytest.raises(CorruptBackupError, match="changed since it was checked"):
        agent_files.read_chunk(download)
    agent_files.close_download(download)
    assert len(data) > len(b"".join(sent)) >= len(data) - CHUNK


def _flushed(location: Location, data: bytes) -> agent_files.Upload:
    upload = _receive(location, data)
    upload.file.flush()
    return upload


def test_read_back(location: Location, location_dir: Path) -> None:
    """A copy is read back before it is published: same bytes, then it is kept."""
    data = backup_bytes(payload=3 * CHUNK)
    upload = _flushed(location, data)
    info, _ = agent_files.finish_upload(
        location, upload, "c0ffee01", checked=lambda: None, read_back=True
    )
    assert info.file == FINAL
    assert (location_dir / FINAL).read_bytes() == data


@pytest.mark.parametrize("read_back", [True, False])
def test_read_back_differs(
    location: Location, location_dir: Path, read_back: bool
) -> None:
    """Stored bytes that are not what was received: refused only when read back."""
    data = backup_bytes(payload=3 * CHUNK)
    upload = _flushed(location, data)
    with upload.temp.open("r+b") as file:  # someone else writes into it
        file.seek(len(data) // 2)
        file.write(b"X" * 10)
    if not read_back:
        agent_files.finish_upload(location, upload, "c0ffee01", checked=lambda: None)
        assert _names(location_dir) == [FINAL, FINAL + ".sha256"]
        return
    with pytest.raises(CopyMismatchError, match="received were") as err:
        agent_files.finish_upload(
            location, upload, "c0ffee01", checked=lambda: None, read_back=True
        )
    assert err.value.translation_key == "copy_mismatch"
    assert isinstance(err.value, CorruptBackupError)
    agent_files.abort_upload(upload)
    assert _names(location_dir) == []


def test_read_back_of_another_file(location: Location, location_dir: Path) -> None:
    """A file swapped in under the temporary name is a mismatch, even if equal."""
    data = backup_bytes()
    upload = _flushed(location, data)
    other = location_dir / "other"
    other.write_bytes(data)
    other.rename(upload.temp)
    with pytest.raises(CopyMismatchError, match="was replaced"):
        agent_files.finish_upload(
            location, upload, "c0ffee01", checked=lambda: None, read_back=True
        )
    agent_files.abort_upload(upload)
    assert _names(location_dir) == []


def test_read_back_fails(
    location: Location, location_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file vanished, or the share fails the read: typed errors, nothing left."""
    upload = _flushed(location, backup_bytes())
    upload.temp.unlink()
    with pytest.raises(WriteFailedError, match="vanished"):
        agent_files.finish_upload(
            location, upload, "c0ffee01", checked=lambda: None, read_back=True
        )
    agent_files.abort_upload(upload)

    upload = _flushed(location, backup_bytes())

    class Broken:
        def __enter__(self) -> Broken:
            return self

        def __exit__(self, *args: object) -> None:
            pass

        def fileno(self) -> int:
            return upload.file.fileno()

        def read(self, size: int) -> bytes:
            raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(agent_files, "open_regular", lambda path, **kw: Broken())
    with pytest.raises(LocationUnavailableError, match="Input/output error"):
        agent_files.finish_upload(
            location, upload, "c0ffee01", checked=lambda: None, read_back=True
        )
    agent_files.abort_upload(upload)
    assert _names(location_dir) == []


def test_local_source(tmp_path: Path) -> None:
    """Home Assistant's own backup file, read in chunks; its errors are the source's."""
    data = os.urandom(CHUNK + 10)
    path = tmp_path / "local.tar"
    path.write_bytes(data)
    file = agent_files.open_source(path)
    chunks = []
    while chunk := agent_files.read_source(file, path):
        chunks.append(chunk)
    agent_files.close_source(file)
    agent_files.close_source(file)  # twice is harmless
    assert [len(c) for c in chunks] == [CHUNK, 10]
    assert b"".join(chunks) == data

    with pytest.raises(CopySourceError, match="ENOENT") as err:
        agent_files.open_source(tmp_path / "gone.tar")
    assert err.value.translation_key == "copy_source_failed"
    os.mkfifo(tmp_path / "fifo.tar")
    with pytest.raises(InvalidBackupError, match="FIFO"):
        agent_files.open_source(tmp_path / "fifo.tar")

    class Broken:
        def read(self, size: int) -> bytes:
            raise OSError(errno.EIO, "Input/output error")

    with pytest.raises(CopySourceError, match="EIO"):
        agent_files.read_source(Broken(), path)  # type: ignore[arg-type]


@pytest.mark.parametrize("step", ["write", "finish"])
def test_abandoned_upload_removes_itself(
    location: Location, location_dir: Path, step: str
) -> None:
    """A job still running after its receiver gave up removes the upload.

    (The receiver gives up on a job that hangs; when the share answers
    again, that job must not publish what was reported as failed.)
    """
    data = backup_bytes()
    upload = agent_files.start_upload(location, "c0ffee01", len(data))
    if step == "finish":
        agent_files.write_chunk(upload, data)
    upload.abandoned.set()

    def go_on() -> object:
        if step == "write":
            return agent_files.write_chunk(upload, data)
        return agent_files.finish_upload(
            location, upload, "c0ffee01", checked=lambda: None, read_back=True
        )

    with pytest.raises(WriteFailedError, match="given up"):
        go_on()
    assert _names(location_dir) == []
    assert upload.temp.name not in location.live
