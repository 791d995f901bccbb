"""The hardware that outlives every kernel: memory, the GIC blocks, CPUs' interfaces, devices.

A kexec replaces the software and leaves all of this as it was; only a power-on
(:meth:`Machine.power_on`) resets it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gickexec.arch.gicv3 import GicrOffset, GitsOffset
from gickexec.hw.cpuif import CpuInterface
from gickexec.hw.events import EventLog
from gickexec.hw.gicd import Distributor
from gickexec.hw.gicr import Redistributor
from gickexec.hw.its import Its, MsiResult
from gickexec.hw.memory import Agent, AgentKind, MemRegion, PhysicalMemory
from gickexec.hw.platform import Platform

__all__ = ["Machine", "MsiDevice", "MsixVector"]


@dataclass(slots=True)
class MsixVector:
    """One MSI-X table entry as the driver programmed it."""

    address: int = 0
    data: int = 0
    masked: bool = True


@dataclass(slots=True)
class MsiDevice:
    """A PCIe function that raises MSI-X interrupts by writing ``data`` to ``address``.

    ``device_id`` is the requester ID the interconnect presents to the ITS.
    """

    name: str
    device_id: int
    nvec: int
    bus_master: bool = False
    msix_enabled: bool = False
    vectors: list[MsixVector] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.vectors:
            self.vectors = [MsixVector() for _ in range(self.nvec)]

    @property
    def agent(self) -> Agent:
        return Agent(AgentKind.DEVICE, self.device_id)

    def can_signal(self, vector: int) -> bool:
        return self.bus_master and self.msix_enabled and not self.vectors[vector].masked


class Machine:
    """A GICv3 system with one ITS, built from a :class:`Platform`."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.events = EventLog()
        self.mem = PhysicalMemory(platform.ram)
        self.devices: dict[str, MsiDevice] = {}
        self._doorbell = self.translater_address  # looked up once per MSI
        self.power_on()

    def power_on(self) -> None:
        """Reset every GIC block (memory contents are left as they are)."""
        p = self.platform
        self.mem.unmap_all_mmio()
        old_its: Its | None = getattr(self, "its", None)
        if old_its is not None:
            # The old ITS's translation cache goes with it; so do its memory watches.
            self.mem.unwatch(old_its.invalidate_translations)
        self.gicd = Distributor(
            id_bits=p.id_bits,
            lpis=True,
            spis=p.spis,
            events=self.events,
            rss=p.knobs.range_selector,
            iidr=p.iidr,
        )
        self.rdists = [
            Redistributor(
                cpu,
                affinity=p.affinity(cpu),
                last=cpu == p.cpus - 1,
                mem=self.mem,
                gicd=self.gicd,
                knobs=p.knobs,
                events=self.events,
            )
            for cpu in range(p.cpus)
        ]
        for rd in self.rdists:
            rd.peers = self.rdists
        self.its = Its(
            0,
            mem=self.mem,
            gicd=self.gicd,
            rdists=self.rdists,
            rd_bases=[self.gicr_base(cpu) for cpu in range(p.cpus)],
            knobs=p.knobs,
            events=self.events,
        )
        self.cpuifs = [
            CpuInterface(cpu, rd, self.gicd, self.events) for cpu, rd in enumerate(self.rdists)
        ]
        self.mem.map_mmio(MemRegion(p.gicd_base, 0x10000, "GICD"), self.gicd)
        for cpu, rd in enumerate(self.rdists):
            base = self.gicr_base(cpu)
            self.mem.map_mmio(MemRegion(base, GicrOffset.STRIDE, f"GICR{cpu}"), rd)
        self.mem.map_mmio(MemRegion(p.its_base, GitsOffset.SIZE, "ITS0"), self.its)
        for dev in self.devices.values():
            dev.bus_master = dev.msix_enabled = False

    def gicr_base(self, cpu: int) -> int:
        return self.platform.gicr_base + cpu * GicrOffset.STRIDE

    @property
    def translater_address(self) -> int:
        """The doorbell drivers program into MSI-X entries (GITS_TRANSLATER)."""
        return self.platform.its_base + GitsOffset.TRANSLATER

    def add_device(self, name: str, device_id: int, nvec: int) -> MsiDevice:
        if name in self.devices:
            raise ValueError(f"device {name!r} exists")
        dev = self.devices[name] = MsiDevice(name, device_id, nvec)
        return dev

    def vmm_save_pending_tables(self) -> None:
        """The VMM saves the GIC (KVM_DEV_ARM_VGIC_SAVE_PENDING_TABLES, e.g. for
        migration or a snapshot): every LPI the hypervisor holds pending is written to the
        guest's pending table.  Nothing to do on hardware, whose tables are current."""
        for rd in self.rdists:
            if rd.knobs.pending_state_in_hypervisor:
                rd.write_back_pending()

    def signal_msi(self, dev: MsiDevice, vector: int, *, posted: bool = False) -> MsiResult:
        """Device ``dev`` raises ``vector``: the MSI write travels to whatever it targets.
        ``posted``: the write left the device before its vector was masked or MSI-X
        disabled, so only where it goes matters."""
        if not posted and not dev.can_signal(vector):
            return MsiResult("device not allowed to signal (MSI-X off, masked or no bus master)")
        entry = dev.vectors[vector]
        if entry.address != self._doorbell:
            return MsiResult(f"MSI address {entry.address:#x} is not an ITS doorbell")
        return self.its.translate_msi(dev.device_id, entry.data)
