"""kexec loaders: where kexec-tools and kexec_file_load put the image, initrd and DTB,
what each avoids per kernel version, and what happens when a segment lands on live LPI
tables (the next kernel mistakes the segment's reservation for the tables')."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from gickexec import World
from gickexec.cli import main
from gickexec.kernel.kexec import DTB_BYTES, INITRD_BYTES, Loader, place_segments
from gickexec.kernel.mm import free_ranges
from gickexec.kernel.profiles import PROFILES

KERNEL_IMAGE_BYTES = PROFILES["v6.6"].build.image_size
_2M = 0x200000
_G = 1 << 30
RAM = [(0x8000_0000, 0x1_0000_0000)]


def _world(
    seed: int,
    profile: str,
    loader: Loader,
    *,
    platform: str = "efi-server-8",
    mem_min: int = 0,
    initrd: int = INITRD_BYTES,
) -> World:
    w = World.build(platform, seed=seed)
    w.add_device("eth0", device_id=0x100, nvec=8 if platform != "qemu-virt" else 2)
    w.boot(profile)
    w.traffic("eth0", 64)
    w.kexec(profile, loader=loader, mem_min=mem_min, initrd=initrd)
    w.traffic("eth0", 64)
    w.finish()
    return w


def test_free_ranges_subtracts_used_ranges() -> None:
    assert free_ranges([(0, 100), (200, 300)], [(50, 10), (90, 120), (250, 100)]) == [
        (0, 50),
        (60, 90),
        (210, 250),
    ]


def test_kexec_tools_puts_every_segment_in_the_lowest_holes_above_the_image() -> None:
    used = [(0x8000_0000 + 0x100000, 0x1000)]  # a reserved page 1 MiB into RAM
    seg = place_segments("kexec-tools", RAM, used, KERNEL_IMAGE_BYTES)
    assert seg is not None
    image = 0x8000_0000 + _2M  # next 2 MiB boundary above the reserved page
    assert seg.image == (image, KERNEL_IMAGE_BYTES)
    assert seg.initrd == (image + KERNEL_IMAGE_BYTES, INITRD_BYTES)
    assert seg.dtb == (image + KERNEL_IMAGE_BYTES + INITRD_BYTES, DTB_BYTES)
    assert seg.segment_at(image + KERNEL_IMAGE_BYTES) == "initrd"
    assert seg.segment_at(image - 1) is None


def test_kexec_file_load_puts_the_dtb_at_the_top_on_a_2m_boundary() -> None:
    seg = place_segments("kexec_file_load", RAM, [], KERNEL_IMAGE_BYTES)
    assert seg is not None
    assert seg.image[0] == 0x8000_0000
    assert seg.initrd[0] == 0x8000_0000 + KERNEL_IMAGE_BYTES
    assert seg.dtb == (0x1_0000_0000 - _2M, DTB_BYTES)


def test_no_hole_no_segments() -> None:
    assert place_segments("kexec-tools", [(0, 32 << 20)], [], KERNEL_IMAGE_BYTES) is None
    # the initrd of kexec_file_load must stay in a 32 GiB window from the image's GiB
    far = [(0, KERNEL_IMAGE_BYTES), (40 * _G, 41 * _G)]
    assert place_segments("kexec_file_load", far, [], KERNEL_IMAGE_BYTES) is None


def test_kexec_file_load_lands_on_the_unpublished_table_before_v514() -> None:
    """v5.10 reserves its tables in the memreserve list and in
    /proc/iomem, but not in memblock; kexec_file_load puts the image over the property
    table, the next kernel takes the image's reservation for the table's and its reset
    overwrites its own code."""
    w = _world(234, "v5.10", "kexec_file_load")
    k = w.generations[1]
    img, size = k.image
    assert k.segments is not None and k.segments.loader == "kexec_file_load"
    assert img <= k.gic.prop_table_pa < img + size
    assert k.crashed is not None and "overwrote the kernel's own image" in k.crashed
    # memset() of the 'reused' table wipes the code it runs from: silence
    assert k.crashed.startswith("hang:")
    assert k.log.lines[-1] == "GICv3: Using preallocated redistributor tables"
    assert w.ledger.lost == 64


def test_kexec_tools_avoids_the_same_table_through_proc_iomem() -> None:
    w = _world(234, "v5.10", "kexec-tools")
    k = w.generations[1]
    prop = k.gic.prop_table_pa
    assert k.crashed is None and k.reused_tables and w.ledger.lost == 0
    assert k.segment_at(prop, 0x10000) is None
    assert "Freeing initrd memory: 32768K" in k.log.lines
    assert k.initrd_freed and k.owner(k.segments.initrd[0]) is None  # type: ignore[union-attr]


# v5.2 on QEMU virt: the pre-v5.10 buddy allocator puts the tables at the top of the first
# 128 MiB; kexec --mem-min=0x46000000 aims the image at them
_PLACES: dict[str, dict[str, Any]] = {
    "v5.10": {},
    "v5.2": {"platform": "qemu-virt", "mem_min": 0x46000000},
}


@pytest.mark.parametrize(
    ("seed", "profile", "loader", "flag"),
    [
        (234, "v5.10", "kexec_file_load", "memreserve_in_memblock"),
        (57, "v5.2", "kexec-tools", "memreserve_in_iomem"),
    ],
)
def test_publishing_flag_is_what_keeps_the_loader_off_the_tables(
    monkeypatch: pytest.MonkeyPatch, seed: int, profile: str, loader: Loader, flag: str
) -> None:
    where = _PLACES[profile]
    assert _world(seed, profile, loader, **where).generations[1].crashed is not None
    fixed = dataclasses.replace(PROFILES[profile], **{flag: True})
    monkeypatch.setitem(PROFILES, profile, fixed)
    w = _world(seed, profile, loader, **where)
    assert w.generations[1].crashed is None and w.generations[1].reused_tables
    assert w.ledger.lost == 0 and w.corruption.bits == 0


def test_property_table_under_the_initrd_breaks_the_initramfs() -> None:
    # a 96 MiB initramfs above the image reaches the top of the first 128 MiB
    w = _world(168, "v5.2", "kexec-tools", platform="qemu-virt", initrd=96 << 20)
    k = w.generations[1]
    assert k.segments is not None
    base, size = k.segments.initrd
    assert base <= k.gic.prop_table_pa < base + size
    assert k.gic_hits[0] == ("initrd", k.gic.prop_table_pa, "gic_reset_prop_table()")
    assert "Initramfs unpacking failed: junk in compressed archive" in k.log.lines
    assert k.log.lines[-1] == (
        "Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)"
    )
    assert k.crashed is not None and "before it was unpacked" in k.crashed


def test_kexec_tools_does_not_avoid_the_old_image_or_crashkernel() -> None:
    w = World.build("efi-server-8", seed=1)
    k = w.boot("v6.6", cmdline="crashkernel=512M")
    view = w._loader_view(k, "kexec-tools")
    # "Kernel code" and "Kernel data" are not avoided (only the init sections between them)
    for img, size in k.iomem_kernel:
        assert not any(a < img + size and img < a + s for a, s in view)
    img, size = k.image
    assert k.crashkernel is not None
    assert not any(a <= k.crashkernel[0] < a + s for a, s in view)
    file_view = w._loader_view(k, "kexec_file_load")
    # memblock reserves the image from _stext to _end
    start = img + k.profile.build.stext
    assert any(a <= start and img + size <= a + s for a, s in file_view)


def test_v420_has_no_kexec_file_load() -> None:
    w = World.build("efi-server-8", seed=1)
    w.boot("v4.20")
    assert w.kexec("v6.6", loader="kexec_file_load") is w.generations[0]
    assert len(w.generations) == 1 and w.kernel.crashed is None
    assert "no kexec_file_load()" in w.notes[0]


def test_scenario_loader_field_is_validated(tmp_path: Path) -> None:
    bad = (
        'platform = "efi-server-8"\n[[steps]]\naction = "boot"\nkernel = "v6.6"\n'
        '[[steps]]\naction = "kexec"\nkernel = "v6.6"\nloader = "kexec -s"\n'
    )
    path = tmp_path / "bad.toml"
    path.write_text(bad)
    res = CliRunner().invoke(main, ["run", str(path)])
    assert res.exit_code == 2
    assert "bad.toml:8: field 'steps[1].loader': unknown loader 'kexec -s'" in res.output
