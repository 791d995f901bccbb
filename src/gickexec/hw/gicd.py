"""GICv3 Distributor: the parts that bear on LPIs (GICD_CTLR, GICD_TYPER)."""

from __future__ import annotations

from gickexec.arch.gicv3 import GICD_CTLR, GicdOffset, GicdTyper
from gickexec.hw.events import EventLog, GuestError
from gickexec.hw.memory import Agent

__all__ = ["Distributor"]

_ENABLE_GRP1NS = GICD_CTLR.field("EnableGrp1A").mask  # asked at every acknowledge


class Distributor:
    """GICD: reports LPI support and the INTID width; holds the group enables."""

    def __init__(
        self,
        *,
        id_bits: int,
        lpis: bool,
        spis: int,
        events: EventLog,
        rss: bool = True,
        iidr: int = 0,
    ) -> None:
        if not 14 <= id_bits <= 24:
            raise ValueError(f"GICD_TYPER.IDbits+1 must be 14..24, not {id_bits}")
        self.typer = GicdTyper(
            ITLinesNumber=max(0, (spis + 32) // 32 - 1),
            IDbits=id_bits - 1,
            LPIS=int(lpis),
            MBIS=1,
            RSS=int(rss),
            A3V=1,
        )
        self.ctlr = 0
        #: the product's IIDR, which the redistributors and the ITS report too
        self.iidr = iidr
        self.events = events

    @property
    def id_bits(self) -> int:
        """INTID bits implemented (GICD_TYPER.IDbits + 1)."""
        return self.typer.IDbits + 1

    @property
    def ctlr(self) -> int:
        """GICD_CTLR."""
        return self._ctlr

    @ctlr.setter
    def ctlr(self, value: int) -> None:
        self._ctlr = value
        #: GICD_CTLR bit 1 as Non-secure software sees it (EnableGrp1A with two Security
        #: states, EnableGrp1 with one): Non-secure Group 1, the only group of LPIs (IHI
        #: 0069, GICD_CTLR).  With it clear no LPI is forwarded to a CPU interface (QEMU
        #: commit 703090770c19, "hw/intc/arm_gicv3: Honour GICD_CTLR.EnableGrp1NS for
        #: LPIs", v7.0).  An attribute: every signalled LPI looks at it.
        self.group1ns_enabled = bool(value & _ENABLE_GRP1NS)

    @property
    def lpis_supported(self) -> bool:
        return bool(self.typer.LPIS)

    @property
    def spis(self) -> int:
        return min(32 * (self.typer.ITLinesNumber + 1), 1020) - 32

    def mmio_read(self, offset: int, size: int) -> int:
        if offset == GicdOffset.CTLR:
            return self.ctlr
        if offset == GicdOffset.TYPER:
            return self.typer.encode()
        if offset == GicdOffset.IIDR:
            return self.iidr
        return 0

    def mmio_write(self, offset: int, size: int, value: int, agent: Agent) -> None:
        if offset == GicdOffset.CTLR:
            # RWP is RO and the model completes writes at once.
            self.ctlr = value & ~GICD_CTLR.field("RWP").mask & 0xFFFFFFFF
            return
        self.events.emit(
            GuestError("GICD", f"write to RO/unmodelled offset {offset:#x}", "ignored")
        )
