"""A kernel generation's view of memory: memblock, the page allocator, and ownership.

* :class:`Memblock` models the early allocator: ``memory`` and ``reserved`` region lists,
  ``memblock_reserve()`` with merging, top-down ``memblock_alloc()`` (the default on
  arm64), and the containment test ``gic_check_reserved_range()`` relies on.
* :class:`BuddyAllocator` is the page allocator after ``mm_init``: free lists per order and
  migratetype, filled the way ``memblock_free_all()`` fills them and split, stolen and
  merged the way ``mm/page_alloc.c`` does, so a table lands where the real allocator puts
  it (no randomness: the same boot gives the same addresses).
* :class:`OwnershipMap` is the kernel's belief about every byte of RAM (which GIC table,
  which allocation, reserved, or free), used to judge GIC writes.
"""

from __future__ import annotations

import bisect
import operator
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

__all__ = [
    "MIGRATE_MOVABLE",
    "MIGRATE_RECLAIMABLE",
    "MIGRATE_UNMOVABLE",
    "SEG_DTB",
    "SEG_IMAGE",
    "SEG_INITRD",
    "BuddyAllocator",
    "FreeList",
    "KernelFault",
    "Memblock",
    "OutOfMemory",
    "Owner",
    "OwnershipMap",
    "Role",
    "first_deferred_pfn",
    "free_ranges",
    "highest_fit",
]

_64K = 0x10000
#: sizeof(struct memblock_region): base, size, flags, nid
MEMBLOCK_REGION_BYTES = 24


class OutOfMemory(Exception):
    """An allocation could not be satisfied (the kernel model reports -ENOMEM)."""


class KernelFault(Exception):
    """The modelled kernel dies (oops, panic or hang); :class:`~gickexec.kernel.kernel.Kernel`
    turns it into data: its log lines and a one-line cause.  Never a model bug."""

    def __init__(self, cause: str, lines: list[str]) -> None:
        super().__init__(cause)
        self.cause = cause
        self.lines = lines


@dataclass(frozen=True, slots=True)
class Role:
    """What a GIC table in memory is for: ``kind`` is "pend", "prop" or "its"; ``index``
    is the CPU (pend) or ITS number."""

    kind: str
    index: int = 0


#: Role kinds of a kernel's boot segments (image, initramfs, device tree): no GIC agent
#: may write there, and a write into the running image or an unpacked initrd is fatal.
SEG_IMAGE = "image"
SEG_INITRD = "initrd"
SEG_DTB = "dtb"


@dataclass(frozen=True, slots=True)
class Owner:
    """The kernel's label for a range of memory; ``role`` marks the GIC's own tables."""

    label: str
    role: Role | None = None


class OwnershipMap:
    """Disjoint labelled intervals over physical memory; unlabelled memory is free."""

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        self._owners: list[Owner] = []
        #: called at every ``assign``: who caches judgements made from the map forgets them
        self.on_change: list[Callable[[], None]] = []

    def __len__(self) -> int:
        return len(self._starts)

    def assign(self, start: int, size: int, owner: Owner | None) -> None:
        """Label ``[start, start + size)`` (None frees it), splitting what it overlaps."""
        if size <= 0:
            return
        for forget in self.on_change:
            forget()
        end = start + size
        i = bisect.bisect_right(self._ends, start)
        if i == len(self._starts) or self._starts[i] >= end:
            # Nothing overlaps (a fresh allocation, every claim at boot): an insertion.
            if owner is not None:
                self._starts.insert(i, start)
                self._ends.insert(i, end)
                self._owners.insert(i, owner)
            return
        if self._starts[i] == start and self._ends[i] == end:
            # Exactly one interval, exactly this range (a table claimed again under a new
            # label, a block freed whole: two per CPU brought up): relabelled or dropped
            # in place, what the splitting below gives without its lists.
            if owner is None:
                del self._starts[i], self._ends[i], self._owners[i]
            else:
                self._owners[i] = owner
            return
        j = i
        keep_left: tuple[int, int, Owner] | None = None
        keep_right: tuple[int, int, Owner] | None = None
        while j < len(self._starts) and self._starts[j] < end:
            s, e, o = self._starts[j], self._ends[j], self._owners[j]
            if s < start:
                keep_left = (s, start, o)
            if e > end:
                keep_right = (end, e, o)
            j += 1
        new: list[tuple[int, int, Owner]] = []
        if keep_left:
            new.append(keep_left)
        if owner is not None and size > 0:
            new.append((start, end, owner))
        if keep_right:
            new.append(keep_right)
        self._starts[i:j] = [n[0] for n in new]
        self._ends[i:j] = [n[1] for n in new]
        self._owners[i:j] = [n[2] for n in new]

    def owner_at(self, addr: int) -> Owner | None:
        i = bisect.bisect_right(self._starts, addr) - 1
        if i >= 0 and addr < self._ends[i]:
            return self._owners[i]
        return None

    def range_of(self, addr: int) -> tuple[int, int] | None:
        i = bisect.bisect_right(self._starts, addr) - 1
        if i >= 0 and addr < self._ends[i]:
            return self._starts[i], self._ends[i]
        return None

    def items(self) -> list[tuple[int, int, Owner]]:
        return list(zip(self._starts, self._ends, self._owners, strict=True))


