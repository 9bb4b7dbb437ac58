"""One measured operation per process: ``python -m benchmarks.ops OP ARGS``.

Each operation runs in a fresh interpreter so that the compressor choice
(``BACKUP_OFFLOAD_COMPRESSOR``), memory use and imports of one cannot leak
into another. It prints one JSON object: seconds, output size, peak RSS.

Our operations run as the integration runs them: through ``worker.run``, in
a worker process that this one starts (its start is part of the time). The
worker's memory is reported too: its peak RSS (``getrusage``), its RSS when
it has just started (a call that does nothing, first), and, with
``--sample-memory``, the peak of its private memory (sampled from ``/proc``:
what the backup costs the machine, without the shared libraries that Home
Assistant has loaded anyway). Only the memory section samples: the sampler
takes CPU time that the worker, which only runs on what is left over
(``SCHED_IDLE``), would otherwise have, and would slow ours alone.
"""

from __future__ import annotations

import argparse
import contextlib
from datetime import UTC, datetime
import json
import os
from pathlib import Path
import resource
import subprocess
import sys
import threading
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


def _private_kib(pid: int) -> int:
    """Return a process's private memory (USS), 0 if it is gone."""
    try:
        lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
    except OSError:
        return 0
    fields = {line.split(":")[0]: line.split()[1] for line in lines[1:]}
    return int(fields["Private_Clean"]) + int(fields["Private_Dirty"])


class WorkerMemory:
    """Samples the private memory of this process's children meanwhile."""

    def __init__(self) -> None:
        """Sample nothing yet."""
        self.peak_private_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _children(self) -> list[int]:
        me = str(os.getpid())
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    stat = (entry / "stat").read_text()
                    if stat.rsplit(")", 1)[1].split()[1] == me:
                        found.append(int(entry.name))
        return found

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            for pid in self._children():
                self.peak_private_kib = max(self.peak_private_kib, _private_kib(pid))

    def __enter__(self) -> WorkerMemory:
        """Start sampling."""
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop sampling."""
        self._stop.set()
        self._thread.join()


IN_THIS_PROCESS = False
"""``--no-worker``: run the engine in this process, as the fallback does."""


def _engine_call(func: Any, *args: Any, **kwargs: Any) -> Any:
    """Call an engine function as the integration does (in a worker process)."""
    if IN_THIS_PROCESS:
        return func(*args, **kwargs)
    from custom_components.backup_offload.engine import worker

    return worker.run(func, *args, **kwargs)


def ours_create(source: Path, out: Path, password: str | None) -> dict[str, Any]:
    from custom_components.backup_offload.engine.archive import (
        create,
    )

    try:
        from custom_components.backup_offload.engine.archive.compression import BACKEND

        compressor = BACKEND.name
    except ImportError:  # an engine from before compression.py
        compressor = "securetar gzip"
    result = _engine_call(
        create.create_backup,
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
    from custom_components.backup_offload.engine.archive import (
        read,
    )

    result = _engine_call(read.verify_backup, archive_path, password)
    return {"members": result.members}


def ours_extract(
    archive_path: Path, target: Path, password: str | None
) -> dict[str, Any]:
    from custom_components.backup_offload.engine.archive import (
        extract,
    )

    done = _engine_call(extract.extract_backup, archive_path, target, password)
    return {"members": len(done)}


def ours_preview(
    archive_path: Path, config: Path, password: str | None
) -> dict[str, Any]:
    """Run a full restore's dry run of ``archive_path`` against ``config``."""
    import tempfile

    from custom_components.backup_offload.engine import metadata
    from custom_components.backup_offload.engine.restore import (
        checks as restore,
        preview as restore_preview,
    )

    diff = _engine_call(
        restore_preview.preview,
        archive_path,
        metadata.read_backup_info(archive_path),
        password,
        config_dir=config,
        patterns=None,
        restore_database=True,
        is_newer=restore.NewerThan("2099.1.0"),
        temp_dir=Path(tempfile.gettempdir()),
    )
    return {"added": diff.added_count}


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
    parser.add_argument("--sample-memory", action="store_true")
    parser.add_argument("--no-worker", action="store_true")
    options = parser.parse_intermixed_args()
    global IN_THIS_PROCESS  # noqa: PLW0603 - one operation per process
    IN_THIS_PROCESS = options.no_worker
    password = PASSWORD if options.password else None
    args = [Path(arg) for arg in options.args]
    ops = {
        "ours-create": lambda: ours_create(args[0], args[1], password),
        "ours-verify": lambda: ours_verify(args[0], password),
        "ours-extract": lambda: ours_extract(args[0], args[1], password),
        "ours-preview": lambda: ours_preview(args[0], args[1], password),
        "ha-create": lambda: ha_create(args[0], args[1], password),
        "tar-create": lambda: tar_create(args[0], args[1]),
        "tar-extract": lambda: tar_extract(args[0], args[1]),
        "tar-list": lambda: tar_list(args[0]),
    }
    # Import first: the time and memory of imports are not the operation's.
    worker_start_kib = None
    if options.op.startswith("ours"):
        _engine_without_home_assistant()
        from custom_components.backup_offload.engine import listing, worker

        # A worker that does nothing: its peak RSS is that of a fresh worker.
        worker.run(listing.BackupScanner)
        worker_start_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    elif options.op.startswith("ha"):
        from homeassistant.components.backup import manager  # noqa: F401
    before = _rss_kib("VmRSS")
    _reset_peak()
    sampled = WorkerMemory()
    with sampled if options.sample_memory else contextlib.nullcontext():
        start = time.perf_counter()
        result = ops[options.op]()
        seconds = time.perf_counter() - start
    peak = _rss_kib("VmHWM")
    result |= {"seconds": seconds, "rss_before_kib": before, "rss_peak_kib": peak}
    if worker_start_kib is not None:
        result |= {
            "worker_start_rss_kib": worker_start_kib,
            "worker_peak_rss_kib": resource.getrusage(
                resource.RUSAGE_CHILDREN
            ).ru_maxrss,
            "worker_peak_private_kib": sampled.peak_private_kib
            if options.sample_memory
            else None,
        }
    if "file" in result:
        result["size"] = Path(result["file"]).stat().st_size
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
