"""UEFI system/configuration tables in simulated memory and the memreserve chain walk."""

from __future__ import annotations

import dataclasses
import itertools
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gickexec.arch.efi import (
    CONFIG_TABLE_ENTRY_BYTES,
    EFI_SYSTEM_TABLE_BYTES,
    EFI_SYSTEM_TABLE_SIGNATURE,
    LINUX_EFI_MEMRESERVE_TABLE_GUID,
    SMBIOS3_TABLE_GUID,
    EfiSystemTable,
    MemreserveHeader,
    MemreserveV420,
    efi_memreserve_count,
    guid_bytes,
)
from gickexec.fw.memreserve import MemreserveChain, MemreserveLayout, walk_memreserve
from gickexec.fw.uefi import (
    EfiMemoryType,
    SystemTableError,
    UefiFirmware,
    read_config_tables,
)
from gickexec.hw.machine import Machine
from gickexec.hw.memory import FIRMWARE, PAGE_SIZE, Agent, AgentKind, MemRegion, PhysicalMemory
from gickexec.hw.platform import PLATFORMS

KERNEL = Agent(AgentKind.KERNEL, 0, generation=1)
OTHER_GUID = guid_bytes("00000000-1111-2222-3333-444455556666")


def _fw(platform: str = "efi-server-8") -> tuple[Machine, UefiFirmware]:
    m = Machine(PLATFORMS[platform])
    return m, UefiFirmware(m.mem, PLATFORMS[platform].firmware_layout)


def _systab(m: Machine, fw: UefiFirmware) -> tuple[EfiSystemTable, bytes]:
    raw = m.mem.read(fw.systab, EFI_SYSTEM_TABLE_BYTES)
    return EfiSystemTable.from_bytes(raw), raw


def _patch_systab(m: Machine, fw: UefiFirmware, *, fix_crc: bool = True, **fields: int) -> None:
    st_, _ = _systab(m, fw)
    m.mem.write(fw.systab, dataclasses.replace(st_, **fields).to_bytes(fix_crc=fix_crc), KERNEL)


# -- system table ---------------------------------------------------------------------


@pytest.mark.parametrize("platform", sorted(PLATFORMS))
def test_system_table_signature_and_crc(platform: str) -> None:
    m, fw = _fw(platform)
    st_, raw = _systab(m, fw)
    assert st_.signature == EFI_SYSTEM_TABLE_SIGNATURE
    assert raw[:8] == b"IBI SYST"
    assert st_.header_size == EFI_SYSTEM_TABLE_BYTES == 120
    assert st_.revision == fw.layout.revision == (2 << 16) | 70
    assert st_.crc_ok(raw)
    # the CRC is the CRC32 of the header with the CRC field zeroed
    blanked = raw[:16] + bytes(4) + raw[20:120]
    assert zlib.crc32(blanked) == st_.crc32 == int.from_bytes(raw[16:20], "little")
    # any flipped bit breaks it
    for pos in (0, 8, 40, 104, 119):
        bad = bytearray(raw)
        bad[pos] ^= 0x01
        assert not EfiSystemTable.from_bytes(bytes(bad)).crc_ok(bytes(bad))
    vendor = m.mem.read(st_.firmware_vendor, 12).decode("utf-16-le")
    assert vendor == "EDK II"
    runtime = [r for r, k in fw.regions() if k == EfiMemoryType.RUNTIME_SERVICES_DATA]
    assert any(r.contains(fw.systab, EFI_SYSTEM_TABLE_BYTES) for r in runtime)


def test_crc_ok_rejects_bad_header_sizes() -> None:
    m, fw = _fw()
    st_, raw = _systab(m, fw)
    for hsize in (0, 119, 121, 4096):
        assert not dataclasses.replace(st_, header_size=hsize).crc_ok(raw)


