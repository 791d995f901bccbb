"""Boot, traffic and kexec on every platform preset: median wall time and pages stored.

Shows how the model scales with CPUs (the 224-CPU ThunderX2 preset programs 224
redistributors and reserves 224 pending tables per kernel).
"""

from __future__ import annotations

import statistics
import time

from gickexec import World
from gickexec.hw.platform import PLATFORMS

REPEATS = 3


def _run(name: str) -> World:
    w = World.build(name, seed=1)
    w.add_device("eth0", device_id=0x100, nvec=16)
    w.boot("v6.6")
    w.traffic("eth0", 256)
    w.kexec("v6.6")
    w.traffic("eth0", 256)
    return w


def main() -> None:
    for name, p in PLATFORMS.items():
        times = []
        for _ in range(REPEATS):
            t = time.perf_counter()
            w = _run(name)
            times.append(time.perf_counter() - t)
        pages = w.machine.mem.pages_touched
        print(
            f"{name:<20} {p.cpus:4} CPUs {statistics.median(times) * 1000:8.1f} ms"
            f"  {pages:5} pages stored  lost {w.ledger.lost}"
        )


if __name__ == "__main__":
    main()
