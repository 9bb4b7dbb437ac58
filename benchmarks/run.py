"""Run every benchmark, print a table, write JSON: ``scripts/bench``.

    scripts/bench                 the full run (data sets cached, ~15-25 min)
    scripts/bench --smoke         a tiny run of every benchmark (seconds)
    scripts/bench --only throughput,listing   some sections
    scripts/bench --repeat 5      repetitions per measurement (median)

Every comparison runs side by side in the same run and is reported as a
ratio, since the absolute times on a shared 2-core machine are noisy. The
data sets live in the cache directory (``--cache``, default
``/var/tmp/backup_offload-bench``); results go to ``benchmarks/results/``
(git-ignored) as JSON. Needs root for the tmpfs and FUSE mounts.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable, Iterator
import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime
import json
import os
from pathlib import Path
import platform
import shutil
import statistics
import subprocess
import sys
import time
from typing import Any

from . import dataset, slowfs
from .slowfs import mount_slowfs

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
SECTIONS = ("throughput", "loop", "memory", "listing", "scale", "members", "copy")
NO_WORKER = "ours, engine in the calling process"
"""The same code without the worker process (as the fallback runs it)."""


@dataclass
class Settings:
    """What one run measures, and how big."""

    cache: Path
    work: Path
    smoke: bool
    repeat: int
    delay: float
    main: dict[str, int]
    huge_bytes: int
    listing_count: int
    scale: tuple[int, ...]
    members: int
    """Tiny members of the archive the ``members`` section reads."""
    copy_bytes: int
    """Payload of the backup the ``copy`` section copies."""


def settings(args: argparse.Namespace) -> Settings:
    if args.smoke:
        return Settings(
            cache=args.cache / "smoke",
            work=args.work,
            smoke=True,
            repeat=1,
            delay=args.delay,
            main={"text_files": 200, "binary_files": 20, "large_bytes": 2 << 20},
            huge_bytes=64 << 20,
            listing_count=20,
            scale=(50, 100, 200),
            members=2_000,
            copy_bytes=8 << 20,
        )
    return Settings(
        cache=args.cache,
        work=args.work,
        smoke=False,
        repeat=args.repeat,
        delay=args.delay,
        main={},
        huge_bytes=2 << 30,
        listing_count=500,
        scale=(1_000, 10_000, 100_000),
        members=1_000_000,
        copy_bytes=300_000_000,
    )


# --- helpers ------------------------------------------------------------------


def _is_root() -> bool:
    return os.geteuid() == 0


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "6g") -> Iterator[Path]:
    """Mount a tmpfs at ``path`` (a plain directory when not root)."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = False
    if _is_root() and not os.path.ismount(path):
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
            check=True,
        )
        mounted = True
    try:
        yield path
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], check=False)


def clear(path: Path) -> Path:
    """Empty a directory (create it if needed)."""
    if path.exists():
        for child in path.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    path.mkdir(parents=True, exist_ok=True)
    return path


