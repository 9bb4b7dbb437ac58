"""Helpers of the tests: config trees, and the one factory of test archives.

Archives come from here, made two ways: ``create``/``make_backup`` run the
engine's ``create_backup`` with test defaults (a real backup of a config
directory), and ``build_archive``/``raw_archive``/``backup_bytes`` write
archives by hand (any members, hostile ones included). Nothing here needs
Home Assistant: the engine tests run without it.
"""

from __future__ import annotations

from collections.abc import Callable
import hashlib
import io
import json
import os
from pathlib import Path
import sqlite3
import tarfile
from typing import Any

from custom_components.backup_offload.engine.archive import securetar_compat
from custom_components.backup_offload.engine.archive.create import (
    CreateResult,
    create_backup,
)
from custom_components.backup_offload.engine.metadata import BackupInfo

PASSWORD = "correct horse battery staple"

# (password, compress) for every kind of archive the engine writes.
KINDS = {
    "plain": (None, False),
    "gzip": (None, True),
    "encrypted": (PASSWORD, False),
    "encrypted-gzip": (PASSWORD, True),
}


def write(path: Path, data: bytes | str) -> Path:
    """Write ``data`` to ``path``, creating parent directories."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8")
    else:
        path.write_bytes(data)
    return path


def make_database(path: Path, rows: int = 200) -> None:
    """Create a WAL-mode SQLite database like the recorder's."""
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE states (id INTEGER PRIMARY KEY, value TEXT)")
        db.executemany(
            "INSERT INTO states (value) VALUES (?)",
            [(f"state {i}" * 10,) for i in range(rows)],
        )
    db.close()


# Files a realistic config dir has that Home Assistant's list excludes.
EXCLUDED = (
    "home-assistant.log",
    "home-assistant.log.1",
    "zigbee.db-shm",
    "custom_components/demo/__pycache__/module.cpython-313.pyc",
    "www/.DS_Store",
    "tts/cached.mp3",
    "backups/old.tar",
    "tmp_backups/partial.tar",
    "OZW_Log.txt",
    ".HA_RESTORE",
    ".cache/pip/x",
)


def _sqlite_state(rel: str) -> bool:
    """Return whether ``rel`` is a WAL database's -wal or -shm file.

    Any reader of a WAL database creates them when they are missing (the
    engine's snapshot does, as Home Assistant's recorder does).
    """
    return rel.endswith(("-wal", "-shm"))


