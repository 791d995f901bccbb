"""What the next kernel would see in a guest memory image: the EFI system table, the
LINUX_EFI_MEMRESERVE_TABLE chain, the live LPI tables and whether they are reserved.

The result is plain data (the ``inspect --json`` document, docs/inspect.md).  Every walk
is bounded: the system-table scan examines at most :data:`MAX_SYSTAB_CANDIDATES`
signatures, the chain at most ``max_nodes`` nodes and :data:`MAX_ENTRIES` reservations
(more ends the walk with an error saying so), and a table is decoded only when the
image holds all of it and it is no larger than the architecture allows.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from gickexec.arch.efi import (
    CONFIG_TABLE_NAMES,
    EFI_SYSTEM_TABLE_BYTES,
    EFI_SYSTEM_TABLE_SIGNATURE,
    LINUX_EFI_MEMRESERVE_TABLE_GUID,
    systab_header_crc_ok,
)
from gickexec.arch.gicv3 import LPI_INTID_BASE, GicrPendbaser, GicrPropbaser, LpiConfig
from gickexec.bounded import InputError, parse_uint
from gickexec.fw.memreserve import MemreserveChain, MemreserveLayout, walk_memreserve
from gickexec.fw.uefi import SystemTableError, read_config_tables
from gickexec.inspect.image import MemoryImage

__all__ = [
    "MAX_ENTRIES",
    "MAX_SYSTAB_CANDIDATES",
    "LiveTable",
    "detect_layout",
    "find_systab",
    "inspect_image",
    "tables_from_log",
    "tables_from_note",
    "tables_from_registers",
]

MAX_SYSTAB_CANDIDATES = 4096
#: Reservations kept from a memreserve chain: a real one has a few hundred (one per CPU
#: plus the property table); millions would cost gigabytes and a JSON as large.
MAX_ENTRIES = 65536
_SIGNATURE = EFI_SYSTEM_TABLE_SIGNATURE.to_bytes(8, "little")  # b"IBI SYST"
#: An LPI table larger than 2^24 INTIDs allow is no table (GICD_TYPER.IDbits <= 23).
_MAX_PROP_BYTES = (1 << 24) - LPI_INTID_BASE
_MAX_PEND_BYTES = (1 << 24) // 8
_PENDING_IMPDEF_BYTES = LPI_INTID_BASE // 8
#: Pending and enabled LPIs listed in full up to this many; beyond, only counted.
MAX_LISTED_LPIS = 256

_NO_LPIS = "GICR_PROPBASER.IDbits gives fewer than 14 INTID bits: no LPI is in range, no table"

LayoutChoice = Literal["auto", "v4.20", "v5.0"]
#: Configuration tables by the names the kernel's efi: line gives them.
@dataclass(frozen=True, slots=True)
class LiveTable:
    """An LPI table a redistributor uses: ``kind`` "prop" (shared) or "pend" (per CPU)."""

    kind: str
    addr: int
    size: int
    cpu: int | None = None


def find_systab(img: MemoryImage) -> tuple[int | None, list[str]]:
    """Scan for EFI system tables: signature at an 8-byte aligned address, then header
    size, revision and CRC32 checked.  Returns the first valid one and what was seen."""
    seen: list[str] = []
    examined = 0
    tail_addr, tail = -1, b""
    for addr, chunk in img.data_runs():
        # a signature may straddle two chunks of one contiguous run
        base, data = (tail_addr, tail + chunk) if tail_addr + len(tail) == addr else (addr, chunk)
        pos = data.find(_SIGNATURE)
        while pos >= 0:
            cand = base + pos
            if cand % 8 == 0:
                examined += 1
                if examined > MAX_SYSTAB_CANDIDATES:
                    seen.append(f"stopped after {MAX_SYSTAB_CANDIDATES} signature candidates")
                    return None, seen
                why = _systab_problem(img, cand)
                if why is None:
                    return cand, seen
                seen.append(f"{cand:#x}: {why}")
            pos = data.find(_SIGNATURE, pos + 1)
        tail_addr, tail = base + len(data) - 7, data[-7:]
    return None, seen


def _systab_problem(img: MemoryImage, addr: int) -> str | None:
    if not img.is_ram(addr, EFI_SYSTEM_TABLE_BYTES):
        return "truncated"
    raw = img.read(addr, EFI_SYSTEM_TABLE_BYTES)
    header_size = int.from_bytes(raw[12:16], "little")
    revision = int.from_bytes(raw[8:12], "little")
    if header_size != EFI_SYSTEM_TABLE_BYTES:
        return f"header size {header_size} (a 64-bit EFI_SYSTEM_TABLE has 120)"
    if revision >> 16 not in (1, 2):
        return f"revision {revision >> 16}.{revision & 0xFFFF} is no UEFI revision"
    if not systab_header_crc_ok(raw):
        return "CRC32 mismatch (a stray copy of the signature)"
    return None


def detect_layout(img: MemoryImage, root: int) -> tuple[MemreserveLayout, str]:
    """Tell the v4.20 root ``{next, base, size}`` from the v5.0 one ``{size, count, next}``:
    the EFI stub leaves everything but ``next`` zero, and ``next`` sits at offset 0 in
    the first and at offset 8 in the second."""
    if not img.is_ram(root, 24):
        return "v5.0", "root not in the image; assuming v5.0"
    raw = img.read(root, 24)
    w0, w1, w2 = (int.from_bytes(raw[i : i + 8], "little") for i in (0, 8, 16))
    if w0 == 0 and w1 == 0:
        return "v5.0", "empty root (either layout; v5.0 assumed)"
    if w0 == 0 or (w1 and img.is_ram(w1, 16) and not img.is_ram(w0, 16)):
        return "v5.0", "size/count zero, next at offset 8"
    if w1 == 0 and w2 == 0:
        return "v4.20", "next at offset 0, base and size zero"
    # Both words set: a v5.0 root whose size/count are in use, or garbage.  The layout
    # whose walk ends cleanly wins.
    for layout in ("v5.0", "v4.20"):
        chain = walk_memreserve(img.read, img.is_ram, root, layout, max_nodes=256)
        if chain.error is None:
            return layout, "the walk in this layout ends cleanly"
    return "v5.0", "neither layout walks cleanly; v5.0 assumed"


def _covered(table: LiveTable, entries: list[tuple[int, int]]) -> bool:
    """Whether the union of the reservations covers the whole table."""
    need_lo, need_hi = table.addr, table.addr + table.size
    for base, size in sorted(e for e in entries if e[1] > 0):
        if base > need_lo:
            return False
        need_lo = max(need_lo, base + size)
        if need_lo >= need_hi:
            return True
    return need_lo >= need_hi


def _decode_prop(img: MemoryImage, t: LiveTable) -> dict[str, Any]:
    raw = np.frombuffer(img.read(t.addr, t.size), dtype=np.uint8)
    enabled = np.flatnonzero(raw & LpiConfig(Enable=1).encode())
    prios = raw[enabled] & 0xFC
    values, counts = np.unique(prios, return_counts=True)
    return {
        "enabled": int(enabled.size),
        "enabled_lpis": [int(i) + LPI_INTID_BASE for i in enabled[:MAX_LISTED_LPIS]],
        "priorities": {f"{int(v):#04x}": int(c) for v, c in zip(values, counts, strict=True)},
    }


def _decode_pend(img: MemoryImage, t: LiveTable) -> dict[str, Any]:
    raw = np.frombuffer(img.read(t.addr, t.size), dtype=np.uint8)
    impdef = bool(raw[:_PENDING_IMPDEF_BYTES].any())
    bits = np.flatnonzero(np.unpackbits(raw[_PENDING_IMPDEF_BYTES:], bitorder="little"))
    return {
        "pending": int(bits.size),
        "pending_lpis": [int(b) + LPI_INTID_BASE for b in bits[:MAX_LISTED_LPIS]],
        "first_kib_nonzero": impdef,
    }


def _table_doc(img: MemoryImage, t: LiveTable, entries: list[tuple[int, int]]) -> dict[str, Any]:
    doc: dict[str, Any] = {"kind": t.kind, "cpu": t.cpu, "addr": t.addr, "size": t.size}
    limit = _MAX_PROP_BYTES if t.kind == "prop" else _MAX_PEND_BYTES
    if t.size == 0:
        doc["error"] = _NO_LPIS
    elif t.size > limit:
        doc["error"] = f"{t.size:#x} bytes is larger than any {t.kind} table"
    elif not img.is_ram(t.addr, t.size):
        doc["error"] = "not (entirely) in the image"
    else:
        doc.update(_decode_prop(img, t) if t.kind == "prop" else _decode_pend(img, t))
    doc["covered"] = t.size > 0 and _covered(t, entries)
    return doc


def tables_from_registers(
    propbaser: int | None,
    pendbasers: dict[int, int],
    prop: int | None = None,
    pends: dict[int, int] | None = None,
    id_bits: int = 16,
) -> list[LiveTable]:
    """The live tables named by register values (as a debugger shows them) or addresses.

    Sizes follow Linux's allocation: the property table covers ``2^IDbits`` INTIDs
    (minus the first 8192), a pending table ``2^IDbits / 8`` bytes.
    """
    out: list[LiveTable] = []
    bits = id_bits
    if propbaser is not None:
        pb = GicrPropbaser.decode(propbaser)
        bits = pb.lpi_id_bits
    # Fewer INTID bits than reach the first LPI (8192): every LPI is out of range and the
    # redistributor reads no table; size 0 says so (never a negative size).
    in_range = (1 << bits) > LPI_INTID_BASE
    prop_size = (1 << bits) - LPI_INTID_BASE if in_range else 0
    pend_size = (1 << bits) // 8 if in_range else 0
    if propbaser is not None:
        out.append(LiveTable("prop", GicrPropbaser.decode(propbaser).address, prop_size))
    elif prop is not None:
        out.append(LiveTable("prop", prop, prop_size))
    for cpu, value in sorted(pendbasers.items()):
        out.append(LiveTable("pend", GicrPendbaser.decode(value).address, pend_size, cpu))
    for cpu, addr in sorted((pends or {}).items()):
        out.append(LiveTable("pend", addr, pend_size, cpu))
    return out


def tables_from_note(note: dict[str, int]) -> list[LiveTable]:
    """Live tables from the GICR register values a GICKEXEC note records."""
    prop = next((v for k, v in sorted(note.items()) if k.endswith("_PROPBASER")), None)
    pends: dict[int, int] = {}
    for k, v in note.items():
        cpu = k[4:].partition("_")[0]
        if k.startswith("GICR") and k.endswith("_PENDBASER"):
            with contextlib.suppress(InputError):  # not a CPU number: not a register we wrote
                pends[parse_uint(cpu, "CPU", bases=False)] = v
    return tables_from_registers(prop, pends)


# The kernel's own lines naming its live LPI tables (its_setup_lpi_prop_table() and
# its_cpu_init_lpis(), before and after v4.20: kernel/printk.py ITS_PROP_TABLE*,
# ITS_PEND_TABLE*), as they sit in the printk buffer of a dump.
_LOG_PROP = re.compile(rb"using LPI property table @0x([0-9a-f]{1,16})")
_LOG_PEND = re.compile(
    rb"CPU(\d{1,4}): using (?:allocated |reserved )?LPI pending table @0x([0-9a-f]{1,16})"
)
#: Bytes kept from the end of one chunk for the next: a log line split across two.
_LOG_OVERLAP = 128
#: Distinct tables taken from log text at most (a dump may hold several kernels' logs).
MAX_LOG_TABLES = 4096


def tables_from_log(img: MemoryImage, id_bits: int = 16, chunk: int = 1 << 20) -> list[LiveTable]:
    """Live LPI tables named by kernel log lines found anywhere in the image.

    The printk buffer survives in a dump; memory may also hold an earlier kernel's log,
    so every distinct table named is returned (and checked), in address order."""
    props: set[int] = set()
    pends: set[tuple[int, int]] = set()
    tail, tail_end = b"", -1
    for addr, data in img.data_runs(chunk):
        buf = tail + bytes(data) if addr == tail_end else bytes(data)
        props.update(int(m[1], 16) for m in _LOG_PROP.finditer(buf))
        pends.update((int(m[1]), int(m[2], 16)) for m in _LOG_PEND.finditer(buf))
        if len(props) + len(pends) > MAX_LOG_TABLES:
            break
        tail, tail_end = buf[-_LOG_OVERLAP:], addr + len(data)
    found = [LiveTable("prop", a, (1 << id_bits) - LPI_INTID_BASE) for a in sorted(props)]
    found += [LiveTable("pend", a, (1 << id_bits) // 8, cpu) for cpu, a in sorted(pends)]
    return found[:MAX_LOG_TABLES]


def inspect_image(
    img: MemoryImage,
    *,
    memreserve: int | None = None,
    systab: int | None = None,
    layout: LayoutChoice = "auto",
    tables: list[LiveTable] | None = None,
    max_nodes: int = 16384,
    systab_how: str = "given (--systab)",
) -> dict[str, Any]:
    """Find the memreserve root (given, through a given system table, or by scanning),
    walk the chain and check every live table against it."""
    doc: dict[str, Any] = {
        "image": {
            "path": str(img.path),
            "kind": img.kind,
            "segments": [{"paddr": s.paddr, "size": s.size} for s in img.segments],
            "warnings": list(img.warnings),
        },
        "systab": None,
        "memreserve": None,
        "tables": [],
        "ok": True,
        "problems": [],
    }
    root = memreserve
    how = "given (--memreserve)" if root is not None else None
    if root is None:
        if systab is None:
            found, seen = find_systab(img)
            doc["systab_scan"] = seen[:32]
            systab, how = found, "found by scanning for 'IBI SYST'"
        else:
            how = systab_how
        if systab is None:
            doc["problems"].append("no valid EFI system table in the image")
        else:
            root = _root_from_systab(img, systab, doc, how)
    chain: MemreserveChain | None = None
    if root is not None:
        chosen, why = detect_layout(img, root) if layout == "auto" else (layout, "given")
        chain = walk_memreserve(
            img.read, img.is_ram, root, chosen, max_nodes=max_nodes, max_entries=MAX_ENTRIES
        )
        doc["memreserve"] = _chain_doc(chain, why, how or "")
        if chain.error:
            doc["problems"].append(f"memreserve walk stopped: {chain.error}")
    entries = chain.entries if chain else []
    for t in tables or []:
        tdoc = _table_doc(img, t, entries)
        doc["tables"].append(tdoc)
        who = "property table" if t.kind == "prop" else f"CPU{t.cpu} pending table"
        if t.size == 0:
            doc["problems"].append(f"{who} at {t.addr:#x}: {_NO_LPIS}")
        elif not tdoc["covered"]:
            doc["problems"].append(
                f"live {who} [{t.addr:#x}, {t.addr + t.size:#x}) is not covered by the "
                "memreserve list: the next kernel may hand it out while the GIC writes it"
            )
            doc["ok"] = False
    if not doc["tables"]:
        # No claim about coverage without a table to check: say so rather than "ok".
        doc["ok"] = False
        doc["problems"].append(
            "no live LPI table known, so nothing was checked against the memreserve list "
            "(none named by options, a GICKEXEC note or kernel log lines in the image: give "
            "--propbaser/--pendbaser or --prop/--pend)"
        )
    return doc


def _root_from_systab(img: MemoryImage, systab: int, doc: dict[str, Any], how: str) -> int | None:
    problem = _systab_problem(img, systab)
    try:
        st, entries = read_config_tables(img, systab)
    except SystemTableError as err:
        doc["problems"].append(str(err))
        return None
    doc["systab"] = {
        "addr": systab,
        "how": how,
        "revision": f"{st.revision >> 16}.{(st.revision & 0xFFFF) // 10}",
        "crc_ok": problem is None,
        "config_tables": [
            {
                "guid": str(uuid.UUID(bytes_le=e.guid)),
                "name": CONFIG_TABLE_NAMES.get(e.guid, ""),
                "table": e.table,
            }
            for e in entries
        ],
    }
    if problem:
        doc["problems"].append(f"EFI system table {systab:#x}: {problem}")
    for e in entries:
        if e.guid == LINUX_EFI_MEMRESERVE_TABLE_GUID:
            return e.table
    doc["problems"].append("no LINUX_EFI_MEMRESERVE_TABLE in the configuration table array")
    return None


def _chain_doc(chain: MemreserveChain, why: str, how: str) -> dict[str, Any]:
    return {
        "root": chain.root,
        "how": how,
        "layout": chain.layout,
        "layout_reason": why,
        "nodes": [
            {
                "addr": n.addr,
                "size": n.size,
                "count": n.count,
                "next": n.next,
                "entries": [{"addr": b, "size": s} for b, s in n.entries],
            }
            for n in chain.nodes
        ],
        "entries": len(chain.entries),
        "error": chain.error,
    }
