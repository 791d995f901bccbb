"""Simulated physical memory: sparse, page-granular, little-endian, every write attributed.

Only pages that were written with something other than zeros cost memory; reading an
untouched page returns zeros, and zero-filling whole pages releases them.  RAM ranges
and MMIO windows come from the platform.  Every write names its :class:`Agent`; writes
by GIC agents (redistributors and ITSs) are also passed, with the bytes before and
after, to observers, which is how corruption is detected (:mod:`gickexec.scenario.checks`).
Page watches tell a cache built from memory (the ITS's translations) that a page it read
was written, by anyone.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple, Protocol

__all__ = [
    "PAGE_SHIFT",
    "PAGE_SIZE",
    "Agent",
    "AgentKind",
    "BusFault",
    "GicWrite",
    "MemRegion",
    "MmioDevice",
    "PhysicalMemory",
    "RegisterBlock",
]

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
_PAGE_MASK = PAGE_SIZE - 1
_ZERO_PAGE = bytes(PAGE_SIZE)


class AgentKind(StrEnum):
    """Who performed a memory or register access."""

    FIRMWARE = "firmware"
    KERNEL = "kernel"
    GICR = "gicr"
    ITS = "its"
    DEVICE = "device"


@dataclass(frozen=True, slots=True)
class Agent:
    """The writer of a memory access: a kernel generation's CPU, a redistributor, an ITS…"""

    kind: AgentKind
    index: int = 0
    generation: int | None = None

    def __str__(self) -> str:
        match self.kind:
            case AgentKind.KERNEL:
                return f"kernel gen{self.generation} CPU{self.index}"
            case AgentKind.GICR:
                return f"GICR(CPU{self.index})"
            case AgentKind.ITS:
                return f"ITS{self.index}"
            case AgentKind.DEVICE:
                return f"device {self.index:#06x}"
            case _:
                return "firmware"

    @property
    def is_gic(self) -> bool:
        return self.kind in _GIC_KINDS


_GIC_KINDS = frozenset((AgentKind.GICR, AgentKind.ITS))
FIRMWARE = Agent(AgentKind.FIRMWARE)


class BusFault(Exception):
    """An access hit no RAM and no MMIO window (the model's external abort)."""

    def __init__(self, addr: int, size: int, agent: Agent | None) -> None:
        who = f" by {agent}" if agent else ""
        super().__init__(f"bus fault: {size}-byte access at {addr:#x}{who} hits no RAM or MMIO")
        self.addr = addr
        self.size = size
        self.agent = agent


@dataclass(frozen=True, slots=True)
class MemRegion:
    """A physical address range ``[start, start + size)`` with a name."""

    start: int
    size: int
    name: str = ""

    @property
    def end(self) -> int:
        return self.start + self.size

    def contains(self, addr: int, size: int = 1) -> bool:
        return self.start <= addr and addr + size <= self.end


class GicWrite(NamedTuple):
    """A write by a GIC agent, with the bytes it replaced (a named tuple: one is made
    per pending-bit change)."""

    addr: int
    old: bytes
    new: bytes
    agent: Agent


#: ``tuple.__new__``: builds the named tuples made per MSI in C (their own ``__new__``
#: is a Python function)
_new_tuple = tuple.__new__


class MmioDevice(Protocol):
    """A register block mapped into the physical address space."""

    def mmio_read(self, offset: int, size: int) -> int: ...

    def mmio_write(self, offset: int, size: int, value: int, agent: Agent) -> None: ...


_LOW32 = 0xFFFFFFFF


class RegisterBlock:
    """An MMIO frame whose 64-bit registers may also be accessed as two 32-bit halves.

    The GIC architecture lets software access bits [31:0] and [63:32] of its 64-bit
    registers separately (Arm IHI 0069, GITS_CREADR and the *BASER descriptions; arm32 kernels do
    this for every *BASER).  A 32-bit write updates one half of the register's current
    value and is then handled as a write of the whole register, so every rule about that
    register (ignored while enabled, side effects of CWRITER) applies unchanged.
    Subclasses list their 64-bit offsets in ``regs64`` and implement the full-width
    ``read_reg``/``write_reg`` plus ``current`` (the value without read side effects).
    """

    regs64: frozenset[int] = frozenset()

    def read_reg(self, offset: int, size: int) -> int:
        raise NotImplementedError

    def write_reg(self, offset: int, value: int, agent: Agent) -> None:
        raise NotImplementedError

    def current(self, offset: int) -> int:
        return 0

    def mmio_read(self, offset: int, size: int) -> int:
        if size == 4 and offset in self.regs64:
            return self.read_reg(offset, 8) & _LOW32
        if size == 4 and offset - 4 in self.regs64:
            return self.read_reg(offset - 4, 8) >> 32
        return self.read_reg(offset, size)

    def mmio_write(self, offset: int, size: int, value: int, agent: Agent) -> None:
        if size == 4 and offset in self.regs64:
            value = (self.current(offset) & ~_LOW32) | (value & _LOW32)
        elif size == 4 and offset - 4 in self.regs64:
            offset -= 4
            value = (self.current(offset) & _LOW32) | ((value & _LOW32) << 32)
        self.write_reg(offset, value, agent)


