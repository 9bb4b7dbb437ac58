"""Interoperability with Home Assistant's own backup code (both directions).

Needs Home Assistant (skipped in ``scripts/test-securetar``, which runs the
engine without it). Calls Home Assistant's own reader, password check,
restore and writer, so each test stage proves it against its own version.
"""

from __future__ import annotations

from collections.abc import Callable
import json
import os
from pathlib import Path
import sqlite3
from types import SimpleNamespace
from typing import Any

import pytest

from custom_components.backup_offload.engine.archive.excludes import (
    HA_DATABASE_EXCLUDES,
    HA_EXCLUDES,
)
from custom_components.backup_offload.engine.archive.extract import extract_backup
from custom_components.backup_offload.engine.archive.read import verify_backup
from custom_components.backup_offload.engine.listing import BackupScanner

from .helpers import PASSWORD, digest, is_default_excluded, make_backup

pytest.importorskip("homeassistant", reason="interoperability needs Home Assistant")

from homeassistant import const as ha_const
from homeassistant.backup_restore import restore_backup
from homeassistant.components.backup import const as backup_const
from homeassistant.components.backup.manager import (
    CoreBackupReaderWriter,
)
from homeassistant.components.backup.util import (
    read_backup,
    validate_password,
)

HA_VERSION = ha_const.__version__

# Entries in our list that older Home Assistant releases do not have yet.
NEWER_EXCLUDES = {".cache/*"}


def content_tree(root: Path, skip: Callable[[str], bool]) -> dict[str, str]:
    """Return rel path -> "dir" or file hash, following symlinks.

    Home Assistant's restore copies with ``shutil.copytree``, which turns
    symlinks into what they point to; compare contents, not link-ness.
    """
    result: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        for name in dirnames:
            rel = Path(dirpath, name).relative_to(root).as_posix()
            if not skip(rel):
                result[rel] = "dir"
        for name in filenames:
            path = Path(dirpath, name)
            rel = path.relative_to(root).as_posix()
            if not skip(rel):
                result[rel] = digest(path)
    return result


def test_exclude_lists_match_home_assistant() -> None:
    """Our copy of Home Assistant's exclude lists equals the installed one."""
    installed = set(backup_const.EXCLUDE_FROM_BACKUP)
    assert installed <= set(HA_EXCLUDES)
    assert set(HA_EXCLUDES) - installed <= NEWER_EXCLUDES
    assert tuple(backup_const.EXCLUDE_DATABASE_FROM_BACKUP) == HA_DATABASE_EXCLUDES


def test_home_assistant_reads_ours(
    config: Path, location: Path, kind: tuple[str | None, bool]
) -> None:
    """Home Assistant's read_backup and validate_password accept our archives."""
    password, compress = kind
    _, path = make_backup(
        config,
        location,
        password=password,
        compress=compress,
        homeassistant_version=HA_VERSION,
    )
    backup = read_backup(path)
    ours = BackupScanner().scan(location).backups[0]
    assert backup.backup_id == ours.backup_id
    assert backup.name == ours.name
    assert backup.date == ours.date
    assert backup.size == ours.size
    assert backup.protected is ours.protected
    assert backup.database_included is True
    assert backup.homeassistant_included is True
    assert backup.homeassistant_version == HA_VERSION
    assert backup.extra_metadata == ours.extra
    assert validate_password(path, password) is True
    if password is not None:
        assert validate_password(path, "wrong") is False
        assert validate_password(path, None) is False


def restore_with_home_assistant(path: Path, password: str | None, config: Path) -> None:
    """Run Home Assistant's restore-at-startup on ``config``."""
    config.mkdir()
    (config / ".HA_RESTORE").write_text(
        json.dumps(
            {
                "path": str(path),
                "password": password,
                "remove_after_restore": False,
                "restore_database": True,
                "restore_homeassistant": True,
            }
        )
    )
    assert restore_backup(str(config)) is True
    result = json.loads((config / ".HA_RESTORE_RESULT").read_text())
    assert result["success"] is True, result


