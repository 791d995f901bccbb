"""What a flattened device tree tells the next kernel about memory the GIC still uses,
and the boot-loader code that writes it.

Only the parts that decide where LPI tables may live across a kexec are modelled: the
``/reserved-memory`` children (every Linux honours them: ``early_init_fdt_scan_reserved_mem()``
``memblock_reserve()``\\ s each one without ``no-map``, drivers/of/of_reserved_mem.c and
drivers/of/fdt.c, v4.19.1 to v6.6), which of them the GIC node names in a
``memory-region`` property, and a Kexec HandOver sub-tree for the GIC (a design: no
upstream GIC code writes one, see docs/dt-fixes.md).

U-Boot's side is NXP Layerscape's "LPI one-way reset" workaround: U-Boot commits
a4625d494bf ("board: fsl: lx2160a: Program GIC LPI configuration table") and 8cf113f473f
("board: fsl: lx2160a: Add GIC LPI memory reserve fixup", ``fdt_fixup_gic_lpi_memory()``,
a "gic-lpi" node) (v2020.04), moved by f40b120e936 ("fsl-layerscape: Move GIC RD tables
init to soc.c") (v2020.07) into arch/arm/cpu/armv8/fsl-layerscape/soc.c
``ls_gic_rd_tables_init()``, which the model follows (as of U-Boot 6073c36b2c8d): a
"gic-rd-tables" node, then arch/arm/lib/gic-v3-its.c ``gic_lpi_tables_init()``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from gickexec.arch.gicv3 import (
    ITS_MAX_LPI_NRBITS,
    CACHE_RaWaWb,
    GicdOffset,
    GicdTyper,
    GicrCtlr,
    GicrOffset,
    GicrPendbaser,
    GicrPropbaser,
    SHARE_InnerShareable,
    lpi_pendbase_sz,
    lpi_propbase_sz,
)
from gickexec.hw.machine import Machine
from gickexec.hw.memory import Agent, AgentKind

__all__ = [
    "Fdt",
    "KhoGicTables",
    "ReservedMemory",
    "fdt_add_resv_mem_gic_rd_tables",
    "gic_lpi_size",
    "gic_lpi_tables_init",
    "lpi_carveout_base",
]

SZ_64K = 0x10000
SZ_1M = 0x100000
#: Where the model puts a fixed LPI area: it ends this far below the top of the first RAM
#: bank, above every firmware region the model's UEFI layouts place (Layerscape puts it
#: just below ``gd->arch.resv_ram``, the top carve-out for the MC firmware).
CARVEOUT_BELOW_TOP = 0x10000000
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
        (``gic-lpi@<base>``, the model's name), the other reserved nodes kept."""
        keep = tuple(r for r in self.reserved if not r.gic_memory_region)
        new = tuple(ReservedMemory(f"gic-lpi@{b:x}", b, s, True) for b, s in ranges)
        return dataclasses.replace(self, reserved=keep + new)

    def without_kho(self) -> Fdt:
        return dataclasses.replace(self, kho=None)


def gic_lpi_size(cores: int) -> int:
    """soc.c ``GIC_LPI_SIZE``: ALIGN(cores x 64 KiB pending + 64 KiB property, SZ_1M)."""
    return (cores * SZ_64K + SZ_64K + SZ_1M - 1) & ~(SZ_1M - 1)


def lpi_carveout_base(machine: Machine) -> int:
    """The fixed LPI area of the model's firmware-owned and same-placement fixes:
    ``ALIGN(resv_ram - GIC_LPI_SIZE, SZ_64K)`` with the model's ``resv_ram``."""
    resv_ram = machine.mem.ram[0].end - CARVEOUT_BELOW_TOP
    return (resv_ram - gic_lpi_size(machine.platform.cpus)) & ~(SZ_64K - 1)


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
    prop_size = lpi_propbase_sz(id_bits)
    pend_size = lpi_pendbase_sz(id_bits)
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


def fdt_add_resv_mem_gic_rd_tables(fdt: Fdt, base: int, size: int) -> Fdt:
    """U-Boot's ``fdt_add_resv_mem_gic_rd_tables()``: ``fdtdec_add_reserved_memory(blob,
    "gic-rd-tables", ...)`` over ``[base, base + size)`` without ``no-map``; the GIC node
    does not reference it."""
    node = ReservedMemory("gic-rd-tables", base, size)
    return dataclasses.replace(fdt, reserved=(*fdt.reserved, node))
