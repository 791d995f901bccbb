"""Start-up cost and parallel matrix: the report stack is imported only for a report, and
``gickexec matrix --jobs N`` prints the same bytes for any N."""

from __future__ import annotations

import json
import subprocess
import sys

from click.testing import CliRunner

from gickexec.cli import main
from gickexec.scenario.matrix import cells, run_cells


def test_importing_the_cli_does_not_import_the_report_or_inspect_stack() -> None:
    code = (
        "import sys, gickexec.cli; "
        "print(sorted({m.split('.')[0] for m in sys.modules}"
        " & {'matplotlib', 'jinja2', 'elftools'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_matrix_output_is_identical_for_one_and_two_jobs() -> None:
    args = ["matrix", "--from", "v4.19,v6.6", "--to", "v4.19,v6.6", "--platform", "efi-server-8"]
    runner = CliRunner()
    one = runner.invoke(main, [*args, "--json", "--jobs", "1"])
    two = runner.invoke(main, [*args, "--json", "--jobs", "2"])
    assert one.exit_code == two.exit_code == 0
    assert one.stdout == two.stdout
    assert len(json.loads(one.stdout)["cells"]) == 2 * 2 * 2 * 2
    text_one = runner.invoke(main, [*args, "-j", "1"]).stdout
    assert text_one == runner.invoke(main, [*args, "-j", "2"]).stdout


def test_run_cells_keeps_grid_order_in_parallel() -> None:
    grid = cells(None, ["v4.19", "v5.0", "v6.6"], ["kexec"], ["efi", "dt"], ["qemu-virt"])
    results = run_cells(grid, seed=1, jobs=2)
    assert [(r["to"], r["boot"]) for r in results] == [(c.to, c.boot) for c in grid]
    assert results == run_cells(grid, seed=1, jobs=1)


def test_matrix_jobs_must_be_positive() -> None:
    res = CliRunner().invoke(main, ["matrix", "--jobs", "0"])
    assert res.exit_code == 2 and "--jobs" in res.output


def test_bench_quick_reports_every_figure_with_the_machine() -> None:
    """The figures' plumbing (not their values: benchmarks are not timed tests)."""
    res = CliRunner().invoke(main, ["bench", "--quick", "--json"])
    assert res.exit_code == 0, res.output
    figures = json.loads(res.output)
    for key in (
        "msi_rate",
        "msi_batch_rate",
        "run_fixed_s",
        "in_process_fixed_ms",
        "matrix_s",
        "peak_rss_mb",
    ):
        assert figures[key] > 0, key
    platforms = {"qemu-virt", "thunderx2", "512-cpu"}
    for key in ("kexec_cycle_ms", "memset_ms", "ratio"):
        assert set(figures[key]) == platforms and all(v > 0 for v in figures[key].values())
    assert figures["machine"]["cpus"] >= 1 and figures["machine"]["python"]
