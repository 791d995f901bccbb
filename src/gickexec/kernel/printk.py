"""The kernel's own message formats, and printk-style formatting of them.

Each constant is the format string as it appears in the Linux source (with its pr_fmt
prefix folded in), so a model log can be diffed against ``dmesg -t`` from a real machine.
``%pa`` prints a phys_addr_t the kernel's way on arm64: ``0x`` and 16 hex digits.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

__all__ = ["KernelLog", "Msg", "kformat", "pa"]

_CONV = re.compile(r"%(pa|[-#0 +]*\d*(?:\.\d+)?(?:ll|l|h|z)?[diuxXsc%])")


def pa(addr: int) -> str:
    """``%pa`` of a 64-bit phys_addr_t."""
    return f"0x{addr:016x}"


@functools.lru_cache(maxsize=512)
def _compile(fmt: str) -> tuple[str, int, tuple[int, ...]]:
    """``fmt`` made one Python %-format: ``%pa`` becomes ``0x%016x`` (what :func:`pa`
    prints), ``%%`` and literal text stay, C length modifiers go, ``%u`` becomes ``%d``.
    Returns that format, the number of conversions and which of them are ``%pa``."""
    out: list[str] = []
    count = 0
    pa_at: list[int] = []
    pos = 0
    for m in _CONV.finditer(fmt):
        out.append(fmt[pos : m.start()].replace("%", "%%"))
        pos = m.end()
        spec = m.group(1)
        if spec == "%":
            out.append("%%")
            continue
        if spec == "pa":
            pa_at.append(count)
            out.append("0x%016x")
        else:
            out.append("%" + re.sub(r"(ll|l|h|z)(?=[diuxXsc])", "", spec).replace("u", "d"))
        count += 1
    out.append(fmt[pos:].replace("%", "%%"))
    return "".join(out), count, tuple(pa_at)


def kformat(fmt: str, *args: object) -> str:
    """Format a C printk format string with Python values (``%pa`` takes an int)."""
    pyfmt, count, pa_at = _compile(fmt)
    if len(args) != count:
        many = "few" if len(args) < count else "many"
        raise ValueError(f"too {many} arguments for {fmt!r}")
    for i in pa_at:
        if not isinstance(args[i], int):
            raise TypeError(f"%pa takes an address, not {args[i]!r}")
    # one conversion of the whole line (a line per CPU brought up, or four)
    return pyfmt % args


Version = tuple[int, int]


@dataclass(frozen=True, slots=True)
class Msg:
    """A message whose wording depends on the kernel version: ``variants`` are
    ``(first version, format)`` in ascending order; a format of None means that version
    does not print it (at the default log level)."""

    variants: tuple[tuple[Version, str | None], ...]

    def at(self, version: Version) -> str | None:
        fmt: str | None = None
        for first, text in self.variants:
            if version >= first:
                fmt = text
        return fmt


def always(fmt: str) -> Msg:
    """A message every modelled version prints the same way."""
    return Msg((((0, 0), fmt),))


# -- arch/arm64 and init ----------------------------------------------------------------
BOOTING = "Booting Linux on physical CPU 0x%010lx [0x%08x]"
LINUX_VERSION = "Linux version %s (gickexec@model) (gcc (GCC) 12.2.0) #1 SMP PREEMPT"
MACHINE_MODEL = "Machine model: %s"
SMP_BRINGING_UP = "smp: Bringing up secondary CPUs ..."
SMP_SECONDARY = "CPU%u: Booted secondary processor 0x%010lx [0x%08x]"
SMP_BROUGHT_UP = "smp: Brought up 1 node, %d CPU%s"
# arch/arm64/kernel/smp.c smp_init_cpus() pr_warn() (v4.19.1; the real 6.1 kdump run prints
# it for nr_cpus=1)
CPUS_CLIPPED = "Number of cores (%d) exceeds configured maximum of %u - clipping"
# arch/arm64/kernel/smp.c smp_cpus_done()
SMP_TOTAL = "SMP: Total of %d processors activated."
# arch/arm64/kernel/machine_kexec.c machine_kexec(), printed last by every version
BYE = "Bye!"
# arch/arm64/kernel/psci.c cpu_psci_cpu_kill() (pr_fmt "psci: "), when a secondary
# CPU goes down through PSCI (kexec's machine_shutdown, hotplug): "CPU%d killed." in the
# 4.19.1 to 5.3.1 trees, "CPU%d killed (polled %d ms)" in 5.4.214 and every later tree
# read (to 6.6.9); 6.1 prints it
PSCI_KILLED_OLD = Msg((((0, 0), "psci: CPU%d killed."), ((5, 4), None)))
PSCI_KILLED = Msg((((0, 0), None), ((5, 4), "psci: CPU%d killed (polled %d ms)")))
# init/main.c start_kernel(): the command line (every version), and
# print_unknown_bootoptions(), the parameters the kernel does not know, which go to init:
# absent from the 5.14-rc5 tree, present in 5.15.55 and every later tree read
KERNEL_CMDLINE = "Kernel command line: %s"
UNKNOWN_PARAMS = Msg(
    (
        ((0, 0), None),
        ((5, 15), 'Unknown kernel command line parameters "%s", will be passed to user space.'),
    )
)
# arch/arm64/kernel/irq.c init_IRQ -> early_irq_init(): NR_IRQS is 64 on arm64
NR_IRQS = "NR_IRQS: %d, nr_irqs: %d, preallocated irqs: %d"
# arch/arm64/kernel/irq.c set_handle_irq() pr_info("Root IRQ handler: %ps"): absent from
# the 5.12.9 tree, present in 5.14-rc5 and every later tree read (5.13 not read, so
# whether 5.13 prints it is UNCONFIRMED; no profile models 5.13)
ROOT_IRQ = Msg((((0, 0), None), ((5, 14), "Root IRQ handler: %s")))
# kernel/dma/contiguous.c dma_contiguous_reserve() -> mm/cma.c
CMA_RESERVED = "cma: Reserved %lu MiB at %pa"
# drivers/firmware/efi/efi-init.c efi_init(): no "linux,uefi-system-table" in the DT
EFI_NOT_FOUND = "efi: UEFI not found."
# drivers/firmware/efi/arm-runtime.c arm_enable_runtime_services() (early_initcall)
EFI_RUNTIME_ON = "Remapping and enabling EFI services."
EFI_RUNTIME_OFF = "EFI services will not be available."
# drivers/firmware/efi/efi.c efi_get_fdt_params() prints it unconditionally in 4.19.1 to
# 5.6.4; from 5.7.14 (drivers/firmware/efi/fdtparams.c efi_get_fdt_params()) only
# "Getting UEFI parameters from %s in DT:" under efi=debug, which the model never sets
EFI_FROM_FDT = Msg((((0, 0), "efi: Getting EFI parameters from FDT:"), ((5, 7), None)))
# The MSI domains on top of the ITS (irq-gic-v3-its-platform-msi.c, -pci-msi.c,
# -fsl-mc-msi.c): named after the ACPI ITS ("ITS@0x8080000") or the DT node
MSI_DOMAIN_PLATFORM = "Platform MSI: %s domain created"
MSI_DOMAIN_PCI = "PCI/MSI: %s domain created"
MSI_DOMAIN_FSL_MC = "fsl-mc MSI: %s domain created"
KEXEC_STARTING = "kexec_core: Starting new kernel"
# arch/arm64/mm/init.c reserve_crashkernel(): CRASHKERNEL_RESERVED (pr_info) and
# CRASHKERNEL_FAILED (pr_warn) read in every tree from 4.19.1 to 6.6.9.  ELFCOREHDR_RESERVED:
# arm64 reserve_elfcorehdr() in 4.19.1 to 5.14-rc5; drivers/of/fdt.c (pr_fmt "OF: fdt: ")
# fdt_reserve_elfcorehdr() in 5.15.55 and every later tree read.
CRASHKERNEL_RESERVED = "crashkernel reserved: 0x%016llx - 0x%016llx (%lld MB)"
CRASHKERNEL_FAILED = "cannot allocate crashkernel (size:0x%llx)"
ELFCOREHDR_RESERVED = Msg(
    (
        ((0, 0), "Reserving %lldKB of memory at 0x%llx for elfcorehdr"),
        ((5, 15), "OF: fdt: Reserving %llu KiB of memory at 0x%llx for elfcorehdr"),
    )
)
# kernel/panic.c, arch/arm64/kernel/smp.c and machine_kexec.c, arch/arm64/mm/fault.c.
# PANIC, SMP_STOPPING, KDUMP_STARTING (machine_crash_shutdown()'s pr_info) and OOPS_FAULT
# (die_kernel_fault()'s pr_alert, %016lx) checked against public copies of the source and
# of arm64 crash logs; PANIC_IDLE: kernel/exit.c do_exit() (make_task_dead() in 6.6.9)
# panic(), the same text in every tree from 4.19.1 to 6.6.9.
PANIC = "Kernel panic - not syncing: %s"
PANIC_IDLE = "Attempted to kill the idle task!"
SMP_STOPPING = "SMP: stopping secondary CPUs"
KDUMP_STARTING = "Starting crashdump kernel..."
OOPS_FAULT = "Unable to handle kernel %s at virtual address %016lx"
# arch/arm64/kernel/traps.c __die(): pr_emerg("Internal error: %s: %x [#%d]" S_PREEMPT
# S_SMP) in every tree from 4.19.1 to 6.0-rc1, the err field "%016lx" in 6.2.12 and later
# (6.1 not read: whether 6.1 has the wide form is UNCONFIRMED); the suffix is the
# configuration's (PREEMPT and SMP here)
OOPS_INTERNAL = Msg(
    (
        ((0, 0), "Internal error: %s: %x [#%d] PREEMPT SMP"),
        ((6, 2), "Internal error: %s: %016lx [#%d] PREEMPT SMP"),
    )
)
# arch/arm64/kernel/setup.c setup_machine_fdt(): one pr_crit() of five lines.  Up to
# 5.15.55 the virtual address is %p, which before the pointer-hashing key is ready prints
# "(____ptrval____)" (lib/vsprintf.c); from 5.17-rc5 (5.16 not read) it is %px, the raw
# fixmap address, which depends on the build's memory layout and is not modelled: the
# model prints the %p spelling for every version.
DTB_INVALID = (
    "",
    "Error: invalid device tree blob at physical address %pa (virtual address "
    "0x(____ptrval____))",
    "The dtb must be 8-byte aligned and must not exceed 2 MB in size",
    "",
    "Please check your bootloader.",
)
# init/initramfs.c populate_rootfs() (INITRAMFS_FAILED checked against public copies);
# mm/page_alloc.c free_reserved_area() and init/do_mounts.c mount_block_root()
# (mount_root_generic() in 6.6.9) panic("VFS: Unable to mount root fs on %s") with
# "unknown-block(0,0)": the same text in every tree from 4.19.1 to 6.6.9
INITRAMFS_FAILED = "Initramfs unpacking failed: %s"
FREEING_MEMORY = "Freeing %s memory: %ldK"
PANIC_NO_ROOT = "VFS: Unable to mount root fs on unknown-block(0,0)"
# arch/arm64/kernel/smp.c __cpu_die(): pr_notice in the 4.19.1 to 5.12.9 trees, pr_debug
# (not in a default dmesg) in 5.14-rc5 and every later tree read (5.13 not read: whether
# 5.13 prints it is UNCONFIRMED; no profile models 5.13)
CPU_KILLED = Msg((((0, 0), "CPU%u: shutdown"), ((5, 14), None)))

# -- drivers/firmware/efi ---------------------------------------------------------------
# drivers/firmware/efi/arm-init.c efi_init() (to 5.6.4), then efi.c
# efi_systab_report_header() (5.7.14 on): the minor revision as "%.02u" up to 6.2.12 (6.1
# prints "EFI v2.70"); from 6.3.8 pr_info("EFI v%u.%u") with the tens digit and a
# pr_cont(".%u") of the units digit when it is not 0 (6.6: "EFI v2.7")
EFI_BY = Msg(
    (
        ((0, 0), "efi: EFI v%u.%.02u by %s"),
        ((6, 3), "efi: EFI v%u.%u by %s"),
    )
)
#: ``efi_config_parse_tables()`` entry (drivers/firmware/efi/efi.c): pr_cont(" %s=0x%lx ")
#: in every tree from 4.19.1 to 5.7.14, pr_cont("%s=0x%lx ") from 5.8.1 on
EFI_CFG_ENTRY = Msg((((0, 0), " %s=0x%lx "), ((5, 8), "%s=0x%lx ")))

# -- drivers/irqchip/irq-gic-v3.c (pr_fmt "GICv3: " in every tree read, 4.19.1 to 6.6.9) -
# gic_init_bases(): the SPI and extended-SPI counts, absent from every tree to 5.3.1,
# printed in 5.4.214 and every later tree read (to 6.6.9)
GIC_SPIS = Msg((((0, 0), None), ((5, 4), "GICv3: %d SPIs implemented")))
GIC_ESPIS = Msg((((0, 0), None), ((5, 4), "GICv3: %d Extended SPIs implemented")))
# gic_update_vlpi_properties() (to 5.3.1), gic_update_rdist_properties() (from 5.4.214):
# the VLPI line for every GIC to 5.5-rc5, with ", %sRVPEID support" in 5.6.4; from 5.7.14
# only "GICv4 features: ..." and only when GICR_TYPER.VLPIS is set, which no preset sets.
# The PPI count joined it in 5.4.214 and became the features line's in 5.19.
GIC_VLPI = Msg(
    (((0, 0), "GICv3: %sVLPI support, %sdirect LPI support"), ((5, 6), None))
)
GIC_VLPI_RVPEID = Msg(
    (
        ((0, 0), None),
        ((5, 6), "GICv3: %sVLPI support, %sdirect LPI support, %sRVPEID support"),
        ((5, 7), None),
    )
)
GIC_PPIS = Msg((((0, 0), None), ((5, 4), "GICv3: %d PPIs implemented"), ((5, 19), None)))
# gic_init_bases() "Distributor has %sRange Selector support" in every tree to 5.18.12;
# from 5.19 gic_update_rdist_properties() prints "GICv3 features: %d PPIs%s%s" instead
# (6.1 prints it)
GIC_RSS = Msg(
    (
        ((0, 0), "GICv3: Distributor has %sRange Selector support"),
        ((5, 19), None),
    )
)
GIC_FEATURES = Msg((((0, 0), None), ((5, 19), "GICv3: GICv3 features: %d PPIs%s%s")))
GIC_FOUND_RDIST = "GICv3: CPU%d: found redistributor %lx region %d:%pa"
# gic_handle_irq()'s WARN_ONCE() for an INTID without a mapping: "Unexpected interrupt
# received!" in every tree from 4.19.1 to 5.17-rc5; __gic_handle_irq() "Unexpected
# interrupt (irqnr %u)" in 5.18.12 and every later tree read (to 6.6.9).
GIC_UNEXPECTED = Msg(
    (((0, 0), "Unexpected interrupt received!"), ((5, 18), "Unexpected interrupt (irqnr %u)"))
)

# -- drivers/irqchip/irq-gic-v3-its.c (no pr_fmt in any tree read: literal prefixes) ----
ITS_ALLOCATED = "ITS@%pa: allocated %d %s @%lx (%s, esz %d, psz %dK, shr %d)"
# its_probe_one(): the ITS's register frame as %pR
ITS_MEM = "ITS [mem 0x%08llx-0x%08llx]"
ITS_PROP_TABLE_OLD = "GIC: using LPI property table @%pa"
ITS_PROP_TABLE = "GICv3: using LPI property table @%pa"
ITS_PEND_TABLE_OLD = "CPU%d: using LPI pending table @%pa"
ITS_PEND_TABLE = "GICv3: CPU%d: using %s LPI pending table @%pa"
ITS_PREALLOCATED = "GICv3: Using preallocated redistributor tables"
ITS_EXPECTED_RESERVED = "GICv3: Expected reserved range [%pa:%pa], not found"
# redist_disable_lpis(): v4.19.1 has no prefix, v4.20 writes "GICv3: " into the format
ITS_BOOTED_ENABLED = Msg(
    (
        ((0, 0), "CPU%d: Booted with LPIs enabled, memory probably corrupted"),
        ((4, 20), "GICv3: CPU%d: Booted with LPIs enabled, memory probably corrupted"),
    )
)
ITS_FAILED_DISABLE = "CPU%d: Failed to disable LPIs"
ITS_TIMEOUT_DISABLE = "CPU%d: Timeout while disabling LPIs"
ITS_NO_LPIS = "CPU%d: LPIs not supported"
# its_probe_one() and its_cpu_init_lpis() (pr_info_once) when Shareability does not stick
# (the same text in v4.19.1 and v6.1)
ITS_CMDQ_FLUSHING = "ITS: using cache flushing for cmd queue"
GIC_PROP_FLUSHING = "GIC: using cache flushing for LPI property table"
# its_wait_for_range_completion() and BUILD_SINGLE_CMD_FUNC (both pr_err_ratelimited):
# byte offsets into the queue, from_idx/to_idx/raw GITS_CREADR in v4.19.1 and v4.20;
# to_idx/linear_idx after Linux commit a050fa5476d4 ("irqchip/gic-v3-its: Fix command
# queue pointer comparison bug"): three arguments in the 5.0.1 tree, two in 5.2.1 (5.1
# not read: whether 5.1 has two is UNCONFIRMED; no profile models 5.1).
ITS_QUEUE_TIMEOUT = Msg(
    (((0, 0), "ITS queue timeout (%llu %llu %llu)"), ((5, 2), "ITS queue timeout (%llu %llu)"))
)
ITS_CMD_FAILED = "ITS cmd %s failed"
# its_init()'s pr_warn("ITS: No ITS available, not enabling LPIs") is in every tree read
# (4.19.1 to 6.6.9); every preset has an ITS, so no model kernel prints it.

# -- WARN() splats (line numbers and symbol offsets vary per build and are left out) ------
WARN_CUT = "------------[ cut here ]------------"
WARN_AT = "WARNING: CPU: %d PID: %d at %s %s"

TAINT_CRAP = "C"
TAINT_WARN = "W"


@dataclass(slots=True)
class KernelLog:
    """One kernel generation's ring buffer, as ``dmesg -t`` would print it."""

    lines: list[str] = field(default_factory=list)
    taints: set[str] = field(default_factory=set)
    #: the kernel version whose message variants :meth:`printk` picks
    version: Version = (99, 0)

    def printk(self, fmt: str | Msg, *args: object) -> None:
        """Print ``fmt`` (a :class:`Msg` in the variant of this log's version; nothing
        when that version does not print it)."""
        text = fmt.at(self.version) if isinstance(fmt, Msg) else fmt
        if text is not None:
            self.lines.append(kformat(text, *args))

    def line(self, text: str) -> None:
        self.lines.append(text)

    def add_taint(self, flag: str) -> None:
        self.taints.add(flag)

    def warn(self, cpu: int, pid: int, file: str, function: str, message: str = "") -> None:
        """A WARN() splat: the cut line, the message if any, the WARNING line; TAINT_WARN."""
        self.lines.append(WARN_CUT)
        if message:
            self.lines.append(message)
        self.printk(WARN_AT, cpu, pid, file, function)
        self.add_taint(TAINT_WARN)

    @property
    def taint_string(self) -> str:
        return "".join(sorted(self.taints))