def op(
    name: str,
    *args: Path | str,
    password: bool = False,
    sample_memory: bool = False,
    no_worker: bool = False,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run one measured operation in a fresh interpreter (benchmarks.ops)."""
    command = [sys.executable, "-m", "benchmarks.ops", name, *map(str, args)]
    if password:
        command.append("--password")
    if sample_memory:
        command.append("--sample-memory")
    if no_worker:
        command.append("--no-worker")
    done = subprocess.run(
        command,
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{name} failed: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def median_op(
    repeat: int, name: str, make_args: Callable[[], list[Path | str]], **kwargs: Any
) -> dict[str, Any]:
    """Run ``op`` ``repeat`` times (fresh output each time); return the median run."""
    return interleaved(repeat, {name: (name, make_args, kwargs)})[name]


# A measured operation: its benchmarks.ops name, its arguments, op()'s options.
Job = tuple[str, Callable[[], list[Path | str]], dict[str, Any]]


def interleaved(repeat: int, jobs: dict[str, Job]) -> dict[str, dict[str, Any]]:
    """Run every job once per round, ``repeat`` rounds; return each median run.

    Round by round, so that the machine's slow and fast minutes (it is
    shared) fall on every tool alike instead of on whichever ran then.
    """
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label in jobs}
    for _ in range(repeat):
        for label, (name, make_args, kwargs) in jobs.items():
            runs[label].append(op(name, *make_args(), **kwargs))
    results = {}
    for label, done in runs.items():
        done.sort(key=lambda run: run["seconds"])
        results[label] = dict(done[len(done) // 2])
        results[label]["runs"] = [round(run["seconds"], 3) for run in done]
    return results


def loadavg() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def machine() -> dict[str, Any]:
    """Describe the machine and the software versions."""
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = int(line.split()[1]) // 1024
    versions = {}
    from importlib import metadata

    for package in ("homeassistant", "securetar", "isal"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    from custom_components.backup_offload.engine.archive import compression

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_mib": memory,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "compressor": compression.BACKEND.name,
        **versions,
    }


# --- sections -----------------------------------------------------------------


def throughput(s: Settings, data: dataset.DataSet, out: Path) -> dict[str, Any]:
    """Create / verify / extract: ours vs tar and Home Assistant core's writer."""
    src = data.path
    result: dict[str, Any] = {"data": {"files": data.files, "bytes": data.bytes}}

    def fresh(name: str) -> Callable[[], list[Path | str]]:
        """Give each run its own empty directory (the median run's file is used)."""
        runs = iter(range(1000))
        clear(out / name)
        return lambda: [src, clear(out / name / str(next(runs)))]

    tar_file: Path | None = None
    for encrypted in (False, True):
        kind = "encrypted" if encrypted else "plain"
        password = {"password": encrypted}
        creators: dict[str, Job] = {
            "ours": ("ours-create", fresh(f"ours-{kind}"), password),
            "ours (zlib fallback)": (
                "ours-create",
                fresh(f"zlib-{kind}"),
                password | {"env": {"BACKUP_OFFLOAD_COMPRESSOR": "zlib"}},
            ),
            "HA core writer": ("ha-create", fresh(f"ha-{kind}"), password),
        }
        if not encrypted:
            creators["tar -czf"] = ("tar-create", fresh("tar"), {})
        rows = interleaved(s.repeat, creators)
        result[f"create {kind}"] = rows

        archive = Path(rows["ours"]["file"])
        if "tar -czf" in rows:
            tar_file = Path(rows["tar -czf"]["file"])
        verifiers: dict[str, Job] = {
            "ours": ("ours-verify", lambda a=archive: [a], password),
            NO_WORKER: (
                "ours-verify",
                lambda a=archive: [a],
                password | {"no_worker": True},
            ),
        }
        extractors: dict[str, Job] = {
            "ours": (
                "ours-extract",
                lambda k=kind, a=archive: [a, clear(out / f"x-ours-{k}") / "t"],
                password,
            ),
            NO_WORKER: (
                "ours-extract",
                lambda k=kind, a=archive: [a, clear(out / f"x-ours-{k}") / "t"],
                password | {"no_worker": True},
            ),
        }
        if tar_file is not None:
            verifiers["tar -tzf"] = ("tar-list", lambda t=tar_file: [t], {})
            extractors["tar -xzf"] = (
                "tar-extract",
                lambda t=tar_file: [t, clear(out / "x-tar") / "t"],
                {},
            )
        result[f"verify {kind}"] = interleaved(s.repeat, verifiers)
        result[f"extract {kind}"] = interleaved(s.repeat, extractors)
        for name in ("x-ours-plain", "x-ours-encrypted", "x-tar"):
            shutil.rmtree(out / name, ignore_errors=True)
        for name in (f"zlib-{kind}", f"ha-{kind}"):
            shutil.rmtree(out / name, ignore_errors=True)
    return result


