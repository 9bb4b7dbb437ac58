"""Backup metadata: ``backup.json``, file names, and reading one archive's info.

``backup.json`` is what Home Assistant and the Supervisor read to list a
backup; its fields follow Home Assistant's core writer. Reading it costs a
few small reads at the start of the archive, never the whole file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
import hashlib
import json
import os
from pathlib import Path, PureWindowsPath
import re
import tarfile
from typing import IO, Any, Final, cast

from .archive.safety import BACKUP_JSON, INNER_SUFFIXES, OuterLayout, is_inner_archive
from .errors import CorruptBackupError, InvalidBackupError, printable
from .fileops import open_regular, read_error
from .validation import is_valid_backup_id

__all__ = ["BACKUP_JSON", "INNER_SUFFIXES", "is_inner_archive"]

BACKUP_JSON_MEMBER: Final = "./backup.json"  # the name Home Assistant writes
INNER_NAME: Final = "homeassistant.tar"
EXTRA_KEY: Final = "backup_offload"
"""Key of this integration's block in ``extra``; its presence marks our backups."""
EXTRA_VERSION: Final = 1
BACKUP_SUFFIX: Final = ".tar"
SIDECAR_SUFFIX: Final = ".sha256"
TEMP_PREFIX: Final = ".backup_offload-"
"""Every temporary file of ours starts with this (archives, sidecars, DB
copies, staged restores); hidden, so no listing shows it."""

