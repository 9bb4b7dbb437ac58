"""After a restart: what Home Assistant's restore at startup did, and cleaning up."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
import json
import os
from pathlib import Path
import shutil
from typing import Any

from ..metadata import TEMP_PREFIX
from .checks import MARKER_NAME, PARTIAL_PREFIX, STAGED_PREFIX, STAGING_DIR


@dataclass(frozen=True, slots=True, kw_only=True)
class RestoreResult:
    """What Home Assistant's restore at startup reported."""

    success: bool
    error: str | None = None
    error_type: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """What ``collect_outcome`` found after a start of Home Assistant."""

    result: RestoreResult | None
    """Home Assistant's restore result, None when there is none."""
    marker: dict[str, Any] | None
    """Our record of the restore; still there when it did not complete."""
    pending: bool
    """A restore instruction is still waiting for the next start."""
    removed: list[str] = field(default_factory=list)
    """Leftovers of ours that were removed (relative to the config dir)."""


def _read_result(path: Path) -> RestoreResult | None:
    """Read and remove Home Assistant's restore result file, as it does."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as err:
        return RestoreResult(
            success=False,
            error=f"{path.name} could not be read: {err}",
            error_type=type(err).__name__,
        )
    finally:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)
    try:
        data = json.loads(raw)
        success = data["success"]
        if not isinstance(success, bool):
            raise TypeError("success is not a boolean")  # noqa: TRY301
    except (ValueError, KeyError, TypeError) as err:
        return RestoreResult(
            success=False,
            error=f"{path.name} could not be read: {err}",
            error_type=type(err).__name__,
        )
    error = data.get("error")
    error_type = data.get("error_type")
    return RestoreResult(
        success=success,
        error=str(error) if error is not None else None,
        error_type=str(error_type) if error_type is not None else None,
    )


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"unreadable": True}
    return data if isinstance(data, dict) else {"unreadable": True}


def _remove_leftovers(config_dir: Path, keep: set[Path]) -> list[str]:
    """Remove what an interrupted or finished restore of ours left behind."""
    removed: list[str] = []
    staging = config_dir / STAGING_DIR
    candidates: list[Path] = []
    with contextlib.suppress(OSError), os.scandir(staging) as entries:
        candidates.extend(
            Path(entry.path)
            for entry in entries
            if entry.is_file(follow_symlinks=False)
            and (
                entry.name.startswith(TEMP_PREFIX)
                or (
                    entry.name.startswith(STAGED_PREFIX) and entry.name.endswith(".tar")
                )
            )
        )
    for path in candidates:
        if path in keep:
            continue
        with contextlib.suppress(OSError):
            path.unlink()
            removed.append(path.relative_to(config_dir).as_posix())
    with contextlib.suppress(OSError), os.scandir(config_dir) as entries:
        temp_dirs = [
            Path(entry.path)
            for entry in entries
            if entry.name.startswith(PARTIAL_PREFIX)
            and entry.is_dir(follow_symlinks=False)
        ]
    for path in temp_dirs:
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path.name)
    return sorted(removed)


def collect_outcome(
    config_dir: Path,
    *,
    instruction_name: str,
    result_name: str,
    known: RestoreResult | None = None,
) -> Outcome:
    """Find out what the last restore at startup did, once; clean up after it.

    Home Assistant writes ``result_name`` after a restore attempt; its
    backup integration (set up before us) reads and removes it, and then
    ``known`` carries what it found. Our marker survives exactly when the
    restore stopped before it emptied the config directory, so a marker
    without a result means the restore did not complete either. The result
    file and the marker are consumed, so a result is reported once; staged
    archives and temporary files of ours are removed unless a restore is
    still pending.
    """
    instruction = config_dir / instruction_name
    pending = _read_json(instruction)
    result = _read_result(config_dir / result_name) or known
    if pending is not None:
        staged = pending.get("path")
        keep = {Path(staged)} if isinstance(staged, str) else set()
        keep.add(config_dir / STAGING_DIR / MARKER_NAME)
        return Outcome(
            result=result,
            marker=None,
            pending=True,
            removed=_remove_leftovers(config_dir, keep),
        )
    marker = _read_json(config_dir / STAGING_DIR / MARKER_NAME)
    return Outcome(
        result=result,
        marker=marker,
        pending=False,
        removed=_remove_leftovers(config_dir, set()),
    )
