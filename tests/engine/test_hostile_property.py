"""Property: whatever a share holds, a restore writes only where it may.

Hypothesis builds backups from outer and inner member sequences: regular
files, directories, symlinks and hard links with absolute, ``..``, in-tree
and out-of-tree targets, duplicates, FIFOs and devices, extra outer
members. For each one, every entry point either refuses it, or what it
accepts is safe:

- Home Assistant's own ``restore_backup``, run on what our staging
  produced, writes nothing outside the configuration directory, and leaves
  either the whole new configuration or the old one (it never wipes it);
- a partial restore writes nothing outside the configuration directory and
  nothing into ``.storage``;
- the read-only entry points (listing, verify, dry run, the backup agent's
  check) write nothing at all.

Needs Home Assistant (its restore); ``PROPERTY_EXAMPLES`` sets the number of
examples (500 by default).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
import contextlib
from contextlib import contextmanager
import json
import os
from pathlib import Path
import shutil
import tarfile
import tempfile
from typing import Any

from hypothesis import HealthCheck, given, settings, strategies as st
import pytest

from custom_components.backup_offload.engine import transfer as agent_files
from custom_components.backup_offload.engine.archive.read import verify_backup
from custom_components.backup_offload.engine.errors import BackupOffloadError
from custom_components.backup_offload.engine.metadata import (
    parse_backup_json,
    read_backup_info,
)
from custom_components.backup_offload.engine.restore import (
    full as restore_full,
    partial as restore_partial,
    preview as restore_preview,
)

from .helpers import backup_json, inner_tar, member, raw_archive, tree, write

pytest.importorskip("homeassistant.backup_restore", reason="needs Home Assistant")

from homeassistant.backup_restore import restore_backup

EXAMPLES = int(os.environ.get("PROPERTY_EXAMPLES", "500"))
META = json.dumps(backup_json()).encode()
OUT = "@OUT"  # replaced by the absolute path of a directory outside

NAMES = (
    "data",
    "data/a",
    "data/b",
    "data/a/x",
    "data/b/y",
    "data/configuration.yaml",
    "data/.storage",
    "data/.storage/auth",
    "data/.HA_RESTORE",
    "esc",
    "esc/p",
    "x",
    ".",
    "./data/c",
    "data//d",
    "/abs",
    "../up",
    "data/../../up",
    "data/a/../../up",
)
TARGETS = (
    OUT,
    f"{OUT}/p",
    "..",
    "../..",
    "../../..",
    ".",
    "a",
    "x",
    "data",
    "data/a",
    "b/../..",
    "../data",
    "../data/a",
    "esc",
    "a/x",
    "configuration.yaml",
    ".storage",
    "../a",
    "a/../..",
)
KINDS = (
    tarfile.REGTYPE,
    tarfile.DIRTYPE,
    tarfile.SYMTYPE,
    tarfile.LNKTYPE,
    tarfile.FIFOTYPE,
    tarfile.CHRTYPE,
)
OUTER_EXTRAS = (
    (tarfile.SYMTYPE, "esc", OUT),
    (tarfile.REGTYPE, "esc/pwned.txt", ""),
    (tarfile.REGTYPE, "./homeassistant.tar.gz", ""),
    (tarfile.REGTYPE, "./backup.json", ""),
    (tarfile.REGTYPE, "other.tar.gz", ""),
    (tarfile.SYMTYPE, "homeassistant.tar.gz", "other.tar.gz"),
    (tarfile.DIRTYPE, "dir", ""),
)
SAFE_START = [
    (tarfile.DIRTYPE, "data", ""),
    (tarfile.REGTYPE, "data/configuration.yaml", ""),
]

Spec = tuple[bytes, str, str]

inner_members = st.lists(
    st.tuples(st.sampled_from(KINDS), st.sampled_from(NAMES), st.sampled_from(TARGETS)),
    max_size=8,
)
outer_extras = st.lists(
    st.tuples(st.sampled_from(OUTER_EXTRAS), st.booleans()), max_size=3
)


def _member(spec: Spec, outside: Path) -> tuple[tarfile.TarInfo, bytes | None]:
    kind, name, target = spec
    target = target.replace(OUT, str(outside))
    data = b"pwned" if "esc" in name or "up" in name else b"new"
    if kind == tarfile.REGTYPE:
        return member(name, data)
    return member(name, kind=kind, linkname=target)


def _extra(spec: Spec, outside: Path) -> tuple[tarfile.TarInfo, bytes | None]:
    """An extra outer member; one named like an inner archive is a real one."""
    header, data = _member(spec, outside)
    if header.isreg() and header.name.endswith(".tar.gz"):
        # A different inner archive, so a duplicate is not what was checked.
        data = inner_tar([member("data/configuration.yaml", b"other: true\n")])
        header.size = len(data)
    return header, data


def _archive(
    path: Path, outside: Path, inner: list[Spec], extras: list[tuple[Spec, bool]]
) -> Path:
    """Write the outer tar: backup.json, the inner archive, the extras around it."""
    archive = inner_tar([_member(spec, outside) for spec in inner])
    return raw_archive(
        path,
        [
            *(_extra(spec, outside) for spec, first in extras if first),
            member("./backup.json", META),
            member("./homeassistant.tar.gz", archive),
            *(_extra(spec, outside) for spec, first in extras if not first),
        ],
    )


def _config(path: Path) -> Path:
    write(path / "configuration.yaml", "old: true\n")
    write(path / "automations.yaml", "[]\n")
    write(path / ".storage/auth", '{"old": true}')
    return path


@contextmanager
def _sandbox(base: Path) -> Iterator[Path]:
    """A fresh directory per example; Home Assistant's temp dir lies in it."""
    root = Path(tempfile.mkdtemp(dir=base))
    (root / "tmp").mkdir()
    (root / "outside").mkdir()
    (root / "share").mkdir()
    saved = tempfile.tempdir
    tempfile.tempdir = str(root / "tmp")
    try:
        yield root
    finally:
        tempfile.tempdir = saved
        shutil.rmtree(root, ignore_errors=True)