def memory(s: Settings, out: Path) -> dict[str, Any]:
    """Peak RSS increase while backing up a tree with one huge file."""
    huge = dataset.huge_set(s.cache, size=s.huge_bytes)
    run = op("ours-create", huge.path, clear(out / "huge"), sample_memory=True)
    shutil.rmtree(out / "huge", ignore_errors=True)
    zlib_run = op(
        "ours-create",
        huge.path,
        clear(out / "huge"),
        sample_memory=True,
        env={"BACKUP_OFFLOAD_COMPRESSOR": "zlib"},
    )
    shutil.rmtree(out / "huge", ignore_errors=True)
    return {
        "file_bytes": s.huge_bytes,
        "content": "compressible JSON-lines text, written for real (not sparse)",
        "ours": _memory_row(run),
        "ours (zlib fallback)": _memory_row(zlib_run),
    }


def _memory_row(run: dict[str, Any]) -> dict[str, Any]:
    def mib(kib: int) -> float:
        return round(kib / 1024, 1)

    return {
        "seconds": round(run["seconds"], 2),
        "caller_increase_mib": mib(run["rss_peak_kib"] - run["rss_before_kib"]),
        "worker_start_rss_mib": mib(run["worker_start_rss_kib"]),
        "worker_peak_rss_mib": mib(run["worker_peak_rss_kib"]),
        "worker_increase_mib": mib(
            run["worker_peak_rss_kib"] - run["worker_start_rss_kib"]
        ),
        "worker_peak_private_mib": mib(run["worker_peak_private_kib"]),
    }


def listing_set(s: Settings) -> Path:
    """Return a directory with ``listing_count`` small real backups (cached)."""
    from custom_components.backup_offload.engine.archive import create as archive

    root = s.cache / f"listing-{s.listing_count}"
    marker = root / ".complete"
    if marker.exists():
        return root
    clear(root)
    config = s.cache / "listing-config"
    clear(config)
    (config / "configuration.yaml").write_text("homeassistant:\n  name: Home\n")
    (config / ".storage").mkdir()
    (config / ".storage/core.config_entries").write_text('{"data": {}}' * 50)
    for index in range(s.listing_count):
        archive.create_backup(
            config,
            root,
            name=f"Backup {index}",
            password=None,
            include_database=True,
            excludes=[],
            compress=True,
            homeassistant_version="2025.4.4",
            instance_id="bench",
            backup_id=f"b{index:05d}",
            date=datetime(2026, 1, 1, tzinfo=UTC).replace(
                minute=index % 60, hour=index // 60 % 24
            ),
        )
    marker.write_text("ok")
    return root


def listing(s: Settings) -> dict[str, Any]:
    """List ``listing_count`` backups: cold and warm, local and slow."""
    from custom_components.backup_offload.engine.listing import BackupScanner

    root = listing_set(s)

    def timed(scanner: BackupScanner, path: Path) -> float:
        start = time.perf_counter()
        found = scanner.scan(path)
        seconds = time.perf_counter() - start
        assert len(found.backups) == s.listing_count, (
            len(found.backups),
            found.invalid,
        )
        return seconds

    local_cold = [timed(BackupScanner(), root) for _ in range(max(3, s.repeat))]
    warm_scanner = BackupScanner()
    timed(warm_scanner, root)
    local_warm = [timed(warm_scanner, root) for _ in range(max(3, s.repeat))]
    slow_cold: list[float] = []
    slow_warm: list[float] = []
    mountpoint = s.work / "slow-listing"
    skipped = slowfs.unavailable()
    for _ in range(0 if skipped else s.repeat):
        with mount_slowfs(root, mountpoint, s.delay) as slow:
            scanner = BackupScanner()
            slow_cold.append(timed(scanner, slow))
            slow_warm.append(timed(scanner, slow))
    return {
        "backups": s.listing_count,
        "delay_ms": s.delay * 1000,
        "slow skipped": skipped,
        "local cold s": _med(local_cold),
        "local warm s": _med(local_warm),
        "slow cold s": _med(slow_cold) if slow_cold else None,
        "slow warm s": _med(slow_warm) if slow_warm else None,
        "runs": {
            "local cold": local_cold,
            "local warm": local_warm,
            "slow cold": slow_cold,
            "slow warm": slow_warm,
        },
    }


