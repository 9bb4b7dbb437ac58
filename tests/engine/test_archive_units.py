"""Small parts of the engine on their own: excludes, links, securetar adapter."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
import errno
import hashlib
import importlib
import io
import os
from pathlib import Path, PurePosixPath
import re
import stat
import tarfile
from typing import Any

import pytest

from custom_components.backup_offload.engine.archive import (
    contents as snapshot,
    create as archive,
    extract,
    read as archive_read,
)
from custom_components.backup_offload.engine.archive.excludes import (
    HA_EXCLUDES,
    build_matcher,
    normalize_pattern,
)
from custom_components.backup_offload.engine.archive.extract import extract_backup
from custom_components.backup_offload.engine.archive.read import verify_backup
from custom_components.backup_offload.engine.archive.safety import escapes, link_escapes
from custom_components.backup_offload.engine.archive.securetar_compat import (
    NEW_API,
    READ_VERSIONS,
    WRITE_VERSION,
    Prefixed,
    password_to_key,
)
from custom_components.backup_offload.engine.errors import (
    CorruptBackupError,
    IncompleteBackupError,
    LocationUnavailableError,
    WriteFailedError,
)
from tests.mounts import skip_or_fail

from .helpers import (
    backup_json,
    build_archive,
    create,
    flip_bit,
    inner_offset,
    member,
    write,
)

# --- excludes -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "excluded"),
    [
        ("home-assistant.log", True),
        ("sub/home-assistant.log", False),  # "*.log" is anchored at the top
        ("home-assistant.log.1", True),
        ("a/b/__pycache__/x.pyc", True),
        ("__pycache__/x.pyc", True),
        ("__pycache__", False),  # the directory itself stays, as in HA
        ("www/.DS_Store", True),
        ("tts", False),
        ("tts/a.mp3", True),
        ("tts/sub/a.mp3", False),  # "*" stays within one segment
        ("backups/a.tar", True),
        ("backups/a.tar.gz", False),
        ("zigbee.db-shm", True),
        ("configuration.yaml", False),
    ],
)
def test_home_assistant_matching(path: str, excluded: bool) -> None:
    """Patterns match as Home Assistant's full_match on data/<path> does."""
    assert build_matcher(HA_EXCLUDES)(path) is excluded
    reference = any(
        PurePosixPath("data", path).full_match(f"data/{p}") for p in HA_EXCLUDES
    )
    assert reference is excluded


@pytest.mark.parametrize(
    ("pattern", "normal"),
    [("www/", "www"), ("./media/x", "media/x"), (" *.bak ", "*.bak"), ("a/**", "a/**")],
)
def test_normalize_pattern(pattern: str, normal: str) -> None:
    """User-typed patterns become config-relative."""
    assert normalize_pattern(pattern) == normal


# --- link resolution ------------------------------------------------------------


@pytest.mark.parametrize(
    ("rel", "target", "links", "escaping"),
    [
        ("a", "b", {}, False),
        ("a", "/etc", {}, True),
        ("x/a", "../b", {}, False),
        ("x/a", "../../b", {}, True),
        ("a", "l/..", {"l": "sub"}, False),
        ("a", "l/../..", {"l": "sub"}, True),
        ("a", "l/..", {"l": "."}, True),  # ".." of the root itself
        ("a", "l", {"l": "/etc"}, True),
        ("a", "./b/./c", {}, False),
    ],
)
def test_link_escapes(
    rel: str, target: str, links: dict[str, str], escaping: bool
) -> None:
    """Links resolve like the file system would, through other links."""
    assert link_escapes(rel, target, {rel: target, **links}) is escaping


def test_path_through_links() -> None:
    """A path is resolved through its parents' links, not its last part."""
    links = {"out": "/etc", "in": "sub"}
    assert escapes(["out"], links, follow_last=False) is False
    assert escapes(["out", "passwd"], links, follow_last=False) is True
    assert escapes(["in", "x"], links, follow_last=False) is False


# --- securetar adapter ----------------------------------------------------------


def test_password_to_key_is_home_assistants() -> None:
    """The key derivation equals Home Assistant's / securetar's own."""
    if NEW_API:
        securetar = importlib.import_module("securetar")
        reference = securetar.KeyDerivationV2._password_to_key
    else:
        reference = importlib.import_module(
            "homeassistant.backup_restore"
        ).password_to_key
    for password in ("", "secret", "ünïcødé 🔑"):
        assert password_to_key(password) == reference(password)
    key = b"secret"
    for _ in range(100):
        key = hashlib.sha256(key).digest()
    assert password_to_key("secret") == key[:16]


