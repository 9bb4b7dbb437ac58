"""Hostile archives on a share: every reader refuses them, and why it must.

Anyone who can write to the share can plant an archive, and Home
Assistant's own restore extracts it with ``filter="fully_trusted"``. Each
archive here is refused by every entry point (listing, verify, dry run,
staging of a full restore, partial restore, the backup agent's download
check). Where Home Assistant is installed, its own ``restore_backup`` is run
on the same archive to show that the attack is real.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
import contextlib
import inspect
import json
import os
from pathlib import Path
import tarfile
import tempfile
import threading

import pytest

from custom_components.backup_offload.engine import transfer as agent_files
from custom_components.backup_offload.engine.archive.read import verify_backup
from custom_components.backup_offload.engine.errors import (
    BackupOffloadError,
    CorruptBackupError,
    InvalidBackupError,
    UnsafeArchiveError,
)
from custom_components.backup_offload.engine.listing import BackupScanner
from custom_components.backup_offload.engine.metadata import (
    BackupInfo,
    parse_backup_json,
    read_backup_info,
)
from custom_components.backup_offload.engine.restore import (
    full as restore_full,
    partial as restore_partial,
    preview as restore_preview,
)

from .helpers import backup_json, inner_tar, member, raw_archive, tree, write

DIR = tarfile.DIRTYPE
SYM = tarfile.SYMTYPE
LNK = tarfile.LNKTYPE
META = json.dumps(backup_json()).encode()


def never_newer(version: str) -> bool:
    return False


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory that holds everything a test writes, the temp dir included.

    Home Assistant's restore unpacks into ``tempfile.gettempdir()``: here a
    directory of the sandbox, so that a write "outside" lands where the test
    sees it.
    """
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    (tmp_path / "outside").mkdir()
    (tmp_path / "share").mkdir()
    config = tmp_path / "config"
    write(config / "configuration.yaml", "homeassistant:\n")
    write(config / ".storage/auth", "{}")
    return tmp_path


