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
  handling are not modelled (their merge status is UNCONFIRMED, linux-kernel.md §1.7).
* ``kexec_file_load`` places segments in the kernel (``arch/arm64/kernel/kexec_image.c``
  and ``machine_kexec_file.c``, read in a public copy) by walking memblock's free
  ranges (``kexec_walk_memblock``, ARCH_KEEP_MEMBLOCK): memory minus *current* memblock
  reservations, which include runtime memreserve reservations only from v5.14 (flag
  ``memreserve_in_memblock``).  Image: lowest hole aligned to MIN_KIMG_ALIGN (2 MiB);
  initrd: lowest page-aligned hole above the image within a 1 GiB-aligned 32 GiB window;
  DTB: *highest* 2 MiB-aligned hole above the image.

Neither loader knows where the GIC's live LPI tables are unless the running kernel
published them, which is the whole point (linux-kernel.md §4 items 3 and 4).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from gickexec.kernel.mm import free_ranges, highest_fit

__all__ = [
    "DTB_BYTES",
    "INITRD_BYTES",
    "LOADERS",
    "KexecSegments",
    "Loader",
    "free_ranges",
    "place_segments",
]

Loader = Literal["kexec-tools", "kexec_file_load"]
LOADERS: tuple[Loader, ...] = ("kexec-tools", "kexec_file_load")

_PAGE = 0x1000
_2M = 0x200000
_1G = 1 << 30
#: A distribution initramfs (compressed cpio); the exact size only moves the segments.
INITRD_BYTES = 32 << 20
#: The flattened device tree after ``fdt_pack()``, rounded to whole pages.
DTB_BYTES = 0x10000


@dataclass(frozen=True, slots=True)
class KexecSegments:
    """The loaded segments: ``(addr, size)`` each; the image includes its BSS."""

    loader: Loader
    image: tuple[int, int]
    initrd: tuple[int, int]
    dtb: tuple[int, int]

    def named(self) -> list[tuple[str, int, int]]:
        """``(name, addr, size)`` for each segment, image first."""
        return [
            ("kernel image", *self.image),
            ("initrd", *self.initrd),
            ("device tree", *self.dtb),
        ]

    def segment_at(self, addr: int) -> str | None:
        return next((n for n, a, s in self.named() if a <= addr < a + s), None)


def _lowest(free: Sequence[tuple[int, int]], size: int, align: int, lo: int, hi: int) -> int | None:
    for start, end in free:
        base = (max(start, lo) + align - 1) & ~(align - 1)
        if base + size <= min(end, hi):
            return base
    return None


def place_segments(
    loader: Loader,
    ram: Sequence[tuple[int, int]],
    used: Sequence[tuple[int, int]],
    image_bytes: int,
) -> KexecSegments | None:
    """Where ``loader`` puts the segments when ``used`` (``(addr, size)``) is what it
    must avoid; None when a segment does not fit ("Could not find a free area")."""
    placed: list[tuple[int, int]] = []

    def holes() -> list[tuple[int, int]]:
        return free_ranges(ram, [*used, *placed])

    top = max(e for _, e in ram)
    image = _lowest(holes(), image_bytes, _2M, 0, top)
    if image is None:
        return None
    placed.append((image, image_bytes))
    above = image + image_bytes
    if loader == "kexec-tools":
        initrd = _lowest(holes(), INITRD_BYTES, _PAGE, above, top)
        if initrd is None:
            return None
        placed.append((initrd, INITRD_BYTES))
        dtb = _lowest(holes(), DTB_BYTES, _PAGE, above, top)
    else:
        window = (image & ~(_1G - 1)) + 32 * _1G
        initrd = _lowest(holes(), INITRD_BYTES, _PAGE, above, window)
        if initrd is None:
            return None
        placed.append((initrd, INITRD_BYTES))
        dtb = highest_fit(holes(), DTB_BYTES, _2M, above, top)
    if dtb is None:
        return None
    return KexecSegments(loader, (image, image_bytes), (initrd, INITRD_BYTES), (dtb, DTB_BYTES))
