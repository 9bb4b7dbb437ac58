"""Extracting: unsafe archives are refused whole, selection, failures undone."""

from __future__ import annotations

from collections.abc import Callable
import os
from pathlib import Path
import tarfile

import pytest

from custom_components.backup_offload.engine.archive import extract
from custom_components.backup_offload.engine.archive.extract import extract_backup
from custom_components.backup_offload.engine.archive.read import verify_backup
from custom_components.backup_offload.engine.errors import (
    InsufficientSpaceError,
    UnsafeArchiveError,
    WriteFailedError,
)
from tests import mounts

from .helpers import PASSWORD, build_archive, create, digest, member

DIR = tarfile.DIRTYPE
SYM = tarfile.SYMTYPE
LNK = tarfile.LNKTYPE

SAFE = [
    member("data", kind=DIR),
    member("data/sub", kind=DIR),
    member("data/sub/file.txt", b"content"),
]

UNSAFE = {
    "dot-dot in the name": [member("data/../evil.txt", b"x")],
    "dot-dot outside data": [member("other/../../evil.txt", b"x")],
    "absolute name": [member("/tmp/evil.txt", b"x")],
    "symlink to /etc": [member("data/etc", kind=SYM, linkname="/etc")],
    "symlink climbing out": [member("data/up", kind=SYM, linkname="../../etc")],
    "symlink chain climbing out": [
        member("data/a", kind=SYM, linkname="."),
        member("data/b", kind=SYM, linkname="a/.."),
    ],
    "symlink loop": [
        member("data/x", kind=SYM, linkname="y"),
        member("data/y", kind=SYM, linkname="x"),
    ],
    "file through an escaping symlink": [
        member("data/sub/out", kind=SYM, linkname="../../.."),
        member("data/sub/out/evil.txt", b"x"),
    ],
    "hard link to /etc/passwd": [member("data/h", kind=LNK, linkname="/etc/passwd")],
    "hard link outside data": [member("data/h", kind=LNK, linkname="etc/passwd")],
    "hard link with dot-dot": [
        member("data/h", kind=LNK, linkname="data/../../x"),
    ],
    "hard link before its file": [
        member("data/h", kind=LNK, linkname="data/later"),
        member("data/later", b"x"),
    ],
    "hard link to a missing member": [
        member("data/h", kind=LNK, linkname="data/nothing"),
    ],
    "hard link to a file behind a symlink replacing its directory": [
        member("data/d", kind=DIR),
        member("data/d/f", b"x"),
        member("data/d", kind=SYM, linkname="/etc"),
        member("data/h", kind=LNK, linkname="data/d/f"),
    ],
    "hard link through an escaping symlink": [
        member("data/out", kind=SYM, linkname="/etc"),
        member("data/h", kind=LNK, linkname="data/out/passwd"),
    ],
    "character device": [member("data/null", kind=tarfile.CHRTYPE)],
    "block device": [member("data/disk", kind=tarfile.BLKTYPE)],
    "fifo": [member("data/pipe", kind=tarfile.FIFOTYPE)],
}


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
@pytest.mark.parametrize("case", list(UNSAFE))
def test_unsafe_archive_is_refused_whole(
    tmp_path: Path,
    no_stray_files: Callable[[Path], None],
    case: str,
    encrypted: bool,
) -> None:
    """One unsafe member refuses the archive before anything is written."""
    password = PASSWORD if encrypted else None
    # The safe members come first: they must not be written either.
    path = build_archive(
        tmp_path / "unsafe.tar", [*SAFE, *UNSAFE[case]], password=password
    )
    before = digest(path)
    target = tmp_path / "target"
    with pytest.raises(UnsafeArchiveError):
        extract_backup(path, target, password)
    assert not target.exists()
    with pytest.raises(UnsafeArchiveError):
        verify_backup(path, password)
    assert digest(path) == before
    no_stray_files(path)


def test_problems_are_listed(tmp_path: Path) -> None:
    """The message names the unsafe members (a few, then a count)."""
    members = [member(f"data/../evil{i}", b"x") for i in range(8)]
    path = build_archive(tmp_path / "many.tar", [*SAFE, *members])
    with pytest.raises(UnsafeArchiveError, match=r"evil0.*and 3 more") as caught:
        extract_backup(path, tmp_path / "target", None)
    assert caught.value.placeholders["count"] == "8"


def test_safe_links_are_extracted(tmp_path: Path) -> None:
    """Links inside the target are fine, including hard links."""
    path = build_archive(
        tmp_path / "links.tar",
        [
            *SAFE,
            member("data/link", kind=SYM, linkname="sub/file.txt"),
            member("data/sub/up", kind=SYM, linkname="../link"),
            member("data/hard", kind=LNK, linkname="data/sub/file.txt"),
            member("./data/dotted", b"leading ./ in the name"),
        ],
    )
    target = tmp_path / "target"
    extracted = extract_backup(path, target, None)
    assert extracted == [
        "sub",
        "sub/file.txt",
        "link",
        "sub/up",
        "hard",
        "dotted",
    ]
    assert (target / "link").read_text() == "content"
    assert (target / "sub/up").read_text() == "content"
    assert os.stat(target / "hard").st_ino == os.stat(target / "sub/file.txt").st_ino


def test_members_outside_data_are_not_extracted(tmp_path: Path) -> None:
    """Only the config directory (``data/``) is extracted."""
    path = build_archive(
        tmp_path / "extra.tar",
        [*SAFE, member("other.txt", b"x"), member("addons/x", b"x")],
    )
    target = tmp_path / "target"
    assert extract_backup(path, target, None) == ["sub", "sub/file.txt"]
    assert sorted(p.name for p in target.iterdir()) == ["sub"]


