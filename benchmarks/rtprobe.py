"""Machine stalls: ``python -m benchmarks.rtprobe CPU OUT``, a real-time sleeper.

Runs on one CPU at real-time priority (SCHED_FIFO), so no ordinary thread of
the machine (Home Assistant, the backup, the FUSE server) can keep it from
that CPU; it sleeps 1 ms at a time and records each wake-up that came more
than 1 ms late. Those are moments when that CPU did not run userspace at
all (the hypervisor took it: these machines are shared VMs, and one virtual
CPU can stall while the other runs; or the kernel was busy). The loop
benchmark runs one probe per CPU and subtracts the stalls of the CPU the
loop thread was on from the loop's lag, so that what remains is the lag
that Home Assistant's own threads caused.

Prints ``ready`` when it runs; on SIGTERM writes ``[[monotonic, lag], ...]``
as JSON to OUT and exits.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
import signal
import sys
import time

SLEEP = 0.001
THRESHOLD = 0.001


def main() -> None:
    os.sched_setaffinity(0, {int(sys.argv[1])})
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(50))
    stalls: list[tuple[float, float]] = []
    running = True

    def stop(*_: object) -> None:
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, stop)
    print("ready", flush=True)
    while running:
        start = time.monotonic()
        time.sleep(SLEEP)
        lag = time.monotonic() - start - SLEEP
        if lag > THRESHOLD:
            stalls.append((start + SLEEP, lag))
    Path(sys.argv[2]).write_text(json.dumps(stalls))


if __name__ == "__main__":
    main()
