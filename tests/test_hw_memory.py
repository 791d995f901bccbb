"""Simulated physical memory: sparseness, page crossings, bus faults, MMIO, GIC observers."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gickexec.hw.memory import (
    FIRMWARE,
    PAGE_SIZE,
    Agent,
    AgentKind,
    BusFault,
    GicWrite,
    MemRegion,
    PhysicalMemory,
)

BANK0 = MemRegion(0x8000_0000, 16 * PAGE_SIZE, "bank0")
BANK1 = MemRegion(0x1_0000_0000, 8 * PAGE_SIZE, "bank1")
KERNEL = Agent(AgentKind.KERNEL, 0, generation=1)
GICR3 = Agent(AgentKind.GICR, 3)
ITS0 = Agent(AgentKind.ITS, 0)


def _mem() -> PhysicalMemory:
    return PhysicalMemory([BANK1, BANK0])  # unsorted on purpose


class _Regs:
    """An MMIO device that records accesses and echoes its last write."""

    def __init__(self) -> None:
        self.writes: list[tuple[int, int, int, Agent]] = []
        self.reads: list[tuple[int, int]] = []
        self.value = 0

    def mmio_read(self, offset: int, size: int) -> int:
        self.reads.append((offset, size))
        return self.value + offset

    def mmio_write(self, offset: int, size: int, value: int, agent: Agent) -> None:
        self.writes.append((offset, size, value, agent))
        self.value = value


# -- sparseness ---------------------------------------------------------------------


def test_untouched_memory_reads_zero_and_costs_nothing() -> None:
    m = _mem()
    assert m.pages_touched == 0
    assert m.read(BANK0.start, 3 * PAGE_SIZE) == bytes(3 * PAGE_SIZE)
    assert m.read_u64(BANK1.end - 8) == 0
    assert m.pages_touched == 0
    assert m.ram_bytes == BANK0.size + BANK1.size
    assert [r.start for r in m.ram] == [BANK0.start, BANK1.start]


def test_writing_zeros_to_an_untouched_page_costs_nothing() -> None:
    m = _mem()
    m.write(BANK0.start + 5, bytes(100), KERNEL)
    m.write(BANK0.start + PAGE_SIZE, bytes(PAGE_SIZE), KERNEL)
    assert m.pages_touched == 0
    # ... but the write is still attributed
    assert m.last_writer[BANK0.start >> 12] == KERNEL
    assert m.last_writer[(BANK0.start >> 12) + 1] == KERNEL


def test_nonzero_write_touches_exactly_its_pages() -> None:
    m = _mem()
    m.write_u8(BANK0.start + 2 * PAGE_SIZE + 7, 0x5A, KERNEL)
    assert m.pages_touched == 1
    assert m.nonzero_pages(BANK0.start, BANK0.size) == [(BANK0.start >> 12) + 2]
    assert m.read_u8(BANK0.start + 2 * PAGE_SIZE + 7) == 0x5A
    assert m.read(BANK0.start + 2 * PAGE_SIZE, 7) == bytes(7)


def test_zero_fill_of_whole_pages_releases_them() -> None:
    m = _mem()
    m.fill(BANK0.start, 4 * PAGE_SIZE, 0xA2, KERNEL)
    assert m.pages_touched == 4
    assert m.read(BANK0.start + 3 * PAGE_SIZE + PAGE_SIZE - 2, 2) == b"\xa2\xa2"
    # zero two whole pages plus half of a third: the two are released, the third stays
    m.fill(BANK0.start, 2 * PAGE_SIZE + PAGE_SIZE // 2, 0, KERNEL)
    assert m.pages_touched == 2
    assert m.read(BANK0.start, 2 * PAGE_SIZE + PAGE_SIZE // 2) == bytes(
        2 * PAGE_SIZE + PAGE_SIZE // 2
    )
    assert m.read_u8(BANK0.start + 2 * PAGE_SIZE + PAGE_SIZE // 2) == 0xA2
    m.fill(BANK0.start, 4 * PAGE_SIZE, 0, FIRMWARE)
    assert m.pages_touched == 0
    assert m.last_writer[BANK0.start >> 12] == FIRMWARE


def test_zero_fill_of_untouched_pages_allocates_nothing() -> None:
    m = _mem()
    m.fill(BANK0.start + 100, 3 * PAGE_SIZE, 0, KERNEL)
    assert m.pages_touched == 0


def test_nonzero_fill_spanning_partial_pages() -> None:
    m = _mem()
    start = BANK0.start + PAGE_SIZE - 3
    m.fill(start, 6, 0x11, KERNEL)
    assert m.pages_touched == 2
    assert m.read(start - 1, 8) == b"\x00" + b"\x11" * 6 + b"\x00"


@settings(max_examples=60, deadline=None)
@given(
    ops=st.lists(
        st.tuples(
            st.integers(0, BANK0.size - 1),
            st.binary(min_size=0, max_size=3 * PAGE_SIZE // 2),
            st.booleans(),
        ),
        max_size=12,
    )
)
def test_memory_matches_a_flat_bytearray(ops: list[tuple[int, bytes, bool]]) -> None:
    """Any sequence of writes and zero fills reads back like one flat byte array."""
    m = PhysicalMemory([BANK0])
    ref = bytearray(BANK0.size)
    for off, raw, as_fill in ops:
        data = raw[: BANK0.size - off]
        if as_fill:
            m.fill(BANK0.start + off, len(data), 0, KERNEL)
            ref[off : off + len(data)] = bytes(len(data))
        else:
            m.write(BANK0.start + off, data, KERNEL)
            ref[off : off + len(data)] = data
    assert m.read(BANK0.start, BANK0.size) == bytes(ref)
    # a page is stored at most when it holds data or was partially written
    assert m.pages_touched <= BANK0.size // PAGE_SIZE
    pages = range(BANK0.size // PAGE_SIZE)
    nonzero = {i for i in pages if any(ref[i * PAGE_SIZE : (i + 1) * PAGE_SIZE])}
    stored = {p - (BANK0.start >> 12) for p in m.nonzero_pages(BANK0.start, BANK0.size)}
    assert nonzero <= stored


# -- page crossings -----------------------------------------------------------------


def test_cross_page_write_and_read() -> None:
    m = _mem()
    addr = BANK0.start + PAGE_SIZE - 4
    m.write_u64(addr, 0x1122334455667788, KERNEL)
    assert m.read_u64(addr) == 0x1122334455667788
    assert m.read_u32(addr) == 0x55667788
    assert m.read_u32(addr + 4) == 0x11223344
    assert m.pages_touched == 2
    assert m.last_writer[(addr >> 12) + 1] == KERNEL


def test_write_spanning_three_pages() -> None:
    m = _mem()
    data = (bytes(range(1, 256)) * 41)[:10240]  # no zero bytes
    addr = BANK0.start + PAGE_SIZE - 1
    m.write(addr, data, KERNEL)
    assert m.read(addr, len(data)) == data
    assert m.pages_touched == 4  # 1 + 4096 + 4096 + 2047 bytes
    assert m.read_u8(addr - 1) == 0


# -- bus faults ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("addr", "size"),
    [
        (0, 1),
        (BANK0.start - 1, 1),
        (BANK0.start - 4, 8),  # straddles the start
        (BANK0.end - 4, 8),  # straddles the end
        (BANK0.end, 1),
        (BANK1.end, 4),
        (1 << 60, 8),
    ],
)
def test_access_outside_ram_is_a_bus_fault(addr: int, size: int) -> None:
    m = _mem()
    with pytest.raises(BusFault) as ei:
        m.read(addr, size)
    assert ei.value.addr == addr and ei.value.size == size and ei.value.agent is None
    with pytest.raises(BusFault) as ei:
        m.write(addr, b"\x01" * size, ITS0)
    assert ei.value.agent == ITS0
    assert "ITS0" in str(ei.value)
    with pytest.raises(BusFault):
        m.fill(addr, size, 0, KERNEL)
    assert m.pages_touched == 0


def test_negative_size_is_a_bus_fault() -> None:
    with pytest.raises(BusFault):
        _mem().read(BANK0.start, -1)


def test_access_spanning_two_ram_banks_faults_even_if_adjacent() -> None:
    a = MemRegion(0x1000_0000, PAGE_SIZE)
    b = MemRegion(0x1000_0000 + PAGE_SIZE, PAGE_SIZE)
    m = PhysicalMemory([a, b])
    assert m.is_ram(a.end - 4, 4) and m.is_ram(b.start, 4)
    assert not m.is_ram(a.end - 4, 8)
    with pytest.raises(BusFault):
        m.write_u64(a.end - 4, 1, KERNEL)


def test_ram_region_lookup() -> None:
    m = _mem()
    assert m.ram_region(BANK1.start + 5) == BANK1
    assert m.ram_region(BANK0.end - 1) == BANK0
    assert m.ram_region(BANK0.end) is None
    assert m.ram_region(BANK0.start - 1) is None


@pytest.mark.parametrize(
    "regions",
    [
        [MemRegion(0x1000, 0x2000), MemRegion(0x2000, 0x1000)],
        [MemRegion(0x4000, 0x1000), MemRegion(0x1000, 0x4000)],
        [MemRegion(0x1000, 0x1000), MemRegion(0x1000, 0x1000)],
        [MemRegion(0x1000, 0x10000), MemRegion(0x3000, 0x10)],
    ],
)
def test_overlapping_ram_regions_are_rejected(regions: list[MemRegion]) -> None:
    with pytest.raises(ValueError, match="overlap"):
        PhysicalMemory(regions)


def test_adjacent_ram_regions_are_accepted() -> None:
    m = PhysicalMemory([MemRegion(0x2000, 0x1000), MemRegion(0x1000, 0x1000)])
    assert m.ram_bytes == 0x2000


# -- MMIO ---------------------------------------------------------------------------


def test_mmio_dispatch_by_window() -> None:
    m = _mem()
    a, b = _Regs(), _Regs()
    m.map_mmio(MemRegion(0x3000_0000, 0x10000, "A"), a)
    m.map_mmio(MemRegion(0x2000_0000, 0x10000, "B"), b)
    m.mmio_write(0x3000_0010, 4, 0xDEAD, KERNEL)
    m.mmio_write(0x2000_FFF8, 8, 0xBEEF, FIRMWARE)
    assert a.writes == [(0x10, 4, 0xDEAD, KERNEL)]
    assert b.writes == [(0xFFF8, 8, 0xBEEF, FIRMWARE)]
    assert m.mmio_read(0x3000_0004, 4) == 0xDEAD + 4
    assert a.reads == [(4, 4)] and b.reads == []
    # MMIO is not RAM
    assert not m.is_ram(0x3000_0000)
    with pytest.raises(BusFault):
        m.read(0x3000_0000, 4)


@pytest.mark.parametrize(
    ("addr", "size"),
    [(0x3000_0000 - 4, 4), (0x3000_FFFC, 8), (0x3001_0000, 4), (BANK0.start, 4)],
)
def test_mmio_outside_windows_faults(addr: int, size: int) -> None:
    m = _mem()
    dev = _Regs()
    m.map_mmio(MemRegion(0x3000_0000, 0x10000), dev)
    with pytest.raises(BusFault):
        m.mmio_read(addr, size)
    with pytest.raises(BusFault) as ei:
        m.mmio_write(addr, size, 1, KERNEL)
    assert ei.value.agent == KERNEL
    assert dev.writes == [] and dev.reads == []


@pytest.mark.parametrize(
    "window",
    [
        MemRegion(BANK0.start, 0x1000),
        MemRegion(BANK0.start + 0x2000, 0x1000),
        MemRegion(BANK0.start - 0x1000, 0x2000),  # starts below RAM, ends inside it
        MemRegion(0x2FFF_0000, 0x20000),  # overlaps the existing window
        MemRegion(0x3000_8000, 0x100),
    ],
)
def test_mmio_window_overlapping_ram_or_window_is_rejected(window: MemRegion) -> None:
    m = _mem()
    m.map_mmio(MemRegion(0x3000_0000, 0x10000), _Regs())
    with pytest.raises(ValueError):
        m.map_mmio(window, _Regs())


def test_unmap_all_mmio() -> None:
    m = _mem()
    m.map_mmio(MemRegion(0x3000_0000, 0x10000), _Regs())
    m.unmap_all_mmio()
    with pytest.raises(BusFault):
        m.mmio_read(0x3000_0000, 4)
    m.map_mmio(MemRegion(0x3000_0000, 0x10000), _Regs())  # the window is free again
    assert m.mmio_read(0x3000_0000, 4) == 0


# -- attribution and observers ------------------------------------------------------


def test_gic_writes_reach_observers_with_old_and_new_bytes() -> None:
    m = _mem()
    seen: list[GicWrite] = []
    m.observe_gic_writes(seen.append)
    addr = BANK0.start + PAGE_SIZE - 2
    m.write(addr, b"\x01\x02\x03\x04", KERNEL)
    assert seen == []  # kernel writes are not GIC writes
    m.write(addr + 1, b"\xaa\xbb", GICR3)
    m.write_u64(BANK1.start, 0x0102030405060708, ITS0)
    assert seen == [
        GicWrite(addr + 1, b"\x02\x03", b"\xaa\xbb", GICR3),
        GicWrite(BANK1.start, bytes(8), bytes([8, 7, 6, 5, 4, 3, 2, 1]), ITS0),
    ]
    assert m.read(addr, 4) == b"\x01\xaa\xbb\x04"


def test_gic_fill_is_observed_and_zero_writes_too() -> None:
    m = _mem()
    seen: list[GicWrite] = []
    m.observe_gic_writes(seen.append)
    m.write_u8(BANK0.start, 0xFF, KERNEL)
    m.fill(BANK0.start, 2, 0, GICR3)
    m.write_u8(BANK0.start + 10, 0, ITS0)  # zero onto zero: still reported
    assert seen == [
        GicWrite(BANK0.start, b"\xff\x00", b"\x00\x00", GICR3),
        GicWrite(BANK0.start + 10, b"\x00", b"\x00", ITS0),
    ]


def test_every_observer_is_called_in_order() -> None:
    m = _mem()
    order: list[str] = []
    m.observe_gic_writes(lambda w: order.append(f"a{w.new[0]}"))
    m.observe_gic_writes(lambda w: order.append(f"b{w.new[0]}"))
    m.write_u8(BANK0.start, 7, GICR3)
    assert order == ["a7", "b7"]


def test_faulting_gic_write_is_not_observed() -> None:
    m = _mem()
    seen: list[GicWrite] = []
    m.observe_gic_writes(seen.append)
    with pytest.raises(BusFault):
        m.write_u8(BANK0.end, 1, GICR3)
    assert seen == []


def test_last_writer_attribution_per_page() -> None:
    m = _mem()
    p0 = BANK0.start >> 12
    m.write(BANK0.start, b"k" * (PAGE_SIZE + 1), KERNEL)
    m.write_u8(BANK0.start + PAGE_SIZE + 5, 1, GICR3)
    assert m.last_writer[p0] == KERNEL
    assert m.last_writer[p0 + 1] == GICR3
    assert p0 + 2 not in m.last_writer
    m.fill(BANK0.start, 1, 0x33, FIRMWARE)
    assert m.last_writer[p0] == FIRMWARE
    assert str(GICR3) == "GICR(CPU3)" and str(KERNEL) == "kernel gen1 CPU0"
    assert str(Agent(AgentKind.DEVICE, 0x100)) == "device 0x0100"
    assert GICR3.is_gic and ITS0.is_gic and not KERNEL.is_gic and not FIRMWARE.is_gic


def test_mem_region_contains() -> None:
    r = MemRegion(0x1000, 0x100)
    assert r.end == 0x1100
    assert r.contains(0x1000) and r.contains(0x10FF) and r.contains(0x1000, 0x100)
    assert not r.contains(0x10FF, 2) and not r.contains(0xFFF)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 6 * PAGE_SIZE), st.integers(1, 255)), max_size=6),
    st.integers(0, 6 * PAGE_SIZE),
    st.integers(0, 6 * PAGE_SIZE),
)
def test_zero_fill_equals_writing_zeros_then_releasing_whole_pages(
    scribbles: list[tuple[int, int]], offset: int, size: int
) -> None:
    """``fill(0)`` (the bulk path over whole pages) leaves the bytes and last writers a
    write of zeros leaves, and stores exactly the pages the write would keep except the
    whole pages inside the range."""
    size = min(size, 8 * PAGE_SIZE - offset)
    mems = [_mem(), _mem()]
    for m in mems:
        for at, value in scribbles:
            m.write_u8(BANK0.start + at, value, KERNEL)
    fill, ref = mems
    addr = BANK0.start + offset
    fill.fill(addr, size, 0, FIRMWARE)
    ref.write(addr, bytes(size), FIRMWARE)
    assert fill.read(BANK0.start, 8 * PAGE_SIZE) == ref.read(BANK0.start, 8 * PAGE_SIZE)
    assert fill.last_writer == ref.last_writer
    assert list(fill.last_writer) == list(ref.last_writer)  # the same order too
    whole = range(-(-addr >> 12), (addr + size) >> 12)
    kept = {p for p in ref.nonzero_pages(BANK0.start, 8 * PAGE_SIZE) if p not in whole}
    assert set(fill.nonzero_pages(BANK0.start, 8 * PAGE_SIZE)) == kept