def _ragged(start: int, stop: int) -> list[tuple[int, int]]:
    """``[start, stop)`` (page frames, within one MAX_ORDER - 1 block) as the largest
    naturally aligned blocks, in address order: (head pfn, order)."""
    top = MAX_ORDER - 1
    out = []
    while start < stop:
        order = min(top, (start & -start).bit_length() - 1 if start else top)
        while start + (1 << order) > stop:
            order -= 1
        out.append((start, order))
        start += 1 << order
    return out


def free_ranges(
    ram: Iterable[tuple[int, int]], used: Iterable[tuple[int, int]]
) -> list[tuple[int, int]]:
    """``[start, end)`` ranges of ``ram`` not covered by any ``(addr, size)`` in ``used``."""
    cuts = sorted((a, a + s) for a, s in used if s > 0)
    out: list[tuple[int, int]] = []
    for start, end in sorted(ram):
        cursor = start
        for cs, ce in cuts:
            if ce <= cursor or cs >= end:
                continue
            if cs > cursor:
                out.append((cursor, cs))
            cursor = max(cursor, ce)
        if cursor < end:
            out.append((cursor, end))
    return out


def highest_fit(
    free: Sequence[tuple[int, int]], size: int, align: int, lo: int = 0, hi: int | None = None
) -> int | None:
    """The highest ``align``-aligned ``size``-byte block of the sorted ``[start, end)``
    ranges ``free`` within ``[lo, hi)``, or None."""
    for start, end in reversed(free):
        base = ((end if hi is None else min(end, hi)) - size) & ~(align - 1)
        if base >= max(start, lo):
            return base
    return None


#: a memblock region's start and end (``key=`` of the bisections over ``reserved``)
_START = operator.itemgetter(0)
_END = operator.itemgetter(1)


