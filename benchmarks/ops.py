"""One measured operation per process: ``python -m benchmarks.ops OP ARGS``.

Each operation runs in a fresh interpreter so that the compressor choice
(``BACKUP_OFFLOAD_COMPRESSOR``), memory use and imports of one cannot leak
into another. It prints one JSON object: seconds, output size, peak RSS.
"""

from __future__ import annotations

import argparse
import contextlib
from datetime import UTC, datetime
import json
from pathlib import Path
import subprocess
import sys
import time
from types import ModuleType, SimpleNamespace
from typing import Any

PASSWORD = "benchmark password"  # noqa: S105 - test data
REPO = Path(__file__).resolve().parents[1]


def _engine_without_home_assistant() -> None:
    """Make the engine importable without running the integration's __init__.

    The engine does not need Home Assistant; importing it would only add a
    second of start-up and ~100 MB to every measured process.
    """
    root = REPO / "custom_components"
    for name, path in (
        ("custom_components", root),
        ("custom_components.backup_offload", root / "backup_offload"),
    ):
        if name not in sys.modules:
            module = ModuleType(name)
            module.__path__ = [str(path)]
            sys.modules[name] = module


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _reset_peak() -> None:
    """Reset VmHWM (Linux >= 4.0) so the peak covers the operation only."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def ours_create(source: Path, out: Path, password: str | None) -> dict[str, Any]:
    from custom_components.backup_offload import archive

    try:
        from custom_components.backup_offload.compression import BACKEND

        compressor = BACKEND.name
    except ImportError:  # an engine from before compression.py
        compressor = "securetar gzip"
    result = archive.create_backup(
        source,
        out,
        name="bench",
        password=password,
        include_database=True,
        excludes=[],
        compress=True,
        homeassistant_version="2025.4.4",
        instance_id="bench",
    )
    return {"file": str(out / result.info.file), "compressor": compressor}


def ours_verify(archive_path: Path, password: str | None) -> dict[str, Any]:
    from custom_components.backup_offload import archive

    result = archive.verify_backup(archive_path, password)
    return {"members": result.members}


def ours_extract(
    archive_path: Path, target: Path, password: str | None
) -> dict[str, Any]:
    from custom_components.backup_offload import archive

    done = archive.extract_backup(archive_path, target, password)
    return {"members": len(done)}


def ha_create(source: Path, out: Path, password: str | None) -> dict[str, Any]:
    """Home Assistant core's own writer (its manager's method, unchanged)."""
    from homeassistant.components.backup.manager import CoreBackupReaderWriter

    config = SimpleNamespace(path=lambda *parts: str(Path(source, *parts)))
    stub = SimpleNamespace(_hass=SimpleNamespace(config=config), temp_backup_dir=out)
    backup_data = {
        "compressed": True,
        "date": datetime.now(UTC).isoformat(),
        "extra": {},
        "folders": [],
        "homeassistant": {"exclude_database": False, "version": "2025.4.4"},
        "name": "bench",
        "protected": password is not None,
        "slug": "hacore01",
        "type": "partial",
        "version": 2,
    }
    path, _ = CoreBackupReaderWriter._mkdir_and_generate_backup_contents(
        stub, backup_data, True, password, out / "hacore01.tar"
    )
    return {"file": str(path)}


def tar_create(source: Path, out: Path) -> dict[str, Any]:
    target = out / "tar.tar.gz"
    subprocess.run(["tar", "-czf", str(target), "-C", str(source), "."], check=True)
    return {"file": str(target)}


def tar_extract(archive_path: Path, target: Path) -> dict[str, Any]:
    target.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-xzf", str(archive_path), "-C", str(target)], check=True)
    return {}


def tar_list(archive_path: Path) -> dict[str, Any]:
    subprocess.run(
        ["tar", "-tzf", str(archive_path)], check=True, stdout=subprocess.DEVNULL
    )
    return {}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("op")
    parser.add_argument("args", nargs="*")
    parser.add_argument("--password", action="store_true")
    options = parser.parse_intermixed_args()
    password = PASSWORD if options.password else None
    args = [Path(arg) for arg in options.args]
    ops = {
        "ours-create": lambda: ours_create(args[0], args[1], password),
        "ours-verify": lambda: ours_verify(args[0], password),
        "ours-extract": lambda: ours_extract(args[0], args[1], password),
        "ha-create": lambda: ha_create(args[0], args[1], password),
        "tar-create": lambda: tar_create(args[0], args[1]),
        "tar-extract": lambda: tar_extract(args[0], args[1]),
        "tar-list": lambda: tar_list(args[0]),
    }
    # Import first: the time and memory of imports are not the operation's.
    if options.op.startswith("ours"):
        _engine_without_home_assistant()
        from custom_components.backup_offload import archive  # noqa: F401
    elif options.op.startswith("ha"):
        from homeassistant.components.backup import manager  # noqa: F401
    before = _rss_kib("VmRSS")
    _reset_peak()
    start = time.perf_counter()
    result = ops[options.op]()
    seconds = time.perf_counter() - start
    peak = _rss_kib("VmHWM")
    result |= {"seconds": seconds, "rss_before_kib": before, "rss_peak_kib": peak}
    if "file" in result:
        result["size"] = Path(result["file"]).stat().st_size
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
