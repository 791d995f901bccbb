"""The kernel's memory view: OwnershipMap, Memblock and the buddy page allocator."""

from __future__ import annotations

import itertools
from collections import OrderedDict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    rule,
)

from gickexec.kernel import mm
from gickexec.kernel.mm import (
    MIGRATE_MOVABLE,
    MIGRATE_UNMOVABLE,
    BuddyAllocator,
    FreeList,
    Memblock,
    OutOfMemory,
    Owner,
    OwnershipMap,
    Role,
    first_deferred_pfn,
)
from gickexec.kernel.profiles import PROFILES
from gickexec.scenario.builtin import load_builtin
from gickexec.scenario.runner import run_scenario

_4K = 0x1000
_64K = 0x10000
_2M = 0x200000
_1G = 1 << 30

A = Owner("a")
B = Owner("b", Role("pend", 3))
C = Owner("c")


def _overlap(a: tuple[int, int], b: tuple[int, int]) -> bool:
    """Whether [start, end) intervals overlap."""
    return a[0] < b[1] and b[0] < a[1]


# -- OwnershipMap ---------------------------------------------------------------------


def test_ownership_assign_splits_the_interval_it_lands_in() -> None:
    m = OwnershipMap()
    m.assign(0x1000, 0x1000, A)
    m.assign(0x1400, 0x200, B)
    assert m.items() == [(0x1000, 0x1400, A), (0x1400, 0x1600, B), (0x1600, 0x2000, A)]
    assert len(m) == 3


def test_ownership_assign_overwrites_several_intervals() -> None:
    m = OwnershipMap()
    m.assign(0x0, 0x100, A)
    m.assign(0x100, 0x100, B)
    m.assign(0x300, 0x100, A)
    m.assign(0x80, 0x300, C)  # covers the end of A, all of B, the gap and part of the 2nd A
    assert m.items() == [(0x0, 0x80, A), (0x80, 0x380, C), (0x380, 0x400, A)]


def test_ownership_assign_none_frees_and_leaves_a_hole() -> None:
    m = OwnershipMap()
    m.assign(0x0, 0x3000, A)
    m.assign(0x1000, 0x1000, None)
    assert m.items() == [(0x0, 0x1000, A), (0x2000, 0x3000, A)]
    assert m.owner_at(0x1000) is None
    assert m.owner_at(0x1FFF) is None
    assert m.range_of(0x1800) is None
    m.assign(0x0, 0x3000, None)
    assert m.items() == []


def test_ownership_owner_at_and_range_of_use_half_open_bounds() -> None:
    m = OwnershipMap()
    m.assign(0x1000, 0x1000, B)
    m.assign(0x2000, 0x800, A)  # adjacent, a different owner: kept separate
    assert m.owner_at(0xFFF) is None
    assert m.owner_at(0x1000) == B
    assert m.owner_at(0x1FFF) == B
    assert m.owner_at(0x2000) == A
    assert m.owner_at(0x27FF) == A
    assert m.owner_at(0x2800) is None
    assert m.range_of(0x1000) == (0x1000, 0x2000)
    assert m.range_of(0x1FFF) == (0x1000, 0x2000)
    assert m.range_of(0x2000) == (0x2000, 0x2800)
    assert m.range_of(0x2800) is None


def test_ownership_exact_overwrite_replaces_the_owner() -> None:
    m = OwnershipMap()
    m.assign(0x1000, 0x1000, A)
    m.assign(0x1000, 0x1000, B)
    assert m.items() == [(0x1000, 0x2000, B)]