class Memblock:
    """``struct memblock``: memory and reserved regions, merged as the kernel merges them."""

    def __init__(self, memory: list[tuple[int, int]], max_reserved: int | None = None) -> None:
        self.memory = sorted(memory)
        self.reserved: list[list[int]] = []  # merged [start, end)
        #: ``[start, end)`` marked MEMBLOCK_NOMAP (firmware runtime memory): never free
        self.nomap: list[tuple[int, int]] = []
        #: ``memblock.reserved.max``: the static ``INIT_MEMBLOCK_RESERVED_REGIONS`` array
        #: until it is doubled (None: unbounded)
        self.max_reserved = max_reserved
        #: ``memblock_can_resize``: set by ``memblock_allow_resize()`` (arm64: paging_init)
        self.can_resize = False
        #: reservations refused because the static array was full
        self.dropped: list[tuple[int, int]] = []
        #: ``(addr, size)`` of each array ``memblock_double_array()`` allocated
        self.resized: list[tuple[int, int]] = []

    def reserve(self, base: int, size: int) -> int:
        """``memblock_reserve()``; adjacent and overlapping regions merge.  Returns 0, or
        -ENOMEM when a new region does not fit the array and ``memblock_double_array()``
        may not resize it yet: ``memblock_double_array()`` returns -1 before
        ``memblock_allow_resize()`` (mm/memblock.c, the same in every tree read from 4.19.1
        to 6.6.9; none of them panics there).  Once resizing is allowed the array doubles
        into memory found top-down among what is not reserved *yet*."""
        if size <= 0:
            return 0
        if self.max_reserved is not None and not self.is_reserved_range(base, size):
            while len(self.reserved) + 1 > self.max_reserved:
                if not self.can_resize:
                    self.dropped.append((base, size))
                    return -12
                self._double_array()
        self._insert(base, size)
        return 0

    def _double_array(self) -> None:
        assert self.max_reserved is not None
        new_bytes = 2 * self.max_reserved * MEMBLOCK_REGION_BYTES
        new_bytes = (new_bytes + 0xFFF) & ~0xFFF
        addr = self._find_top_down(new_bytes, 0x1000)
        self.max_reserved *= 2
        self._insert(addr, new_bytes)
        self.resized.append((addr, new_bytes))

    def _insert(self, base: int, size: int) -> None:
        start, end = base, base + size
        # key=: no list of ends built per call (a reservation per CPU brought up)
        i = bisect.bisect_left(self.reserved, start, key=_END)
        j = i
        while j < len(self.reserved) and self.reserved[j][0] <= end:
            start = min(start, self.reserved[j][0])
            end = max(end, self.reserved[j][1])
            j += 1
        self.reserved[i:j] = [[start, end]]

    def free(self, base: int, size: int) -> None:
        """``memblock_free()`` of part of a reserved region."""
        end = base + size
        out: list[list[int]] = []
        for s, e in self.reserved:
            if e <= base or s >= end:
                out.append([s, e])
                continue
            if s < base:
                out.append([s, base])
            if e > end:
                out.append([end, e])
        self.reserved = out

    def is_reserved_range(self, addr: int, size: int) -> bool:
        """Whether ``[addr, addr + size)`` lies inside one reserved region.

        This is the test of ``gic_check_reserved_range()``: containment in a single
        (merged) ``for_each_reserved_mem_range`` region (drivers/irqchip/irq-gic-v3-its.c,
        v6.1).
        """
        end = addr + size
        # key=: no list of starts built per call (called once per CPU at boot), and a C
        # callable, not a lambda called per step.
        i = bisect.bisect_right(self.reserved, addr, key=_START) - 1
        return i >= 0 and self.reserved[i][0] <= addr and end <= self.reserved[i][1]

    def overlaps_reserved(self, addr: int, size: int) -> bool:
        end = addr + size
        return any(s < end and addr < e for s, e in self.reserved)

    def free_ranges(self) -> list[tuple[int, int]]:
        """Memory minus reserved: what ``mm_init`` hands to the page allocator."""
        return free_ranges(
            self.memory, [(s, e - s) for s, e in (*map(tuple, self.reserved), *self.nomap)]
        )

    def _find_top_down(self, size: int, align: int, limit: int | None = None) -> int:
        """``memblock_find_in_range()``: the highest fitting aligned free address."""
        addr = highest_fit(self.free_ranges(), size, align, 0, limit)
        if addr is None:
            raise OutOfMemory(f"memblock: no {size:#x} bytes aligned {align:#x}")
        return addr

    def alloc(self, size: int, align: int, limit: int | None = None) -> int:
        """``memblock_alloc()``: top-down, the highest fitting aligned address (below
        ``limit`` when given, as ``memblock_find_in_range(0, limit, ...)``)."""
        addr = self._find_top_down(size, align, limit)
        self.reserve(addr, size)
        return addr



PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
#: MAX_ORDER with 4 KiB pages (include/linux/mmzone.h, v4.19-v6.3): orders 0..10
MAX_ORDER = 11
#: pageblock_order = HUGETLB_PAGE_ORDER on arm64 with 4 KiB pages (2 MiB pageblocks)
PAGEBLOCK_ORDER = 9
#: PAGES_PER_SECTION with SECTION_SIZE_BITS = 27 (arm64, 4 KiB pages, v5.12+; 30 before,
#: arch/arm64/include/asm/sparsemem.h) -- the deferred-init granule below
PAGES_PER_SECTION = 1 << (27 - PAGE_SHIFT)