def _med(values: list[float]) -> float:
    return round(statistics.median(values), 4)


def _warm(tree: Path) -> None:
    """Read a tree once, so that no tool gets the cold caches alone."""
    with subprocess.Popen(
        ["tar", "-cf", "-", "-C", str(tree), "."], stdout=subprocess.PIPE
    ) as reader:
        assert reader.stdout is not None
        while reader.stdout.read(1 << 20):
            pass


def scale(s: Settings, out: Path) -> dict[str, Any]:
    """Measure create time for growing numbers of small files (linear?)."""
    rows = {}
    for count in s.scale:
        data = dataset.files_set(count, s.cache)
        _warm(data.path)
        runs = interleaved(
            s.repeat,
            {
                "ours": (
                    "ours-create",
                    lambda d=data.path: [d, clear(out / "scale")],
                    {},
                ),
                "tar": (
                    "tar-create",
                    lambda d=data.path: [d, clear(out / "scale-tar")],
                    {},
                ),
            },
        )
        run, tar = runs["ours"], runs["tar"]
        rows[str(count)] = {
            "seconds": round(run["seconds"], 3),
            "us_per_file": round(run["seconds"] / count * 1e6, 1),
            "tar_seconds": round(tar["seconds"], 3),
            "tar_us_per_file": round(tar["seconds"] / count * 1e6, 1),
        }
    shutil.rmtree(out / "scale", ignore_errors=True)
    shutil.rmtree(out / "scale-tar", ignore_errors=True)
    # The time each further file costs, from one size to the next: constant
    # when the curve is linear. (The time per file of the smallest size also
    # carries the worker's start, a fixed cost.)
    previous = None
    for count in s.scale:
        row = rows[str(count)]
        if previous is not None:
            added = count - previous[0]
            row["marginal_us_per_file"] = round(
                (row["seconds"] - previous[1]) / added * 1e6, 1
            )
        previous = (count, row["seconds"])
    first = rows[str(s.scale[1])]["marginal_us_per_file"]
    last = rows[str(s.scale[-1])]["marginal_us_per_file"]
    return {
        "sizes": rows,
        "marginal_growth": round(last / first, 2) if first > 0 else None,
    }


SMALL_MEMBERS = 1_000
"""Members of the baseline backup: what does not grow with the members."""


def members(s: Settings) -> dict[str, Any]:
    """Verify and dry run of a backup of ``members`` tiny members.

    Time (the median), and memory: the most the worker process added in any
    run over a worker that did nothing, and over the same operation on a
    backup of ``SMALL_MEMBERS`` members. The second is what the members
    themselves cost (the first also counts the modules and read-ahead
    buffers every operation has): it must not grow with them.
    """
    from .members import members_set

    location, config = members_set(s.members, s.cache)
    small_location, _ = members_set(min(SMALL_MEMBERS, s.members), s.cache)
    archive = location / "members.tar"
    small = small_location / "members.tar"
    jobs: dict[str, tuple[str, list[Path | str], list[Path | str]]] = {
        "verify": ("ours-verify", [archive], [small]),
        "dry run": ("ours-preview", [archive, config], [small, config]),
    }
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label in jobs}
    baseline: dict[str, list[dict[str, Any]]] = {label: [] for label in jobs}
    for _ in range(s.repeat):  # round by round, like interleaved()
        for label, (name, args, small_args) in jobs.items():
            runs[label].append(op(name, *args))
            baseline[label].append(op(name, *small_args))
    result: dict[str, Any] = {
        "members": s.members,
        "small_members": min(SMALL_MEMBERS, s.members),
        "archive_bytes": archive.stat().st_size,
    }
    for label, done in runs.items():
        added = [
            (run["worker_peak_rss_kib"] - run["worker_start_rss_kib"]) / 1024
            for run in done
        ]
        small_peak = min(run["worker_peak_rss_kib"] for run in baseline[label])
        result[label] = {
            "seconds": _med([run["seconds"] for run in done]),
            "runs": [round(run["seconds"], 2) for run in done],
            "worker_peak_rss_mib": round(
                max(run["worker_peak_rss_kib"] for run in done) / 1024, 1
            ),
            "worker_increase_mib": round(max(added), 1),
            "worker_increase_runs_mib": [round(value, 1) for value in added],
            "small_peak_rss_mib": round(small_peak / 1024, 1),
            "members_add_mib": round(
                (max(run["worker_peak_rss_kib"] for run in done) - small_peak) / 1024,
                1,
            ),
        }
    result["dry_run_over_verify"] = round(
        result["dry run"]["seconds"] / result["verify"]["seconds"], 2
    )
    return result