def test_select(config: Path, location: Path, tmp_path: Path) -> None:
    """``select`` picks members by path relative to the config dir."""
    result = create(config, location, name="Select", password=PASSWORD)
    target = tmp_path / "target"
    chosen = {"configuration.yaml", ".storage/auth", "blueprints/a-hardlink.yaml"}
    extracted = extract_backup(
        location / result.info.file, target, PASSWORD, select=chosen.__contains__
    )
    assert extracted == [
        ".storage/auth",
        "blueprints/a-hardlink.yaml",
        "configuration.yaml",
    ]
    assert (target / ".storage/auth").read_text() == (
        config / ".storage/auth"
    ).read_text()
    assert sorted(p.name for p in target.iterdir()) == [
        ".storage",
        "blueprints",
        "configuration.yaml",
    ]


def test_select_hard_link_brings_its_file(tmp_path: Path) -> None:
    """A chosen hard link needs the file it links to: that comes along."""
    path = build_archive(
        tmp_path / "hard.tar",
        [*SAFE, member("data/hard", kind=LNK, linkname="data/sub/file.txt")],
    )
    target = tmp_path / "target"
    extracted = extract_backup(path, target, None, select=lambda rel: rel == "hard")
    assert extracted == ["sub/file.txt", "hard"]
    assert (target / "hard").read_text() == "content"


def test_select_nothing(tmp_path: Path) -> None:
    """Selecting nothing extracts nothing (the archive is still checked)."""
    path = build_archive(tmp_path / "a.tar", SAFE)
    target = tmp_path / "target"
    assert extract_backup(path, target, None, select=lambda rel: False) == []
    assert not target.exists()


def test_into_existing_directory(tmp_path: Path) -> None:
    """Extracting over an existing tree replaces the chosen files only."""
    path = build_archive(tmp_path / "a.tar", SAFE)
    target = tmp_path / "target"
    (target / "sub").mkdir(parents=True)
    (target / "sub/file.txt").write_text("old")
    (target / "keep.txt").write_text("keep")
    extract_backup(path, target, None)
    assert (target / "sub/file.txt").read_text() == "content"
    assert (target / "keep.txt").read_text() == "keep"


def test_symlink_in_target_is_refused_by_the_data_filter(tmp_path: Path) -> None:
    """The second line of defence: tarfile's filter sees the real target."""
    path = build_archive(
        tmp_path / "a.tar",
        [*SAFE, member("data/new/file.txt", b"x"), member("data/zzz", b"x")],
    )
    target = tmp_path / "target"
    target.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (target / "new").symlink_to(elsewhere)
    with pytest.raises(UnsafeArchiveError, match="Refused"):
        extract_backup(path, target, None)
    assert list(elsewhere.iterdir()) == []
    # What the failed pass created is removed again.
    assert sorted(p.name for p in target.iterdir()) == ["new"]


def test_enospc_in_target_is_undone(tmp_path: Path) -> None:
    """A target that fills up: InsufficientSpaceError, created files removed."""
    payload = os.urandom(2 << 20)
    path = build_archive(
        tmp_path / "big.tar",
        [
            *SAFE,
            member("data/sub/deeper", kind=DIR),
            member("data/sub/deeper/big", payload),
        ],
    )
    with mounts.tmpfs(tmp_path / "small", size="1m") as small:
        (small / "existing").mkdir()
        target = small / "existing"
        with pytest.raises(InsufficientSpaceError, match="ENOSPC"):
            extract_backup(path, target, None)
        assert list(target.iterdir()) == []


def test_write_error_in_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Other write errors in the target are WriteFailedError, undone too."""
    path = build_archive(tmp_path / "a.tar", SAFE)
    target = tmp_path / "target"

    def failing(*args: object, **kwargs: object) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(extract, "write_all", failing)
    with pytest.raises(WriteFailedError, match="EIO"):
        extract_backup(path, target, None)
    assert list(target.iterdir()) == []


def test_target_cannot_be_created(tmp_path: Path) -> None:
    """A target below a file cannot be created: WriteFailedError."""
    path = build_archive(tmp_path / "a.tar", SAFE)
    (tmp_path / "file").write_text("x")
    with pytest.raises(WriteFailedError, match="ENOTDIR"):
        extract_backup(path, tmp_path / "file/target", None)


# A chosen hard link whose file is not chosen: the two-pass way.
LINKED = [*SAFE, member("data/hard", kind=LNK, linkname="data/sub/file.txt")]


def _not_the_file(rel: str) -> bool:
    return rel != "sub/file.txt"


def test_two_passes_refuse_a_symlink_in_the_target(tmp_path: Path) -> None:
    """A symlink in the target leading out: refused, nothing written outside."""
    path = build_archive(tmp_path / "a.tar", LINKED)
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "target"
    target.mkdir()
    (target / "sub").symlink_to(outside)
    with pytest.raises(UnsafeArchiveError, match="outside the destination"):
        extract_backup(path, target, None, select=_not_the_file)
    assert list(outside.iterdir()) == []
    assert sorted(p.name for p in target.iterdir()) == ["sub"]


def test_two_passes_write_failure(tmp_path: Path) -> None:
    """A directory where a file goes: WriteFailedError, what was made is undone."""
    path = build_archive(tmp_path / "a.tar", LINKED)
    target = tmp_path / "target"
    (target / "sub" / "file.txt").mkdir(parents=True)
    (target / "sub" / "file.txt" / "keep").write_text("mine")
    with pytest.raises(WriteFailedError, match="EISDIR"):
        extract_backup(path, target, None, select=_not_the_file)
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*")) == [
        "sub",
        "sub/file.txt",
        "sub/file.txt/keep",
    ]