MIGRATE_UNMOVABLE = 0
MIGRATE_MOVABLE = 1
MIGRATE_RECLAIMABLE = 2
#: ``fallbacks[]`` in mm/page_alloc.c: where each type steals from, in order
_FALLBACKS = {
    MIGRATE_UNMOVABLE: (MIGRATE_RECLAIMABLE, MIGRATE_MOVABLE),
    MIGRATE_MOVABLE: (MIGRATE_RECLAIMABLE, MIGRATE_UNMOVABLE),
    MIGRATE_RECLAIMABLE: (MIGRATE_UNMOVABLE, MIGRATE_MOVABLE),
}


#: Deletions from one side of a free list before that side is rebuilt (see FreeList)
_REBUILD = 256


class _Run:
    """The blocks of one bulk insertion (``FreeList.extend`` of a ``range``) not yet
    taken, in list order: held as the range of their head pfns, made one at a time as
    they are taken from its front."""

    __slots__ = ("blocks",)

    def __init__(self, blocks: range) -> None:
        self.blocks = blocks


class FreeList:
    """One ``free_area[order].free_list[migratetype]``: block head pfns in list order,
    with insertion at either end, removal anywhere and a look at the head in O(1), and a
    bulk insertion at the tail in O(1).

    (An OrderedDict, which this replaces, allocates a node per entry: handing a 64 GiB
    zone's deferred memory over, 16 Ki blocks, cost 6 ms of every boot.)  Entries pushed
    at the head live in ``_front`` in push order (the list starts with the last of them),
    the others in ``_back`` in list order.  A deleted dict entry leaves a hole that
    iteration from either end steps over, so a side is rebuilt after ``_REBUILD``
    deletions: looking at the head stays O(1), amortised.  A bulk insertion of a
    ``range`` is one ``_Run`` entry of ``_back`` (a dict of 16 Ki pfns spaced 1024
    apart, which share their low bits and so collide in the hash, cost 4 ms of every
    boot on a 64 GiB zone): allocations take its blocks from the front in O(1); the
    removal of any other of its blocks first makes the run into entries in its place."""

    __slots__ = ("_back", "_back_holes", "_front", "_front_holes", "_runs")

    def __init__(self) -> None:
        self._front: dict[int, None] = {}
        self._back: dict[int | _Run, None] = {}
        self._runs: list[_Run] = []  # the _Run entries of _back, none of them empty
        self._front_holes = self._back_holes = 0

    def __len__(self) -> int:
        return len(self._front) + len(self._back) + sum(len(r.blocks) - 1 for r in self._runs)

    def __bool__(self) -> bool:
        return bool(self._front or self._back)

    def __iter__(self) -> Iterator[int]:
        """The pfns in list order (head first)."""
        yield from reversed(self._front)
        for entry in self._back:
            if isinstance(entry, _Run):
                yield from entry.blocks
            else:
                yield entry

    def __contains__(self, pfn: int) -> bool:
        return pfn in self._front or pfn in self._back or self._run_of(pfn) is not None

    def first(self) -> int:
        """The head of a non-empty list."""
        if self._front:
            return next(reversed(self._front))
        entry = next(iter(self._back))
        return entry.blocks[0] if isinstance(entry, _Run) else entry

    def push(self, pfn: int, *, tail: bool) -> None:
        """``list_add`` (the head) or ``list_add_tail`` of a pfn not on the list."""
        if tail:
            self._back[pfn] = None
        else:
            self._front[pfn] = None

    def extend(self, pfns: Iterable[int]) -> None:
        """``list_add_tail`` of each of ``pfns`` (none on the list), in order; a
        ``range`` is held as a run, without an entry per pfn."""
        if not isinstance(pfns, range):
            self._back.update(dict.fromkeys(pfns))
        elif pfns:
            run = _Run(pfns)
            self._back[run] = None
            self._runs.append(run)

    def remove(self, pfn: int) -> None:
        """``list_del`` of a pfn on the list."""
        if pfn in self._front:
            del self._front[pfn]
            self._front_holes += 1
            if self._front_holes > _REBUILD:
                self._front, self._front_holes = dict.fromkeys(self._front), 0
            return
        try:
            del self._back[pfn]
        except KeyError:
            if not self._take_from_run(pfn):
                return
            del self._back[pfn]
        self._back_holes += 1
        if self._back_holes > _REBUILD:
            self._back, self._back_holes = dict.fromkeys(self._back), 0

    def _run_of(self, pfn: int) -> _Run | None:
        for run in self._runs:  # a loop, not a generator: asked at every free
            if pfn in run.blocks:
                return run
        return None

    def _take_from_run(self, pfn: int) -> bool:
        """Remove ``pfn`` from the run that holds it, if it is the run's first block;
        otherwise make that run into entries of ``_back`` in its place and return True
        (the caller deletes the entry).  KeyError when no run holds ``pfn``."""
        run = self._run_of(pfn)
        if run is None:
            raise KeyError(pfn)
        if pfn == run.blocks[0]:
            run.blocks = run.blocks[1:]
            if not run.blocks:
                self._runs.remove(run)
                del self._back[run]
                self._back_holes += 1
            return False
        entries = list(self._back)
        at = entries.index(run)
        back: dict[int | _Run, None] = dict.fromkeys(entries[:at])
        back.update(dict.fromkeys(run.blocks))
        back.update(dict.fromkeys(entries[at + 1 :]))
        self._back, self._back_holes = back, 0
        self._runs.remove(run)
        return True


