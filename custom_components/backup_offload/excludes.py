"""Which files of the config directory a backup leaves out.

The lists are copies of Home Assistant's own (``homeassistant.components.backup
.const``), so a backup made here contains what Home Assistant's would; a test
compares them with the installed Home Assistant. Patterns are matched the way
Home Assistant matches them: ``PurePath("data/<relative path>").full_match(
"data/<pattern>")`` (compiled once, see ``build_matcher``), so ``*`` stays
within one path segment, ``**`` spans segments and a pattern without ``**`` is
anchored at the config directory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
import glob
from pathlib import PurePosixPath
import re
from typing import Final

# Home Assistant's EXCLUDE_FROM_BACKUP (newest release; older releases lack
# ".cache/*", which only leaves a cache directory out).
HA_EXCLUDES: Final = (
    "**/__pycache__/*",
    "**/.DS_Store",
    ".HA_RESTORE",
    "*.db-shm",
    "*.log.*",
    "*.log",
    "backups/*.tar",
    "tmp_backups/*.tar",
    "OZW_Log.txt",
    "tts/*",
    ".cache/*",
)

# Home Assistant's EXCLUDE_DATABASE_FROM_BACKUP: the recorder's SQLite files.
HA_DATABASE_EXCLUDES: Final = (
    "home-assistant_v2.db",
    "home-assistant_v2.db-wal",
)

# The members of the inner archive live under this directory.
ARCHIVE_ROOT: Final = "data"


def normalize_pattern(pattern: str) -> str:
    """Return ``pattern`` relative to the config directory, or raise ValueError.

    Accepts the forms a user types (``www/``, ``./www``); refuses absolute
    patterns and ``..``, which could never match a member under ``data/``.
    """
    text = pattern.strip()
    while text.startswith("./"):
        text = text[2:]
    text = text.rstrip("/")
    if not text:
        raise ValueError(f"Empty exclude pattern: {pattern!r}")
    if text.startswith("/"):
        raise ValueError(f"Exclude pattern must be relative: {pattern!r}")
    if ".." in PurePosixPath(text).parts:
        raise ValueError(f"Exclude pattern must not contain '..': {pattern!r}")
    return text


def exclude_patterns(extra: Iterable[str], *, include_database: bool) -> list[str]:
    """Return every pattern a backup excludes, Home Assistant's first."""
    patterns = list(HA_EXCLUDES)
    if not include_database:
        patterns.extend(HA_DATABASE_EXCLUDES)
    patterns.extend(normalize_pattern(pattern) for pattern in extra)
    return patterns


def _translate(pattern: str) -> str:
    return glob.translate(pattern, recursive=True, include_hidden=True, seps="/")


def build_matcher(patterns: Iterable[str]) -> Callable[[str], bool]:
    """Return a predicate telling whether a path (config-dir relative) is excluded.

    The patterns are compiled once into one regular expression with
    ``glob.translate`` (recursive, hidden files included), which matches
    exactly what ``PurePath.full_match`` matches (a test compares them) at a
    fraction of the cost: the predicate runs for every file of the backup.
    """
    anchored = [f"{ARCHIVE_ROOT}/{pattern}" for pattern in patterns]
    if not anchored:
        return lambda rel_path: False
    regex = re.compile("|".join(f"(?:{_translate(pattern)})" for pattern in anchored))
    prefix = f"{ARCHIVE_ROOT}/"

    def is_excluded(rel_path: str) -> bool:
        return regex.match(prefix + rel_path) is not None

    return is_excluded
