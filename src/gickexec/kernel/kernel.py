"""One Linux kernel generation: boot, memory, interrupts, drivers, and kexec shutdown.

The boot follows arm64's order (linux-kernel.md §1.4, §2.2): ``setup_arch`` (memblock
from the firmware's memory map, ``efi_init`` walking the memreserve chain, early memblock
allocations), ``mm_init`` (the page allocator takes what memblock left), ``init_IRQ``
(GIC distributor, ``its_init``, the boot CPU's ``its_cpu_init``), ``smp_init``
(secondary CPUs' ``gic_starting_cpu``, then their ONLINE callbacks), and device probe.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from gickexec.arch.gicv3 import INTID_SPURIOUS
from gickexec.fw.uefi import EfiMemoryType, UefiFirmware
from gickexec.hw.machine import Machine, MsiDevice
from gickexec.hw.memory import Agent, AgentKind
from gickexec.kernel import printk
from gickexec.kernel.cmdline import KernelCmdline
from gickexec.kernel.efi import (
    EfiState,
    efi_apply_persistent_mem_reservations,
    efi_config_parse_tables,
    install_memreserve_table,
)
from gickexec.kernel.gic_v3_its import GicV3Its, ItsDevice
from gickexec.kernel.kexec import KexecSegments
from gickexec.kernel.mm import (
    SEG_DTB,
    SEG_IMAGE,
    SEG_INITRD,
    KernelFault,
    Memblock,
    OutOfMemory,
    Owner,
    OwnershipMap,
    PageAllocator,
    Role,
)
from gickexec.kernel.profiles import KernelProfile

__all__ = ["IrqDesc", "KdumpParams", "Kernel", "MsiDriver"]

_2M = 0x200000
#: Kernel image footprint (text, data, bss) placed on a 2 MiB boundary, as arm64 does.
KERNEL_IMAGE_BYTES = 40 << 20
#: First Linux IRQ number handed to MSIs (below it: SGIs, PPIs, timers, SPIs in use).
FIRST_MSI_VIRQ = 48

#: arm64 reserve_crashkernel(): below ARCH_LOW_ADDRESS_LIMIT (4 GiB), 2 MiB aligned
CRASH_ADDR_LIMIT = 1 << 32
#: kexec-tools' elfcorehdr segment (one PT_LOAD per RAM range fits easily)
ELFCOREHDR_BYTES = 0x10000

Entry = Literal["firmware", "kexec", "kdump"]


@dataclass(frozen=True, slots=True)
class KdumpParams:
    """What ``kexec -p`` hands a capture kernel: where it may live (the crashed kernel's
    ``crashkernel=`` region, as ``linux,usable-memory-range``), where its image and
    ``elfcorehdr`` were loaded, the CPU that panicked (it boots there), and the crashed
    kernel's memory that ``/proc/vmcore`` exposes."""

    usable: tuple[int, int]
    image: int
    elfcorehdr: tuple[int, int]
    vmcore: tuple[tuple[int, int], ...]
    cpu: int


@dataclass(slots=True)
class IrqDesc:
    """An ``irq_desc`` for one MSI-X vector: Linux IRQ number, hwirq (the LPI), counts."""

    virq: int
    hwirq: int
    device: str
    vector: int
    action: str
    hwirq_name: int
    #: the CPU the driver targeted (effective affinity)
    cpu: int = 0
    counts: dict[int, int] = field(default_factory=dict)