def test_ownership_zero_size_assign_changes_no_owner() -> None:
    m = OwnershipMap()
    m.assign(0x1000, 0x1000, A)
    m.assign(0x1800, 0, B)
    # (the interval may be split at 0x1800, but every byte keeps its owner)
    owners = [m.owner_at(a) for a in (0xFFF, 0x1000, 0x17FF, 0x1800, 0x1FFF, 0x2000)]
    assert owners == [None, A, A, A, A, None]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 15), st.integers(0, 6), st.sampled_from([A, B, C, None])),
        max_size=30,
    )
)
def test_ownership_assign_matches_a_per_unit_map(ops: list[tuple[int, int, Owner | None]]) -> None:
    """Every assign (exact relabels and frees among them) against one owner per unit;
    the intervals stay sorted, disjoint and non-empty."""
    m = OwnershipMap()
    ref: dict[int, Owner] = {}
    for start, size, owner in ops:
        m.assign(start, size, owner)
        for a in range(start, start + size):
            if owner is None:
                ref.pop(a, None)
            else:
                ref[a] = owner
        assert {a: o for a in range(24) if (o := m.owner_at(a)) is not None} == ref
        items = m.items()
        assert all(s < e for s, e, _ in items)
        assert all(e <= s2 for (_, e, _), (s2, _, _) in itertools.pairwise(items))


# -- Memblock -------------------------------------------------------------------------


def _memblock() -> Memblock:
    return Memblock([(0x8000_0000, 0x8000_0000 + _1G)])


def test_memblock_reserve_merges_adjacent_regions() -> None:
    mb = _memblock()
    mb.reserve(0x8010_0000, 0x1000)
    mb.reserve(0x8010_1000, 0x1000)  # starts where the first ends
    mb.reserve(0x800F_F000, 0x1000)  # ends where the first starts
    assert mb.reserved == [[0x800F_F000, 0x8010_2000]]


def test_memblock_reserve_merges_overlapping_regions() -> None:
    mb = _memblock()
    mb.reserve(0x8010_0000, 0x1000)
    mb.reserve(0x8030_0000, 0x1000)
    mb.reserve(0x8050_0000, 0x1000)
    assert len(mb.reserved) == 3
    mb.reserve(0x8010_0800, 0x200800)  # bridges the first two, not the third
    assert mb.reserved == [[0x8010_0000, 0x8030_1000], [0x8050_0000, 0x8050_1000]]
    mb.reserve(0x8000_0000, 0x10)  # disjoint: a new, sorted region
    assert mb.reserved[0] == [0x8000_0000, 0x8000_0010]
    assert mb.reserved == sorted(mb.reserved)


def test_memblock_zero_size_reserve_is_ignored() -> None:
    mb = _memblock()
    mb.reserve(0x8010_0000, 0)
    assert mb.reserved == []


def test_memblock_free_splits_a_reserved_region() -> None:
    mb = _memblock()
    mb.reserve(0x8010_0000, 0x3000)
    mb.free(0x8010_1000, 0x1000)
    assert mb.reserved == [[0x8010_0000, 0x8010_1000], [0x8010_2000, 0x8010_3000]]
    mb.free(0x8010_0000, 0x3000)
    assert mb.reserved == []


def test_is_reserved_range_needs_containment_in_one_merged_region() -> None:
    mb = _memblock()
    mb.reserve(0x8010_0000, 0x10000)
    mb.reserve(0x8011_0000, 0x10000)  # adjacent: merged into one region
    mb.reserve(0x8013_0000, 0x10000)  # a 64K gap before it
    assert mb.is_reserved_range(0x8010_0000, 0x10000)
    assert mb.is_reserved_range(0x8010_8000, 0x10000)  # spans the merge seam
    assert mb.is_reserved_range(0x8010_0000, 0x20000)
    assert not mb.is_reserved_range(0x8010_0000, 0x20001)
    assert not mb.is_reserved_range(0x800F_FFFF, 2)
    # Both ends are reserved but the gap between the two regions is not.
    assert not mb.is_reserved_range(0x8011_8000, 0x20000)
    assert not mb.is_reserved_range(0x8010_0000, 0x40000)
    assert not mb.is_reserved_range(0x8012_0000, 0x10000)
    assert mb.is_reserved_range(0x8013_0000, 0x10000)


