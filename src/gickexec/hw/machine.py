"""The hardware that outlives every kernel: memory, the GIC blocks, CPUs' interfaces, devices.

A kexec replaces the software and leaves all of this as it was; only a power-on
(:meth:`Machine.power_on`) resets it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from gickexec.arch.gicv3 import GicrOffset, GitsOffset
from gickexec.hw.cpuif import CpuInterface
from gickexec.hw.events import EventLog
from gickexec.hw.gicd import Distributor
from gickexec.hw.gicr import Redistributor
from gickexec.hw.its import Its, MsiResult
from gickexec.hw.memory import Agent, AgentKind, MemRegion, PhysicalMemory
from gickexec.hw.platform import Platform

__all__ = ["HELD_IN_PBA", "Machine", "MsiDevice", "MsixVector"]

#: An event on a masked vector: the PCI Local Bus Specification 3.0's MSI-X per-vector
#: masking (and the PCIe Base Specification's, which takes it over): while a vector is
#: masked the function may not send its message and sets the vector's bit in the Pending
#: Bit Array instead; when software unmasks a vector whose bit is set, the function sends
#: the message and clears the bit.  QEMU hw/pci/msix.c does the same (msix_notify() ->
#: msix_set_pending(), msix_handle_mask_update() -> msix_clr_pending() + msix_notify()).
HELD_IN_PBA = "held by the device: vector masked (MSI-X Pending Bit Array)"


@dataclass(slots=True)
class MsixVector:
    """One MSI-X table entry as the driver programmed it."""

    address: int = 0
    data: int = 0
    masked: bool = True
    #: the vector's bit in the function's Pending Bit Array (see HELD_IN_PBA)
    pending: bool = False


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

    def holds(self, vector: int) -> bool:
        """Would an event on ``vector`` be held in the Pending Bit Array (MSI-X on, the
        vector masked)?"""
        return self.bus_master and self.msix_enabled and self.vectors[vector].masked


class Machine:
    """A GICv3 system with one ITS, built from a :class:`Platform`."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.events = EventLog()
        self.mem = PhysicalMemory(platform.ram)
        self.devices: dict[str, MsiDevice] = {}
        #: told (device, vector, result) when an unmask sends a message the device held
        self.on_pba_release: Callable[[MsiDevice, int, MsiResult], None] | None = None
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
        #: every redistributor frame's address, by CPU (drivers look one up per access)
        self.gicr_bases = [self.gicr_base(cpu) for cpu in range(p.cpus)]
        self.its = Its(
            0,
            mem=self.mem,
            gicd=self.gicd,
            rdists=self.rdists,
            rd_bases=self.gicr_bases,
            knobs=p.knobs,
            events=self.events,
        )
        if p.knobs.pending_state_in_hypervisor:
            for rd in self.rdists:
                rd.mapped_lpis = self.its.mapped_lpis
        self.cpuifs = [
            CpuInterface(cpu, rd, self.gicd, self.events) for cpu, rd in enumerate(self.rdists)
        ]
        self.mem.map_mmio(MemRegion(p.gicd_base, 0x10000, "GICD"), self.gicd)
        for cpu, (rd, base) in enumerate(zip(self.rdists, self.gicr_bases, strict=True)):
            self.mem.map_mmio(MemRegion(base, GicrOffset.STRIDE, f"GICR{cpu}"), rd)
        self.mem.map_mmio(MemRegion(p.its_base, GitsOffset.SIZE, "ITS0"), self.its)
        for dev in self.devices.values():
            dev.bus_master = dev.msix_enabled = False
            for entry in dev.vectors:  # a reset masks every vector, clears the PBA
                entry.masked, entry.pending = True, False

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

    def msix_unmask(self, dev: MsiDevice, vector: int) -> MsiResult | None:
        """Software clears ``vector``'s mask bit: a message held in the Pending Bit Array
        is sent now (to the address and data the vector holds now) and the bit cleared.
        Returns where it went (also told to ``on_pba_release``), or None when nothing
        was held or the device may not signal yet."""
        entry = dev.vectors[vector]
        entry.masked = False
        if not (entry.pending and dev.can_signal(vector)):
            return None
        entry.pending = False
        result = self.signal_msi(dev, vector)
        if self.on_pba_release is not None:
            self.on_pba_release(dev, vector, result)
        return result

    def vmm_save_pending_tables(self) -> None:
        """The VMM saves the GIC (KVM_DEV_ARM_VGIC_SAVE_PENDING_TABLES, e.g. for
        migration or a snapshot): each mapped LPI's pending state is written to its
        vCPU's pending table.  Nothing to do on hardware, whose tables are current."""
        for rd in self.rdists:
            if rd.knobs.pending_state_in_hypervisor:
                rd.save_pending_tables()

    def signal_msi(self, dev: MsiDevice, vector: int, *, posted: bool = False) -> MsiResult:
        """Device ``dev`` raises ``vector``: the MSI write travels to whatever it targets.
        ``posted``: the write left the device before its vector was masked or MSI-X
        disabled, so only where it goes matters."""
        if not posted and not dev.can_signal(vector):
            if dev.holds(vector):
                dev.vectors[vector].pending = True
                return MsiResult(HELD_IN_PBA)
            return MsiResult("device not allowed to signal (MSI-X off or no bus master)")
        entry = dev.vectors[vector]
        if entry.address != self._doorbell:
            return MsiResult(f"MSI address {entry.address:#x} is not an ITS doorbell")
        return self.its.translate_msi(dev.device_id, entry.data)

    def msi_taken_at_once(
        self, dev: MsiDevice, vector: int, takers: Collection[int]
    ) -> tuple[int, int] | None:
        """The usual MSI in one step: what ``signal_msi(dev, vector)`` and then a CPU of
        ``takers`` (CPUs that take interrupts as soon as they are signalled) do with it:
        acknowledge (ICC_IAR1_EL1), EOI (ICC_EOIR1_EL1), read ICC_IAR1_EL1 again (1023).
        Done only when that sequence leaves nothing behind but the pending bit's last
        writer: the translation is cached, the redistributor has nothing pending and
        holds no pending state of its own, the LPI is signalled at once, and nobody is
        told of the two pending-bit writes (``PhysicalMemory.pulse_bit``).  Returns the
        (CPU, INTID) the LPI was pended at (outcome ``LpiOutcome.PENDED``); otherwise
        None, having changed nothing."""
        entry = dev.vectors[vector]
        if not dev.can_signal(vector) or entry.address != self._doorbell:
            return None
        hit = self.its.cached_translation(dev.device_id, entry.data)
        if hit is None:
            return None
        rd, intid = hit
        cpu = rd.cpu
        if cpu not in takers:
            return None
        prio = rd.lone_arrival(intid)
        mask = self.cpuifs[cpu].priority_mask()
        if prio is None or mask is None or prio >= mask:
            return None
        assert rd.pend_addr is not None  # LPIs are on
        if not self.mem.pulse_bit(rd.pend_addr + (intid >> 3), 1 << (intid & 7), rd.agent):
            return None
        return cpu, intid