def tree(root: Path, *, skip: Callable[[str], bool] = _sqlite_state) -> dict:
    """Return rel path -> ("dir"|"link"|"file", detail) for a directory tree."""
    result: dict[str, tuple[str, str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath, name)
            rel = path.relative_to(root).as_posix()
            if skip(rel):
                continue
            if path.is_symlink():
                result[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                result[rel] = ("dir", "")
            else:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                result[rel] = ("file", digest)
    return result


def is_default_excluded(rel: str) -> bool:
    """Return whether Home Assistant's defaults leave ``rel`` out of a backup."""
    parts = rel.split("/")
    return (
        rel in EXCLUDED
        or "__pycache__" in parts[:-1]
        or rel.startswith(("tts/", ".cache/"))
        or rel.endswith(("-wal", "-shm"))
    )


def expected_tree(config_dir: Path) -> dict:
    """What a default backup of ``config_dir`` restores to.

    The recorder database is compared separately (its snapshot is a new file).
    """
    return tree(
        config_dir,
        skip=lambda rel: is_default_excluded(rel) or rel == "home-assistant_v2.db",
    )


def digest(path: Path) -> str:
    """Return a file's SHA-256."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def backup_json(**changes: object) -> dict:
    """Return a minimal valid backup.json, with ``changes`` applied."""
    data: dict = {
        "slug": "abcd1234",
        "name": "Crafted",
        "date": "2026-11-27T10:00:00+01:00",
        "type": "partial",
        "version": 2,
        "compressed": True,
        "protected": False,
        "homeassistant": {"version": "2025.4.4", "exclude_database": False},
        "folders": [],
        "addons": [],
        "extra": {},
    }
    data.update(changes)
    return data


# --- real backups, made by the engine ------------------------------------------

# An older release than any the integration supports: a restore never refuses
# these backups as made by a newer Home Assistant.
HA_VERSION = "2025.1.0"


def backup_options(**overrides: Any) -> dict[str, Any]:
    """Return ``create_backup``'s keyword arguments: test defaults, ``overrides``.

    For a call made elsewhere, e.g. ``worker.run(create_backup, ...)``.
    """
    return {
        "name": "My backup",
        "password": None,
        "include_database": True,
        "excludes": [],
        "compress": True,
        "homeassistant_version": HA_VERSION,
        "instance_id": "instance-1",
        **overrides,
    }


def create(config: Path, location: Path, **overrides: Any) -> CreateResult:
    """Back up ``config`` into ``location`` (``backup_options``); return the result."""
    return create_backup(config, location, **backup_options(**overrides))


def make_backup(
    config: Path, location: Path, **overrides: Any
) -> tuple[BackupInfo, Path]:
    """Back up ``config`` into ``location``; return its info and its path."""
    info = create(config, location, **overrides).info
    return info, location / info.file


# --- archives built by hand -----------------------------------------------------


def member(
    name: str,
    data: bytes = b"",
    *,
    kind: bytes = tarfile.REGTYPE,
    linkname: str = "",
) -> tuple[tarfile.TarInfo, bytes | None]:
    """Return a tar member (header and data) for ``build_archive``."""
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    if kind == tarfile.REGTYPE:
        info.size = len(data)
        return info, data
    return info, None


def build_archive(
    path: Path,
    members: list[tuple[tarfile.TarInfo, bytes | None]],
    *,
    password: str | None = None,
    compress: bool = True,
    metadata: dict | bytes | None = None,
    inner_name: str | None = None,
) -> Path:
    """Write a Home Assistant backup layout with arbitrary inner members.

    Uses the engine's securetar adapter, so the encryption is the installed
    securetar's. ``metadata`` defaults to a valid backup.json.
    """
    if metadata is None:
        metadata = backup_json(compressed=compress, protected=password is not None)
    raw = metadata if isinstance(metadata, bytes) else json.dumps(metadata).encode()
    name = inner_name or ("homeassistant.tar.gz" if compress else "homeassistant.tar")
    with path.open("wb") as file, securetar_compat.open_writer(file, password) as out:
        info = tarfile.TarInfo("./backup.json")
        info.size = len(raw)
        out.tar.addfile(info, io.BytesIO(raw))
        with out.inner(name, compress=compress) as inner:
            for header, data in members:
                inner.addfile(header, io.BytesIO(data) if data is not None else None)
    return path


Member = tuple[tarfile.TarInfo, bytes | None]


def tar_bytes(members: list[Member], *, compress: bool = False) -> bytes:
    """Return a PAX tar (gzip'ed if ``compress``) with exactly these members."""
    buffer = io.BytesIO()
    with tarfile.open(
        fileobj=buffer, mode="w:gz" if compress else "w:", format=tarfile.PAX_FORMAT
    ) as tar:
        for header, data in members:
            tar.addfile(header, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def inner_tar(members: list[Member], *, compress: bool = True) -> bytes:
    """Return an unencrypted inner archive with exactly these members."""
    return tar_bytes(members, compress=compress)


def backup_bytes(
    backup_id: str = "c0ffee01", name: str = "Uploaded", payload: int = 0
) -> bytes:
    """Return a small valid backup, as an upload brings it (not ours, unencrypted).

    Its inner archive holds ``payload`` random bytes; it is named
    ``<name>_2026-01-02_03.04_<backup_id>.tar`` on a location.
    """
    metadata = backup_json(
        slug=backup_id,
        name=name,
        date="2026-01-02T03:04:05+01:00",
        compressed=False,
        extra={"instance_id": "someone", "with_automatic_settings": False},
    )
    inner = tar_bytes([member("data/blob.bin", os.urandom(payload))])
    return tar_bytes(
        [
            member("./backup.json", json.dumps(metadata).encode()),
            member("./homeassistant.tar", inner),
        ]
    )


def raw_archive(path: Path, members: list[Member]) -> Path:
    """Write an outer tar with exactly these members, whatever they are.

    For archives the engine would never write: links, duplicates, extra
    members. ``member`` builds each one; ``inner_tar`` an inner archive.
    """
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for header, data in members:
            tar.addfile(header, io.BytesIO(data) if data is not None else None)
    return path


def outer_members(path: Path) -> list[tarfile.TarInfo]:
    """Return the outer tar's members."""
    with tarfile.open(path, "r:") as tar:
        return tar.getmembers()


def inner_offset(path: Path) -> tuple[int, int]:
    """Return (data offset, size) of the inner archive in the outer tar."""
    for info in outer_members(path):
        if info.name.startswith("homeassistant.tar"):
            return info.offset_data, info.size
    raise AssertionError("no inner archive")


def flip_bit(path: Path, offset: int) -> None:
    """Flip one bit at ``offset``."""
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x10
    path.write_bytes(bytes(data))


def truncate(path: Path, size: int) -> None:
    """Cut ``path`` to ``size`` bytes."""
    with path.open("r+b") as file:
        file.truncate(size)


def _stat_fields(pid: int | str) -> list[str]:
    """Return the fields of ``/proc/<pid>/stat`` after the command name."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def children(pid: int) -> list[int]:
    """Return the ids of the processes whose parent is ``pid`` (Linux)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int(_stat_fields(entry.name)[1])
            except OSError:  # gone meanwhile
                continue
            if parent == pid:
                found.append(int(entry.name))
    return found


def running(pid: int) -> bool:
    """Return whether process ``pid`` still runs (a zombie does not)."""
    try:
        return _stat_fields(pid)[0] != "Z"
    except FileNotFoundError:
        return False
