"""The built-in scenarios that replay the seed's test reports on the platform presets."""

from __future__ import annotations

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