def test_versions() -> None:
    """The installed securetar's versions: write the newest, read all."""
    if NEW_API:
        assert {1, 2, 3} <= READ_VERSIONS
    else:
        assert {1, 2} == READ_VERSIONS
    assert max(READ_VERSIONS) == WRITE_VERSION


def test_prefixed_reads() -> None:
    """The prefix comes first, for any read size."""
    stream = Prefixed(b"abc", io.BytesIO(b"defgh"))
    assert stream.read(2) == b"ab"
    assert stream.read(3) == b"cde"
    assert stream.read(-1) == b"fgh"
    assert Prefixed(b"ab", io.BytesIO(b"cd")).read(-1) == b"abcd"
    assert Prefixed(b"", io.BytesIO(b"cd")).read(5) == b"cd"


# --- the destination file ---------------------------------------------------------


def test_destination_records_first_error(tmp_path: Path) -> None:
    """Seek, flush and read-back errors are recorded and raised."""
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT, 0o600)
    destination = archive._Destination(fd)
    destination.write(b"data")

    class Broken:
        closed = False

        def seek(self, *args: object) -> int:
            raise OSError(errno.EIO, "seek failed")

        def flush(self) -> None:
            raise OSError(errno.ENOSPC, "flush failed")

        def close(self) -> None:
            raise OSError(errno.EIO, "close failed")

    real = destination._file
    destination._file = Broken()  # type: ignore[assignment]
    with pytest.raises(OSError, match="seek failed"):
        destination.seek(0)
    with pytest.raises(OSError, match="flush failed"):
        destination.flush()
    destination.close()
    assert destination.error is not None
    assert destination.error.strerror == "seek failed"
    destination._file = real
    real.close()
    with pytest.raises(OSError, match="Bad file descriptor"):
        destination.digest()


def test_closed_destination_swallows_late_calls(tmp_path: Path) -> None:
    """After a failure, securetar 2025's leftover cleanup cannot raise."""
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT, 0o600)
    destination = archive._Destination(fd)
    destination.close()
    assert destination.write(b"late") == 4
    assert destination.seek(100) == 0
    assert destination.tell() == 0


def test_user_and_group_names() -> None:
    """Unknown ids get empty names in tar headers."""
    names = snapshot._Names()
    assert names.user(0) == "root"
    assert names.group(0) == "root"
    assert names.user(987654) == ""
    assert names.group(987654) == ""


# --- create: the less common paths ------------------------------------------------


def test_minimal_config_dir(tmp_path: Path, location: Path) -> None:
    """configuration.yaml alone is a valid (tiny) backup; progress ends at 1."""
    config = tmp_path / "minimal"
    write(config / "configuration.yaml", "")
    seen: list[float] = []
    result = create(config, location, progress=seen.append)
    assert seen == [1.0]
    out = tmp_path / "out"
    assert extract_backup(location / result.info.file, out, None) == [
        "configuration.yaml"
    ]


@pytest.mark.parametrize("excludes", [[], ["*"], ["**"], ["configuration.yaml"]])
def test_backup_without_configuration_refused(
    tmp_path: Path, location: Path, excludes: list[str]
) -> None:
    """Without configuration.yaml a backup would restore to nothing: refused."""
    config = tmp_path / "config"
    write(config / ".storage/auth", "{}")
    if excludes:
        write(config / "configuration.yaml", "")
    with pytest.raises(IncompleteBackupError, match=r"configuration\.yaml"):
        create(config, location, excludes=excludes)
    assert list(location.iterdir()) == []


def test_missing_location(config: Path, tmp_path: Path) -> None:
    """A location that vanished: WriteFailedError naming ENOENT."""
    with pytest.raises(WriteFailedError, match="ENOENT"):
        create(config, tmp_path / "gone")


def test_callback_error_propagates_and_cleans_up(config: Path, location: Path) -> None:
    """An exception from the progress callback is not hidden; nothing is left."""

    def progress(fraction: float) -> None:
        raise RuntimeError("callback broke")

    with pytest.raises(RuntimeError, match="callback broke"):
        create(config, location, progress=progress)
    assert list(location.iterdir()) == []


