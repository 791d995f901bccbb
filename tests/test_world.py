"""The library API: World steps, power cycles, and the observers' bookkeeping."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from gickexec import PLATFORMS, World


def _world(platform: str = "efi-server-8", seed: int = 3) -> World:
    w = World.build(platform, seed=seed)
    w.add_device("eth0", device_id=0x100, nvec=4)
    return w


def test_power_cycle_resets_the_gic_but_not_memory() -> None:
    w = _world()
    w.boot("v4.19")
    w.traffic("eth0", 8)
    old_pend = w.machine.rdists[0].pend_addr
    assert old_pend is not None
    w.boot("v4.19")  # a reboot through firmware, not a kexec
    second = w.generations[1]
    assert second.entry == "firmware"
    assert not any("Booted with LPIs enabled" in line for line in second.log.lines)
    w.traffic("eth0", 8)
    w.finish()
    assert w.ledger.lost == 0 and w.ledger.delivered == 16
    assert w.corruption.bits == 0


def test_doc_example_runs() -> None:
    w = World.build("efi-server-8", seed=1)
    w.add_device("eth0", device_id=0x100, nvec=4)
    w.boot("v6.6")
    w.traffic("eth0", 8)
    w.kexec("v6.6")
    w.traffic("eth0", 8)
    w.finish()
    assert (w.ledger.lost, w.corruption.bits) == (0, 0)
    assert w.ledger.delivered == 16


def test_memory_cost_grows_with_written_pages_only() -> None:
    """8 GiB of RAM, 9 LPI tables of 64 KiB, ITS tables: only touched pages are stored."""
    w = _world()
    w.boot("v6.6")
    w.traffic("eth0", 100)
    # the property table (16 pages of 0xa2) dominates; zeroed pending tables cost nothing
    assert w.machine.mem.pages_touched < 64
    assert w.machine.mem.ram_bytes == 8 << 30


def test_clearable_enable_lpis_lets_dt_kernel_recover() -> None:
    base = PLATFORMS["rk3566-dt"]
    platform = base.with_knobs(dataclasses.replace(base.knobs, enable_lpis_clearable=True))
    w = World(platform, seed=2)
    w.add_device("eth0", device_id=0x100, nvec=4)
    w.boot("v6.6")
    w.kexec("v6.6", mem_min=0x40000000)  # off the old tables above the image
    w.traffic("eth0", 40)
    w.finish()
    log = w.generations[1].log
    assert "GICv3: CPU0: Booted with LPIs enabled, memory probably corrupted" in log.lines
    assert not any("Failed to disable LPIs" in line for line in log.lines)
    assert "C" in log.taints
    assert w.ledger.delivered == 40 and w.ledger.lost == 0


@settings(max_examples=25, deadline=None)
@given(
    platform=st.sampled_from(sorted(PLATFORMS)),
    seed=st.integers(0, 2**32),
    kernels=st.lists(st.sampled_from(["v4.19", "v5.10", "v6.6"]), min_size=1, max_size=4),
    msis=st.integers(0, 40),
    handover=st.integers(0, 4),
    hook=st.booleans(),
)
def test_any_kexec_sequence_keeps_the_books_balanced(
    platform: str, seed: int, kernels: list[str], msis: int, handover: int, hook: bool
) -> None:
    w = World.build(platform, seed=seed)
    w.add_device("eth0", device_id=0x100, nvec=4, shutdown_hook=hook)
    w.boot(kernels[0])
    w.traffic("eth0", msis)
    for k in kernels[1:]:
        w.kexec(k, handover_msis=handover)
        w.traffic("eth0", msis)
    w.finish()
    assert w.ledger.sent == w.ledger.delivered + w.ledger.lost
    assert w.ledger.in_flight == 0
    assert len(w.generations) == len(kernels)
    # a kernel that reuses tables must be one that can, and some earlier kernel must have
    # published them (a v4.19 in between leaves the first kernel's tables live and listed)
    for i, cur in enumerate(w.generations):
        if cur.reused_tables:
            assert cur.profile.reuses_preallocated_lpi_tables
            # ... unless the "reserved" range was its own image, loaded over an unpublished
            # table: then resetting the table destroyed the kernel
            published = any(g.profile.registers_lpi_tables_with_efi for g in w.generations[:i])
            assert published or (cur.crashed or "").startswith("gic_reset_prop_table()")
