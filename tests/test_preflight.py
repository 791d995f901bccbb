"""gickexec preflight: the live-system reader, the prediction and the collector script.

The real runs (tests/data/realcheck) are the proof: the first kernel's part of each log
is what preflight reads, the second kernel's part is what it must predict.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.preflight_bundles import kexec_debug_text, write_bundle

from gickexec.cli import main
from gickexec.inspect.live import (
    LiveError,
    parse_interrupts,
    parse_iomem,
    parse_kexec_debug,
    read_live,
    tables_from_lines,
)
from gickexec.scenario.builtin import builtin_text, load_builtin
from gickexec.scenario.compare import model_segments, split_generations
from gickexec.scenario.preflight import PreflightOptions, preflight, profile_for
from gickexec.scenario.runner import play
from gickexec.scenario.schema import parse_scenario

DATA = Path(__file__).parent / "data" / "realcheck"
#: The lines of the next kernel that say what it did with the tables
DECISIVE = re.compile(
    r"^(?:ITS@.*allocated|GICv3: (?:using|Using|Expected|CPU\d+: (?:using|Booted with))|"
    r"CPU\d+: Failed to disable)"
)


def _preflight(*args: str) -> tuple[int, dict[str, Any]]:
    r = CliRunner().invoke(main, ["preflight", *args, "--json"])
    assert r.exit_code in (0, 1), r.output
    doc = json.loads(r.output)
    assert doc["schema"] == 1
    return r.exit_code, doc["preflight"]


def _decisive(lines: list[str]) -> list[str]:
    return [ln for ln in lines if DECISIVE.match(ln)]


# -- the real runs -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("run", "outcome", "code"),
    [
        ("uefi-kexec.txt", "reuse", 0),
        ("dt-kexec-memmin.txt", "corrupted", 1),
        ("uefi-kdump.txt", "reuse", 0),
    ],
)
def test_real_runs_predicted_as_the_second_kernel_did(run: str, outcome: str, code: int) -> None:
    text = (DATA / run).read_text()
    exit_code, doc = _preflight("--dmesg", str(DATA / run))
    assert exit_code == code
    model = doc["model"]
    assert isinstance(model, dict)
    assert model["platform"] == "qemu-virt"
    assert model["reproduced"], model["differences"]
    (pred,) = doc["predictions"]
    assert pred["outcome"] == outcome
    # the next kernel's table lines, addresses and all, are the real second kernel's
    real_next = split_generations(text)[1]
    assert _decisive(pred["lines"]) == _decisive(real_next)
    assert len(_decisive(real_next)) >= 5


def test_dt_memmin_lpis_lost_if_enable_lpis_is_one_way() -> None:
    code, doc = _preflight("--dmesg", str(DATA / "dt-kexec-memmin.txt"), "--enable-lpis", "unknown")
    assert code == 1
    got = {p["enable_lpis"]: p for p in doc["predictions"]}
    assert got["one-way"]["outcome"] == "lpis-lost"
    assert got["clearable"]["outcome"] == "corrupted"
    assert "CPU1: Failed to disable LPIs" in got["one-way"]["lines"]
    assert got["one-way"]["msis"]["lost"] > 0 == got["clearable"]["msis"]["lost"]
    assert "memory probably corrupted" in got["clearable"]["why"]


def test_dt_kexec_without_mem_min_predicts_the_hang(tmp_path: Path) -> None:
    """The held-out DT kexec with no options: its kexec -d built from the model's loader
    (which reproduces the real --mem-min run's segments), the live system the real one."""
    world = play(load_builtin("qemu-dt-kexec"))
    step = next(s for s in load_builtin("qemu-dt-kexec").steps if s.action == "kexec")
    kd = tmp_path / "kexec-d.txt"
    kd.write_text(kexec_debug_text(step.cmdline, step.initrd, model_segments(world)[0], False))
    code, doc = _preflight("--dmesg", str(DATA / "dt-kexec-memmin.txt"), "--kexec-debug", str(kd))
    assert code == 1
    assert doc["model"]["reproduced"]
    (pred,) = doc["predictions"]
    assert pred["outcome"] == "hang"
    over = {h["table"] for h in pred["segments_over_tables"]}
    assert "LPI property table" in over
    assert all(h["segment"] == "kernel image" for h in pred["segments_over_tables"])
    assert "gic_reset_prop_table" in pred["why"]
    mem_min = next(s for s in doc["suggestions"] if "--mem-min" in s["suggestion"])
    assert mem_min["suggestion"].startswith("kexec --mem-min=0x42600000")
    assert mem_min["outcome"] == "corrupted"  # no hang, still unpublished tables
    uefi = next(s for s in doc["suggestions"] if "UEFI" in s["suggestion"])
    assert uefi["safe"] and uefi["outcome"] == "reuse"


def test_text_report_reads_as_documented() -> None:
    r = CliRunner().invoke(main, ["preflight", "--dmesg", str(DATA / "uefi-kexec.txt")])
    assert r.exit_code == 0
    assert "the model's first kernel put every table where the live one did" in r.output
    assert "GICv3: Using preallocated redistributor tables" in r.output
    assert r.output.rstrip().endswith("SAFE")


# -- bundles made from the model's own runs ------------------------------------------------

NOLPI = builtin_text("qemu-dt-kexec").replace(
    'rc_stage=1 rc_mode=kexec"', 'rc_stage=1 rc_mode=kexec irqchip.gicv3_nolpi=1"'
)


@pytest.mark.parametrize(
    ("scenario", "extra", "outcomes"),
    [
        ("qemu-uefi-kexec", (), {"clearable (QEMU virt)": "reuse"}),
        ("qemu-dt-kexec", (), {"clearable (QEMU virt)": "hang"}),
        ("qemu-dt-kexec-memmin", (), {"clearable (QEMU virt)": "corrupted"}),
        ("qemu-dt-kdump", (), {"clearable (QEMU virt)": "reuse"}),
        ("dt-kexec-current", (), {"one-way": "lpis-lost", "clearable": "corrupted"}),
        ("efi-kexec-fixed", (), {"one-way": "reuse", "clearable": "reuse"}),
        ("efi-kexec-unfixed", (), {"one-way": "lpis-lost"}),  # v4.19 cannot disable LPIs
        (
            "efi-kexec-upgrade",
            ("--next", "v6.6", "--enable-lpis", "one-way"),
            {"one-way": "lpis-lost"},
        ),
        ("centriq-nic-kexec", ("--next", "v6.6"), {"one-way": "reuse", "clearable": "reuse"}),
        ("nolpi", (), {"clearable (QEMU virt)": "no-lpis"}),
    ],
)
def test_model_bundles_every_outcome(
    tmp_path: Path, scenario: str, extra: tuple[str, ...], outcomes: dict[str, str]
) -> None:
    sc = parse_scenario(NOLPI) if scenario == "nolpi" else load_builtin(scenario)
    bundle = write_bundle(sc, tmp_path / "b")
    code, doc = _preflight(str(bundle), *extra)
    model = doc["model"]
    assert model["reproduced"], model["differences"]
    got = {p["enable_lpis"]: p["outcome"] for p in doc["predictions"]}
    for variant, outcome in outcomes.items():
        assert got[variant] == outcome
    assert code == (0 if doc["safe"] else 1)
    assert doc["safe"] == all(o in ("reuse", "no-lpis", "fresh") for o in got.values())


def test_kdump_without_crashkernel_is_no_handover(tmp_path: Path) -> None:
    bundle = write_bundle(load_builtin("qemu-uefi-kexec"), tmp_path / "b", kexec_d=False)
    code, doc = _preflight(str(bundle), "--kdump")
    assert code == 1
    (pred,) = doc["predictions"]
    assert pred["outcome"] == "no-handover"
    assert "crashkernel" in pred["why"]
    # the suggested region is played: a reboot with it, then the panic
    crash = [s for s in doc["suggestions"] if s["suggestion"].startswith("crashkernel=")]
    assert [(s["suggestion"].split()[0], s["outcome"], s["safe"]) for s in crash] == [
        ("crashkernel=256M", "reuse", True)
    ]


def test_unsafe_dt_kexec_suggests_a_crashkernel_region_for_kdump(tmp_path: Path) -> None:
    bundle = write_bundle(load_builtin("dt-kexec-current"), tmp_path / "b")
    code, doc = _preflight(str(bundle))
    assert code == 1 and not doc["safe"]
    crash = [s for s in doc["suggestions"] if s["suggestion"].startswith("crashkernel=")]
    assert len(crash) == 1 and crash[0]["safe"] and crash[0]["outcome"] == "reuse"
    assert "segments stay off the live tables" in crash[0]["suggestion"]


# -- bad input -----------------------------------------------------------------------------


X86_DMESG = """[    0.000000] Linux version 6.1.0-18-amd64 (debian-kernel@lists.debian.org)
[    0.000000] Command line: BOOT_IMAGE=/vmlinuz-6.1.0-18-amd64 root=/dev/sda1
[    0.000000] x86/fpu: Supporting XSAVE feature 0x001: 'x87 floating point registers'
"""


def _bad(tmp_path: Path, *args: str) -> str:
    r = CliRunner().invoke(main, ["preflight", *args])
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    return r.output


def test_bad_inputs_are_clear_errors(tmp_path: Path) -> None:
    real = (DATA / "uefi-kexec.txt").read_text()
    (tmp_path / "x86.txt").write_text(X86_DMESG)
    assert "not an arm64 kernel's" in _bad(tmp_path, "--dmesg", str(tmp_path / "x86.txt"))
    # truncated: the log stops before the LPI setup
    cut = real[: real.index("GICv3: using LPI property table")]
    (tmp_path / "cut.txt").write_text(cut)
    assert "cut off" in _bad(tmp_path, "--dmesg", str(tmp_path / "cut.txt"))
    # the log's start lost (ring buffer wrapped)
    first = real[: real.index("Booting Linux on physical CPU", real.index("RC kexec-d:"))]
    tail = "\n".join(first.splitlines()[20:])
    (tmp_path / "tail.txt").write_text(tail)
    assert "Booting Linux" in _bad(tmp_path, "--dmesg", str(tmp_path / "tail.txt"))
    # wrong files: iomem given a dmesg, kexec -d given iomem, a binary file, a directory
    (tmp_path / "iomem.txt").write_text("00000000-00000000 : System RAM\n")
    out = _bad(
        tmp_path, "--dmesg", str(DATA / "uefi-kexec.txt"), "--iomem", str(tmp_path / "iomem.txt")
    )
    assert "as root" in out
    out = _bad(
        tmp_path, "--dmesg", str(DATA / "uefi-kexec.txt"), "--iomem", str(DATA / "README.md")
    )
    assert "/proc/iomem" in out
    (tmp_path / "bin").write_bytes(b"\x7fELF\0\0\0")
    assert "binary" in _bad(tmp_path, "--dmesg", str(tmp_path / "bin"))
    out = _bad(
        tmp_path, "--dmesg", str(DATA / "uefi-kexec.txt"), "--kexec-debug", str(DATA / "README.md")
    )
    assert "segment[N]" in out
    assert "no dmesg.txt" in _bad(tmp_path, str(tmp_path))
    assert "not a directory" in _bad(tmp_path, str(tmp_path / "nope"))
    assert "no input" in _bad(tmp_path)
    assert "not both" in _bad(tmp_path, str(tmp_path), "--dmesg", str(DATA / "uefi-kexec.txt"))
    assert "no such kernel profile" in _bad(
        tmp_path, "--dmesg", str(DATA / "uefi-kexec.txt"), "--next", "v9.9"
    )
    assert "--mem-min" in _bad(
        tmp_path, "--dmesg", str(DATA / "uefi-kexec.txt"), "--mem-min", "lots"
    )


def test_parsers_units() -> None:
    ram, image = parse_iomem(
        "40000000-7fffffff : System RAM\n  40210000-4185ffff : Kernel code\n"
        "80000000-bfffffff : System RAM\n"
    )
    assert ram == [(0x40000000, 0x80000000)] and image == 0x40210000
    with pytest.raises(LiveError, match="ends before"):
        parse_iomem("7fffffff-40000000 : System RAM\n")
    assert parse_interrupts(
        " 51: 1 0 ITS-MSI 16384 Edge PCIe PME\n 52: 0 0 ITS-MSI 524288 Edge v0\n"
        " 53: 20 0 ITS-MSI 524289 Edge v1\n 10: 440 436 GICv3 27 Level arch_timer\n"
    ) == [(0x8, 1), (0x100, 2)]
    plan = parse_kexec_debug(
        kexec_debug_text("a b  ", 100, [(0x1000, 0x2000), (0x3000, 0x1000)], True)
    )
    assert plan.kdump and plan.cmdline == "a b  " and plan.initrd_bytes == 100
    with pytest.raises(LiveError, match="memsz"):
        parse_kexec_debug("nr_segments = 1\nsegment[0].mem   = 0x1000\n")
    t = tables_from_lines(
        [
            "GIC: using LPI property table @0x0000000085db0000",
            "CPU3: using LPI pending table @0x85df0000",
        ]
    )
    assert t.prop == 0x85DB0000 and t.pend == {3: 0x85DF0000} and not t.reused
    assert profile_for((6, 1)) == "v6.1" and profile_for((6, 3)) == "v6.1"
    assert profile_for((4, 20), "4.20.0-rc1") == "v4.20-rc1"
    assert profile_for((5, 0), "5.0.0-rc3") == "v4.20"
    with pytest.raises(LiveError, match="older"):
        profile_for((3, 10))


def test_realcheck_logs_embed_every_input() -> None:
    live = read_live((DATA / "uefi-kdump.txt").read_text())
    assert live.crashkernel == (0x9F800000, 0x10000000)
    assert live.memreserve == 0xB9E15F98 and live.kernel_code == 0x4D880000
    assert live.devices == ((0x8, 1), (0x100, 2))
    assert live.plan is not None and live.plan.kdump and len(live.plan.segments) == 5


# -- the collector script ------------------------------------------------------------------


def _fake_root(root: Path, *, efi: bool) -> None:
    (root / "proc").mkdir(parents=True)
    text = (DATA / "uefi-kexec.txt").read_text()
    (root / "proc" / "iomem").write_text(
        "\n".join(ln.split("RC iomem: ", 1)[1] for ln in text.splitlines() if "RC iomem: " in ln)
        + "\n"
    )
    (root / "proc" / "cmdline").write_text("console=ttyAMA0 earlycon\n")
    (root / "proc" / "interrupts").write_text(" 52: 0 0 ITS-MSI 524288 Edge virtio0-config\n")
    (root / "sys" / "kernel").mkdir(parents=True)
    for name, value in (
        ("kexec_loaded", "0"),
        ("kexec_crash_loaded", "0"),
        ("kexec_crash_size", "0"),
    ):
        (root / "sys" / "kernel" / name).write_text(value + "\n")
    if efi:
        (root / "sys" / "firmware" / "efi").mkdir(parents=True)
        (root / "sys" / "firmware" / "efi" / "systab").write_text("ACPI20=0x79e00018\n")
        (root / "sys" / "kernel" / "debug" / "memblock").mkdir(parents=True)
        (root / "sys" / "kernel" / "debug" / "memblock" / "reserved").write_text(
            "0: 0x40000000..\n"
        )
        (root / "sys" / "kernel" / "debug" / "memblock" / "memory").write_text("0: 0x40000000..\n")
    (root / "dmesg.txt").write_text(text)


SHELLS = [s for s in ("dash", "busybox", "sh") if shutil.which(s)]


@pytest.mark.parametrize("shell", SHELLS[:2] or ["sh"])
def test_collector_script_gathers_a_bundle_preflight_reads(tmp_path: Path, shell: str) -> None:
    script = CliRunner().invoke(main, ["collect"]).output
    assert script.startswith("#!/bin/sh")
    (tmp_path / "collect.sh").write_text(script)
    root = tmp_path / "root"
    _fake_root(root, efi=True)
    # the fake kexec prints the realcheck run's kexec -d output (it loads nothing)
    (tmp_path / "fake-kexec").write_text(
        f"#!/bin/sh\nsed -n 's/^.*RC kexec-d: //p' '{DATA / 'uefi-kexec.txt'}'\n"
    )
    (tmp_path / "fake-kexec").chmod(0o755)
    # the fake dmesg prints the run's kernel lines, without the /init script's
    (tmp_path / "fake-dmesg").write_text(f"#!/bin/sh\ngrep -v 'RC ' '{root / 'dmesg.txt'}'\n")
    (tmp_path / "fake-dmesg").chmod(0o755)
    env = {
        **os.environ,
        "GICKEXEC_ROOT": str(root),
        "GICKEXEC_DMESG": str(tmp_path / "fake-dmesg"),
        "GICKEXEC_KEXEC": str(tmp_path / "fake-kexec"),
    }
    cmd = [shell, "sh"] if shell == "busybox" else [shell]
    out = tmp_path / "bundle"
    r = subprocess.run(
        [*cmd, str(tmp_path / "collect.sh"), str(out), "-l", "Image"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        [
            "cmdline.txt",
            "dmesg.txt",
            "efi.txt",
            "interrupts.txt",
            "iomem.txt",
            "kexec-d.txt",
            "kexec.txt",
            "memblock",
            "notes.txt",
            "uname.txt",
        ]
    )
    assert (out / "efi.txt").read_text().startswith("efi: present\nACPI20=")
    assert "kexec_crash_loaded=0" in (out / "kexec.txt").read_text()
    assert (out / "notes.txt").read_text() == ""
    # the real dmesg (no RC lines) and iomem, and the fake kexec's segments: the same
    # prediction as the real run
    code, doc = _preflight(str(out))
    assert code == 0
    assert [p["outcome"] for p in doc["predictions"]] == ["reuse"]


def test_collector_notes_what_it_could_not_read(tmp_path: Path) -> None:
    script = CliRunner().invoke(main, ["collect"]).output
    (tmp_path / "collect.sh").write_text(script)
    root = tmp_path / "root"
    _fake_root(root, efi=False)
    (root / "proc" / "iomem").write_text("00000000-00000000 : System RAM\n")
    env = {**os.environ, "GICKEXEC_ROOT": str(root), "GICKEXEC_DMESG": "false"}
    r = subprocess.run(
        [SHELLS[0] if SHELLS else "sh", str(tmp_path / "collect.sh"), str(tmp_path / "b")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 0
    notes = (tmp_path / "b" / "notes.txt").read_text()
    assert "dmesg failed" in notes and "zero addresses: run as root" in notes
    assert "no /sys/kernel/debug/memblock" in notes
    assert not (tmp_path / "b" / "kexec-d.txt").exists()
    assert (tmp_path / "b" / "efi.txt").read_text().startswith("efi: absent")
    # and preflight says what is wrong with such a bundle
    r2 = CliRunner().invoke(main, ["preflight", str(tmp_path / "b")])
    assert r2.exit_code == 2 and "Booting Linux" in r2.output


# -- hostile input: bounded, and always a clear error or a prediction ----------------------

_FIRST_BOOT = (DATA / "dt-kexec-memmin.txt").read_text()
_FIRST_BOOT_LINES = _FIRST_BOOT.splitlines()[
    : _FIRST_BOOT.splitlines().index(
        next(ln for ln in _FIRST_BOOT.splitlines()[300:] if "Booting Linux" in ln)
    )
]


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("Freeing initrd memory: 39076K", "Freeing initrd memory: 99999999999K", "half the RAM"),
        ("line: console=ttyAMA0", "line: crashkernel=foo console=ttyAMA0", "not a size"),
        ("RC iomem: 40000000-7fffffff :", "RC iomem: 40000000-7fffffffffffff :", "16 TiB"),
        ("RC iomem: 40000000-7fffffff :", "RC iomem: 40000000-40000fff :", "0 RAM banks"),
    ],
)
def test_values_the_model_cannot_build_are_refused(old: str, new: str, message: str) -> None:
    text = "\n".join(_FIRST_BOOT_LINES).replace(old, new, 1)
    assert new in text
    with pytest.raises(LiveError, match=message):
        preflight(read_live(text), PreflightOptions())


@given(
    st.lists(
        st.tuples(
            st.integers(0, len(_FIRST_BOOT_LINES) - 1),
            st.sampled_from(["drop", "digits", "junk"]),
            st.text(alphabet="0123456789abcdefx-: []@", max_size=40),
        ),
        max_size=6,
    )
)
@settings(max_examples=40, deadline=None)
def test_mangled_logs_give_a_prediction_or_a_clear_error(
    edits: list[tuple[int, str, str]],
) -> None:
    """Lines of a real log dropped, their numbers replaced or junk appended: the reader
    and the model either predict or raise LiveError, never anything else."""
    lines = list(_FIRST_BOOT_LINES)
    for where, how, junk in edits:
        at = where % len(lines)
        if how == "drop":
            del lines[at]
        elif how == "digits":
            lines[at] = re.sub(r"[0-9a-f]{4,}", junk or "0", lines[at])
        else:
            lines[at] += junk
        if not lines:
            break
    try:
        doc = preflight(read_live("\n".join(lines)), PreflightOptions())
    except LiveError as e:
        assert str(e)
    else:
        assert isinstance(doc["safe"], bool) and doc["predictions"]


def test_printed_segments_are_played_where_the_model_loader_differs(tmp_path: Path) -> None:
    """A kexec -d whose initrd is not where the model's loader would put it: the
    prediction says so and plays the printed segments."""
    text = (DATA / "dt-kexec-memmin.txt").read_text()
    kd = "\n".join(
        ln.split("RC kexec-d: ", 1)[1] for ln in text.splitlines() if "RC kexec-d: " in ln
    ).replace("segment[1].mem   = 0x52010000", "segment[1].mem   = 0x60000000")
    (tmp_path / "kexec-d.txt").write_text(kd)
    code, doc = _preflight(
        "--dmesg", str(DATA / "dt-kexec-memmin.txt"), "--kexec-debug", str(tmp_path / "kexec-d.txt")
    )
    assert code == 1
    assert doc["model"]["segments"] == "kexec -d"
    assert not doc["model"]["reproduced"]
    assert any("0x60000000+0x225000" in d for d in doc["model"]["differences"])
    (pred,) = doc["predictions"]
    initrd = next(s for s in pred["segments"] if s["name"] == "initrd")
    assert (initrd["addr"], initrd["size"]) == (0x60000000, 0x225000)
    assert pred["outcome"] == "corrupted"
    # the real runs need no forcing: the model's loader puts every segment where
    # kexec-tools did
    _, real = _preflight("--dmesg", str(DATA / "uefi-kdump.txt"))
    assert real["model"]["segments"] == "model loader"