def test_is_reserved_range_rejects_a_range_spanning_two_regions_even_if_both_touch() -> None:
    mb = _memblock()
    mb.reserve(0x8010_0000, 0x1000)
    mb.reserve(0x8010_2000, 0x1000)
    assert mb.overlaps_reserved(0x8010_0800, 0x2000)
    assert not mb.is_reserved_range(0x8010_0800, 0x2000)


def test_memblock_free_ranges_is_memory_minus_reserved() -> None:
    mb = Memblock([(0x1000_0000, 0x1100_0000), (0x2000_0000, 0x2010_0000)])
    mb.reserve(0x0F00_0000, 0x0100_1000)  # hangs off the bottom of bank 0
    mb.reserve(0x1080_0000, 0x1000)
    mb.reserve(0x2000_0000, 0x0010_0000)  # all of bank 1
    assert mb.free_ranges() == [(0x1000_1000, 0x1080_0000), (0x1080_1000, 0x1100_0000)]


def test_memblock_alloc_is_top_down_and_aligned() -> None:
    mb = Memblock([(0x1000_0000, 0x1100_0000)])
    mb.reserve(0x10FF_8000, 0x8000)  # the top 32K is taken
    addr = mb.alloc(0x10000, 0x10000)
    # the highest 64K-aligned block below the reservation
    assert addr == 0x10FE_0000
    assert mb.is_reserved_range(addr, 0x10000)
    assert mb.alloc(0x10000, 0x10000) == 0x10FD_0000
    # a smaller block fits the 32K hole left above the first one: top-down picks it
    assert mb.alloc(0x1800, 0x1000) == 0x10FF_6000


def test_memblock_alloc_skips_a_free_range_that_is_too_small() -> None:
    mb = Memblock([(0x1000_0000, 0x1100_0000)])
    mb.reserve(0x10F0_0000, 0x0010_0000)
    mb.reserve(0x10E0_0000, 0x000F_F000)  # leaves a 4K hole at 0x10EF_F000
    addr = mb.alloc(0x2000, 0x1000)
    assert addr == 0x10DF_E000


def test_memblock_alloc_out_of_memory() -> None:
    mb = Memblock([(0x1000_0000, 0x1001_0000)])
    with pytest.raises(OutOfMemory):
        mb.alloc(0x20000, 0x1000)


# -- BuddyAllocator ---------------------------------------------------------------------

_RAM = [(0x4000_0000, 0x4800_0000)]


def test_buddy_hands_out_the_lowest_blocks_first_with_free_to_tail() -> None:
    """v5.10+: boot memory queued at the tail, so allocations climb from the bottom."""
    b = BuddyAllocator(_RAM, to_tail=True)
    got = [b.alloc(_64K) for _ in range(4)]
    assert got == [0x4000_0000, 0x4001_0000, 0x4002_0000, 0x4003_0000]


def test_buddy_before_v5_10_hands_out_the_last_freed_block_first() -> None:
    b = BuddyAllocator(_RAM, to_tail=False)
    assert b.alloc(_64K) == 0x47C0_0000  # the head of the order-10 list: the top 4 MiB


def test_the_real_6_1_layout_from_the_measured_boot_allocations() -> None:
    """ftrace's groups and 210 single pages, then the ITS command queue, device and
    collection tables, the property table, the memreserve page and two pending tables
    land where the real 6.1 kernel put them (tests/data/realcheck)."""
    b = BuddyAllocator(_RAM, to_tail=True)
    for order in PROFILES["v6.1"].build.ftrace_groups:
        b.alloc(_4K << order)
    for _ in range(PROFILES["v6.1"].build.early_pages):
        b.alloc(_4K)
    tables = [b.alloc(_64K) for _ in range(4)]
    node = b.alloc(_4K)
    pend = [b.alloc(_64K) for _ in range(2)]
    assert tables == [0x4018_0000, 0x4019_0000, 0x401A_0000, 0x401B_0000]
    assert node == 0x4017_F000
    assert pend == [0x401C_0000, 0x401D_0000]


