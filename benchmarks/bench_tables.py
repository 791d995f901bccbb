"""Table operations at 2^16 and 2^24 LPIs against a memset floor.

* reset of the property table (``gic_reset_prop_table``: one byte per LPI),
* zeroing a pending table (``its_allocate_pending_table``),
* the redistributor's pending-table scan at EnableLPIs with a few bits set.

The floor is ``bytearray(n)`` plus a slice fill of the same size: what any
implementation must pay to touch that many bytes once in Python.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from gickexec.hw.events import EventLog
from gickexec.hw.gicd import Distributor
from gickexec.hw.gicr import Redistributor
from gickexec.hw.knobs import GicKnobs
from gickexec.hw.memory import Agent, AgentKind, MemRegion, PhysicalMemory

REPEATS = 7
KERNEL = Agent(AgentKind.KERNEL, 0, 0)


def _median(fn: Callable[[], object]) -> float:
    times = []
    for _ in range(REPEATS):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _floor(n: int) -> None:
    b = bytearray(n)
    b[:] = b"\xa2" * n


def main() -> None:
    print(f"{'operation':<40}{'2^16 LPIs':>14}{'2^24 LPIs':>14}")
    rows: dict[str, list[float]] = {}
    for bits in (16, 24):
        lpis = 1 << bits
        mem = PhysicalMemory([MemRegion(0x8000_0000, 1 << 32)])
        prop, pend = 0x9000_0000, 0xA000_0000
        rows.setdefault("memset floor (property table bytes)", []).append(
            _median(lambda: _floor(lpis))
        )
        rows.setdefault("property table reset (fill 0xa2)", []).append(
            _median(lambda: mem.fill(prop, lpis, 0xA2, KERNEL))
        )
        rows.setdefault("pending table zeroing (fill 0)", []).append(
            _median(lambda: mem.fill(pend, lpis // 8, 0, KERNEL))
        )
        gicd = Distributor(id_bits=bits, lpis=True, spis=32, events=EventLog())
        rd = Redistributor(
            0,
            affinity=0,
            last=True,
            mem=mem,
            gicd=gicd,
            knobs=GicKnobs(enable_lpis_clearable=True),
            events=EventLog(),
        )
        for intid in (8192, lpis // 2, lpis - 1):
            mem.write_u8(pend + intid // 8, 1 << (intid % 8), KERNEL)
        rd.propbaser = prop | (bits - 1)
        rd.pendbaser = pend

        def scan() -> None:
            rd._enable()
            assert len(rd.pending_lpis()) == 3
            rd._disable()
            rd._rwp_reads = 0

        rows.setdefault("pending table scan at EnableLPIs", []).append(_median(scan))
    for name, (a, b) in rows.items():
        print(f"{name:<40}{a * 1e3:>11.3f} ms{b * 1e3:>11.3f} ms")


if __name__ == "__main__":
    main()
