"""The 2019 memblock overflow: the memreserve walk against the static reserved array
(INIT_MEMBLOCK_RESERVED_REGIONS), the deferred walk of eff896288872, and the v5.0 fix."""

from __future__ import annotations

import pytest

from gickexec import World
from gickexec.kernel.mm import Memblock


def test_static_array_drops_new_regions_until_resizing_is_allowed() -> None:
    mb = Memblock([(0, 1 << 30)], max_reserved=2)
    assert mb.reserve(0x1000, 0x1000) == 0 and mb.reserve(0x10000, 0x1000) == 0
    assert mb.reserve(0x1800, 0x100) == 0  # inside a region: no new entry needed
    assert mb.reserve(0x20000, 0x1000) == -12  # memblock_double_array() returns -1
    assert mb.reserve(0x2000, 0x1000) == -12  # adjacent still needs a slot first
    assert mb.dropped == [(0x20000, 0x1000), (0x2000, 0x1000)]
    mb.can_resize = True
    assert mb.reserve(0x20000, 0x1000) == 0
    assert mb.max_reserved == 4
    # the doubled array (4 x 24 bytes, one page) went to the top of free memory
    assert mb.resized == [((1 << 30) - 0x1000, 0x1000)]
    assert mb.is_reserved_range((1 << 30) - 0x1000, 0x1000)


def _tx2(profile: str) -> World:
    w = World.build("thunderx2", seed=1)
    w.config_nr_cpus = 256  # a kernel built for the whole machine (see the test below)
    w.add_device("eth0", device_id=0x100, nvec=32)
    w.boot(profile)
    w.traffic("eth0", 448)
    w.kexec(profile)
    w.traffic("eth0", 448)
    w.finish()
    return w


@pytest.fixture(scope="module")
def rc1() -> World:
    return _tx2("v4.20-rc1")


def test_v420_rc1_on_thunderx2_overflows_and_drops_the_property_table(rc1: World) -> None:
    k = rc1.generations[1]
    mb = k.memblock
    assert k.profile.init_memblock_reserved_regions == 128
    # the tables are consecutive 64 KiB blocks, but each v4.20 reservation has its own
    # kmalloc'd 24-byte node between them: 204 regions find no slot
    assert len(mb.dropped) == 204
    # the property table is the oldest entry, walked last: dropped, so not reserved
    old_prop = rc1.generations[0].gic.prop_table_pa
    assert (old_prop, 0x10000) in mb.dropped and not mb.is_reserved_range(old_prop, 0x10000)
    assert not k.reused_tables
    assert any(line.startswith("GICv3: Expected reserved range [") for line in k.log.lines)
    assert sum(line.endswith("Failed to disable LPIs") for line in k.log.lines) == 224
    assert rc1.ledger.lost == 448 and k.log.taint_string == "CW"


def test_v420_defers_the_walk_and_grows_the_array_after_paging_init() -> None:
    w = _tx2("v4.20")
    k = w.generations[1]
    mb = k.memblock
    assert mb.dropped == [] and mb.max_reserved == 256
    assert [s for _, s in mb.resized] == [0x2000]
    # the arrays went top-down into memory the walk had not reserved yet
    assert all(k.owner(a) is not None for a, _ in mb.resized)
    assert {k.owner(a).label for a, _ in mb.resized} == {"memblock: reserved regions array"}  # type: ignore[union-attr]
    assert k.reused_tables and w.ledger.lost == 0


def test_v50_static_array_has_room_for_every_cpu() -> None:
    w = _tx2("v5.0")
    mb = w.generations[1].memblock
    assert mb.max_reserved == 128 + 256 + 1 and mb.dropped == [] and mb.resized == []
    assert w.generations[1].reused_tables and w.ledger.lost == 0


def test_defconfig_nr_cpus_leaves_most_of_a_thunderx2_off() -> None:
    """CONFIG_NR_CPUS is 64 in v4.20's arch/arm64/Kconfig: smp_init_cpus() clips the 224
    CPUs and only 64 pending tables are allocated and published; v5.2's 256 is enough."""
    w = World.build("thunderx2", seed=1)
    k = w.boot("v4.20")
    assert "Number of cores (224) exceeds configured maximum of 64 - clipping" in k.log.lines
    assert len(k.possible_cpus) == len(k.online_cpus) == 64
    chain = w.memreserve_chain()
    assert chain is not None and len(chain.entries) == 65  # 64 pending tables + property
    w2 = World.build("thunderx2", seed=1)
    k2 = w2.boot("v5.2")
    assert len(k2.online_cpus) == 224
    assert not any(line.startswith("Number of cores") for line in k2.log.lines)
    w3 = World.build("thunderx2", seed=1)
    w3.config_nr_cpus = 256
    assert len(w3.boot("v4.20").online_cpus) == 224