# A backup.json is a few hundred bytes; refuse to load a huge one into memory.
_MAX_JSON_BYTES = 1 << 20
_UNSAFE_NAME = re.compile(r"[^\w.-]+")
# The part of a file name that comes from the backup id: a longer id is cut
# and gets a hash of the whole, so that names stay short and distinct.
_ID_PART_MAX = 32
# Dates a backup may carry: what converts to UTC with room to spare, and what
# Home Assistant's timestamp sensor and backup page can show.
_EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
_LATEST = datetime(9000, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class BackupInfo:
    """What a listing shows of one backup archive."""

    backup_id: str
    name: str
    date: str
    """ISO 8601 with time zone (a zone-less date in a foreign backup is UTC)."""
    size: int
    protected: bool
    compressed: bool
    database_included: bool
    homeassistant_version: str | None
    file: str
    """File name in the location root."""
    instance_id: str | None
    """``extra.instance_id``: the Home Assistant instance that made it."""
    made_by_us: bool
    """``extra`` carries this integration's block."""
    extra: dict[str, Any] = field(default_factory=dict)
    """The whole ``extra`` block of ``backup.json``."""

    def is_own(self, instance_id: str) -> bool:
        """Return whether this integration made it on that instance."""
        return self.made_by_us and self.instance_id == instance_id


def clean_name(name: str) -> str:
    """Return a backup name Home Assistant accepts.

    Home Assistant 2026 refuses names that look like a path (it derives file
    names from them), so separators and drive colons become ``-``.
    """
    text = " ".join(name.split()).replace("/", "-").replace("\\", "-")
    if PureWindowsPath(text).name != text:
        text = text.replace(":", "-")
    if text in ("", ".", ".."):
        return "Backup"
    return text


def is_backup_file_name(name: str) -> bool:
    """Return True for a plain, visible ``*.tar`` name without a directory part.

    Hidden names are never backups: they are temporary files (ours start
    with a dot) or not meant to be seen.
    """
    return (
        len(name) > len(BACKUP_SUFFIX)
        and name.endswith(BACKUP_SUFFIX)
        and not name.startswith(".")
        and "/" not in name
        and "\0" not in name
    )


def id_part(backup_id: str) -> str:
    """Return the backup id as it may appear in a file name: safe and short."""
    safe = _UNSAFE_NAME.sub("_", backup_id).strip(".") or "id"
    if len(safe) <= _ID_PART_MAX and safe == backup_id:
        return safe
    digest = hashlib.sha256(backup_id.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{safe[: _ID_PART_MAX - 9]}-{digest[:8]}"


def file_name(name: str, date: datetime, backup_id: str) -> str:
    """Return a readable archive name: name, local date and time, backup id."""
    slug = _UNSAFE_NAME.sub("_", name).strip("._-")[:64].strip("._-") or "backup"
    return f"{slug}_{date:%Y-%m-%d_%H.%M}_{id_part(backup_id)}.tar"


def backup_json(
    *,
    backup_id: str,
    name: str,
    date: datetime,
    compressed: bool,
    protected: bool,
    homeassistant_version: str,
    include_database: bool,
    extra: Mapping[str, Any],
) -> bytes:
    """Return ``backup.json`` as Home Assistant's core writer lays it out."""
    data = {
        "compressed": compressed,
        "date": date.isoformat(),
        "extra": dict(extra),
        "folders": [],
        "addons": [],
        "homeassistant": {
            "exclude_database": not include_database,
            "version": homeassistant_version,
        },
        "name": name,
        "protected": protected,
        "slug": backup_id,
        "type": "partial",
        "version": 2,
    }
    return json.dumps(data, ensure_ascii=False, indent=2).encode()


def parse_date(text: str) -> datetime:
    """Parse an ISO 8601 date; one without a zone is taken as UTC.

    Raises ValueError for a date that is not ISO 8601, or that cannot be
    converted to UTC and shown (``9999-12-31T23:59:59-14:00`` is past the
    last date Python can represent once in UTC).
    """
    date = datetime.fromisoformat(text)
    date = date if date.tzinfo is not None else date.replace(tzinfo=UTC)
    try:
        utc = date.astimezone(UTC)
    except OverflowError as err:
        raise ValueError(f"{text} cannot be converted to UTC") from err
    if not _EARLIEST <= utc < _LATEST:
        raise ValueError(f"{text} is before {_EARLIEST:%Y} or after {_LATEST:%Y}")
    return date


def _printable_json(value: Any) -> Any:
    """Return a JSON value with every string made printable (keys too)."""
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {printable(str(k)): _printable_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_printable_json(item) for item in value]
    return value


def _require(data: Mapping[str, Any], key: str, kind: type) -> Any:
    value = data.get(key)
    if not isinstance(value, kind) or (kind is str and not value):
        raise InvalidBackupError(
            f"backup.json: '{key}' is missing or not a {kind.__name__}", field=key
        )
    return value


def parse_backup_json(raw: bytes, *, file: str, size: int) -> BackupInfo:
    """Return the info in ``backup.json``; InvalidBackupError when unusable."""
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InvalidBackupError(f"backup.json is not valid JSON: {err}") from err
    if not isinstance(data, dict):
        raise InvalidBackupError("backup.json is not a JSON object")
    backup_id = _require(data, "slug", str)
    if not is_valid_backup_id(backup_id):
        # It names files in Home Assistant's restore: only a plain id is safe.
        raise InvalidBackupError(
            f"backup.json: the backup id {backup_id!r} is not a plain id"
            " (letters, digits, - and _)",
            field="slug",
        )
    name = printable(_require(data, "name", str))
    extra = data.get("extra") or {}
    if not isinstance(extra, dict):
        raise InvalidBackupError("backup.json: 'extra' is not an object", field="extra")
    extra = _printable_json(extra)
    # Home Assistant lists Supervisor backups by their request date.
    date_text = extra.get("supervisor.backup_request_date", _require(data, "date", str))
    try:
        date = parse_date(str(date_text))
    except ValueError as err:
        raise InvalidBackupError(
            f"backup.json: 'date' is not a usable ISO 8601 date: {date_text!r} ({err})",
            field="date",
        ) from err
    homeassistant = data.get("homeassistant")
    version: str | None = None
    database_included = False
    if isinstance(homeassistant, dict) and "version" in homeassistant:
        version = printable(str(homeassistant["version"]))
        database_included = not homeassistant.get("exclude_database", False)
    instance_id = extra.get("instance_id")
    return BackupInfo(
        backup_id=backup_id,
        name=name,
        date=date.isoformat(),
        size=size,
        protected=bool(data.get("protected", False)),
        compressed=bool(data.get("compressed", True)),
        database_included=database_included,
        homeassistant_version=version,
        file=file,
        instance_id=instance_id if isinstance(instance_id, str) else None,
        made_by_us=isinstance(extra.get(EXTRA_KEY), dict),
        extra=extra,
    )


def read_backup_info(path: Path) -> BackupInfo:
    """Read the metadata of one archive without reading the whole file.

    Opens the outer tar, checks every member header (``OuterLayout``: only
    ``backup.json`` and inner archives, regular files, each once), reads
    ``backup.json``, and checks that every member's data fits in the file,
    which catches a truncated archive cheaply. Raises InvalidBackupError
    (not a backup, or not one we accept), CorruptBackupError (truncated),
    BackupNotFoundError (no such file), LocationUnavailableError (I/O error).
    """
    try:
        with open_regular(path) as raw:
            size = os.fstat(raw.fileno()).st_size
            return _read_info(raw, path.name, size)
    except OSError as err:
        raise read_error(path, err) from err


def _open_tar(raw: Any, file: str) -> tarfile.TarFile:
    try:
        return tarfile.open(fileobj=raw, mode="r:")
    except tarfile.TarError as err:
        raise InvalidBackupError(f"{file} is not a tar archive", file=file) from err


def _read_info(raw: Any, file: str, size: int) -> BackupInfo:
    raw_json: bytes | None = None
    layout = OuterLayout(file)
    with _open_tar(raw, file) as tar:
        while True:
            try:
                member = tar.next()
            except tarfile.TarError as err:
                raise CorruptBackupError(
                    f"{file} is damaged: {err}", file=file
                ) from err
            if member is None:
                break
            if member.offset_data + member.size > size:
                raise CorruptBackupError(f"{file} is truncated", file=file)
            if layout.add(member) == BACKUP_JSON:
                raw_json = _read_member(tar, member, file)
    if raw_json is None:
        raise InvalidBackupError(f"{file} has no backup.json", file=file)
    info = parse_backup_json(raw_json, file=file, size=size)
    check_inner_names(info, layout.names)
    return info


def check_inner_names(info: BackupInfo, names: set[str]) -> None:
    """Refuse a backup whose Home Assistant archive is not where backup.json says.

    Home Assistant's restore opens ``homeassistant.tar.gz`` or
    ``homeassistant.tar`` as ``compressed`` says; the other name would fail
    at startup.
    """
    if info.homeassistant_version is None:
        return
    expected = INNER_NAME + (".gz" if info.compressed else "")
    if expected not in names:
        found = sorted(name for name in names if name.startswith(INNER_NAME))
        if not found:
            raise CorruptBackupError(
                f"{info.file} has no {INNER_NAME}(.gz): truncated?", file=info.file
            )
        raise InvalidBackupError(
            f"{info.file}: backup.json says compressed={info.compressed}, so Home"
            f" Assistant's restore looks for {expected}, but the backup has"
            f" {found[0]}",
            file=info.file,
        )


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo, file: str) -> bytes:
    if member.size > _MAX_JSON_BYTES:
        raise InvalidBackupError(f"{file}: backup.json is not a small file", file=file)
    # Neither None (a regular file) nor short (its data is in the file).
    reader = cast("IO[bytes]", tar.extractfile(member))
    return reader.read()
