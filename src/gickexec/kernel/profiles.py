"""Kernel profiles: which Linux behaviours a kernel version has, each with its source.

Behaviour is selected by feature flags, never by comparing version numbers (DEVELOPERS.md).
Each flag that differs between profiles cites the upstream change in the form ``Linux
commit <hash> ("<subject>") (v<version>)`` or the release trees read; where a hash or
version could not be pinned, the citation says UNCONFIRMED.  Messages that change
wording without behaviour are versioned in kernel/printk.py instead.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

from gickexec.fw.memreserve import MemreserveLayout

__all__ = ["FEATURE_SOURCES", "PROFILES", "KernelBuild", "KernelProfile", "get_profile"]

# Where each feature flag comes from.  Keys are KernelProfile field names.
FEATURE_SOURCES: dict[str, str] = {
    "reuses_preallocated_lpi_tables": (
        'Linux commit (v4.20 series patch 6) ("irqchip/gic-v3-its: Allow use of '
        'pre-programmed LPI tables") (v4.20); kdump reuse: patch 7 ("Use pre-programmed '
        'redistributor tables with kdump kernels") (v4.20)'
    ),
    "registers_lpi_tables_with_efi": (
        'Linux commit (v4.20 series patch 9) ("irqchip/gic-v3-its: Register LPI tables with '
        'EFI config table") (v4.20)'
    ),
    "memreserve_layout": (
        'Linux commit 71e0940d52e1 ("efi: honour memory reservations passed via a linux '
        'specific config table") (v4.20); Linux commit 80424b02d42b ("efi: Reduce the amount '
        'of memblock reservations for persistent allocations") (v5.0)'
    ),
    "efi_stub_installs_memreserve_root": (
        'Linux commit (Ard Biesheuvel, 2018-09-21) ("efi/arm: libstub: add a root memreserve '
        'config table") (v4.20)'
    ),
    "memreserve_in_iomem": (
        "Linux commit ab0eb16205b4 (\"efi/memreserve: Register reservations as 'reserved' in "
        '/proc/iomem") (v5.5)'
    ),
    "pending_memreserve_at_online": (
        'Linux commit d23bc2bc1d63 ("irqchip/gic-v3-its: Postpone LPI pending table freeing '
        'and memreserve") (v5.17)'
    ),
    "its_reset_baser_before_probe": (
        "Linux commit c733ebb7cb67 (\"irqchip/gic-v3-its: Reset each ITS's BASERn register "
        'before probe") (v5.17: merged through irqchip-fixes after v5.17-rc1)'
    ),
    "memreserve_node_access": (
        'Linux commit 80424b02d42b ("efi: Reduce the amount of memblock reservations for '
        'persistent allocations") (v5.0) walks the nodes with __va(), which faults in a kdump '
        "kernel whose linear map does not cover them; Linux commit 18df7577adae "
        '("efi/memreserve: deal with memreserve entries in unmapped memory") (v5.2) '
        "memremap()s each node"
    ),
    "memreserve_node_is_page_size": (
        'Linux commit 80424b02d42b ("efi: Reduce the amount of memblock reservations for '
        'persistent allocations") (v5.0): EFI_MEMRESERVE_COUNT(PAGE_SIZE); Linux commit '
        '18df7577adae ("efi/memreserve: deal with memreserve entries in unmapped memory") '
        "(v5.2): EFI_MEMRESERVE_COUNT(SZ_4K)"
    ),
    "kexec_file_load": (
        'Linux commit 52b2a8af7436 ("arm64: kexec_file: load initrd and device-tree") '
        "(AKASHI Takahiro, 2018-11-15; v5.0, as its fixes' \"Cc: stable # v5.0\" says) and "
        "its series: arm64 gains kexec_file_load(), which places segments by walking memblock"
    ),
    "memreserve_in_memblock": (
        'Linux commit 2bab693a608b ("firmware/efi: Tell memblock about EFI iomem '
        'reservations") (v5.14: efi_mem_reserve_iomem() calls memblock_reserve() in the '
        "5.14-rc5 tree, not in 5.12.9; the 5.4.214 tree has the backport, the 5.10.7 tree "
        "predates it): kexec_file_load() keeps its segments off the tables"
    ),
    "defers_persistent_reservations": (
        'Linux commit eff896288872 ("efi/arm: Defer persistent reservations until after '
        'paging_init()") (v4.20), reverted in v5.0 ("efi/arm: Revert \'Defer persistent '
        "reservations until after paging_init()'\"): the 4.20 tree's setup_arch() calls "
        "efi_apply_persistent_mem_reservations(), the 5.0.1 tree walks the list in "
        "efi_config_parse_tables() again"
    ),
    "memblock_reserved_regions_per_cpu": (
        'Linux commit (Ard Biesheuvel, 2019-02) ("arm64, mm, efi: Account for GICv3 LPI tables '
        'in static memblock reserve table") (v5.0; the parent of 582a32e70882 as '
        "kernel.googlesource.com shows it, its own hash UNCONFIRMED; Link: "
        "20190215123333.21209-2-ard.biesheuvel@linaro.org): "
        "INIT_MEMBLOCK_RESERVED_REGIONS = INIT_MEMBLOCK_REGIONS + NR_CPUS + 1 instead of 128, "
        "read in v5.0.1 arch/arm64/include/asm/memory.h (not in v4.20's)"
    ),
    "its_init_before_gic_cpu_init": (
        "Linux v4.19.1 drivers/irqchip/irq-gic-v3.c gic_init_bases() calls its_init() "
        "before gic_smp_init()/gic_dist_init()/gic_cpu_init(), and gic_cpu_init() calls "
        "its_cpu_init(); v4.20 calls its_init() and its_cpu_init() after gic_cpu_init(): "
        'Linux commit (v4.20 series, Marc Zyngier) ("irqchip/gic-v3-its: Change '
        'initialization ordering for LPIs") (v4.20; subject and hash UNCONFIRMED)'
    ),
    "nr_cpus": (
        'CONFIG_NR_CPUS: arch/arm64/Kconfig "config NR_CPUS" default "64" in Linux v4.19.1, '
        'v4.20 and v5.0.1, default "256" in v5.2.1 (arm64 defconfig does not set it); the '
        "commit that raised it, between v5.0 and v5.2, is UNCONFIRMED"
    ),
    "buddy_free_to_tail": (
        'Linux commit 7fef431be9c9 ("mm/page_alloc: place pages to tail in '
        '__free_pages_core()") (v5.10): memory handed to the buddy allocator at boot goes to '
        "the tail of the free lists, so the lowest blocks are handed out first"
    ),
}


#: INIT_MEMBLOCK_REGIONS (mm/memblock.c)
INIT_MEMBLOCK_REGIONS = 128
PAGE_SIZE = 4096
SZ_4K = 4096


#: "Linux version" banner of a kernel built by the model (no distribution build)
_MODEL_BANNER = "Linux version %s (gickexec@model) (gcc (GCC) 12.2.0) #1 SMP PREEMPT"


@dataclass(frozen=True, slots=True)
class KernelBuild:
    """Facts of one built arm64 ``Image``: where its sections lie and how much it allocates
    early.  They come from the build, not from the source, so they are measured.

    The default is Debian's ``linux-image-6.1.0-56-arm64`` (6.1.192), measured from the
    real runs in tests/data/realcheck: the Image header's ``image_size`` and the file size
    as kexec-tools prints them, the section offsets from /proc/iomem ("Kernel code" starts
    at ``_stext``, ends at ``__init_begin``; "Kernel data" is ``_sdata``.. ``_end``; QEMU
    loaded the image at 0x40200000), the ftrace record count from "ftrace: allocating
    44279 entries in 173 pages".  Other profiles borrow this layout (their own builds were
    not measured).
    """

    banner: str = _MODEL_BANNER
    #: Image header ``image_size`` (text to end of BSS): what a loader must leave free
    image_size: int = 0x2010000
    #: bytes of the Image file itself (kexec-tools' ``kernel_size``/``bufsz``)
    file_size: int = 0x1F6DFC0
    #: offsets from the image base of ``_stext``, ``__init_begin`` and ``_sdata``
    stext: int = 0x10000
    init_begin: int = 0x1660000
    sdata: int = 0x1CB0000
    #: ``ftrace_allocate_records()`` groups are sized from this count (4 KiB pages,
    #: 16-byte ``struct dyn_ftrace``)
    ftrace_records: int = 44279
    #: Single pages the build takes from the page allocator between ``mm_init()`` and the
    #: ITS probe besides ftrace's groups (slab pages of the boot caches, IRQ descriptors,
    #: workqueues ...).  Not derivable from the source: measured -- in all four boots of
    #: the real runs the first ITS table lands 0x190000 above the start of the first free
    #: 4 MiB block and the memreserve node page at +0x17f000, which 210 such pages after
    #: ftrace's groups reproduce.
    early_pages: int = 210
    #: CONFIG_CMA_SIZE_MBYTES (Debian: 64), reserved top-down by dma_contiguous_reserve()
    cma_bytes: int = 64 << 20
    #: CONFIG_KEXEC_FILE: the build offers kexec_file_load() (Debian 12's does not, per the
    #: real runs' versions.txt; the model's own builds do, where the profile has it)
    config_kexec_file: bool = True

    @property
    def ftrace_groups(self) -> tuple[int, ...]:
        """Orders of the blocks ``ftrace_allocate_records()`` takes: the largest power of
        two of the pages still needed, until all records have a place."""
        per_page = 4096 // 16
        left = self.ftrace_records
        orders: list[int] = []
        while left > 0:
            pages = -(-left // per_page)
            order = pages.bit_length() - 1
            orders.append(order)
            left -= (4096 << order) // 16
        return tuple(orders)


#: Debian 12's arm64 kernel, the one the real runs booted.
DEBIAN_6_1_BUILD = KernelBuild(
    config_kexec_file=False,
    banner=(
        "Linux version 6.1.0-56-arm64 (debian-kernel@lists.debian.org) (gcc-12 (Debian "
        "12.2.0-14+deb12u1) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40) #1 SMP Debian "
        "6.1.192-2 (2026-11-16)"
    )
)


@dataclass(frozen=True, slots=True)
class KernelProfile:
    """The behaviours of one kernel version that matter to LPI tables across kexec."""

    name: str
    release: str
    description: str
    #: Allocate-or-reuse logic of the v4.20 series (allocate_lpi_tables and friends).
    reuses_preallocated_lpi_tables: bool
    #: gic_reserve_range() -> efi_mem_reserve_persistent() for the GIC tables.
    registers_lpi_tables_with_efi: bool
    #: Which memreserve layout efi_config_parse_tables() reads (None: table unknown).
    memreserve_layout: MemreserveLayout | None
    efi_stub_installs_memreserve_root: bool
    #: How efi_mem_reserve_persistent() reaches list nodes: "__va" or "memremap".
    memreserve_node_access: Literal["__va", "memremap"]
    #: New nodes hold EFI_MEMRESERVE_COUNT(PAGE_SIZE) entries rather than (SZ_4K).
    memreserve_node_is_page_size: bool
    memreserve_in_iomem: bool
    memreserve_in_memblock: bool
    #: arm64 implements kexec_file_load() (``kexec -s``)
    kexec_file_load: bool
    pending_memreserve_at_online: bool
    its_reset_baser_before_probe: bool
    #: The memreserve walk runs after paging_init(), when memblock may resize its arrays.
    defers_persistent_reservations: bool
    #: INIT_MEMBLOCK_RESERVED_REGIONS grows by NR_CPUS + 1.
    memblock_reserved_regions_per_cpu: bool
    #: CONFIG_NR_CPUS (the defconfig default): at most this many CPUs are possible
    nr_cpus: int
    #: the boot CPU's ITS and LPI lines come before its "found redistributor" line
    its_init_before_gic_cpu_init: bool
    #: (major, minor): selects the message formats of kernel/printk.py, whose variants
    #: each name the first version that prints them that way
    version: tuple[int, int] = (4, 19)
    #: memblock_free_all() queues boot memory at the tail of the buddy free lists
    buddy_free_to_tail: bool = False
    build: KernelBuild = field(default=KernelBuild())
    page_size: int = PAGE_SIZE
    notes: tuple[str, ...] = field(default=())
    #: Which OS boots: Linux per the flags above, or FreeBSD entered by kboot, which only
    #: consumes the memreserve list (kernel/freebsd_kboot.py).
    kind: Literal["linux", "freebsd-kboot"] = "linux"
    #: A planted bug for testing bug finders (``gickexec explore``): this CPU's LPI
    #: pending table is never reserved.  No shipped profile sets it; tests register a
    #: profile that does.
    planted_skip_pending_reservation: int | None = None

    def source(self, feature: str) -> str:
        return FEATURE_SOURCES[feature]

    @property
    def memreserve_node_bytes(self) -> int:
        """Bytes a new memreserve node is sized for (its capacity is computed from this)."""
        return self.page_size if self.memreserve_node_is_page_size else SZ_4K

    @property
    def init_memblock_reserved_regions(self) -> int:
        """``INIT_MEMBLOCK_RESERVED_REGIONS``: the static reserved array before paging_init."""
        extra = self.nr_cpus + 1 if self.memblock_reserved_regions_per_cpu else 0
        return INIT_MEMBLOCK_REGIONS + extra


_V4_19 = KernelProfile(
    name="v4.19",
    release="4.19.0",
    description=(
        "before the kexec fix: fresh LPI tables every boot, nothing reserved; "
        "redist_disable_lpis() gives up on a sticky EnableLPIs"
    ),
    reuses_preallocated_lpi_tables=False,
    registers_lpi_tables_with_efi=False,
    memreserve_layout=None,
    efi_stub_installs_memreserve_root=False,
    memreserve_node_access="memremap",
    memreserve_node_is_page_size=False,
    memreserve_in_iomem=False,
    memreserve_in_memblock=False,
    kexec_file_load=False,
    pending_memreserve_at_online=False,
    its_reset_baser_before_probe=False,
    defers_persistent_reservations=False,
    memblock_reserved_regions_per_cpu=False,
    nr_cpus=64,
    its_init_before_gic_cpu_init=True,
)

# Each later profile is the earlier one plus what changed, so a reader sees the deltas.
_V4_20 = dataclasses.replace(
    _V4_19,
    name="v4.20",
    version=(4, 20),
    release="4.20.0",
    description="the fix, first form: one kmalloc'd 24-byte memreserve node per reservation",
    reuses_preallocated_lpi_tables=True,
    registers_lpi_tables_with_efi=True,
    memreserve_layout="v4.20",
    efi_stub_installs_memreserve_root=True,
    defers_persistent_reservations=True,
    its_init_before_gic_cpu_init=False,
)

# Before Linux commit eff896288872: the memreserve walk in efi_init() fills the static
# 128-entry reserved array, and a many-CPU machine overflows it (v4.20-rc1
# drivers/firmware/efi/efi.c efi_config_parse_tables()).  Which v4.20 release candidates
# shipped this state is UNCONFIRMED (no rc tree read).
#
# Two more November 2018 fixes by Ard Biesheuvel are in the v4.20 tree and not in rc1
# (upstream hashes UNCONFIRMED; both are in v4.20's drivers/firmware/efi/efi.c):
# - "efi: Permit calling efi_mem_reserve_persistent() from atomic context" (posted
#   2018-11-08, Message-Id 20181108180511.30239-1-ard.biesheuvel@linaro.org, whose diff
#   shows rc1's function and the fix as first posted): rc1's
#   efi_mem_reserve_persistent() did kmalloc(GFP_KERNEL) and memremap()ed the root on every
#   call, both of which may sleep, yet its_cpu_init_lpis() calls it for each secondary CPU
#   from the atomic CPU-starting path.  v4.20 allocates GFP_ATOMIC and maps the root once
#   (efi_memreserve_root_init(), an early_initcall).
# - "efi: Prevent GICv3 WARN() by mapping the memreserve table before first use": with
#   the mapping moved to an early_initcall, the ITS's first reservations (property table,
#   boot CPU's pending table: WARN_ON(gic_reserve_range()) in its_init()) come before it
#   and got -ENODEV from the unmapped root; v4.20's efi_mem_reserve_persistent() maps
#   the root itself when it is not mapped yet.  The WARN existed only between the two
#   fixes, never in rc1.
# What rc1 did differently is not modelled: with arm64 defconfig (no
# CONFIG_DEBUG_ATOMIC_SLEEP, read in v4.20 arch/arm64/configs/defconfig) might_sleep()
# prints nothing, and the allocations succeed at boot, so rc1's log and tables are v4.20's.
_V4_20_RC = dataclasses.replace(
    _V4_20,
    name="v4.20-rc1",
    version=(4, 20),
    release="4.20.0",
    description="the fix as first merged: the memreserve walk can overflow memblock",
    defers_persistent_reservations=False,
)

_V5_0 = dataclasses.replace(
    _V4_20,
    name="v5.0",
    version=(5, 0),
    release="5.0.0",
    description="page-array memreserve nodes reached with __va() (faults in kdump)",
    memreserve_layout="v5.0",
    memreserve_node_access="__va",
    memreserve_node_is_page_size=True,
    defers_persistent_reservations=False,
    memblock_reserved_regions_per_cpu=True,
    kexec_file_load=True,
)

_V5_2 = dataclasses.replace(
    _V5_0,
    name="v5.2",
    version=(5, 2),
    release="5.2.0",
    description="memreserve nodes sized SZ_4K and memremap()ed one by one",
    memreserve_node_access="memremap",
    memreserve_node_is_page_size=False,
    nr_cpus=256,
)

_V5_5 = dataclasses.replace(
    _V5_2,
    name="v5.5",
    version=(5, 5),
    release="5.5.0",
    description="reservations also 'reserved' in /proc/iomem (kexec-tools avoids them)",
    memreserve_in_iomem=True,
)

_V5_10 = dataclasses.replace(
    _V5_5,
    name="v5.10",
    version=(5, 10),
    buddy_free_to_tail=True,
    release="5.10.0",
    description="LTS: the v5.5 behaviours; pending tables reserved at STARTING",
)

_V5_14 = dataclasses.replace(
    _V5_10,
    name="v5.14",
    version=(5, 14),
    release="5.14.0",
    description="reservations also in memblock (kexec_file_load avoids them)",
    memreserve_in_memblock=True,
)

_V5_17 = dataclasses.replace(
    _V5_14,
    name="v5.17",
    version=(5, 17),
    release="5.17.0",
    description="pending tables reserved from the CPUHP online callback; GITS_BASER reset",
    pending_memreserve_at_online=True,
    its_reset_baser_before_probe=True,
)

_V6_1 = dataclasses.replace(
    _V5_17,
    name="v6.1",
    version=(6, 1),
    release="6.1.0",
    description="Debian 12's kernel (the real runs): the v5.17 behaviours, measured build",
    build=DEBIAN_6_1_BUILD,
)

_V6_6 = dataclasses.replace(
    _V5_17,
    name="v6.6",
    version=(6, 6),
    release="6.6.0",
    description="current: the v5.17 behaviours (nothing later changes what the model sees)",
)

# FreeBSD booted by kboot (reviews.freebsd.org D37440, D40902, D44038): not Linux; the
# Linux flags are unused.  Release 14.1 is the first with all three reviews as far as we
# could tell (UNCONFIRMED).
_FREEBSD_KBOOT = dataclasses.replace(
    _V6_6,
    name="freebsd-kboot",
    release="14.1",
    description="FreeBSD via kboot: honours MEMRESERVE, panics on an unreserved live LPI table",
    kind="freebsd-kboot",
)

PROFILES: dict[str, KernelProfile] = {
    p.name: p
    for p in (
        _V4_19,
        _V4_20_RC,
        _V4_20,
        _V5_0,
        _V5_2,
        _V5_5,
        _V5_10,
        _V5_14,
        _V5_17,
        _V6_1,
        _V6_6,
        _FREEBSD_KBOOT,
    )
}


def get_profile(name: str) -> KernelProfile:
    try:
        return PROFILES[name]
    except KeyError:
        raise KeyError(f"unknown kernel profile {name!r} (known: {', '.join(PROFILES)})") from None