class PhysicalMemory:
    """Sparse physical memory with RAM ranges, MMIO windows and write attribution."""

    #: False: ``write_bit`` is ``read_u8`` then ``write_u8`` (the reference path)
    direct_bits = True

    def __init__(self, ram: Sequence[MemRegion]) -> None:
        regions = sorted(ram, key=lambda r: r.start)
        for a, b in itertools.pairwise(regions):
            if b.start < a.end:
                raise ValueError(f"RAM regions overlap: {a} and {b}")
        self.ram: tuple[MemRegion, ...] = tuple(regions)
        self._ram_starts = [r.start for r in regions]
        self._pages: dict[int, bytearray] = {}
        #: page frame number -> the last agent that wrote into the page
        self.last_writer: dict[int, Agent] = {}
        self._mmio: list[tuple[MemRegion, MmioDevice]] = []
        self._mmio_starts: list[int] = []
        self._last_mmio: tuple[MemRegion, MmioDevice] | None = None
        self._gic_observers: list[Callable[[GicWrite], None]] = []
        self._quiet_of: dict[Callable[[GicWrite], None], dict[int, Agent] | None] = {}
        #: the only observer's quiet pages (see observe_gic_writes), else None
        self._quiet: dict[int, Agent] | None = None
        #: page frame -> callbacks to run once at the next write or fill touching it
        #: (how the ITS learns that a table it cached a translation from changed)
        self._watches: dict[int, set[Callable[[], None]]] = {}
        # The RAM region of the last access: nearly every access lands in the same one.
        self._last_ram: MemRegion = regions[0] if regions else MemRegion(0, 0)

    # -- layout ---------------------------------------------------------------------

    def map_mmio(self, region: MemRegion, device: MmioDevice) -> None:
        """Map a register block; MMIO windows may not overlap RAM or each other."""
        windows = [*self.ram, *(r for r, _ in self._mmio)]
        if any(r.start < region.end and region.start < r.end for r in windows):
            raise ValueError(f"MMIO window {region} overlaps RAM or another window")
        i = bisect.bisect(self._mmio_starts, region.start)
        self._mmio.insert(i, (region, device))
        self._mmio_starts.insert(i, region.start)

    def unmap_all_mmio(self) -> None:
        self._mmio.clear()
        self._mmio_starts.clear()
        self._last_mmio = None

    def ram_region(self, addr: int, size: int = 1) -> MemRegion | None:
        """The RAM region holding all of ``[addr, addr + size)``, if any."""
        last = self._last_ram
        if last.start <= addr and addr + size <= last.start + last.size:
            return last
        i = bisect.bisect_right(self._ram_starts, addr) - 1
        if i >= 0 and self.ram[i].contains(addr, size):
            self._last_ram = self.ram[i]
            return self.ram[i]
        return None

    def is_ram(self, addr: int, size: int = 1) -> bool:
        return self.ram_region(addr, size) is not None

    def _mmio_at(self, addr: int, size: int) -> tuple[MemRegion, MmioDevice] | None:
        """The window holding the access, when it is not the last one's (the callers look
        there first: drivers poll the same frame, GITS_CREADR after GITS_CWRITER)."""
        i = bisect.bisect_right(self._mmio_starts, addr) - 1
        if i >= 0 and addr - self._mmio[i][0].start <= self._mmio[i][0].size - size:
            self._last_mmio = self._mmio[i]  # (bisect_right: addr is at or past the start)
            return self._mmio[i]
        return None

    @property
    def ram_bytes(self) -> int:
        return sum(r.size for r in self.ram)

    @property
    def pages_touched(self) -> int:
        """Pages holding data (the model's memory cost)."""
        return len(self._pages)

    # -- observers ------------------------------------------------------------------

    def observe_gic_writes(
        self, callback: Callable[[GicWrite], None], quiet: dict[int, Agent] | None = None
    ) -> None:
        """Pass every GIC write to ``callback``.  ``quiet`` (page frame -> a GIC agent),
        which the observer keeps current, lists pages where that agent's ``write_bit``
        changes need not be passed; it is honoured only while the observer is the only
        one (any other wants every write)."""
        self._gic_observers.append(callback)
        self._quiet_of[callback] = quiet
        self._quiet = quiet if len(self._gic_observers) == 1 else None

    def unobserve_gic_writes(self, callback: Callable[[GicWrite], None]) -> None:
        self._gic_observers.remove(callback)
        if callback not in self._gic_observers:
            del self._quiet_of[callback]
        only = self._gic_observers[0] if len(self._gic_observers) == 1 else None
        self._quiet = self._quiet_of[only] if only is not None else None

    @property
    def gic_observers(self) -> tuple[Callable[[GicWrite], None], ...]:
        return tuple(self._gic_observers)

    def watch_pages(self, pfns: Iterable[int], callback: Callable[[], None]) -> None:
        """Run ``callback`` once, at the next write or fill by anyone touching a page of
        ``pfns`` (the watch is then dropped for every page; a watcher re-arms it)."""
        for pfn in pfns:
            self._watches.setdefault(pfn, set()).add(callback)

    def unwatch(self, callback: Callable[[], None]) -> None:
        """Drop every watch that would run ``callback``."""
        for pfn in [p for p, cbs in self._watches.items() if callback in cbs]:
            cbs = self._watches[pfn]
            cbs.discard(callback)
            if not cbs:
                del self._watches[pfn]

    def _fire_watches(self, first: int, last: int) -> None:
        """A write touched page frames ``first..last``: run the watches on them."""
        watches = self._watches
        if last - first < len(watches):
            hit = [p for p in range(first, last + 1) if p in watches]
        else:
            hit = [p for p in watches if first <= p <= last]
        fired: set[Callable[[], None]] = set()
        for pfn in hit:
            fired |= watches.pop(pfn)
        for cb in fired:
            # One callback may watch many pages: drop it everywhere before it runs.
            self.unwatch(cb)
            cb()

    # -- RAM access -----------------------------------------------------------------

    def _check_ram(self, addr: int, size: int, agent: Agent | None) -> None:
        last = self._last_ram
        # ``size or 1``: max(size, 1) for a size >= 0 (checked first), without a call
        if size >= 0 and last.start <= addr and addr + (size or 1) <= last.start + last.size:
            return  # in the region of the last access, as nearly every access is
        if size < 0 or not self.is_ram(addr, max(size, 1)):
            raise BusFault(addr, size, agent)

    def _chunks(self, addr: int, size: int) -> Iterator[tuple[int, int, int]]:
        """(page frame, offset in page, length) pieces of ``[addr, addr + size)``."""
        while size > 0:
            off = addr & _PAGE_MASK
            n = min(PAGE_SIZE - off, size)
            yield addr >> PAGE_SHIFT, off, n
            addr += n
            size -= n

    def read(self, addr: int, size: int) -> bytes:
        """Read RAM; untouched pages read as zeros."""
        self._check_ram(addr, size, None)
        off = addr & _PAGE_MASK
        if off + size <= PAGE_SIZE:
            # Within one page (every table entry and pending byte): no chunking.
            page = self._pages.get(addr >> PAGE_SHIFT)
            return bytes(page[off : off + size]) if page is not None else _ZERO_PAGE[:size]
        pages = self._pages
        out = bytearray()
        for pfn, off, n in self._chunks(addr, size):
            page = pages.get(pfn)
            out += page[off : off + n] if page is not None else _ZERO_PAGE[:n]
        return bytes(out)

    def write(self, addr: int, data: bytes, agent: Agent) -> None:
        """Write RAM as ``agent``; GIC writes are reported to observers."""
        size = len(data)
        self._check_ram(addr, size, agent)
        if not size:
            return
        watches = self._watches
        if watches:
            first, last = addr >> PAGE_SHIFT, (addr + size - 1) >> PAGE_SHIFT
            # a write within one unwatched page (every command and table entry) fires none
            if first != last or first in watches:
                self._fire_watches(first, last)
        # ``agent.is_gic`` without the property's call (every write asks)
        old = self.read(addr, size) if agent.kind in _GIC_KINDS and self._gic_observers else b""
        off = addr & _PAGE_MASK
        if off + size <= PAGE_SIZE:
            self._write_in_page(addr >> PAGE_SHIFT, off, data, agent)
        else:
            self._write_chunks(addr, data, agent)
        if old:
            self._notify(GicWrite(addr, old, bytes(data), agent))

    def _notify(self, event: GicWrite) -> None:
        for cb in self._gic_observers:
            cb(event)

    def _write_in_page(self, pfn: int, off: int, data: bytes, agent: Agent) -> None:
        page = self._pages.get(pfn)
        if page is None and any(data):
            page = self._pages[pfn] = bytearray(PAGE_SIZE)
        if page is not None:
            page[off : off + len(data)] = data
        self.last_writer[pfn] = agent

    def _write_chunks(self, addr: int, data: bytes, agent: Agent) -> None:
        pos = 0
        for pfn, off, n in self._chunks(addr, len(data)):
            self._write_in_page(pfn, off, data[pos : pos + n], agent)
            pos += n

    def fill(self, addr: int, size: int, value: int, agent: Agent) -> None:
        """``memset``: whole pages filled with zero are released, not stored."""
        self._check_ram(addr, size, agent)
        if agent.is_gic:
            self.write(addr, bytes([value]) * size, agent)
            return
        if self._watches:
            self._fire_watches(addr >> PAGE_SHIFT, (addr + max(size, 1) - 1) >> PAGE_SHIFT)
        end = addr + size
        first, last = -(-addr >> PAGE_SHIFT), end >> PAGE_SHIFT  # the whole pages
        if value == 0 and last > first:
            # Zeroing whole pages (every table the kernel allocates) releases them: the
            # ragged ends chunk by chunk, the pages between in bulk, in address order.
            for pfn, off, n in self._chunks(addr, (first << PAGE_SHIFT) - addr):
                self._zero_in_page(pfn, off, n, agent)
            self.last_writer.update(dict.fromkeys(range(first, last), agent))
            pages = self._pages
            if last - first <= len(pages):
                for pfn in range(first, last):
                    pages.pop(pfn, None)
            else:
                for pfn in [p for p in pages if first <= p < last]:
                    del pages[pfn]
            for pfn, off, n in self._chunks(last << PAGE_SHIFT, end - (last << PAGE_SHIFT)):
                self._zero_in_page(pfn, off, n, agent)
            return
        for pfn, off, n in self._chunks(addr, size):
            if value == 0:
                self._zero_in_page(pfn, off, n, agent)
                continue
            self.last_writer[pfn] = agent
            page = self._pages.get(pfn)
            if page is None:
                page = self._pages[pfn] = bytearray(PAGE_SIZE)
            page[off : off + n] = bytes([value]) * n

    def _zero_in_page(self, pfn: int, off: int, n: int, agent: Agent) -> None:
        self.last_writer[pfn] = agent
        if n == PAGE_SIZE:
            self._pages.pop(pfn, None)
            return
        page = self._pages.get(pfn)
        if page is not None:
            page[off : off + n] = _ZERO_PAGE[:n]

    def nonzero_pages(self, addr: int, size: int) -> list[int]:
        """Page frame numbers inside ``[addr, addr + size)`` that hold data."""
        first, last = addr >> PAGE_SHIFT, (addr + size - 1) >> PAGE_SHIFT
        if last - first < len(self._pages):
            return [p for p in range(first, last + 1) if p in self._pages]
        return sorted(p for p in self._pages if first <= p <= last)

    def read_u8(self, addr: int) -> int:
        # The redistributor's hot path (configuration and pending bytes): one lookup.
        last = self._last_ram
        if not (last.start <= addr < last.start + last.size):
            self._check_ram(addr, 1, None)
        page = self._pages.get(addr >> PAGE_SHIFT)
        return page[addr & _PAGE_MASK] if page is not None else 0

    def read_u32(self, addr: int) -> int:
        return int.from_bytes(self.read(addr, 4), "little")

    def read_u64(self, addr: int) -> int:
        return int.from_bytes(self.read(addr, 8), "little")

    def write_u8(self, addr: int, value: int, agent: Agent) -> None:
        # The redistributor's pending-bit writes: ``write`` without its general cases.
        last = self._last_ram
        if not (last.start <= addr < last.start + last.size):
            self._check_ram(addr, 1, agent)
        pfn = addr >> PAGE_SHIFT
        if self._watches and pfn in self._watches:
            self._fire_watches(pfn, pfn)
        off = addr & _PAGE_MASK
        new = bytes((value,))
        if agent.kind in _GIC_KINDS and self._gic_observers:  # is_gic, without a call
            page = self._pages.get(pfn)
            old = bytes((page[off] if page is not None else 0,))
            self._write_in_page(pfn, off, new, agent)
            self._notify(GicWrite(addr, old, new, agent))
        else:
            self._write_in_page(pfn, off, new, agent)

    def write_bit(self, addr: int, mask: int, value: bool, agent: Agent) -> bool:
        """Make the bits ``mask`` of the byte at ``addr`` all set (``value``) or all clear, as
        ``agent``; False, writing nothing, if they already were.  A pending bit's
        read-modify-write in one access: what ``read_u8`` then ``write_u8`` of the changed
        byte do (watches, last writer, observers), without re-reading the byte for them,
        and without building the change for an only observer that said it need not see
        it (``quiet``).  ``direct_bits = False`` runs exactly those two calls (the
        reference)."""
        if not self.direct_bits:
            old = self.read_u8(addr)
            if bool(old & mask) == value:
                return False
            self.write_u8(addr, old | mask if value else old & ~mask, agent)
            return True
        last = self._last_ram
        if not (last.start <= addr < last.start + last.size):
            self._check_ram(addr, 1, None)  # the read faults first, as in the reference
        pfn = addr >> PAGE_SHIFT
        page = self._pages.get(pfn)
        off = addr & _PAGE_MASK
        old = page[off] if page is not None else 0
        if bool(old & mask) == value:
            return False
        if self._watches and pfn in self._watches:
            self._fire_watches(pfn, pfn)  # watchers drop caches; none writes memory
            page = self._pages.get(pfn)
        if value:
            new = old | mask
            if page is None:
                page = self._pages[pfn] = bytearray(PAGE_SIZE)
        else:
            new = old & ~mask  # the bits were set: the page exists
        assert page is not None
        page[off] = new
        self.last_writer[pfn] = agent
        quiet = self._quiet
        if (
            self._gic_observers
            and agent.kind in _GIC_KINDS
            and (quiet is None or quiet.get(pfn) is not agent)
        ):
            # tuple.__new__: a GicWrite without the named tuple's Python-level __new__
            event = _new_tuple(GicWrite, (addr, bytes((old,)), bytes((new,)), agent))
            for cb in self._gic_observers:
                cb(event)
        return True

    def pulse_bit(self, addr: int, mask: int, agent: Agent) -> bool:
        """``write_bit(addr, mask, True, agent)`` then ``write_bit(addr, mask, False,
        agent)`` (a pending bit an LPI's arrival sets and its acknowledge clears, nothing
        between), done only where neither write has anyone to tell: the page holds data,
        the bits are clear, nobody watches the page, and there is no GIC-write observer
        or the only one lists the page quiet for ``agent``.  Then the byte ends as it was
        and ``agent`` is the page's last writer: True.  Otherwise False, having changed
        nothing (``direct_bits = False``: always, the two calls are the reference)."""
        pfn = addr >> PAGE_SHIFT
        page = self._pages.get(pfn)  # a page that holds data is RAM
        if page is None or page[addr & _PAGE_MASK] & mask or not self.direct_bits:
            return False
        if (self._watches and pfn in self._watches) or (
            self._gic_observers
            and agent.kind in _GIC_KINDS
            and (self._quiet is None or self._quiet.get(pfn) is not agent)
        ):
            return False
        self.last_writer[pfn] = agent
        return True

    def write_u32(self, addr: int, value: int, agent: Agent) -> None:
        self.write(addr, value.to_bytes(4, "little"), agent)

    def write_u64(self, addr: int, value: int, agent: Agent) -> None:
        self.write(addr, value.to_bytes(8, "little"), agent)

    # -- MMIO -----------------------------------------------------------------------

    def mmio_read(self, addr: int, size: int) -> int:
        hit = self._last_mmio
        if hit is None or not 0 <= addr - hit[0].start <= hit[0].size - size:
            hit = self._mmio_at(addr, size)
        if hit is None:
            raise BusFault(addr, size, None)
        region, dev = hit
        return dev.mmio_read(addr - region.start, size)

    def mmio_write(self, addr: int, size: int, value: int, agent: Agent) -> None:
        hit = self._last_mmio
        if hit is None or not 0 <= addr - hit[0].start <= hit[0].size - size:
            hit = self._mmio_at(addr, size)
        if hit is None:
            raise BusFault(addr, size, agent)
        region, dev = hit
        dev.mmio_write(addr - region.start, size, value, agent)