def _inner(*members: tarfile.TarInfo | tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    return inner_tar([m if isinstance(m, tuple) else (m, None) for m in members])


def _dir(name: str) -> tarfile.TarInfo:
    return member(name, kind=DIR)[0]


def _link(name: str, target: str, kind: bytes = SYM) -> tarfile.TarInfo:
    return member(name, kind=kind, linkname=target)[0]


SAFE_INNER = (_dir("data"), member("data/configuration.yaml", b"homeassistant:\n"))

# name -> builder(outside directory) -> outer members
CASES: dict[str, Callable[[Path], list[tuple[tarfile.TarInfo, bytes | None]]]] = {
    "inner link outside data": lambda out: [
        member("./backup.json", META),
        member(
            "./homeassistant.tar.gz",
            _inner(
                *SAFE_INNER,
                _link("esc", str(out)),
                member("esc/pwned.txt", b"pwned"),
            ),
        ),
    ],
    "data is a link": lambda out: [
        member("./backup.json", META),
        member(
            "./homeassistant.tar.gz",
            _inner(_link("data", str(out)), member("data/pwned.txt", b"pwned")),
        ),
    ],
    "outer link": lambda out: [
        member("./backup.json", META),
        member("./homeassistant.tar.gz", _inner(*SAFE_INNER)),
        (_link("esc", str(out)), None),
        member("esc/pwned.txt", b"pwned"),
    ],
    "inner archive twice": lambda out: [
        member("./backup.json", META),
        member("./homeassistant.tar.gz", _inner(*SAFE_INNER)),
        member(
            "./homeassistant.tar.gz",
            _inner(
                _dir("data"), member("data/configuration.yaml", b"# not verified\n")
            ),
        ),
    ],
    "inner archive is a link": lambda out: [
        member("./backup.json", META),
        member("./other.tar.gz", _inner(*SAFE_INNER)),
        (_link("./homeassistant.tar.gz", "other.tar.gz"), None),
    ],
    "link loop in data": lambda out: [
        member("./backup.json", META),
        member(
            "./homeassistant.tar.gz",
            _inner(*SAFE_INNER, _dir("data/www"), _link("data/www/again", "..")),
        ),
    ],
    "restore instruction in data": lambda out: [
        member("./backup.json", META),
        member(
            "./homeassistant.tar.gz",
            _inner(*SAFE_INNER, member("data/.HA_RESTORE", b"{}")),
        ),
    ],
}


def _info(path: Path) -> BackupInfo:
    """What ``backup.json`` says, without the listing (which refuses first)."""
    return parse_backup_json(META, file=path.name, size=path.stat().st_size)


Call = Callable[[], object]


def _entry_points(
    path: Path, config: Path, *, outer: bool
) -> Iterator[tuple[str, Call]]:
    """Yield every way a user can read the archive (the listing: outer tar only)."""
    info = _info(path)
    if outer:
        yield "list", lambda: read_backup_info(path)
    yield "verify", lambda: verify_backup(path, None)
    yield "agent download", lambda: agent_files.check_download(path, [])
    for patterns in (None, ["**"]):
        yield (
            f"dry run {patterns}",
            lambda patterns=patterns: restore_preview.preview(
                path,
                info,
                None,
                config_dir=config,
                patterns=patterns,
                restore_database=True,
                is_newer=never_newer,
            ),
        )
    yield (
        "full restore",
        lambda: restore_full.stage(
            path, info, None, config_dir=config, is_newer=never_newer
        ),
    )
    yield (
        "partial restore",
        lambda: restore_partial.extract_selected(
            path, info, None, config_dir=config, patterns=["**"]
        ),
    )


@pytest.mark.parametrize("case", list(CASES))
def test_every_reader_refuses(sandbox: Path, case: str) -> None:
    """Listing, verify, dry run, both restores and the agent all refuse."""
    outside = sandbox / "outside"
    path = raw_archive(sandbox / "share" / "hostile.tar", CASES[case](outside))
    config = sandbox / "config"
    outer = case.startswith(("outer", "inner archive"))
    before = tree(sandbox)
    for name, call in _entry_points(path, config, outer=outer):
        with pytest.raises((InvalidBackupError, UnsafeArchiveError)):
            call()
        assert tree(sandbox) == before, name
    scan = BackupScanner().scan(sandbox / "share")
    assert (scan.backups == []) is outer
    assert ("hostile.tar" in scan.invalid) is outer


@pytest.mark.parametrize(
    "case", ["inner link outside data", "data is a link", "outer link"]
)
def test_home_assistant_follows_them(sandbox: Path, case: str) -> None:
    """The same archives make Home Assistant's restore write outside.

    Home Assistant 2025.x extracts with ``filter="fully_trusted"``; 2026.10
    uses the ``tar`` filter, which refuses these particular paths itself (it
    still lets links that point out of the archive through, and its copy of
    ``data/`` follows them).
    """
    backup_restore = pytest.importorskip("homeassistant.backup_restore")
    if '"fully_trusted"' not in inspect.getsource(backup_restore):
        pytest.skip("this Home Assistant's restore does not extract fully trusted")
    restore_backup = backup_restore.restore_backup

    outside = sandbox / "outside"
    path = raw_archive(sandbox / "share" / "hostile.tar", CASES[case](outside))
    config = sandbox / "config"
    (config / ".HA_RESTORE").write_text(
        json.dumps(
            {
                "path": str(path),
                "password": None,
                "remove_after_restore": False,
                "restore_database": True,
                "restore_homeassistant": True,
            }
        )
    )
    with contextlib.suppress(Exception):  # it may fail after the harm is done
        restore_backup(str(config))
    assert (outside / "pwned.txt").read_bytes() == b"pwned"


def test_fifo_named_like_a_backup_never_blocks(sandbox: Path) -> None:
    """A FIFO as archive or as checksum file: refused at once, not waited on."""
    share = sandbox / "share"
    good = raw_archive(
        share / "good.tar",
        [
            member("./backup.json", META),
            member("./homeassistant.tar.gz", _inner(*SAFE_INNER)),
        ],
    )
    os.mkfifo(share / "fifo.tar")
    os.mkfifo(share / "good.tar.sha256")
    outcome: dict[str, object] = {}

    def read_all() -> None:
        scan = BackupScanner().scan(share)
        outcome["invalid"] = scan.invalid
        for call in (
            lambda: verify_backup(good, None),
            lambda: restore_full.stage(
                good,
                _info(good),
                None,
                config_dir=sandbox / "config",
                is_newer=never_newer,
            ),
        ):
            try:
                call()
            except BackupOffloadError as err:
                outcome.setdefault("errors", []).append(err)  # type: ignore[union-attr]

    reader = threading.Thread(target=read_all, daemon=True)
    reader.start()
    reader.join(20)
    assert not reader.is_alive(), "a FIFO blocked a reader"
    assert "is a FIFO" in outcome["invalid"]["fifo.tar"]  # type: ignore[index]
    errors = outcome["errors"]
    assert [type(err) for err in errors] == [CorruptBackupError] * 2  # type: ignore[union-attr]
    assert all("good.tar.sha256 is a FIFO" in str(err) for err in errors)  # type: ignore[union-attr]