class MsiDriver:
    """A PCIe NIC driver using MSI-X through the ITS MSI domain."""

    def __init__(self, kernel: Kernel, device: MsiDevice, *, shutdown_hook: bool) -> None:
        self.k = kernel
        self.device = device
        self.shutdown_hook = shutdown_hook
        self.its_dev: ItsDevice | None = None

    def probe(self) -> None:
        gic = self.k.gic
        dev = self.device
        self.its_dev = gic.its_create_device(dev.device_id, dev.nvec)
        if self.its_dev is None:
            return
        online = self.k.online_cpus
        for vec in range(min(dev.nvec, self.its_dev.nr_lpis)):
            hwirq = self.its_dev.lpi_base + vec
            cpu = online[vec % len(online)]
            gic.its_irq_domain_activate(self.its_dev, vec, cpu)
            self.k.register_irq(hwirq, dev, vec, cpu)
            entry = dev.vectors[vec]
            entry.address = self.k.machine.translater_address
            entry.data = vec
            entry.masked = False
            gic.lpi_update_config(self.its_dev, vec, enable=True)  # request_irq -> unmask
        dev.msix_enabled = True
        dev.bus_master = True

    def shutdown(self) -> None:
        """``.shutdown`` at kexec: what ``.remove`` does, if the driver has the hook."""
        if self.shutdown_hook:
            self.remove()

    def remove(self) -> None:
        """``.remove`` (sysfs unbind) or ``.shutdown``: free the vectors (mask, DISCARD),
        free the ITS device (MAPD V=0), disable MSI-X; the PCI core clears bus mastering."""
        if self.its_dev is None:
            return
        gic = self.k.gic
        for vec in range(self.its_dev.nr_lpis):
            gic.lpi_update_config(self.its_dev, vec, enable=False)  # free_irq -> mask
            gic.its_irq_domain_deactivate(self.its_dev, vec)  # DISCARD
            self.device.vectors[vec].masked = True
        gic.its_free_device(self.its_dev)
        self.its_dev = None
        self.device.msix_enabled = False
        self.device.bus_master = False