def test_read_config_tables_returns_the_smbios_entry() -> None:
    m, fw = _fw()
    st_, entries = read_config_tables(m.mem, fw.systab)
    assert st_.number_of_table_entries == 1
    smbios = fw.at(fw.layout.tables[0][2])
    assert [(e.guid, e.table) for e in entries] == [(SMBIOS3_TABLE_GUID, smbios)]
    assert m.mem.read(entries[0].table, 5) == b"_SM3_"
    assert SMBIOS3_TABLE_GUID.hex() == "4415fdf294972c4a992ee5bbcf20e394"


def test_install_configuration_table_adds_and_replaces() -> None:
    m, fw = _fw()
    fw.install_configuration_table(LINUX_EFI_MEMRESERVE_TABLE_GUID, 0x8000_1000)
    st_, entries = read_config_tables(m.mem, fw.systab)
    raw = m.mem.read(fw.systab, EFI_SYSTEM_TABLE_BYTES)
    assert st_.number_of_table_entries == 2 and st_.crc_ok(raw)
    assert {e.guid: e.table for e in entries} == {
        SMBIOS3_TABLE_GUID: fw.at(fw.layout.tables[0][2]),
        LINUX_EFI_MEMRESERVE_TABLE_GUID: 0x8000_1000,
    }
    crc_before = st_.crc32
    # replacing keeps the count and moves the pointer
    fw.install_configuration_table(LINUX_EFI_MEMRESERVE_TABLE_GUID, 0x8000_2000)
    st_, entries = read_config_tables(m.mem, fw.systab)
    assert st_.number_of_table_entries == 2
    assert [e.table for e in entries if e.guid == LINUX_EFI_MEMRESERVE_TABLE_GUID] == [0x8000_2000]
    fw.install_configuration_table(OTHER_GUID, 0x1234)
    st_, entries = read_config_tables(m.mem, fw.systab)
    raw = m.mem.read(fw.systab, EFI_SYSTEM_TABLE_BYTES)
    assert st_.number_of_table_entries == 3 and st_.crc_ok(raw) and st_.crc32 != crc_before
    assert [e.guid for e in entries][-1] == OTHER_GUID
    # the array in memory is exactly the entries, back to back
    blob = m.mem.read(st_.configuration_table, 3 * CONFIG_TABLE_ENTRY_BYTES)
    assert blob == b"".join(e.to_bytes() for e in entries)


@settings(max_examples=30, deadline=None)
@given(
    ops=st.lists(
        st.tuples(st.integers(0, 5), st.integers(0, (1 << 64) - 1)), min_size=1, max_size=12
    )
)
def test_install_sequences_keep_one_entry_per_guid(ops: list[tuple[int, int]]) -> None:
    m, fw = _fw()
    guids = [guid_bytes(f"{i:08x}-0000-0000-0000-000000000000") for i in range(6)]
    want = {SMBIOS3_TABLE_GUID: fw.at(fw.layout.tables[0][2])}
    for g, table in ops:
        fw.install_configuration_table(guids[g], table)
        want[guids[g]] = table
    st_, entries = read_config_tables(m.mem, fw.systab)
    assert st_.crc_ok(m.mem.read(fw.systab, EFI_SYSTEM_TABLE_BYTES))
    assert st_.number_of_table_entries == len(want) == len(entries)
    assert {e.guid: e.table for e in entries} == want


def test_power_on_rebuilds_the_tables() -> None:
    m, fw = _fw()
    fw.install_configuration_table(OTHER_GUID, 0x1234)
    fw.power_on()
    _, entries = read_config_tables(m.mem, fw.systab)
    assert [e.guid for e in entries] == [SMBIOS3_TABLE_GUID]


def test_bad_signature_is_rejected() -> None:
    m, fw = _fw()
    _patch_systab(m, fw, signature=0x1122334455667788)
    with pytest.raises(SystemTableError, match="signature"):
        read_config_tables(m.mem, fw.systab)


def test_corrupted_signature_byte_is_rejected() -> None:
    m, fw = _fw()
    m.mem.write_u8(fw.systab + 3, ord("X"), KERNEL)
    with pytest.raises(SystemTableError):
        read_config_tables(m.mem, fw.systab)


