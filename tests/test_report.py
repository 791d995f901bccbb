"""HTML/PNG reports: files, figures, text views, bad input, and a real headless browser."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import matplotlib.image
import numpy as np
import pytest
from click.testing import CliRunner

from gickexec.cli import main
from gickexec.report.figures import KIND_COLOURS
from gickexec.report.html import REPORT_TITLE, render_iomem
from gickexec.report.text import line_class
from gickexec.scenario.builtin import load_builtin
from gickexec.scenario.runner import run_scenario

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def unfixed_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report")
    r = CliRunner().invoke(main, ["run", "efi-kexec-unfixed", "--no-logs", "--report", str(out)])
    assert r.exit_code == 0, r.output
    return out


def _png_pixels(path: Path) -> Any:
    assert path.read_bytes()[:8] == PNG_MAGIC
    return matplotlib.image.imread(path)


def test_report_files_and_title(unfixed_report: Path) -> None:
    names = sorted(p.name for p in unfixed_report.iterdir())
    assert names == ["index.html", "s0-memory-map.png", "s0-timeline.png"]
    page = (unfixed_report / "index.html").read_text()
    assert f"<title>{REPORT_TITLE}: efi-kexec-unfixed</title>" in page
    assert "<script" not in page  # works without JavaScript
    assert 'src="s0-memory-map.png"' in page and 'src="s0-timeline.png"' in page
    # the verdict, both logs side by side, the text views
    assert "sent 808, delivered 400, lost 408" in page
    assert page.count('<div class="log">') == 2
    assert "System RAM" in page and "/proc/interrupts, generation 1" in page
    assert "efi: no MEMRESERVE table" in page
    assert '<div class="hl">CPU0: using LPI pending table @0x' in page


def test_figures_are_real_pngs_with_content(unfixed_report: Path) -> None:
    for name in ("s0-memory-map.png", "s0-timeline.png"):
        px = _png_pixels(unfixed_report / name)
        assert px.shape[0] > 200 and px.shape[1] > 800
        assert float(np.std(px[..., :3])) > 0.05  # not a blank canvas


def test_corrupted_bits_are_marked_in_the_memory_map(tmp_path: Path) -> None:
    """The map of the unfixed scenario has red markers; the fixed one has none."""

    def red(scenario: str) -> int:
        out = tmp_path / scenario
        CliRunner().invoke(main, ["run", scenario, "--no-logs", "--report", str(out)])
        px = _png_pixels(out / "s0-memory-map.png")[..., :3]
        marker = (px[..., 0] > 0.75) & (px[..., 1] < 0.25) & (px[..., 2] < 0.25)
        return int(marker.sum())

    assert red("efi-kexec-unfixed") > 100
    assert red("efi-kexec-fixed") < 100  # only the legend's marker


def test_report_from_saved_json(tmp_path: Path) -> None:
    doc = {"scenarios": [run_scenario(load_builtin("efi-kexec-fixed"))]}
    saved = tmp_path / "results.json"
    saved.write_text(json.dumps(doc))
    r = CliRunner().invoke(main, ["report", str(saved), "-o", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    page = (tmp_path / "out" / "index.html").read_text()
    assert "GICv3: Using preallocated redistributor tables" in page
    assert "efi: MEMRESERVE=0x" in page
    assert not list((tmp_path / "out").glob(".report-*"))  # temporary directory removed


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("{not json", "not readable JSON"),
        ('{"scenarios": 3}', 'expected {"scenarios": [...]}'),
        ('{"scenarios": [{"name": "x"}]}', "not a result document"),
    ],
)
def test_report_of_bad_json_exits_2(tmp_path: Path, content: str, fragment: str) -> None:
    saved = tmp_path / "bad.json"
    saved.write_text(content)
    r = CliRunner().invoke(main, ["report", str(saved), "-o", str(tmp_path / "out")])
    assert r.exit_code == 2
    assert fragment in r.output
    assert not (tmp_path / "out" / "index.html").exists()


@pytest.mark.parametrize(
    ("line", "cls"),
    [
        ("GICv3: CPU3: Booted with LPIs enabled, memory probably corrupted", "warn"),
        ("CPU3: Failed to disable LPIs", "warn"),
        ("------------[ cut here ]------------", "warn"),
        ("GICv3: Using preallocated redistributor tables", "hl"),
        ("efi: EFI v2.7 by EDK II", "hl"),
        (
            "ITS@0x0000000030040000: allocated 8192 Devices @a0000 (indirect, esz 8, psz 64K)",
            "hl",
        ),
        ("smp: Bringing up secondary CPUs ...", ""),
        ("Linux version 6.6.0 (gickexec@model) (gcc (GCC) 12.2.0) #1 SMP PREEMPT", ""),
        ("kexec_core: Starting new kernel", "hl"),
        ("Internal error: Oops - undefined instruction: 0 [#1] PREEMPT SMP", "warn"),
        ("Initramfs unpacking failed: junk within compressed archive", "warn"),
    ],
)
def test_which_log_lines_are_highlighted(line: str, cls: str) -> None:
    assert line_class(line) == cls


def test_iomem_view_golden() -> None:
    result = {"platform": {"ram": [{"start": 0x8000_0000, "size": 0x8000_0000}]}}
    gen = {
        "image": {"addr": 0x9000_0000, "size": 0x280_0000},
        "reserved": [
            {"start": 0x8800_0000, "size": 0x1_0000},
            {"start": 0xA000_0000, "size": 0x2000},
        ],
    }
    assert render_iomem(result, gen) == (
        "80000000-ffffffff : System RAM\n"
        "  88000000-8800ffff : reserved\n"
        "  90000000-927fffff : Kernel image\n"
        "  a0000000-a0001fff : reserved"
    )


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_page_in_a_headless_browser(unfixed_report: Path, tmp_path: Path) -> None:
    browser = _chromium()
    if browser is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    url = (unfixed_report / "index.html").as_uri()
    shot = tmp_path / "shot.png"
    subprocess.run(
        [browser, *flags, f"--screenshot={shot}", "--window-size=1280,2600", url],
        check=True,
        capture_output=True,
        timeout=120,
    )
    px = _png_pixels(shot)[..., :3]
    assert px.shape[:2] == (2600, 1280)
    assert float(np.std(px)) > 0.05  # text, tables and figures, not a blank page
    assert float(px.mean()) < 0.99
    dom = subprocess.run(
        [browser, *flags, "--dump-dom", url], check=True, capture_output=True, timeout=120
    ).stdout.decode()
    assert f"<title>{REPORT_TITLE}: efi-kexec-unfixed</title>" in dom
    assert dom.count("<img") == 2
    # the health verdict as the browser renders it: the text, in the "bad" red
    assert "UNHEALTHY: corrupted, lost, tainted, guest-errors" in dom
    assert _has_colour(px, "#c0392b")
    # the memory map (the window is tall enough to hold it) shows image bars and legend
    # entry; nothing else on the page has that colour
    assert _has_colour(px, KIND_COLOURS["image"])


def _has_colour(px: Any, hex_colour: str, tolerance: float = 0.03) -> bool:
    """Whether a screenshot holds a few pixels of ``hex_colour``."""
    rgb = np.array([int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)])
    close = np.all(np.abs(px - rgb) < tolerance, axis=-1)
    return int(close.sum()) > 20


def test_timeline_unrolls_repeats_and_keeps_the_books() -> None:
    r = run_scenario(load_builtin("efi-kexec-chain"))
    tl = r["timeline"]
    assert [t["step"] for t in tl] == list(range(len(tl)))
    assert sum(t["action"] == "kexec" for t in tl) == 10
    assert tl[-1]["generation"] == 10
    assert [t["sent"] for t in tl] == sorted(t["sent"] for t in tl)
    assert tl[-1]["sent"] == r["msis"]["sent"] and tl[-1]["lost"] == r["msis"]["lost"]