def first_deferred_pfn(regions: Sequence[tuple[int, int]], zone_start: int) -> int | None:
    """``defer_init()`` (mm/page_alloc.c, v4.17+, "We start only with one section of
    pages"): walking the last zone's memory ``regions`` (``[start, end)`` byte ranges, in
    order, from ``zone_start``), struct pages are initialised until more than
    PAGES_PER_SECTION have been and a section boundary is reached; the rest is deferred to
    ``page_alloc_init_late()``.  Returns that first deferred pfn, or None (all early)."""
    seen = 0
    for start, end in sorted(regions):
        s, e = max(start, zone_start) >> PAGE_SHIFT, end >> PAGE_SHIFT
        if s >= e:
            continue
        # first pfn in [s, e) at which seen > PAGES_PER_SECTION and section aligned
        need = s + max(0, PAGES_PER_SECTION + 1 - seen - 1)
        cand = -(-need // PAGES_PER_SECTION) * PAGES_PER_SECTION
        if cand < e:
            return cand
        seen += e - s
    return None


class BuddyAllocator:
    """One zone's buddy allocator (``struct zone`` free_area[], mm/page_alloc.c).

    * Freeing: ``__free_pages_memory()`` hands each free range over in the largest
      naturally aligned chunks up to MAX_ORDER - 1; ``__free_one_page()`` merges buddies.
      Since Linux commit 7fef431be9c9 ("mm/page_alloc: place pages to tail in
      __free_pages_core()") (v5.10) memory handed over at boot goes to the *tail* of the
      free lists (``to_tail``), so the lowest blocks are handed out first; before, to the
      head (the last freed, highest, first).  Other frees go to the head unless
      ``buddy_merge_likely()``.
    * Allocation: ``__rmqueue_smallest()`` takes the head of the smallest non-empty list
      of the wanted migratetype and ``expand()`` puts the upper halves at the heads of the
      lower lists.  With none, ``__rmqueue_fallback()`` steals the *largest* block of
      another type (``fallbacks[]``) and, for a block of at least a pageblock, converts
      its pageblocks (``steal_suitable_fallback()``).  All boot memory starts MOVABLE
      (``memmap_init_range()``), so the first unmovable allocation claims the lowest free
      4 MiB block and the next ones are carved from it upwards.
    * Per-CPU page lists are not modelled: before ``setup_per_cpu_pageset()`` (after
      ``init_IRQ()``) the boot pageset has batch 1 and high 0, so every allocation the GIC
      driver makes at boot reaches the buddy lists directly; later ones are treated the
      same way (model choice).
    """

    #: False: the reference path, memory handed over in bulk gets an entry per
    #: MAX_ORDER - 1 block in its free list and in ``_heads`` (no runs)
    bulk_runs = True

    def __init__(self, free: Iterable[tuple[int, int]], *, to_tail: bool = True) -> None:
        self._lists: list[list[FreeList]] = [
            [FreeList() for _ in range(3)] for _ in range(MAX_ORDER)
        ]
        #: head pfn of every free block -> (order, migratetype of the list it is on),
        #: except the blocks the MAX_ORDER - 1 MOVABLE list (``_bulk``) got in runs,
        #: which stay out when a run is made into entries
        self._heads: dict[int, tuple[int, int]] = {}
        self._bulk = self._lists[MAX_ORDER - 1][MIGRATE_MOVABLE]
        #: pageblock index -> migratetype, where it is not MOVABLE
        self._pageblock: dict[int, int] = {}
        self._free_pages = 0
        for start, end in sorted(free):
            self.free_range(start, end, to_tail=to_tail)

    # -- bookkeeping --------------------------------------------------------------------

    @property
    def free_bytes(self) -> int:
        return self._free_pages << PAGE_SHIFT

    def free_ranges(self) -> list[tuple[int, int]]:
        """Free memory as sorted, merged ``[start, end)`` byte ranges."""
        out: list[tuple[int, int]] = []
        blocks = [(pfn, order) for pfn, (order, _) in self._heads.items()]
        blocks += [(pfn, MAX_ORDER - 1) for pfn in self._bulk if pfn not in self._heads]
        for pfn, order in sorted(blocks):
            start, end = pfn << PAGE_SHIFT, (pfn + (1 << order)) << PAGE_SHIFT
            if out and out[-1][1] == start:
                out[-1] = (out[-1][0], end)
            else:
                out.append((start, end))
        return out

    def pageblock_migratetype(self, pfn: int) -> int:
        return self._pageblock.get(pfn >> PAGEBLOCK_ORDER, MIGRATE_MOVABLE)

    def _add(self, pfn: int, order: int, mt: int, tail: bool) -> None:
        self._lists[order][mt].push(pfn, tail=tail)
        self._heads[pfn] = (order, mt)

    def _del(self, pfn: int) -> tuple[int, int]:
        hit = self._heads.pop(pfn, None)
        # not in _heads: a block of a run on _bulk (KeyError from there if it is not)
        order, mt = (MAX_ORDER - 1, MIGRATE_MOVABLE) if hit is None else hit
        self._lists[order][mt].remove(pfn)
        return order, mt

    # -- freeing ------------------------------------------------------------------------

    def free_range(self, start: int, end: int, *, to_tail: bool = False) -> None:
        """``__free_pages_memory()``: give back the pages of ``[start, end)`` (rounded
        inwards to pages) in the largest aligned chunks."""
        top = MAX_ORDER - 1
        head, body, tail = self._split(-(-start >> PAGE_SHIFT), end >> PAGE_SHIFT)
        for pfn, order in head:
            self.free_block(pfn, order, to_tail=to_tail)
        # MAX_ORDER - 1 blocks have no buddy to merge with: queue them directly, as one
        # run where every pageblock among them is still MOVABLE (memory handed over at
        # boot).  Their heads stay out of _heads: no lookup there is of a free
        # MAX_ORDER - 1 block but _containing()'s and _del()'s, which ask _bulk too.
        pb_lo, pb_hi = body.start >> PAGEBLOCK_ORDER, body.stop >> PAGEBLOCK_ORDER
        plain = to_tail and not any(pb_lo <= pb < pb_hi for pb in self._pageblock)
        if plain and body:
            if self.bulk_runs:
                self._bulk.extend(body)
            else:
                blocks = dict.fromkeys(body)
                self._bulk.extend(blocks)
                self._heads.update(dict.fromkeys(blocks, (top, MIGRATE_MOVABLE)))
            self._free_pages += len(body) << top
        else:
            for pfn in body:
                mt = self._pageblock.get(pfn >> PAGEBLOCK_ORDER, MIGRATE_MOVABLE)
                self._add(pfn, top, mt, to_tail)
                self._free_pages += 1 << top
        for pfn, order in tail:
            self.free_block(pfn, order, to_tail=to_tail)

    def free_block(self, pfn: int, order: int, *, to_tail: bool = False) -> None:
        """``__free_one_page()``: merge with free buddies, then queue the result."""
        mt = self.pageblock_migratetype(pfn)
        self._free_pages += 1 << order
        while order < MAX_ORDER - 1:
            buddy = pfn ^ (1 << order)
            if self._heads.get(buddy, (-1, 0))[0] != order:
                break
            self._del(buddy)
            pfn &= buddy
            order += 1
        tail = to_tail or self._buddy_merge_likely(pfn, order)
        self._add(pfn, order, mt, tail)

    def _buddy_merge_likely(self, pfn: int, order: int) -> bool:
        """``buddy_merge_likely()``: is the buddy of the next-higher block free?"""
        if order >= MAX_ORDER - 2:
            return False
        higher = pfn & ~((1 << (order + 1)) - 1)
        higher_buddy = higher ^ (1 << (order + 1))
        return self._heads.get(higher_buddy, (-1, 0))[0] == order + 1

    def free(self, addr: int, size: int) -> None:
        """``free_pages_exact()``: give ``[addr, addr + size)`` back (page granular)."""
        chunks = self._chunks(addr >> PAGE_SHIFT, -(-(addr + size) >> PAGE_SHIFT))
        for p, _ in chunks:
            if self._containing(p) is not None:
                raise ValueError(f"double free in [{addr:#x}, {addr + size:#x})")
        for p, o in chunks:
            self.free_block(p, o)

    @staticmethod
    def _split(pfn: int, last: int) -> tuple[list[tuple[int, int]], range, list[tuple[int, int]]]:
        """``[pfn, last)`` as the largest naturally aligned blocks: the ragged blocks
        below the first MAX_ORDER - 1 boundary, the run of MAX_ORDER - 1 blocks (their
        head pfns), and the ragged blocks after it."""
        step = 1 << (MAX_ORDER - 1)
        aligned = min(last, -(-pfn // step) * step)
        body = aligned + max(0, last - aligned) // step * step
        return _ragged(pfn, aligned), range(aligned, body, step), _ragged(body, last)

    @classmethod
    def _chunks(cls, pfn: int, last: int) -> list[tuple[int, int]]:
        """``[pfn, last)`` as the largest naturally aligned blocks, in address order."""
        head, body, tail = cls._split(pfn, last)
        return [*head, *((p, MAX_ORDER - 1) for p in body), *tail]

    def _containing(self, pfn: int) -> int | None:
        """Head pfn of the free block that contains ``pfn``, or None."""
        for o in range(MAX_ORDER):
            head = pfn & ~((1 << o) - 1)
            if self._heads.get(head, (-1, 0))[0] == o:
                return head
        head = pfn & ~((1 << (MAX_ORDER - 1)) - 1)
        return head if head in self._bulk else None

    # -- allocation ---------------------------------------------------------------------

    def alloc(self, size: int, align: int | None = None, mt: int = MIGRATE_UNMOVABLE) -> int:
        """``alloc_pages()`` of the order that holds ``size`` bytes: the block's physical
        address (naturally aligned, so ``align`` up to the block size is implied)."""
        order = max(0, (max(size, 1) - 1).bit_length() - PAGE_SHIFT)
        if align is not None and align > (PAGE_SIZE << order):
            order = align.bit_length() - 1 - PAGE_SHIFT
        if order >= MAX_ORDER:
            raise OutOfMemory(f"{size:#x} bytes is beyond MAX_ORDER")
        pfn = self._rmqueue_smallest(order, mt)
        if pfn is None and self._rmqueue_fallback(order, mt):
            pfn = self._rmqueue_smallest(order, mt)
        if pfn is None:
            raise OutOfMemory(f"no free order-{order} block")
        self._free_pages -= 1 << order
        return pfn << PAGE_SHIFT

    def _rmqueue_smallest(self, order: int, mt: int) -> int | None:
        for current in range(order, MAX_ORDER):
            lst = self._lists[current][mt]
            if lst:
                pfn = lst.first()
                self._del(pfn)
                self._expand(pfn, order, current, mt)
                return pfn
        return None

    def _expand(self, pfn: int, low: int, high: int, mt: int) -> None:
        while high > low:
            high -= 1
            self._add(pfn + (1 << high), high, mt, tail=False)

    def _rmqueue_fallback(self, order: int, start_mt: int) -> bool:
        """Steal from another migratetype, largest block first; True if something moved."""
        for current in range(MAX_ORDER - 1, order - 1, -1):
            for fmt in _FALLBACKS[start_mt]:
                lst = self._lists[current][fmt]
                if not lst:
                    continue
                if not self._can_steal(current, start_mt) and current > order:
                    return self._steal_smallest(order, start_mt)
                self._steal(lst.first(), current, start_mt, whole=True)
                return True
        return False

    def _steal_smallest(self, order: int, start_mt: int) -> bool:
        for current in range(order, MAX_ORDER):
            for fmt in _FALLBACKS[start_mt]:
                lst = self._lists[current][fmt]
                if lst:
                    self._steal(lst.first(), current, start_mt, whole=False)
                    return True
        return False

    @staticmethod
    def _can_steal(order: int, start_mt: int) -> bool:
        """``can_steal_fallback()``."""
        return (
            order >= PAGEBLOCK_ORDER // 2
            or start_mt in (MIGRATE_RECLAIMABLE, MIGRATE_UNMOVABLE)
        )

    def _steal(self, pfn: int, order: int, start_mt: int, *, whole: bool) -> None:
        """``steal_suitable_fallback()``: a block of a pageblock or more changes type
        whole; a smaller one takes its pageblock along when most of it is free."""
        if order >= PAGEBLOCK_ORDER:
            for pb in range(pfn >> PAGEBLOCK_ORDER, (pfn + (1 << order)) >> PAGEBLOCK_ORDER):
                self._pageblock[pb] = start_mt
            self._del(pfn)
            self._add(pfn, order, start_mt, tail=True)
            return
        block = pfn >> PAGEBLOCK_ORDER << PAGEBLOCK_ORDER
        free_here = [
            p for p in self._heads if block <= p < block + (1 << PAGEBLOCK_ORDER)
        ] if whole else [pfn]
        if whole and sum(1 << self._heads[p][0] for p in free_here) >= 1 << (PAGEBLOCK_ORDER - 1):
            self._pageblock[block >> PAGEBLOCK_ORDER] = start_mt
        else:
            free_here = [pfn]
        for p in free_here:
            o, _ = self._del(p)
            self._add(p, o, start_mt, tail=True)

    def take(self, addr: int, size: int) -> None:
        """Remove ``[addr, addr + size)`` from the free lists (it must be free): what an
        allocation elsewhere in the kernel took, splitting the blocks around it."""
        pfn, last = addr >> PAGE_SHIFT, -(-(addr + size) >> PAGE_SHIFT)
        while pfn < last:
            head = self._containing(pfn)
            if head is None:
                raise ValueError(f"[{addr:#x}, {addr + size:#x}) is not free")
            order, mt = self._del(head)
            self._free_pages -= 1 << order
            end = head + (1 << order)
            for p, o in self._chunks(head, pfn):
                self._add(p, o, mt, tail=False)
                self._free_pages += 1 << o
            cut = min(end, last)
            for p, o in self._chunks(cut, end):
                self._add(p, o, mt, tail=False)
                self._free_pages += 1 << o
            pfn = cut

    def fill(self, fraction: float, chunk: int) -> list[tuple[int, int]]:
        """Allocate about ``fraction`` of free memory as movable ``chunk``-sized blocks (a
        page cache filling up), in the order the allocator hands them out."""
        want = int(self.free_bytes * fraction) // chunk
        taken: list[tuple[int, int]] = []
        for _ in range(want):
            try:
                taken.append((self.alloc(chunk, mt=MIGRATE_MOVABLE), chunk))
            except OutOfMemory:
                break
        return taken