def loop(s: Settings, data: dataset.DataSet) -> dict[str, Any]:
    """Loop lag in Home Assistant while our actions and core's backup run."""
    from . import loop as loop_bench

    # Home Assistant writes into its config directory (.storage, backups,
    # restored files): it gets a copy, so the cached data set stays as made.
    config = s.work / "loop-config"
    if config.exists():
        shutil.rmtree(config)
    shutil.copytree(data.path, config, symlinks=True)
    backups_dir = config / "backups"
    backups_dir.mkdir(exist_ok=True)
    skipped = slowfs.unavailable()
    with contextlib.ExitStack() as stack:
        locations = {"tmpfs": stack.enter_context(tmpfs(s.work / "loop-tmpfs", "4g"))}
        if not skipped:
            slow_source = clear(s.work / "loop-slow-source")
            locations["slow"] = stack.enter_context(
                mount_slowfs(slow_source, s.work / "loop-slow", s.delay)
            )

        @contextlib.contextmanager
        def core_on_tmpfs() -> Iterator[Path]:
            with tmpfs(backups_dir, "4g") as path:
                yield path

        @contextlib.contextmanager
        def core_on_slow() -> Iterator[Path]:
            source = clear(s.work / "core-slow-source")
            with mount_slowfs(source, backups_dir, s.delay) as path:
                yield path

        stalls = stack.enter_context(loop_bench.MachineStalls(s.work))
        results = asyncio.run(
            loop_bench.run_scenarios(
                config,
                locations,
                {"tmpfs": core_on_tmpfs} | ({} if skipped else {"slow": core_on_slow}),
                restore_paths=["themes/*"],
                repeat=s.repeat,
                slow_repeat=1,
                idle_seconds=1.0 if s.smoke else 20.0,
            )
        )
    results = loop_bench.summarize(results, stalls)
    for scratch in (config, s.work / "loop-slow-source", s.work / "core-slow-source"):
        shutil.rmtree(scratch, ignore_errors=True)
    return {
        "target_ms": loop_bench.TARGET * 1000,
        "delay_ms": s.delay * 1000,
        "slow skipped": skipped,
        "machine stalls unmeasured": stalls.unavailable,
        "operations": results,
    }