@pytest.mark.parametrize("count", [1025, 1 << 32, (1 << 64) - 1])
def test_absurd_table_count_is_rejected(count: int) -> None:
    m, fw = _fw()
    _patch_systab(m, fw, number_of_table_entries=count)
    with pytest.raises(SystemTableError, match="configuration tables"):
        read_config_tables(m.mem, fw.systab)


def test_largest_accepted_count_reads_that_many_entries() -> None:
    m, fw = _fw()
    _patch_systab(m, fw, number_of_table_entries=1024)
    _, entries = read_config_tables(m.mem, fw.systab)
    assert len(entries) == 1024 and entries[0].guid == SMBIOS3_TABLE_GUID


def test_zero_tables() -> None:
    m, fw = _fw()
    _patch_systab(m, fw, number_of_table_entries=0, configuration_table=0)
    st_, entries = read_config_tables(m.mem, fw.systab)
    assert entries == [] and st_.number_of_table_entries == 0


@pytest.mark.parametrize(
    "where",
    [
        0,  # NULL
        0x3000_0000,  # MMIO (the GIC distributor)
        0x7FFF_FFF0,  # straddles the start of RAM
        0x1_0000_0000 - 24,  # the last entry would run past the end of the first bank
    ],
)
def test_config_array_outside_ram_is_rejected(where: int) -> None:
    m, fw = _fw()
    _patch_systab(m, fw, number_of_table_entries=2, configuration_table=where)
    with pytest.raises(SystemTableError, match="not in RAM"):
        read_config_tables(m.mem, fw.systab)


@pytest.mark.parametrize("systab", [0, 0x3000_0000, 0x1_0000_0000 - 100, 1 << 50])
def test_system_table_outside_ram_is_rejected(systab: int) -> None:
    m, _ = _fw()
    with pytest.raises(SystemTableError, match="not in RAM"):
        read_config_tables(m.mem, systab)


def test_untouched_ram_is_not_a_system_table() -> None:
    m, _ = _fw()
    with pytest.raises(SystemTableError, match="signature"):
        read_config_tables(m.mem, 0x8000_0000)


# -- boot services --------------------------------------------------------------------


def test_allocate_pool_is_8_byte_aligned_loader_data() -> None:
    _, fw = _fw()
    a = fw.allocate_pool(EfiMemoryType.LOADER_DATA, 16)
    b = fw.allocate_pool(EfiMemoryType.LOADER_DATA, 3)
    c = fw.allocate_pool(EfiMemoryType.LOADER_DATA, 24)
    assert a % 8 == b % 8 == c % 8 == 0
    assert a % PAGE_SIZE == 0xE98  # like EDK II pools: aligned, but not to a page
    # small pool allocations 0x80 apart, as the real INITRD and MEMRESERVE tables are
    assert b == a + 0x80 and c == b + 0x80
    pool = [r for r, k in fw.regions() if k == EfiMemoryType.LOADER_DATA]
    assert all(pool[0].contains(x) for x in (a, b, c))
    with pytest.raises(ValueError):
        fw.allocate_pool(EfiMemoryType.RUNTIME_SERVICES_DATA, 16)
    with pytest.raises(RuntimeError, match="exhausted"):
        fw.allocate_pool(EfiMemoryType.LOADER_DATA, 2 << 20)


@pytest.mark.parametrize("platform", sorted(PLATFORMS))
def test_memory_map_covers_all_ram_without_overlap(platform: str) -> None:
    m, fw = _fw(platform)
    mm = fw.memory_map()
    assert sum(r.size for r, _ in mm) == m.mem.ram_bytes
    regions = sorted((r for r, _ in mm), key=lambda r: r.start)
    for a, b in itertools.pairwise(regions):
        assert a.end <= b.start
    assert all(m.mem.is_ram(r.start, r.size) for r in regions)
    kinds = dict((r, k) for r, k in mm)
    for region, kind in fw.regions():
        assert kinds[region] == kind
    assert {k for _, k in mm} <= {2, 6, 7, 9}
    assert EfiMemoryType.CONVENTIONAL in {k for _, k in mm}


