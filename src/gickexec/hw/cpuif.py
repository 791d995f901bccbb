"""GICv3 CPU interface, reduced to what LPIs need (IHI 0069 chapter 12, the ICC_*_EL1
System registers; chapter 4 for the priority drop).

LPIs have no active state: acknowledging one (ICC_IAR1_EL1) clears its pending bit and
raises the running priority; EOI (ICC_EOIR1_EL1) drops the running priority.  Nothing is
signalled while ICC_IGRPEN1_EL1.Enable or the Distributor's Non-secure Group 1 enable is
clear.
"""

from __future__ import annotations

from enum import StrEnum

from gickexec.arch.gicv3 import INTID_SPURIOUS
from gickexec.hw.events import EventLog, GuestError
from gickexec.hw.gicd import Distributor
from gickexec.hw.gicr import Redistributor

__all__ = ["CpuInterface", "IccReg"]


class IccReg(StrEnum):
    """The System registers a guest uses to take LPIs."""

    PMR = "ICC_PMR_EL1"
    IGRPEN1 = "ICC_IGRPEN1_EL1"
    IAR1 = "ICC_IAR1_EL1"
    EOIR1 = "ICC_EOIR1_EL1"
    HPPIR1 = "ICC_HPPIR1_EL1"


#: ICC_PMR_EL1.Priority [7:0]; ICC_IGRPEN1_EL1.Enable [0]; INTID fields [23:0]
_PRIORITY, _ENABLE, _INTID = 0xFF, 0x1, 0xFFFFFF
_READ_ONLY = (IccReg.IAR1, IccReg.HPPIR1)


class CpuInterface:
    """ICC_* system registers of one CPU."""

    def __init__(
        self,
        cpu: int,
        rd: Redistributor,
        gicd: Distributor | None = None,
        events: EventLog | None = None,
    ) -> None:
        self.cpu = cpu
        self.rd = rd
        self.gicd = gicd
        self.events = events
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

    def priority_mask(self) -> int | None:
        """The priority an LPI must be below (numerically) to be signalled: min(PMR,
        running priority); None while either group enable is clear."""
        if not self.igrpen1 or (self.gicd is not None and not self.gicd.group1ns_enabled):
            return None
        running = self._running
        # an idle CPU's running priority (0x100) is above any PMR value
        return running[-1] if running and running[-1] < self.pmr else self.pmr

    def _signalled(self) -> tuple[int, int] | None:
        """The (INTID, priority) the interface would present: highest priority, above PMR
        and the running priority, with both group enables set."""
        mask = self.priority_mask()
        return None if mask is None else self.rd.highest_pending(mask)

    def acknowledge(self) -> int:
        """ICC_IAR1_EL1: the INTID of the highest-priority signalled LPI, or 1023."""
        # Nothing pending is every interrupt's last IAR read (Linux's gic_handle_irq()
        # reads until 1023): answered without looking at the enables, which only ever
        # turn a pending LPI into 1023 too.
        if not self.rd.pending:
            return INTID_SPURIOUS
        signalled = self._signalled()
        if signalled is None:
            return INTID_SPURIOUS
        intid, prio = signalled
        self.rd.clear_pending(intid)
        self._running.append(prio)
        return intid

    def eoi(self, intid: int) -> None:
        """ICC_EOIR1_EL1: priority drop."""
        if intid != INTID_SPURIOUS and self._running:
            self._running.pop()

    # -- as software reaches them: MRS / MSR -----------------------------------------

    def mrs(self, reg: IccReg) -> int:
        """Read a System register (ICC_IAR1_EL1 acknowledges, as on hardware)."""
        if reg is IccReg.PMR:
            return self.pmr & _PRIORITY
        if reg is IccReg.IGRPEN1:
            return int(self.igrpen1)
        if reg is IccReg.IAR1:
            return self.acknowledge()
        if reg is IccReg.HPPIR1:
            signalled = self._signalled()
            return INTID_SPURIOUS if signalled is None else signalled[0]
        # ICC_EOIR1_EL1 is write-only: reads are UNDEFINED, modelled as 0 plus an event
        self._guest_error(f"read of write-only {reg}")
        return 0

    def msr(self, reg: IccReg, value: int) -> None:
        """Write a System register."""
        if reg is IccReg.PMR:
            self.pmr = value & _PRIORITY
        elif reg is IccReg.IGRPEN1:
            self.igrpen1 = bool(value & _ENABLE)
        elif reg is IccReg.EOIR1:
            self.eoi(value & _INTID)
        else:
            assert reg in _READ_ONLY
            self._guest_error(f"write to read-only {reg}")

    def _guest_error(self, what: str) -> None:
        if self.events is not None:
            self.events.emit(GuestError(f"ICC(CPU{self.cpu})", what, "ignored (UNDEFINED)"))
