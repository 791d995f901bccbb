"""Platform presets: CPUs, RAM, GIC placement, the GIC's knob settings and the firmware.

A platform is hardware plus how it boots (``firmware="efi"`` boots through UEFI and the
Linux EFI stub; ``"dt"`` through a device-tree bootloader such as U-Boot ``booti``).
Each preset says where its knob choices come from.  Where a product's choice is not
documented anywhere we could read, the preset says so and takes the behaviour Marc
Zyngier describes for "most implementations" (EnableLPIs one-way,
§0); MMIO and RAM addresses are representative of the platform's memory map, not
taken from a firmware dump unless the source says so.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from gickexec.fw.uefi import EDK2_QEMU_VIRT, GENERIC_EDK2, FirmwareLayout
from gickexec.hw.knobs import GicKnobs
from gickexec.hw.memory import MemRegion

__all__ = ["BOOT_PATHS", "PLATFORMS", "BootPath", "Firmware", "Platform"]

Firmware = Literal["efi", "dt"]
#: How a machine boots the first kernel: UEFI with ACPI tables, UEFI handing over a
#: device tree, or a device tree and no firmware services (QEMU ``-kernel`` or U-Boot).
BootPath = Literal["uefi-acpi", "uefi-dt", "dt"]
BOOT_PATHS: tuple[BootPath, ...] = ("uefi-acpi", "uefi-dt", "dt")

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
    #: MPIDR: Aff0 = CPU within its cluster, Aff1 = cluster, Aff2 = socket
    cores_per_cluster: int = 4
    sockets: int = 1
    #: MIDR printed in "Booting Linux on physical CPU" lines
    midr: int = 0x413FD0C1
    #: The kernel is entered through the Linux EFI stub, which installs the empty
    #: LINUX_EFI_MEMRESERVE_TABLE root; False for EFI guests started by a hypervisor
    #: (Xen dom0 gets an EFI system table from Xen without one).
    efi_stub: bool = True
    source: str = ""
    model: str = ""
    #: The boot paths the machine offers (the first is its default) and the one in use.
    boot_paths: tuple[BootPath, ...] = ()
    boot: BootPath | None = None
    #: What loads the first kernel on a device-tree boot: QEMU's ``-kernel`` loader
    #: (hw/arm/boot.c) or a U-Boot ``booti`` (model: the image at the first 2 MiB
    #: boundary of RAM).
    dt_loader: Literal["qemu", "u-boot"] = "u-boot"
    firmware_layout: FirmwareLayout = GENERIC_EDK2
    #: The firmware offers EFI_RNG_PROTOCOL, so the EFI stub randomises the image's
    #: physical placement (KASLR) unless ``nokaslr``.
    efi_rng: bool = True
    #: ``fdt_totalsize()`` of the device tree a DT boot loader hands over (QEMU ``virt``
    #: builds it in a 1 MiB buffer), and the packed size kexec-tools makes of the running
    #: kernel's /sys/firmware/fdt before adding ``bootargs`` (measured: tests/data/
    #: realcheck; the EFI stub's generated tree packs to 520 bytes on every platform).
    fdt_bytes: int = 0x100000
    fdt_packed_bytes: int = 7824
    #: the ITS's node in the board's device tree (MSI domains are named after it)
    dt_its_node: str = ""
    #: GICD_IIDR, GICR_IIDR and GITS_IIDR (Implementer [11:0], Revision [15:12], Variant
    #: [19:16], ProductID [31:24]; IHI 0069).  0 where no public source we read states
    #: the product's value.
    iidr: int = 0

    @property
    def dt_its_path(self) -> str:
        return self.dt_its_node or (
            f"/interrupt-controller@{self.gicd_base:x}/msi-controller@{self.its_base:x}"
        )

    @property
    def boot_path(self) -> BootPath:
        """The boot path in use: "uefi-acpi", "uefi-dt" or "dt"."""
        if self.boot is not None:
            return self.boot
        if self.firmware == "dt":
            return "dt"
        return next((b for b in self.boot_paths if b != "dt"), "uefi-acpi")

    @property
    def acpi(self) -> bool:
        return self.boot_path == "uefi-acpi"

    def with_boot(self, path: BootPath) -> Platform:
        """The same machine booted another way (one of ``boot_paths``)."""
        offered = self.boot_paths or (self.boot_path,)
        if path not in offered:
            raise ValueError(
                f"{self.name} boots via {', '.join(offered)}, not {path}"
            )
        firmware: Firmware = "dt" if path == "dt" else "efi"
        return dataclasses.replace(self, boot=path, firmware=firmware)

    def with_ram(self, banks: tuple[MemRegion, ...]) -> Platform:
        return dataclasses.replace(self, ram=banks)

    def affinity(self, cpu: int) -> int:
        """Aff3.Aff2.Aff1.Aff0 of ``cpu`` as GICR_TYPER.Affinity_Value packs it."""
        per_socket = -(-self.cpus // self.sockets)
        socket, local = divmod(cpu, per_socket)
        return (
            (socket << 16)
            | ((local // self.cores_per_cluster) << 8)
            | (local % self.cores_per_cluster)
        )

    def mpidr(self, cpu: int) -> int:
        return self.affinity(cpu)

    def with_knobs(self, knobs: GicKnobs) -> Platform:
        return dataclasses.replace(self, knobs=knobs)

    def with_cpus(self, cpus: int) -> Platform:
        return dataclasses.replace(self, cpus=cpus, sockets=min(self.sockets, cpus))


# The hardware GICs: EnableLPIs RES1 once set, base-register writes ignored while
# enabled, commands stall on error (GIC-600 TRM 3.10.2), no direct LPI registers with an
# ITS (GIC-600AE TRM p.125: DirectLPI = 0).
_ARM_GIC_HW = GicKnobs(
    enable_lpis_clearable=False,
    report_ces=False,
    base_writes_ignored_while_enabled=True,
    its_error_policy="stall",
)

# KVM's vGICv3 + vITS (arch/arm64/kvm/vgic/vgic-mmio-v3.c, vgic-its.c): EnableLPIs
# clearable with RWP and CES=IR=1 (2022 series), base writes ignored while enabled,
# full configuration cache,
# commands never stall, GITS_BASER/CBASER read-only while enabled, enabling with invalid
# tables refused, out-of-range CWRITER ignored, MAPTI over a mapping ignored, 64 KiB
# ITS pages, flat collection table, 8-byte ITT entries.
_KVM = GicKnobs(
    enable_lpis_clearable=True,
    report_ces=True,
    report_ir=True,
    base_writes_ignored_while_enabled=True,
    rwp_clear_after_reads=1,
    config_cache=True,
    its_error_policy="skip",
    its_enable_invalid_tables="refused",
    cwriter_out_of_range="write-ignored",
    mapti_overwrite="ignored",
    its_page_size_64k_only=True,
    pending_state_in_hypervisor=True,
)

# QEMU's `virt` board memory map (hw/arm/virt.c): GICD 0x08000000, ITS 0x08080000,
# redistributors from 0x080A0000, RAM from 0x40000000.
_VIRT_RAM = (MemRegion(0x40000000, 4 * _GiB, "System RAM"),)
_VIRT_GICD, _VIRT_ITS, _VIRT_GICR = 0x08000000, 0x08080000, 0x080A0000

_KVM_GUEST = Platform(
    name="kvm-guest",
    description="KVM guest (QEMU -accel kvm, virt, gic-version=3): 8 vCPUs, vITS, UEFI",
    cpus=8,
    ram=_VIRT_RAM,
    firmware="efi",
    knobs=_KVM,
    gicd_base=_VIRT_GICD,
    gicr_base=_VIRT_GICR,
    its_base=_VIRT_ITS,
    source="KVM arch/arm64/kvm/vgic/vgic-mmio-v3.c, vgic-its.c",
    model="linux,dummy-virt",
)

_PRESETS = (
    # An Arm server booted through UEFI, GIC-600 class, two RAM banks like Arm server
    # memory maps (2 GiB below 4 GiB, the rest at 0x88_0000_0000).
    Platform(
        name="efi-server-8",
        description="8-CPU Arm server, GIC-600-class (EnableLPIs sticky), UEFI firmware, 8 GiB",
        cpus=8,
        ram=(
            MemRegion(0x0080000000, 2 * _GiB, "System RAM"),
            MemRegion(0x0880000000, 6 * _GiB, "System RAM"),
        ),
        firmware="efi",
        knobs=_ARM_GIC_HW,
        gicd_base=0x0030000000,
        gicr_base=0x0030100000,
        its_base=0x0030040000,
        source="GIC-600 TRM 3.10.2 (stall on command error); Marc Zyngier, LKML 2018-09-21",
        model="gickexec efi-server-8",
    ),
    # A device-tree board booted by U-Boot: an RK3566-class SoC whose GIC-600 keeps
    # EnableLPIs set (user report).
    Platform(
        name="rk3566-dt",
        description="4-CPU RK3566-class board, GIC-600 (EnableLPIs sticky), U-Boot + DT, 4 GiB",
        cpus=4,
        ram=(MemRegion(0x0000200000, 4 * _GiB - 0x200000 - 0x10000000, "System RAM"),),
        firmware="dt",
        knobs=_ARM_GIC_HW,
        gicd_base=0x00FD400000,
        gicr_base=0x00FD460000,
        its_base=0x00FD440000,
        spis=320,
        midr=0x412FD050,
        source="rk3566 user report of 'Failed to disable LPIs' on all four CPUs",
        model="Pine64 PineNote (rk3566-class)",
    ),
    # Marc Zyngier tested the 2018 series "on a TX2 system both as a host and a guest"
    # (LKML 1809.2/06246).  2 sockets x 28 cores x SMT4.  GIC-500-class as issue 3 puts
    # it; the product's EnableLPIs and error behaviour are not documented (assumed as
    # the hardware GICs above).
    Platform(
        name="thunderx2",
        description="Cavium ThunderX2 host: 2 sockets, 224 CPUs, GIC-500-class, UEFI, 64 GiB",
        cpus=224,
        sockets=2,
        ram=(
            MemRegion(0x0080000000, 2 * _GiB, "System RAM"),
            MemRegion(0x0880000000, 30 * _GiB, "System RAM"),
            MemRegion(0x8800000000, 32 * _GiB, "System RAM"),
        ),
        firmware="efi",
        knobs=_ARM_GIC_HW,
        gicd_base=0x0400080000,
        gicr_base=0x0401000000,
        its_base=0x0400100000,
        midr=0x431F0AF1,
        source="LKML 1809.2/06246 (TX2 host and guest tests); EnableLPIs one-way assumed",
        model="Cavium ThunderX2 CN9980",
    ),
    _KVM_GUEST,
    dataclasses.replace(
        _KVM_GUEST,
        name="thunderx2-kvm-guest",
        description="KVM guest on ThunderX2: 32 vCPUs, KVM vGICv3 + vITS, QEMU virt, UEFI",
        cpus=32,
        midr=0x431F0AF1,
        source="LKML 1809.2/06246 (TX2 guest test); KVM arch/arm64/kvm/vgic/vgic-its.c",
    ),
    # QEMU TCG's GICv3 + ITS (QEMU 7.2 hw/intc/arm_gicv3_redist.c, arm_gicv3_its.c):
    # clearable EnableLPIs with CES=1, no RWP, base writes accepted at any time,
    # CommonLPIAff=1, no configuration cache beyond its HPPI, PTZ read back, commands
    # skipped on parameter errors, 12-byte ITT entries, pending state in guest memory.
    # The machine of the real runs (tests/data/realcheck): `-M virt,gic-version=3,its=on
    # -cpu cortex-a57 -smp 2 -m 1G`, AAVMF or `-kernel` direct boot.
    Platform(
        name="qemu-virt",
        description="QEMU 7.2 TCG virt (gic-version=3, its=on), cortex-a57: 2 CPUs, 1 GiB",
        cpus=2,
        ram=(MemRegion(0x40000000, _GiB, "System RAM"),),
        firmware="efi",
        knobs=GicKnobs(
            enable_lpis_clearable=True,
            report_ces=True,
            base_writes_ignored_while_enabled=False,
            rwp_clear_after_reads=0,
            common_lpi_aff=1,
            config_cache=False,
            ptz_reads_back=True,
            its_error_policy="skip",
            itt_entry_size=12,
            range_selector=False,
        ),
        gicd_base=_VIRT_GICD,
        gicr_base=_VIRT_GICR,
        its_base=_VIRT_ITS,
        # cortex-a57 r1p0 (the real runs' "Booting Linux on physical CPU ... [0x411fd070]")
        midr=0x411FD070,
        # QEMU hw/intc/gicv3_internal.h gicv3_iidr(): "an ARM r0p0 with a zero ProductID
        # ... the same as an r0p0 GIC-500", returned for GICD_IIDR and GICR_IIDR (and, in
        # the ITS patches we read, GITS_IIDR)
        iidr=0x43B,
        source=(
            "QEMU 7.2 hw/arm/virt.c, hw/arm/boot.c, hw/intc/arm_gicv3_*; AAVMF 2022.11; "
            "real runs in tests/data/realcheck"
        ),
        model="linux,dummy-virt",
        boot_paths=("uefi-acpi", "uefi-dt", "dt"),
        dt_loader="qemu",
        firmware_layout=EDK2_QEMU_VIRT,
        # hw/arm/virt.c create_gic()/create_its(): "/intc@8000000/its@8080000"
        dt_its_node="/intc@8000000/its@8080000",
    ),
    # GIC-600 (TRM 3.10.2 stall; 4.6.2 GITS_TYPER).  GIC-600 reports 4-byte ITT entries;
    # the model's ITE needs 8 bytes, so this preset uses 8 (ITTs are twice the size).
    Platform(
        name="ampere-altra",
        description="Ampere Altra Q80: 80 cores, Arm GIC-600, UEFI, 32 GiB",
        cpus=80,
        ram=(
            MemRegion(0x0088300000, 2 * _GiB - 0x300000, "System RAM"),
            MemRegion(0x0880000000, 30 * _GiB, "System RAM"),
        ),
        firmware="efi",
        knobs=_ARM_GIC_HW,
        gicd_base=0x100100140000,
        gicr_base=0x100100540000,
        its_base=0x100100040000,
        midr=0x413FD0C1,
        source="GIC-600 TRM 3.10.2, 4.6.2; EnableLPIs one-way assumed (not documented)",
        model="Ampere Altra",
    ),
    # Qualcomm's own GICv3 in the QDF2400: erratum 0065 makes ITT entries 16 bytes while
    # GITS_TYPER says 8 (Linux its_enable_quirk_qdf2400_e0065); the model reports 16, as
    # Linux's quirk patches it.
    Platform(
        name="centriq-2400",
        description="Qualcomm Centriq 2400 (QDF2400): 46 cores, Qualcomm GICv3, UEFI, 64 GiB",
        cpus=46,
        cores_per_cluster=2,
        ram=(MemRegion(0x0000200000, 64 * _GiB, "System RAM"),),
        firmware="efi",
        knobs=dataclasses.replace(_ARM_GIC_HW, itt_entry_size=16),
        gicd_base=0xFF7EFE0000,
        gicr_base=0xFF7F000000,
        its_base=0xFF7EFC0000,
        midr=0x510FC000,
        source="Linux its_enable_quirk_qdf2400_e0065 (16-byte ITEs); EnableLPIs assumed one-way",
        model="Qualcomm Centriq 2400",
    ),
    # Xen's vGICv3 + vITS (xen/arch/arm/vgic-v3.c, vgic-v3-its.c): "LPIs can only be
    # enabled once, but never disabled again", PROPBASER/PENDBASER writes ignored while
    # enabled, direct LPI
    # registers WI, flat ITS tables only.  dom0 gets its EFI system table from Xen, with
    # no MEMRESERVE table (Leo Yan, Ampere Altra, Xen 4.16).
    Platform(
        name="xen-guest",
        description="Xen 4.16 dom0 on Ampere Altra: 8 vCPUs, Xen vGICv3 + vITS, EFI from Xen",
        cpus=8,
        ram=(MemRegion(0x0088300000, 2 * _GiB - 0x300000, "System RAM"),),
        firmware="efi",
        efi_stub=False,
        knobs=GicKnobs(
            enable_lpis_clearable=False,
            rwp_clear_after_reads=0,
            its_error_policy="skip",
            its_indirect=False,
        ),
        gicd_base=0x100100140000,
        gicr_base=0x100100540000,
        its_base=0x100100040000,
        source="Xen vgic-v3.c, vgic-v3-its.c; xen-devel 2022-08 (Leo Yan, Ard Biesheuvel)",
        model="Xen dom0",
    ),
)

PLATFORMS: dict[str, Platform] = {p.name: p for p in _PRESETS}
