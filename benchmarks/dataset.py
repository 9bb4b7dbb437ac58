"""Generate the benchmark data sets: realistic Home Assistant config trees.

Everything is deterministic (seeded) and cached under the cache directory
(default ``/var/tmp/backup_offload-bench``), outside the repository; a data
set is made once and reused while its ``.complete`` marker matches.

- ``main``: >= 300 MB, >= 10,000 files: compressible text (YAML, JSON,
  Python, recorder-like JSON lines), incompressible binary (images), and one
  large file (a 160 MB JSON-lines history).
- ``files-N``: N small text files (the scale curve).
- ``huge``: one 2 GiB file of compressible text (the memory benchmark),
  written for real (not sparse), so it compresses like real data would.
"""

from __future__ import annotations

from dataclasses import dataclass
import json
import os
from pathlib import Path
import random
import shutil

DEFAULT_CACHE = Path(
    os.environ.get(
        "BACKUP_OFFLOAD_BENCH_CACHE",
        "/var/tmp/backup_offload-bench",  # noqa: S108 - a cache, root's own
    )
)
_VERSION = "3"
_WORDS = [
    "sensor",
    "light",
    "switch",
    "automation",
    "trigger",
    "condition",
    "action",
    "entity_id",
    "state",
    "attributes",
    "friendly_name",
    "unit_of_measurement",
    "device_class",
    "temperature",
    "humidity",
    "power",
    "energy",
    "kitchen",
    "living_room",
    "bedroom",
    "hallway",
    "garage",
    "garden",
    "platform",
    "service",
    "data",
    "target",
    "area_id",
    "brightness",
    "color_temp",
    "transition",
    "mode",
    "single",
    "restart",
    "queued",
    "parallel",
    "alias",
    "description",
    "icon",
    "mdi:lightbulb",
    "true",
    "false",
    "null",
    "on",
    "off",
    "unavailable",
    "unknown",
    "template",
    "value_json",
    "last_changed",
    "last_updated",
    "context",
    "user_id",
    "parent_id",
    "zigbee",
    "zwave",
    "mqtt",
    "homeassistant",
    "customize",
    "packages",
    "input_boolean",
    "input_number",
    "script",
    "scene",
]


@dataclass(frozen=True)
class DataSet:
    """A generated tree and what it holds."""

    path: Path
    files: int
    bytes: int


def _text_pool(rng: random.Random, size: int) -> bytes:
    """Return ``size`` bytes of YAML/JSON-like text."""
    lines = []
    total = 0
    while total < size:
        kind = rng.random()
        if kind < 0.4:
            line = (
                "  " * rng.randint(0, 4) + f"{rng.choice(_WORDS)}: {rng.choice(_WORDS)}"
            )
        elif kind < 0.7:
            domain, name = rng.choice(_WORDS), rng.choice(_WORDS)
            month, day = rng.randint(1, 12), rng.randint(1, 28)
            hour, minute = rng.randint(0, 23), rng.randint(0, 59)
            line = json.dumps(
                {
                    "entity_id": f"{domain}.{name}_{rng.randint(1, 99)}",
                    "state": f"{rng.uniform(-20, 40):.2f}",
                    "last_changed": f"2026-{month:02d}-{day:02d}T{hour:02d}:"
                    f"{minute:02d}:{rng.randint(0, 59):02d}+00:00",
                }
            )
        else:
            line = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 12)))
        lines.append(line)
        total += len(line) + 1
    return ("\n".join(lines) + "\n").encode()[:size]


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _slice(rng: random.Random, pool: bytes, size: int) -> bytes:
    start = rng.randrange(0, len(pool) - size) if size < len(pool) else 0
    return pool[start : start + size]


def _complete(root: Path, tag: str) -> DataSet | None:
    marker = root / ".complete"
    try:
        info = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    if info.get("tag") != tag:
        return None
    return DataSet(root, info["files"], info["bytes"])


