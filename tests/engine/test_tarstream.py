"""Walking a tar stream with tarfile's parser: the same members, the same data."""

from __future__ import annotations

import io
import os
from pathlib import Path
import struct
import subprocess
import tarfile

import pytest

from custom_components.backup_offload.engine import worker
from custom_components.backup_offload.engine.archive import tarstream
from custom_components.backup_offload.engine.archive.tarstream import (
    ForwardReader,
    member_chunks,
    open_tar,
)
from tests.mounts import require_tools

from . import worker_targets as targets


def _archive(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


MEMBERS = {
    "empty": b"",
    "small": b"x" * 10,
    "block": os.urandom(512),
    "odd": os.urandom(1537),
    "big": os.urandom(3 << 20),
    # A long non-ASCII name: a PAX header before the member.
    "ü/" + "long-name-" * 20: b"pax",
}


@pytest.mark.parametrize("chunk", [1, 511, 700, 4096, 1 << 20])
def test_walk_reads_what_tarfile_reads(chunk: int) -> None:
    """Every member, its header and its data, whatever the piece size."""
    data = _archive(MEMBERS)
    source = ForwardReader(io.BytesIO(data), chunk=chunk)
    with tarfile.open(fileobj=source, mode="r:") as tar:  # type: ignore[call-overload]
        found = {
            member.name: b"".join(member_chunks(tar, member, size=1000))
            for member in tar
        }
    assert found == MEMBERS


def test_skipped_data_is_passed_over() -> None:
    """Members whose data nobody reads are skipped by seeking forward."""
    with open_tar(io.BytesIO(_archive(MEMBERS))) as tar:
        names = [member.name for member in tar]
    assert names == list(MEMBERS)


def test_truncated_data() -> None:
    """An archive that ends inside a member's data: ReadError."""
    data = _archive({"big": os.urandom(100_000)})[:50_000]
    with open_tar(io.BytesIO(data)) as tar:
        member = tar.next()
        assert member is not None
        with pytest.raises(tarfile.ReadError, match="unexpected end"):
            b"".join(member_chunks(tar, member))


def test_not_a_tar() -> None:
    """A stream that is no tar archive is refused at once."""
    with pytest.raises(tarfile.ReadError):
        open_tar(io.BytesIO(b"not a tar archive" * 100))


def test_forward_reader() -> None:
    """Reads, forward seeks, one step back within the piece, and their limits."""
    reader = ForwardReader(io.BytesIO(bytes(range(256)) * 4), chunk=100)
    assert reader.read(3) == bytes([0, 1, 2])
    assert reader.seek(250) == 250
    assert reader.tell() == 250
    assert reader.read(8) == bytes([250, 251, 252, 253, 254, 255, 0, 1])
    assert reader.seek(257) == 257  # back, within the piece at hand
    assert reader.read(1) == bytes([1])
    with pytest.raises(io.UnsupportedOperation):
        reader.seek(10)  # back beyond it
    with pytest.raises(io.UnsupportedOperation):
        reader.seek(0, os.SEEK_END)
    assert len(reader.read()) == 1024 - 258
    assert reader.read(5) == b""
    assert reader.seek(5000) == 1024  # past the end: stays at the end
    assert reader.read(0) == b""


def test_sparse_member(tmp_path: Path) -> None:
    """A sparse member (GNU tar -S) reads back with its holes."""
    require_tools("tar")
    sparse = tmp_path / "sparse"
    with sparse.open("wb") as file:
        file.seek(200_000)
        file.write(b"data after a hole")
        file.seek(600_000)
        file.write(b"end")
    archive = tmp_path / "sparse.tar"
    subprocess.run(
        ["tar", "-S", "-cf", str(archive), "-C", str(tmp_path), "sparse"], check=True
    )
    with archive.open("rb") as raw, open_tar(raw) as tar:
        member = tar.next()
        assert member is not None
        assert member.sparse is not None
        assert b"".join(member_chunks(tar, member)) == sparse.read_bytes()


def _headers() -> list[bytes]:
    """Headers tarfile writes, and random and extreme blocks."""
    blocks = [bytes(512), b"\xff" * 512, bytes(range(256)) * 2]
    blocks += [os.urandom(512) for _ in range(500)]
    for name in ("plain", "ü" * 40, "x/" * 60):
        info = tarfile.TarInfo(name)
        info.size = 12345
        blocks.append(info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape")[:512])
    return blocks


def test_checksums_equal_tarfile() -> None:
    """The fast checksums are tarfile's, for every block, whatever its bytes."""
    original = tarstream._ORIGINAL_CHKSUMS
    for block in _headers():
        assert tarstream.calc_chksums(block) == original(block)
        assert tarstream.calc_chksums(block + b"more") == original(block + b"more")
    # What tarfile does not hand it: left to tarfile.
    assert tarstream.calc_chksums(bytearray(512)) == original(bytearray(512))
    with pytest.raises(struct.error):
        tarstream.calc_chksums(b"short")


def test_worker_reads_headers_with_fast_checksums() -> None:
    """The worker process uses them; this process keeps tarfile as it is."""
    assert worker.run(targets.checksum_function) == "tarstream"
    assert targets.checksum_function() == "tarfile"
