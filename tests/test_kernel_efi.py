"""The EFI memreserve table: the stub's root, the chain walk and efi_mem_reserve_persistent.

drivers/firmware/efi of Linux v4.20 to v6.1: the stub's root (EFI_LOADER_DATA, 16 bytes,
empty), the next kernel memblock_reserve()ing root, nodes and entries, first fit from
root->next with new 4K nodes of 255 slots pushed at the head and -ENODEV without a table
(v4.20: one 24-byte node per reservation), and v5.17+'s pending tables reserved from
the ONLINE callback.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from gickexec.arch.efi import (
    MEMRESERVE_HEADER_BYTES,
    MEMRESERVE_V420_BYTES,
    MemreserveHeader,
    MemreserveV420,
)
from gickexec.fw.memreserve import MemreserveChain, walk_memreserve
from gickexec.fw.uefi import EfiMemoryType
from gickexec.hw.memory import Agent, AgentKind, MemRegion, PhysicalMemory
from gickexec.kernel import efi as kefi
from gickexec.kernel import gic_v3_its
from gickexec.kernel.efi import ENODEV, ENOMEM, EfiState, efi_mem_reserve_persistent
from gickexec.kernel.kernel import Kernel
from gickexec.kernel.mm import OutOfMemory, Role
from gickexec.kernel.profiles import KernelProfile, get_profile
from gickexec.scenario.world import World

SZ_64K = 0x10000
NR_CPUS = 8

_PROP_RE = re.compile(r"^GICv3: using LPI property table @0x([0-9a-f]{16})$")
_PEND_RE = re.compile(
    r"^GICv3: CPU(\d+): using (allocated|reserved) LPI pending table @0x([0-9a-f]{16})$"
)


def _prop_addr(k: Kernel) -> int:
    hits = [int(m.group(1), 16) for line in k.log.lines if (m := _PROP_RE.match(line))]
    assert len(hits) == 1
    return hits[0]


def _pend_addrs(k: Kernel, kind: str) -> dict[int, int]:
    out: dict[int, int] = {}
    for line in k.log.lines:
        m = _PEND_RE.match(line)
        if m and m.group(2) == kind:
            out[int(m.group(1))] = int(m.group(3), 16)
    return out


def _world(seed: int = 1) -> World:
    w = World.build("efi-server-8", seed=seed)
    w.add_device("eth0", device_id=0x100, nvec=4)
    return w


def _chain(w: World) -> MemreserveChain:
    chain = w.memreserve_chain()
    assert chain is not None
    assert chain.error is None
    return chain


# -- through World ------------------------------------------------------------------------


def test_first_v66_boot_builds_root_and_one_full_page_node() -> None:
    w = _world()
    w.boot("v6.6")
    k = w.generations[0]
    chain = _chain(w)
    assert len(chain.nodes) == 2
    root, node = chain.nodes
    # root: the stub's empty head
    assert (root.size, root.count, root.entries) == (0, 0, ())
    assert root.footprint == MEMRESERVE_HEADER_BYTES == 16
    assert root.next == node.addr
    # node: one 4K page with 255 slots, property table + 8 pending tables
    assert node.size == 255
    assert node.count == 1 + NR_CPUS
    assert node.next == 0
    assert node.addr % 0x1000 == 0
    assert node.footprint == 4096
    assert all(size == SZ_64K for _, size in node.entries)
    pend = _pend_addrs(k, "allocated")
    assert sorted(pend) == list(range(NR_CPUS))
    expected = [_prop_addr(k)] + [pend[cpu] for cpu in range(NR_CPUS)]
    assert [base for base, _ in node.entries] == expected
    # the kernel's own reservations and the chain agree
    assert k.efi is not None
    assert (k.efi.nodes_added, k.efi.entries_added) == (1, 1 + NR_CPUS)


def test_root_is_a_pool_allocation_in_loader_data() -> None:
    w = _world()
    w.boot("v6.6")
    assert w.firmware is not None
    root = _chain(w).root
    assert root % 0x1000 != 0  # a pool address, not page aligned (§1.1: "...e98")
    assert root % 8 == 0
    kinds = [kind for region, kind in w.firmware.memory_map() if region.contains(root, 16)]
    assert kinds == [EfiMemoryType.LOADER_DATA]
    # the efi: line names the table at that address
    assert any(f"MEMRESERVE={root:#x}" in line for line in w.generations[0].log.lines)
    # the list node page itself belongs to the kernel, not to firmware
    node = _chain(w).nodes[1].addr
    assert w.generations[0].owner(node) is not None
    assert w.generations[0].owner(node).label == "EFI memreserve list page"


def test_kexec_adds_nothing_and_next_kernel_reserves_the_whole_chain() -> None:
    w = _world()
    w.boot("v6.6")
    before = _chain(w)
    w.kexec("v6.6")
    after = _chain(w)
    assert after == before  # same root, node, count and entries
    assert after.nodes[1].count == 1 + NR_CPUS
    k1 = w.generations[1]
    assert k1.efi is not None
    assert (k1.efi.nodes_added, k1.efi.entries_added) == (0, 0)
    mb = k1.memblock
    assert mb.is_reserved_range(after.root, 16)
    assert mb.is_reserved_range(after.nodes[1].addr, 4096)
    for base, size in after.entries:
        assert mb.is_reserved_range(base, size)


def test_repeated_kexecs_keep_the_chain_stable() -> None:
    w = _world()
    w.boot("v6.6")
    first = _chain(w)
    for _ in range(3):
        w.kexec("v6.6")
    assert _chain(w) == first


def test_v419_creates_no_memreserve_table() -> None:
    w = _world()
    w.boot("v4.19")
    assert w.memreserve_chain() is None
    k = w.generations[0]
    assert not any("MEMRESERVE" in line for line in k.log.lines)
    assert k.efi is not None and k.efi.config_tables
    assert k.efi.mem_reserve is None
    w.kexec("v4.19")
    assert w.memreserve_chain() is None


def _record_reservations(monkeypatch: pytest.MonkeyPatch, w: World) -> list[tuple[int, int, bool]]:
    """(cpu, addr, cpu already online) for every reservation the GIC driver makes."""
    calls: list[tuple[int, int, bool]] = []
    real = gic_v3_its.efi_mem_reserve_persistent

    def spy(
        mem: PhysicalMemory,
        efi: EfiState,
        profile: KernelProfile,
        addr: int,
        size: int,
        agent: Agent,
        alloc_page: Callable[[], int],
        *rest: Any,
    ) -> int:
        calls.append((agent.index, addr, agent.index in w.kernel.online_cpus))
        return real(mem, efi, profile, addr, size, agent, alloc_page, *rest)

    monkeypatch.setattr(gic_v3_its, "efi_mem_reserve_persistent", spy)
    return calls


def test_v510_registers_pending_tables_at_starting(monkeypatch: pytest.MonkeyPatch) -> None:
    w = _world()
    calls = _record_reservations(monkeypatch, w)
    w.boot("v5.10")
    k = w.generations[0]
    assert not k.gic.memreserve_cpuhp
    node = _chain(w).nodes[1]
    assert (node.size, node.count) == (255, 1 + NR_CPUS)
    pend = _pend_addrs(k, "allocated")
    assert [b for b, _ in node.entries] == [_prop_addr(k)] + [pend[c] for c in range(NR_CPUS)]
    # prop table from its_init, then each CPU's table from its STARTING callback: the CPU
    # is not online yet when its table is reserved.
    assert [(c, a) for c, a, _ in calls[1:]] == [(c, pend[c]) for c in range(NR_CPUS)]
    assert not any(online for _, _, online in calls[1:])


def test_v66_registers_pending_tables_at_online(monkeypatch: pytest.MonkeyPatch) -> None:
    w = _world()
    calls = _record_reservations(monkeypatch, w)
    w.boot("v6.6")
    assert w.generations[0].gic.memreserve_cpuhp
    assert len(calls) == 1 + NR_CPUS
    assert all(online for _, _, online in calls[1:])


_Spares = list[tuple[int, int, int]]
_Frees = list[tuple[int, int, list[int]]]


def _record_spares(monkeypatch: pytest.MonkeyPatch) -> tuple[_Spares, _Frees]:
    """Spare pending-table allocations (gen, cpu, addr) and frees (gen, addr, online CPUs)."""
    spares: _Spares = []
    frees: _Frees = []
    real_alloc, real_free = Kernel.alloc_pages, Kernel.free_pages

    def alloc(
        self: Kernel, size: int, label: str, role: Role | None = None, *, zero: bool = True
    ) -> int:
        addr = real_alloc(self, size, label, role, zero=zero)
        m = re.fullmatch(r"LPI pending table CPU(\d+) \(spare\)", label)
        if m:
            spares.append((self.generation, int(m.group(1)), addr))
        return addr

    def free(self: Kernel, addr: int, size: int) -> None:
        if size == SZ_64K:  # not the initrd a kexec'd kernel frees after unpacking it
            frees.append((self.generation, addr, list(self.online_cpus)))
        real_free(self, addr, size)

    monkeypatch.setattr(Kernel, "alloc_pages", alloc)
    monkeypatch.setattr(Kernel, "free_pages", free)
    return spares, frees


def test_v510_frees_spare_tables_immediately_on_reuse(monkeypatch: pytest.MonkeyPatch) -> None:
    spares, frees = _record_spares(monkeypatch)
    w = _world()
    w.boot("v5.10")
    count = _chain(w).nodes[1].count
    w.kexec("v5.10")
    k1 = w.generations[1]
    assert any(line == "GICv3: Using preallocated redistributor tables" for line in k1.log.lines)
    assert _chain(w).nodes[1].count == count == 1 + NR_CPUS
    gen1 = {cpu: addr for g, cpu, addr in spares if g == 1}
    assert sorted(gen1) == list(range(NR_CPUS))
    freed = {addr: online for g, addr, online in frees if g == 1}
    assert set(freed) == set(gen1.values())
    for cpu, addr in gen1.items():
        # freed from its_cpu_init_lpis (STARTING): before the CPU is marked online
        assert cpu not in freed[addr]
        # back in the buddy allocator, which may have handed it out again since
        owner = k1.owner(addr)
        assert owner is None or "pending table" not in owner.label
        assert k1.gic.rd[cpu].pend_page is None


def test_v66_frees_spare_tables_from_the_online_callback(monkeypatch: pytest.MonkeyPatch) -> None:
    spares, frees = _record_spares(monkeypatch)
    w = _world()
    w.boot("v6.6")
    w.kexec("v6.6")
    gen1 = {cpu: addr for g, cpu, addr in spares if g == 1}
    freed = {addr: online for g, addr, online in frees if g == 1}
    assert set(freed) == set(gen1.values())
    for cpu, addr in gen1.items():
        assert cpu in freed[addr]
        owner = w.generations[1].owner(addr)
        assert owner is None or "pending table" not in owner.label


# -- efi_mem_reserve_persistent, directly ------------------------------------------------

RAM = MemRegion(0x8000_0000, 16 << 20, "ram")
ROOT = 0x8000_0E98
AGENT = Agent(AgentKind.KERNEL, 0, generation=0)
V66 = get_profile("v6.6")
V420 = dataclasses.replace(get_profile("v5.10"), name="v4.20", memreserve_layout="v4.20")


def _pages(start: int = 0x8010_0000) -> Iterator[int]:
    addr = start
    while True:
        yield addr
        addr += 0x1000


def _no_alloc() -> int:
    raise AssertionError("no new node expected")


def _hdr(mem: PhysicalMemory, addr: int) -> MemreserveHeader:
    return MemreserveHeader.from_bytes(mem.read(addr, MEMRESERVE_HEADER_BYTES))


def _entry(mem: PhysicalMemory, node: int, i: int) -> tuple[int, int]:
    raw = mem.read(node + MemreserveHeader.entry_offset(i), 16)
    return MemreserveHeader.unpack_entries(raw)[0]


def _v50_setup(nodes: list[tuple[int, int, int]]) -> tuple[PhysicalMemory, EfiState]:
    """Root at ROOT -> nodes given as (addr, size, count), in that order."""
    mem = PhysicalMemory([RAM])
    addrs = [a for a, _, _ in nodes]
    mem.write(ROOT, MemreserveHeader(0, 0, addrs[0] if addrs else 0).to_bytes(), AGENT)
    for i, (addr, size, count) in enumerate(nodes):
        nxt = addrs[i + 1] if i + 1 < len(addrs) else 0
        mem.write(addr, MemreserveHeader(size, count, nxt).to_bytes(), AGENT)
        for j in range(count):
            entry = MemreserveHeader.pack_entry(0x9000_0000 + (i << 20) + (j << 16), SZ_64K)
            mem.write(addr + MemreserveHeader.entry_offset(j), entry, AGENT)
    return mem, EfiState(config_tables=True, mem_reserve=ROOT)


def test_reserve_first_fit_goes_to_the_newest_node_with_room() -> None:
    n1, n2 = 0x8020_0000, 0x8030_0000
    mem, efi = _v50_setup([(n1, 4, 2), (n2, 4, 1)])
    n2_before = mem.read(n2, 4096)
    rc = efi_mem_reserve_persistent(mem, efi, V66, 0xA000_0000, SZ_64K, AGENT, _no_alloc)
    assert rc == 0
    assert _hdr(mem, n1) == MemreserveHeader(4, 3, n2)
    assert _entry(mem, n1, 2) == (0xA000_0000, SZ_64K)
    assert _entry(mem, n1, 0) == (0x9000_0000, SZ_64K)  # earlier entries untouched
    assert mem.read(n2, 4096) == n2_before
    assert efi.memreserve_root == ROOT
    assert (efi.nodes_added, efi.entries_added) == (0, 1)


def test_reserve_skips_a_full_node_unchanged() -> None:
    n1, n2 = 0x8020_0000, 0x8030_0000
    mem, efi = _v50_setup([(n1, 2, 2), (n2, 4, 0)])
    n1_before = mem.read(n1, 4096)
    rc = efi_mem_reserve_persistent(mem, efi, V66, 0xA000_0000, SZ_64K, AGENT, _no_alloc)
    assert rc == 0
    assert mem.read(n1, 4096) == n1_before  # atomic_fetch_add_unless did not add
    assert _hdr(mem, n2) == MemreserveHeader(4, 1, 0)
    assert _entry(mem, n2, 0) == (0xA000_0000, SZ_64K)


def test_reserve_pushes_a_new_node_at_the_head_when_all_are_full() -> None:
    full = 0x8020_0000
    mem, efi = _v50_setup([(full, 3, 3)])
    full_before = mem.read(full, 4096)
    page = 0x8040_0000
    mem.fill(page, 0x1000, 0xAB, AGENT)  # __get_free_page() does not zero
    pages = iter([page])
    rc = efi_mem_reserve_persistent(mem, efi, V66, 0xA000_0000, SZ_64K, AGENT, lambda: next(pages))
    assert rc == 0
    assert _hdr(mem, ROOT) == MemreserveHeader(0, 0, page)  # root->next = new node
    assert _hdr(mem, page) == MemreserveHeader(255, 1, full)  # new->next = old head
    assert _entry(mem, page, 0) == (0xA000_0000, SZ_64K)
    # only the header and entry[0] were written: slot 1 onwards is still garbage
    assert mem.read(page + MemreserveHeader.entry_offset(1), 32) == b"\xab" * 32
    assert mem.read(full, 4096) == full_before
    assert (efi.nodes_added, efi.entries_added) == (1, 1)
    chain = walk_memreserve(mem.read, mem.is_ram, ROOT, "v5.0")
    assert [n.addr for n in chain.nodes] == [ROOT, page, full]
    assert chain.entries[0] == (0xA000_0000, SZ_64K)
    # the next reservation lands in the new (newest) node
    rc = efi_mem_reserve_persistent(mem, efi, V66, 0xB000_0000, 0x1000, AGENT, _no_alloc)
    assert rc == 0
    assert _hdr(mem, page).count == 2
    assert _entry(mem, page, 1) == (0xB000_0000, 0x1000)


def test_reserve_into_an_empty_chain_creates_the_first_node() -> None:
    mem, efi = _v50_setup([])
    pages = _pages()
    for i in range(256):
        rc = efi_mem_reserve_persistent(
            mem, efi, V66, 0xA000_0000 + i * SZ_64K, SZ_64K, AGENT, lambda: next(pages)
        )
        assert rc == 0
    chain = walk_memreserve(mem.read, mem.is_ram, ROOT, "v5.0")
    # 255 fit in the first page node; the 256th opens a second node at the head
    assert [(n.size, n.count) for n in chain.list_nodes] == [(255, 1), (255, 255)]
    assert chain.entries[0] == (0xA000_0000 + 255 * SZ_64K, SZ_64K)
    assert len(chain.entries) == 256


def test_reserve_without_a_table_is_enodev_and_sets_the_sentinel() -> None:
    mem = PhysicalMemory([RAM])
    efi = EfiState(config_tables=True)  # config tables, but no MEMRESERVE entry
    rc = efi_mem_reserve_persistent(mem, efi, V66, 0xA000_0000, SZ_64K, AGENT, _no_alloc)
    assert rc == ENODEV == -19
    assert efi.memreserve_root == -1  # ULONG_MAX sentinel: later calls fail fast
    efi.mem_reserve = ROOT
    rc = efi_mem_reserve_persistent(mem, efi, V66, 0xA000_0000, SZ_64K, AGENT, _no_alloc)
    assert rc == ENODEV
    assert mem.read(ROOT, 16) == bytes(16)


def test_reserve_with_a_kernel_that_does_not_know_the_table_is_enodev() -> None:
    mem, efi = _v50_setup([])
    rc = efi_mem_reserve_persistent(
        mem, efi, get_profile("v4.19"), 0xA000_0000, SZ_64K, AGENT, _no_alloc
    )
    assert rc == ENODEV


def test_reserve_out_of_memory_is_enomem_and_leaves_the_chain_alone() -> None:
    full = 0x8020_0000
    mem, efi = _v50_setup([(full, 1, 1)])

    def oom() -> int:
        raise OutOfMemory("no page")

    rc = efi_mem_reserve_persistent(mem, efi, V66, 0xA000_0000, SZ_64K, AGENT, oom)
    assert rc == ENOMEM == -12
    assert _hdr(mem, ROOT) == MemreserveHeader(0, 0, full)


def test_v420_layout_pushes_one_24_byte_node_per_reservation_at_the_head() -> None:
    mem = PhysicalMemory([RAM])
    mem.write(ROOT, MemreserveV420(0, 0, 0).to_bytes(), AGENT)
    efi = EfiState(config_tables=True, mem_reserve=ROOT)
    nodes = [0x8020_0000, 0x8020_1000, 0x8020_2000]
    it = iter(nodes)
    ranges = [(0xA000_0000, SZ_64K), (0xA010_0000, SZ_64K), (0xA020_0000, 0x1000)]
    for base, size in ranges:
        assert efi_mem_reserve_persistent(mem, efi, V420, base, size, AGENT, lambda: next(it)) == 0
    root = MemreserveV420.from_bytes(mem.read(ROOT, MEMRESERVE_V420_BYTES))
    assert root == MemreserveV420(nodes[2], 0, 0)  # newest first, root holds nothing
    assert MemreserveV420.from_bytes(mem.read(nodes[2], 24)) == MemreserveV420(nodes[1], *ranges[2])
    assert MemreserveV420.from_bytes(mem.read(nodes[1], 24)) == MemreserveV420(nodes[0], *ranges[1])
    assert MemreserveV420.from_bytes(mem.read(nodes[0], 24)) == MemreserveV420(0, *ranges[0])
    assert (efi.nodes_added, efi.entries_added) == (3, 3)
    chain = walk_memreserve(mem.read, mem.is_ram, ROOT, "v4.20")
    assert [n.addr for n in chain.nodes] == [ROOT, *reversed(nodes)]
    assert all(n.footprint == MEMRESERVE_V420_BYTES == 24 for n in chain.nodes)
    assert chain.entries == list(reversed(ranges))


def test_install_memreserve_table_writes_an_empty_16_byte_root() -> None:
    w = World.build("efi-server-8", seed=5)
    assert w.firmware is not None
    root = kefi.install_memreserve_table(w.firmware, w.machine.mem, V66, AGENT)
    assert root is not None
    pool = [r for r, k in w.firmware.regions() if k == EfiMemoryType.LOADER_DATA]
    assert pool[0].contains(root, 16)
    assert _hdr(w.machine.mem, root) == MemreserveHeader(0, 0, 0)
    v419 = get_profile("v4.19")
    assert kefi.install_memreserve_table(w.firmware, w.machine.mem, v419, AGENT) is None


# -- the next kernel's walk: no cycle check, no bound, count not clamped -------------------


def _tampered_kexec(edit: Callable[[PhysicalMemory, MemreserveChain], None]) -> Kernel:
    w = _world()
    w.boot("v6.6")
    edit(w.machine.mem, _chain(w))
    return w.kexec("v6.6")





def test_a_cyclic_memreserve_list_is_a_hang_in_the_next_kernel() -> None:
    """efi_config_parse_tables() loops while (prsv): the model reports the endless walk."""

    def loop(mem: PhysicalMemory, chain: MemreserveChain) -> None:
        node = chain.nodes[-1]
        hdr = _hdr(mem, node.addr)
        mem.write(node.addr, dataclasses.replace(hdr, next=chain.root).to_bytes(), AGENT)

    k1 = _tampered_kexec(loop)
    assert k1.crashed is not None and k1.crashed.startswith("hang: efi_config_parse_tables()")
    assert "no cycle check" in k1.crashed and "cycle: node" in k1.crashed
    assert not any("Could not map UEFI memreserve entry" in line for line in k1.log.lines)
    assert any(line.startswith("efi: ") and "MEMRESERVE=" in line for line in k1.log.lines)


def test_a_count_past_the_mapped_page_is_a_crash_but_past_size_is_read() -> None:
    def count(n: int) -> Callable[[PhysicalMemory, MemreserveChain], None]:
        def edit(mem: PhysicalMemory, chain: MemreserveChain) -> None:
            node = chain.nodes[1]
            hdr = _hdr(mem, node.addr)
            mem.write(node.addr, dataclasses.replace(hdr, count=n).to_bytes(), AGENT)

        return edit

    k1 = _tampered_kexec(count(300))  # 255 slots fit a 4 KiB node after its header
    assert k1.crashed is not None and k1.crashed.startswith("crash: efi_config_parse_tables()")
    assert "rsv->entry[255]" in k1.crashed and "(count 300)" in k1.crashed
    # count within the page is taken as it is, entries beyond the used ones included
    k2 = _tampered_kexec(count(12))
    assert k2.crashed is None
    assert k2.efi is not None and k2.efi.chain is not None
    assert len(k2.efi.chain.nodes[1].entries) == 12


def test_a_node_outside_ram_is_a_crash_not_a_map_failure() -> None:
    def away(mem: PhysicalMemory, chain: MemreserveChain) -> None:
        hdr = _hdr(mem, chain.root)
        mem.write(chain.root, dataclasses.replace(hdr, next=0x1_0000_0000_0000).to_bytes(), AGENT)

    k1 = _tampered_kexec(away)
    assert k1.crashed is not None and "outside RAM" in k1.crashed
    assert k1.crashed.startswith("crash: ")
