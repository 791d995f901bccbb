"""The Linux GICv3 ITS driver (``drivers/irqchip/irq-gic-v3-its.c``), per kernel profile.

Function names are the kernel's.  Every register access goes through MMIO and every
table the driver fills is written into simulated memory; the hardware model then acts on
those bytes.  Sources: ``drivers/irqchip/irq-gic-v3-its.c`` of Linux v4.19.1 (profiles without the
v4.20 series' table reuse), v4.20, v5.10 and v6.1.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gickexec.arch.gicv3 import (
    GICR_PROPBASER,
    ITS_MAX_LPI_NRBITS,
    LPI_INTID_BASE,
    BaserType,
    CACHE_RaWaWb,
    GicdCtlr,
    GicdOffset,
    GicrCtlr,
    GicrOffset,
    GicrPendbaser,
    GicrPropbaser,
    GicrTyper,
    GitsBaser,
    GitsCbaser,
    GitsCtlr,
    GitsOffset,
    GitsTyper,
    LpiConfig,
    SHARE_InnerShareable,
    lpi_pendbase_sz,
    lpi_propbase_sz,
)
from gickexec.arch.its import (
    CMD_BYTES,
    Discard,
    Inv,
    Invall,
    ItsCommand,
    Mapc,
    Mapd,
    Mapti,
    Movi,
    Sync,
)
from gickexec.hw.cpuif import IccReg
from gickexec.kernel import printk
from gickexec.kernel.efi import efi_mem_reserve_persistent
from gickexec.kernel.mm import SEG_IMAGE, SEG_INITRD, KernelFault, OutOfMemory, Owner, Role

if TYPE_CHECKING:
    from gickexec.kernel.kernel import Kernel

__all__ = ["GicV3Its", "ItsDevice"]

SZ_64K = 0x10000
ITS_CMD_QUEUE_SZ = SZ_64K
ITS_ITT_ALIGN = 256
GITS_LVL1_ENTRY_SIZE = 8
_L1_VALID = 1 << 63
#: GICD_INT_DEF_PRI: "Priority 0xa0, Group-1, disabled" (ITS-4.3, ITS-5.1x)
LPI_PROP_DEFAULT_PRIO = 0xA0
LPI_PROP_GROUP1 = 0b10
LPI_PROP_ENABLED = 0b01
#: USEC_PER_SEC polls of 1 us in redist_disable_lpis / its_force_quiescent
_POLL_LIMIT = 1_000_000
_NO_TARGET = (1 << 64) - 1
#: pr_err_ratelimited() lets DEFAULT_RATELIMIT_BURST messages through per interval
_RATELIMIT_BURST = 10
_SHR = GICR_PROPBASER.field("Shareability").mask


@dataclass(slots=True)
class _Collection:
    target_address: int = _NO_TARGET
    col_id: int = 0


@dataclass(slots=True)
class _RdistState:
    """``struct rdists`` per-CPU part: pend_page and the RD_LOCAL_* flags."""

    pend_page: int | None = None
    lpi_enabled: bool = False
    pendtable_preallocated: bool = False
    memreserve_done: bool = False
    pend_addr: int | None = None


@dataclass(slots=True)
class ItsDevice:
    """``struct its_device``: one DeviceID, its ITT and its events' LPIs."""

    device_id: int
    itt: int
    nr_ites: int
    lpi_base: int
    nr_lpis: int
    col_map: dict[int, int] = field(default_factory=dict)


