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

from gickexec.arch.gicv3 import GicrOffset
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


def _measure(bits: int) -> dict[str, float]:
    lpis = 1 << bits
    mem = PhysicalMemory([MemRegion(0x8000_0000, 1 << 32)])
    prop, pend = 0x9000_0000, 0xA000_0000
    out = {
        "memset floor (property table bytes)": _median(lambda: _floor(lpis)),
        "property table reset (fill 0xa2)": _median(lambda: mem.fill(prop, lpis, 0xA2, KERNEL)),
        "pending table zeroing (fill 0)": _median(lambda: mem.fill(pend, lpis // 8, 0, KERNEL)),
    }
    gicd = Distributor(id_bits=bits, lpis=True, spis=32, events=EventLog())
    knobs = GicKnobs(enable_lpis_clearable=True, rwp_clear_after_reads=0)
    rd = Redistributor(0, affinity=0, last=True, mem=mem, gicd=gicd, knobs=knobs, events=EventLog())
    for intid in (8192, lpis // 2, lpis - 1):
        mem.write_u8(pend + intid // 8, 1 << (intid % 8), KERNEL)
    rd.mmio_write(GicrOffset.PROPBASER, 8, prop | (bits - 1), KERNEL)
    rd.mmio_write(GicrOffset.PENDBASER, 8, pend, KERNEL)

    def scan() -> None:
        rd.mmio_write(GicrOffset.CTLR, 4, 1, KERNEL)
        assert len(rd.pending_lpis()) == 3
        rd.mmio_write(GicrOffset.CTLR, 4, 0, KERNEL)

    out["pending table scan at EnableLPIs"] = _median(scan)
    return out


def main() -> None:
    print(f"{'operation':<40}{'2^16 LPIs':>14}{'2^24 LPIs':>14}")
    small, large = _measure(16), _measure(24)
    for name, a in small.items():
        print(f"{name:<40}{a * 1e3:>11.3f} ms{large[name] * 1e3:>11.3f} ms")


if __name__ == "__main__":
    main()