class Kernel:
    """A kernel generation running on a :class:`Machine`."""

    def __init__(
        self,
        machine: Machine,
        profile: KernelProfile,
        *,
        generation: int,
        entry: Entry,
        seed: int,
        firmware: UefiFirmware | None,
        cmdline: KernelCmdline | None = None,
        kdump: KdumpParams | None = None,
        segments: KexecSegments | None = None,
    ) -> None:
        self.machine = machine
        self.profile = profile
        self.generation = generation
        self.entry = entry
        self.firmware = firmware
        self.cmdline = cmdline or KernelCmdline()
        self.kdump = kdump
        self.boot_method: Literal["efi", "dt"] = "efi" if firmware is not None else "dt"
        self.rng = random.Random(f"{seed}:{generation}:{profile.name}")
        self.is_kdump = kdump is not None
        self.boot_cpu = kdump.cpu if kdump is not None else 0
        # Logical CPU n is possible_cpus[n]: the boot CPU is always logical CPU0.
        others = [c for c in range(machine.platform.cpus) if c != self.boot_cpu]
        limit = self.cmdline.nr_cpus or machine.platform.cpus
        self.possible_cpus = [self.boot_cpu, *others][:limit]
        self.nr_cpus = len(self.possible_cpus)
        self.online_cpus: list[int] = []
        self.log = printk.KernelLog()
        self.owners = OwnershipMap()
        if kdump is not None:
            self.memory = [(kdump.usable[0], kdump.usable[0] + kdump.usable[1])]
        else:
            self.memory = [(r.start, r.end) for r in machine.mem.ram]
        self.memblock = Memblock(self.memory, profile.init_memblock_reserved_regions)
        self.crashkernel: tuple[int, int] | None = None
        #: why this kernel died (oops, panic, hang), or None while it runs
        self.crashed: str | None = None
        self.pages: PageAllocator | None = None
        self.efi: EfiState | None = None
        self.gic = GicV3Its(self)
        self.irqs: dict[int, IrqDesc] = {}
        self.irq_of_vector: dict[tuple[str, int], IrqDesc] = {}
        self.drivers: list[MsiDriver] = []
        self.unexpected_irqs = 0
        self._warned_unexpected = False
        self._next_virq = FIRST_MSI_VIRQ
        #: where a kexec loader put this kernel's image, initrd and DTB (None: firmware/kdump)
        self.segments = segments
        #: (segment, address, writer): GIC writes into this kernel's image, initrd or DTB,
        #: reported by the world's corruption judge; a write into the image is fatal
        self.gic_hits: list[tuple[str, int, str]] = []
        #: "reserved" children of System RAM in /proc/iomem: the boot-time memblock
        #: reservations, exported at arch_initcall (what kexec-tools avoids)
        self.iomem_reserved: list[tuple[int, int]] = []
        self.image = (0, 0)
        self.initrd_freed = False
        self._slab: tuple[int, int] | None = None
        #: called with (cpu, intid, desc or None) for every acknowledged interrupt
        self.on_irq: Callable[[int, int, IrqDesc | None], None] = lambda c, i, d: None

    # -- CPUs and memory ---------------------------------------------------------------

    def logical_id(self, cpu: int) -> int:
        """``smp_processor_id()`` of physical CPU ``cpu`` (what the log prints)."""
        return self.possible_cpus.index(cpu)

    def in_linear_map(self, addr: int, size: int) -> bool:
        """Whether ``[addr, addr + size)`` is in this kernel's memory (its linear map)."""
        return any(s <= addr and addr + size <= e for s, e in self.memory)

    def agent(self, cpu: int = 0) -> Agent:
        return Agent(AgentKind.KERNEL, cpu, self.generation)

    def claim(self, addr: int, size: int, owner: Owner) -> None:
        self.owners.assign(addr, size, owner)

    def _memblock_reserve(self, addr: int, size: int, label: str, role: Role | None = None) -> None:
        self.memblock.reserve(addr, size)
        self.claim(addr, size, Owner(label, role))

    def alloc_pages(
        self, size: int, label: str, role: Role | None = None, *, zero: bool = True
    ) -> int:
        """``alloc_pages()`` of a naturally aligned block, labelled; zeroed unless asked not."""
        assert self.pages is not None, "page allocator used before mm_init"
        addr = self.pages.alloc(size)
        self.claim(addr, size, Owner(label, role))
        if zero:
            self.machine.mem.fill(addr, size, 0, self.agent())
        return addr

    def kmalloc(self, size: int, label: str) -> int:
        """``kmalloc()`` of a small object: 32-byte slots carved from 4 KiB slab pages."""
        slot = 1 << max(5, (size - 1).bit_length())
        if self._slab is None or self._slab[1] + slot > 0x1000:
            self._slab = (self.alloc_pages(0x1000, f"slab page ({label})", zero=False), 0)
        page, used = self._slab
        self._slab = (page, used + slot)
        self.claim(page + used, size, Owner(label))
        return page + used

    def free_pages(self, addr: int, size: int) -> None:
        assert self.pages is not None
        self.pages.free(addr, size)
        self.owners.assign(addr, size, None)

    def owner(self, addr: int) -> Owner | None:
        return self.owners.owner_at(addr)

    # -- boot --------------------------------------------------------------------------

    def boot(self, devices: Sequence[tuple[MsiDevice, bool]] = ()) -> None:
        """Run the whole boot; ``devices`` are (device, has shutdown hook) to probe."""
        m = self.machine
        p = m.platform
        for cpuif in m.cpuifs:
            cpuif.reset()
        if self.entry == "firmware" and self.firmware is not None and p.efi_stub:
            install_memreserve_table(self.firmware, m.mem, self.profile, self.agent())
        self.log.printk(printk.BOOTING, p.mpidr(self.boot_cpu), p.midr)
        self.log.printk(printk.LINUX_VERSION, self.profile.release)
        try:
            self._setup_machine_fdt()
            if self.boot_method == "dt":
                self.log.printk(printk.MACHINE_MODEL, p.model)
            for phase in (
                self._setup_arch,
                self._mm_init,
                self._init_irq,
                self._smp_init,
                self._populate_rootfs,
            ):
                phase()
                self._raise_image_fault()
            for dev, hook in devices:
                driver = MsiDriver(self, dev, shutdown_hook=hook)
                self.drivers.append(driver)
                driver.probe()
            self.handle_interrupts()
            self._raise_image_fault()
            self._prepare_namespace()
        except KernelFault as fault:
            self.die(fault)

    def die(self, fault: KernelFault) -> None:
        """The kernel oopsed, panicked or hung: log it; no CPU takes interrupts any more."""
        for line in fault.lines:
            self.log.line(line)
        self.crashed = fault.cause
        for cpu in self.online_cpus:
            self.machine.cpuifs[cpu].igrpen1 = False
        self.online_cpus = []

    def _place_image(self) -> None:
        """Where the image runs: the kexec loader's or kdump's address, else a random
        2 MiB boundary (the EFI stub's KASLR placement, or the boot loader's choice)."""
        if self.segments is not None:
            addr = self.segments.image[0]
        elif self.kdump is not None:
            addr = self.kdump.image
        else:
            fw = self.firmware.layout if self.firmware is not None else None
            avoid = [] if fw is None else [fw.runtime, fw.loader_pool]
            slots = []
            for start, end in self.memory:
                first = (start + _2M - 1) & ~(_2M - 1)
                for addr in range(first, end - KERNEL_IMAGE_BYTES + 1, 16 * _2M):
                    if not any(r.start < addr + KERNEL_IMAGE_BYTES and addr < r.end for r in avoid):
                        slots.append(addr)
            addr = self.rng.choice(slots)
        self.image = (addr, KERNEL_IMAGE_BYTES)
        self._memblock_reserve(
            addr, KERNEL_IMAGE_BYTES, self.segment_label("kernel image"), Role(SEG_IMAGE)
        )

    def segment_label(self, segment: str) -> str:
        """The owner label of one of this kernel's boot segments."""
        how = f", loaded by {self.segments.loader}" if self.segments is not None else ""
        return f"{segment} (gen {self.generation}{how})"

    # -- the loaded segments and what the GIC did to them ------------------------------

    def segment_at(self, addr: int, size: int = 1) -> tuple[str, int] | None:
        """``(segment, start)`` of this kernel's image, initrd or DTB overlapping
        ``[addr, addr + size)`` (the initrd only until it is freed), or None."""
        owned = [(SEG_IMAGE, *self.image)]
        if self.segments is not None:
            owned.append((SEG_DTB, *self.segments.dtb))
            if not self.initrd_freed:
                owned.append((SEG_INITRD, *self.segments.initrd))
        for name, start, length in owned:
            if start < addr + size and addr < start + length:
                return name, start
        return None

    def gic_hit(self, segment: str, addr: int, writer: str) -> None:
        """The GIC (``writer``) changed a byte of this kernel's ``segment`` at ``addr``."""
        self.gic_hits.append((segment, addr, writer))

    def _first_hit(self, segment: str) -> tuple[int, str] | None:
        return next(((a, w) for s, a, w in self.gic_hits if s == segment), None)

    def _raise_image_fault(self) -> None:
        """The GIC changed the code or data this kernel runs: the model ends it here.

        What a flipped bit does depends on what it hits (an undefined instruction, a
        corrupted pointer, nothing at all in unused padding); the model treats any change
        to the loaded image as fatal and says so in the cause."""
        hit = self._first_hit(SEG_IMAGE)
        if hit is None:
            return
        addr, writer = hit
        img, size = self.image
        raise KernelFault(
            f"{writer} set a pending bit at {addr:#x} inside this kernel's image "
            f"[{img:#x}, {img + size:#x}): a live LPI pending table lies under the image "
            "(the model treats any change to the running image as fatal)",
            [
                printk.kformat(printk.OOPS_INTERNAL, "Oops - undefined instruction", 0, 1),
                printk.kformat(printk.PANIC, "Fatal exception"),
            ],
        )

    def reap(self) -> None:
        """Between steps: die now if the GIC has written into this kernel's image."""
        if self.crashed is None:
            try:
                self._raise_image_fault()
            except KernelFault as fault:
                self.die(fault)

    def _setup_machine_fdt(self) -> None:
        """A kexec'd kernel first parses the DTB the loader placed; one the GIC wrote into
        between kernels is taken as invalid and the kernel spins (``setup_machine_fdt``).
        Model choice: a flipped bit outside the FDT header might instead change a property
        silently (UNCONFIRMED which)."""
        hit = self._first_hit(SEG_DTB)
        if hit is None or self.segments is None:
            return
        dtb = self.segments.dtb[0]
        raise KernelFault(
            f"{hit[1]} set a pending bit at {hit[0]:#x} in the device tree the loader placed "
            f"at {dtb:#x} before this kernel parsed it: setup_machine_fdt() spins forever",
            [printk.kformat(printk.DTB_INVALID, dtb), printk.DTB_INVALID_HINT],
        )

    def _populate_rootfs(self) -> None:
        """``arch_initcall``: export the boot-time memblock reservations as "reserved" in
        /proc/iomem; ``rootfs_initcall``: unpack the initramfs and free its pages."""
        self.iomem_reserved = [(s, e - s) for s, e in self.memblock.reserved]
        if self.segments is None:
            return
        addr, size = self.segments.initrd
        if self._first_hit(SEG_INITRD) is not None:
            # UNCONFIRMED which error string: it depends on which byte of the archive changed.
            self.log.printk(printk.INITRAMFS_FAILED, "junk in compressed archive")
        self.memblock.free(addr, size)
        self.free_pages(addr, size)
        self.initrd_freed = True
        self.log.printk(printk.FREEING_MEMORY, "initrd", size >> 10)

    def _prepare_namespace(self) -> None:
        """After the initcalls: without its initramfs the kernel cannot mount a root fs
        (model choice: the root filesystem lives in the initramfs)."""
        hit = self._first_hit(SEG_INITRD)
        if hit is None:
            return
        addr, writer = hit
        raise KernelFault(
            f"{writer} changed the initramfs at {addr:#x} before it was unpacked: no root "
            "filesystem",
            [printk.kformat(printk.PANIC, printk.PANIC_NO_ROOT)],
        )

    def _setup_arch(self) -> None:
        if self.firmware is not None:
            for region, kind in self.firmware.memory_map():
                if kind == EfiMemoryType.RUNTIME_SERVICES_DATA:
                    self._memblock_reserve(region.start, region.size, "EFI runtime services data")
        self._place_image()
        if self.segments is not None:
            # arm64_memblock_init() and early_init_fdt_reserve_self()
            for seg, (addr, size) in (
                (SEG_INITRD, self.segments.initrd),
                (SEG_DTB, self.segments.dtb),
            ):
                label = self.segment_label("initrd" if seg == SEG_INITRD else "device tree")
                self._memblock_reserve(addr, size, label, Role(seg))
        if self.kdump is not None:
            addr, size = self.kdump.elfcorehdr
            self._memblock_reserve(addr, size, "elfcorehdr (/proc/vmcore)")
            self.log.printk(printk.ELFCOREHDR_RESERVED, size >> 10, addr)
        top = max(e for _, e in self.memory)

        def on_reserve(addr: int, size: int, what: str) -> None:
            self.claim(addr, max(0, min(size, top - addr)), Owner(what))

        if self.firmware is not None:
            self.efi = efi_config_parse_tables(
                self.machine.mem,
                self.firmware.systab,
                self.profile,
                self.memblock,
                self.log,
                on_reserve,
            )
        if self.cmdline.crashkernel:
            self.reserve_crashkernel(self.cmdline.crashkernel)
        # paging_init(): the linear map's page tables, then memblock_allow_resize()
        self._early_alloc("memblock: kernel page tables", 4 << 20)
        self.memblock.can_resize = True
        if self.efi is not None and self.profile.defers_persistent_reservations:
            efi_apply_persistent_mem_reservations(self.efi, self.profile, self.memblock, on_reserve)
        ram = sum(e - s for s, e in self.memory)
        self._early_alloc("memblock: struct page array", (ram // 4096 * 64 + _2M - 1) & ~(_2M - 1))
        self._early_alloc("memblock: per-CPU areas", self.nr_cpus * (128 << 10))
        for addr, size in self.memblock.resized:
            self.claim(addr, size, Owner("memblock: reserved regions array"))

    def _early_alloc(self, label: str, size: int) -> None:
        addr = self.memblock.alloc(size, 0x10000)
        self.claim(addr, size, Owner(label))

    def reserve_crashkernel(self, size: int) -> None:
        """arm64 ``reserve_crashkernel()``: top-down below 4 GiB, 2 MiB aligned."""
        try:
            addr = self.memblock.alloc(size, _2M, CRASH_ADDR_LIMIT)
        except OutOfMemory:
            self.log.printk(printk.CRASHKERNEL_FAILED, size)
            return
        self.crashkernel = (addr, size)
        self.claim(addr, size, Owner("crashkernel region"))
        self.log.printk(printk.CRASHKERNEL_RESERVED, addr, addr + size, size >> 20)

    def _mm_init(self) -> None:
        self.pages = PageAllocator(self.memblock.free_ranges(), self.rng)

    @property
    def lpis(self) -> bool:
        """``gic_dist_supports_lpis()``: GICD_TYPER.LPIS and not ``irqchip.gicv3_nolpi``."""
        return self.machine.gicd.lpis_supported and not self.cmdline.gicv3_nolpi

    def _init_irq(self) -> None:
        gic = self.gic
        gic.gic_dist_init()
        gic.found_redistributor(self.boot_cpu)
        gic.gic_cpu_init(self.boot_cpu)
        if self.lpis:
            gic.its_init()
            gic.its_cpu_init(self.boot_cpu)
            gic.its_lpi_memreserve_init()
        self.online_cpus = [self.boot_cpu]
        if gic.memreserve_cpuhp:
            gic.its_cpu_memreserve_lpi(self.boot_cpu)
        # local_irq_enable(): whatever the redistributor signals is taken from now on.
        self.handle_interrupts([self.boot_cpu])

    def _smp_init(self) -> None:
        self.log.printk(printk.SMP_BRINGING_UP)
        maxcpus = self.cmdline.maxcpus
        for cpu in self.possible_cpus[1:]:
            if maxcpus is not None and len(self.online_cpus) >= maxcpus:
                break
            self.gic.found_redistributor(cpu)
            self.cpu_up(cpu)
        self.log.printk(printk.SMP_BROUGHT_UP, len(self.online_cpus))

    def cpu_up(self, cpu: int) -> str | None:
        """Bring physical ``cpu`` online (``gic_starting_cpu`` at STARTING, then the ONLINE
        callbacks); returns why it cannot, or None."""
        if cpu not in self.possible_cpus:
            return f"CPU {cpu} is not possible in this kernel (nr_cpus={self.nr_cpus})"
        if cpu in self.online_cpus:
            return None
        p = self.machine.platform
        self.gic.gic_cpu_init(cpu)
        if self.lpis:
            self.gic.its_cpu_init(cpu)
        self.log.printk(printk.SMP_SECONDARY, self.logical_id(cpu), p.mpidr(cpu), p.midr)
        self.online_cpus.append(cpu)
        if self.gic.memreserve_cpuhp:
            self.gic.its_cpu_memreserve_lpi(cpu)
        self.handle_interrupts([cpu])
        return None

    def cpu_down(self, cpu: int) -> str | None:
        """Take physical ``cpu`` offline: its interrupts move to the first online CPU
        (``irq_migrate_all_off_this_cpu`` -> ``its_set_affinity`` -> MOVI); the
        redistributor keeps LPIs enabled.  Returns why it cannot, or None."""
        if cpu not in self.online_cpus:
            return f"CPU {cpu} is not online"
        if cpu == self.boot_cpu:
            return f"CPU {cpu} is the boot CPU (not hot-pluggable in the model)"
        self.online_cpus.remove(cpu)
        target = self.online_cpus[0]
        for driver in self.drivers:
            if driver.its_dev is None:
                continue
            for vec in range(driver.its_dev.nr_lpis):
                desc = self.irq_of_vector.get((driver.device.name, vec))
                if desc is not None and desc.cpu == cpu:
                    self.gic.its_set_affinity(driver.its_dev, vec, target)
                    desc.cpu = target
        self.machine.cpuifs[cpu].igrpen1 = False
        self.log.printk(printk.CPU_KILLED, self.logical_id(cpu))
        self.handle_interrupts([target])
        return None

    # -- drivers ---------------------------------------------------------------------------

    def unbind(self, device: str) -> str | None:
        """``echo BDF > /sys/bus/pci/drivers/DRIVER/unbind``: the driver's ``.remove``; its
        IRQs are freed.  Returns why it cannot, or None."""
        driver = next((d for d in self.drivers if d.device.name == device), None)
        if driver is None:
            return f"{device} has no driver bound"
        driver.remove()
        self.drivers.remove(driver)
        for vec in range(driver.device.nvec):
            desc = self.irq_of_vector.pop((device, vec), None)
            if desc is not None:
                self.irqs.pop(desc.hwirq, None)
        return None

    def bind(self, device: MsiDevice, *, shutdown_hook: bool) -> str | None:
        """``echo BDF > /sys/bus/pci/drivers/DRIVER/bind``: probe again (new LPIs, MAPD,
        MAPTI).  Returns why it cannot, or None."""
        if any(d.device is device for d in self.drivers):
            return f"{device.name} is already bound"
        driver = MsiDriver(self, device, shutdown_hook=shutdown_hook)
        self.drivers.append(driver)
        driver.probe()
        self.handle_interrupts()
        return None

    # -- interrupts ------------------------------------------------------------------------

    def register_irq(self, hwirq: int, dev: MsiDevice, vector: int, cpu: int) -> IrqDesc:
        desc = IrqDesc(
            virq=self._next_virq,
            hwirq=hwirq,
            device=dev.name,
            vector=vector,
            action=f"{dev.name}-TxRx-{vector}",
            hwirq_name=(dev.device_id << 11) | vector,
            cpu=cpu,
        )
        self._next_virq += 1
        self.irqs[hwirq] = desc
        self.irq_of_vector[(dev.name, vector)] = desc
        return desc

    def handle_interrupts(self, cpus: Sequence[int] | None = None) -> None:
        """Take every signalled interrupt on ``cpus`` (default: all online CPUs)."""
        cpuifs = self.machine.cpuifs
        for cpu in self.online_cpus if cpus is None else cpus:
            if cpu not in self.online_cpus:
                continue
            cpuif = cpuifs[cpu]
            # Each acknowledge clears one pending LPI, so this terminates.
            for _ in range(len(cpuif.rd.pending_lpis()) + 1):
                intid = cpuif.acknowledge()
                if intid == INTID_SPURIOUS:
                    break
                desc = self.irqs.get(intid)
                if desc is None:
                    self._unexpected(cpu, intid)
                else:
                    desc.counts[cpu] = desc.counts.get(cpu, 0) + 1
                self.on_irq(cpu, intid, desc)
                cpuif.eoi(intid)

    def _unexpected(self, cpu: int, intid: int) -> None:
        self.unexpected_irqs += 1
        if self._warned_unexpected:
            return
        self._warned_unexpected = True
        if self.profile.printk_era == "modern":
            msg = printk.kformat(printk.GIC_UNEXPECTED_NEW, intid)
        else:
            msg = printk.GIC_UNEXPECTED_OLD
        self.log.warn(cpu, 0, "drivers/irqchip/irq-gic-v3.c", "gic_handle_irq", msg)

    # -- workload and shutdown ----------------------------------------------------------

    def fill_page_cache(self, fraction: float) -> int:
        """Userspace runs: about ``fraction`` of free memory becomes page cache.  Returns bytes."""
        assert self.pages is not None
        taken = self.pages.fill(fraction, _2M)
        for addr, size in taken:
            self.claim(addr, size, Owner("page cache"))
        return sum(s for _, s in taken)

    def device_shutdown(self) -> None:
        """``device_shutdown()``: every driver's ``.shutdown``; CPUs stop taking interrupts."""
        for driver in self.drivers:
            driver.shutdown()
        for cpu in self.online_cpus:
            self.machine.cpuifs[cpu].igrpen1 = False
        self.online_cpus = []

    def shutdown_for_kexec(self) -> None:
        """``kernel_kexec()``: device shutdown, secondary CPUs off, jump.  The GIC is not reset."""
        self.device_shutdown()
        self.log.printk(printk.KEXEC_STARTING)

    def crash_shutdown(self, reason: str) -> None:
        """``panic()`` -> ``__crash_kexec()`` -> ``machine_crash_shutdown()``: other CPUs
        stopped, every interrupt masked (``machine_kexec_mask_interrupts``: for LPIs,
        ``its_mask_irq`` clears the enable bit in the property table).  Devices are not
        shut down and keep signalling."""
        self.log.printk(printk.PANIC, reason)
        self.log.printk(printk.SMP_STOPPING)
        for driver in self.drivers:
            if driver.its_dev is None:
                continue
            for vec in range(driver.its_dev.nr_lpis):
                self.gic.lpi_update_config(driver.its_dev, vec, enable=False)
        for cpu in self.online_cpus:
            self.machine.cpuifs[cpu].igrpen1 = False
        self.online_cpus = []
        self.crashed = f"panic: {reason}"
        if self.crashkernel is not None:
            self.log.printk(printk.KDUMP_STARTING)

    # -- views ---------------------------------------------------------------------------

    @property
    def reused_tables(self) -> bool:
        return self.gic.preallocated

    @property
    def tainted(self) -> bool:
        return bool(self.log.taints)
