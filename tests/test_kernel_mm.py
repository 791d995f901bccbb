"""The kernel's memory view: OwnershipMap, Memblock and the seeded PageAllocator."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    rule,
)

from gickexec.kernel.mm import Memblock, OutOfMemory, Owner, OwnershipMap, PageAllocator, Role

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


# -- PageAllocator ---------------------------------------------------------------------

_RAM = [(0x8000_0000, 0x8000_0000 + 64 * _2M), (0x8_8000_0000, 0x8_8000_0000 + 32 * _2M)]


def _inside(addr: int, size: int, ranges: list[tuple[int, int]]) -> bool:
    return any(s <= addr and addr + size <= e for s, e in ranges)


def test_page_allocator_blocks_are_naturally_aligned() -> None:
    pa = PageAllocator([(0x8000_1000, 0x8400_0000)], random.Random(7))
    for _ in range(50):
        assert pa.alloc(_64K) % _64K == 0
    for _ in range(50):
        assert pa.alloc(_4K) % _4K == 0
    for _ in range(10):
        assert pa.alloc(3 * _4K) % (4 * _4K) == 0  # rounded up to a power of two
    assert pa.alloc(_4K, align=_2M) % _2M == 0


def test_page_allocator_is_deterministic_for_a_seed() -> None:
    def run(seed: int) -> list[int]:
        pa = PageAllocator(_RAM, random.Random(seed))
        return [pa.alloc(size) for size in (_64K, _4K, _64K, _2M, _4K) * 4]

    assert run(11) == run(11)
    assert run(11) != run(12)


def test_page_allocator_seeds_spread_placement() -> None:
    firsts = {PageAllocator(_RAM, random.Random(seed)).alloc(_64K) for seed in range(20)}
    assert len(firsts) > 15


def test_page_allocator_allocations_stay_inside_free_ranges() -> None:
    pa = PageAllocator(_RAM, random.Random(3))
    got = [(pa.alloc(_64K), _64K) for _ in range(200)]
    for addr, size in got:
        assert _inside(addr, size, _RAM)
    spans = sorted((a, a + s) for a, s in got)
    for x, y in itertools.pairwise(spans):
        assert x[1] <= y[0]
    assert pa.free_bytes == sum(e - s for s, e in _RAM) - 200 * _64K


def test_page_allocator_free_merges_neighbours() -> None:
    pa = PageAllocator([(0x1000_0000, 0x1004_0000)], random.Random(0))
    pa.take(0x1001_0000, 0x20000)
    assert pa.free_ranges() == [(0x1000_0000, 0x1001_0000), (0x1003_0000, 0x1004_0000)]
    pa.free(0x1001_0000, 0x10000)  # merges with the left neighbour only
    assert pa.free_ranges() == [(0x1000_0000, 0x1002_0000), (0x1003_0000, 0x1004_0000)]
    pa.free(0x1002_0000, 0x10000)  # closes the gap: one range again
    assert pa.free_ranges() == [(0x1000_0000, 0x1004_0000)]


def test_page_allocator_double_free_raises() -> None:
    pa = PageAllocator([(0x1000_0000, 0x1010_0000)], random.Random(0))
    addr = pa.alloc(_64K)
    pa.free(addr, _64K)
    with pytest.raises(ValueError, match="double free"):
        pa.free(addr, _64K)
    with pytest.raises(ValueError, match="double free"):
        pa.free(0x1000_0000 + _4K, _4K)  # never allocated: still free
    assert pa.free_ranges() == [(0x1000_0000, 0x1010_0000)]


def test_page_allocator_take_of_used_memory_raises() -> None:
    pa = PageAllocator([(0x1000_0000, 0x1010_0000)], random.Random(0))
    pa.take(0x1000_0000, _64K)
    with pytest.raises(ValueError, match="not free"):
        pa.take(0x1000_8000, _64K)


def test_page_allocator_out_of_memory() -> None:
    pa = PageAllocator([(0x1000_1000, 0x1002_0000)], random.Random(0))
    assert pa.alloc(_64K) == 0x1001_0000  # the only aligned 64K block
    with pytest.raises(OutOfMemory):
        pa.alloc(_64K)


@pytest.mark.parametrize("fraction", [0.0, 0.3, 0.9, 1.0])
def test_fill_leaves_consistent_free_ranges(fraction: float) -> None:
    initial = [(0x8000_1000, 0x8000_0000 + 40 * _2M + 0x3000), (0x9000_0000, 0x9000_0000 + _2M)]
    pa = PageAllocator(initial, random.Random(5))
    before = pa.free_bytes
    taken = pa.fill(fraction, _2M)
    free = pa.free_ranges()
    chunks = [(a, a + s) for a, s in taken]
    for a, s in taken:
        assert s == _2M and a % _2M == 0
        assert _inside(a, s, initial)
    for c in chunks:
        assert not any(_overlap(c, f) for f in free)
    for x, y in itertools.pairwise(sorted(chunks)):
        assert x[1] <= y[0]
    for x, y in itertools.pairwise(free):
        assert x[1] <= y[0]
    assert pa.free_bytes + sum(s for _, s in taken) == before
    if fraction == 0.0:
        assert taken == []
    if fraction == 1.0:
        assert len(taken) == 40  # 39 aligned chunks in bank 0's range, 1 in bank 1
    # The allocator still works on what is left.
    if pa.free_bytes >= 2 * _64K:
        addr = pa.alloc(_4K)
        assert not any(_overlap((addr, addr + _4K), c) for c in chunks)


# -- stateful: alloc/free against a model ----------------------------------------------

_INITIAL = [(0x4000_3000, 0x4004_0000), (0x4010_0000, 0x4012_0000), (0x5000_0000, 0x5000_1000)]
_SIZES = [_4K, 2 * _4K, 3 * _4K, 0x8000, _64K]


class PageAllocatorMachine(RuleBasedStateMachine):
    """Random alloc/free sequences checked against a set of allocated intervals."""

    blocks = Bundle("blocks")

    def __init__(self) -> None:
        super().__init__()
        self.pa: PageAllocator | None = None
        self.allocated: set[tuple[int, int]] = set()
        self.total = sum(e - s for s, e in _INITIAL)

    @initialize(seed=st.integers(0, 2**32 - 1))
    def start(self, seed: int) -> None:
        self.pa = PageAllocator(_INITIAL, random.Random(seed))

    def _model_free(self) -> list[tuple[int, int]]:
        """Initial ranges minus allocated intervals, computed from the model alone."""
        out: list[tuple[int, int]] = []
        for s, e in _INITIAL:
            cursor = s
            for a, b in sorted(self.allocated):
                if b <= s or a >= e:
                    continue
                if a > cursor:
                    out.append((cursor, a))
                cursor = max(cursor, b)
            if cursor < e:
                out.append((cursor, e))
        return out

    @rule(target=blocks, size=st.sampled_from(_SIZES))
    def alloc(self, size: int) -> tuple[int, int] | None:
        assert self.pa is not None
        align = 1 << max(12, (size - 1).bit_length())
        try:
            addr = self.pa.alloc(size)
        except OutOfMemory:
            # Only when the model agrees no aligned block of that size is free.
            for s, e in self._model_free():
                first = (s + align - 1) & ~(align - 1)
                assert first + size > e
            return None
        assert addr % align == 0
        assert _inside(addr, size, _INITIAL)
        for other in self.allocated:
            assert not _overlap((addr, addr + size), other)
        self.allocated.add((addr, addr + size))
        return (addr, addr + size)

    @rule(block=consumes(blocks))
    def free(self, block: tuple[int, int] | None) -> None:
        assert self.pa is not None
        if block is None:
            return
        self.pa.free(block[0], block[1] - block[0])
        self.allocated.remove(block)
        with pytest.raises(ValueError, match="double free"):
            self.pa.free(block[0], block[1] - block[0])

    @rule(block=blocks)
    def taking_allocated_memory_raises(self, block: tuple[int, int] | None) -> None:
        assert self.pa is not None
        if block is None or block not in self.allocated:
            return
        with pytest.raises(ValueError, match="not free"):
            self.pa.take(block[0], block[1] - block[0])

    @invariant()
    def bytes_are_conserved(self) -> None:
        if self.pa is None:
            return
        used = sum(b - a for a, b in self.allocated)
        assert self.pa.free_bytes + used == self.total

    @invariant()
    def free_ranges_match_the_model(self) -> None:
        if self.pa is None:
            return
        assert self.pa.free_ranges() == self._model_free()


PageAllocatorMachine.TestCase.settings = settings(
    max_examples=60, stateful_step_count=30, deadline=None
)
TestPageAllocatorMachine = PageAllocatorMachine.TestCase
