"""Where the boot loader puts the first kernel: its image, initramfs and device tree.

Three loaders, each followed from its source:

* QEMU's ``-kernel`` direct boot (QEMU 7.2 ``hw/arm/boot.c``): ``load_aarch64_image()``
  puts an Image whose ``text_offset`` is below the boot stub's size at RAM base + 2 MiB +
  ``text_offset``; ``arm_load_kernel()`` puts the initrd at RAM base + min(RAM / 2,
  128 MiB) and the DTB after it, 2 MiB aligned for AArch64.
* The Linux EFI stub under UEFI (``drivers/firmware/efi/libstub``, 6.1): with KASLR and an
  EFI_RNG_PROTOCOL seed, ``efi_random_alloc()`` picks slot ``(total_slots * (seed &
  U32_MAX)) >> 32`` among the 64 KiB-aligned places (``EFI_KIMG_ALIGN``) the image fits in
  conventional memory; the initrd is loaded through LoadFile2 into pages the firmware
  hands out top-down.  With ``nokaslr`` the image needs 2 MiB alignment (MIN_KIMG_ALIGN);
  where the firmware then puts it is UNCONFIRMED: the model takes the highest fitting
  2 MiB boundary below the firmware's boot-time area.
* U-Boot ``booti`` on a device-tree board (model choice: image at the first 2 MiB boundary
  of RAM, the DTB at the top of the first bank).

The seed varies only what is random in reality: the EFI stub's slot.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from gickexec.kernel.mm import free_ranges, highest_fit

__all__ = ["FirstBoot", "efi_random_alloc", "efi_stub_boot", "qemu_direct_boot", "uboot_booti"]

_64K = 0x10000
_2M = 0x200000
_PAGE = 0x1000
_128M = 128 << 20
#: QEMU hw/arm/boot.c BOOTLOADER_MAX_SIZE: the image may not start below this offset
_QEMU_BOOTLOADER_MAX = 0x1000


def _page_up(n: int) -> int:
    return (n + _PAGE - 1) & ~(_PAGE - 1)


@dataclass(frozen=True, slots=True)
class FirstBoot:
    """What the first kernel finds: the image's base address, the initramfs ``(addr,
    bytes)`` and the device tree ``(addr, fdt_totalsize)`` (None where there is none, or
    where the tree lives in firmware memory as under UEFI)."""

    image: int
    initrd: tuple[int, int] | None
    dtb: tuple[int, int] | None
    how: str


def qemu_direct_boot(
    ram: tuple[int, int], image_bytes: int, initrd_bytes: int, fdt_bytes: int, text_offset: int = 0
) -> FirstBoot:
    """QEMU ``-kernel Image [-initrd ...]`` on a DT machine (``ram`` = (base, size))."""
    base, size = ram
    offset = text_offset + (2 << 20 if text_offset < _QEMU_BOOTLOADER_MAX else 0)
    image = base + offset
    initrd = None
    after = image + image_bytes
    if initrd_bytes:
        start = max(base + min(size // 2, _128M), _page_up(after))
        initrd = (start, initrd_bytes)
        after = start + initrd_bytes
    dtb = ((after + _2M - 1) & ~(_2M - 1), fdt_bytes)
    return FirstBoot(image, initrd, dtb, "QEMU -kernel (hw/arm/boot.c)")


def efi_random_alloc(
    conventional: Sequence[tuple[int, int]], size: int, align: int, seed: int
) -> int | None:
    """``efi_random_alloc()``: slot ``(total * (seed & U32_MAX)) >> 32`` of the
    ``align``-aligned places ``size`` bytes fit in, walking ``conventional``
    ``[start, end)`` ranges in order; None if there is no slot."""
    slots: list[tuple[int, int]] = []
    total = 0
    for start, end in conventional:
        first = (start + align - 1) & ~(align - 1)
        last = (end - size) & ~(align - 1)
        if last < first:
            continue
        n = (last - first) // align + 1
        slots.append((first, n))
        total += n
    if not total:
        return None
    target = (total * (seed & 0xFFFFFFFF)) >> 32
    for first, n in slots:
        if target < n:
            return first + target * align
        target -= n
    return None


def efi_stub_boot(
    conventional: Sequence[tuple[int, int]],
    image_bytes: int,
    initrd_bytes: int,
    initrd_top: int,
    *,
    kaslr: bool,
    rng: random.Random,
    pinned: int | None = None,
) -> FirstBoot:
    """The EFI stub's placement: ``pinned`` (where a real run's stub put it), else a
    random 64 KiB slot (KASLR) or the highest 2 MiB boundary below ``initrd_top``; the
    initrd goes top-down below ``initrd_top`` (or the top of conventional memory)."""
    if pinned is not None:
        image = pinned
    elif kaslr:
        found = efi_random_alloc(conventional, image_bytes, _64K, rng.getrandbits(64))
        if found is None:
            raise ValueError("no room for the kernel image in conventional memory")
        image = found
    else:
        found = highest_fit(conventional, image_bytes, _2M, 0, initrd_top or None)
        if found is None:
            raise ValueError("no room for the kernel image in conventional memory")
        image = found
    initrd = None
    if initrd_bytes:
        free = free_ranges(conventional, [(image, image_bytes)])
        at = highest_fit(free, _page_up(initrd_bytes), _PAGE, 0, initrd_top or None)
        if at is None:
            raise ValueError("no room for the initrd in conventional memory")
        initrd = (at, initrd_bytes)
    how = "EFI stub" + (", KASLR" if kaslr and pinned is None else "")
    return FirstBoot(image, initrd, None, how)


def uboot_booti(ram: Sequence[tuple[int, int]], image_bytes: int, fdt_bytes: int) -> FirstBoot:
    """U-Boot ``booti`` (model choice, see the module docstring)."""
    start, end = ram[0]
    image = (start + _2M - 1) & ~(_2M - 1)
    dtb = ((end - fdt_bytes) & ~(_2M - 1), fdt_bytes)
    return FirstBoot(image, None, dtb, "U-Boot booti")
