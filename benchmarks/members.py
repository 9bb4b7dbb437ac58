"""A backup of a great many tiny members: verify against a dry run.

Anyone who can write to a share can put such an archive there: a million
members of a few bytes are a few MB. Reading it must take memory that does
not grow with the number of members, and a dry run must cost about what a
verification costs (both read every member once; the dry run compares each
with the configuration directory).

The archive is built once and cached (``members-N/``); the configuration a
dry run compares it with is a small, ordinary one.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
import shutil
import tarfile

BACKUP_ID = "members1"
_VERSION = "1"


def _metadata(count: int) -> bytes:
    return json.dumps(
        {
            "slug": BACKUP_ID,
            "name": f"{count} tiny members",
            "date": "2026-01-01T00:00:00+00:00",
            "type": "partial",
            "version": 2,
            "compressed": True,
            "protected": False,
            "homeassistant": {"version": "2025.4.4", "exclude_database": False},
            "folders": [],
            "addons": [],
            "extra": {},
        }
    ).encode()


def _add(tar: tarfile.TarFile, name: str, data: bytes | None = None) -> None:
    info = tarfile.TarInfo(name)
    info.mtime = 1_767_225_600
    if data is None:
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
        tar.addfile(info)
        return
    info.mode = 0o644
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def members_set(count: int, cache: Path) -> tuple[Path, Path]:
    """Return (the backup's location, a small config dir), built once."""
    from custom_components.backup_offload.engine.archive import securetar_compat

    root = cache / f"members-{count}"
    location, config = root / "location", root / "config"
    marker = root / ".complete"
    if marker.exists() and marker.read_text() == _VERSION:
        return location, config
    shutil.rmtree(root, ignore_errors=True)
    location.mkdir(parents=True)
    (config / ".storage").mkdir(parents=True)
    (config / "configuration.yaml").write_text("homeassistant:\n  name: Home\n")
    (config / "automations.yaml").write_text("[]\n")
    (config / ".storage/core.config_entries").write_text('{"data": {}}')
    raw = _metadata(count)
    with (
        (location / "members.tar").open("wb") as file,
        securetar_compat.open_writer(file, None) as out,
    ):
        info = tarfile.TarInfo("./backup.json")
        info.size = len(raw)
        out.tar.addfile(info, io.BytesIO(raw))
        with out.inner("homeassistant.tar.gz", compress=True) as inner:
            _add(inner, "data")
            _add(inner, "data/configuration.yaml", b"homeassistant:\n")
            for index in range(count):
                if index % 1000 == 0:
                    _add(inner, f"data/d{index // 1000}")
                _add(inner, f"data/d{index // 1000}/f{index}", b"%d\n" % index)
                if index % 1000 == 999:
                    securetar_compat.forget_members(inner)
    marker.write_text(_VERSION)
    return location, config
