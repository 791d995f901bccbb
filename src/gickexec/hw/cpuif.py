"""GICv3 CPU interface, reduced to what LPIs need (gic-architecture.md §2.5, §4.3).

LPIs have no active state: acknowledging one (ICC_IAR1_EL1) clears its pending bit and
raises the running priority; EOI (ICC_EOIR1_EL1) drops the running priority.
"""

from __future__ import annotations

from gickexec.arch.gicv3 import INTID_SPURIOUS
from gickexec.hw.gicr import Redistributor

__all__ = ["CpuInterface"]


class CpuInterface:
    """ICC_* system registers of one CPU."""

    def __init__(self, cpu: int, rd: Redistributor) -> None:
        self.cpu = cpu
        self.rd = rd
        self.pmr = 0x00  # everything masked until software opens ICC_PMR_EL1
        self.igrpen1 = False
        self._running: list[int] = []

    def reset(self) -> None:
        """What a CPU reset (or kexec's jump into a new kernel) leaves behind."""
        self.pmr = 0x00
        self.igrpen1 = False
        self._running.clear()

    def state_key(self) -> tuple[object, ...]:
        """The interface's state, hashable (see ``Redistributor.state_key``)."""
        return (self.pmr, self.igrpen1, tuple(self._running))

    @property
    def running_priority(self) -> int:
        return self._running[-1] if self._running else 0x100

    def acknowledge(self) -> int:
        """ICC_IAR1_EL1: the INTID of the highest-priority signalled LPI, or 1023."""
        if not self.igrpen1:
            return INTID_SPURIOUS
        intid = self.rd.highest_priority_pending(min(self.pmr, self.running_priority))
        if intid is None:
            return INTID_SPURIOUS
        prio = self.rd.config(intid).priority
        self.rd.clear_pending(intid)
        self._running.append(prio)
        return intid

    def eoi(self, intid: int) -> None:
        """ICC_EOIR1_EL1: priority drop."""
        if intid != INTID_SPURIOUS and self._running:
            self._running.pop()
