"""``gickexec fixes``: the candidate device-tree fixes, their mechanisms, key cells of
docs/dt-fixes.md, and the document itself."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from gickexec.cli import main
from gickexec.fw.devicetree import (
    Fdt,
    fdt_add_resv_mem_gic_rd_tables,
    gic_lpi_size,
    gic_lpi_tables_init,
)
from gickexec.hw.machine import Machine
from gickexec.hw.platform import PLATFORMS
from gickexec.kernel.dt_fixes import FixKernel
from gickexec.scenario.fixes import (
    CHAINS,
    FIXES,
    FixCell,
    FixWorld,
    fix_cells,
    run_fix_cell,
    run_fix_cells,
)

DOC = Path(__file__).resolve().parents[1] / "docs" / "dt-fixes.md"


@functools.cache
def _results() -> tuple[dict[str, Any], ...]:
    """Every cell, played once per session (a few seconds)."""
    return tuple(run_fix_cells(fix_cells()))


def _all() -> dict[tuple[str, ...], dict[str, Any]]:
    return {
        (r["fix"], r["chain"], r["mode"], r["boot"], r["enable_lpis"], r["loader"]): r
        for r in _results()
    }


@pytest.fixture
def cached(monkeypatch: pytest.MonkeyPatch) -> None:
    """``gickexec fixes`` with the session's cells instead of playing them again."""
    monkeypatch.setattr(
        "gickexec.scenario.fixes.run_fix_cells",
        lambda grid, seed=1: list(_results()) if list(grid) == fix_cells() else None,
    )


def _cell(
    fix: str,
    chain: str,
    mode: str = "kexec",
    boot: str = "dt",
    lpis: str = "one-way",
    loader: str = "kexec_file_load",
) -> dict[str, Any]:
    return _all()[(fix, chain, mode, boot, lpis, loader)]


def test_grid_covers_every_fix_chain_and_handover() -> None:
    grid = fix_cells()
    assert {c.fix for c in grid} == {f.name for f in FIXES}
    assert {c.chain for c in grid} == {c.name for c in CHAINS}
    # kexec with both loaders, kdump with kexec -p only
    assert {c.loader for c in grid if c.mode == "kdump"} == {"kexec-tools"}
    both = [c for c in grid if c.fix == "memory-region"]
    assert len(both) == len(CHAINS) * 2 * 2 * (2 + 1)


def test_uboot_programs_enables_and_reserves_the_lpi_area() -> None:
    m = Machine(PLATFORMS["qemu-virt"])
    base = 0x6FE00000
    assert gic_lpi_tables_init(m, base, 2) == ""
    for cpu in range(2):
        rd = m.rdists[cpu]
        assert rd.prop_addr == base
    # soc.c GIC_LPI_SIZE: 2 pending tables and the property table, rounded up to 1 MiB
    assert gic_lpi_size(2) == 0x100000 and gic_lpi_size(16) == 0x200000
    fdt = fdt_add_resv_mem_gic_rd_tables(Fdt(), base, gic_lpi_size(2))
    assert [(r.name, r.base, r.size) for r in fdt.reserved] == [("gic-rd-tables", base, 1 << 20)]
    # U-Boot refuses a GIC whose LPIs are already enabled (only a reset clears them)
    assert gic_lpi_tables_init(m, base, 2) == "Re-Distributor 0 LPI is already enabled"


def test_memory_region_nodes_reach_the_next_kernel_only_through_kexec_file_load() -> None:
    fix = next(f for f in FIXES if f.name == "memory-region")
    w = FixWorld(PLATFORMS["qemu-virt"].with_boot("dt"), fix, seed=1)
    w.prepare(True, "kexec-tools", kdump=False)
    k = w.boot("v6.6")
    assert isinstance(k, FixKernel)
    tables = k.lpi_table_ranges()
    assert len(tables) == 1 + 2  # property table, a pending table per CPU
    assert k.handover_fdt("kexec-tools", kdump=False) == Fdt()
    nodes = k.handover_fdt("kexec_file_load", kdump=False).reserved
    assert [(n.base, n.size) for n in nodes] == tables and all(n.gic_memory_region for n in nodes)


def test_memory_region_holds_across_knowing_kernels_with_kexec_file_load() -> None:
    for chain in ("knows -> knows", "4 knowing kernels"):
        r = _cell("memory-region", chain)
        assert (r["outcome"], r["reused_tables"][0]) == ("ok", True), chain