def test_ftrace_groups_follow_ftrace_allocate_records() -> None:
    """44279 records in 173 pages, 5 groups (the real log's ftrace lines)."""
    groups = PROFILES["v6.1"].build.ftrace_groups
    assert groups == (7, 5, 3, 2, 0)
    assert sum(1 << o for o in groups) == 173


def test_unmovable_allocations_steal_the_largest_movable_block() -> None:
    """__rmqueue_fallback(): the first unmovable allocation claims the first order-10
    block, not the small fragments below it (the DT boot's tables above the image)."""
    b = BuddyAllocator([(0x4000_0000, 0x4020_0000), (0x4221_0000, 0x4800_0000)])
    assert b.alloc(_64K) == 0x4240_0000
    assert b.pageblock_migratetype(0x4240_0000 >> 12) == MIGRATE_UNMOVABLE
    assert b.pageblock_migratetype(0x4000_0000 >> 12) == MIGRATE_MOVABLE
    assert b.alloc(_64K, mt=MIGRATE_MOVABLE) == 0x4221_0000


def test_buddy_merges_back_and_rejects_double_free() -> None:
    b = BuddyAllocator(_RAM)
    before = b.free_ranges()
    blocks = [b.alloc(_4K << o) for o in (0, 3, 4, 0, 9)]
    for addr, o in zip(blocks, (0, 3, 4, 0, 9), strict=True):
        b.free(addr, _4K << o)
    assert b.free_ranges() == before and b.free_bytes == 128 << 20
    with pytest.raises(ValueError, match="double free"):
        b.free(0x4000_0000, _4K)


def test_buddy_out_of_memory() -> None:
    b = BuddyAllocator([(0x4000_0000, 0x4001_0000)])
    b.alloc(_64K)
    with pytest.raises(OutOfMemory):
        b.alloc(_4K)


def test_take_splits_around_the_taken_range() -> None:
    b = BuddyAllocator([(0x1000_0000, 0x1010_0000)])
    b.take(0x1001_0000, 0x20000)
    assert b.free_ranges() == [(0x1000_0000, 0x1001_0000), (0x1003_0000, 0x1010_0000)]
    with pytest.raises(ValueError):
        b.take(0x1001_8000, _4K)


def test_first_deferred_pfn_is_one_section_in() -> None:
    """defer_init(): the UEFI machine counts the 64 MiB of flash first and still stops
    at 0x48000000; the 2 GiB capture kernel's window at 0xa8000000."""
    uefi = [(0x0400_0000, 0x0800_0000), (0x4000_0000, 0x8000_0000)]
    assert first_deferred_pfn(uefi, 0x0400_0000) == 0x48000
    kdump = [(0x0400_0000, 0x0800_0000), (0x9F80_0000, 0xAF80_0000)]
    assert first_deferred_pfn(kdump, 0x0400_0000) == 0xA8000
    assert first_deferred_pfn([(0x4000_0000, 0x4400_0000)], 0x4000_0000) is None


class BuddyMachine(RuleBasedStateMachine):
    """Random alloc/free/take sequences: blocks never overlap, are naturally aligned, lie
    in free memory, and free bytes are conserved; freeing everything restores the start."""

    blocks = Bundle("blocks")

    @initialize(tail=st.booleans())
    def start(self, tail: bool) -> None:
        self.initial = [(0x4000_0000, 0x4040_0000), (0x4060_0000, 0x40A3_0000)]
        self.b = BuddyAllocator(self.initial, to_tail=tail)
        self.start_free = self.b.free_ranges()
        self.live: dict[int, int] = {}

    @rule(target=blocks, order=st.integers(0, 6), mt=st.sampled_from([0, 1, 2]))
    def alloc(self, order: int, mt: int) -> tuple[int, int]:
        size = _4K << order
        try:
            addr = self.b.alloc(size, mt=mt)
        except OutOfMemory:
            return (0, 0)
        assert addr % size == 0
        assert _inside(addr, size, self.initial)
        assert all(a + s <= addr or addr + size <= a for a, s in self.live.items())
        self.live[addr] = size
        return (addr, size)

    @rule(block=consumes(blocks))
    def free(self, block: tuple[int, int]) -> None:
        addr, size = block
        if size and self.live.pop(addr, None) == size:
            self.b.free(addr, size)

    @invariant()
    def conserved(self) -> None:
        if hasattr(self, "b"):
            total = sum(e - s for s, e in self.start_free)
            assert self.b.free_bytes + sum(self.live.values()) == total
            assert sum(e - s for s, e in self.b.free_ranges()) == self.b.free_bytes

    def teardown(self) -> None:
        if hasattr(self, "b"):
            for addr, size in list(self.live.items()):
                self.b.free(addr, size)
            assert self.b.free_ranges() == self.start_free