class GicV3Its:
    """One kernel generation's GICv3 + ITS driver state (``gic_rdists``, ``its_node``)."""

    def __init__(self, kernel: Kernel) -> None:
        self.k = kernel
        self.profile = kernel.profile
        m = kernel.machine
        self.its_phys = m.platform.its_base
        self.preallocated = False
        self.needs_flushing = False
        self._flushing_reported = False
        self.prop_table_pa = 0
        self.lpi_id_bits = 0
        # made on first use: three look-ups per CPU brought up, in C (setdefault built
        # a state to drop at each)
        self.rd: defaultdict[int, _RdistState] = defaultdict(_RdistState)
        self.collections: defaultdict[int, _Collection] = defaultdict(_Collection)
        self.cmd_base = 0
        self.its_typer = GitsTyper()
        self.cmd_write = 0
        self.device_table = 0
        self.device_table_indirect = False
        self.devices: dict[int, ItsDevice] = {}
        self._lpi_ranges: list[list[int]] = []  # [base, span], sorted
        self._warned_valid_col = False
        self._timeouts_logged = 0
        self.its_ok = False
        self.memreserve_cpuhp = False
        # readl_relaxed() and readq_relaxed() of a register: partials rather than methods,
        # so that none of the eleven register reads per CPU brought up adds a Python call
        self._readl: Callable[[int], int] = functools.partial(m.mem.mmio_read, size=4)
        self._readq: Callable[[int], int] = functools.partial(m.mem.mmio_read, size=8)

    # -- register helpers -----------------------------------------------------------

    def _rd_base(self, cpu: int) -> int:
        return self.k.machine.gicr_bases[cpu]

    def _write(self, addr: int, value: int, size: int, cpu: int = 0) -> None:
        self.k.machine.mem.mmio_write(addr, size, value, self.k.agent(cpu))

    # -- memory helpers -------------------------------------------------------------

    def _reserve(self, addr: int, size: int, cpu: int) -> int:
        """``gic_reserve_range()``: persistent only when EFI config tables exist."""
        efi = self.k.efi
        if efi is None or not efi.config_tables:
            return 0
        if not self.profile.registers_lpi_tables_with_efi:
            return 0
        return efi_mem_reserve_persistent(
            self.k.machine.mem,
            efi,
            self.profile,
            addr,
            size,
            self.k.agent(cpu),
            self._alloc_memreserve_node,
            self.k.in_linear_map,
            min(s for s, _ in self.k.memory),
        )

    def _alloc_memreserve_node(self) -> int:
        """v5.0+: ``__get_free_page(GFP_ATOMIC)``; v4.20: ``kmalloc(24, GFP_ATOMIC)``."""
        if self.profile.memreserve_layout == "v4.20":
            return self.k.kmalloc(24, "EFI memreserve node (kmalloc-32)")
        return self.k.alloc_pages(0x1000, "EFI memreserve list page", zero=False)

    def _warn_on_reserve(self, addr: int, size: int, cpu: int, function: str) -> None:
        if self._reserve(addr, size, cpu):
            # init_IRQ and the STARTING callbacks run in the idle task: PID 0
            self.k.log.warn(self.k.logical_id(cpu), 0, "drivers/irqchip/irq-gic-v3-its.c", function)

    def _reserve_pending(self, addr: int, cpu: int, function: str) -> None:
        """Reserve ``cpu``'s freshly allocated pending table, unless a test profile
        plants the bug of forgetting it (``planted_skip_pending_reservation``)."""
        if self.profile.planted_skip_pending_reservation == cpu:
            return
        self._warn_on_reserve(addr, lpi_pendbase_sz(self.lpi_id_bits), cpu, function)

    def gic_check_reserved_range(self, addr: int, size: int) -> bool:
        """Is ``[addr, addr+size)`` inside one reserved region (always true for kdump)?"""
        if self.k.is_kdump:
            return True
        if self.k.memblock.is_reserved_range(addr, size):
            return True
        self.k.log.printk(printk.ITS_EXPECTED_RESERVED, addr, addr + size - 1)
        self.k.log.add_taint(printk.TAINT_CRAP)
        return False

    # -- gic_init_bases -------------------------------------------------------------

    def gic_dist_init(self) -> None:
        """``gic_init_bases()``'s report: SPIs, extended SPIs, the Range Selector line
        (to 5.18), the root handler, then ``gic_update_rdist_properties()``'s PPI, VLPI or
        features lines as the version prints them; and ``gic_dist_init()``'s
        GICD_CTLR: 0 while it configures, then ARE_NS | EnableGrp1A | EnableGrp1 (v4.19.1
        drivers/irqchip/irq-gic-v3.c)."""
        gicd = self.k.machine.gicd
        log = self.k.log
        dist = self.k.machine.platform.gicd_base + GicdOffset.CTLR
        self._write(dist, 0, 4, self.k.boot_cpu)
        self._write(
            dist,
            GicdCtlr(EnableGrp1=1, EnableGrp1A=1, ARE_NS=1).encode(),
            4,
            self.k.boot_cpu,
        )
        log.printk(printk.GIC_SPIS, gicd.spis)
        log.printk(printk.GIC_ESPIS, 0)
        rss = bool(gicd.typer.RSS)
        log.printk(printk.GIC_RSS, "" if rss else "no ")
        # set_handle_irq(gic_handle_irq), then gic_update_rdist_properties()
        log.printk(printk.ROOT_IRQ, "gic_handle_irq")
        rd = GicrTyper.decode(self._readq(self._rd_base(self.k.boot_cpu) + GicrOffset.TYPER))
        # GICR_TYPER.PPInum 0: 16 PPIs (GICv3.1 extended PPIs would add 32 or 64)
        log.printk(printk.GIC_PPIS, 16)
        vlpi, direct = ("" if rd.VLPIS else "no "), ("" if rd.DirectLPI else "no ")
        log.printk(printk.GIC_VLPI, vlpi, direct)
        log.printk(printk.GIC_VLPI_RVPEID, vlpi, direct, "" if rd.RVPEID else "no ")
        log.printk(
            printk.GIC_FEATURES,
            16,
            ", RSS" if rss else "",
            ", DirectLPI" if rd.DirectLPI else "",
        )

    def found_redistributor(self, cpu: int) -> None:
        rbase = self._rd_base(cpu)
        typer = GicrTyper.decode(self._readq(rbase + GicrOffset.TYPER))
        lcpu = self.k.logical_id(cpu)
        self.k.log.printk(printk.GIC_FOUND_RDIST, lcpu, typer.Affinity_Value, 0, rbase)

    def gic_cpu_init(self, cpu: int) -> None:
        """ICC_PMR_EL1 = DEFAULT_PMR_VALUE (0xf0), ICC_IGRPEN1_EL1 = 1."""
        cpuif = self.k.machine.cpuifs[cpu]
        cpuif.msr(IccReg.PMR, 0xF0)
        cpuif.msr(IccReg.IGRPEN1, 1)

    # -- its_init -------------------------------------------------------------------

    def its_init(self) -> None:
        """Probe the ITS, then set up the LPI property (and pending) tables."""
        if not self.k.machine.gicd.lpis_supported:
            return
        base = self.its_phys
        # its_reset_one(): quiesce via its_map_one(), then zero every GITS_BASER<n>.
        if self.profile.its_reset_baser_before_probe and self.its_force_quiescent():
            for n in range(8):
                self._write(base + GitsOffset.BASER + 8 * n, 0, 8)
        if not self.its_probe_one():
            return
        self.its_ok = True
        if self.profile.reuses_preallocated_lpi_tables:
            self.allocate_lpi_tables()
        else:
            self.its_alloc_lpi_tables()

    def its_force_quiescent(self) -> bool:
        base = self.its_phys + GitsOffset.CTLR
        ctlr = GitsCtlr.decode(self._readl(base))
        if ctlr.Quiescent and not ctlr.Enabled:
            return True
        self._write(base, GitsCtlr(ITS_Number=ctlr.ITS_Number).encode(), 4)
        for _ in range(_POLL_LIMIT):
            if GitsCtlr.decode(self._readl(base)).Quiescent:
                return True
        self.k.log.line(f"ITS@{printk.pa(self.its_phys)}: Failed to quiesce, giving up")
        return False

    def its_probe_one(self) -> bool:
        base = self.its_phys
        # its_of_probe()/its_acpi_probe(): the 128 KiB GITS frame (control + translater)
        self.k.log.printk(printk.ITS_MEM, base, base + 0x20000 - 1)
        if not self.its_force_quiescent():
            return False
        typer = self.its_typer = GitsTyper.decode(self._readq(base + GitsOffset.TYPER))
        self.cmd_base = self.k.alloc_pages(ITS_CMD_QUEUE_SZ, "ITS command queue", Role("its", 0))
        self.its_alloc_tables(typer)
        cbaser = GitsCbaser(
            Size=ITS_CMD_QUEUE_SZ // 0x1000 - 1,
            Shareability=SHARE_InnerShareable,
            Physical_Address=self.cmd_base >> 12,
            InnerCache=CACHE_RaWaWb,
            Valid=1,
        )
        self._write(base + GitsOffset.CBASER, cbaser.encode(), 8)
        if (self._readq(base + GitsOffset.CBASER) ^ cbaser.encode()) & _SHR:
            # its_probe_one(): the queue is written non-shareable and flushed
            self.k.log.printk(printk.ITS_CMDQ_FLUSHING)
        self.cmd_write = 0
        self._write(base + GitsOffset.CWRITER, 0, 8)
        ctlr = GitsCtlr.decode(self._readl(base + GitsOffset.CTLR))
        self._write(
            base + GitsOffset.CTLR, GitsCtlr(Enabled=1, ITS_Number=ctlr.ITS_Number).encode(), 4
        )
        return True

    def its_alloc_tables(self, typer: GitsTyper) -> None:
        base = self.its_phys
        for n in range(8):
            reg = base + GitsOffset.BASER + 8 * n
            b = GitsBaser.decode(self._readq(reg))
            if b.Type == BaserType.NONE:
                continue
            esz = b.entry_bytes
            psz = SZ_64K
            if b.Type == BaserType.DEVICE:
                ids = typer.Devbits + 1
                # its_parse_indirect_baser(): two levels when a flat table needs more than
                # two pages and the ITS keeps GITS_BASER.Indirect when it is written.
                indirect = False
                if (esz << ids) > psz * 2:
                    probe = GitsBaser(Type=b.Type, Entry_Size=esz - 1, Indirect=1).encode()
                    self._write(reg, probe, 8)
                    indirect = bool(GitsBaser.decode(self._readq(reg)).Indirect)
                size = psz if indirect else max(psz, esz << ids)
                nr = size // (GITS_LVL1_ENTRY_SIZE if indirect else esz)
                label, role = "ITS device table", Role("its", 0)
            else:
                indirect = False
                size = psz
                nr = psz // esz
                label, role = "ITS collection table", Role("its", 0)
            addr = self.k.alloc_pages(size, label, role)
            val = GitsBaser(
                Size=size // psz - 1,
                Page_Size=0b10,
                Shareability=SHARE_InnerShareable,
                Physical_Address=addr >> 12,
                Entry_Size=esz - 1,
                Type=b.Type,
                InnerCache=CACHE_RaWaWb,
                Indirect=int(indirect),
                Valid=1,
            )
            self._write(reg, val.encode(), 8)
            back = GitsBaser.decode(self._readq(reg))
            if b.Type == BaserType.DEVICE:
                self.device_table = addr
                self.device_table_indirect = bool(back.Indirect)
            self.k.log.printk(
                printk.ITS_ALLOCATED,
                self.its_phys,
                nr,
                BaserType.NAMES[b.Type],
                addr,
                "indirect" if back.Indirect else "flat",
                esz,
                psz // 1024,
                back.Shareability,
            )

    # -- LPI tables ------------------------------------------------------------------

    def its_alloc_lpi_tables(self) -> None:
        """Before the v4.20 series: always a fresh property table, nothing reserved."""
        self.lpi_id_bits = min(self.k.machine.gicd.id_bits, ITS_MAX_LPI_NRBITS)
        self.prop_table_pa = self.its_allocate_prop_table(lpi_propbase_sz(self.lpi_id_bits))
        self.k.log.printk(printk.ITS_PROP_TABLE_OLD, self.prop_table_pa)
        self.gic_reset_prop_table()
        self.its_lpi_init()

    def its_allocate_prop_table(self, size: int) -> int:
        """``its_allocate_prop_table()``: the property table's pages, not zeroed (the
        caller resets every entry); raises OutOfMemory."""
        return self.k.alloc_pages(size, "LPI property table", Role("prop"), zero=False)

    def its_allocate_pending_table(self, cpu: int, size: int) -> int:
        """``its_allocate_pending_table()``: ``cpu``'s zeroed pending table, allocated at
        ITS init and kept spare until the CPU comes up; raises OutOfMemory."""
        return self.k.alloc_pages(size, f"LPI pending table CPU{cpu} (spare)")

    def allocate_lpi_tables(self) -> None:
        rbase = self._rd_base(self.k.boot_cpu)
        ctlr = GicrCtlr.decode(self._readl(rbase + GicrOffset.CTLR))
        if ctlr.EnableLPIs and self.enabled_lpis_allowed():
            self.preallocated = True
            self.needs_flushing = True
            self.k.log.printk(printk.ITS_PREALLOCATED)
        self.its_setup_lpi_prop_table()
        for cpu in self.k.possible_cpus:
            try:
                page = self.its_allocate_pending_table(cpu, lpi_pendbase_sz(self.lpi_id_bits))
            except OutOfMemory:
                self.k.log.line(f"Failed to allocate PENDBASE for CPU{self.k.logical_id(cpu)}")
                return
            self.rd[cpu].pend_page = page

    def enabled_lpis_allowed(self) -> bool:
        val = GicrPropbaser.decode(
            self._readq(self._rd_base(self.k.boot_cpu) + GicrOffset.PROPBASER)
        )
        # lpi_id_bits is still 0 here, so LPI_PROPBASE_SZ is 64 KiB (v6.1 its_init()).
        return self.gic_check_reserved_range(val.address, lpi_propbase_sz(0))

    def its_setup_lpi_prop_table(self) -> None:
        if self.preallocated:
            val = GicrPropbaser.decode(
                self._readq(self._rd_base(self.k.boot_cpu) + GicrOffset.PROPBASER)
            )
            self.lpi_id_bits = val.lpi_id_bits
            self.prop_table_pa = val.address
            self.k.claim(
                self.prop_table_pa,
                lpi_propbase_sz(self.lpi_id_bits),
                Owner("LPI property table (reused)", Role("prop")),
            )
            self.gic_reset_prop_table()
        else:
            self.lpi_id_bits = min(self.k.machine.gicd.id_bits, ITS_MAX_LPI_NRBITS)
            size = lpi_propbase_sz(self.lpi_id_bits)
            try:
                self.prop_table_pa = self.its_allocate_prop_table(size)
            except OutOfMemory:
                self.k.log.line("Failed to allocate PROPBASE")
                return
            self.gic_reset_prop_table()
            self._warn_on_reserve(self.prop_table_pa, size, self.k.boot_cpu, "its_init")
        self.k.log.printk(printk.ITS_PROP_TABLE, self.prop_table_pa)
        self.its_lpi_init()

    def gic_reset_prop_table(self) -> None:
        """Every LPI: priority 0xa0, Group-1, disabled.

        A "reused" table that lies in one of this kernel's own boot segments (a kexec
        loader put the image or initrd over the old, unpublished table, whose range then
        looks reserved) is overwritten with 0xa2 bytes: over the image, the kernel's code
        and data are gone; over the initramfs, the archive no longer unpacks.
        """
        size = lpi_propbase_sz(self.lpi_id_bits)
        k = self.k
        hit = k.segment_at(self.prop_table_pa, size)
        if hit is not None and hit[0] == SEG_IMAGE:
            img, img_size = k.image
            # memset() writes 0xa2 over the code it runs from: no further output (the
            # real 6.1 DT kexec of this layout hangs silently, as issue reports say).
            raise KernelFault(
                f"hang: gic_reset_prop_table() overwrote the kernel's own image: the "
                f"'reused' property table @{self.prop_table_pa:#x} is inside the image "
                f"[{img:#x}, {img + img_size:#x}) that the loader placed over it",
                [],
            )
        if hit is not None and hit[0] == SEG_INITRD:
            k.gic_hit(SEG_INITRD, self.prop_table_pa, "gic_reset_prop_table()")
        k.machine.mem.fill(
            self.prop_table_pa, size, LPI_PROP_DEFAULT_PRIO | LPI_PROP_GROUP1, k.agent(k.boot_cpu)
        )

    def its_lpi_init(self) -> None:
        self._lpi_ranges = [[LPI_INTID_BASE, (1 << self.lpi_id_bits) - LPI_INTID_BASE]]

    def its_lpi_alloc(self, nr: int) -> tuple[int, int] | None:
        """First fit, halving the request until a range fits (ITS-5.1x)."""
        while nr > 0:
            for r in self._lpi_ranges:
                if r[1] >= nr:
                    base = r[0]
                    r[0] += nr
                    r[1] -= nr
                    self._lpi_ranges = [x for x in self._lpi_ranges if x[1]]
                    return base, nr
            nr //= 2
        return None

    # -- per CPU ----------------------------------------------------------------------

    def its_cpu_init(self, cpu: int) -> None:
        """``gic_starting_cpu()`` -> ``its_cpu_init()`` on ``cpu``: a CPU whose
        redistributor refuses to drop EnableLPIs gets no LPIs and no collection."""
        if not self.its_ok:
            return
        if self.redist_disable_lpis(cpu):
            return
        if self.profile.reuses_preallocated_lpi_tables:
            self.its_cpu_init_lpis(cpu)
        else:
            self.its_cpu_init_lpis_v4_19(cpu)
        self.its_cpu_init_collections(cpu)

    def redist_disable_lpis(self, cpu: int) -> int:
        """Clear a left-over EnableLPIs before the tables are programmed (0, or -errno).

        Linux v4.19.1 ``drivers/irqchip/irq-gic-v3-its.c`` ``redist_disable_lpis()``
        returns 0 first when the CPU already has a pending table (a hotplug: v4.19
        allocates it in ``its_cpu_init_lpis()``); v4.20 ``redist_disable_lpis()`` instead
        skips the damage control once EnableLPIs is found set on a CPU that has
        ``lpi_enabled`` or when the tables are preallocated.  Both then warn, taint
        TAINT_CRAP, clear the bit, wait for RWP and read it back: -ETIMEDOUT, -EBUSY.
        """
        rbase = self._rd_base(cpu)
        st = self.rd[cpu]
        if not self.profile.reuses_preallocated_lpi_tables and st.pend_page is not None:
            return 0
        typer = GicrTyper.decode(self._readq(rbase + GicrOffset.TYPER))
        if not typer.PLPIS:
            self.k.log.printk(printk.ITS_NO_LPIS, self.k.logical_id(cpu))
            return -6
        val = self._readl(rbase + GicrOffset.CTLR)
        if not GicrCtlr.decode(val).EnableLPIs:
            return 0
        if self.profile.reuses_preallocated_lpi_tables and (st.lpi_enabled or self.preallocated):
            return 0
        lcpu = self.k.logical_id(cpu)
        self.k.log.printk(printk.ITS_BOOTED_ENABLED, lcpu)
        self.k.log.add_taint(printk.TAINT_CRAP)
        self._write(rbase + GicrOffset.CTLR, val & ~1, 4, cpu)
        for _ in range(_POLL_LIMIT + 1):
            if not GicrCtlr.decode(self._readl(rbase + GicrOffset.CTLR)).RWP:
                break
        else:
            self.k.log.printk(printk.ITS_TIMEOUT_DISABLE, lcpu)
            return -110
        if GicrCtlr.decode(self._readl(rbase + GicrOffset.CTLR)).EnableLPIs:
            self.k.log.printk(printk.ITS_FAILED_DISABLE, lcpu)
            return -16
        return 0

    def its_cpu_init_lpis(self, cpu: int) -> None:
        rbase = self._rd_base(cpu)
        st = self.rd[cpu]
        if st.lpi_enabled:
            return
        ctlr = GicrCtlr.decode(self._readl(rbase + GicrOffset.CTLR))
        if self.preallocated and ctlr.EnableLPIs:
            prop = GicrPropbaser.decode(self._readq(rbase + GicrOffset.PROPBASER)).address
            lcpu = self.k.logical_id(cpu)
            if prop != self.prop_table_pa:
                self.k.log.warn(lcpu, 0, "drivers/irqchip/irq-gic-v3-its.c", "its_cpu_init_lpis")
                self.k.log.add_taint(printk.TAINT_CRAP)
            paddr = GicrPendbaser.decode(self._readq(rbase + GicrOffset.PENDBASER)).address
            size = lpi_pendbase_sz(self.lpi_id_bits)
            if not self.gic_check_reserved_range(paddr, size):
                self.k.log.warn(lcpu, 0, "drivers/irqchip/irq-gic-v3-its.c", "its_cpu_init_lpis")
            st.pendtable_preallocated = True
            self.k.claim(
                paddr, size, Owner(f"LPI pending table CPU{cpu} (reused)", Role("pend", cpu))
            )
            if not self.profile.pending_memreserve_at_online and st.pend_page is not None:
                self.k.free_pages(st.pend_page, size)
                st.pend_page = None
        else:
            assert st.pend_page is not None
            paddr = st.pend_page
            self._program_rd(cpu, paddr)
            if not self.profile.pending_memreserve_at_online:
                self._reserve_pending(paddr, cpu, "its_cpu_init")
        st.pend_addr = paddr
        st.lpi_enabled = True
        self.k.log.printk(
            printk.ITS_PEND_TABLE,
            self.k.logical_id(cpu),
            "reserved" if st.pendtable_preallocated else "allocated",
            paddr,
        )

    def its_cpu_init_lpis_v4_19(self, cpu: int) -> None:
        """Linux v4.19.1 ``its_cpu_init_lpis()``: allocate this CPU's pending table on
        first use ("CPU%d: using LPI pending table @%pa") and program both tables; no
        reuse, nothing reserved."""
        st = self.rd[cpu]
        if st.pend_page is None:
            try:
                st.pend_page = self.k.alloc_pages(
                    lpi_pendbase_sz(self.lpi_id_bits),
                    f"LPI pending table CPU{cpu}",
                    Role("pend", cpu),
                )
            except OutOfMemory:
                self.k.log.line(f"Failed to allocate PENDBASE for CPU{cpu}")
                return
            self.k.log.printk(printk.ITS_PEND_TABLE_OLD, self.k.logical_id(cpu), st.pend_page)
        self._program_rd(cpu, st.pend_page)
        st.pend_addr = st.pend_page
        st.lpi_enabled = True

    def _program_rd(self, cpu: int, pend: int) -> None:
        """Write PROPBASER and PENDBASER (probing shareability) and set EnableLPIs."""
        rbase = self._rd_base(cpu)
        prop = GicrPropbaser(
            IDbits=self.lpi_id_bits - 1,
            InnerCache=CACHE_RaWaWb,
            Shareability=SHARE_InnerShareable,
            Physical_Address=self.prop_table_pa >> 12,
        )
        self._write(rbase + GicrOffset.PROPBASER, prop.encode(), 8, cpu)
        if (self._readq(rbase + GicrOffset.PROPBASER) ^ prop.encode()) & _SHR:
            if not self._flushing_reported:  # its_cpu_init_lpis()'s pr_info_once()
                self._flushing_reported = True
                self.k.log.printk(printk.GIC_PROP_FLUSHING)
            self.needs_flushing = True
        pendval = GicrPendbaser(
            InnerCache=CACHE_RaWaWb,
            Shareability=SHARE_InnerShareable,
            Physical_Address=pend >> 16,
        )
        self._write(rbase + GicrOffset.PENDBASER, pendval.encode(), 8, cpu)
        self.k.claim(
            pend,
            lpi_pendbase_sz(self.lpi_id_bits),
            Owner(f"LPI pending table CPU{cpu}", Role("pend", cpu)),
        )
        val = self._readl(rbase + GicrOffset.CTLR)
        self._write(rbase + GicrOffset.CTLR, val | 1, 4, cpu)

    def its_cpu_init_collections(self, cpu: int) -> None:
        col = self.collections[cpu]
        if self.its_typer.PTA:
            # physical target address of the redistributor
            col.target_address = self._rd_base(cpu)
        else:
            # Linux processor number
            typer = GicrTyper.decode(self._readq(self._rd_base(cpu) + GicrOffset.TYPER))
            col.target_address = typer.Processor_Number << 16
        col.col_id = cpu
        self.its_send(Mapc(ICID=col.col_id, RDbase=col.target_address >> 16, V=1), col, cpu)
        self.its_send(Invall(ICID=col.col_id), None, cpu)

    def its_cpu_memreserve_lpi(self, cpu: int) -> None:
        """v5.17+ CPUHP_AP_ONLINE_DYN callback: free the spare or reserve the fresh table."""
        st = self.rd[cpu]
        if st.memreserve_done:
            return
        size = lpi_pendbase_sz(self.lpi_id_bits)
        if st.pend_page is not None:
            if st.pendtable_preallocated:
                self.k.free_pages(st.pend_page, size)
                st.pend_page = None
            else:
                self._reserve_pending(st.pend_page, cpu, "its_cpu_memreserve_lpi")
        st.memreserve_done = True

    def its_lpi_memreserve_init(self) -> None:
        """Registers the online callback only when EFI config tables exist."""
        efi = self.k.efi
        if not self.profile.pending_memreserve_at_online or efi is None or not efi.config_tables:
            return
        if not self.its_ok:
            return
        self.memreserve_cpuhp = True

    # -- command queue ----------------------------------------------------------------

    def valid_col(self, col: _Collection) -> bool:
        if col.target_address & 0xFFFF:
            if not self._warned_valid_col:
                self._warned_valid_col = True
                # reached from driver probe, which runs in kernel_init (PID 1)
                self.k.log.warn(0, 1, "drivers/irqchip/irq-gic-v3-its.c", "valid_col")
            return False
        return True

    def its_send(self, cmd: ItsCommand, sync_col: _Collection | None, cpu: int = 0) -> None:
        """``its_send_single_command()``: queue ``cmd`` (+ SYNC to ``sync_col``), kick, wait."""
        cmds = [cmd]
        if sync_col is not None and self.valid_col(sync_col):
            cmds.append(Sync(RDbase=sync_col.target_address >> 16))
        # _readq() and _write() without their calls, the writer looked up once (two
        # commands per CPU brought up take this path)
        mem = self.k.machine.mem
        agent = self.k.agent(cpu)
        creadr = self.its_phys + GitsOffset.CREADR
        first = self.cmd_write
        # BUILD_SINGLE_CMD_FUNC reads GITS_CREADR before posting (since a050fa5476d4)
        prev_idx = mem.mmio_read(creadr, 8) & 0xFFFFFFFF
        for c in cmds:
            mem.write(self.cmd_base + self.cmd_write, c.to_bytes(), agent)
            self.cmd_write = (self.cmd_write + CMD_BYTES) % ITS_CMD_QUEUE_SZ
        mem.mmio_write(self.its_phys + GitsOffset.CWRITER, 8, self.cmd_write, agent)
        # its_wait_for_range_completion(): the model ITS is synchronous, so one read tells.
        rd_idx = mem.mmio_read(creadr, 8) & 0xFFFFFFFF
        if rd_idx & ~1 != self.cmd_write and self._timeouts_logged < _RATELIMIT_BURST:
            self._timeouts_logged += 1
            fmt = printk.ITS_QUEUE_TIMEOUT.at(self.profile.version)
            if fmt is not None and fmt.count("%llu") == 3:
                self.k.log.printk(fmt, first, self.cmd_write, rd_idx)
            elif fmt is not None:
                to_idx = self.cmd_write + (ITS_CMD_QUEUE_SZ if self.cmd_write < prev_idx else 0)
                delta = rd_idx - prev_idx + (ITS_CMD_QUEUE_SZ if rd_idx < prev_idx else 0)
                self.k.log.printk(fmt, to_idx, prev_idx + delta)
            self.k.log.printk(printk.ITS_CMD_FAILED, f"its_build_{type(cmd).__name__.lower()}_cmd")

    # -- MSI domain ---------------------------------------------------------------------

    def its_alloc_device_table(self, device_id: int) -> bool:
        if not self.device_table_indirect:
            return True
        per_page = SZ_64K // 8
        idx = device_id // per_page
        if idx >= SZ_64K // GITS_LVL1_ENTRY_SIZE:
            return False
        mem = self.k.machine.mem
        l1 = self.device_table + idx * GITS_LVL1_ENTRY_SIZE
        if mem.read_u64(l1) == 0:
            page = self.k.alloc_pages(SZ_64K, "ITS device table (level 2)", Role("its", 0))
            mem.write_u64(l1, page | _L1_VALID, self.k.agent(self.k.boot_cpu))
        return True

    def its_create_device(self, device_id: int, nvecs: int) -> ItsDevice | None:
        if not self.its_ok or not self.its_alloc_device_table(device_id):
            return None
        nr_ites = max(2, 1 << (nvecs - 1).bit_length())
        lpis = self.its_lpi_alloc(nvecs)
        if lpis is None:
            return None
        # its_create_device(): nr_ites * ITT_entry_size bytes, at least ITS_ITT_ALIGN (the
        # model allocates whole pages).
        sz = max(nr_ites * (self.its_typer.ITT_entry_size + 1), ITS_ITT_ALIGN)
        itt = self.k.alloc_pages(
            -(-sz // 0x1000) * 0x1000, f"ITT of device {device_id:#06x}", Role("its", 0)
        )
        dev = ItsDevice(device_id, itt, nr_ites, lpis[0], lpis[1])
        self.devices[device_id] = dev
        self.its_send(
            Mapd(DeviceID=device_id, Size=nr_ites.bit_length() - 2, ITT_addr=itt >> 8, V=1), None
        )
        return dev

    def its_irq_domain_activate(self, dev: ItsDevice, event: int, cpu: int) -> None:
        dev.col_map[event] = cpu
        col = self.collections[cpu]
        self.its_send(
            Mapti(
                DeviceID=dev.device_id, EventID=event, pINTID=dev.lpi_base + event, ICID=col.col_id
            ),
            col,
        )

    def its_set_affinity(self, dev: ItsDevice, event: int, cpu: int) -> None:
        """Retarget an event to ``cpu``'s collection (MOVI + SYNC)."""
        dev.col_map[event] = cpu
        col = self.collections[cpu]
        self.its_send(Movi(DeviceID=dev.device_id, EventID=event, ICID=col.col_id), col)

    def lpi_update_config(self, dev: ItsDevice, event: int, enable: bool) -> None:
        """Set or clear LPI_PROP_ENABLED in the property table, then INV (+SYNC)."""
        hwirq = dev.lpi_base + event
        cfg = LpiConfig(Enable=int(enable), Group1=1, Priority=LPI_PROP_DEFAULT_PRIO >> 2)
        self.k.machine.mem.write_u8(
            self.prop_table_pa + hwirq - LPI_INTID_BASE, cfg.encode(), self.k.agent(self.k.boot_cpu)
        )
        col = self.collections[dev.col_map.get(event, 0)]
        self.its_send(Inv(DeviceID=dev.device_id, EventID=event), col)

    def its_irq_domain_deactivate(self, dev: ItsDevice, event: int) -> None:
        col = self.collections[dev.col_map.get(event, 0)]
        self.its_send(Discard(DeviceID=dev.device_id, EventID=event), col)

    def its_free_device(self, dev: ItsDevice) -> None:
        self.its_send(Mapd(DeviceID=dev.device_id, Size=0, ITT_addr=0, V=0), None)
        self.devices.pop(dev.device_id, None)
