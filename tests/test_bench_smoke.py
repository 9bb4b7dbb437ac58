"""The benchmarks, tiny: CI runs every section on small data so none can rot.

Not a timed test: it checks that each benchmark runs and reports what the
README table needs, not how fast anything is (``scripts/bench`` measures).
The slow-file-system cases need FUSE bindings (``mfusepy``), root and
``/dev/fuse``; without them the test is reported as skipped once everything
else passed — and fails where ``BACKUP_OFFLOAD_REQUIRE_MOUNTS=1`` (CI) says
mounts must work (``mounts.skip_or_fail``).
"""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import run

from .mounts import skip_or_fail


def test_bench_smoke(tmp_path: Path) -> None:
    """``scripts/bench --smoke``: every section, a table and JSON."""
    out = tmp_path / "report.json"
    report = run.main(
        [
            "--smoke",
            "--cache",
            str(tmp_path / "cache"),
            "--work",
            str(tmp_path / "work"),
            "--json",
            str(out),
        ]
    )
    assert json.loads(out.read_text())["settings"]["smoke"] is True
    throughput = report["throughput"]
    for section in ("create plain", "create encrypted"):
        assert {"ours", "ours (zlib fallback)", "HA core writer"} <= set(
            throughput[section]
        )
    assert {"ours", "tar -czf"} <= set(throughput["create plain"])
    assert {"ours", run.NO_WORKER, "tar -xzf"} <= set(throughput["extract plain"])
    assert {"ours", run.NO_WORKER, "tar -tzf"} <= set(throughput["verify plain"])
    operations = report["loop"]["operations"]
    for name in (
        "idle",
        "ours create (tmpfs)",
        "ours list (tmpfs)",
        "ours verify (tmpfs)",
        "HA core backup.create (tmpfs)",
    ):
        assert operations[name]["max_ms"] >= 0
    for name in (
        "ours create (tmpfs, in a thread)",
        "ours verify (tmpfs, in a thread)",
        "ours partial restore (tmpfs, in a thread)",
    ):
        assert operations[name]["max_ms"] >= 0
    if report["loop"]["machine stalls unmeasured"] is None:
        for row in operations.values():
            assert row["max_without_machine_ms"] <= row["max_ms"]
    slow_skipped = report["loop"]["slow skipped"]
    if slow_skipped is None:
        assert "ours create (slow)" in operations
    memory = report["memory"]["ours"]
    assert memory["worker_peak_rss_mib"] >= memory["worker_start_rss_mib"] > 0
    assert memory["worker_peak_private_mib"] > 0
    assert report["listing"]["local cold s"] >= 0
    assert len(report["scale"]["sizes"]) == 3
    members = report["members"]
    assert members["members"] == 2_000
    for name in ("verify", "dry run"):
        assert members[name]["seconds"] > 0
        assert members[name]["worker_peak_rss_mib"] > 0
    assert members["dry_run_over_verify"] > 0
    for rows in report["copy"]["targets"].values():
        assert {"ours (copy action)", "cp", "cp + sync"} <= set(rows)
        assert all(row["seconds"] > 0 for row in rows.values())
    text = run.table(report)
    assert "### Throughput" in text
    assert "extract plain: " in text
    assert "s in the worker process, " in text
    assert "### Many members (2,000 tiny members" in text
    assert "dry run / verify: " in text
    assert "### Copy of a " in text
    if slow_skipped is not None:
        # Everything else was checked; the slow share's part could not run.
        skip_or_fail(f"slow file system: {slow_skipped}")