def test_home_assistant_restores_ours(
    config: Path, location: Path, tmp_path: Path, kind: tuple[str | None, bool]
) -> None:
    """Home Assistant's restore turns our archive back into the config dir.

    Exactly as it restores its own backup of the same directory; and every
    file of the source (minus the excludes) comes back.
    """
    password, compress = kind
    _, path = make_backup(
        config,
        location,
        password=password,
        compress=compress,
        homeassistant_version=HA_VERSION,
    )
    restored = tmp_path / "restored"
    restore_with_home_assistant(path, password, restored)
    own = tmp_path / "own.tar"
    write_with_home_assistant(config, own, password)
    restored_own = tmp_path / "restored-own"
    restore_with_home_assistant(own, password, restored_own)

    def skip(rel: str) -> bool:
        # The restore keeps "backups" entries out; the database is compared
        # on its own below (ours is a snapshot, not a copy).
        return (
            is_default_excluded(rel)
            or rel.split("/")[0] in ("backups", ".HA_RESTORE_RESULT")
            or rel.startswith("home-assistant_v2.db")
        )

    assert content_tree(restored, skip) == content_tree(restored_own, skip)
    files = {rel for rel, what in content_tree(config, skip).items() if what != "dir"}
    restored_files = content_tree(restored, skip)
    # Home Assistant's restore drops symlinks (its own backups' too).
    links = {"themes/current.yaml", "www/latest/Küche mit Blick.png"}
    for rel in files - links:
        assert restored_files[rel] == digest(config / rel), rel
    with sqlite3.connect(restored / "home-assistant_v2.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert db.execute("SELECT COUNT(*) FROM states").fetchone() == (200,)
    db.close()


def write_with_home_assistant(
    config: Path, path: Path, password: str | None
) -> dict[str, Any]:
    """Write a backup with Home Assistant's own core writer function."""
    backup_data = {
        "compressed": True,
        "date": "2026-11-27T21:15:00.123456+01:00",
        "extra": {"instance_id": "other-instance", "with_automatic_settings": False},
        "homeassistant": {"exclude_database": False, "version": HA_VERSION},
        "name": "Made by Home Assistant",
        "protected": password is not None,
        "slug": "ha000001",
        "type": "partial",
        "version": 2,
    }
    fake_self = SimpleNamespace(
        _hass=SimpleNamespace(config=SimpleNamespace(path=lambda *p: str(config))),
        temp_backup_dir=path.parent,
    )
    CoreBackupReaderWriter._mkdir_and_generate_backup_contents(
        fake_self,  # type: ignore[arg-type]
        backup_data,
        True,
        password,
        path,
    )
    return backup_data


@pytest.mark.parametrize("password", [None, PASSWORD], ids=["plain", "encrypted"])
def test_we_read_home_assistants(
    config: Path, location: Path, tmp_path: Path, password: str | None
) -> None:
    """An archive Home Assistant wrote is listed, verified and extracted."""
    path = location / "ha000001.tar"
    data = write_with_home_assistant(config, path, password)
    listed = BackupScanner().scan(location)
    assert listed.invalid == {}
    (info,) = listed.backups
    assert info.backup_id == data["slug"]
    assert info.made_by_us is False
    assert info.is_own("other-instance") is False
    assert info.protected is (password is not None)
    result = verify_backup(path, password)
    assert result.checksum is None  # Home Assistant writes no sidecar
    assert result.members > 20
    target = tmp_path / "out"
    extract_backup(path, target, password)

    def skip(rel: str) -> bool:
        return is_default_excluded(rel) or rel.startswith("home-assistant_v2.db-")

    assert content_tree(target, skip) == content_tree(config, skip)
    # Home Assistant stores hard links as such; both names are restored.
    assert (
        os.stat(target / "blueprints/a.yaml").st_ino
        == os.stat(target / "blueprints/a-hardlink.yaml").st_ino
    )
