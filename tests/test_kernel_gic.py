"""The GICv3 ITS driver across kexec, through World (drivers/irqchip/irq-gic-v3-its.c,
v4.19.1 to v6.1)."""

from __future__ import annotations

import dataclasses
import re

import pytest

from gickexec.hw.memory import Agent, AgentKind
from gickexec.hw.platform import PLATFORMS
from gickexec.kernel.kernel import Kernel
from gickexec.kernel.mm import Role
from gickexec.scenario.world import World

SZ_64K = 0x10000
NVEC = 4
LPI_BASE = 8192
#: LPI_PROP_DEFAULT_PRIO | LPI_PROP_GROUP1: "Priority 0xa0, Group-1, disabled" (§2.4)
PROP_DISABLED = 0xA2
PROP_ENABLED = 0xA3

_PROP_RE = re.compile(r"^GICv3: using LPI property table @0x([0-9a-f]{16})$")
_PEND_RE = re.compile(
    r"^GICv3: CPU(\d+): using (allocated|reserved) LPI pending table @0x([0-9a-f]{16})$"
)
_OLD_PEND_RE = re.compile(r"^CPU(\d+): using LPI pending table @0x([0-9a-f]{16})$")


def _prop_addr(k: Kernel) -> int:
    hits = [int(m.group(1), 16) for line in k.log.lines if (m := _PROP_RE.match(line))]
    assert len(hits) == 1, hits
    return hits[0]


def _pend_addrs(k: Kernel, kind: str) -> dict[int, int]:
    out: dict[int, int] = {}
    for line in k.log.lines:
        m = _PEND_RE.match(line)
        if m and m.group(2) == kind:
            out[int(m.group(1))] = int(m.group(3), 16)
    return out


def _old_pend_addrs(k: Kernel) -> dict[int, int]:
    return {
        int(m.group(1)): int(m.group(2), 16)
        for line in k.log.lines
        if (m := _OLD_PEND_RE.match(line))
    }


def _world(platform: str = "efi-server-8", seed: int = 1) -> World:
    w = World.build(platform, seed=seed)
    w.add_device("eth0", device_id=0x100, nvec=NVEC)
    return w


