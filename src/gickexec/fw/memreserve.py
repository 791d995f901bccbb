"""Walking the ``LINUX_EFI_MEMRESERVE_TABLE`` chain in memory: bounded and cycle-safe.

The walk reads exactly what the kernel's ``efi_config_parse_tables()`` reads
(drivers/firmware/efi/efi.c, v4.20 and v5.2.1), in either layout:

* ``"v4.20"``: 24-byte nodes ``{next, base, size}``; a node with size 0 reserves nothing.
* ``"v5.0"``: a 16-byte header and ``count`` entries.  The kernel maps the single page
  around the node, so entries are read only up to the end of that page.

Unlike the kernel, the walk stops at a cycle, after ``max_nodes`` nodes or
``max_entries`` reservations, or at a node that is not in RAM, and says why in
:attr:`MemreserveChain.error`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from gickexec.arch.efi import (
    MEMRESERVE_ENTRY_BYTES,
    MEMRESERVE_HEADER_BYTES,
    MEMRESERVE_V420_BYTES,
    MemreserveHeader,
    MemreserveV420,
)

__all__ = ["MemreserveChain", "MemreserveLayout", "MemreserveNode", "walk_memreserve"]

MemreserveLayout = Literal["v4.20", "v5.0"]
_KERNEL_PAGE = 4096


@dataclass(frozen=True, slots=True)
class MemreserveNode:
    """One node as found in memory; ``footprint`` is what the parser memblock_reserve()s."""

    addr: int
    size: int
    count: int
    next: int
    entries: tuple[tuple[int, int], ...]
    footprint: int


@dataclass(frozen=True, slots=True)
class MemreserveChain:
    """The chain from the root (first node) onwards."""

    root: int
    layout: MemreserveLayout
    nodes: tuple[MemreserveNode, ...]
    error: str | None = None

    @property
    def entries(self) -> list[tuple[int, int]]:
        """Every (base, size) reservation, newest node first as the kernel sees them."""
        return [e for n in self.nodes for e in n.entries]

    @property
    def list_nodes(self) -> tuple[MemreserveNode, ...]:
        """The nodes after the root (the root never holds a reservation)."""
        return self.nodes[1:]


def walk_memreserve(
    read: Callable[[int, int], bytes],
    is_ram: Callable[[int, int], bool],
    root: int,
    layout: MemreserveLayout = "v5.0",
    max_nodes: int = 65536,
    max_entries: int = 1 << 20,
) -> MemreserveChain:
    """Follow ``next`` from ``root`` reading nodes through ``read(addr, size)``."""
    nodes: list[MemreserveNode] = []
    seen: set[int] = set()
    addr = root
    entries = 0
    while addr:
        if addr in seen:
            return MemreserveChain(root, layout, tuple(nodes), f"cycle: node {addr:#x} seen twice")
        if len(nodes) >= max_nodes:
            return MemreserveChain(root, layout, tuple(nodes), f"more than {max_nodes} nodes")
        seen.add(addr)
        node = _read_node(read, is_ram, addr, layout)
        if node is None:
            return MemreserveChain(root, layout, tuple(nodes), f"node {addr:#x} is not in RAM")
        entries += len(node.entries)
        if entries > max_entries:
            return MemreserveChain(
                root, layout, tuple(nodes), f"more than {max_entries} reservations"
            )
        nodes.append(node)
        addr = node.next
    return MemreserveChain(root, layout, tuple(nodes))


def _read_node(
    read: Callable[[int, int], bytes],
    is_ram: Callable[[int, int], bool],
    addr: int,
    layout: MemreserveLayout,
) -> MemreserveNode | None:
    if layout == "v4.20":
        if not is_ram(addr, MEMRESERVE_V420_BYTES):
            return None
        n = MemreserveV420.from_bytes(read(addr, MEMRESERVE_V420_BYTES))
        entries: tuple[tuple[int, int], ...] = ((n.base, n.size),) if n.size else ()
        return MemreserveNode(
            addr, int(bool(n.size)), len(entries), n.next, entries, MEMRESERVE_V420_BYTES
        )
    if not is_ram(addr, MEMRESERVE_HEADER_BYTES):
        return None
    hdr = MemreserveHeader.from_bytes(read(addr, MEMRESERVE_HEADER_BYTES))
    # The parser maps one page from ALIGN_DOWN(prsv) and does not clamp count to size.
    room = (_KERNEL_PAGE - addr % _KERNEL_PAGE - MEMRESERVE_HEADER_BYTES) // MEMRESERVE_ENTRY_BYTES
    count = max(0, min(hdr.count, room))
    if count and not is_ram(addr + MEMRESERVE_HEADER_BYTES, count * MEMRESERVE_ENTRY_BYTES):
        return None  # the entries run past the end of RAM
    blob = read(addr + MEMRESERVE_HEADER_BYTES, count * MEMRESERVE_ENTRY_BYTES) if count else b""
    entries = tuple(MemreserveHeader.unpack_entries(blob))
    footprint = MEMRESERVE_HEADER_BYTES + MEMRESERVE_ENTRY_BYTES * max(hdr.size, 0)
    return MemreserveNode(addr, hdr.size, hdr.count, hdr.next, entries, footprint)