def test_final_name_taken_meanwhile(
    config: Path, location: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another writer took the file name during the backup: refused, cleaned."""
    real_plan = snapshot.plan

    def plan(*args: Any, **kwargs: Any) -> snapshot.Plan:
        result = real_plan(*args, **kwargs)
        for name in ("x.tar",):
            write(location / name, "x")
        return result

    monkeypatch.setattr(snapshot, "plan", plan)
    monkeypatch.setattr(archive, "file_name", lambda *args: "x.tar")
    with pytest.raises(WriteFailedError, match="already exists"):
        create(config, location)
    assert sorted(p.name for p in location.iterdir()) == ["x.tar"]


def test_directory_fsync_failure_removes_the_backup(
    config: Path, location: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the rename cannot be made durable, the backup is not kept."""
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.EIO, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(archive.os, "fsync", fsync)
    with pytest.raises(WriteFailedError, match="EIO"):
        create(config, location)
    assert list(location.iterdir()) == []


def test_stale_scratch_cleanup_is_best_effort(tmp_path: Path) -> None:
    """A config dir that cannot be listed does not stop anything here."""
    archive._remove_stale_scratch(tmp_path / "missing")


def test_device_node_is_skipped(config: Path, location: Path) -> None:
    """Device nodes in the config dir are skipped and reported."""
    try:
        os.mknod(config / "null", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    except PermissionError:
        skip_or_fail("mknod is not permitted here (no CAP_MKNOD)")
    result = create(config, location)
    assert result.reasons == {"null": "device node: skipped"}


@contextmanager
def fake_entries(
    monkeypatch: pytest.MonkeyPatch, change: dict[str, str]
) -> Iterator[None]:
    """Make chosen directory entries vanish at stat or at readlink."""
    real = os.scandir

    class Entry:
        def __init__(self, entry: os.DirEntry[str]) -> None:
            self._entry = entry
            self.name = entry.name
            self.path = entry.path

        def stat(self, *, follow_symlinks: bool = True) -> os.stat_result:
            what = change.get(self.name)
            if what == "stat":
                raise FileNotFoundError(self.path)
            info = self._entry.stat(follow_symlinks=follow_symlinks)
            if what == "readlink":
                self.path += ".gone"
                fields = list(info)
                fields[0] = stat.S_IFLNK | 0o777
                return os.stat_result(fields)
            return info

    class Listing:
        def __init__(self, path: Any) -> None:
            if Path(path).name in change and change[Path(path).name] == "scandir":
                raise FileNotFoundError(path)
            self._iterator = real(path)

        def __enter__(self) -> Iterator[Entry]:
            return (Entry(e) for e in self._iterator)

        def __exit__(self, *args: object) -> None:
            self._iterator.close()

    monkeypatch.setattr(snapshot.os, "scandir", Listing)
    yield


def test_entries_vanishing_during_the_walk(
    config: Path, location: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Entries gone between readdir and stat/readlink/scandir are reported."""
    change = {
        "secrets.yaml": "stat",
        "automations.yaml": "readlink",
        "blueprints": "scandir",
    }
    with fake_entries(monkeypatch, change):
        plan = snapshot.plan(
            config,
            is_excluded=lambda rel: False,
            skip_names=lambda name: False,
            include_database=True,
        )
    assert plan.skipped == {
        "secrets.yaml": snapshot.VANISHED,
        "automations.yaml": snapshot.VANISHED,
        "blueprints": snapshot.VANISHED,
    }


# --- reading: the less common paths -------------------------------------------------


def _outer(path: Path, members: list[tuple[str, bytes | None]]) -> Path:
    """Write an outer tar with these (name, data or None for a directory)."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def _inner_tar() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.addfile(member("data", kind=tarfile.DIRTYPE)[0], None)
        info, data = member("data/a.txt", b"a")
        tar.addfile(info, io.BytesIO(data or b""))
    return buffer.getvalue()


def test_supervisor_layout(tmp_path: Path) -> None:
    """Add-on and folder archives are read, not extracted."""
    import json

    inner = _inner_tar()
    path = _outer(
        tmp_path / "sup.tar",
        [
            ("./addon_core_ssh.tar.gz", inner),
            ("./share.tar.gz", inner),
            ("./homeassistant.tar.gz", inner),
            ("./backup.json", json.dumps(backup_json()).encode()),
        ],
    )
    assert verify_backup(path, None).members == 6
    assert extract_backup(path, tmp_path / "out", None) == ["a.txt"]


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        (("./share", None), "unexpected member './share'"),
        (("./notes.txt", b"hello"), "unexpected member './notes.txt'"),
        (
            ("./homeassistant.tar.gz", b"x"),
            "homeassistant.tar.gz is in the archive twice",
        ),
        (
            ("homeassistant.tar.gz", b"x"),
            "homeassistant.tar.gz is in the archive twice",
        ),
        (("./homeassistant.tar", b"x"), "both homeassistant.tar and"),
        (("sub/other.tar.gz", b"x"), "unexpected member"),
    ],
)
def test_outer_layout_refused(
    tmp_path: Path, extra: tuple[str, bytes | None], problem: str
) -> None:
    """Anything beside backup.json and inner archives makes the backup invalid.

    Home Assistant's restore extracts the whole outer tar, links included:
    what is not known-good is not restorable, and not even listed.
    """
    import json

    from custom_components.backup_offload.engine.errors import InvalidBackupError
    from custom_components.backup_offload.engine.metadata import read_backup_info

    path = _outer(
        tmp_path / "odd.tar",
        [
            ("./backup.json", json.dumps(backup_json()).encode()),
            ("./homeassistant.tar.gz", _inner_tar()),
            extra,
        ],
    )
    for read in (read_backup_info, lambda p: verify_backup(p, None)):
        with pytest.raises(InvalidBackupError, match=re.escape(problem)):
            read(path)


def test_damaged_header_after_a_pax_header(tmp_path: Path) -> None:
    """A broken header that tarfile cannot skip over is damage."""
    import json

    path = _outer(
        tmp_path / "pax.tar",
        [
            ("./backup.json", json.dumps(backup_json()).encode()),
            ("x" * 150, b"long name needs a PAX header"),
            ("homeassistant.tar.gz", _inner_tar()),
        ],
    )
    with tarfile.open(path) as tar:
        long_member = tar.getmember("x" * 150)
    header = long_member.offset_data - 512
    data = bytearray(path.read_bytes())
    data[header + 148 : header + 156] = b"garbage!"
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptBackupError, match="damaged"):
        verify_backup(path, None)


