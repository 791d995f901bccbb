"""Kernel profiles across versions: feature-flag deltas, the v4.20 24-byte memreserve list,
and cross-version kexec playing out as the bytes in memory dictate."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from gickexec import World
from gickexec.arch.efi import MEMRESERVE_V420_BYTES, MemreserveHeader, MemreserveV420
from gickexec.fw.memreserve import walk_memreserve
from gickexec.kernel.efi import PHYS_ADDR_MAX, arm64_va, memreserve_node_footprint
from gickexec.kernel.profiles import FEATURE_SOURCES, PROFILES, KernelProfile, get_profile

REQUIRED = ["v4.19", "v4.20", "v5.0", "v5.2", "v5.5", "v5.14", "v5.17", "v6.6"]
_NOT_FLAGS = (
    "name",
    "version",  # picks message variants (kernel/printk.py), not a behaviour
    "build",  # measured facts of a built Image (KernelBuild), not a behaviour
    "release",
    "description",
    "notes",
    "page_size",
    "kind",
    "planted_skip_pending_reservation",
)
_FLAGS = [f.name for f in dataclasses.fields(KernelProfile) if f.name not in _NOT_FLAGS]


def _world(seed: int = 1) -> World:
    w = World.build("efi-server-8", seed=seed)
    w.add_device("eth0", device_id=0x100, nvec=8)
    return w


def test_required_profiles_exist_in_release_order() -> None:
    names = list(PROFILES)
    assert [n for n in names if n in REQUIRED] == REQUIRED
    releases = [tuple(int(x) for x in PROFILES[n].release.split(".")) for n in names]
    assert releases == sorted(releases)


def test_every_behaviour_flag_cites_a_linux_commit_or_says_unconfirmed() -> None:
    assert set(_FLAGS) == set(FEATURE_SOURCES)
    for flag, source in FEATURE_SOURCES.items():
        assert "Linux commit" in source or "UNCONFIRMED" in source, flag


@pytest.mark.parametrize(
    ("older", "newer", "changed"),
    [
        (
            "v4.19",
            "v4.20",
            {
                "reuses_preallocated_lpi_tables",
                "registers_lpi_tables_with_efi",
                "memreserve_layout",
                "efi_stub_installs_memreserve_root",
                "defers_persistent_reservations",
                "its_init_before_gic_cpu_init",
            },
        ),
        (
            "v4.20",
            "v5.0",
            {
                "memreserve_layout",
                "memreserve_node_access",
                "memreserve_node_is_page_size",
                "defers_persistent_reservations",
                "memblock_reserved_regions_per_cpu",
                "kexec_file_load",
            },
        ),
        ("v5.0", "v5.2", {"memreserve_node_access", "memreserve_node_is_page_size", "nr_cpus"}),
        ("v5.2", "v5.5", {"memreserve_in_iomem"}),
        ("v5.5", "v5.10", {"buddy_free_to_tail"}),
        ("v5.10", "v5.14", {"memreserve_in_memblock"}),
        (
            "v5.14",
            "v5.17",
            {"pending_memreserve_at_online", "its_reset_baser_before_probe"},
        ),
        ("v5.17", "v6.1", set()),
        ("v6.1", "v6.6", set()),
    ],
)
def test_profiles_differ_only_by_the_cited_deltas(
    older: str, newer: str, changed: set[str]
) -> None:
    a, b = get_profile(older), get_profile(newer)
    assert {f for f in _FLAGS if getattr(a, f) != getattr(b, f)} == changed


def test_memreserve_node_capacity_follows_page_size_only_in_v50() -> None:
    v50_64k = dataclasses.replace(get_profile("v5.0"), page_size=0x10000)
    v52_64k = dataclasses.replace(get_profile("v5.2"), page_size=0x10000)
    assert v50_64k.memreserve_node_bytes == 0x10000  # EFI_MEMRESERVE_COUNT(PAGE_SIZE) = 4095
    assert v52_64k.memreserve_node_bytes == 0x1000  # EFI_MEMRESERVE_COUNT(SZ_4K) = 255


def test_static_memblock_reserved_array_grows_with_nr_cpus_from_v50() -> None:
    assert get_profile("v4.20").init_memblock_reserved_regions == 128
    # CONFIG_NR_CPUS: 64 in v4.19.1, v4.20 and v5.0.1's arch/arm64/Kconfig, 256 in v5.2.1
    assert [get_profile(n).nr_cpus for n in ("v4.19", "v4.20", "v5.0", "v5.2")] == [64] * 3 + [256]
    assert get_profile("v5.0").init_memblock_reserved_regions == 128 + 64 + 1
    assert get_profile("v5.2").init_memblock_reserved_regions == 128 + 256 + 1


def test_v420_writes_one_kmalloced_24_byte_node_per_reservation_and_reuses() -> None:
    w = _world()
    first = w.boot("v4.20")
    chain = w.memreserve_chain()
    assert chain is not None and chain.layout == "v4.20"
    # root + property table + 8 pending tables, newest first
    assert len(chain.nodes) == 1 + 1 + 8
    nodes = chain.list_nodes
    assert all(n.footprint == MEMRESERVE_V420_BYTES for n in chain.nodes)
    # kmalloc-32 slots of one slab page, pushed at the head: 32 bytes apart, descending
    assert [a.addr - b.addr for a, b in itertools.pairwise(nodes)] == [32] * 8
    assert nodes[-1].entries[0][0] == first.gic.prop_table_pa
    second = w.kexec("v4.20")
    w.traffic("eth0", 64)
    w.finish()
    assert second.reused_tables and not second.tainted
    assert "GICv3: Using preallocated redistributor tables" in second.log.lines
    assert (w.ledger.lost, w.corruption.bits) == (0, 0)
    # the handover adds no node: every RD was reused
    chain2 = w.memreserve_chain()
    assert chain2 is not None and len(chain2.nodes) == 10


def test_v50_parser_reads_a_v420_root_as_the_bytes_dictate() -> None:
    """Era B reads the v4.20 root's ``next`` as ``int size`` (low half) and ``count``
    (high half), then reserves 16 + 16 * size bytes from the root (§1.9)."""
    w = _world()
    w.boot("v4.20")
    chain = w.memreserve_chain()
    assert chain is not None
    root = MemreserveV420.from_bytes(w.machine.mem.read(chain.root, 24))
    as_v50 = MemreserveHeader.from_bytes(w.machine.mem.read(chain.root, 16))
    assert as_v50.size == int.from_bytes(
        (root.next & 0xFFFFFFFF).to_bytes(4, "little"), "little", signed=True
    )
    assert as_v50.count == root.next >> 32
    assert as_v50.next == root.base == 0  # so the Era-B walk stops at the root
    second = w.kexec("v5.0")
    w.traffic("eth0", 64)
    w.finish()
    expected = 16 + 16 * as_v50.size if as_v50.size >= 0 else PHYS_ADDR_MAX - chain.root
    assert second.memblock.is_reserved_range(chain.root, min(expected, 1 << 36))
    # The real tables are not covered, so v5.0 cannot reuse them.
    assert not second.reused_tables
    assert any(line.startswith("GICv3: Expected reserved range") for line in second.log.lines)
    assert "CPU0: Failed to disable LPIs" in second.log.lines
    assert w.ledger.lost == 64
    # v5.0 then appends its own page node through root->next (offset 8, v4.20's base).
    after = MemreserveV420.from_bytes(w.machine.mem.read(chain.root, 24))
    assert after.next == root.next and after.base != 0


def test_negative_v420_size_reserves_everything_above_the_root() -> None:
    w = _world()
    w.boot("v5.0")
    chain = w.memreserve_chain()
    assert chain is not None
    node = dataclasses.replace(chain.nodes[0], size=-0x7000_0000)
    assert memreserve_node_footprint(node, get_profile("v5.0")) == PHYS_ADDR_MAX - node.addr
    assert memreserve_node_footprint(node, get_profile("v4.20")) == node.footprint


def test_v420_parser_finds_nothing_in_a_v50_chain_and_clobbers_its_root() -> None:
    w = _world()
    w.boot("v5.0")
    chain = w.memreserve_chain()
    assert chain is not None and len(chain.list_nodes) == 1
    second = w.kexec("v4.20")
    assert not second.reused_tables
    assert "CPU0: Failed to disable LPIs" in second.log.lines
    # v4.20 pushed 24-byte nodes: root->next (offset 0) now overwrites v5.0's size/count.
    hdr = MemreserveHeader.from_bytes(w.machine.mem.read(chain.root, 16))
    v420 = walk_memreserve(w.machine.mem.read, w.machine.mem.is_ram, chain.root, "v4.20")
    assert (hdr.size & 0xFFFF_FFFF) | (hdr.count << 32) == v420.nodes[1].addr
    # every RD kept LPIs on (sticky), so only the new property table was registered
    assert [n.entries for n in v420.list_nodes] == [((second.gic.prop_table_pa, 0x10000),)]


@pytest.mark.parametrize(
    ("profile", "efi_line", "cfg_line"),
    [
        ("v4.20", "efi: EFI v2.70 by EDK II", "efi:  SMBIOS 3.0=0x"),
        ("v5.14", "efi: EFI v2.70 by EDK II", "efi: SMBIOS 3.0=0x"),
        ("v6.1", "efi: EFI v2.70 by EDK II", "efi: SMBIOS 3.0=0x"),
        ("v6.6", "efi: EFI v2.7 by EDK II", "efi: SMBIOS 3.0=0x"),
    ],
)
def test_efi_banner_format_per_era(profile: str, efi_line: str, cfg_line: str) -> None:
    w = _world()
    k = w.boot(profile)
    assert efi_line in k.log.lines
    assert any(line.startswith(cfg_line) for line in k.log.lines)


def test_arm64_va_is_page_offset_plus_offset_into_dram() -> None:
    assert arm64_va(0x9_4000_1000, 0x9_4000_0000) == 0xFFFF_8000_0000_1000
    assert arm64_va(0x9_8000_0000, 0x9_5000_0000) == 0xFFFF_8000_4000_0000


def test_image_loaded_over_an_unpublished_property_table_destroys_the_kernel() -> None:
    """v5.2 publishes its tables in the memreserve list but not in /proc/iomem; kexec-tools
    puts the v5.2 image over the live property table, the image's reservation passes
    gic_check_reserved_range(), the kernel reuses the table and its reset overwrites its
    own code."""
    # QEMU virt: the pre-v5.10 buddy allocator put the tables at the top of the first
    # 128 MiB, and kexec --mem-min=0x46000000 aims the image at them
    w = World.build("qemu-virt", seed=57)
    w.add_device("eth0", device_id=0x100, nvec=2)
    w.boot("v5.2")
    k = w.kexec("v5.2", mem_min=0x46000000)
    img, size = k.image
    assert img <= k.gic.prop_table_pa < img + size
    assert k.log.lines[-1] == "GICv3: Using preallocated redistributor tables"
    assert k.crashed is not None and k.crashed.startswith("hang: gic_reset_prop_table()")
    assert k.online_cpus == []
