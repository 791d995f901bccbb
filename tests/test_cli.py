"""End-to-end: the CLI on the built-in scenarios and on scenario files."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from gickexec.cli import main
from gickexec.kernel.profiles import PROFILES
from gickexec.scenario.builtin import builtin_names, builtin_text

DEFAULTS = ["efi-kexec-unfixed", "efi-kexec-fixed", "dt-kexec-current", "efi-kexec-chain"]


def _run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def default_json() -> dict[str, Any]:
    code, out, _ = _run("run", "--json")
    assert code == 0
    doc: dict[str, Any] = json.loads(out)
    return doc


def _scenario(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in doc["scenarios"] if s["name"] == name)


def test_builtin_scenarios_include_the_required_four() -> None:
    assert set(DEFAULTS) <= set(builtin_names())


def test_run_default_text_shows_logs_interrupts_and_verdict() -> None:
    code, out, _ = _run("run")
    assert code == 0
    for name in DEFAULTS:
        assert f" {name} " in out
    assert "GICv3: Using preallocated redistributor tables" in out
    # several scenarios: the decisive log lines, each per-CPU message once with a count
    assert re.search(
        r"GICv3: CPU0: using reserved LPI pending table @0x[0-9a-f]{16}  \[\+7 more like it\]\n",
        out,
    )
    assert "GICv3: CPU1: using reserved LPI pending table" not in out
    assert "ITS-MSI  524288 Edge      eth0-TxRx-0" in out
    assert "── verdict ──" in out
    assert out.rstrip().endswith(f"{len(builtin_names())} passed, 0 failed")


def test_json_schema_fields(default_json: dict[str, Any]) -> None:
    for sc in default_json["scenarios"]:
        assert {"name", "ok", "generations", "msis", "corruption", "memreserve"} <= set(sc)
        for g in sc["generations"]:
            assert g["boot"] in ("efi", "dt")
            assert isinstance(g["log"], list) and g["log"]
            assert isinstance(g["reused_tables"], bool)
            assert isinstance(g["tainted"], bool)
            assert g["kernel"] in PROFILES
        assert {"sent", "delivered", "lost"} <= set(sc["msis"])
        assert sc["msis"]["sent"] == sc["msis"]["delivered"] + sc["msis"]["lost"]
        for e in sc["corruption"]["events"]:
            assert {"addr", "bit", "writer", "owner"} <= set(e)
        assert {"nodes", "entries"} <= set(sc["memreserve"])


def test_unfixed_loses_msis_and_corrupts_new_kernel_memory(default_json: dict[str, Any]) -> None:
    sc = _scenario(default_json, "efi-kexec-unfixed")
    assert sc["ok"]
    assert sc["msis"] == {**sc["msis"], "sent": 808, "delivered": 400, "lost": 408}
    gen1 = sc["generations"][1]
    assert gen1["msis_delivered"] == 0
    assert not gen1["reused_tables"]
    # the handover's 4 vectors, all on the boot CPU once the others went down: a bit each
    # set in the old table between the kernels, cleared when the second kernel's CPU0
    # takes the LPI (it has no handler for it)
    assert sc["corruption"]["bits"] == 8
    writers = {e["writer"] for e in sc["corruption"]["events"]}
    assert writers == {"GICR(CPU0)"}
    assert all(e["generation"] == 1 and e["owner"] != "" for e in sc["corruption"]["events"])
    assert sum(e["between_kernels"] for e in sc["corruption"]["events"]) == 4
    assert not sc["memreserve"]["present"]
    reasons = sc["msis"]["lost_reasons"]
    assert sum(reasons.values()) == 408
    assert reasons["taken by a kernel with no handler for the LPI"] == 8
    # no collection is mapped in the second kernel: the ITS drops the rest
    assert all(r.startswith("dropped: ") for r in reasons if "no handler" not in r)


def test_fixed_delivers_everything_and_reuses_tables(default_json: dict[str, Any]) -> None:
    sc = _scenario(default_json, "efi-kexec-fixed")
    assert sc["ok"]
    assert sc["msis"]["lost"] == 0 and sc["msis"]["delivered"] == 800
    assert sc["corruption"]["bits"] == 0
    g0, g1 = sc["generations"]
    assert (g0["reused_tables"], g1["reused_tables"]) == (False, True)
    assert not g0["tainted"] and not g1["tainted"]
    assert "GICv3: Using preallocated redistributor tables" in g1["log"]
    first = {
        m.group(1): m.group(2)
        for line in g0["log"]
        if (m := re.match(r"GICv3: CPU(\d+): using allocated LPI pending table @(0x\w+)", line))
    }
    second = {
        m.group(1): m.group(2)
        for line in g1["log"]
        if (m := re.match(r"GICv3: CPU(\d+): using reserved LPI pending table @(0x\w+)", line))
    }
    assert len(first) == 8 and first == second
    assert sc["memreserve"]["nodes"] == 1 and sc["memreserve"]["entries"] == 9


def test_dt_current_kernel_damage_control(default_json: dict[str, Any]) -> None:
    sc = _scenario(default_json, "dt-kexec-current")
    assert sc["ok"]
    g1 = sc["generations"][1]
    assert g1["boot"] == "dt" and g1["tainted"] and "C" in g1["taints"]
    assert any(
        line.startswith("GICv3: Expected reserved range [0x") and line.endswith("], not found")
        for line in g1["log"]
    )
    for cpu in range(4):
        assert f"GICv3: CPU{cpu}: Booted with LPIs enabled, memory probably corrupted" in g1["log"]
        assert f"CPU{cpu}: Failed to disable LPIs" in g1["log"]
    assert g1["msis_delivered"] == 0
    assert sc["msis"]["lost"] >= 300
    assert set(sc["msis"]["lost_per_cpu"]) == {"0", "1", "2", "3"}
    events = sc["corruption"]["events"]
    # the handover MSIs set bits in tables nobody reserved; the second kernel's CPUs then
    # take those LPIs, which clears the bits again: both are stray writes into free memory
    assert any(e["between_kernels"] and e["value"] == 1 for e in events)
    assert any(not e["between_kernels"] and e["value"] == 0 for e in events)
    assert all(e["owner"].startswith("free memory") for e in events)
    assert g1["unexpected_irqs"] > 0
    assert not sc["memreserve"]["present"]


def test_chain_memreserve_does_not_grow(default_json: dict[str, Any]) -> None:
    sc = _scenario(default_json, "efi-kexec-chain")
    assert sc["ok"]
    gens = sc["generations"]
    assert len(gens) == 11
    assert [g["memreserve"]["entries"] for g in gens] == [9] * 11
    assert [g["reused_tables"] for g in gens] == [False] + [True] * 10
    assert sc["msis"]["lost"] == 0 and sc["corruption"]["bits"] == 0


def test_json_is_deterministic() -> None:
    a = _run("run", "--json", "efi-kexec-unfixed")[1]
    b = _run("run", "--json", "efi-kexec-unfixed")[1]
    assert a == b
    c = _run("run", "--json", "--seed", "7", "efi-kexec-unfixed")[1]
    assert c != a


def test_show_prints_runnable_toml(tmp_path: Path) -> None:
    code, out, _ = _run("show", "efi-kexec-fixed")
    assert code == 0
    assert out == builtin_text("efi-kexec-fixed")
    f = tmp_path / "mine.toml"
    f.write_text(out)
    code, out, _ = _run("run", "--no-logs", str(f))
    assert code == 0
    assert "expectations  all" in out


def test_failed_expectation_exits_1(tmp_path: Path) -> None:
    text = builtin_text("efi-kexec-fixed").replace("msis_lost = 0", "msis_lost = 5")
    f = tmp_path / "wrong.toml"
    f.write_text(text)
    code, out, _ = _run("run", str(f))
    assert code == 1
    assert "msis_lost: expected 5, got 0" in out
    assert out.rstrip().endswith("0 passed, 1 failed")


@pytest.mark.parametrize(
    ("mutation", "message"),
    [
        (
            ("msis = 400", 'msis = "many"'),
            r"wrong\.toml:(\d+): field 'steps\[1\]\.msis': must be an integer",
        ),
        (
            ('kernel = "v6.6"', 'kernel = "v9.9"'),
            r"wrong\.toml:(\d+): field 'steps\[0\]\.kernel': unknown kernel profile 'v9.9'",
        ),
        (
            ("vectors = 8", "vectors = 8\nbogus = 1"),
            r"wrong\.toml:(\d+): field 'devices\[0\]\.bogus': unknown field",
        ),
        (
            ('platform = "efi-server-8"', 'platform = "nope"'),
            r"wrong\.toml:(\d+): field 'platform': unknown platform",
        ),
        (("[expect]", "[expect\n"), r"wrong\.toml:(\d+): not valid TOML"),
    ],
)
def test_malformed_scenario_exits_2_with_file_line_field(
    tmp_path: Path, mutation: tuple[str, str], message: str
) -> None:
    text = builtin_text("efi-kexec-fixed").replace(*mutation, 1)
    f = tmp_path / "wrong.toml"
    f.write_text(text)
    code, _, err = _run("run", str(f))
    assert code == 2
    m = re.search(message, err)
    assert m, err
    line = int(m.group(1))
    bad = mutation[1].split("\n")[-1].split("=")[0].strip() or mutation[1]
    assert bad.strip("[") in text.splitlines()[line - 1] or "TOML" in message
    assert "Traceback" not in err


def test_unknown_name_or_missing_file_exits_2() -> None:
    code, _, err = _run("run", "no-such-scenario")
    assert code == 2 and "no built-in scenario" in err
    code, _, err = _run("run", "/nonexistent/x.toml")
    assert code == 2 and "cannot read" in err
    code, _, err = _run("show", "nope")
    assert code == 2


def test_listing_commands() -> None:
    code, out, _ = _run("scenarios")
    assert code == 0 and all(n in out for n in DEFAULTS)
    code, out, _ = _run("platforms")
    assert code == 0 and "efi-server-8" in out and "enable_lpis_clearable=true" in out
    code, out, _ = _run("profiles")
    assert code == 0 and "v4.19" in out and "80424b02d42b" in out


def test_console_script_entry_point() -> None:
    """The installed ``gickexec`` module entry runs as a subprocess (no Click test harness)."""
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from gickexec.cli import main; main()",
            "run",
            "--no-logs",
            "efi-kexec-fixed",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "1 passed, 0 failed" in proc.stdout
