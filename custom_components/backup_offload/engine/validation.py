"""Checks of user input shared by the config flow and the actions."""

from __future__ import annotations

import fnmatch
from pathlib import PurePosixPath
import re
from typing import Final

from .archive.excludes import build_matcher, normalize_pattern

ESSENTIAL_PATHS: Final = (
    "configuration.yaml",
    ".storage",
    ".storage/auth",
    ".storage/core.config_entries",
    ".storage/core.device_registry",
    ".storage/core.entity_registry",
)
"""What Home Assistant cannot start without: no exclude may leave it out."""

# Home Assistant's and the Supervisor's backup ids are short slugs; anything
# with a path separator, a dot, a control character or any other character
# is refused before it gets near the file system: Home Assistant's own
# restore names a file after the id. Longer ids (other tools) are accepted;
# file names carry a shortened form (``metadata.id_part``).
_BACKUP_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,511}")


def is_valid_backup_id(backup_id: str) -> bool:
    """Return True for a backup id that can only name a backup."""
    return _BACKUP_ID.fullmatch(backup_id) is not None


def is_valid_glob(pattern: str) -> bool:
    """Return True for a glob relative to the config directory.

    Absolute patterns, `..` and empty patterns could only match outside the
    config directory, or everything; a pattern that does not compile is a
    typo.
    """
    if not pattern.strip() or pattern.startswith("/") or "\x00" in pattern:
        return False
    if ".." in PurePosixPath(pattern).parts:
        return False
    try:
        re.compile(fnmatch.translate(pattern))
    except re.error:
        return False
    return True


def essential_excluded_by(pattern: str) -> str | None:
    """Return what Home Assistant needs that ``pattern`` leaves out, or None.

    ``**``, ``*``, ``*.yaml`` or ``.storage/*`` as an exclude would make
    backups that restore to an empty configuration: they are refused.
    ``pattern`` must be valid (``is_valid_glob``).
    """
    matches = build_matcher([normalize_pattern(pattern)])
    return next((path for path in ESSENTIAL_PATHS if matches(path)), None)


def exclude_problem(pattern: str) -> tuple[str, dict[str, str]] | None:
    """Return why an exclude pattern is refused (error key, placeholders), or None."""
    if not is_valid_glob(pattern):
        return "invalid_glob", {"pattern": pattern}
    if (essential := essential_excluded_by(pattern)) is not None:
        return "excludes_essential", {"pattern": pattern, "path": essential}
    return None
