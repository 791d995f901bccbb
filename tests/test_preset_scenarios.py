"""The built-in scenarios that replay the seed's test reports on the platform presets."""

from __future__ import annotations

import pytest

from gickexec import World
from gickexec.scenario.builtin import load_builtin
from gickexec.scenario.runner import run_scenario


def test_tx2_host_kexec_publishes_one_v420_node_per_table_and_reuses_all() -> None:
    r = run_scenario(load_builtin("tx2-host-kexec"))
    assert r["ok"], r["expectations"]
    assert r["platform"]["cpus"] == 224
    assert r["memreserve"]["nodes"] == 225 and r["memreserve"]["entries"] == 225
    second = r["generations"][1]
    reused = [line for line in second["log"] if "using reserved LPI pending table" in line]
    assert len(reused) == 224


def test_tx2_guest_kexec_reuses_tables() -> None:
    r = run_scenario(load_builtin("tx2-guest-kexec"))
    assert r["ok"], r["expectations"]
    assert r["msis"]["lost"] == 0 and r["generations"][1]["reused_tables"]


def test_centriq_nic_msis_active_on_every_cpu_after_kexec() -> None:
    r = run_scenario(load_builtin("centriq-nic-kexec"))
    assert r["ok"], r["expectations"]
    rows = r["generations"][1]["interrupts"]
    assert len(rows) == 46
    per_cpu = [sum(row["per_cpu"][c] for row in rows) for c in range(46)]
    assert per_cpu == [20] * 46  # 920 MSIs round-robin over 46 vectors, one per CPU


@pytest.mark.parametrize(
    ("platform", "bits", "reason"),
    [
        ("kvm-guest", 0, "pending state erased from memory before delivery"),
        ("efi-server-8", 8, "taken by a kernel with no handler for the LPI"),
    ],
)
def test_handover_lpis_of_a_kvm_guest_stay_in_the_hypervisor(
    platform: str, bits: int, reason: str
) -> None:
    """v4.19 -> v4.19 with a device that keeps signalling: on hardware the handover's
    pending bits land in the old tables (the second kernel's memory); KVM holds them
    and drops them when the second kernel clears EnableLPIs: lost, but no corruption."""
    w = World.build(platform, seed=1)
    w.add_device("nvme0", device_id=0x200, nvec=4, shutdown_hook=False)
    w.boot("v4.19")
    w.kexec("v4.19", handover_msis=8)
    w.finish()
    assert w.corruption.bits == bits
    assert dict(w.ledger.lost_reasons) == {reason: 8}
