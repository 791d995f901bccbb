"""Linux's EFI side of the handover: the stub's memreserve root, ``efi_config_parse_tables``
walking the chain into memblock, and ``efi_mem_reserve_persistent`` appending to it.

Sources: drivers/firmware/efi/efi.c (``efi_config_parse_tables()``,
``efi_mem_reserve_persistent()``) and drivers/firmware/efi/libstub/arm-stub.c
(``install_memreserve_table()``) of Linux v4.20, v5.2.1 and v6.1.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from gickexec.arch.efi import (
    CONFIG_TABLE_NAMES,
    LINUX_EFI_INITRD_MEDIA_GUID,
    LINUX_EFI_MEMRESERVE_TABLE_GUID,
    LINUX_EFI_RANDOM_SEED_TABLE_GUID,
    MEMRESERVE_HEADER_BYTES,
    MEMRESERVE_V420_BYTES,
    MemreserveHeader,
    MemreserveV420,
    efi_memreserve_count,
)
from gickexec.fw.memreserve import MemreserveChain, MemreserveNode, walk_memreserve
from gickexec.fw.uefi import EfiMemoryType, SystemTableError, UefiFirmware, read_config_tables
from gickexec.hw.memory import Agent, PhysicalMemory
from gickexec.kernel import printk
from gickexec.kernel.mm import KernelFault, Memblock, OutOfMemory
from gickexec.kernel.profiles import KernelProfile

__all__ = [
    "ENODEV",
    "ENOMEM",
    "EfiState",
    "efi_apply_persistent_mem_reservations",
    "efi_config_parse_tables",
    "efi_stub_install_tables",
    "install_memreserve_table",
    "memreserve_walk_fault",
]

ENODEV = -19
ENOMEM = -12
PHYS_ADDR_MAX = (1 << 64) - 1
#: arm64 with VA_BITS=48 (the v5.0-era defconfig): the linear map starts here
PAGE_OFFSET = 0xFFFF_8000_0000_0000
#: ARM64_MEMSTART_ALIGN with 4K pages: PHYS_OFFSET is DRAM start rounded down to 1 GiB
ARM64_MEMSTART_ALIGN = 1 << 30

#: Configuration tables ``common_tables[]`` (drivers/firmware/efi/efi.c) names only from
#: a version on.  INITRD came with the stub's initrd config table: absent from the 6.0-rc1
#: tree, in 6.2.12's table_types[] and printed by the real v6.1 runs (tests/data/realcheck).
_FIRST_NAMED: dict[bytes, tuple[int, int]] = {LINUX_EFI_INITRD_MEDIA_GUID: (6, 1)}


def install_memreserve_table(
    fw: UefiFirmware, mem: PhysicalMemory, profile: KernelProfile, agent: Agent
) -> int | None:
    """The EFI stub's ``install_memreserve_table()``: an empty root in EFI_LOADER_DATA.

    Runs once per firmware boot (a kexec'd kernel does not re-enter the stub).
    """
    if not profile.efi_stub_installs_memreserve_root:
        return None
    if profile.memreserve_layout == "v4.20":
        size = MEMRESERVE_V420_BYTES
        empty = MemreserveV420(0, 0, 0).to_bytes()
    else:
        size = MEMRESERVE_HEADER_BYTES
        empty = MemreserveHeader(0, 0, 0).to_bytes()
    root = fw.allocate_pool(EfiMemoryType.LOADER_DATA, size)
    mem.write(root, empty, agent)
    fw.install_configuration_table(LINUX_EFI_MEMRESERVE_TABLE_GUID, root)
    return root


def efi_stub_install_tables(
    fw: UefiFirmware,
    mem: PhysicalMemory,
    profile: KernelProfile,
    agent: Agent,
    initrd: tuple[int, int] | None,
    rng_seed: bool,
) -> None:
    """What the EFI stub installs before ExitBootServices(), in its order: the INITRD
    table describing the initrd it loaded (``struct linux_efi_initrd {base, size}``:
    drivers/firmware/efi/libstub/efi-stub-helper.c efi_load_initrd() installs it in
    6.2.12, not in 6.0-rc1; the real v6.1 runs print INITRD=), the RNG seed
    (``efi_random_get_seed()``: a LINUX_EFI_RANDOM_SEED table in EFI_ACPI_RECLAIM_MEMORY,
    when the firmware has EFI_RNG_PROTOCOL), then the memreserve root."""
    if initrd is not None and profile.version >= (6, 1):
        tbl = fw.allocate_pool(EfiMemoryType.LOADER_DATA, 16)
        mem.write(tbl, initrd[0].to_bytes(8, "little") + initrd[1].to_bytes(8, "little"), agent)
        fw.install_configuration_table(LINUX_EFI_INITRD_MEDIA_GUID, tbl)
    if rng_seed and fw.layout.rng_seed is not None:
        seed = fw.at(fw.layout.rng_seed)
        # struct linux_efi_random_seed {u32 size; u8 bits[]}: EFI_RANDOM_SEED_SIZE 32
        mem.write(seed, (32).to_bytes(4, "little") + bytes(32), agent)
        fw.install_configuration_table(LINUX_EFI_RANDOM_SEED_TABLE_GUID, seed)
    install_memreserve_table(fw, mem, profile, agent)


@dataclass(slots=True)
class EfiState:
    """What one kernel knows about EFI after ``efi_init``."""

    config_tables: bool
    mem_reserve: int | None = None
    chain: MemreserveChain | None = None
    #: None until first use, an int address once mapped, or the ULONG_MAX sentinel (-1)
    memreserve_root: int | None = None
    nodes_added: int = 0
    entries_added: int = 0


def efi_config_parse_tables(
    mem: PhysicalMemory,
    systab: int,
    profile: KernelProfile,
    memblock: Memblock,
    log: printk.KernelLog,
    on_reserve: Callable[[int, int, str], None],
) -> EfiState:
    """``efi_init()`` + ``efi_config_parse_tables()``: log the tables, walk the chain and
    ``memblock_reserve()`` the root, every node and every entry (§1.4)."""
    try:
        st, tables = read_config_tables(mem, systab)
    except SystemTableError as e:
        log.line(f"efi: {e}")
        return EfiState(config_tables=False)
    major, minor = st.revision >> 16, st.revision & 0xFFFF
    vendor = _read_vendor(mem, st.firmware_vendor)
    by = printk.EFI_BY.at(profile.version)
    assert by is not None
    log.printk(by, major, minor if "%.02u" in by else minor // 10, vendor)
    entry_fmt = printk.EFI_CFG_ENTRY.at(profile.version)
    assert entry_fmt is not None
    state = EfiState(config_tables=True)
    known = {
        g: name
        for g, name in CONFIG_TABLE_NAMES.items()
        if profile.version >= _FIRST_NAMED.get(g, (0, 0))
    }
    if profile.memreserve_layout is None:
        known.pop(LINUX_EFI_MEMRESERVE_TABLE_GUID, None)
    line = "efi: "
    for t in tables:
        name = known.get(t.guid)
        if name is None:
            continue
        line += printk.kformat(entry_fmt, name, t.table)
        if t.guid == LINUX_EFI_MEMRESERVE_TABLE_GUID:
            state.mem_reserve = t.table
    log.line(line)
    if state.mem_reserve is None or profile.memreserve_layout is None:
        return state
    chain = walk_memreserve(mem.read, mem.is_ram, state.mem_reserve, profile.memreserve_layout)
    state.chain = chain
    fault = memreserve_walk_fault(chain)
    if fault is not None:
        raise KernelFault(fault, [])
    if not profile.defers_persistent_reservations:
        efi_apply_persistent_mem_reservations(state, profile, memblock, on_reserve)
    return state


def memreserve_walk_fault(chain: MemreserveChain) -> str | None:
    """What the kernel's own walk does where the model's bounded one stopped, or None.

    The loop in ``efi_config_parse_tables()`` (drivers/firmware/efi/efi.c, v4.20 to
    v6.1) is ``while (prsv)``: no cycle check and no bound.  Each node gets one
    ``early_memremap(ALIGN_DOWN(prsv, PAGE_SIZE), PAGE_SIZE)``, and ``rsv->entry[i]`` is
    read for ``i < atomic_read(&rsv->count)`` with the count clamped neither to
    ``rsv->size`` nor to the page.  "Could not map UEFI memreserve entry!" and -ENOMEM
    follow only a failed ``early_memremap()``, which in the model never fails (it
    checks nothing about the address), so the model never prints it.
    """
    if chain.error is not None:
        if chain.error.startswith("cycle"):
            return (
                "hang: efi_config_parse_tables() walks the memreserve list round and round "
                f"({chain.error}): the walk has no cycle check"
            )
        if chain.error.endswith("is not in RAM"):
            # UNCONFIRMED: early_memremap() maps the address; what a read of memory that
            # is not there returns is the platform's, modelled as an external abort.
            return (
                f"crash: efi_config_parse_tables() reads a memreserve node outside RAM "
                f"({chain.error}; early_memremap() maps it anyway, the read aborts)"
            )
        return f"hang: efi_config_parse_tables() walks a memreserve list of {chain.error}"
    for node in chain.nodes:
        if node.count > len(node.entries):
            # UNCONFIRMED outcome: the address after the one-page mapping is unmapped
            # fixmap space, so the read faults before the console is up.
            return (
                f"crash: efi_config_parse_tables() reads rsv->entry[{len(node.entries)}] of "
                f"the memreserve node at {node.addr:#x} (count {node.count}) past the page "
                "it early_memremap()ed"
            )
    return None


def efi_apply_persistent_mem_reservations(
    state: EfiState,
    profile: KernelProfile,
    memblock: Memblock,
    on_reserve: Callable[[int, int, str], None],
) -> None:
    """``memblock_reserve()`` the root, every node and every entry of the walked chain.

    Part of ``efi_config_parse_tables()``, except in kernels with Linux commit
    eff896288872, which call it after ``paging_init()`` (flag
    ``defers_persistent_reservations``).  A reservation the static memblock array has no
    room for is dropped without a word (``efi_config_parse_tables`` ignores the error);
    ``on_reserve`` is called only for the ones memblock took."""
    if state.chain is None:
        return
    for i, node in enumerate(state.chain.nodes):
        what = "EFI memreserve root" if i == 0 else "EFI memreserve node"
        footprint = memreserve_node_footprint(node, profile)
        if memblock.reserve(node.addr, footprint) == 0:
            on_reserve(node.addr, footprint, what)
        for base, size in node.entries:
            if memblock.reserve(base, size) == 0:
                on_reserve(base, size, "EFI memreserve entry")


def memreserve_node_footprint(node: MemreserveNode, profile: KernelProfile) -> int:
    """What the parser ``memblock_reserve()``s for a node, as the C arithmetic has it.

    Era B computes ``EFI_MEMRESERVE_SIZE(rsv->size)`` (v5.0) or ``struct_size(rsv, entry,
    rsv->size)`` (v5.8+) from the *signed* ``int size``: a negative size converts to a huge
    ``size_t`` (or saturates to ``SIZE_MAX``), and ``memblock_reserve()`` caps it at
    ``PHYS_ADDR_MAX - base`` (``memblock_cap_size``), reserving everything above the node.
    That is what a v5.0+ kernel does with a v4.20 root whose ``next`` has bit 31 set
    (derived from the v5.0.1 and v6.1 code).
    """
    if profile.memreserve_layout == "v4.20" or node.size >= 0:
        return node.footprint
    return PHYS_ADDR_MAX - node.addr


def arm64_va(pa: int, linear_base: int) -> int:
    """``__va(pa)`` on arm64 (VA_BITS=48): ``(pa - PHYS_OFFSET) | PAGE_OFFSET``."""
    phys_offset = linear_base & ~(ARM64_MEMSTART_ALIGN - 1)
    return ((pa - phys_offset) & PHYS_ADDR_MAX) | PAGE_OFFSET


def _read_vendor(mem: PhysicalMemory, addr: int) -> str:
    if not mem.is_ram(addr, 64):
        return "unknown"
    raw = mem.read(addr, 64)
    end = next((i for i in range(0, 64, 2) if raw[i : i + 2] == b"\0\0"), 64)
    return raw[:end].decode("utf-16-le", errors="replace")


def efi_mem_reserve_persistent(
    mem: PhysicalMemory,
    efi: EfiState,
    profile: KernelProfile,
    addr: int,
    size: int,
    agent: Agent,
    alloc_page: Callable[[], int],
    linear_map: Callable[[int, int], bool] | None = None,
    linear_base: int = 0,
) -> int:
    """Record ``[addr, addr + size)`` in the memreserve chain; returns 0 or -errno.

    v5.0+ (§1.5): first fit from ``root->next`` (newest node first); when no node has
    room, a new node page goes in at the head with ``size = EFI_MEMRESERVE_COUNT(SZ_4K)``,
    ``count = 1``.  The new page is not zeroed: only its header and entry[0] are written.
    v4.20: one 24-byte node per reservation, pushed at the head.

    v5.0-v5.1 reach nodes with ``__va()``: a node outside this kernel's linear map
    (``linear_map(addr, size)`` false, e.g. the crashed kernel's list page seen from a
    kdump kernel) is a paging fault, raised as :class:`KernelFault`.
    """
    if efi.memreserve_root == -1 or efi.mem_reserve is None or profile.memreserve_layout is None:
        efi.memreserve_root = -1
        return ENODEV
    root = efi.memreserve_root = efi.mem_reserve
    try:
        if profile.memreserve_layout == "v4.20":
            node = alloc_page()
            old = MemreserveV420.from_bytes(mem.read(root, MEMRESERVE_V420_BYTES))
            mem.write(node, MemreserveV420(old.next, addr, size).to_bytes(), agent)
            mem.write(root, MemreserveV420(node, old.base, old.size).to_bytes(), agent)
            efi.nodes_added += 1
            efi.entries_added += 1
            return 0
        head = MemreserveHeader.from_bytes(mem.read(root, MEMRESERVE_HEADER_BYTES))
        prsv, seen = head.next, set()
        while prsv and prsv not in seen and mem.is_ram(prsv, MEMRESERVE_HEADER_BYTES):
            seen.add(prsv)
            if (
                profile.memreserve_node_access == "__va"
                and linear_map is not None
                and not linear_map(prsv, MEMRESERVE_HEADER_BYTES)
            ):
                va = arm64_va(prsv, linear_base)
                raise KernelFault(
                    f"efi_mem_reserve_persistent() dereferenced __va({prsv:#x}), a memreserve "
                    "node outside this kernel's linear map",
                    [
                        printk.kformat(printk.OOPS_FAULT, "paging request", va),
                        printk.kformat(printk.PANIC, printk.PANIC_IDLE),
                    ],
                )
            rsv = MemreserveHeader.from_bytes(mem.read(prsv, MEMRESERVE_HEADER_BYTES))
            if rsv.count < rsv.size:  # atomic_fetch_add_unless(&count, 1, size)
                mem.write(
                    prsv, MemreserveHeader(rsv.size, rsv.count + 1, rsv.next).to_bytes(), agent
                )
                mem.write(
                    prsv + MemreserveHeader.entry_offset(rsv.count),
                    MemreserveHeader.pack_entry(addr, size),
                    agent,
                )
                efi.entries_added += 1
                return 0
            prsv = rsv.next
        node = alloc_page()
        capacity = efi_memreserve_count(profile.memreserve_node_bytes)
        mem.write(node, MemreserveHeader(capacity, 1, head.next).to_bytes(), agent)
        mem.write(
            node + MemreserveHeader.entry_offset(0), MemreserveHeader.pack_entry(addr, size), agent
        )
        mem.write(root, MemreserveHeader(head.size, head.count, node).to_bytes(), agent)
        efi.nodes_added += 1
        efi.entries_added += 1
        return 0
    except OutOfMemory:
        return ENOMEM