def _finish(root: Path, tag: str, files: int, size: int) -> DataSet:
    (root / ".complete").write_text(
        json.dumps({"tag": tag, "files": files, "bytes": size})
    )
    return DataSet(root, files, size)


def _fresh(root: Path) -> None:
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)


def main_set(
    cache: Path = DEFAULT_CACHE,
    *,
    text_files: int = 10_000,
    binary_files: int = 1_200,
    large_bytes: int = 160 << 20,
    name: str = "main",
) -> DataSet:
    """Return the main data set (made on first use)."""
    tag = f"{_VERSION}-{text_files}-{binary_files}-{large_bytes}"
    root = cache / name
    done = _complete(root, tag)
    if done is not None:
        return done
    _fresh(root)
    rng = random.Random(2026)  # noqa: S311 - test data
    pool = _text_pool(rng, 8 << 20)
    files = 0
    size = 0
    _write(root / "configuration.yaml", b"homeassistant:\n  name: Home\n" + pool[:4000])
    folders = [".storage", "blueprints/automation", "themes", "packages", "esphome"]
    folders += [f"custom_components/comp{i:02d}" for i in range(40)]
    folders += [f"custom_components/comp{i:02d}/translations" for i in range(40)]
    suffixes = (".yaml", ".json", ".py", ".txt")
    for index in range(text_files):
        folder = folders[index % len(folders)]
        length = min(int(rng.lognormvariate(8.3, 1.0)) + 100, 200_000)
        data = _slice(rng, pool, length)
        _write(root / folder / f"file{index:05d}{suffixes[index % 4]}", data)
        files += 1
        size += len(data)
    for index in range(binary_files):
        length = rng.randint(16_000, 150_000)
        data = os.urandom(length)
        _write(root / "www" / f"album{index % 30:02d}" / f"photo{index:05d}.jpg", data)
        files += 1
        size += len(data)
    large = root / "history" / "states.jsonl"
    large.parent.mkdir(parents=True, exist_ok=True)
    with large.open("wb") as out:
        left = large_bytes
        while left > 0:
            data = _slice(rng, pool, min(left, 256 * 1024))
            out.write(data)
            left -= len(data)
    files += 1
    size += large_bytes
    return _finish(root, tag, files, size)


def files_set(count: int, cache: Path = DEFAULT_CACHE, *, size: int = 2_000) -> DataSet:
    """Return a tree of ``count`` small text files (100 per directory)."""
    tag = f"{_VERSION}-{count}-{size}"
    root = cache / f"files-{count}"
    done = _complete(root, tag)
    if done is not None:
        return done
    _fresh(root)
    rng = random.Random(count)  # noqa: S311 - test data
    pool = _text_pool(rng, 1 << 20)
    for index in range(count):
        _write(
            root / f"d{index // 100:04d}" / f"f{index:06d}.yaml",
            _slice(rng, pool, size),
        )
    # A backup without it is refused: nothing Home Assistant could start from.
    _write(root / "configuration.yaml", b"homeassistant:\n")
    return _finish(root, tag, count, count * size)


def huge_set(cache: Path = DEFAULT_CACHE, *, size: int = 2 << 30) -> DataSet:
    """Return a tree with one ``size``-byte file of compressible text."""
    tag = f"{_VERSION}-{size}"
    root = cache / f"huge-{size}"
    done = _complete(root, tag)
    if done is not None:
        return done
    _fresh(root)
    rng = random.Random(7)  # noqa: S311 - test data
    pool = _text_pool(rng, 16 << 20)
    _write(root / "configuration.yaml", b"homeassistant:\n")
    (root / "media").mkdir()
    with (root / "media" / "huge.jsonl").open("wb") as out:
        left = size
        while left > 0:
            data = _slice(rng, pool, min(left, 1 << 20))
            out.write(data)
            left -= len(data)
    return _finish(root, tag, 2, size)
