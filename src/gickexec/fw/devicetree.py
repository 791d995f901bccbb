"""What a flattened device tree tells the next kernel about memory the GIC still uses,
and the boot-loader code that writes it.

Only the parts that decide where LPI tables may live across a kexec are modelled: the
``/reserved-memory`` children (every Linux honours them: ``early_init_fdt_scan_reserved_mem()``
``memblock_reserve()``\\ s each one without ``no-map``, drivers/of/of_reserved_mem.c and
drivers/of/fdt.c, v4.19.1 to v6.6), which of them the GIC node names in a
``memory-region`` property, and a Kexec HandOver sub-tree for the GIC (a design: no
upstream GIC code writes one, see docs/dt-fixes.md).

U-Boot's side is ``gic_lpi_tables_init()`` (arch/arm/lib/gic-v3-its.c) and
``fdt_fixup_gic_lpi_memory()`` as the Layerscape boards call them from
``ft_board_setup()`` (board/freescale/lx2160a/lx2160a.c, ``GIC_LPI_SIZE`` 0x200000).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from gickexec.arch.gicv3 import (
    CACHE_RaWaWb,
    GicdOffset,
    GicdTyper,
    GicrCtlr,
    GicrOffset,
    GicrPendbaser,
    GicrPropbaser,
    SHARE_InnerShareable,
)
from gickexec.hw.machine import Machine
from gickexec.hw.memory import Agent, AgentKind

__all__ = [
    "GIC_LPI_SIZE",
    "Fdt",
    "KhoGicTables",
    "ReservedMemory",
    "fdt_fixup_gic_lpi_memory",
    "gic_lpi_tables_init",
    "lpi_carveout_base",
]

#: board/freescale/lx2160a/lx2160a.c: the firmware-owned LPI area (property table, then
#: one 64 KiB pending table per redistributor)
GIC_LPI_SIZE = 0x200000
#: ITS_MAX_LPI_NRBITS in U-Boot's and Linux's drivers
ITS_MAX_LPI_NRBITS = 16
SZ_64K = 0x10000
#: Where the model puts a fixed LPI area: this far below the top of the first RAM bank,
#: above every firmware region the model's UEFI layouts place (the Layerscape boards put
#: it just below ``gd->arch.resv_ram``, the top carve-out for the MC firmware).
CARVEOUT_BELOW_TOP = 0x10000000 + GIC_LPI_SIZE
_FIRMWARE = Agent(AgentKind.FIRMWARE)


@dataclass(frozen=True, slots=True)
class ReservedMemory:
    """One ``/reserved-memory`` child: ``reg = <base size>``, no ``no-map``."""

    name: str
    base: int
    size: int
    #: the GIC node's ``memory-region`` phandle list names it
    gic_memory_region: bool = False


@dataclass(frozen=True, slots=True)
class KhoGicTables:
    """The design's KHO sub-tree ``/gic-v3-lpi`` under ``/chosen/linux,kho-fdt``:
    ``compatible = "gickexec,gic-v3-lpi-tables-v1"``, ``prop-table = <base size>``,
    ``pend-tables = <mpidr base size>...``; every range also ``kho_preserve_phys()``'d."""

    prop: tuple[int, int]
    pend: tuple[tuple[int, int, int], ...]

    @property
    def ranges(self) -> list[tuple[int, int]]:
        return [self.prop, *((b, s) for _, b, s in self.pend)]


@dataclass(frozen=True, slots=True)
class Fdt:
    """The device tree a kernel boots with, as far as LPI tables go."""

    reserved: tuple[ReservedMemory, ...] = ()
    #: ``/chosen/linux,kho-fdt`` holds a GIC sub-tree (only ``kexec -s`` with ``kho=on``)
    kho: KhoGicTables | None = None

    def with_gic_memory_region(self, ranges: list[tuple[int, int]]) -> Fdt:
        """The tree with the GIC's ``memory-region`` nodes replaced by ``ranges``
        (``gic-lpi@<base>``), the other reserved nodes kept."""
        keep = tuple(r for r in self.reserved if not r.gic_memory_region)
        new = tuple(ReservedMemory(f"gic-lpi@{b:x}", b, s, True) for b, s in ranges)
        return dataclasses.replace(self, reserved=keep + new)

    def without_kho(self) -> Fdt:
        return dataclasses.replace(self, kho=None)


def lpi_carveout_base(machine: Machine) -> int:
    """The fixed LPI area of the model's firmware-owned and same-placement fixes."""
    first = machine.mem.ram[0]
    return (first.end - CARVEOUT_BELOW_TOP) & ~(SZ_64K - 1)


def gic_lpi_tables_init(machine: Machine, base: int, num_redist: int) -> str:
    """U-Boot's ``gic_lpi_tables_init(base, num_redist)``: the property table at
    ``base``, zeroed pending tables after it, PTZ, EnableLPIs on every redistributor.
    Returns "" or U-Boot's error message.

    U-Boot writes GICR_PROPBASER of the first redistributor only; the model writes every
    redistributor's (a GIC whose redistributors each have their own PROPBASER needs it,
    and docs/dt-fixes.md lists it among what the fix asks of firmware)."""
    mem = machine.mem
    typer = GicdTyper.decode(mem.mmio_read(machine.platform.gicd_base + GicdOffset.TYPER, 4))
    if not typer.LPIS:
        return "GIC implementation does not support LPI's"
    rbases = [machine.gicr_base(i) for i in range(num_redist)]
    for i, rbase in enumerate(rbases):
        if GicrCtlr.decode(mem.mmio_read(rbase + GicrOffset.CTLR, 4)).EnableLPIs:
            return f"Re-Distributor {i} LPI is already enabled"
    id_bits = min(typer.IDbits + 1, ITS_MAX_LPI_NRBITS)
    prop_size = ((1 << id_bits) + SZ_64K - 1) & ~(SZ_64K - 1)
    pend_size = (((1 << id_bits) // 8) + SZ_64K - 1) & ~(SZ_64K - 1)
    mem.fill(base + prop_size, num_redist * pend_size, 0, _FIRMWARE)
    prop = GicrPropbaser(
        IDbits=id_bits - 1,
        InnerCache=CACHE_RaWaWb,
        Shareability=SHARE_InnerShareable,
        Physical_Address=base >> 12,
    )
    for i, rbase in enumerate(rbases):
        mem.mmio_write(rbase + GicrOffset.PROPBASER, 8, prop.encode(), _FIRMWARE)
        pend = GicrPendbaser(
            InnerCache=CACHE_RaWaWb,
            Shareability=SHARE_InnerShareable,
            Physical_Address=(base + prop_size + i * pend_size) >> 16,
            PTZ=1,
        )
        mem.mmio_write(rbase + GicrOffset.PENDBASER, 8, pend.encode(), _FIRMWARE)
        mem.mmio_write(rbase + GicrOffset.CTLR, 4, 1, _FIRMWARE)
    return ""


def fdt_fixup_gic_lpi_memory(fdt: Fdt, base: int) -> Fdt:
    """U-Boot's ``fdt_fixup_gic_lpi_memory()``: ``fdtdec_add_reserved_memory(blob,
    "gic-lpi", ...)`` over ``[base, base + GIC_LPI_SIZE)``, no ``no-map``; the GIC node
    does not reference it."""
    node = ReservedMemory("gic-lpi", base, GIC_LPI_SIZE)
    return dataclasses.replace(fdt, reserved=(*fdt.reserved, node))