def test_memory_region_mixed_chains_fail() -> None:
    # kernel 1 unaware: nothing describes its tables, kexec_file_load puts the image on them
    r = _cell("memory-region", "unaware -> knows")
    assert (r["outcome"], r["where"]) == ("hang", 1)
    assert "overwrote the kernel's own image" in r["crashed"]
    # a kernel that cannot reuse the tables in between: LPIs lost on one-way hardware ...
    r = _cell("memory-region", "knows -> v4.19 -> knows", loader="kexec-tools")
    assert (r["outcome"], r["where_kernel"]) == ("crash", "gen 2 v6.6 (knows the fix)")
    r = _cell("memory-region", "knows -> v4.19 -> knows", lpis="one-way", boot="efi")
    assert (r["outcome"], r["key_line"]) == ("lpis-lost", "CPU0: Failed to disable LPIs")
    # ... while a v4.20+ kernel unaware of the fix still reuses the reserved tables, and
    # with kexec_file_load() hands on the tree that describes them
    r = _cell("memory-region", "knows -> unaware")
    assert r["outcome"] == "ok" and r["reused_tables"] == [True]
    r = _cell("memory-region", "knows -> unaware -> knows")
    assert r["outcome"] == "ok" and r["reused_tables"] == [True, True]
    r = _cell("memory-region", "knows -> unaware -> knows", loader="kexec-tools", lpis="clearable")
    assert (r["outcome"], r["where"]) == ("hang", 2)


def test_memory_region_needs_kexec_tools_to_carry_the_nodes() -> None:
    r = _cell("memory-region", "knows -> knows", loader="kexec-tools")
    assert r["outcome"] == "lpis-lost"
    assert r["key_line"].startswith("GICv3: Expected reserved range")


def test_firmware_owned_tables_hold_for_kexec_and_kdump_across_kernels_that_know_them() -> None:
    rows = [r for r in _all().values() if r["fix"] == "firmware-owned"]
    for chain in (
        "knows -> knows",
        "4 knowing kernels",
        "knows -> unaware",
        "unaware -> knows",
        "knows -> unaware -> knows",
    ):
        mine = [r for r in rows if r["chain"] == chain]
        assert mine and all(r["ok"] and all(r["reused_tables"]) for r in mine), chain
    # v4.19 finds LPIs enabled by the firmware and cannot turn them off on one-way hardware
    r = _cell("firmware-owned", "knows -> v4.19 -> knows")
    assert (r["outcome"], r["where"]) == ("lpis-lost", 1)


def test_vmm_memreserve_makes_a_dt_boot_behave_like_efi() -> None:
    r = _cell("vmm-memreserve", "4 knowing kernels")
    assert r["ok"] and r["reused_tables"] == [True, True, True]
    assert _cell("none", "knows -> knows")["outcome"] == "hang"


def test_kho_needs_kexec_file_load_and_a_kho_kernel_on_both_sides() -> None:
    assert _cell("kho", "4 knowing kernels")["ok"]
    assert _cell("kho", "knows -> knows", loader="kexec-tools")["outcome"] == "lpis-lost"
    r = _cell("kho", "knows -> unaware")
    assert r["outcome"] == "lpis-lost" and r["where_kernel"] == "gen 1 v6.6"


def test_same_placement_holds_only_while_every_kernel_does_it() -> None:
    assert _cell("same-placement", "4 knowing kernels", lpis="one-way")["ok"]
    assert _cell("same-placement", "4 knowing kernels", boot="efi")["ok"]
    assert _cell("same-placement", "knows -> unaware")["outcome"] == "lpis-lost"


def test_gicv3_nolpi_loses_the_msis_but_corrupts_nothing() -> None:
    rows = [r for r in _all().values() if r["fix"] == "gicv3-nolpi"]
    assert all(r["corrupted_bits"] == 0 for r in rows)
    r = _cell("gicv3-nolpi", "unaware -> knows", lpis="one-way", loader="kexec-tools")
    assert (r["outcome"], r["lost_msis"]) == ("lpis-lost", 64)


def test_cells_are_deterministic() -> None:
    cell = FixCell("firmware-owned", "knows -> knows", "kdump", "efi", "one-way", "kexec-tools")
    assert run_fix_cell(cell) == run_fix_cell(cell)


def test_cli_json_document() -> None:
    res = CliRunner().invoke(main, ["fixes", "--json"])
    assert res.exit_code == 0
    doc = json.loads(res.stdout)
    assert [f["name"] for f in doc["fixes"]] == [f.name for f in FIXES]
    assert len(doc["cells"]) == len(fix_cells())
    owned = next(f for f in doc["fixes"] if f["name"] == "firmware-owned")
    assert owned["summary"]["holds_in_chains"][:2] == ["knows -> knows", "4 knowing kernels"]
    assert set(doc["cells"][0]) >= {"fix", "chain", "outcome", "lost_msis", "where", "key_line"}


@pytest.mark.usefixtures("cached")
def test_cli_text_puts_the_verdict_first_and_refuses_two_formats() -> None:
    res = CliRunner().invoke(main, ["fixes"])
    assert res.exit_code == 0
    assert res.stdout.startswith("none ")
    assert "firmware-owned  ok in 60 of 72 cells" in res.stdout
    bad = CliRunner().invoke(main, ["fixes", "--json", "--markdown"])
    assert bad.exit_code == 2 and "exclude each other" in bad.stderr


@pytest.mark.usefixtures("cached")
def test_docs_dt_fixes_md_is_regenerated_output() -> None:
    res = CliRunner().invoke(main, ["fixes", "--markdown"])
    assert res.exit_code == 0
    assert res.stdout == DOC.read_text(encoding="utf-8"), (
        "docs/dt-fixes.md is stale: run `gickexec fixes --markdown > docs/dt-fixes.md`"
    )