# -- memreserve walk -------------------------------------------------------------------

RAM = MemRegion(0x8000_0000, 64 * PAGE_SIZE)
ROOT = RAM.start + 0xE98


def _mem() -> PhysicalMemory:
    return PhysicalMemory([RAM])


def _v5_node(
    mem: PhysicalMemory,
    addr: int,
    size: int,
    entries: list[tuple[int, int]],
    nxt: int,
    count: int | None = None,
) -> None:
    hdr = MemreserveHeader(size, len(entries) if count is None else count, nxt)
    mem.write(addr, hdr.to_bytes(), KERNEL)
    blob = b"".join(MemreserveHeader.pack_entry(b, s) for b, s in entries)
    mem.write(addr + MemreserveHeader.entry_offset(0), blob, KERNEL)


def _walk(
    mem: PhysicalMemory, root: int = ROOT, layout: MemreserveLayout = "v5.0", max_nodes: int = 65536
) -> MemreserveChain:
    return walk_memreserve(mem.read, mem.is_ram, root, layout, max_nodes)


def test_v5_chain_nodes_entries_and_footprint() -> None:
    mem = _mem()
    n1, n2 = RAM.start + 4 * PAGE_SIZE, RAM.start + 9 * PAGE_SIZE
    e1 = [(0x8800_0000, 0x10000), (0x8801_0000, 0x10000), (0x8802_0000, 0x10000)]
    e2 = [(0x9000_0000, 0x1000)]
    _v5_node(mem, ROOT, 0, [], n1)  # the root holds no reservation
    _v5_node(mem, n1, 255, e1, n2)
    _v5_node(mem, n2, 255, e2, 0)
    chain = _walk(mem)
    assert chain.error is None and chain.root == ROOT and chain.layout == "v5.0"
    assert [n.addr for n in chain.nodes] == [ROOT, n1, n2]
    assert [n.addr for n in chain.list_nodes] == [n1, n2]
    assert [n.footprint for n in chain.nodes] == [16, 16 + 16 * 255, 4096]
    assert [(n.size, n.count, n.next) for n in chain.nodes] == [
        (0, 0, n1),
        (255, 3, n2),
        (255, 1, 0),
    ]
    assert chain.nodes[0].entries == ()
    assert chain.entries == e1 + e2
    assert efi_memreserve_count(4096) == 255


def test_v5_empty_root_only() -> None:
    mem = _mem()
    _v5_node(mem, ROOT, 0, [], 0)
    chain = _walk(mem)
    assert chain.error is None and len(chain.nodes) == 1 and chain.entries == []


def test_zero_root_means_no_table() -> None:
    chain = _walk(_mem(), root=0)
    assert chain.nodes == () and chain.error is None


@settings(max_examples=40, deadline=None)
@given(
    counts=st.lists(st.integers(0, 255), min_size=0, max_size=8),
    seed=st.integers(0, 1 << 30),
)
def test_v5_chain_of_any_shape(counts: list[int], seed: int) -> None:
    mem = _mem()
    pages = [RAM.start + (i + 1) * PAGE_SIZE for i in range(len(counts))]
    _v5_node(mem, ROOT, 0, [], pages[0] if pages else 0)
    want = []
    for i, (addr, count) in enumerate(zip(pages, counts, strict=True)):
        entries = [(seed + 0x1000 * (i * 256 + j), 0x1000 + j) for j in range(count)]
        want += entries
        _v5_node(mem, addr, 255, entries, pages[i + 1] if i + 1 < len(pages) else 0)
    chain = _walk(mem)
    assert chain.error is None
    assert len(chain.nodes) == 1 + len(counts)
    assert chain.entries == want
    assert [n.count for n in chain.list_nodes] == counts


