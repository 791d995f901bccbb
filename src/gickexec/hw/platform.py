"""Platform presets: CPUs, RAM, GIC placement, the GIC's knob settings and the firmware.

A platform is hardware plus how it boots (``firmware="efi"`` boots through UEFI and the
Linux EFI stub; ``"dt"`` through a device-tree bootloader such as U-Boot ``booti``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

from gickexec.hw.knobs import GicKnobs
from gickexec.hw.memory import MemRegion

__all__ = ["PLATFORMS", "Firmware", "Platform"]

Firmware = Literal["efi", "dt"]

_GiB = 1 << 30


@dataclass(frozen=True, slots=True)
class Platform:
    """A machine the model can build."""

    name: str
    description: str
    cpus: int
    ram: tuple[MemRegion, ...]
    firmware: Firmware
    knobs: GicKnobs
    gicd_base: int
    gicr_base: int
    its_base: int
    id_bits: int = 16
    spis: int = 224
    #: MPIDR affinity of CPU n is (cluster << 8 | core) with this many cores per cluster
    cores_per_cluster: int = 4
    #: MIDR printed in "Booting Linux on physical CPU" lines
    midr: int = 0x413FD0C1
    source: str = ""
    model: str = field(default="")

    def affinity(self, cpu: int) -> int:
        """Aff3.Aff2.Aff1.Aff0 of ``cpu`` as GICR_TYPER.Affinity_Value packs it."""
        return ((cpu // self.cores_per_cluster) << 8) | (cpu % self.cores_per_cluster)

    def mpidr(self, cpu: int) -> int:
        return self.affinity(cpu)

    def with_knobs(self, knobs: GicKnobs) -> Platform:
        return dataclasses.replace(self, knobs=knobs)

    def with_cpus(self, cpus: int) -> Platform:
        return dataclasses.replace(self, cpus=cpus)


# An Arm server booted through UEFI: GIC-600-class redistributors with EnableLPIs
# RES1 once set and base-register writes ignored while enabled, which is the behaviour
# Marc Zyngier describes for "most implementations" (gic-architecture.md §0).  RAM in
# two banks like Arm server memory maps (2 GiB below 4 GiB, the rest at 0x88_0000_0000).
_EFI_SERVER = Platform(
    name="efi-server-8",
    description="8-CPU Arm server, GIC-600-class (EnableLPIs sticky), UEFI firmware, 8 GiB",
    cpus=8,
    ram=(
        MemRegion(0x0080000000, 2 * _GiB, "System RAM"),
        MemRegion(0x0880000000, 6 * _GiB, "System RAM"),
    ),
    firmware="efi",
    knobs=GicKnobs(
        enable_lpis_clearable=False,
        report_ces=False,
        base_writes_ignored_while_enabled=True,
        its_error_policy="stall",
    ),
    gicd_base=0x0030000000,
    gicr_base=0x0030100000,
    its_base=0x0030040000,
    source="GIC-600 TRM (stall on command error); Marc Zyngier, LKML 2018-09-21",
    model="gickexec efi-server-8",
)

# A device-tree board booted by U-Boot: an RK3566-class SoC whose GIC-600 keeps
# EnableLPIs set (user report, linux-kernel.md §4 item 8, ecosystem.md §0 item 4).
_DT_BOARD = Platform(
    name="rk3566-dt",
    description="4-CPU RK3566-class board, GIC-600 (EnableLPIs sticky), U-Boot + DT, 4 GiB",
    cpus=4,
    ram=(MemRegion(0x0000200000, 4 * _GiB - 0x200000 - 0x10000000, "System RAM"),),
    firmware="dt",
    knobs=GicKnobs(
        enable_lpis_clearable=False,
        report_ces=False,
        base_writes_ignored_while_enabled=True,
        its_error_policy="stall",
    ),
    gicd_base=0x00FD400000,
    gicr_base=0x00FD460000,
    its_base=0x00FD440000,
    spis=320,
    midr=0x412FD050,
    source="rk3566 user report of 'Failed to disable LPIs' on all four CPUs",
    model="Pine64 PineNote (rk3566-class)",
)

PLATFORMS: dict[str, Platform] = {p.name: p for p in (_EFI_SERVER, _DT_BOARD)}