def test_many_members_refused(tmp_path: Path) -> None:
    """An outer tar with more members than any backup has is not a backup."""
    from custom_components.backup_offload.engine.errors import InvalidBackupError
    from custom_components.backup_offload.engine.metadata import read_backup_info

    path = _outer(tmp_path / "many.tar", [(f"f{i}.tar.gz", b"x") for i in range(70)])
    with pytest.raises(InvalidBackupError, match="more than 64 members"):
        read_backup_info(path)


def test_open_error_is_unreachable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EACCES/EIO opening the archive: the location is the problem."""
    path = build_archive(tmp_path / "a.tar", [member("data", kind=tarfile.DIRTYPE)])
    real_open = archive_read.open_regular

    def opener(name: Path, **kwargs: Any) -> Any:
        if name == path:
            raise OSError(errno.EIO, "Input/output error")
        return real_open(name, **kwargs)

    monkeypatch.setattr(archive_read, "open_regular", opener)
    with pytest.raises(LocationUnavailableError):
        verify_backup(path, None)


def test_archive_changing_between_passes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Damage appearing after the check pass: typed error, extraction undone.

    Only a chosen hard link to a file that was not chosen makes the
    extraction read the archive twice.
    """
    big = os.urandom(256 * 1024)
    path = build_archive(
        tmp_path / "a.tar",
        [
            member("data", kind=tarfile.DIRTYPE),
            member("data/first", b"first"),
            member("data/hard", kind=tarfile.LNKTYPE, linkname="data/first"),
            member("data/big", big),
        ],
        compress=True,
    )
    real = extract._Selection.close_hardlinks

    def damage_then_continue(self: Any) -> None:
        real(self)
        offset, size = inner_offset(path)
        flip_bit(path, offset + size - 100)

    monkeypatch.setattr(extract._Selection, "close_hardlinks", damage_then_continue)
    target = tmp_path / "target"
    with pytest.raises(CorruptBackupError):
        extract_backup(path, target, None, select=lambda rel: rel != "first")
    assert list(target.iterdir()) == []