def _inside(addr: int, size: int, ranges: list[tuple[int, int]]) -> bool:
    return any(s <= addr and addr + size <= e for s, e in ranges)


BuddyMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
TestBuddyMachine = BuddyMachine.TestCase


@given(st.integers(0, 1 << 22), st.integers(0, 1 << 14))
def test_chunks_are_the_largest_aligned_blocks(pfn: int, length: int) -> None:
    """The bulk split of a range equals splitting it block by block."""
    naive: list[tuple[int, int]] = []
    p, last = pfn, pfn + length
    while p < last:
        order = min(10, (p & -p).bit_length() - 1 if p else 10)
        while p + (1 << order) > last:
            order -= 1
        naive.append((p, order))
        p += 1 << order
    assert BuddyAllocator._chunks(pfn, pfn + length) == naive


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["head", "tail", "bulk", "del", "first"]), st.integers(0, 600)),
        max_size=400,
    )
)
def test_free_list_keeps_the_order_of_an_ordered_dict(ops: list[tuple[str, int]]) -> None:
    """FreeList against the OrderedDict it replaces (push at either end, bulk tail
    insertion, removal anywhere, the head), past the rebuilds of either side."""
    rebuild = mm._REBUILD
    mm._REBUILD = 2  # rebuild often
    try:
        _free_list_against_ordered_dict(ops)
    finally:
        mm._REBUILD = rebuild
    _free_list_against_ordered_dict(ops)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["head", "tail", "run", "del", "first", "has"]), st.integers(0, 600)
        ),
        max_size=300,
    )
)
def test_free_list_runs_keep_the_order_of_an_ordered_dict(ops: list[tuple[str, int]]) -> None:
    """Bulk insertions of ranges (runs, taken from the front, made into entries when a
    block elsewhere in them goes) against the OrderedDict, past the rebuilds."""
    rebuild = mm._REBUILD
    mm._REBUILD = 2
    try:
        _free_list_against_ordered_dict(ops)
    finally:
        mm._REBUILD = rebuild
    _free_list_against_ordered_dict(ops)


def _free_list_against_ordered_dict(ops: list[tuple[str, int]]) -> None:
    fl, ref = FreeList(), OrderedDict[int, None]()
    fresh = iter(range(10**6))
    for op, n in ops:
        if op in ("head", "tail"):
            pfn = next(fresh)
            fl.push(pfn, tail=op == "tail")
            ref[pfn] = None
            if op == "head":
                ref.move_to_end(pfn, last=False)
        elif op == "bulk":
            pfns = dict.fromkeys(next(fresh) for _ in range(n % 50))
            fl.extend(pfns)
            ref.update(pfns)
        elif op == "run":
            # a range, spaced as MAX_ORDER - 1 heads are: held as a run
            start = next(fresh)
            run = range(start, start + (n % 50) * 1024, 1024)
            fresh = iter(range(start + len(run) * 1024 + 1, 10**9))
            fl.extend(run)
            ref.update(dict.fromkeys(run))
        elif op == "has":
            assert (n in fl) == (n in ref)
        elif ref and op == "del":
            pfn = list(ref)[n % len(ref)]
            fl.remove(pfn)
            del ref[pfn]
        elif ref:
            assert fl.first() == next(iter(ref))
            fl.remove(fl.first())
            ref.popitem(last=False)
        assert len(fl) == len(ref)
    assert list(fl) == list(ref)