def _is_pending(w: World, table: int, intid: int) -> bool:
    return bool(w.machine.mem.read_u8(table + intid // 8) & (1 << (intid % 8)))


# -- (1) EFI, v6.6 -> v6.6: the tables are reused ------------------------------------------


def test_efi_kexec_v66_reuses_the_first_kernels_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    spares: list[tuple[int, int, int]] = []
    real_alloc = Kernel.alloc_pages

    def alloc(
        self: Kernel, size: int, label: str, role: Role | None = None, *, zero: bool = True
    ) -> int:
        addr = real_alloc(self, size, label, role, zero=zero)
        if m := re.fullmatch(r"LPI pending table CPU(\d+) \(spare\)", label):
            spares.append((self.generation, int(m.group(1)), addr))
        return addr

    monkeypatch.setattr(Kernel, "alloc_pages", alloc)

    w = _world()
    k0 = w.boot("v6.6")
    cpus = w.platform.cpus
    prop0 = _prop_addr(k0)
    pend0 = _pend_addrs(k0, "allocated")
    assert sorted(pend0) == list(range(cpus))
    assert "GICv3: Using preallocated redistributor tables" not in k0.log.lines
    w.traffic("eth0", 8)
    # Leave junk in the property table: the next kernel must reset it (§2.4).
    junk = [0, 5, 100, 0x8000, SZ_64K - 1]
    for off in junk:
        w.machine.mem.write_u8(prop0 + off, 0xFF, Agent(AgentKind.KERNEL, 0, generation=0))

    k1 = w.kexec("v6.6")
    lines = k1.log.lines
    assert "GICv3: Using preallocated redistributor tables" in lines
    # preallocated comes before the property table line, which names the same table
    assert lines.index("GICv3: Using preallocated redistributor tables") < lines.index(
        f"GICv3: using LPI property table @0x{prop0:016x}"
    )
    assert _pend_addrs(k1, "allocated") == {}
    for cpu in range(cpus):
        assert f"GICv3: CPU{cpu}: using reserved LPI pending table @0x{pend0[cpu]:016x}" in lines
    assert _pend_addrs(k1, "reserved") == pend0
    assert k1.reused_tables
    assert not k1.log.taints

    # The property table: all 0xa2 except the LPIs the new kernel enabled.
    expected = bytearray([PROP_DISABLED]) * SZ_64K
    for vec in range(NVEC):
        hwirq = k1.irq_of_vector[("eth0", vec)].hwirq
        expected[hwirq - LPI_BASE] = PROP_ENABLED
    assert expected[:NVEC] == bytes([PROP_ENABLED]) * NVEC
    assert w.machine.mem.read(prop0, SZ_64K) == bytes(expected)

    # The redistributors still use the first kernel's tables, as the kernel believes.
    for cpu in range(cpus):
        rd = w.machine.rdists[cpu]
        assert rd.prop_addr == prop0
        assert rd.pend_addr == pend0[cpu]
        owner = k1.owner(pend0[cpu])
        assert owner is not None and owner.role == Role("pend", cpu)

    # The spare tables the second kernel allocated at its_init are given back.
    spare1 = {cpu: addr for gen, cpu, addr in spares if gen == 1}
    assert sorted(spare1) == list(range(cpus))
    assert k1.pages is not None
    for cpu, addr in spare1.items():
        assert addr != pend0[cpu]
        # back in the buddy allocator, which may have handed it out again since
        owner = k1.owner(addr)
        assert owner is None or "pending table" not in owner.label
        assert k1.gic.rd[cpu].pend_page is None

    w.traffic("eth0", 8)
    w.finish()
    assert w.ledger.delivered_per_generation[1] == w.ledger.sent_per_generation[1] == 8
    assert w.ledger.lost == 0
    assert w.corruption.bits == 0


def test_efi_kexec_v66_property_table_owned_and_reserved_in_second_kernel() -> None:
    w = _world()
    k0 = w.boot("v6.6")
    prop0 = _prop_addr(k0)
    k1 = w.kexec("v6.6")
    assert k1.gic.prop_table_pa == prop0
    assert k1.gic.lpi_id_bits == 16  # PROPBASER.IDbits + 1
    assert k1.memblock.is_reserved_range(prop0, SZ_64K)
    owner = k1.owner(prop0)
    assert owner is not None and owner.role == Role("prop")


# -- (2) EFI, v4.19 -> v4.19: no fix; redist_disable_lpis() meets a sticky EnableLPIs -----


def test_v419_kexec_cannot_disable_lpis_and_gives_the_cpus_none() -> None:
    """Linux v4.19.1 redist_disable_lpis(): the warning without a prefix, TAINT_CRAP,
    "Failed to disable LPIs" (-EBUSY), and its_cpu_init() stops there: no pending table,
    nothing programmed, no collection.  MSIs sent during the handover pend in the first
    kernel's tables, which the second kernel owns."""
    w = _world()
    w.add_device("nvme0", device_id=0x200, nvec=NVEC, shutdown_hook=False)
    k0 = w.boot("v4.19")
    cpus = w.platform.cpus
    old = _old_pend_addrs(k0)
    assert sorted(old) == list(range(cpus))
    old_prop = w.machine.rdists[0].prop_addr
    k1 = w.kexec("v4.19", handover_msis=8)
    assert _old_pend_addrs(k1) == {}
    for cpu in range(cpus):
        booted = f"CPU{cpu}: Booted with LPIs enabled, memory probably corrupted"
        assert booted in k1.log.lines and f"GICv3: {booted}" not in k1.log.lines
        assert f"CPU{cpu}: Failed to disable LPIs" in k1.log.lines
        assert k1.gic.redist_disable_lpis(cpu) == -16  # -EBUSY, every time it is asked
        rd = w.machine.rdists[cpu]
        assert rd.pend_addr == old[cpu] and rd.prop_addr == old_prop
    assert "C" in k1.log.taints
    assert not k1.gic.collections or all(
        c.target_address == (1 << 64) - 1 for c in k1.gic.collections.values()
    )
    w.traffic("eth0", 8)
    w.finish()
    assert w.ledger.delivered_per_generation[1] == 0
    events = [e for e in w.corruption.events if e.between_kernels and e.value == 1]
    assert events and all(
        any(old[cpu] <= e.addr < old[cpu] + 0x10000 for cpu in old) for e in events
    )


def test_v419_kexec_clears_a_clearable_enable_lpis_and_programs_new_tables() -> None:
    """Where EnableLPIs can be cleared (QEMU), v4.19 warns and taints, then its own tables
    are used: the MSIs after the kexec are delivered."""
    w = _world("qemu-virt")
    w.boot("v4.19")
    k1 = w.kexec("v4.19")
    cpus = w.platform.cpus
    new = _old_pend_addrs(k1)
    assert sorted(new) == list(range(cpus))
    assert "CPU0: Booted with LPIs enabled, memory probably corrupted" in k1.log.lines
    assert not any("Failed to disable LPIs" in line for line in k1.log.lines)
    assert "C" in k1.log.taints
    for cpu in range(cpus):
        assert w.machine.rdists[cpu].pend_addr == new[cpu]
    w.traffic("eth0", 8)
    w.finish()
    assert w.ledger.delivered_per_generation[1] == 8


def test_v419_redist_disable_lpis_returns_early_once_the_cpu_has_a_pending_table() -> None:
    """v4.19's hotplug check is the CPU's pend_page, not lpi_enabled as in v4.20: a CPU
    that comes back with EnableLPIs still set is left alone, silently."""
    w = _world()
    k0 = w.boot("v4.19")
    lines = len(k0.log.lines)
    assert k0.gic.redist_disable_lpis(1) == 0
    assert len(k0.log.lines) == lines


# -- (3) DT, v6.6 -> v6.6: nothing reserved, EnableLPIs sticky -------------------------------


def test_dt_kexec_v66_finds_no_reservation_and_cannot_disable_lpis() -> None:
    w = _world("rk3566-dt")
    k0 = w.boot("v6.6")
    cpus = w.platform.cpus
    prop0 = _prop_addr(k0)
    pend0 = _pend_addrs(k0, "allocated")
    assert sorted(pend0) == list(range(cpus))
    assert not k0.log.taints
    assert w.memreserve_chain() is None
    w.traffic("eth0", 8)

    k1 = w.kexec("v6.6", mem_min=0x40000000)
    lines = k1.log.lines
    expected = f"GICv3: Expected reserved range [0x{prop0:016x}:0x{prop0 + 0xFFFF:016x}], not found"
    assert lines.count(expected) == 1
    assert "GICv3: Using preallocated redistributor tables" not in lines
    for cpu in range(cpus):
        booted = f"GICv3: CPU{cpu}: Booted with LPIs enabled, memory probably corrupted"
        failed = f"CPU{cpu}: Failed to disable LPIs"
        assert lines.count(booted) == 1
        assert lines.count(failed) == 1
        assert lines.index(booted) < lines.index(failed)
    assert "C" in k1.log.taints
    assert not any("LPI pending table" in line for line in lines)
    assert not k1.reused_tables
    for cpu in range(cpus):
        assert w.machine.rdists[cpu].pend_addr == pend0[cpu]
        assert w.machine.rdists[cpu].prop_addr == prop0

    w.traffic("eth0", 8)
    w.finish()
    assert w.ledger.delivered_per_generation[1] == 0
    assert w.ledger.lost == w.ledger.sent_per_generation[1] == 8


# -- (4) DT with a GIC whose EnableLPIs can be cleared ---------------------------------------


def test_dt_kexec_with_clearable_enable_lpis_recovers() -> None:
    base = PLATFORMS["rk3566-dt"]
    platform = base.with_knobs(dataclasses.replace(base.knobs, enable_lpis_clearable=True))
    w = World(platform, seed=1)
    w.add_device("eth0", device_id=0x100, nvec=NVEC)
    k0 = w.boot("v6.6")
    cpus = platform.cpus
    pend0 = _pend_addrs(k0, "allocated")
    w.traffic("eth0", 8)

    k1 = w.kexec("v6.6", mem_min=0x40000000)
    lines = k1.log.lines
    assert any(line.startswith("GICv3: Expected reserved range [") for line in lines)
    pend1 = _pend_addrs(k1, "allocated")
    assert sorted(pend1) == list(range(cpus))
    prop1 = _prop_addr(k1)
    assert prop1 != _prop_addr(k0)
    for cpu in range(cpus):
        booted = f"GICv3: CPU{cpu}: Booted with LPIs enabled, memory probably corrupted"
        assert lines.count(booted) == 1
        assert f"CPU{cpu}: Failed to disable LPIs" not in lines
        assert pend1[cpu] != pend0[cpu]
        rd = w.machine.rdists[cpu]
        assert (rd.prop_addr, rd.pend_addr) == (prop1, pend1[cpu])
    # damage control still taints: memory may have been corrupted
    assert "C" in k1.log.taints

    w.traffic("eth0", 8)
    w.finish()
    assert w.ledger.delivered_per_generation[1] == w.ledger.sent_per_generation[1] == 8


# -- (5) determinism ---------------------------------------------------------------------


def _run(seed: int) -> World:
    w = _world(seed=seed)
    w.add_device("nvme0", device_id=0x200, nvec=NVEC, shutdown_hook=False)
    w.boot("v4.19")
    w.traffic("eth0", 8)
    w.kexec("v4.19", handover_msis=8)
    w.traffic("eth0", 8)
    w.kexec("v6.6")
    w.traffic("eth0", 8)
    w.finish()
    return w


def test_same_seed_gives_identical_logs_and_corruption() -> None:
    a, b = _run(7), _run(7)
    assert [g.log.lines for g in a.generations] == [g.log.lines for g in b.generations]
    assert [g.log.taints for g in a.generations] == [g.log.taints for g in b.generations]
    assert a.corruption.events
    assert a.corruption.events == b.corruption.events
    assert a.corruption.bits == b.corruption.bits
    assert a.ledger.lost_reasons == b.ledger.lost_reasons


def test_seed_moves_only_the_kaslr_slot() -> None:
    """The seed varies what is random in reality -- the EFI stub's KASLR slot -- and
    the buddy allocator then places the tables deterministically: the same tables
    whenever the image stays out of the first 128 MiB."""
    a, b = _run(7), _run(8)
    assert a.generations[0].image != b.generations[0].image
    for ga, gb in zip(a.generations, b.generations, strict=True):
        assert ga.gic.prop_table_pa == gb.gic.prop_table_pa
    assert _old_pend_addrs(a.generations[0]) == _old_pend_addrs(b.generations[0])
    pinned = World.build("efi-server-8", seed=7)
    pinned.add_device("eth0", device_id=0x100, nvec=NVEC)
    k = pinned.boot("v6.6", image=0x80000000)
    assert k.gic.prop_table_pa != a.generations[0].gic.prop_table_pa


@pytest.mark.parametrize(("first", "second"), [("v5.10", "v6.6"), ("v6.6", "v5.10")])
def test_efi_kexec_between_fixed_kernels_reuses_tables(first: str, second: str) -> None:
    w = _world(seed=4)
    k0 = w.boot(first)
    pend0 = _pend_addrs(k0, "allocated")
    chain0 = w.memreserve_chain()
    assert chain0 is not None
    k1 = w.kexec(second)
    assert "GICv3: Using preallocated redistributor tables" in k1.log.lines
    assert _prop_addr(k1) == _prop_addr(k0)
    assert _pend_addrs(k1, "reserved") == pend0
    assert not k1.log.taints
    assert w.memreserve_chain() == chain0  # nothing new registered
    w.traffic("eth0", 8)
    w.finish()
    assert w.ledger.lost == 0 and w.corruption.bits == 0