def copy_section(s: Settings) -> dict[str, Any]:
    """Time the copy action and cp: a local backup into a tmpfs / ext4 mount."""
    from . import copying

    backup = copying.make_backup(s.cache / f"copy-{s.copy_bytes}.tar", s.copy_bytes)
    config = clear(s.work / "copy-config")
    size_mb = max(64, 3 * backup.stat().st_size // (1 << 20))
    with contextlib.ExitStack() as stack:
        targets = {
            "tmpfs": stack.enter_context(tmpfs(s.work / "copy-tmpfs", f"{size_mb}m"))
        }
        if _is_root():
            targets["ext4 (loop)"] = stack.enter_context(
                copying.loop_ext4(
                    s.work / "copy-ext4", s.work / "copy-ext4.img", size_mb
                )
            )
        result = copying.run_copy(config, backup, targets, s.repeat)
    shutil.rmtree(config, ignore_errors=True)
    return result


# --- report -------------------------------------------------------------------


def _ratio(base: float, ours: float) -> str:
    return f"{base / ours:.2f}x" if ours else "-"


def _row(*cells: object) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def _throughput_table(report: dict[str, Any], add: Callable[[str], None]) -> None:
    t = report["throughput"]
    mb = t["data"]["bytes"] / 1e6
    files = t["data"]["files"]
    repeat = report["settings"]["repeat"]
    add(f"### Throughput ({files} files, {mb:.0f} MB, median of {repeat})\n")
    add(_row("operation", "tool", "seconds", "MB/s", "output MB", "ours faster by"))
    add(_row("---", "---", "---:", "---:", "---:", "---:"))
    sections = [
        f"{op} {kind}"
        for op in ("create", "verify", "extract")
        for kind in ("plain", "encrypted")
    ]
    for section in sections:
        rows = t.get(section, {})
        ours = rows.get("ours", {}).get("seconds", 0)
        for tool, run in rows.items():
            size = run.get("size")
            add(
                _row(
                    section,
                    tool,
                    f"{run['seconds']:.2f}",
                    f"{mb / run['seconds']:.0f}",
                    "" if size is None else f"{size / 1e6:.1f}",
                    "" if tool in ("ours", NO_WORKER) else _ratio(run["seconds"], ours),
                )
            )
    add("")
    notes = []
    for section in sections:
        rows = t.get(section, {})
        if "ours" not in rows or NO_WORKER not in rows:
            continue
        worker, alone = rows["ours"]["seconds"], rows[NO_WORKER]["seconds"]
        reference = next((run for tool, run in rows.items() if "tar" in tool), None)
        against = (
            ""
            if reference is None
            else f"; alone {_ratio(reference['seconds'], alone)} faster than tar"
        )
        notes.append(
            f"{section}: {worker:.2f} s in the worker process, {alone:.2f} s in"
            f" the calling process ({worker - alone:+.2f} s{against})"
        )
    if notes:
        # The difference includes the worker's start, and whatever else
        # changed between the runs (the disk's write-back, for extract).
        add("With and without the worker process:\n")
        add("\n".join(f"- {note}" for note in notes) + "\n")


def _loop_table(report: dict[str, Any], add: Callable[[str], None]) -> None:
    delay = report["loop"]["delay_ms"]
    # Reports written before the target was recorded had this one.
    target = report["loop"].get("target_ms", 10.0)
    add(
        "### Event-loop lag in Home Assistant "
        f"(heartbeat every 5 ms; slow = {delay:.0f} ms per file operation)\n\n"
        f"Target for our operations: no beat more than {target:g} ms late, "
        f'machine stalls not counted ("max without machine stalls ms" <= {target:g}'
        '); the "in a thread" and Home Assistant core rows are for comparison. '
        "Runs of the same operation are combined: p50 and p99 are medians, "
        "max is the worst, beats are added up.\n"
    )
    add(
        _row(
            "operation",
            "seconds",
            "p50 ms",
            "p99 ms",
            "max ms",
            "max without machine stalls ms",
            f"beats > {target:g} ms of all",
            "that beat: running / waiting for a CPU / asleep ms",
            "longest machine stall ms",
            "longest GC on loop ms (full GCs)",
        )
    )
    add(_row("---", *["---:"] * 9))

    def split(worst: dict[str, float] | None) -> str:
        if not worst:
            return "-"
        return " / ".join(f"{value:.1f}" for value in worst.values())

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    for name, row in report["loop"]["operations"].items():
        add(
            _row(
                name,
                f"{row['seconds']:.2f}",
                ms(row["p50_ms"]),
                ms(row["p99_ms"]),
                ms(row["max_ms"]),
                ms(row.get("max_without_machine_ms")),
                f"{row['beats_over_10ms']} of {row['beats']}",
                split(row.get("worst_beat_ms")),
                ms(row.get("machine_stall_max_ms")),
                f"{row['gc_on_loop_max_ms']:.1f} ({row['gc_full_on_loop']})",
            )
        )
    if report["loop"]["slow skipped"]:
        add(f"\nslow file system: {report['loop']['slow skipped']}")
    if report["loop"].get("machine stalls unmeasured"):
        add(f"\nmachine stalls: {report['loop']['machine stalls unmeasured']}")
    add("")


def _memory_table(report: dict[str, Any], add: Callable[[str], None]) -> None:
    m = report["memory"]
    add(f"### Memory (one {m['file_bytes'] / 2**30:.2f} GiB file: {m['content']})\n")
    add(
        _row(
            "writer",
            "seconds",
            "caller RSS increase MiB",
            "worker RSS at start MiB",
            "worker peak RSS MiB",
            "worker RSS increase MiB",
            "worker peak private MiB",
        )
    )
    add(_row("---", "---:", "---:", "---:", "---:", "---:", "---:"))
    for name in ("ours", "ours (zlib fallback)"):
        row = m[name]
        add(
            _row(
                name,
                row["seconds"],
                row["caller_increase_mib"],
                row["worker_start_rss_mib"],
                row["worker_peak_rss_mib"],
                row["worker_increase_mib"],
                row["worker_peak_private_mib"],
            )
        )
    add("")


def _listing_table(report: dict[str, Any], add: Callable[[str], None]) -> None:
    li = report["listing"]
    add(
        f"### Listing {li['backups']} backups "
        f"(slow = {li['delay_ms']:.0f} ms per file operation, FUSE)\n"
    )
    add(_row("case", "seconds"))
    add(_row("---", "---:"))
    for key in ("local cold s", "local warm s", "slow cold s", "slow warm s"):
        value = li[key]
        shown = f"skipped: {li['slow skipped']}" if value is None else f"{value:.3f}"
        add(_row(key[:-2], shown))
    add("")


def _scale_table(report: dict[str, Any], add: Callable[[str], None]) -> None:
    sc = report["scale"]
    add("### Scale: create time by number of files (2 KB each)\n")
    add(
        _row(
            "files",
            "seconds",
            "µs per file",
            "µs per further file",
            "tar -czf s",
            "tar µs per file",
        )
    )
    add(_row("---:", "---:", "---:", "---:", "---:", "---:"))
    for count, row in sc["sizes"].items():
        add(
            _row(
                count,
                row["seconds"],
                row["us_per_file"],
                row.get("marginal_us_per_file", ""),
                row["tar_seconds"],
                row["tar_us_per_file"],
            )
        )
    growth = sc["marginal_growth"]
    add(
        "\nµs per further file, largest step / smallest step: "
        f"{growth} (1.0 = perfectly linear)\n"
    )


def _members_table(report: dict[str, Any], add: Callable[[str], None]) -> None:
    m = report["members"]
    add(
        f"### Many members ({m['members']:,} tiny members, a"
        f" {m['archive_bytes'] / 1e6:.2f} MB backup; median of"
        f" {report['settings']['repeat']})\n"
    )
    add(
        _row(
            "operation",
            "seconds (median)",
            "worker RSS increase MiB (most)",
            "worker peak RSS MiB (most)",
            f"peak with {m['small_members']:,} members MiB",
            "the members add MiB",
        )
    )
    add(_row("---", "---:", "---:", "---:", "---:", "---:"))
    for name in ("verify", "dry run"):
        row = m[name]
        add(
            _row(
                name,
                f"{row['seconds']:.2f}",
                row["worker_increase_mib"],
                row["worker_peak_rss_mib"],
                row["small_peak_rss_mib"],
                row["members_add_mib"],
            )
        )
    add(f"\ndry run / verify: {m['dry_run_over_verify']}x\n")


def _copy_table(report: dict[str, Any], add: Callable[[str], None]) -> None:
    c = report["copy"]
    mb = c["bytes"] / 1e6
    repeat = report["settings"]["repeat"]
    add(
        f"### Copy of a {mb:.0f} MB backup from Home Assistant's local agent"
        f" (median of {repeat})\n"
    )
    add(_row("target", "tool", "seconds", "MB/s", "ours / tool"))
    add(_row("---", "---", "---:", "---:", "---:"))
    for target, rows in c["targets"].items():
        ours = rows["ours (copy action)"]["seconds"]
        for tool, run in rows.items():
            add(
                _row(
                    target,
                    tool,
                    f"{run['seconds']:.2f}",
                    f"{run['mb_s']:.0f}",
                    "" if tool.startswith("ours") else f"{ours / run['seconds']:.2f}",
                )
            )
    add(
        "\nOurs: streamed from the local agent, written, fsync'ed, read back and"
        " compared (SHA-256), then published with its sidecar.\n"
    )


def table(report: dict[str, Any]) -> str:
    """Return the Markdown tables of a report."""
    lines: list[str] = []
    for name, render in (
        ("throughput", _throughput_table),
        ("loop", _loop_table),
        ("memory", _memory_table),
        ("listing", _listing_table),
        ("scale", _scale_table),
        ("members", _members_table),
        ("copy", _copy_table),
    ):
        if name in report:
            render(report, lines.append)
    return "\n".join(lines)


def describe(report: dict[str, Any]) -> str:
    """Return one line describing the machine and the load."""
    m = report["machine"]
    return (
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_mib']} MiB, "
        f"Linux {m['kernel']}, Python {m['python']}, "
        f"Home Assistant {m['homeassistant']}, securetar {m['securetar']}, "
        f"compressor {m['compressor']} (isal {m['isal']}); "
        f"load {report['load_before']} -> {report['load_after']}"
    )


def _section(
    name: str, s: Settings, data: dataset.DataSet | None, out: Path
) -> dict[str, Any] | None:
    """Run one section; None for one that needs the main data set without it."""
    if name == "throughput":
        return None if data is None else throughput(s, data, out)
    if name == "loop":
        return None if data is None else loop(s, data)
    runs: dict[str, Callable[[], dict[str, Any]]] = {
        "memory": lambda: memory(s, out),
        "listing": lambda: listing(s),
        "scale": lambda: scale(s, out),
        "members": lambda: members(s),
        "copy": lambda: copy_section(s),
    }
    return runs[name]()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        prog="scripts/bench", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--smoke", action="store_true", help="tiny data, one repetition"
    )
    parser.add_argument(
        "--only", default=",".join(SECTIONS), help="comma-separated sections"
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--delay", type=float, default=0.02, help="seconds per slow FUSE operation"
    )
    parser.add_argument("--cache", type=Path, default=dataset.DEFAULT_CACHE)
    parser.add_argument(
        "--work",
        type=Path,
        default=Path("/tmp/backup_offload-bench"),  # noqa: S108 - root's mounts
    )
    parser.add_argument(
        "--json", type=Path, default=None, help="where to write the JSON"
    )
    parser.add_argument(
        "--no-slow", action="store_true", help="skip the slow FUSE cases"
    )
    args = parser.parse_args(argv)
    s = settings(args)
    if args.no_slow:
        os.environ["BACKUP_OFFLOAD_BENCH_NO_SLOW"] = "1"
    sections = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    report: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "scripts/bench "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine(),
        "settings": {"smoke": s.smoke, "repeat": s.repeat, "delay_s": s.delay},
        "load_before": loadavg(),
    }
    s.work.mkdir(parents=True, exist_ok=True)
    # Only the sections that read it wait for the main data set to be made.
    needs_data = bool({"throughput", "loop"} & set(sections))
    data = dataset.main_set(s.cache, **s.main) if needs_data else None
    with tmpfs(s.work / "out", "8g") as out:
        for name in sections:
            started = time.perf_counter()
            print(f"== {name}", file=sys.stderr, flush=True)
            if (result := _section(name, s, data, out)) is not None:
                report[name] = result
            report.setdefault("section_seconds", {})[name] = round(
                time.perf_counter() - started, 1
            )
    report["load_after"] = loadavg()
    text = table(report)
    print(describe(report) + "\n")
    print(text)
    target = args.json
    if target is None:
        RESULTS.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        target = RESULTS / f"bench-{'smoke-' if s.smoke else ''}{stamp}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(report, indent=2))
    print(f"JSON: {target}", file=sys.stderr)
    return report


if __name__ == "__main__":
    main()
