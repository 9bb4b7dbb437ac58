"""The engine's fast paths: parallel gzip, read-ahead, matching, listing, GIL.

Each fast path must give exactly what the simple one gave: standard gzip
that every reader reads, the same exclude decisions as Home Assistant's
``full_match``, the same listing, the same extraction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
import gzip
import io
import os
from pathlib import Path, PurePosixPath
import random
import shutil
import subprocess
import sys
import tarfile
import threading
import time
import zlib

import pytest

from custom_components.backup_offload.engine import gil, listing
from custom_components.backup_offload.engine.archive import compression, extract
from custom_components.backup_offload.engine.archive.excludes import (
    HA_EXCLUDES,
    build_matcher,
)
from custom_components.backup_offload.engine.archive.extract import extract_backup
from custom_components.backup_offload.engine.archive.read import verify_backup
from custom_components.backup_offload.engine.errors import (
    InsufficientSpaceError,
    LocationUnavailableError,
    UnsafeArchiveError,
    WriteFailedError,
)
from custom_components.backup_offload.engine.listing import BackupScanner

from .helpers import PASSWORD, build_archive, create, member, tree

BACKENDS = [compression._load_backend("zlib")]
if compression._load_backend(None).name != "zlib":
    BACKENDS.append(compression._load_backend(None))


@pytest.fixture(params=BACKENDS, ids=lambda backend: backend.name)
def backend(request: pytest.FixtureRequest) -> compression.Backend:
    """Each compressor that is installed (zlib always)."""
    return request.param  # type: ignore[no-any-return]


def _payload(size: int) -> bytes:
    rng = random.Random(size)  # noqa: S311 - test data
    words = [b"sensor", b"light", b"state", b"2026-11-27T12:00:00", b"{", b"}"]
    text = b" ".join(rng.choice(words) for _ in range(size // 6))[: size // 2]
    return text + os.urandom(size - len(text))


def _compress(data: bytes, backend: compression.Backend, **kwargs: int) -> bytes:
    sink = io.BytesIO()
    writer = compression.GzipWriter(sink, backend=backend, **kwargs)
    view = memoryview(data)
    for start in range(0, len(data), 7777):  # odd sizes: blocks straddle writes
        writer.write(view[start : start + 7777])
    assert writer.tell() == len(data)
    writer.close()
    assert writer.closed
    return sink.getvalue()


@pytest.mark.parametrize("size", [0, 1, 100_000, 3 * 65536 + 17])
@pytest.mark.parametrize("workers", [1, 3])
def test_gzip_writer_is_standard_gzip(
    backend: compression.Backend, size: int, workers: int
) -> None:
    """One gzip member that Python's gzip and GNU gzip read back exactly."""
    data = _payload(size)
    blob = _compress(data, backend, workers=workers, block_size=65536)
    assert gzip.decompress(blob) == data
    if shutil.which("gzip"):
        done = subprocess.run(
            ["gzip", "-dc"], check=False, input=blob, capture_output=True
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout == data


def test_gzip_writer_compresses(backend: compression.Backend) -> None:
    """Primed blocks compress about as well as one stream."""
    data = b"homeassistant: sensor.kitchen_temperature 21.5\n" * 40_000
    blob = _compress(data, backend, workers=2, block_size=65536)
    assert len(blob) < len(zlib.compress(data, 6)) * 3


def test_gzip_writer_abort_leaves_no_thread() -> None:
    """A failure mid-way: the pool stops, nothing is written afterwards."""
    sink = io.BytesIO()
    before = threading.active_count()
    writer = compression.GzipWriter(sink, workers=2, block_size=4096)
    writer.write(os.urandom(50_000))
    written = len(sink.getvalue())
    writer.abort()
    assert threading.active_count() == before
    assert len(sink.getvalue()) == written
    writer.close()  # a no-op after abort
    with pytest.raises(ValueError, match="closed"):
        writer.write(b"x")


def test_gzip_writer_close_failure_aborts() -> None:
    """A sink that fails while the rest is written: the error, no thread."""

    class Failing(io.BytesIO):
        def write(self, data: object) -> int:
            if self.tell() > 10:
                raise OSError(28, "No space left on device")
            return super().write(data)  # type: ignore[arg-type]

    before = threading.active_count()
    writer = compression.GzipWriter(Failing(), workers=2, block_size=4096)
    writer.write(os.urandom(20_000))
    with pytest.raises(OSError, match="No space"):
        writer.close()
    assert writer.closed
    assert threading.active_count() == before


def _read_all(blob: bytes, backend: compression.Backend, chunk: int = 1000) -> bytes:
    with compression.GzipReader(io.BytesIO(blob), backend=backend, chunk=chunk) as r:
        parts = []
        while part := r.read(333):
            parts.append(part)
        assert r.read(10) == b""
        return b"".join(parts)


def test_gzip_reader(backend: compression.Backend) -> None:
    """Reads one member, several members and zero padding like gzip does."""
    data = _payload(200_000)
    assert _read_all(gzip.compress(data), backend) == data
    two = gzip.compress(b"first ") + b"\0" * 700 + gzip.compress(b"second")
    assert _read_all(two, backend) == b"first second"
    with compression.GzipReader(io.BytesIO(gzip.compress(data)), backend=backend) as r:
        assert r.read() == data


@pytest.mark.parametrize(
    ("damage", "error"),
    [
        (lambda blob: blob[: len(blob) // 2], EOFError),
        (lambda blob: blob[:-4] + bytes(4), zlib.error),
        (lambda blob: b"", EOFError),
        (lambda blob: blob + b"\x1f\x8b\x08", EOFError),
    ],
    ids=["truncated", "wrong size", "empty", "truncated second member"],
)
def test_gzip_reader_errors(
    backend: compression.Backend, damage: Callable[[bytes], bytes], error: type
) -> None:
    """Damage is raised in the reading thread, as gzip's errors are."""
    blob = damage(gzip.compress(_payload(100_000)))
    with pytest.raises(error):
        _read_all(blob, backend)


def test_gzip_reader_source_error_and_early_close() -> None:
    """An error of the source reaches the reader; closing early stops the thread."""

    class Broken:
        def read(self, size: int = -1) -> bytes:
            raise OSError(5, "Input/output error")

    before = threading.active_count()
    with (
        pytest.raises(OSError, match="Input/output"),
        compression.GzipReader(Broken()) as reader,
    ):
        reader.read(10)
    big = gzip.compress(os.urandom(1 << 20))
    with compression.GzipReader(io.BytesIO(big), chunk=1024, read_ahead=1) as reader:
        assert len(reader.read(10)) == 10
    assert threading.active_count() == before


def test_backend_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    """Zlib when asked or when isal is missing."""
    assert compression._load_backend("zlib").name == "zlib"
    real = compression.importlib.import_module

    def no_isal(name: str) -> object:
        if name.startswith("isal"):
            raise ImportError(name)
        return real(name)

    monkeypatch.setattr(compression.importlib, "import_module", no_isal)
    assert compression._load_backend(None).name == "zlib"
    assert compression.default_workers() >= 1


def test_archives_readable_by_tar(config: Path, location: Path, tmp_path: Path) -> None:
    """The inner archive is standard gzip: tar -xzf and Python's tarfile read it."""
    result = create(config, location, name="Interop")
    with tarfile.open(location / result.info.file) as outer:
        inner = outer.extractfile("homeassistant.tar.gz")
        assert inner is not None
        blob = inner.read()
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        assert "data/configuration.yaml" in tar.getnames()
    if shutil.which("tar"):
        target = tmp_path / "by-tar"
        target.mkdir()
        (tmp_path / "inner.tar.gz").write_bytes(blob)
        subprocess.run(
            ["tar", "-xzf", str(tmp_path / "inner.tar.gz"), "-C", str(target)],
            check=True,
        )
        assert (target / "data/configuration.yaml").read_bytes() == (
            config / "configuration.yaml"
        ).read_bytes()


def test_matcher_equals_full_match() -> None:
    """The compiled matcher decides like Home Assistant's full_match, always."""
    patterns = [
        *HA_EXCLUDES,
        "www/*.jpg",
        "**/secret*",
        "a/**/b",
        ".storage/**",
        "x[ab]c",
        "q?",
        "**",
        "*/**/*.py",
        "**/.*",
        "*a*b*",
        "x[!a]c",
        "**/a/**/b",
    ]
    segments = ["a", "b", "x", ".hidden", "__pycache__", "backups", "tts", "www"]
    segments += ["k.jpg", "xbc", "q1", "c.py", "x.tar", "home.log", "Küche.png"]
    rng = random.Random(7)  # noqa: S311 - test data
    paths = {
        "/".join(rng.choice(segments) for _ in range(rng.randint(1, 4)))
        for _ in range(3000)
    }
    for pattern in patterns:
        matcher = build_matcher([pattern])
        for path in paths:
            expected = PurePosixPath("data", path).full_match(f"data/{pattern}")
            assert matcher(path) is expected, (pattern, path)
    assert build_matcher([])("anything") is False


def test_switch_interval_is_restored() -> None:
    """The GIL switch interval is lowered while operations run, then restored."""
    before = sys.getswitchinterval()
    with gil.responsive():
        assert sys.getswitchinterval() <= gil.SWITCH_INTERVAL
        with gil.responsive():
            assert sys.getswitchinterval() <= gil.SWITCH_INTERVAL
        assert sys.getswitchinterval() <= gil.SWITCH_INTERVAL
    assert sys.getswitchinterval() == before


def test_lower_priority_in_a_thread() -> None:
    """Helper threads run niced (Linux); the caller's priority is untouched."""
    seen: list[int] = []

    def work() -> None:
        gil.lower_priority()
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))

    mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert seen == [min(19, mine + gil.NICE_INCREMENT)]
    with gil.responsive():
        pass
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == mine


def test_slow_listing_goes_parallel(
    location: Path, monkeypatch: pytest.MonkeyPatch, config: Path
) -> None:
    """Past the first slow operation, the rest runs on threads: same result."""
    for index in range(6):
        create(
            config,
            location,
            name=f"B{index}",
            include_database=False,
            compress=False,
            backup_id=f"id{index}",
        )
    expected = BackupScanner().scan(location)
    monkeypatch.setattr(listing, "SLOW_OPERATION", -1.0)
    threads: set[str] = set()
    real = listing.read_backup_info

    def spy(path: Path) -> object:
        threads.add(threading.current_thread().name)
        return real(path)

    monkeypatch.setattr(listing, "read_backup_info", spy)
    assert BackupScanner().scan(location) == expected
    assert any(name.startswith("backup_offload-scan") for name in threads)


# --- one-pass extraction -----------------------------------------------------

SAFE = [
    member("data", kind=tarfile.DIRTYPE),
    member("data/sub", kind=tarfile.DIRTYPE),
    member("data/sub/file.txt", b"content"),
    member("data/top.txt", b"top"),
]


def test_one_pass_into_new_target(tmp_path: Path) -> None:
    """A new target is the staging directory itself: no hidden leftovers."""
    path = build_archive(tmp_path / "a.tar", SAFE, password=PASSWORD)
    target = tmp_path / "new"
    assert extract_backup(path, target, PASSWORD) == ["sub", "sub/file.txt", "top.txt"]
    assert set(tree(target)) == {"sub", "sub/file.txt", "top.txt"}
    assert (target / "sub/file.txt").read_text() == "content"


def test_one_pass_into_populated_target(tmp_path: Path) -> None:
    """An existing tree: staged aside, moved in, the rest left alone."""
    path = build_archive(
        tmp_path / "a.tar",
        [*SAFE, member("data/new/deep/x.txt", b"x"), member("data/top.txt", b"v2")],
    )
    target = tmp_path / "target"
    (target / "sub").mkdir(parents=True)
    (target / "sub/file.txt").write_text("old")
    (target / "keep.txt").write_text("keep")
    extracted = extract_backup(path, target, None)
    assert extracted == ["sub", "sub/file.txt", "new/deep/x.txt", "top.txt"]
    assert (target / "sub/file.txt").read_text() == "content"
    assert (target / "top.txt").read_text() == "v2"
    assert (target / "new/deep/x.txt").read_text() == "x"
    assert (target / "keep.txt").read_text() == "keep"
    assert sorted(p.name for p in target.iterdir()) == [
        "keep.txt",
        "new",
        "sub",
        "top.txt",
    ]


def test_one_pass_refused_in_populated_target(tmp_path: Path) -> None:
    """An unsafe member: nothing of the archive stays in an existing target."""
    path = build_archive(
        tmp_path / "a.tar",
        [*SAFE, member("data/up", kind=tarfile.SYMTYPE, linkname="../../etc")],
    )
    target = tmp_path / "target"
    target.mkdir()
    (target / "keep.txt").write_text("keep")
    with pytest.raises(UnsafeArchiveError):
        extract_backup(path, target, None)
    assert sorted(p.name for p in target.iterdir()) == ["keep.txt"]


def test_one_pass_commit_fails(tmp_path: Path) -> None:
    """A file where the archive has a directory: error, what was moved undone."""
    path = build_archive(tmp_path / "a.tar", SAFE)
    target = tmp_path / "target"
    target.mkdir()
    (target / "top.txt").mkdir()  # the archive's top.txt cannot replace it
    (target / "top.txt" / "inside").write_text("x")
    with pytest.raises(Exception, match=r"top\.txt|Is a directory|EISDIR"):
        extract_backup(path, target, None)
    assert sorted(p.name for p in target.iterdir()) == ["top.txt"]


def test_one_pass_verify_still_reads_everything(tmp_path: Path) -> None:
    """Verify and the one-pass extraction agree on what an archive holds."""
    path = build_archive(tmp_path / "a.tar", SAFE)
    result = verify_backup(path, None)
    assert result.members == 4


MTIME = 1_700_000_000


def _attributes(root: Path) -> dict[str, tuple[object, ...]]:
    """Return every path under ``root``: kind, mode, mtime, content or target.

    A directory the archive does not hold has the time it was created.
    """
    found: dict[str, tuple[object, ...]] = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            found[rel] = ("link", str(path.readlink()))
        elif path.is_dir():
            mtime = info.st_mtime_ns if info.st_mtime <= MTIME else "created"
            found[rel] = ("dir", oct(info.st_mode), mtime)
        else:
            found[rel] = (
                "file",
                oct(info.st_mode),
                info.st_mtime_ns,
                info.st_nlink,
                path.read_bytes(),
            )
    return found


def _with(
    name: str,
    data: bytes = b"",
    *,
    kind: bytes = tarfile.REGTYPE,
    mode: int = 0o644,
    mtime: int = MTIME,
    linkname: str = "",
) -> tuple[tarfile.TarInfo, bytes | None]:
    header, content = member(name, data, kind=kind, linkname=linkname)
    header.mode = mode
    header.mtime = mtime
    if kind == tarfile.AREGTYPE:
        header.size = len(data)
        content = data
    return header, content


MODES = [0o777, 0o644, 0o4755, 0o600, 0o444, 0o100, 0o2775, 0o000, 0o655, 0o011]
EQUIVALENT = {
    "modes": [
        _with("data", kind=tarfile.DIRTYPE, mode=0o700),
        *(
            _with(f"data/{kind[0]}-{mode:o}", b"x" * mode, kind=kind, mode=mode)
            for kind in (tarfile.REGTYPE, tarfile.AREGTYPE)
            for mode in MODES
        ),
        *(
            _with(f"data/dir-{mode:o}", kind=tarfile.DIRTYPE, mode=mode, mtime=mode)
            for mode in MODES
        ),
    ],
    "directories not in the archive, files twice": [
        _with("data/a/b/c/deep.txt", b"deep"),
        _with("data/a/b/other.txt", b"other", mtime=5),
        _with("data/a/b", kind=tarfile.DIRTYPE, mtime=7),
        _with("data/a/b/other.txt", b"second", mtime=6),
    ],
    "links, then plain members": [
        _with("data/d", kind=tarfile.DIRTYPE, mtime=10),
        _with("data/d/file.txt", b"file", mode=0o755),
        _with("data/hard", kind=tarfile.LNKTYPE, linkname="data/d/file.txt"),
        _with("data/soft", kind=tarfile.SYMTYPE, linkname="d/file.txt"),
        _with("data/after.txt", b"after", mode=0o600, mtime=11),
        _with("data/d", kind=tarfile.DIRTYPE, mtime=12),
        _with("data/e", kind=tarfile.DIRTYPE, mtime=13),
    ],
}


@pytest.fixture(params=[0o022, 0o077, 0o000], ids=lambda mask: f"umask {mask:03o}")
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    """Run with this umask (files are created with their mode where it allows)."""
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


@pytest.mark.parametrize("members", EQUIVALENT.values(), ids=EQUIVALENT.keys())
def test_extraction_equals_data_filter(
    tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], umask: int
) -> None:
    """What the engine writes is what tarfile's data filter writes."""
    assert extract._umask() == umask
    path = build_archive(tmp_path / "a.tar", members, compress=False)
    extract_backup(path, tmp_path / "ours", None)
    plain = io.BytesIO()
    with tarfile.open(fileobj=plain, mode="w") as tar:
        for header, data in members:
            tar.addfile(header, io.BytesIO(data) if data is not None else None)
    plain.seek(0)
    with tarfile.open(fileobj=plain) as tar:
        tar.extractall(tmp_path / "tarfile", filter="data")
    ours = _attributes(tmp_path / "ours")
    assert ours == _attributes(tmp_path / "tarfile" / "data")
    assert ours  # the archive was not empty


