"""A kernel generation's view of memory: memblock, the page allocator, and ownership.

* :class:`Memblock` models the early allocator: ``memory`` and ``reserved`` region lists,
  ``memblock_reserve()`` with merging, top-down ``memblock_alloc()`` (the default on
  arm64), and the containment test ``gic_check_reserved_range()`` relies on.
* :class:`PageAllocator` hands out naturally aligned blocks after ``mm_init``.  Where a
  block lands depends on a seeded random choice among free ranges, standing in for
  KASLR, different kernels and different allocation orders.
* :class:`OwnershipMap` is the kernel's belief about every byte of RAM (which GIC table,
  which allocation, reserved, or free), used to judge GIC writes.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "SEG_DTB",
    "SEG_IMAGE",
    "SEG_INITRD",
    "KernelFault",
    "Memblock",
    "OutOfMemory",
    "Owner",
    "OwnershipMap",
    "PageAllocator",
    "Role",
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

    def __len__(self) -> int:
        return len(self._starts)

    def assign(self, start: int, size: int, owner: Owner | None) -> None:
        """Label ``[start, start + size)`` (None frees it), splitting what it overlaps."""
        if size <= 0:
            return
        end = start + size
        i = bisect.bisect_right(self._ends, start)
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


class Memblock:
    """``struct memblock``: memory and reserved regions, merged as the kernel merges them."""

    def __init__(self, memory: list[tuple[int, int]], max_reserved: int | None = None) -> None:
        self.memory = sorted(memory)
        self.reserved: list[list[int]] = []  # merged [start, end)
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
        may not resize it yet: it returns -1 before ``memblock_allow_resize()`` (mm/memblock.c
        of the v4.20 era, read in a public copy; a later patch made this
        ``panic("memblock: cannot resize %s array")``, version UNCONFIRMED, which no
        modelled profile reaches).  Once resizing is allowed the array doubles into memory
        found top-down among what is not reserved *yet*."""
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
        i = bisect.bisect_left([r[1] for r in self.reserved], start)
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
        (merged) ``for_each_reserved_mem_range`` region (linux-kernel.md §2.3).
        """
        end = addr + size
        # key=: no list of starts built per call (called once per CPU at boot).
        i = bisect.bisect_right(self.reserved, addr, key=lambda r: r[0]) - 1
        return i >= 0 and self.reserved[i][0] <= addr and end <= self.reserved[i][1]

    def overlaps_reserved(self, addr: int, size: int) -> bool:
        end = addr + size
        return any(s < end and addr < e for s, e in self.reserved)

    def free_ranges(self) -> list[tuple[int, int]]:
        """Memory minus reserved: what ``mm_init`` hands to the page allocator."""
        return free_ranges(self.memory, [(s, e - s) for s, e in self.reserved])

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


class PageAllocator:
    """The buddy allocator's placement, reduced to "a naturally aligned free block".

    The block is chosen at random (from ``rng``) among free ranges weighted by size,
    then at a random aligned offset; the same seed gives the same placement.
    """

    def __init__(self, free: list[tuple[int, int]], rng: random.Random) -> None:
        self._free = sorted((s, e) for s, e in free if e > s)
        self._rng = rng

    @property
    def free_bytes(self) -> int:
        return sum(e - s for s, e in self._free)

    def free_ranges(self) -> list[tuple[int, int]]:
        return list(self._free)

    def alloc(self, size: int, align: int | None = None) -> int:
        """Allocate ``size`` bytes aligned to ``align`` (default: size rounded to a power of 2)."""
        if align is None:
            align = 1 << max(12, (size - 1).bit_length())
        fits: list[tuple[int, int, int]] = []
        total = 0
        for s, e in self._free:
            first = (s + align - 1) & ~(align - 1)
            slots = (e - size - first) // align + 1 if e - size >= first else 0
            if slots > 0:
                fits.append((first, slots, total))
                total += slots
        if not total:
            raise OutOfMemory(f"no free {size:#x}-byte block aligned {align:#x}")
        pick = self._rng.randrange(total)
        k = bisect.bisect_right([f[2] for f in fits], pick) - 1
        first, _, base = fits[k]
        addr = first + (pick - base) * align
        self.take(addr, size)
        return addr

    def take(self, addr: int, size: int) -> None:
        """Remove ``[addr, addr + size)`` from the free ranges (it must be free)."""
        end = addr + size
        for i, (s, e) in enumerate(self._free):
            if s <= addr and end <= e:
                pieces = [(p, q) for p, q in ((s, addr), (end, e)) if q > p]
                self._free[i : i + 1] = pieces
                return
        raise ValueError(f"[{addr:#x}, {end:#x}) is not free")

    def free(self, addr: int, size: int) -> None:
        """Give ``[addr, addr + size)`` back, merging with neighbours."""
        end = addr + size
        i = bisect.bisect_left(self._free, (addr, end))
        overlaps_prev = i > 0 and self._free[i - 1][1] > addr
        if overlaps_prev or (i < len(self._free) and self._free[i][0] < end):
            raise ValueError(f"double free of [{addr:#x}, {end:#x})")
        self._free.insert(i, (addr, end))
        if i + 1 < len(self._free) and self._free[i][1] == self._free[i + 1][0]:
            self._free[i : i + 2] = [(self._free[i][0], self._free[i + 1][1])]
        if i > 0 and self._free[i - 1][1] == self._free[i][0]:
            self._free[i - 1 : i + 1] = [(self._free[i - 1][0], self._free[i][1])]

    def fill(self, fraction: float, chunk: int) -> list[tuple[int, int]]:
        """Allocate about ``fraction`` of free memory in ``chunk``-sized, chunk-aligned
        pieces spread over all of RAM (what a busy page cache looks like)."""
        taken: list[tuple[int, int]] = []
        remaining: list[tuple[int, int]] = []
        for s, e in self._free:
            cursor = s
            first = (s + chunk - 1) & ~(chunk - 1)
            for addr in range(first, e - chunk + 1, chunk):
                if self._rng.random() < fraction:
                    taken.append((addr, chunk))
                    if addr > cursor:
                        remaining.append((cursor, addr))
                    cursor = addr + chunk
            if cursor < e:
                remaining.append((cursor, e))
        self._free = remaining
        return taken