_BUDDY_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("alloc"), st.integers(0, 10), st.sampled_from([0, 1, 2])),
        st.tuples(st.just("free"), st.integers(0, 1 << 16), st.just(0)),
        st.tuples(st.just("take"), st.integers(0, 1 << 16), st.integers(0, 1 << 11)),
        st.tuples(st.just("hand_over"), st.integers(0, 7), st.just(0)),
    ),
    max_size=80,
)


@settings(max_examples=120, deadline=None)
@given(_BUDDY_OPS, st.booleans())
def test_bulk_runs_equal_the_reference(ops: list[tuple[str, int, int]], tail: bool) -> None:
    """BuddyAllocator.bulk_runs: memory handed over as runs of MAX_ORDER - 1 blocks gives
    every allocation, free list order, pageblock type and free range the reference path
    (an entry per block) gives, under random allocations, frees, takes and hand-overs."""
    # the deferred part of a zone: 8 ranges of 4 to 32 MiB with ragged ends
    bases = [0x1_0000_0000 + i * (64 << 20) for i in range(8)]
    deferred = [(b + 0x3000 * i, b + ((4 + 4 * i) << 20) + 0x5000) for i, b in enumerate(bases)]
    early = [(0x4000_0000, 0x4180_0000 + 0x7000)]
    allocators = []
    for bulk in (False, True):
        BuddyAllocator.bulk_runs = bulk
        try:
            allocators.append(BuddyAllocator(early, to_tail=tail))
        finally:
            BuddyAllocator.bulk_runs = True
    live: list[list[tuple[int, int]]] = [[], []]
    for op, a, b in ops:
        outcomes = []
        for bulk, (buddy, blocks) in enumerate(zip(allocators, live, strict=True)):
            BuddyAllocator.bulk_runs = bool(bulk)
            try:
                outcomes.append(_buddy_step(buddy, blocks, op, a, b, deferred))
            finally:
                BuddyAllocator.bulk_runs = True
        assert outcomes[0] == outcomes[1]
        ref, fast = allocators
        assert fast.free_ranges() == ref.free_ranges()
        assert fast.free_bytes == ref.free_bytes
        assert fast._pageblock == ref._pageblock
        assert [[list(lst) for lst in lists] for lists in fast._lists] == [
            [list(lst) for lst in lists] for lists in ref._lists
        ]


def _buddy_step(
    b: BuddyAllocator,
    live: list[tuple[int, int]],
    op: str,
    a: int,
    n: int,
    deferred: list[tuple[int, int]],
) -> object:
    if op == "alloc":
        try:
            addr = b.alloc(_4K << a, mt=n)
        except OutOfMemory:
            return None
        live.append((addr, _4K << a))
        return addr
    if op == "free":
        if not live:
            return None
        addr, size = live.pop(a % len(live))
        b.free(addr, size)
        return addr
    if op == "take":
        free = b.free_ranges()
        if not free:
            return None
        start, end = free[a % len(free)]
        pages = (end - start) >> 12
        first = (a >> 4) % pages
        count = 1 + n % min(pages - first, 1 << 11)
        b.take(start + (first << 12), count << 12)
        live.append((start + (first << 12), count << 12))
        return start + (first << 12), count
    start, end = deferred[a]
    if any(s < end and start < e for s, e in b.free_ranges()) or any(
        s < end and start < s + z for s, z in live
    ):
        return None  # handed over already
    b.free_range(start, end, to_tail=True)
    return start


@pytest.mark.parametrize("name", ["tx2-host-kexec", "qemu-uefi-kexec", "qemu-dt-kexec-memmin"])
def test_bulk_runs_leave_scenario_results_as_the_reference(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whole boots and kexecs (the deferred memory's hand-over, the page cache filling
    up, every table allocation) give the same result document without runs."""
    fast = run_scenario(load_builtin(name))
    monkeypatch.setattr(BuddyAllocator, "bulk_runs", False)
    assert run_scenario(load_builtin(name)) == fast
