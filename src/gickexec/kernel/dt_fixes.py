"""Linux with the device-tree handover fixes of docs/dt-fixes.md, per kernel generation.

Every kernel here honours the ``/reserved-memory`` nodes of the device tree it booted
with: ``arm64_memblock_init()`` -> ``early_init_fdt_scan_reserved_mem()`` reserves each
one after the image, initrd and DTB (arch/arm64/mm/init.c, drivers/of/fdt.c, v4.19.1 to
v6.6).  Nothing in the GIC driver reads them: the reuse of v4.20+ only asks
``gic_check_reserved_range()`` whether the programmed tables lie in a reserved range,
which such a node answers as well as the EFI memreserve list does.

What a kernel additionally *knows* is a set of :data:`Knows` names:

``memory-region``
    Hands its LPI tables to the next kernel as ``/reserved-memory`` nodes named by the
    GIC node's ``memory-region`` (LKML, August 2019, "Allow kexec reboot for GICv3 and
    device tree"; author and message id UNCONFIRMED).  Only a loader the kernel drives can
    put them in: ``kexec_file_load()`` builds the next DTB from the kernel's own
    (arm64 ``create_dtb()``, v5.0; ``of_kexec_alloc_and_setup_fdt()``, v5.15), while
    kexec-tools copies the boot-time blob ``/sys/firmware/fdt`` (kexec/arch/arm64/
    kexec-arm64.c ``read_1st_dtb()`` -> ``read_sys_dtb()``), which a running kernel
    never changes.
``kho``
    Kexec HandOver (Linux 6.16+, ``kho=on``, ``kexec -s``): the tables preserved with
    ``kho_preserve_phys()`` and described in a GIC sub-tree of the KHO FDT that
    ``/chosen/linux,kho-fdt`` points to; the next KHO kernel reserves preserved memory
    while it deserialises the KHO memory map (kernel/kexec_handover.c, v6.16).  A design:
    no upstream GIC driver preserves its tables through KHO.
``same-placement``
    Allocates the tables at a fixed address reserved before anything else, so the next
    kernel that does the same finds them where it would have put them.
"""

from __future__ import annotations

from typing import Any, Literal

from gickexec.arch.gicv3 import lpi_pendbase_sz, lpi_propbase_sz
from gickexec.fw.devicetree import Fdt, KhoGicTables, gic_lpi_size, lpi_carveout_base
from gickexec.kernel.gic_v3_its import GicV3Its
from gickexec.kernel.kernel import Kernel
from gickexec.kernel.kexec import Loader
from gickexec.kernel.mm import Owner, Role

__all__ = ["FixGic", "FixKernel", "Knows"]

Knows = Literal["memory-region", "kho", "same-placement"]


class FixGic(GicV3Its):
    """The ITS driver of a kernel that places its tables at the fixed LPI area
    (``same-placement``): property table first, then a pending table per CPU, as
    U-Boot's ``gic_lpi_tables_init()`` lays them out."""

    def _fixed(self) -> bool:
        k = self.k
        return isinstance(k, FixKernel) and "same-placement" in k.knows

    def its_allocate_prop_table(self, size: int) -> int:
        if not self._fixed():
            return super().its_allocate_prop_table(size)
        base = lpi_carveout_base(self.k.machine)
        self.k.claim(base, size, Owner("LPI property table (fixed placement)", Role("prop")))
        return base

    def its_allocate_pending_table(self, cpu: int, size: int) -> int:
        # Reusing the tables, the driver still allocates a spare per CPU and frees it
        # once the CPU runs on the old one: the spare must not be the fixed table itself.
        if not self._fixed() or self.preallocated:
            return super().its_allocate_pending_table(cpu, size)
        prop = lpi_propbase_sz(self.lpi_id_bits)
        addr = lpi_carveout_base(self.k.machine) + prop + cpu * size
        self.k.claim(addr, size, Owner(f"LPI pending table CPU{cpu} (fixed placement)"))
        self.k.machine.mem.fill(addr, size, 0, self.k.agent())
        return addr


class FixKernel(Kernel):
    """A Linux generation that boots with device tree ``fdt`` and implements ``knows``."""

    def __init__(self, *args: Any, fdt: Fdt, knows: frozenset[Knows], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fdt = fdt
        self.knows = knows
        self.gic = FixGic(self)

    def _place_image(self) -> None:
        """``arm64_memblock_init()``: after the image, initrd and DTB, the device tree's
        reserved memory; a KHO kernel also keeps what the last one preserved; a
        same-placement kernel reserves its fixed LPI area."""
        super()._place_image()
        for node in self.fdt.reserved:
            self._reserve_if_mapped(node.base, node.size, f"reserved-memory {node.name}")
        if "kho" in self.knows and self.fdt.kho is not None:
            for base, size in self.fdt.kho.ranges:
                self._reserve_if_mapped(base, size, "KHO preserved memory (GIC LPI table)")
        if "same-placement" in self.knows:
            base = lpi_carveout_base(self.machine)
            size = gic_lpi_size(self.machine.platform.cpus)
            self._reserve_if_mapped(base, size, "LPI tables (fixed placement)")

    def _reserve_if_mapped(self, base: int, size: int, label: str) -> None:
        # a capture kernel's memory is the crashkernel region: what lies outside it is
        # not its to reserve (and is_kdump_kernel() lets it reuse the tables anyway)
        if self.in_linear_map(base, size):
            self._memblock_reserve(base, size, label)

    def lpi_table_ranges(self) -> list[tuple[int, int]]:
        """The property table and every online CPU's pending table, as programmed."""
        gic = self.gic
        if not gic.its_ok or not gic.lpi_id_bits:
            return []
        pend = lpi_pendbase_sz(gic.lpi_id_bits)
        return [(gic.prop_table_pa, lpi_propbase_sz(gic.lpi_id_bits))] + [
            (st.pend_addr, pend) for st in gic.rd.values() if st.pend_addr is not None
        ]

    def published_lpi_tables(self) -> list[tuple[int, int]]:
        """The tables a ``memory-region`` or ``kho`` kernel reserves for the handover:
        it marks them reserved in memblock and /proc/iomem at allocation, as
        ``efi_mem_reserve_persistent()`` does since v5.5 and v5.14, so that neither loader
        places the next kernel on them."""
        return self.lpi_table_ranges() if self.knows & {"memory-region", "kho"} else []

    def handover_fdt(self, loader: Loader, *, kdump: bool) -> Fdt:
        """The device tree the next kernel gets: kexec-tools (``kexec -l`` and ``-p``)
        copies ``/sys/firmware/fdt``, the tree this kernel booted with; ``kexec_file_load()``
        builds it from the same tree, where a kernel that knows ``memory-region`` replaces
        the GIC's reserved nodes with its current tables and a ``kho`` kernel adds its KHO
        sub-tree.  A KHO tree describes one handover and is never copied on."""
        fdt = self.fdt.without_kho()
        if loader != "kexec_file_load" or kdump:
            return fdt
        ranges = self.lpi_table_ranges()
        if not ranges:
            return fdt
        if "memory-region" in self.knows:
            fdt = fdt.with_gic_memory_region(ranges)
        if "kho" in self.knows:
            mpidrs = [
                self.machine.platform.mpidr(c)
                for c, st in self.gic.rd.items()
                if st.pend_addr is not None
            ]
            fdt = Fdt(
                fdt.reserved,
                KhoGicTables(
                    ranges[0],
                    tuple((m, b, s) for m, (b, s) in zip(mpidrs, ranges[1:], strict=True)),
                ),
            )
        return fdt