def test_v420_layout() -> None:
    mem = _mem()
    n1, n2 = RAM.start + 0x2000, RAM.start + 0x2018
    mem.write(ROOT, MemreserveV420(n1, 0, 0).to_bytes(), KERNEL)
    mem.write(n1, MemreserveV420(n2, 0x8800_0000, 0x10000).to_bytes(), KERNEL)
    mem.write(n2, MemreserveV420(0, 0x8900_0000, 0).to_bytes(), KERNEL)  # reserves nothing
    chain = _walk(mem, layout="v4.20")
    assert chain.error is None and chain.layout == "v4.20"
    assert [n.addr for n in chain.nodes] == [ROOT, n1, n2]
    assert [n.footprint for n in chain.nodes] == [24, 24, 24]
    assert chain.entries == [(0x8800_0000, 0x10000)]
    assert [n.count for n in chain.nodes] == [0, 1, 0]


@pytest.mark.parametrize("layout", ["v5.0", "v4.20"])
@pytest.mark.parametrize("back_to", [0, 1, 2])
def test_cycle_is_detected(layout: MemreserveLayout, back_to: int) -> None:
    mem = _mem()
    addrs = [ROOT, RAM.start + 3 * PAGE_SIZE, RAM.start + 5 * PAGE_SIZE]
    for i, addr in enumerate(addrs):
        nxt = addrs[i + 1] if i + 1 < len(addrs) else addrs[back_to]
        if layout == "v5.0":
            _v5_node(mem, addr, 255 if i else 0, [(0x9000_0000 + i, 1)] if i else [], nxt)
        else:
            mem.write(addr, MemreserveV420(nxt, 0x9000_0000 + i, i).to_bytes(), KERNEL)
    chain = _walk(mem, layout=layout)
    assert chain.error is not None and "cycle" in chain.error
    assert f"{addrs[back_to]:#x}" in chain.error
    assert [n.addr for n in chain.nodes] == addrs


def test_self_loop_is_a_cycle() -> None:
    mem = _mem()
    _v5_node(mem, ROOT, 0, [], ROOT)
    chain = _walk(mem)
    assert chain.error is not None and "cycle" in chain.error and len(chain.nodes) == 1


@pytest.mark.parametrize(("length", "bound"), [(5, 3), (5, 5), (5, 4), (1, 1)])
def test_max_nodes_bounds_the_walk(length: int, bound: int) -> None:
    mem = _mem()
    addrs = [RAM.start + (i + 1) * PAGE_SIZE for i in range(length)]
    for i, addr in enumerate(addrs):
        _v5_node(mem, addr, 255, [(i, 1)], addrs[i + 1] if i + 1 < length else 0)
    chain = _walk(mem, root=addrs[0], max_nodes=bound)
    assert len(chain.nodes) == min(length, bound)
    if length > bound:
        assert chain.error == f"more than {bound} nodes"
    else:
        assert chain.error is None


@pytest.mark.parametrize(
    "bad_next",
    [RAM.end, RAM.end - 8, RAM.start - PAGE_SIZE, 0x3000_0000, (1 << 64) - 1],
)
def test_node_outside_ram_stops_the_walk(bad_next: int) -> None:
    mem = _mem()
    n1 = RAM.start + PAGE_SIZE
    _v5_node(mem, ROOT, 0, [], n1)
    _v5_node(mem, n1, 255, [(0x9000_0000, 0x1000)], bad_next)
    chain = _walk(mem)
    assert chain.error == f"node {bad_next:#x} is not in RAM"
    assert [n.addr for n in chain.nodes] == [ROOT, n1]
    assert chain.entries == [(0x9000_0000, 0x1000)]


def test_v420_node_outside_ram() -> None:
    mem = _mem()
    mem.write(ROOT, MemreserveV420(RAM.end - 16, 0, 0).to_bytes(), KERNEL)
    chain = _walk(mem, layout="v4.20")
    assert chain.error is not None and "not in RAM" in chain.error and len(chain.nodes) == 1


