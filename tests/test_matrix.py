"""``gickexec matrix``: cells, outcomes, reasons, output formats, and docs/compatibility.md."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from gickexec.cli import main
from gickexec.scenario.matrix import Cell, cells, run_cell

DOC = Path(__file__).resolve().parents[1] / "docs" / "compatibility.md"
DOC_COMMAND = ["matrix", "--from", "all", "--markdown"]


def test_grid_same_pairs_each_profile_with_itself_and_all_crosses() -> None:
    same = cells(None, ["v5.0", "v6.6"], ["kexec"], ["efi"], ["qemu-virt"])
    assert [(c.from_, c.to) for c in same] == [("v5.0", "v5.0"), ("v6.6", "v6.6")]
    cross = cells(["v4.20", "v5.0"], ["v5.0", "v6.6"], ["kexec", "kdump"], ["efi", "dt"], ["a"])
    assert len(cross) == 2 * 2 * 2 * 2


def test_fixed_kernel_kexec_on_efi_is_ok() -> None:
    r = run_cell(Cell("v6.6", "v6.6", "kexec", "efi", "efi-server-8"))
    assert (r["ok"], r["outcome"], r["lost_msis"], r["corrupted_bits"]) == (True, "ok", 0, 0)
    assert r["reused_tables"] and r["key_line"] == "GICv3: Using preallocated redistributor tables"


def test_unfixed_kernel_into_itself_cannot_disable_lpis() -> None:
    """v4.19 -> v4.19 on a GIC whose EnableLPIs sticks: redist_disable_lpis() gives up
    and the CPUs get no LPIs; v4.19 -> v6.6 loses every MSI for the lack of a list."""
    same = run_cell(Cell("v4.19", "v4.19", "kexec", "efi", "efi-server-8"), seed=2)
    assert same["outcome"] == "lpis-lost" and same["lost_msis"] == 64
    assert "cannot clear EnableLPIs" in same["reason"]
    assert same["key_line"] == "CPU0: Failed to disable LPIs"
    upgrade = run_cell(Cell("v4.19", "v6.6", "kexec", "efi", "efi-server-8"), seed=2)
    assert upgrade["outcome"] == "lpis-lost" and upgrade["lost_msis"] == 64
    assert "did not publish its tables" in upgrade["reason"]


def test_dt_kexec_image_over_the_unpublished_tables_hangs() -> None:
    """v6.6 on a DT boot publishes nothing; kexec-tools puts the next image in the lowest
    hole, over the live tables, whose range the image's reservation then covers: the
    new kernel resets the 'preallocated' property table over its own code."""
    r = run_cell(Cell("v6.6", "v6.6", "kexec", "dt", "qemu-virt"))
    assert r["outcome"] == "hang" and r["loader"] == "kexec-tools"
    assert "overwrote the kernel's own image" in r["reason"]
    assert r["key_line"] == "GICv3: Using preallocated redistributor tables"


def test_kexec_file_load_cells_need_v50_on_the_outgoing_side() -> None:
    old = run_cell(Cell("v4.20", "v6.6", "kexec", "efi", "efi-server-8", "kexec_file_load"))
    assert old["outcome"] == "n/a" and "no kexec_file_load()" in old["reason"]
    assert old["key_line"] == "" and old["lost_msis"] == 0
    new = run_cell(Cell("v6.6", "v6.6", "kexec", "efi", "efi-server-8", "kexec_file_load"))
    assert new["ok"] and new["reused_tables"]


def test_dt_kdump_is_ok() -> None:
    kdump = run_cell(Cell("v6.6", "v6.6", "kdump", "dt", "efi-server-8"))
    assert kdump["ok"] and kdump["reason"] == "tables reused through is_kdump_kernel()"


def test_v420_to_v50_is_lost_because_of_the_layout_change() -> None:
    r = run_cell(Cell("v4.20", "v5.0", "kexec", "efi", "efi-server-8"))
    assert r["outcome"] == "lpis-lost"
    assert r["reason"].startswith("a v4.20-layout memreserve list read with the v5.0 layout")


def test_v419_dt_kexec_on_qemu_clears_enable_lpis_and_taints() -> None:
    r = run_cell(Cell("v4.19", "v4.19", "kexec", "dt", "qemu-virt"))
    assert (r["outcome"], r["lost_msis"]) == ("taint", 0)
    assert r["key_line"] == "CPU0: Booted with LPIs enabled, memory probably corrupted"
    assert "cleared EnableLPIs and programmed new tables" in r["reason"]


def test_cli_json_has_the_documented_keys() -> None:
    res = CliRunner().invoke(
        main, ["matrix", "--to", "v4.19,v6.6", "--boot", "efi", "--platform", "qemu-virt", "--json"]
    )
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert len(doc["cells"]) == 2 * 2
    keys = {"from", "to", "mode", "boot", "platform", "ok", "outcome"}
    keys |= {"lost_msis", "corrupted_bits", "reason"}
    for cell in doc["cells"]:
        assert keys <= set(cell)
        assert cell["outcome"] in ("ok", "lpis-lost", "corruption", "taint", "crash", "hang")


def test_cli_text_and_bad_input() -> None:
    runner = CliRunner()
    res = runner.invoke(main, ["matrix", "--to", "v6.6", "--mode", "kexec", "--boot", "efi"])
    assert res.exit_code == 0
    assert "v6.6 -> v6.6   kexec efi efi-server-8   ok" in res.output
    bad = runner.invoke(main, ["matrix", "--to", "v9.9"])
    assert bad.exit_code == 2 and "unknown profile v9.9" in bad.output


def test_docs_compatibility_md_is_regenerated_output() -> None:
    res = CliRunner().invoke(main, DOC_COMMAND)
    assert res.exit_code == 0
    assert res.stdout == DOC.read_text(encoding="utf-8"), (
        "docs/compatibility.md is stale: run `gickexec matrix --from all --markdown "
        "> docs/compatibility.md`"
    )
