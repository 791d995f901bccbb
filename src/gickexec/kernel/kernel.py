"""One Linux kernel generation: boot, memory, interrupts, drivers, and kexec shutdown.

The boot follows arm64's order (init/main.c start_kernel(), arch/arm64/kernel/setup.c
setup_arch(), v6.1): ``setup_arch`` (memblock
from the firmware's memory map, ``efi_init`` walking the memreserve chain, early memblock
allocations), ``mm_init`` (the page allocator takes what memblock left), ``init_IRQ``
(GIC distributor, ``its_init``, the boot CPU's ``its_cpu_init``), ``smp_init``
(secondary CPUs' ``gic_starting_cpu``, then their ONLINE callbacks), and device probe.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from gickexec.arch.gicv3 import INTID_SPURIOUS
from gickexec.fw.uefi import EfiMemoryType, UefiFirmware
from gickexec.hw.cpuif import CpuInterface
from gickexec.hw.machine import Machine, MsiDevice
from gickexec.hw.memory import Agent, AgentKind
from gickexec.kernel import printk
from gickexec.kernel.bootloader import FirstBoot, efi_stub_boot, qemu_direct_boot, uboot_booti
from gickexec.kernel.cmdline import KernelCmdline
from gickexec.kernel.efi import (
    EfiState,
    efi_apply_persistent_mem_reservations,
    efi_config_parse_tables,
    efi_stub_install_tables,
)
from gickexec.kernel.gic_v3_its import GicV3Its, ItsDevice
from gickexec.kernel.kexec import KexecSegments
from gickexec.kernel.mm import (
    MIGRATE_UNMOVABLE,
    PAGES_PER_SECTION,
    SEG_DTB,
    SEG_IMAGE,
    SEG_INITRD,
    BuddyAllocator,
    KernelFault,
    Memblock,
    OutOfMemory,
    Owner,
    OwnershipMap,
    Role,
    first_deferred_pfn,
    free_ranges,
)
from gickexec.kernel.profiles import KernelProfile

__all__ = ["IrqDesc", "KdumpParams", "Kernel", "MsiDriver"]

_2M = 0x200000
_PAGE = 0x1000
#: First Linux IRQ number handed to MSIs (below it: SGIs, PPIs, timers, SPIs in use).
FIRST_MSI_VIRQ = 48

#: arm64 reserve_crashkernel(): below ARCH_LOW_ADDRESS_LIMIT (4 GiB), 2 MiB aligned
CRASH_ADDR_LIMIT = 1 << 32
#: arm64 NR_IRQS and the nr_irqs early_irq_init() reports (no preallocated descriptors)
NR_IRQS = 64

Entry = Literal["firmware", "kexec", "kdump"]


@dataclass(frozen=True, slots=True)
class KdumpParams:
    """What ``kexec -p`` hands a capture kernel: where it may live (the crashed kernel's
    ``crashkernel=`` region, as ``linux,usable-memory-range``), where its image and
    ``elfcorehdr`` were loaded, the CPU that panicked (it boots there), and the crashed
    kernel's memory that ``/proc/vmcore`` exposes."""

    usable: tuple[int, int]
    segments: KexecSegments
    vmcore: tuple[tuple[int, int], ...]
    cpu: int
    #: CPUs of the crashed kernel (one crash note each)
    cpus: int = 1

    @property
    def image(self) -> int:
        return self.segments.image[0]

    @property
    def elfcorehdr(self) -> tuple[int, int]:
        """``(addr, bytes)`` of the ELF core header as ``linux,elfcorehdr`` gives it:
        kexec-tools' ELF64 header and one program header per CPU note, vmcoreinfo, the
        kernel text and each memory range, rounded up to 1 KiB (the real 2-CPU, 4-range
        header is 0x400 bytes in its 0x1000-byte segment)."""
        assert self.segments.elfcorehdr is not None
        phdrs = self.cpus + 2 + len(self.vmcore)
        return self.segments.elfcorehdr[0], (64 + 56 * phdrs + 0x3FF) & ~0x3FF


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
            # pci_msix_unmask: an event the device held while masked (a kdump kernel
            # probing a device the crashed kernel masked) is sent now
            self.k.machine.msix_unmask(dev, vec)
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
        initrd_bytes: int = 0,
        pinned_image: int | None = None,
    ) -> None:
        self.machine = machine
        self.profile = profile
        self.generation = generation
        self._agents: dict[int, Agent] = {}  # agent(): one immutable value per CPU
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
        # nr_cpu_ids: CONFIG_NR_CPUS, lowered by nr_cpus= (kernel/smp.c nrcpus())
        limit = min(self.cmdline.nr_cpus or profile.nr_cpus, profile.nr_cpus)
        self.possible_cpus = [self.boot_cpu, *others][:limit]
        self.nr_cpus = len(self.possible_cpus)
        self._logical = {c: n for n, c in enumerate(self.possible_cpus)}
        self.online_cpus: list[int] = []
        self.log = printk.KernelLog(version=profile.version)
        self.owners = OwnershipMap()
        if kdump is not None:
            self.memory = [(kdump.usable[0], kdump.usable[0] + kdump.usable[1])]
        else:
            self.memory = [(r.start, r.end) for r in machine.mem.ram]
        #: memory the firmware reports as runtime (memblock_mark_nomap): in memblock.memory
        #: (it counts for deferred struct-page init) but never free, not "System RAM"
        self.nomap: list[tuple[int, int]] = []
        self.memblock = Memblock(self.memory, profile.init_memblock_reserved_regions)
        self.initrd_bytes = initrd_bytes
        self.pinned_image = pinned_image
        #: where the boot loader put the image, initramfs and DTB on a firmware boot
        self.first_boot: FirstBoot | None = None
        self.initrd: tuple[int, int] | None = None
        self.dtb: tuple[int, int] | None = None
        #: memory whose struct pages page_alloc_init_late() initialises (after smp_init)
        self._deferred: list[tuple[int, int]] = []
        self.crashkernel: tuple[int, int] | None = None
        #: why this kernel died (oops, panic, hang), or None while it runs
        self.crashed: str | None = None
        self.pages: BuddyAllocator | None = None
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
        return self._logical[cpu]

    @property
    def memblock_memory(self) -> list[tuple[int, int]]:
        """``memblock.memory``: RAM and the firmware's nomap memory, merged."""
        out: list[tuple[int, int]] = []
        for start, end in sorted([*self.memory, *self.nomap]):
            if out and start <= out[-1][1]:
                out[-1] = (out[-1][0], max(out[-1][1], end))
            else:
                out.append((start, end))
        return out

    @property
    def system_ram(self) -> list[tuple[int, int]]:
        """The "System RAM" ranges of /proc/iomem: memory minus what the firmware keeps
        (nomap), ``[start, end)``."""
        return free_ranges(self.memory, [(s, e - s) for s, e in self.nomap])

    @property
    def iomem_kernel(self) -> list[tuple[int, int]]:
        """"Kernel code" (``_stext``..``__init_begin``) and "Kernel data" (``_sdata``..
        ``_end``) of /proc/iomem as ``(addr, size)``: kexec-tools does not avoid them."""
        base, size = self.image
        b = self.profile.build
        return [(base + b.stext, b.init_begin - b.stext), (base + b.sdata, size - b.sdata)]

    def in_linear_map(self, addr: int, size: int) -> bool:
        """Whether ``[addr, addr + size)`` is in this kernel's memory (its linear map)."""
        return any(s <= addr and addr + size <= e for s, e in self.memory)

    def agent(self, cpu: int = 0) -> Agent:
        """This kernel's CPU ``cpu`` as the writer of an access.  Agents are frozen
        values, so one per CPU serves every access (a CPU brought up writes a dozen
        times: the ITS command queue, GITS_CWRITER, the redistributor's registers)."""
        agent = self._agents.get(cpu)
        if agent is None:
            agent = self._agents[cpu] = Agent(AgentKind.KERNEL, cpu, self.generation)
        return agent

    def claim(self, addr: int, size: int, owner: Owner) -> None:
        self.owners.assign(addr, size, owner)

    def _memblock_reserve(self, addr: int, size: int, label: str, role: Role | None = None) -> None:
        self.memblock.reserve(addr, size)
        self.claim(addr, size, Owner(label, role))

    def alloc_pages(
        self, size: int, label: str, role: Role | None = None, *, zero: bool = True
    ) -> int:
        """``alloc_pages()`` of a naturally aligned block, labelled; zeroed unless asked not."""
        addr = self._rmqueue(size)
        self.claim(addr, size, Owner(label, role))
        if zero:
            self.machine.mem.fill(addr, size, 0, self.agent())
        return addr

    def _rmqueue(self, size: int) -> int:
        """An unmovable block from the buddy allocator, growing the initialised part of
        the zone while struct pages are still deferred."""
        assert self.pages is not None, "page allocator used before mm_init"
        while True:
            try:
                return self.pages.alloc(size, mt=MIGRATE_UNMOVABLE)
            except OutOfMemory:
                if not self._deferred_grow_zone():
                    raise

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
        if self.entry == "firmware":
            try:
                self._run_boot_loader()
            except ValueError as e:
                # the image or initrd does not fit anywhere: the kernel never runs
                self.die(KernelFault(f"hang: the boot loader could not place the kernel: {e}", []))
                return
        self.log.printk(printk.BOOTING, p.mpidr(self.boot_cpu), p.midr)
        banner = self.profile.build.banner
        self.log.line(printk.kformat(banner, self.profile.release) if "%s" in banner else banner)
        try:
            self._setup_machine_fdt()
            if self.has_board_dt:
                self.log.printk(printk.MACHINE_MODEL, p.model)
            for phase in (
                self._setup_arch,
                self._start_kernel_early,
                self._mm_init,
                self._init_irq,
                self._early_initcalls,
                self._smp_init,
                self._page_alloc_init_late,
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

    @property
    def has_board_dt(self) -> bool:
        """Booted with the board's device tree (not the EFI stub's empty one): a DT
        boot, UEFI handing over a DT, or kexec/kdump from such a kernel."""
        return self.machine.platform.boot_path != "uefi-acpi"

    def _run_boot_loader(self) -> None:
        """Before the kernel runs: the boot loader places the image and initrd (and, on
        UEFI, the EFI stub installs its configuration tables)."""
        build = self.profile.build
        p = self.machine.platform
        ram = [(s, e) for s, e in self.memory]
        if self.firmware is not None:
            fw = self.firmware
            busy = [(r.start, r.size) for r, _ in fw.regions()]
            top = fw.at(fw.layout.initrd_top) if fw.layout.initrd_top else None
            if top is not None:
                busy.append((top, max(e for _, e in ram) - top))
            if fw.layout.stub_fdt is not None:
                busy.append((fw.at(fw.layout.stub_fdt[0]), fw.layout.stub_fdt[1]))
            boot = efi_stub_boot(
                free_ranges(ram, busy),
                build.image_size,
                self.initrd_bytes,
                top or 0,
                kaslr=p.efi_rng and not self.cmdline.nokaslr,
                rng=self.rng,
                pinned=self.pinned_image,
            )
        elif p.dt_loader == "qemu":
            start, end = ram[0]
            boot = qemu_direct_boot(
                (start, end - start), build.image_size, self.initrd_bytes, p.fdt_bytes
            )
        else:
            boot = uboot_booti(ram, build.image_size, p.fdt_bytes)
        if self.pinned_image is not None:
            boot = FirstBoot(self.pinned_image, boot.initrd, boot.dtb, boot.how)
        if self.firmware is not None and self.firmware.layout.stub_fdt is not None:
            off, size = self.firmware.layout.stub_fdt
            boot = FirstBoot(boot.image, boot.initrd, (self.firmware.at(off), size), boot.how)
        self.first_boot = boot
        if self.firmware is not None and p.efi_stub:
            efi_stub_install_tables(
                self.firmware, self.machine.mem, self.profile, self.agent(), boot.initrd, p.efi_rng
            )

    def _place_image(self) -> None:
        """Where the image runs: the kexec loader's address, else where the boot loader
        put it (kernel/bootloader.py); then ``arm64_memblock_init()``'s reservations of the
        image (``_stext`` to ``_end``), the initrd (page-rounded) and, from
        ``early_init_fdt_reserve_self()``, the device tree."""
        build = self.profile.build
        if self.segments is not None:
            base = self.segments.image[0]
            self.initrd = self.segments.initramfs
            self.dtb = self.segments.dtb
        elif self.kdump is not None:
            base = self.kdump.image
            seg = self.kdump.segments
            self.initrd = seg.initramfs
            self.dtb = seg.dtb
        else:
            assert self.first_boot is not None
            boot = self.first_boot
            base, self.initrd, self.dtb = boot.image, boot.initrd, boot.dtb
        self.image = (base, build.image_size)
        self._memblock_reserve(
            base + build.stext,
            build.image_size - build.stext,
            self.segment_label("kernel image"),
            Role(SEG_IMAGE),
        )
        if self.initrd is not None:
            start = self.initrd[0] & ~(_PAGE - 1)
            size = -(-(self.initrd[0] + self.initrd[1]) // _PAGE) * _PAGE - start
            self._memblock_reserve(start, size, self.segment_label("initrd"), Role(SEG_INITRD))
        if self.dtb is not None:
            self._memblock_reserve(
                self.dtb[0], self.dtb[1], self.segment_label("device tree"), Role(SEG_DTB)
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
        if self.dtb is not None:
            owned.append((SEG_DTB, *self.dtb))
        if self.initrd is not None and not self.initrd_freed:
            owned.append((SEG_INITRD, *self.initrd))
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
        oops = printk.OOPS_INTERNAL.at(self.profile.version)
        assert oops is not None  # every version prints it
        raise KernelFault(
            f"{writer} set a pending bit at {addr:#x} inside this kernel's image "
            f"[{img:#x}, {img + size:#x}): a live LPI pending table lies under the image "
            "(the model treats any change to the running image as fatal)",
            [
                printk.kformat(oops, "Oops - undefined instruction", 0, 1),
                printk.kformat(printk.PANIC, "Fatal exception"),
            ],
        )

    def reap(self) -> None:
        """Between steps: die now if the GIC has written into this kernel's image."""
        if self.crashed is None and self.gic_hits:  # once per MSI: usually nothing to do
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
        if hit is None or self.dtb is None:
            return
        dtb = self.dtb[0]
        raise KernelFault(
            f"{hit[1]} set a pending bit at {hit[0]:#x} in the device tree the loader placed "
            f"at {dtb:#x} before this kernel parsed it: setup_machine_fdt() spins forever",
            [printk.kformat(line, dtb) if "%" in line else line for line in printk.DTB_INVALID],
        )

    def _populate_rootfs(self) -> None:
        """``arch_initcall``: export the boot-time memblock reservations as "reserved" in
        /proc/iomem; ``rootfs_initcall``: unpack the initramfs and free its pages."""
        self.iomem_reserved = [(s, e - s) for s, e in self.memblock.reserved]
        if self.initrd is None:
            return
        addr, size = self.initrd
        if self._first_hit(SEG_INITRD) is not None:
            # UNCONFIRMED which error string: it depends on which byte of the archive changed.
            self.log.printk(printk.INITRAMFS_FAILED, "junk in compressed archive")
        # free_initrd_mem() -> free_reserved_area(): the whole pages inside the initrd
        start = -(-addr // _PAGE) * _PAGE
        end = (addr + size) & ~(_PAGE - 1)
        rstart = addr & ~(_PAGE - 1)
        rend = -(-(addr + size) // _PAGE) * _PAGE
        self.memblock.free(rstart, rend - rstart)
        self.owners.assign(rstart, rend - rstart, None)
        if end > start:
            assert self.pages is not None
            self.pages.free_range(start, end)
        self.initrd_freed = True
        self.log.printk(printk.FREEING_MEMORY, "initrd", max(0, end - start) >> 10)

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
        """arm64 ``setup_arch()`` as far as memory goes, in its order: ``efi_init()`` (the
        firmware memory map: runtime regions nomap, ACPI reclaim and the stub's pages
        reserved, then the configuration tables and the memreserve walk),
        ``arm64_memblock_init()`` (image, initrd, DTB, elfcorehdr), ``paging_init()``
        and ``bootmem_init()`` (NODE_DATA, the vmemmap, CMA, crashkernel), then the early
        memblock users of ``start_kernel()`` (per-CPU areas, the dentry and inode hash
        tables).  memblock allocates top-down."""
        top = max(e for _, e in self.memory)

        def on_reserve(addr: int, size: int, what: str) -> None:
            self.claim(addr, max(0, min(size, top - addr)), Owner(what))

        fw = self.firmware
        if fw is not None:
            self.log.printk(printk.EFI_FROM_FDT)
            for start, size in fw.layout.nomap_memory:
                self._add_nomap(start, size)
            for region, kind in fw.regions():
                if kind == EfiMemoryType.RUNTIME_SERVICES_DATA:
                    self._add_nomap(region.start, region.size)
                    self.claim(region.start, region.size, Owner(region.name))
                elif kind == EfiMemoryType.ACPI_RECLAIM and self.in_linear_map(
                    region.start, region.size
                ):
                    self._memblock_reserve(region.start, region.size, region.name)
            for addr, size, label in fw.kernel_reserved():
                if self.in_linear_map(addr, size):
                    self._memblock_reserve(addr, size, label)
            self.efi = efi_config_parse_tables(
                self.machine.mem,
                fw.systab,
                self.profile,
                self.memblock,
                self.log,
                on_reserve,
            )
        else:
            self.log.printk(printk.EFI_NOT_FOUND)
        self._place_image()
        if self.kdump is not None:
            addr, size = self.kdump.elfcorehdr
            self._memblock_reserve(addr, size, "elfcorehdr (/proc/vmcore)")
            self.log.printk(printk.ELFCOREHDR_RESERVED, size >> 10, addr)
        # paging_init(): the linear map's page tables, then memblock_allow_resize().
        # Debian's rodata=full maps the linear map with pages: 8 bytes of PTE per 4 KiB
        # page, plus the upper levels and the fixmap (model: 192 KiB).
        ram_bytes = sum(e - s0 for s0, e in self.system_ram)
        self._early_alloc("memblock: kernel page tables", (ram_bytes >> 9) + 0x30000, _PAGE)
        self.memblock.can_resize = True
        if self.efi is not None and self.profile.defers_persistent_reservations:
            efi_apply_persistent_mem_reservations(self.efi, self.profile, self.memblock, on_reserve)
        # bootmem_init(): NODE_DATA, sparse_init()'s vmemmap (2 MiB of struct pages per
        # present 128 MiB section, one buffer), CMA, crashkernel.
        self._early_alloc("memblock: NODE_DATA", 0x2C80, 64)
        sections = {
            sec for s0, e0 in self.memblock_memory for sec in range(s0 >> 27, ((e0 - 1) >> 27) + 1)
        }
        self._early_alloc("memblock: vmemmap (struct pages)", len(sections) * _2M, _2M)
        cma = self.profile.build.cma_bytes
        if cma:
            # dma_contiguous_reserve(): skipped without a word when it does not fit
            with contextlib.suppress(OutOfMemory):
                addr = self.memblock.alloc(cma, _2M, CRASH_ADDR_LIMIT)
                self.claim(addr, cma, Owner("CMA area"))
                self.log.printk(printk.CMA_RESERVED, cma >> 20, addr)
        if self.cmdline.crashkernel:
            self.reserve_crashkernel(self.cmdline.crashkernel)
        # smp_init_cpus() (arch/arm64/kernel/smp.c, v4.19.1): cpu_count counts every CPU
        # the firmware describes; those beyond nr_cpu_ids are not used
        if self.machine.platform.cpus > self.nr_cpus:
            self.log.printk(printk.CPUS_CLIPPED, self.machine.platform.cpus, self.nr_cpus)
        self._early_alloc("memblock: per-CPU areas", self.nr_cpus * 0x1F000, _PAGE)
        pages = sum(e - s0 for s0, e in self.memblock_memory) >> 12
        for label, scale in (("dentry", 1), ("inode", 2)):
            entries = 1 << max(0, (pages >> scale) - 1).bit_length()
            self._early_alloc(f"memblock: {label} hash table", entries * 8, _PAGE)
        for addr, size in self.memblock.resized:
            self.claim(addr, size, Owner("memblock: reserved regions array"))

    def _add_nomap(self, start: int, size: int) -> None:
        """``memblock_mark_nomap()`` of firmware memory (added to memblock.memory)."""
        self.nomap.append((start, start + size))
        self.memblock.nomap.append((start, start + size))

    def _early_alloc(self, label: str, size: int, align: int = 0x10000) -> None:
        addr = self.memblock.alloc(size, align)
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

    def _start_kernel_early(self) -> None:
        """``start_kernel()`` before ``mm_init()``: the command line and what it did not know."""
        self.log.printk(printk.KERNEL_CMDLINE, self.cmdline.text)
        unknown = self.cmdline.unknown
        if unknown:
            self.log.printk(printk.UNKNOWN_PARAMS, " ".join(unknown))

    def _mm_init(self) -> None:
        """``mm_init()`` -> ``memblock_free_all()``: the free memory whose struct pages
        are initialised early (``defer_init()``) goes to the buddy allocator; then the
        allocations of the build that precede the ITS probe (ftrace's record groups, then
        single pages: :class:`~gickexec.kernel.profiles.KernelBuild`)."""
        regions = self.memblock_memory
        zone_start = regions[0][0]
        deferred = first_deferred_pfn(regions, zone_start)
        free = self.memblock.free_ranges()
        limit = None if deferred is None else deferred << 12
        early = [(s0, e if limit is None else min(e, limit)) for s0, e in free]
        self._deferred = (
            [] if limit is None else [(max(s0, limit), e) for s0, e in free if e > limit]
        )
        to_tail = self.profile.buddy_free_to_tail
        self.pages = BuddyAllocator([r for r in early if r[1] > r[0]], to_tail=to_tail)
        build = self.profile.build
        self._boot_allocs(build.ftrace_groups, "kernel: ftrace records")
        self._boot_allocs((0,) * build.early_pages, "kernel: early allocations (slab, IRQs)")

    def _boot_allocs(self, orders: Sequence[int], label: str) -> None:
        """Allocate blocks of these orders one after the other (what the boot code does);
        label them in merged runs, since they are mostly contiguous."""
        runs: list[list[int]] = []
        with contextlib.suppress(OutOfMemory):
            for order in orders:
                size = _PAGE << order
                addr = self._rmqueue(size)
                if runs and runs[-1][1] == addr:
                    runs[-1][1] = addr + size
                else:
                    runs.append([addr, addr + size])
        for start, end in runs:
            self.claim(start, end - start, Owner(label))

    def _deferred_grow_zone(self) -> bool:
        """``deferred_grow_zone()``: an allocation that fails before
        ``page_alloc_init_late()`` initialises the next section of deferred pages (at
        least PAGES_PER_SECTION, to a section boundary) and retries.  False when nothing
        is left to grow into."""
        if not self._deferred or self.pages is None:
            return False
        section = PAGES_PER_SECTION << 12
        start = self._deferred[0][0]
        limit = (start // section + 1) * section
        grown: list[tuple[int, int]] = []
        rest: list[tuple[int, int]] = []
        for s0, e in self._deferred:
            if s0 < limit:
                grown.append((s0, min(e, limit)))
                if e > limit:
                    rest.append((limit, e))
            else:
                rest.append((s0, e))
        self._deferred = rest
        for s0, e in grown:
            self.pages.free_range(s0, e, to_tail=self.profile.buddy_free_to_tail)
        return True

    def _page_alloc_init_late(self) -> None:
        """``page_alloc_init_late()`` after ``smp_init()``: the deferred struct pages are
        initialised and their memory joins the free lists (``deferred_free_range()`` ->
        ``__free_pages_core()``, to the tail like boot memory)."""
        assert self.pages is not None
        for start, end in self._deferred:
            self.pages.free_range(start, end, to_tail=self.profile.buddy_free_to_tail)
        self._deferred = []

    @property
    def lpis(self) -> bool:
        """``gic_dist_supports_lpis()``: GICD_TYPER.LPIS and not ``irqchip.gicv3_nolpi``."""
        return self.machine.gicd.lpis_supported and not self.cmdline.gicv3_nolpi

    def _init_irq(self) -> None:
        gic = self.gic
        self.log.printk(printk.NR_IRQS, NR_IRQS, NR_IRQS, 0)
        gic.gic_dist_init()
        if self.profile.its_init_before_gic_cpu_init:
            # v4.19.1 gic_init_bases(): its_init(), then gic_cpu_init() -> its_cpu_init()
            if self.lpis:
                gic.its_init()
            gic.found_redistributor(self.boot_cpu)
            if self.lpis:
                gic.its_cpu_init(self.boot_cpu)
            gic.gic_cpu_init(self.boot_cpu)
        else:
            gic.found_redistributor(self.boot_cpu)
            gic.gic_cpu_init(self.boot_cpu)
            if self.lpis:
                gic.its_init()
                gic.its_cpu_init(self.boot_cpu)
        if self.lpis:
            gic.its_lpi_memreserve_init()
        self.online_cpus = [self.boot_cpu]
        if gic.memreserve_cpuhp:
            gic.its_cpu_memreserve_lpi(self.boot_cpu)
        # local_irq_enable(): whatever the redistributor signals is taken from now on.
        self.handle_interrupts([self.boot_cpu])

    def _early_initcalls(self) -> None:
        """``do_pre_smp_initcalls()``: the MSI domains stacked on the ITS, then
        ``arm_enable_runtime_services()``."""
        if self.gic.its_ok:
            p = self.machine.platform
            if self.has_board_dt:
                name, path = p.dt_its_path.rsplit("/", 1)[-1], p.dt_its_path
            else:
                name = path = f"ITS@{p.its_base:#x}"
            self.log.printk(printk.MSI_DOMAIN_PLATFORM, name)
            self.log.printk(printk.MSI_DOMAIN_PCI, path)
            self.log.printk(printk.MSI_DOMAIN_FSL_MC, name)
        if self.efi is not None and self.efi.config_tables:
            self.log.printk(printk.EFI_RUNTIME_ON)
        else:
            self.log.printk(printk.EFI_RUNTIME_OFF)

    def _smp_init(self) -> None:
        self.log.printk(printk.SMP_BRINGING_UP)
        maxcpus = self.cmdline.maxcpus
        for cpu in self.possible_cpus[1:]:
            if maxcpus is not None and len(self.online_cpus) >= maxcpus:
                break
            self.gic.found_redistributor(cpu)
            self.cpu_up(cpu)
        n = len(self.online_cpus)
        self.log.printk(printk.SMP_BROUGHT_UP, n, "" if n == 1 else "s")
        self.log.printk(printk.SMP_TOTAL, n)

    def cpu_up(self, cpu: int) -> str | None:
        """Bring physical ``cpu`` online (``gic_starting_cpu`` at STARTING, then the ONLINE
        callbacks); returns why it cannot, or None."""
        if cpu not in self._logical:  # possible_cpus, without scanning the list
            return f"CPU {cpu} is not possible in this kernel (nr_cpus={self.nr_cpus})"
        if cpu in self.online_cpus:
            return None
        p = self.machine.platform
        self.gic.gic_cpu_init(cpu)
        if self.lpis:
            self.gic.its_cpu_init(cpu)
        self.log.printk(printk.SMP_SECONDARY, self.logical_id(cpu), p.mpidr(cpu), p.midr)
        online = self.online_cpus
        online.append(cpu)
        if self.gic.memreserve_cpuhp:
            self.gic.its_cpu_memreserve_lpi(cpu)
        if self.online_cpus is online:  # still up (handle_interrupts([cpu]) without its scan)
            self.gic_handle_irq(self.machine.cpuifs[cpu])
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
        self.log.printk(printk.PSCI_KILLED_OLD, self.logical_id(cpu))
        self.log.printk(printk.PSCI_KILLED, self.logical_id(cpu), 0)
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
        online = self.online_cpus
        for cpu in online if cpus is None else cpus:
            # A CPU just taken from the live list is in it: only named CPUs (or a list
            # replaced meanwhile) are looked up, not each online CPU in all of them.
            if (cpus is not None or self.online_cpus is not online) and (
                cpu not in self.online_cpus
            ):
                continue
            self.gic_handle_irq(cpuifs[cpu])

    def gic_handle_irq(self, cpuif: CpuInterface) -> None:
        """``gic_handle_irq()`` on an online CPU: acknowledge (ICC_IAR1_EL1) until 1023,
        handling and EOIing each INTID."""
        cpu = cpuif.cpu
        # Each acknowledge clears one pending LPI, so this terminates.
        for _ in range(len(cpuif.rd.pending) + 1):
            intid = cpuif.acknowledge()
            if intid == INTID_SPURIOUS:
                break
            self.generic_handle_domain_irq(cpu, intid)
            cpuif.eoi(intid)

    def generic_handle_domain_irq(self, cpu: int, intid: int) -> None:
        """What ``gic_handle_irq()`` does with an acknowledged INTID before its EOI: the
        handler of the interrupt mapped to it, or the "Unexpected interrupt" warning."""
        desc = self.irqs.get(intid)
        if desc is None:
            self._unexpected(cpu, intid)
        else:
            desc.counts[cpu] = desc.counts.get(cpu, 0) + 1
        self.on_irq(cpu, intid, desc)

    def _unexpected(self, cpu: int, intid: int) -> None:
        self.unexpected_irqs += 1
        if self._warned_unexpected:
            return
        self._warned_unexpected = True
        fmt = printk.GIC_UNEXPECTED.at(self.profile.version)
        assert fmt is not None
        msg = printk.kformat(fmt, intid) if "%u" in fmt else fmt
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
        """``kernel_kexec()``: ``kernel_restart_prepare()`` (device shutdown), "Starting
        new kernel", ``machine_shutdown()`` (the secondary CPUs go down, their remaining
        interrupts migrating to the boot CPU), ``machine_kexec()`` ("Bye!").  The GIC is
        not reset."""
        for driver in self.drivers:
            driver.shutdown()
        self.log.printk(printk.KEXEC_STARTING)
        for cpu in list(self.online_cpus):
            if cpu != self.boot_cpu:
                self.cpu_down(cpu)
        self.log.printk(printk.BYE)
        for cpu in self.online_cpus:
            self.machine.cpuifs[cpu].igrpen1 = False
        self.online_cpus = []

    def crash_shutdown(self, reason: str) -> None:
        """``panic()`` -> ``__crash_kexec()`` -> ``machine_crash_shutdown()``: other CPUs
        stopped, every interrupt masked.  ``machine_kexec_mask_interrupts()``
        (arch/arm64/kernel/machine_kexec.c, v4.19.1 to v6.1) calls each descriptor's
        ``irq_mask``, for an MSI-X vector the ITS-MSI chip's ``its_mask_msi_irq()``
        (drivers/irqchip/irq-gic-v3-its-pci-msi.c): ``pci_msi_mask_irq()`` sets the
        vector's mask bit at the device, then ``irq_chip_mask_parent()`` reaches
        ``its_mask_irq()``, which clears the LPI's enable bit in the property table.
        Devices are not shut down: an event on a masked vector is held by the device
        (MSI-X pending bit) instead of being sent."""
        self.log.printk(printk.PANIC, reason)
        self.log.printk(printk.SMP_STOPPING)
        for driver in self.drivers:
            if driver.its_dev is None:
                continue
            for vec in range(driver.its_dev.nr_lpis):
                driver.device.vectors[vec].masked = True
                self.gic.lpi_update_config(driver.its_dev, vec, enable=False)
        for cpu in self.online_cpus:
            self.machine.cpuifs[cpu].igrpen1 = False
        self.online_cpus = []
        self.crashed = f"panic: {reason}"
        if self.crashkernel is not None:
            self.log.printk(printk.KDUMP_STARTING)
            self.log.printk(printk.BYE)

    # -- views ---------------------------------------------------------------------------

    @property
    def reused_tables(self) -> bool:
        return self.gic.preallocated

    @property
    def tainted(self) -> bool:
        return bool(self.log.taints)