def _outside(root: Path, *inside: Path) -> dict[str, Any]:
    """The sandbox's tree without the given directories (where writes may go)."""
    skip = [p.relative_to(root).as_posix() for p in inside]
    return {
        rel: value
        for rel, value in tree(root).items()
        if not any(rel == s or rel.startswith(s + "/") for s in skip)
    }


def _accepts(call: Callable[[], Any]) -> Any:
    """Return what ``call`` returns, or None when it refuses (a typed error)."""
    try:
        return call()
    except BackupOffloadError:
        return None


def never_newer(version: str) -> bool:
    return False


def _home_assistant_restores(root: Path, config: Path, staged: Path) -> None:
    """Run Home Assistant's restore on our staged copy; check what it did."""
    old = tree(config)
    (config / ".HA_RESTORE").write_text(
        json.dumps(
            {
                "path": str(staged),
                "password": None,
                "remove_after_restore": True,
                "restore_database": True,
                "restore_homeassistant": True,
            }
        )
    )
    before = _outside(root, config)
    with contextlib.suppress(Exception):  # judged by what it left behind
        restore_backup(str(config))
    assert _outside(root, config) == before
    assert list((root / "outside").iterdir()) == []
    result = json.loads((config / ".HA_RESTORE_RESULT").read_text())
    if not result["success"]:
        # It failed: the configuration must be the one it had.
        after = tree(config)
        after.pop(".HA_RESTORE_RESULT")
        assert after == old, result
    else:
        # The whole new one: something Home Assistant can start from.
        assert (config / "configuration.yaml").is_file() or any(
            path.is_file() for path in (config / ".storage").glob("*")
        )


def _partial_restore(root: Path, config: Path, path: Path, info: Any) -> None:
    """Extract and apply a partial restore; check where it wrote."""
    before = _outside(root, config)
    storage = tree(config / ".storage")
    extracted = _accepts(
        lambda: restore_partial.extract_selected(
            path, info, None, config_dir=config, patterns=["**"]
        )
    )
    if extracted is not None:
        _accepts(lambda: restore_partial.apply_files(extracted, config_dir=config))
    assert _outside(root, config) == before
    assert tree(config / ".storage") == storage


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(inner=inner_members, extras=outer_extras, safe_start=st.booleans())
def test_restores_write_only_where_they_may(
    tmp_path: Path,
    inner: list[Spec],
    extras: list[tuple[Spec, bool]],
    safe_start: bool,
) -> None:
    """Every entry point refuses the archive, or what it accepts is safe."""
    with _sandbox(tmp_path) as root:
        outside = root / "outside"
        members = [*SAFE_START, *inner] if safe_start else inner
        path = _archive(root / "share" / "backup.tar", outside, members, extras)
        full = _config(root / "config")
        partial = _config(root / "partial")
        info = parse_backup_json(META, file=path.name, size=path.stat().st_size)
        untouched = tree(root)
        for read in (
            lambda: read_backup_info(path),
            lambda: verify_backup(path, None),
            lambda: agent_files.check_download(path, []),
            lambda: restore_preview.preview(
                path,
                info,
                None,
                config_dir=full,
                patterns=None,
                restore_database=True,
                is_newer=never_newer,
            ),
        ):
            _accepts(read)
            assert tree(root) == untouched
        staged = _accepts(
            lambda: restore_full.stage(
                path, info, None, config_dir=full, is_newer=never_newer
            )
        )
        if staged is not None:
            _home_assistant_restores(root, full, staged.path)
        _partial_restore(root, partial, path, info)
