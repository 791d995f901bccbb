"""Issue 11: a verdict to trust at a glance: health apart from expectations, notes where
they happened, screen-sized colourable text, progress, one JSON convention, labelled
figures, and the basics (python -m, --version, stdin, completion, LICENSE)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.shell_completion import ShellComplete
from click.testing import CliRunner

from gickexec.cli import _colour, main
from gickexec.report.figures import DPI, marker_groups, timeline_lost
from gickexec.scenario.builtin import builtin_names, builtin_text, load_builtin
from gickexec.scenario.runner import HEALTH_ORDER, run_scenario
from gickexec.scenario.schema import parse_scenario

ROOT = Path(__file__).resolve().parent.parent
ANSI = re.compile(r"\x1b\[[0-9;]*m")
UNFIXED = builtin_text("efi-kexec-unfixed")
NO_EXPECT = UNFIXED[: UNFIXED.index("[expect]")]


def _cli(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(main, list(args), input=stdin, env=env)


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _file_load_kexec(text: str) -> str:
    """The unfixed scenario with its kexec made through kexec_file_load (v4.19 has none)."""
    return text.replace(
        'action = "kexec"\nkernel = "v4.19"',
        'action = "kexec"\nkernel = "v4.19"\nloader = "kexec_file_load"',
    )


# 1: steps that do not happen are reported outside --json, where they happened


def test_skipped_kexec_is_in_the_text_the_verdict_and_the_report(tmp_path: Path) -> None:
    path = _write(tmp_path, "skip.toml", _file_load_kexec(NO_EXPECT))
    r = _cli("run", str(path), "--report", str(tmp_path / "out"))
    assert "step 2 kexec v4.19 SKIPPED: kexec skipped: v4.19 has no kexec_file_load()" in r.stdout
    assert re.search(r"^  skipped +step 2 kexec: kexec skipped", r.stdout, re.M)
    # the note sits under generation 0, the kernel that could not kexec
    gen0 = r.stdout.index("── generation 0")
    assert gen0 < r.stdout.index("SKIPPED") < r.stdout.index("── /proc/interrupts, generation 0")
    assert r.exit_code == 1  # no expectations: judged by health, and a step was skipped
    page = (tmp_path / "out" / "index.html").read_text()
    assert '<div class="note">step 2 kexec v4.19 SKIPPED: kexec skipped: v4.19 has no' in page


def test_kdump_without_crashkernel_hangs_visibly(tmp_path: Path) -> None:
    text = NO_EXPECT.replace('action = "kexec"', 'action = "kdump"')
    text = text.replace("handover_msis = 8\n", "")
    r = _cli("run", "--json", str(_write(tmp_path, "hang.toml", text)))
    sc = json.loads(r.stdout)["scenarios"][0]
    kdump = next(t for t in sc["timeline"] if t["action"] == "kdump")
    assert kdump["outcome"] == "hung" and "the machine hangs" in kdump["notes"][0]
    kinds = [p["kind"] for p in sc["health"]["problems"]]
    assert kinds[0] == "hung" and "crashed" not in kinds  # the asked-for panic is no crash
    text_out = _cli("run", str(tmp_path / "hang.toml")).stdout
    assert "HUNG: kernel gen 0 panicked with no crash kernel loaded" in text_out


def test_guest_errors_are_shown_at_the_step_that_caused_them() -> None:
    r = run_scenario(load_builtin("efi-kexec-upgrade"))
    per_step = [t["guest_errors"]["count"] for t in r["timeline"]]
    assert sum(per_step) == len(r["guest_errors"]) == 9
    kexec = next(t for t in r["timeline"] if t["action"] == "kexec")
    assert kexec["guest_errors"] == {"count": 9, "first": r["guest_errors"][0]}
    out = _cli("run", "efi-kexec-upgrade").stdout
    assert "!! step 2 kexec v6.6: 9 GIC programming error(s), first: GICR(CPU0)" in out


# 2: health apart from expectations; no [expect] means judged by health


def test_scenario_without_expectations_is_judged_by_health(tmp_path: Path) -> None:
    r = _cli("run", str(_write(tmp_path, "lossy.toml", NO_EXPECT)))
    assert r.exit_code == 1
    assert r.stdout.rstrip().endswith("0 passed, 1 failed")
    assert "expectations  none declared (judged by health)" in r.stdout
    assert "health      UNHEALTHY: corrupted, lost" in r.stdout
    fixed = builtin_text("efi-kexec-fixed")
    healthy = _write(tmp_path, "fine.toml", fixed[: fixed.index("[expect]")])
    r = _cli("run", str(healthy))
    assert r.exit_code == 0 and "health      healthy" in r.stdout


def test_health_lists_problems_worst_first_beside_held_expectations() -> None:
    r = run_scenario(load_builtin("dt-kexec-current"))
    assert r["ok"] and r["expectations_held"] is True
    kinds = [p["kind"] for p in r["health"]["problems"]]
    assert kinds == sorted(kinds, key=HEALTH_ORDER.index)
    assert kinds[:3] == ["corrupted", "lost", "tainted"] and not r["health"]["healthy"]
    assert run_scenario(load_builtin("efi-kexec-fixed"))["health"] == {
        "healthy": True,
        "problems": [],
    }


def test_report_rows_show_health(tmp_path: Path) -> None:
    _cli("run", "efi-kexec-unfixed", "efi-kexec-fixed", "--report", str(tmp_path))
    page = (tmp_path / "index.html").read_text()
    assert '<td class="bad">UNHEALTHY: corrupted, lost, tainted, guest-errors</td>' in page
    assert '<td class="ok">healthy</td>' in page


# 3: image and DTB are not ITS tables


#: dt-kexec-current without --mem-min: kexec-tools puts the image over the live tables
#: and the storage controller's handover MSIs set bits in it
IMAGE_HIT = builtin_text("dt-kexec-current").replace("mem_min = 0x40000000\n", "")


def test_memory_map_kinds_of_boot_segments() -> None:
    r = run_scenario(parse_scenario(IMAGE_HIT))
    kinds = {m["label"]: m["kind"] for g in r["generations"] for m in g["memory_map"]}
    assert kinds["kernel image (gen 0)"] == "image"
    assert kinds["kernel image (gen 1, loaded by kexec-tools)"] == "image"
    assert kinds["device tree (gen 1, loaded by kexec-tools)"] == "boot-data"
    its = {label for label, kind in kinds.items() if kind == "its"}
    assert its and all(label.startswith(("ITS", "ITT")) for label in its)
    # the fatal bit in the image sits on an "image" bar
    assert any(k == "image" for _, _, k, _ in marker_groups(r))


# 4: the timeline counts MSIs stuck behind old tables when they are


def test_timeline_counts_stuck_msis_as_lost_when_they_get_stuck() -> None:
    # v4.19 cannot clear EnableLPIs here, so nothing sticks behind old tables: the ITS
    # drops the MSIs at once and the timeline counts them lost as they go
    r = run_scenario(load_builtin("efi-kexec-unfixed"))
    steps = r["timeline"]
    assert steps[-1]["stuck"] == 0 and steps[-1]["lost"] == 408
    assert [s["lost"] for s in steps] == [0, 0, 8, 8, 408]
    assert timeline_lost(steps)[-1] == r["msis"]["lost"] == 408


# 5: crashes, kdump and FreeBSD headings


def test_crash_is_a_verdict_line_and_a_heading(tmp_path: Path) -> None:
    out = _cli("run", str(_write(tmp_path, "hit.toml", IMAGE_HIT))).stdout
    assert "── generation 1: Linux v6.6, DT, entered by kexec, CRASHED ──" in out
    assert re.search(r"^  crashed +gen 1 \(v6\.6\): GICR\(CPU\d\) set a pending bit", out, re.M)
    verdict = out[out.index("── verdict ──") :].split("\n\n")[0]
    assert max(len(line) for line in verdict.splitlines()) <= 110  # the crash cause wraps
    assert "Internal error: Oops" in out


def test_kdump_and_freebsd_headings(tmp_path: Path) -> None:
    text = builtin_text("efi-kexec-fixed").replace(
        'action = "boot"\nkernel = "v6.6"',
        'action = "boot"\nkernel = "v6.6"\ncmdline = "crashkernel=512M"',
    )
    kd = text.replace('action = "kexec"', 'action = "kdump"')
    out = _cli("run", "--no-logs", str(_write(tmp_path, "kd.toml", kd))).stdout
    assert "── generation 1: Linux v6.6, EFI, entered by kdump (capture kernel) ──" in out
    fb = text.replace(
        'action = "kexec"\nkernel = "v6.6"', 'action = "kexec"\nkernel = "freebsd-kboot"'
    )
    out = _cli("run", "--no-logs", str(_write(tmp_path, "fb.toml", fb))).stdout
    assert "── generation 1: FreeBSD freebsd-kboot, EFI, entered by kexec" in out
    assert "Linux freebsd-kboot" not in out


# 6: default output fits a screen


def test_default_run_fits_a_screen_and_all_or_v_undo_it() -> None:
    out = _cli("run").stdout
    lines = out.splitlines()
    # 4,848 lines for 9 built-ins before issue 11; now 15 built-ins at under 80 each
    assert len(lines) < 80 * len(builtin_names())
    assert max(len(line) for line in lines) < 140  # 2,510 before
    assert "idle CPU(s)" in out and "--all shows them" in out
    one = _cli("run", "tx2-host-kexec").stdout  # one named scenario: its full log
    assert "CPU223: using allocated LPI pending table" in one
    assert "CPU223" not in _cli("run", "tx2-host-kexec", "efi-kexec-fixed").stdout
    full = _cli("run", "tx2-host-kexec", "--all", "--no-logs").stdout
    assert "CPU223" in full and "idle CPU(s)" not in full


# 7: progress on stderr for the matrix and reports


def test_matrix_reports_progress_on_stderr_and_q_silences_it() -> None:
    args = ["matrix", "--to", "v6.6", "--boot", "efi", "--platform", "efi-server-8"]
    r = _cli(*args)
    assert "gickexec: matrix cell 2/2" in r.stderr and "matrix cell" not in r.stdout
    assert _cli(*args, "-q").stderr == ""


# 9: colour on a terminal only


def test_colour_only_when_asked_or_on_a_terminal() -> None:
    assert not ANSI.search(_cli("run", "dt-kexec-current").stdout)  # not a terminal
    coloured = _cli("run", "dt-kexec-current", "--color", "always").stdout
    assert "\x1b[31m\x1b[1mUNHEALTHY\x1b[0m" in coloured
    assert re.search(r"\x1b\[31m\x1b\[1mGICv3: CPU0: Booted with LPIs enabled", coloured)
    never = _cli("run", "dt-kexec-current", "--color", "never").stdout
    assert not ANSI.search(never)
    assert ANSI.sub("", coloured) == never


def test_no_color_turns_auto_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert _colour("auto") is None  # click decides: colour on a terminal only
    monkeypatch.setenv("NO_COLOR", "1")
    assert _colour("auto") is False and _colour("always") is True
    assert _colour("never") is False


def test_matrix_outcomes_coloured_on_request() -> None:
    args = ["matrix", "-q", "--from", "v6.6", "--to", "v6.6", "--mode", "kexec", "--boot", "dt"]
    args += ["--platform", "qemu-virt"]
    assert not ANSI.search(_cli(*args).stdout)
    assert "\x1b[31m\x1b[1mhang      \x1b[0m" in _cli(*args, "--color", "always").stdout


# 10: one JSON convention


@pytest.mark.parametrize(
    "args",
    [
        ["run", "efi-kexec-fixed"],
        ["scenarios"],
        ["profiles"],
        ["platforms"],
        [
            "matrix",
            "--to",
            "v6.6",
            "--mode",
            "kexec",
            "--boot",
            "efi",
            "--platform",
            "efi-server-8",
        ],
    ],
)
def test_every_data_command_has_json_with_schema_and_pretty(args: list[str]) -> None:
    compact = _cli(*args, "--json", "-q" if args[0] == "matrix" else "--json").stdout
    pretty = _cli(*args, "--json", "-p").stdout
    doc = json.loads(compact)
    assert next(iter(doc)) == "schema" and doc["schema"] == 1
    assert "\n" not in compact.strip() and pretty.startswith('{\n  "schema": 1,')
    assert json.loads(pretty) == doc


def test_json_and_markdown_exclude_each_other() -> None:
    r = _cli("platforms", "--json", "--markdown")
    assert r.exit_code == 2 and "exclude each other" in r.stderr


def test_records_are_objects_with_named_fields() -> None:
    r = run_scenario(load_builtin("efi-kexec-chain"))
    node = r["memreserve"]["list"][0]
    assert set(node["entries"][0]) == {"addr", "size"}
    assert set(r["generations"][0]["reserved"][0]) == {"start", "size"}
    sent = next(c for c in r["expectations"] if c["check"] == "msis_sent")
    assert sent["expected"] == {"min": 880, "max": 880} and sent["actual"] == 880


def test_docs_json_names_every_key_run_prints() -> None:
    doc = json.loads(_cli("run", "--json", "efi-kexec-unfixed").stdout)
    sc = doc["scenarios"][0]
    text = (ROOT / "docs" / "json.md").read_text()
    keys = set(doc) | set(sc) | set(sc["generations"][1]) | set(sc["timeline"][0])
    keys |= set(sc["health"]) | set(sc["msis"]) | set(sc["corruption"]["events"][0])
    missing = sorted(k for k in keys if not re.search(rf"\b{k}\b", text))
    assert not missing, f"docs/json.md does not describe {missing}"


# 11, 12: numbering stated; help with examples and exit codes


def test_help_texts_have_examples_and_exit_status() -> None:
    for cmd in ("run", "matrix", "inspect", "report"):
        text = _cli(cmd, "--help").stdout
        assert "Exit status" in text and "gickexec " + cmd in text, cmd
    matrix = _cli("matrix", "--help").stdout
    for flag in ("--to", "--mode", "--boot", "--platform", "--seed"):
        line = next(x for x in matrix.splitlines() if x.strip().startswith(flag))
        assert len(line.split(flag, 1)[1].strip()) > 12, flag  # described, not bare
    assert "top-level step" in _cli("run", "--help").stdout
    commands = _cli("--help").stdout.split("Commands:")[1].split("Examples:")[0]
    assert "..." not in commands  # summaries not cut


def test_memreserve_node_count_says_what_it_counts() -> None:
    out = _cli("run", "--no-logs", "efi-kexec-chain").stdout
    assert "memreserve  1 node(s) after the root, 9 entries" in out


# 14: the basics


def test_python_m_and_version_name_profiles_and_presets() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "gickexec", "--version"], capture_output=True, text=True, check=True
    )
    assert proc.stdout.startswith("gickexec ")
    assert "v4.19 (4.19.0)" in proc.stdout and "freebsd-kboot" in proc.stdout
    assert "thunderx2" in proc.stdout and "qemu-virt" in proc.stdout


def test_license_file_matches_pyproject() -> None:
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert 'license = { text = "MIT" }' in (ROOT / "pyproject.toml").read_text()


def test_dash_reads_stdin_for_run_and_report(tmp_path: Path) -> None:
    r = _cli("run", "--json", "-", stdin=builtin_text("efi-kexec-fixed"))
    assert r.exit_code == 0, r.output
    sc = json.loads(r.stdout)["scenarios"][0]
    assert sc["name"] == "efi-kexec-fixed" and sc["source"] == "<stdin>"
    r = _cli("report", "-", "-o", str(tmp_path), stdin=r.stdout)
    assert r.exit_code == 0 and (tmp_path / "index.html").exists()


def test_report_refuses_another_schema_version(tmp_path: Path) -> None:
    saved = _write(tmp_path, "r.json", json.dumps({"schema": 2, "scenarios": []}))
    r = _cli("report", str(saved), "-o", str(tmp_path / "out"))
    assert r.exit_code == 2 and "this gickexec reads schema 1" in r.stderr


def test_shell_completion_of_names() -> None:
    def complete(args: list[str], incomplete: str) -> list[str]:
        comp = ShellComplete(main, {}, "gickexec", "_GICKEXEC_COMPLETE")
        return [c.value for c in comp.get_completions(args, incomplete)]

    assert "efi-kexec-unfixed" in complete(["run"], "efi-kexec-u")
    assert complete(["show"], "tx2-h")[0] == "tx2-host-kexec"
    assert complete(["matrix", "--to"], "v6.6,v4.1") == ["v6.6,v4.19"]
    assert "thunderx2-kvm-guest" in complete(["matrix", "--platform"], "thunderx2-")


# 15: figures


def test_corruption_markers_count_every_bit() -> None:
    for name in ("efi-kexec-unfixed", "dt-kexec-current"):
        r = run_scenario(load_builtin(name))
        assert sum(n for *_, n in marker_groups(r)) == r["corruption"]["bits"] == 8
    assert DPI >= 150


def test_rerun_with_fewer_scenarios_removes_stale_figures(tmp_path: Path) -> None:
    _cli("run", "-q", "efi-kexec-fixed", "efi-kexec-chain", "--report", str(tmp_path))
    (tmp_path / "notes.txt").write_text("mine")
    _cli("run", "-q", "efi-kexec-fixed", "--report", str(tmp_path))
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["index.html", "notes.txt", "s0-memory-map.png", "s0-timeline.png"]


# 16: startup


def test_run_without_report_does_not_import_matplotlib() -> None:
    code = (
        "import sys\n"
        "from gickexec.cli import _colour, main\n"
        "try:\n"
        "    main(['run', '--no-logs', 'efi-kexec-fixed'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('matplotlib' in sys.modules, file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stderr.strip().endswith("False")


def test_every_builtin_states_its_health() -> None:
    out = _cli("run", "--no-logs").stdout
    summary = out[out.rindex("\n\n") :]
    assert summary.count("healthy") + summary.count("UNHEALTHY") >= len(builtin_names())


def test_parse_scenario_source_name() -> None:
    assert parse_scenario(builtin_text("efi-kexec-fixed"), "<stdin>").source == "<stdin>"
