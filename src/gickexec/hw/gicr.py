"""GICv3 Redistributor: EnableLPIs, the LPI tables in memory, and the pending state.

The redistributor *latches* GICR_PROPBASER and GICR_PENDBASER when EnableLPIs goes
0 -> 1 and works on those tables from then on: whatever software later writes to the
registers, the hardware keeps reading configuration bytes from the latched property table
and setting pending bits in the latched pending table, in memory.  That is the root of
the kexec problem (Arm IHI 0069, GICR_CTLR.EnableLPIs: once set it is IMPLEMENTATION
DEFINED whether it can be cleared).  Whether EnableLPIs can be cleared, and
whether base-register writes are ignored while it is set, are knobs.

Pending state lives in memory (one bit per INTID, byte INTID/8, bit INTID%8, §2.3).  The
set ``pending`` is the redistributor's internal record of which LPIs it has made pending
(real redistributors hold pending state internally too, §2.4); it is rebuilt from memory
when LPIs are enabled and cross-checked against memory when an LPI is acknowledged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from enum import StrEnum
from functools import cache

from gickexec.arch.gicv3 import (
    GICR_PENDBASER,
    GICR_PROPBASER,
    LPI_INTID_BASE,
    GicrCtlr,
    GicrOffset,
    GicrPendbaser,
    GicrPropbaser,
    GicrTyper,
    LpiConfig,
)
from gickexec.hw.events import EventLog, GuestError
from gickexec.hw.gicd import Distributor
from gickexec.hw.knobs import GicKnobs
from gickexec.hw.memory import Agent, AgentKind, BusFault, PhysicalMemory, RegisterBlock

__all__ = ["PENDED_OUTCOMES", "LpiOutcome", "Redistributor"]

_DIRECT_LPI_OFFSETS = frozenset(
    (GicrOffset.SETLPIR, GicrOffset.CLRLPIR, GicrOffset.INVLPIR, GicrOffset.INVALLR)
)

# Bits of GICR_PROPBASER/PENDBASER that hold state (the rest are RES0).
_PROPBASER_RW = sum(f.mask for f in GICR_PROPBASER.fields)
_PENDBASER_RW = sum(f.mask for f in GICR_PENDBASER.fields)
_PTZ = GICR_PENDBASER.field("PTZ").mask
_SHAREABILITY = GICR_PROPBASER.field("Shareability").mask
assert GICR_PENDBASER.field("Shareability").mask == _SHAREABILITY
_PENDING_IMPDEF_BYTES = LPI_INTID_BASE // 8  # the first 1 KiB (§2.3)
#: Every configuration byte decoded once: the redistributor looks at one per arrival,
#: acknowledge and priority comparison.
_LPI_CONFIGS = tuple(LpiConfig.decode(raw) for raw in range(256))
#: Per configuration byte: the priority an enabled LPI is signalled at; 0x100 for a
#: disabled one, which no priority mask (at most 0xFF) lets through.
_SIGNAL_PRIORITY = tuple(c.priority if c.Enable else 0x100 for c in _LPI_CONFIGS)


@cache
def _ctlr_value(enable_lpis: int, ces: int, ir: int, rwp: int) -> int:
    """GICR_CTLR as read: one encoding per combination of the bits the model sets
    (every CPU brought up reads it two to four times)."""
    return GicrCtlr(EnableLPIs=enable_lpis, CES=ces, IR=ir, RWP=rwp).encode()


class LpiOutcome(StrEnum):
    """What happened to an LPI presented to the redistributor."""

    PENDED = "pended"
    ALREADY_PENDING = "already pending"
    LPIS_DISABLED = "target redistributor has LPIs disabled"
    OUT_OF_RANGE = "INTID outside the redistributor's LPI range"
    BUS_FAULT = "pending table not in RAM"


#: The outcomes of an LPI that is pending now.  Module constants: Python 3.11 finds an
#: enum member through a descriptor call (about 70 ns), and every MSI checks these.
PENDED_OUTCOMES = (LpiOutcome.PENDED, LpiOutcome.ALREADY_PENDING)
_PENDED, _ALREADY_PENDING = PENDED_OUTCOMES


class Redistributor(RegisterBlock):
    """One CPU's redistributor (RD_base frame)."""

    def __init__(
        self,
        cpu: int,
        *,
        affinity: int,
        last: bool,
        mem: PhysicalMemory,
        gicd: Distributor,
        knobs: GicKnobs,
        events: EventLog,
    ) -> None:
        self.cpu = cpu
        self.mem = mem
        self.gicd = gicd
        self.knobs = knobs
        #: Pending LPIs may be held inside (``_unwritten``, which stays empty otherwise):
        #: a pending cache or the hypervisor's latches.
        self._holds_pending = knobs.pending_state_in_hypervisor or knobs.pending_cache_entries > 0
        self.events = events
        self.agent = Agent(AgentKind.GICR, cpu)
        self.typer = GicrTyper(
            PLPIS=int(gicd.lpis_supported),
            DirectLPI=int(knobs.direct_lpi),
            Last=int(last),
            Processor_Number=cpu,
            CommonLPIAff=knobs.common_lpi_aff,
            Affinity_Value=affinity,
        )
        self._typer_value = self.typer.encode()  # read-only: read once per CPU brought up
        #: All redistributors of the machine, for the CommonLPIAff check (set by Machine).
        self.peers: list[Redistributor] = [self]
        self.enable_lpis = False
        self._rwp_reads = 0
        self.propbaser = 0
        self.pendbaser = 0
        self.processor_sleep = True
        # Latched at EnableLPIs 0 -> 1.
        self.prop_addr: int | None = None
        self.pend_addr: int | None = None
        self.id_bits = 0
        #: one past the highest LPI INTID the latched tables cover (0 if none); set with
        #: id_bits at enable (an attribute: every LPI arrival and acknowledge checks it)
        self.lpi_limit = 0
        self._config: dict[int, int] = {}
        #: The LPIs this redistributor has made pending (see the module docstring): the
        #: candidates an acknowledge ranks.  Public so that the CPU interface can see
        #: that nothing is pending without a call (every interrupt's last IAR read).
        self.pending: set[int] = set()
        # Pending LPIs not yet written to the pending table (knob pending_cache_entries),
        # oldest first.
        self._unwritten: dict[int, None] = {}
        #: With the hypervisor holding pending state (KVM): the LPIs some ITE maps with
        #: this vCPU as target, KVM's vgic_copy_lpi_list(); set by the Machine.
        self.mapped_lpis: Callable[[Redistributor], Iterable[int]] | None = None

    @property
    def name(self) -> str:
        return f"GICR(CPU{self.cpu})"

    # -- registers ------------------------------------------------------------------

    def ctlr(self) -> GicrCtlr:
        """GICR_CTLR as a record."""
        return GicrCtlr.decode(self._ctlr_value())

    def _ctlr_value(self) -> int:
        return _ctlr_value(
            int(self.enable_lpis),
            int(self.knobs.report_ces),
            int(self.knobs.report_ir),
            int(self._rwp_reads > 0),
        )

    regs64 = frozenset(
        (
            GicrOffset.TYPER,
            GicrOffset.PROPBASER,
            GicrOffset.PENDBASER,
            GicrOffset.SETLPIR,
            GicrOffset.CLRLPIR,
            GicrOffset.INVLPIR,
            GicrOffset.INVALLR,
        )
    )

    def current(self, offset: int) -> int:
        if offset == GicrOffset.PROPBASER:
            return self.propbaser
        if offset == GicrOffset.PENDBASER:
            return self.pendbaser
        return 0

    def read_reg(self, offset: int, size: int) -> int:
        if offset == GicrOffset.CTLR:
            value = self._ctlr_value()
            if self._rwp_reads:
                self._rwp_reads -= 1
            return value
        if offset == GicrOffset.TYPER:
            return self._typer_value
        if offset == GicrOffset.IIDR:
            return self.gicd.iidr
        if offset == GicrOffset.WAKER:
            return (int(self.processor_sleep) << 1) | (int(self.processor_sleep) << 2)
        if offset == GicrOffset.PROPBASER:
            return self.propbaser
        if offset == GicrOffset.PENDBASER:
            # PTZ is WO and reads as 0 (§1.5); QEMU reads it back (knob).
            return self.pendbaser if self.knobs.ptz_reads_back else self.pendbaser & ~_PTZ
        # GICR_SYNCR.Busy and everything unimplemented read as 0: the model completes
        # invalidations at once (§1.7).
        return 0

    def write_reg(self, offset: int, value: int, agent: Agent) -> None:
        if offset == GicrOffset.CTLR:
            self._write_ctlr(GicrCtlr.decode(value))
        elif offset in (GicrOffset.PROPBASER, GicrOffset.PENDBASER):
            self._write_baser(offset, value)
        elif offset == GicrOffset.WAKER:
            sleep = bool(value & 0b10)
            if sleep and not self.processor_sleep and not self.knobs.pending_state_in_hypervisor:
                self.write_back_pending()  # the quiesce that makes memory current (§1.6)
            self.processor_sleep = sleep
        elif offset in _DIRECT_LPI_OFFSETS:
            self._write_direct_lpi(offset, value)
        else:
            self.events.emit(GuestError(self.name, f"write to offset {offset:#x}", "ignored"))

    def _write_ctlr(self, ctlr: GicrCtlr) -> None:
        want = bool(ctlr.EnableLPIs)
        if want and not self.enable_lpis:
            if self._rwp_reads:
                # Enabling before RWP==0 is UNPREDICTABLE (§0): the model ignores it.
                self.events.emit(
                    GuestError(self.name, "EnableLPIs set while RWP=1", "write ignored")
                )
                return
            if not self.typer.PLPIS:
                return  # EnableLPIs is RES0 without physical LPIs
            self._enable()
        elif not want and self.enable_lpis:
            if not self.knobs.enable_lpis_clearable:
                self.events.emit(
                    GuestError(self.name, "EnableLPIs cleared", "ignored: RES1 once set (knob)")
                )
                return
            self._disable()

    def _write_baser(self, offset: int, value: int) -> None:
        reg = "GICR_PROPBASER" if offset == GicrOffset.PROPBASER else "GICR_PENDBASER"
        if self.enable_lpis or self._rwp_reads:
            if self.knobs.base_writes_ignored_while_enabled:
                self.events.emit(
                    GuestError(self.name, f"{reg} written while EnableLPIs=1", "write ignored")
                )
                return
            self.events.emit(
                GuestError(
                    self.name,
                    f"{reg} written while EnableLPIs=1",
                    "register updated; tables latched at enable stay in use",
                )
            )
        if not self.knobs.shareability:
            value &= ~_SHAREABILITY  # RAZ/WI; Linux reads back and goes non-cacheable
        if offset == GicrOffset.PROPBASER:
            self.propbaser = value & _PROPBASER_RW
        else:
            self.pendbaser = value & _PENDBASER_RW

    def _write_direct_lpi(self, offset: int, value: int) -> None:
        """GICR_SETLPIR/CLRLPIR/INVLPIR/INVALLR (§1.7); WI without DirectLPI."""
        # SETLPIR/CLRLPIR need DirectLPI; the invalidation registers also exist with IR=1
        # (KVM implements those alone).
        implemented = self.knobs.direct_lpi or (
            self.knobs.report_ir and offset in (GicrOffset.INVLPIR, GicrOffset.INVALLR)
        )
        if not implemented:
            self.events.emit(
                GuestError(self.name, f"direct LPI register {offset:#x} written", "ignored")
            )
            return
        intid = value & 0xFFFFFFFF
        if offset == GicrOffset.SETLPIR:
            # No effect with LPIs disabled, out of range or already pending.
            self.set_pending(intid)
        elif offset == GicrOffset.CLRLPIR:
            self.clear_pending(intid)
        elif offset == GicrOffset.INVLPIR:
            self.invalidate(intid)
        elif offset == GicrOffset.INVALLR:
            self.invalidate_all()

    def _enable(self) -> None:
        prop = GicrPropbaser.decode(self.propbaser)
        pend = GicrPendbaser.decode(self.pendbaser)
        self.enable_lpis = True
        self.prop_addr = prop.address
        self.pend_addr = pend.address
        # A PROPBASER.IDbits larger than the distributor's is treated as the
        # distributor's (QEMU, KVM and gem5 all clamp, §2.6).
        self.id_bits = min(prop.lpi_id_bits, self.gicd.id_bits)
        self.lpi_limit = 1 << self.id_bits if self.id_bits > 13 else 0
        self._config.clear()
        self.pending.clear()
        # KVM keeps a pending latch taken while LPIs were off (lpi_sync_pending_status)
        latched = self._unwritten if self.knobs.pending_state_in_hypervisor else {}
        self._unwritten = {}
        self._check_common_property_table()
        if pend.PTZ:
            self.pendbaser &= ~_PTZ
            # KVM's vgic_enable_lpis() reads nothing with PTZ set: the latches stand
            self._unwritten = latched
            self.pending = set(latched)
        elif self.knobs.pending_state_in_hypervisor:
            self._sync_lpi_pending_table()
        elif self.knobs.scan_pending_table_on_enable:
            self.pending = self._scan_pending_table()

    def _lpi_group(self) -> int:
        """The CommonLPIAff group key: the affinity levels that must match (§1.3)."""
        levels = self.knobs.common_lpi_aff  # 0: all, 1: Aff3, 2: Aff3.Aff2, 3: +Aff1
        return self.typer.Affinity_Value >> (32 - 8 * levels) if levels else 0

    def _check_common_property_table(self) -> None:
        group = self._lpi_group()
        for rd in self.peers:
            if rd is self or not rd.enable_lpis or rd._lpi_group() != group:
                continue
            if rd.prop_addr != self.prop_addr:
                self.events.emit(
                    GuestError(
                        self.name,
                        f"property table {self.prop_addr:#x} differs from {rd.name}'s "
                        f"{rd.prop_addr:#x} in one CommonLPIAff group",
                        "UNPREDICTABLE: each redistributor uses its own (knob common_lpi_aff)",
                    )
                )
            return

    def _disable(self) -> None:
        if self.knobs.pending_state_in_hypervisor:
            self._unwritten = {}  # vgic_flush_pending_lpis(): dropped, never written
        self.write_back_pending()
        self.enable_lpis = False
        self._rwp_reads = self.knobs.rwp_clear_after_reads
        self.prop_addr = self.pend_addr = None
        self._config.clear()
        self.pending.clear()

    def _sync_lpi_pending_table(self) -> None:
        """KVM's its_sync_lpi_pending_table() (vgic_enable_lpis() on EnableLPIs 0 -> 1 with
        PTZ=0; KVM arch/arm64/kvm/vgic/vgic-its.c, Linux 5.10.7 and 6.6.9, virt/kvm/arm/vgic
        in 4.20): each LPI an ITE maps to this vCPU takes its pending state from its bit
        in the table; bits of LPIs no ITE maps are not read, and the table is not
        written."""
        assert self.pend_addr is not None
        lpis = self.mapped_lpis(self) if self.mapped_lpis is not None else ()
        for intid in sorted(lpis):
            if not LPI_INTID_BASE <= intid < self.lpi_limit:
                continue
            try:
                byte = self.mem.read_u8(self.pend_addr + intid // 8)
            except BusFault:
                self.events.emit(GuestError(self.name, "pending table not in RAM", "not read"))
                return
            if byte & (1 << (intid % 8)):
                self._unwritten[intid] = None
                self.pending.add(intid)

    def lpi_sync_pending_status(self, intid: int) -> None:
        """KVM's vgic_v3_lpi_sync_pending_status() (arch/arm64/kvm/vgic/vgic-v3.c, Linux
        5.10.7 and 6.6.9; virt/kvm/arm/vgic in 4.20), when MAPTI/MAPI creates an LPI that
        targets this vCPU: its bit in the table GICR_PENDBASER names, whether or not LPIs
        are enabled, becomes its pending state, and a set bit is cleared in guest memory
        ("clear consumed data")."""
        addr = GicrPendbaser.decode(self.pendbaser).address + intid // 8
        bit = 1 << (intid % 8)
        try:
            byte = self.mem.read_u8(addr)
        except BusFault:
            return  # kvm_read_guest_lock() fails and KVM maps nothing pending
        if not byte & bit:
            return
        self.mem.write_u8(addr, byte & ~bit, self.agent)
        self._unwritten[intid] = None
        if self.enable_lpis:
            self.pending.add(intid)

    @property
    def pending_table_bytes(self) -> int:
        return self.lpi_limit // 8

    def _scan_pending_table(self) -> set[int]:
        assert self.pend_addr is not None
        start = self.pend_addr + _PENDING_IMPDEF_BYTES
        size = self.pending_table_bytes - _PENDING_IMPDEF_BYTES
        if size <= 0:
            return set()
        try:
            if self.knobs.pending_first_kb == "table-ignored" and any(
                self.mem.read(self.pend_addr, _PENDING_IMPDEF_BYTES)
            ):
                self.events.emit(
                    GuestError(
                        self.name,
                        "first 1 KiB of the pending table is not zero at enable",
                        "UNPREDICTABLE: table taken as empty (knob pending_first_kb)",
                    )
                )
                return set()
            pages = self.mem.nonzero_pages(start, size)
            if not pages:
                return set()
            data = self.mem.read(start, size)
        except BusFault:
            self.events.emit(GuestError(self.name, "pending table not in RAM", "scan skipped"))
            return set()
        if not data.rstrip(b"\0"):
            return set()  # pages written but all bits clear (every LPI was taken)
        # numpy only when there are bits to find: most runs never get here, and importing
        # it is a third of `gickexec run`'s start-up.
        import numpy as np  # noqa: PLC0415

        raw = np.frombuffer(data, dtype=np.uint8)
        bits = np.flatnonzero(np.unpackbits(raw, bitorder="little"))
        return {int(b) + LPI_INTID_BASE for b in bits}

    # -- LPI state ------------------------------------------------------------------

    def config(self, intid: int) -> LpiConfig:
        """The configuration the redistributor applies to ``intid`` (possibly cached)."""
        cached = self._config.get(intid)
        if cached is None:
            assert self.prop_addr is not None
            try:
                cached = self.mem.read_u8(self.prop_addr + intid - LPI_INTID_BASE)
            except BusFault:
                cached = 0
            if self.knobs.config_cache:
                limit = self.knobs.config_cache_entries
                if limit and len(self._config) >= limit:
                    del self._config[next(iter(self._config))]  # evict the oldest
                self._config[intid] = cached
        return _LPI_CONFIGS[cached]

    def invalidate(self, intid: int) -> None:
        """INV / GICR_INVLPIR: drop the cached configuration of one LPI."""
        self._config.pop(intid, None)

    def invalidate_all(self) -> None:
        """INVALL / GICR_INVALLR."""
        self._config.clear()

    def set_pending(self, intid: int) -> LpiOutcome:
        """An LPI arrives (from an ITS or SETLPIR): set its bit in the pending table."""
        if not self.enable_lpis:
            return LpiOutcome.LPIS_DISABLED
        if not LPI_INTID_BASE <= intid < self.lpi_limit:
            return LpiOutcome.OUT_OF_RANGE
        if intid in self._unwritten:
            return _ALREADY_PENDING
        held = self.knobs.pending_state_in_hypervisor
        if held or self.knobs.pending_cache_entries:
            if self.is_pending(intid):
                self.pending.add(intid)
                return _ALREADY_PENDING
            self._unwritten[intid] = None
            self.pending.add(intid)
            # a hypervisor holds any number; a redistributor's cache writes the oldest back
            if not held and len(self._unwritten) > self.knobs.pending_cache_entries:
                oldest = next(iter(self._unwritten))
                del self._unwritten[oldest]
                self._write_pending_bit(oldest)
        else:
            outcome = self._write_pending_bit(intid)
            if outcome is not _PENDED:
                return outcome
        if self.knobs.config_cache and intid not in self._config:
            self.config(intid)  # an arrival fills the configuration cache
        return _PENDED

    def _write_pending_bit(self, intid: int) -> LpiOutcome:
        """Set ``intid``'s bit in the latched pending table."""
        assert self.pend_addr is not None
        addr = self.pend_addr + (intid >> 3)
        try:
            if not self.mem.write_bit(addr, 1 << (intid & 7), True, self.agent):
                self.pending.add(intid)
                return _ALREADY_PENDING
        except BusFault:
            self.events.emit(
                GuestError(self.name, f"pending table {addr:#x} not in RAM", "LPI lost")
            )
            self.pending.discard(intid)
            return LpiOutcome.BUS_FAULT
        self.pending.add(intid)
        return _PENDED

    def write_back_pending(self) -> None:
        """Write every internally held pending LPI to the pending table, oldest first."""
        if not self.enable_lpis:
            return
        held, self._unwritten = list(self._unwritten), {}
        for intid in held:
            self._write_pending_bit(intid)

    def save_pending_tables(self) -> None:
        """KVM's vgic_v3_save_pending_tables() (KVM_DEV_ARM_VGIC_SAVE_PENDING_TABLES; KVM
        arch/arm64/kvm/vgic/vgic-v3.c, Linux 5.10.7 and 6.6.9): for each LPI an ITE maps
        to this vCPU, its bit in the table GICR_PENDBASER names is made its pending latch
        (set or cleared); the latches themselves stay in the hypervisor."""
        pend = GicrPendbaser.decode(self.pendbaser).address
        lpis = self.mapped_lpis(self) if self.mapped_lpis is not None else ()
        for intid in sorted(set(lpis) | set(self._unwritten)):
            addr, bit = pend + intid // 8, 1 << (intid % 8)
            try:
                old = self.mem.read_u8(addr)
            except BusFault:
                continue  # kvm_read_guest_lock() fails: the save returns the error
            new = old | bit if intid in self._unwritten else old & ~bit
            if new != old:
                self.mem.write_u8(addr, new, self.agent)

    def clear_pending(self, intid: int) -> bool:
        """Clear an LPI's pending bit; True if it was pending."""
        if not self.enable_lpis or not LPI_INTID_BASE <= intid < self.lpi_limit:
            return False
        assert self.pend_addr is not None
        self.pending.discard(intid)
        if intid in self._unwritten:
            del self._unwritten[intid]
            return True
        if self.knobs.pending_state_in_hypervisor:
            return False  # KVM's pending latch is all there is; memory is not looked at
        try:
            return self.mem.write_bit(
                self.pend_addr + (intid >> 3), 1 << (intid & 7), False, self.agent
            )
        except BusFault:
            return False

    def is_pending(self, intid: int) -> bool:
        """Whether ``intid`` is pending: held internally or set in the pending table."""
        if not self.enable_lpis or not LPI_INTID_BASE <= intid < self.lpi_limit:
            return False
        if intid in self._unwritten:
            return True
        if self.knobs.pending_state_in_hypervisor:
            return False  # KVM reads the table only at enable and MAPTI
        assert self.pend_addr is not None
        try:
            return bool(self.mem.read_u8(self.pend_addr + intid // 8) & (1 << (intid % 8)))
        except BusFault:
            return False

    def pending_lpis(self) -> set[int]:
        """A copy of ``pending``."""
        return set(self.pending)

    def state_key(self) -> tuple[object, ...]:
        """Everything an arriving or acknowledged LPI can depend on or change, except
        memory (for telling whether a burst of traffic left the redistributor as it was)."""
        return (
            self.enable_lpis,
            self.prop_addr,
            self.pend_addr,
            self.id_bits,
            frozenset(self.pending),
            tuple(self._unwritten),
            tuple(self._config.items()),
        )

    def lone_arrival(self, intid: int) -> int | None:
        """The priority ``intid`` would be signalled at (0x100: disabled) if it arrived
        now, when that arrival is the simple case: LPIs on, ``intid`` in range, nothing
        pending here, no pending state held inside (no pending cache, no hypervisor)
        and its configuration known without filling the cache.  None otherwise (then
        ``set_pending`` is the way).  Reads no pending table and changes nothing."""
        if (
            self.pending
            or self._holds_pending
            or not self.enable_lpis
            or not LPI_INTID_BASE <= intid < self.lpi_limit
        ):
            return None
        byte = self._config.get(intid)
        if byte is None:
            if self.knobs.config_cache:
                return None  # the arrival fills the cache: set_pending's work
            assert self.prop_addr is not None
            try:
                byte = self.mem.read_u8(self.prop_addr + intid - LPI_INTID_BASE)
            except BusFault:
                byte = 0
        return _SIGNAL_PRIORITY[byte]

    def highest_priority_pending(self, mask_priority: int) -> int | None:
        """The pending, enabled LPI of highest priority below ``mask_priority``, if any."""
        best = self.highest_pending(mask_priority)
        return None if best is None else best[0]

    def highest_pending(self, mask_priority: int) -> tuple[int, int] | None:
        """``highest_priority_pending`` with the LPI's priority: (INTID, priority), which
        an acknowledge needs for the running priority without a second look-up."""
        if not self.pending:
            return None
        if len(self.pending) == 1:
            # The usual case (an MSI taken as soon as it arrives): no ranking.
            (intid,) = self.pending
            if not self.is_pending(intid):
                self.pending.discard(intid)
                return None
            cfg = self.config(intid)
            if not cfg.Enable:
                return None
            prio = cfg.priority
            return (intid, prio) if prio < mask_priority else None
        best: tuple[int, int] | None = None
        for intid in list(self.pending):
            if not self.is_pending(intid):
                # Software overwrote the pending table; hardware would see it too.
                self.pending.discard(intid)
                continue
            cfg = self.config(intid)
            if not cfg.Enable or cfg.priority >= mask_priority:
                continue
            key = (cfg.priority, intid if self.knobs.equal_priority_lowest_intid else -intid)
            if best is None or key < best:
                best = key
        if best is None:
            return None
        return abs(best[1]), best[0]