@pytest.mark.parametrize(
    ("offset", "count", "read"),
    [
        (0, 255, 255),
        (0, 256, 255),  # one more than fits: clamped to the page
        (0, 1_000_000, 255),
        (0xE98, 255, (4096 - 0xE98 - 16) // 16),  # 21 entries fit after the root's offset
        (0xFF0, 5, 0),  # header fills the page's last 16 bytes
        (0x800, 200, 127),
        (0, -7, 0),  # negative count reads nothing
    ],
)
def test_count_is_clamped_to_the_page(offset: int, count: int, read: int) -> None:
    mem = _mem()
    addr = RAM.start + 2 * PAGE_SIZE + offset
    entries = [(0x1000 * (i + 1), 0x10) for i in range(300)]
    _v5_node(mem, addr, 255, entries, 0, count=count)
    chain = _walk(mem, root=addr)
    (node,) = chain.nodes
    assert chain.error is None
    assert node.count == count  # what memory says
    assert len(node.entries) == read  # what the walk read
    assert list(node.entries) == entries[:read]


@pytest.mark.parametrize(("size", "footprint"), [(255, 4096), (0, 16), (1, 32), (-3, 16)])
def test_footprint_follows_size(size: int, footprint: int) -> None:
    mem = _mem()
    _v5_node(mem, ROOT, size, [], 0)
    assert _walk(mem).nodes[0].footprint == footprint


def test_entries_running_past_the_end_of_ram_stop_the_walk() -> None:
    """RAM that ends inside a node's page: the entries beyond it are not RAM."""
    mem = PhysicalMemory([MemRegion(0x8000_0000, 0x1800)])
    node = 0x8000_1000
    _v5_node(mem, node, 255, [(1, 1)], 0, count=255)
    chain = walk_memreserve(mem.read, mem.is_ram, node)
    assert chain.error is not None and "not in RAM" in chain.error
    _v5_node(mem, node, 255, [(1, 1)], 0, count=1)
    assert walk_memreserve(mem.read, mem.is_ram, node).entries == [(1, 1)]


def test_walk_reads_only_through_the_callbacks() -> None:
    mem = _mem()
    n1 = RAM.start + PAGE_SIZE
    _v5_node(mem, ROOT, 0, [], n1)
    _v5_node(mem, n1, 255, [(5, 6), (7, 8)], 0)
    reads: list[tuple[int, int]] = []

    def read(addr: int, size: int) -> bytes:
        reads.append((addr, size))
        return mem.read(addr, size)

    chain = walk_memreserve(read, mem.is_ram, ROOT)
    assert chain.entries == [(5, 6), (7, 8)]
    # headers and the used entries only, never a whole page
    assert reads == [(ROOT, 16), (n1, 16), (n1 + 16, 32)]


def test_memreserve_chain_through_firmware_config_table() -> None:
    """End to end: a root installed as a config table is found and walked."""
    m, fw = _fw()
    root = fw.allocate_pool(EfiMemoryType.LOADER_DATA, 16)
    node = m.platform.ram[0].start + 0x100_0000
    m.mem.write(root, MemreserveHeader(0, 0, node).to_bytes(), FIRMWARE)
    _v5_node(m.mem, node, 255, [(0x8800_0000, 0x10000)], 0)
    fw.install_configuration_table(LINUX_EFI_MEMRESERVE_TABLE_GUID, root)
    _, entries = read_config_tables(m.mem, fw.systab)
    (found,) = [e.table for e in entries if e.guid == LINUX_EFI_MEMRESERVE_TABLE_GUID]
    chain = walk_memreserve(m.mem.read, m.mem.is_ram, found)
    assert chain.error is None and chain.entries == [(0x8800_0000, 0x10000)]
    assert chain.nodes[0].footprint == 16 and chain.nodes[1].footprint == 4096