def test_umask_unknown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without /proc the umask is unknown, and every file gets its mode set."""

    def no_proc(*args: object, **kwargs: object) -> None:
        raise FileNotFoundError(2, "No such file or directory")

    monkeypatch.setattr("builtins.open", no_proc)
    assert extract._umask() is None
    monkeypatch.undo()
    monkeypatch.setattr(extract, "_umask", lambda: None)
    members = EQUIVALENT["modes"]
    path = build_archive(tmp_path / "a.tar", members, compress=False)
    extract_backup(path, tmp_path / "ours", None)
    assert (tmp_path / "ours" / "0-655").stat().st_mode & 0o777 == 0o644


def test_plain_writer_hands_over_after_a_link(tmp_path: Path) -> None:
    """Links, and every member after the first link, go to tarfile."""
    writer = extract._PlainWriter(tmp_path)
    regular, directory = tarfile.TarInfo("f"), tarfile.TarInfo("d")
    directory.type = tarfile.DIRTYPE
    sparse = tarfile.TarInfo("s")
    sparse.sparse = [(0, 1)]
    assert writer.takes(regular)
    assert writer.takes(directory)
    assert not writer.takes(sparse)
    for kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
        link = tarfile.TarInfo("l")
        link.type = kind
        assert not extract._PlainWriter(tmp_path).takes(link)
    link = tarfile.TarInfo("l")
    link.type = tarfile.SYMTYPE
    assert not writer.takes(link)
    assert not writer.takes(regular)
    assert not writer.takes(directory)


def test_gzip_reader_slow_consumer_and_trailing_zeros() -> None:
    """A full queue waits for the reader; zero padding after the end is fine."""
    blob = gzip.compress(os.urandom(300_000)) + b"\0" * 100
    with compression.GzipReader(io.BytesIO(blob), chunk=4096, read_ahead=1) as r:
        first = r.read(10)
        time.sleep(0.25)  # the thread waits on the full queue meanwhile
        rest = r.read()
    assert len(first + rest) == 300_000


def test_renice_not_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where priorities cannot be changed, nothing fails."""

    def refuse(*args: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(gil.os, "setpriority", refuse)
    gil.lower_priority()
    with gil.responsive():
        pass


def test_listing_stat_error(location: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An entry that cannot be stat'ed (not gone): the location is unreachable."""
    (location / "a.tar").write_bytes(b"x")
    real = os.scandir

    class Entry:
        def __init__(self, entry: os.DirEntry[str]) -> None:
            self.name = entry.name

        def stat(self, *, follow_symlinks: bool = True) -> os.stat_result:
            raise PermissionError(13, "Permission denied")

    class Listing:
        def __init__(self, path: object) -> None:
            self._iterator = real(path)  # type: ignore[call-overload]

        def __enter__(self) -> object:
            return (Entry(e) for e in self._iterator)

        def __exit__(self, *args: object) -> None:
            self._iterator.close()

    monkeypatch.setattr(listing.os, "scandir", Listing)
    with pytest.raises(LocationUnavailableError, match="Permission denied"):
        BackupScanner().scan(location)


def test_selective_extraction_failures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The two-pass (selective) path maps refusals and write errors too."""
    path = build_archive(tmp_path / "a.tar", [*SAFE, member("data/new/f", b"x")])
    target = tmp_path / "target"
    target.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (target / "new").symlink_to(elsewhere)
    with pytest.raises(UnsafeArchiveError, match="Refused"):
        extract_backup(path, target, None, select=lambda rel: True)
    assert list(elsewhere.iterdir()) == []

    def failing(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(extract, "write_all", failing)
    with pytest.raises(InsufficientSpaceError):
        extract_backup(path, tmp_path / "t2", None, select=lambda rel: True)


def test_one_pass_filter_refusal_after_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Should the check miss something, tarfile's filter still refuses it."""
    path = build_archive(
        tmp_path / "a.tar",
        [*SAFE, member("data/up", kind=tarfile.SYMTYPE, linkname="../../etc")],
    )
    monkeypatch.setattr(extract.SafetyCheck, "finish", lambda self: None)
    target = tmp_path / "target"
    target.mkdir()
    with pytest.raises(UnsafeArchiveError, match="Refused"):
        extract_backup(path, target, None)
    assert list(target.iterdir()) == []


def test_one_pass_failure_in_empty_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An existing empty target is cleaned of files and directories alike."""
    path = build_archive(tmp_path / "a.tar", SAFE)
    calls = []
    real = extract.write_all

    def second_fails(fd: int, data: bytes) -> None:
        calls.append(data)
        if len(calls) > 1:
            raise OSError(5, "Input/output error")
        real(fd, data)

    monkeypatch.setattr(extract, "write_all", second_fails)
    target = tmp_path / "target"
    target.mkdir()
    with pytest.raises(WriteFailedError, match="EIO"):
        extract_backup(path, target, None)
    assert list(target.iterdir()) == []


def test_directory_where_a_file_was_written(tmp_path: Path) -> None:
    """A file, then a directory of the same name: refused as tarfile refuses it."""
    path = build_archive(
        tmp_path / "a.tar",
        [member("data/x", b"file"), member("data/x", kind=tarfile.DIRTYPE)],
    )
    target = tmp_path / "target"
    with pytest.raises(WriteFailedError, match="EEXIST"):
        extract_backup(path, target, None)
    assert list(target.iterdir()) == []
