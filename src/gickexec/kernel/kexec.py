"""Where a kexec loader puts the next kernel's image, initrd and DTB.

Two loaders, two views of "memory in use":

* ``kexec-tools`` (the ``kexec_load`` syscall) reads ``/proc/iomem`` in userspace: every
  "System RAM" range minus its nested children other than "Kernel code", "Kernel data"
  and "Crash kernel" (kexec-tools ``kexec/arch/arm64/kexec-arm64.c`` ``get_memory_ranges``
  and ``to_be_excluded``, read in a public copy).  The running kernel's "reserved"
  children are its boot-time memblock reservations, exported once at ``arch_initcall``
  (Linux commit 50d7ba36b916 ("arm64: export memblock_reserve()d regions via
  /proc/iomem") (v4.19)), plus, since v5.5, what ``efi_mem_reserve_persistent()``
  reserved later (profile flag ``memreserve_in_iomem``).  The image goes in the lowest
  2 MiB-aligned hole (``arm64_locate_kernel_segment`` -> ``locate_hole(..., MiB(2), 0,
  ULONG_MAX, 1)``: ``hole_end > 0`` takes the *lowest* fitting range); the initrd and
  then the DTB go in the lowest page-aligned holes above the image
  (``arm64_load_other_segments``).  Older kexec-tools without Akashi's nested-"reserved"
  handling are not modelled (their merge status is UNCONFIRMED).
* ``kexec_file_load`` places segments in the kernel (``arch/arm64/kernel/kexec_image.c``
  and ``machine_kexec_file.c``, read in a public copy) by walking memblock's free
  ranges (``kexec_walk_memblock``, ARCH_KEEP_MEMBLOCK): memory minus *current* memblock
  reservations, which include runtime memreserve reservations only from v5.14 (flag
  ``memreserve_in_memblock``).  Image: lowest hole aligned to MIN_KIMG_ALIGN (2 MiB);
  initrd: lowest page-aligned hole above the image within a 1 GiB-aligned 32 GiB window;
  DTB: *highest* 2 MiB-aligned hole above the image.

Neither loader knows where the GIC's live LPI tables are unless the running kernel
published them, which is the whole point.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from gickexec.kernel.mm import free_ranges, highest_fit

if TYPE_CHECKING:
    from gickexec.hw.platform import Platform

__all__ = [
    "DTB_BYTES",
    "INITRD_BYTES",
    "LOADERS",
    "PURGATORY_BYTES",
    "KexecOptions",
    "KexecSegments",
    "Loader",
    "free_ranges",
    "kexec_fdt_bytes",
    "load_segments",
    "locate_hole",
    "place_segments",
]

Loader = Literal["kexec-tools", "kexec_file_load"]
LOADERS: tuple[Loader, ...] = ("kexec-tools", "kexec_file_load")

_PAGE = 0x1000
_2M = 0x200000
_1G = 1 << 30
ULONG_MAX = (1 << 64) - 1
#: A distribution initramfs (compressed cpio); the exact size only moves the segments.
INITRD_BYTES = 32 << 20
#: The flattened device tree after ``fdt_pack()``, rounded to whole pages.
DTB_BYTES = 0x10000
#: kexec-tools 2.0.25's arm64 purgatory: 0x3558 bytes, loaded as a 0x4000-byte segment
#: (the real runs' ``segment[3].memsz``)
PURGATORY_BYTES = 0x4000


#: The EFI stub's generated device tree as kexec-tools packs it before ``bootargs``
#: (measured: the real UEFI runs' 0x248-byte DTB with 62 bytes of bootargs)
EFI_STUB_FDT_PACKED = 520
#: What ``kexec -p`` adds to /chosen: ``linux,elfcorehdr`` and
#: ``linux,usable-memory-range`` (12-byte property headers, 16-byte values, their names
#: in the strings block; the real UEFI kdump DTB is 99 bytes larger for that)
KDUMP_FDT_EXTRA = 2 * (12 + 16) + len("linux,elfcorehdr\0linux,usable-memory-range\0")


def kexec_fdt_bytes(platform: Platform, bootargs: str, *, kdump: bool) -> int:
    """Bytes of the DTB kexec-tools loads: the running kernel's tree packed, plus the
    new ``bootargs`` (NUL-terminated, 4-byte padded) and, for ``-p``, the crash props."""
    base = EFI_STUB_FDT_PACKED if platform.boot_path == "uefi-acpi" else platform.fdt_packed_bytes
    args = (len(bootargs.encode()) + 1 + 3) & ~3
    return base + args + (KDUMP_FDT_EXTRA if kdump else 0)


@dataclass(frozen=True, slots=True)
class KexecOptions:
    """What ``kexec -l``/``-p`` is told: the image's ``image_size`` (from its header),
    the initrd's and the packed DTB's sizes, ``--mem-min``/``--mem-max``."""

    image_size: int
    initrd_bytes: int = INITRD_BYTES
    dtb_bytes: int = DTB_BYTES
    mem_min: int = 0
    mem_max: int = ULONG_MAX


@dataclass(frozen=True, slots=True)
class KexecSegments:
    """The loaded segments: ``(addr, size)`` each; the image includes its BSS."""

    loader: Loader
    image: tuple[int, int]
    initrd: tuple[int, int]
    dtb: tuple[int, int]
    purgatory: tuple[int, int] | None = None
    elfcorehdr: tuple[int, int] | None = None
    #: the initramfs's own length (``linux,initrd-end`` - start); the segment is whole pages
    initrd_bytes: int | None = None

    @property
    def initramfs(self) -> tuple[int, int] | None:
        """``(start, bytes)`` of the initramfs the DTB describes, or None."""
        if not self.initrd[1]:
            return None
        size = self.initrd_bytes if self.initrd_bytes is not None else self.initrd[1]
        return self.initrd[0], size

    def named(self) -> list[tuple[str, int, int]]:
        """``(name, addr, size)`` for each segment, image first."""
        out = [
            ("kernel image", *self.image),
            ("initrd", *self.initrd),
            ("device tree", *self.dtb),
        ]
        if self.purgatory is not None:
            out.append(("purgatory", *self.purgatory))
        if self.elfcorehdr is not None:
            out.append(("elfcorehdr", *self.elfcorehdr))
        return [seg for seg in out if seg[2] > 0]

    def segment_at(self, addr: int) -> str | None:
        return next((n for n, a, s in self.named() if a <= addr < a + s), None)


def _page_up(n: int) -> int:
    return (n + _PAGE - 1) & ~(_PAGE - 1)


def locate_hole(
    ranges: Sequence[tuple[int, int]],
    placed: Sequence[tuple[int, int]],
    size: int,
    align: int,
    hole_min: int,
    hole_max: int,
    hole_end: int,
    mem_min: int = 0,
    mem_max: int = ULONG_MAX,
) -> int | None:
    """kexec-tools ``locate_hole()`` (kexec/kexec.c, 2.0.25): the memory ``ranges``
    (``[start, end)``, what get_memory_ranges() kept) minus the segments already
    ``placed`` (``(addr, size)``); each hole clipped to ``mem_min``/``mem_max`` and
    ``hole_min``/``hole_max`` and its start aligned up; ``hole_end > 0`` takes the lowest
    fitting hole's start, otherwise the highest fitting hole's top (aligned down)."""
    holes = free_ranges(ranges, placed)
    base: int | None = None
    for start, end in holes:
        last = end - 1  # kexec-tools keeps inclusive ends
        lo = max(start, mem_min, hole_min)
        lo = (lo + align - 1) & ~(align - 1)
        hi = min(last, mem_max, hole_max)
        if lo >= hi or lo >= mem_max or hi <= mem_min:
            continue
        if hi - lo >= size - 1:
            if hole_end > 0:
                return lo
            base = (hi - size + 1) & ~(align - 1)
    return base


def _lowest(free: Sequence[tuple[int, int]], size: int, align: int, lo: int, hi: int) -> int | None:
    for start, end in free:
        base = (max(start, lo) + align - 1) & ~(align - 1)
        if base + size <= min(end, hi):
            return base
    return None


def _kexec_tools(
    ram: Sequence[tuple[int, int]],
    used: Sequence[tuple[int, int]],
    opts: KexecOptions,
    crash: tuple[int, int] | None,
) -> KexecSegments | str:
    """kexec-tools 2.0.25, kexec/arch/arm64: ``arm64_locate_kernel_segment()`` then
    ``arm64_load_other_segments()`` (initrd, DTB, purgatory above the image) and, for
    ``-p``, ``load_crashdump_segments()`` (elfcorehdr at the top of the crash region)."""
    ranges = free_ranges(ram, used)
    placed: list[tuple[int, int]] = []
    image_size = opts.image_size
    elfcorehdr: tuple[int, int] | None = None
    if crash is not None:
        cstart, csize = crash
        hdr = locate_hole(ranges, placed, _PAGE, _PAGE, cstart, cstart + csize - 1, -1)
        if hdr is None:
            return "Could not find a free area for the elfcorehdr in the crash kernel region"
        elfcorehdr = (hdr, _PAGE)
        placed.append(elfcorehdr)
        image = (max(cstart, opts.mem_min) + _2M - 1) & ~(_2M - 1)
        if image + image_size > min(opts.mem_max, cstart + csize):
            return "arm64_locate_kernel_segment: Crash kernel out of range"
        hole_max = cstart + csize - 1
    else:
        found = locate_hole(
            ranges, placed, image_size, _2M, 0, ULONG_MAX, 1, opts.mem_min, opts.mem_max
        )
        if found is None:
            return f"Could not find a free area of memory of {image_size:#x} bytes"
        image = found
        hole_max = ULONG_MAX
    placed.append((image, image_size))
    hole_min = image + image_size
    out: list[tuple[int, int]] = []
    for what, nbytes in (
        ("initrd", opts.initrd_bytes),
        ("dtb", opts.dtb_bytes),
        ("purgatory", PURGATORY_BYTES),
    ):
        memsz = _page_up(nbytes)
        if memsz == 0:
            out.append((0, 0))
            continue
        at = locate_hole(
            ranges, placed, memsz, _PAGE, hole_min, hole_max, 1, opts.mem_min, opts.mem_max
        )
        if at is None:
            return f"Could not find a free area of memory of {memsz:#x} bytes for the {what}"
        placed.append((at, memsz))
        out.append((at, memsz))
    return KexecSegments(
        "kexec-tools", (image, image_size), out[0], out[1], out[2], elfcorehdr, opts.initrd_bytes
    )


def place_segments(
    loader: Loader,
    ram: Sequence[tuple[int, int]],
    used: Sequence[tuple[int, int]],
    image_bytes: int | KexecOptions,
    crash: tuple[int, int] | None = None,
) -> KexecSegments | None:
    """Where ``loader`` puts the segments when ``used`` (``(addr, size)``) is what it
    must avoid; None when a segment does not fit ("Could not find a free area")."""
    got = load_segments(loader, ram, used, image_bytes, crash)
    return got if isinstance(got, KexecSegments) else None


def load_segments(
    loader: Loader,
    ram: Sequence[tuple[int, int]],
    used: Sequence[tuple[int, int]],
    image_bytes: int | KexecOptions,
    crash: tuple[int, int] | None = None,
) -> KexecSegments | str:
    """:func:`place_segments`, or why the loader gave up (its message)."""
    opts = image_bytes if isinstance(image_bytes, KexecOptions) else KexecOptions(image_bytes)
    if loader == "kexec-tools":
        return _kexec_tools(ram, used, opts, crash)
    placed: list[tuple[int, int]] = []

    def holes() -> list[tuple[int, int]]:
        return free_ranges(ram, [*used, *placed])

    top = max(e for _, e in ram)
    image = _lowest(holes(), opts.image_size, _2M, max(0, opts.mem_min), top)
    if image is None:
        return f"Could not find a free area of memory of {opts.image_size:#x} bytes"
    placed.append((image, opts.image_size))
    above = image + opts.image_size
    initrd_bytes = _page_up(opts.initrd_bytes)
    dtb_bytes = _page_up(opts.dtb_bytes)
    window = (image & ~(_1G - 1)) + 32 * _1G
    initrd = _lowest(holes(), initrd_bytes, _PAGE, above, window)
    if initrd is None:
        return "no room for the initrd within 32 GiB of the image"
    placed.append((initrd, initrd_bytes))
    dtb = highest_fit(holes(), dtb_bytes, _2M, above, top)
    if dtb is None:
        return "no room for the device tree"
    return KexecSegments(
        loader,
        (image, opts.image_size),
        (initrd, initrd_bytes),
        (dtb, dtb_bytes),
        initrd_bytes=opts.initrd_bytes,
    )
