"""Speed figures of the model, all measured in one run (``gickexec bench``,
``python benchmarks/run.py``); benchmarks/README.md records the latest.

Every figure is a median over repeats on this machine; the result carries the machine's
description, because the figures mean nothing without it.  Nothing here is used by the
simulation itself.
"""

from __future__ import annotations

import dataclasses
import os
import platform as host
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from gickexec.hw.platform import PLATFORMS, Platform
from gickexec.scenario.builtin import load_builtin
from gickexec.scenario.runner import run_scenario
from gickexec.scenario.world import World

__all__ = ["KEXEC_PLATFORMS", "format_text", "measure"]

#: The handover figures' platforms: (label, preset, CPUs)
KEXEC_PLATFORMS = (
    ("qemu-virt", "qemu-virt", 4),
    ("thunderx2", "thunderx2", 224),
    ("512-cpu", "thunderx2", 512),
)
_PROFILE = "v6.6"  # the fixed kernel
_NVEC = 8

# Peak RSS: 512 CPUs, IDbits 24, three kexecs, in a fresh interpreter.
_RSS_SCRIPT = """
import dataclasses
from gickexec import World
from gickexec.hw.platform import PLATFORMS
p = dataclasses.replace(PLATFORMS["thunderx2"], cpus=512, id_bits=24)
w = World(p, seed=1)
w.add_device("eth0", device_id=0x100, nvec=8)
w.boot("v6.6")
for _ in range(3):
    w.traffic("eth0", 1000)
    w.kexec("v6.6")
w.finish()
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forking parent across exec.
with open("/proc/self/status") as f:
    print(next(int(ln.split()[1]) for ln in f if ln.startswith("VmHWM:")))
"""


class _Clock:
    """Wall and CPU time of a block; CPU time includes waited-for child processes, so
    figures stay comparable on a machine other people are using too."""

    def __enter__(self) -> _Clock:
        self._wall = time.perf_counter()
        self._cpu = self._cpu_now()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._wall
        self.cpu = self._cpu_now() - self._cpu

    @staticmethod
    def _cpu_now() -> float:
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return time.process_time() + kids.ru_utime + kids.ru_stime


def _median(fn: Callable[[], tuple[float, float]], repeats: int) -> tuple[float, float]:
    """Medians of (wall, cpu) over ``repeats`` runs of ``fn``."""
    runs = [fn() for _ in range(repeats)]
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def _platform(preset: str, cpus: int) -> Platform:
    p = PLATFORMS[preset]
    return p if p.cpus == cpus else dataclasses.replace(p, cpus=cpus)


def _booted(p: Platform, *, batch: bool) -> World:
    w = World(p, seed=1)
    w.batch_traffic = batch
    w.add_device("eth0", device_id=0x100, nvec=_NVEC)
    w.boot(_PROFILE)
    w.traffic("eth0", 2 * _NVEC)  # translations cached, pages touched
    return w


def _msi_rate(msis: int, *, batch: bool, repeats: int, bursts: int = 1) -> tuple[float, float]:
    """MSIs per second through World.traffic (device write to EOI) on efi-server-8, sent
    as ``bursts`` calls of ``msis`` each."""

    def once() -> tuple[float, float]:
        w = _booted(PLATFORMS["efi-server-8"], batch=batch)
        with _Clock() as c:
            for _ in range(bursts):
                w.traffic("eth0", msis)
        assert w.ledger.lost == 0, "the benchmark's traffic must all be delivered"
        return msis * bursts / c.wall, msis * bursts / c.cpu

    return _median(once, repeats)


def _kexec_ms(p: Platform, repeats: int) -> tuple[tuple[float, float], int]:
    """One fixed-kernel kexec handover; also the LPI table bytes the new kernel covers."""
    table_bytes = 0

    def once() -> tuple[float, float]:
        nonlocal table_bytes
        w = _booted(p, batch=True)
        with _Clock() as c:
            w.kexec(_PROFILE)
        rds = w.machine.rdists
        # the property table (one byte per LPI) and every CPU's pending table
        table_bytes = sum(rd.pending_table_bytes for rd in rds) + max(
            rd.lpi_limit - 8192 for rd in rds
        )
        return c.wall * 1000, c.cpu * 1000

    return _median(once, repeats), table_bytes


def _memset_ms(size: int, repeats: int) -> float:
    """Zero-filling ``size`` bytes already allocated: the physical floor of a handover."""
    buf = np.ones(size, dtype=np.uint8)

    def once() -> tuple[float, float]:
        with _Clock() as c:
            buf.fill(0)
        return c.wall * 1000, c.cpu * 1000

    return _median(once, repeats)[0]


def _process_s(args: list[str], repeats: int) -> tuple[float, float]:
    def once() -> tuple[float, float]:
        with _Clock() as c:
            subprocess.run(args, check=False, capture_output=True)
        return c.wall, c.cpu

    return _median(once, repeats)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from gickexec.cli import main; main()", *args]


def machine_description() -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if "model name" in ln), "")
    except OSError:
        pass
    return {
        "cpu": model or host.processor() or host.machine(),
        "cpus": os.cpu_count(),
        "python": host.python_version(),
        "system": host.platform(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def measure(*, quick: bool = False) -> dict[str, Any]:
    """Every figure of issue 10's table; ``quick`` shrinks counts and repeats (a smoke run).

    The keys hold wall-clock figures; ``cpu_time`` holds the same figures in CPU time
    (this process and its children), which other load on the machine inflates less."""
    repeats = 1 if quick else 5
    out: dict[str, Any] = {"machine": machine_description()}
    cpu: dict[str, Any] = {}

    def put(key: str, figures: tuple[float, float], digits: int) -> None:
        out[key], cpu[key] = (round(v, digits) if digits else round(v) for v in figures)

    put("msi_rate", _msi_rate(2_000 if quick else 50_000, batch=False, repeats=repeats), 0)
    # Bursts of 10,000: each pays its two one-at-a-time rounds and the state comparison.
    put("msi_batch_rate", _msi_rate(10_000, batch=True, repeats=repeats,
                                    bursts=10 if quick else 100), 0)
    kexec: dict[str, float] = {}
    kexec_cpu: dict[str, float] = {}
    memset: dict[str, float] = {}
    for label, preset, cpus in KEXEC_PLATFORMS:
        (wall, used), size = _kexec_ms(_platform(preset, cpus), 1 if quick else 5)
        kexec[label], kexec_cpu[label] = round(wall, 2), round(used, 2)
        memset[label] = round(_memset_ms(size, 5), 4)
    out["kexec_cycle_ms"], cpu["kexec_cycle_ms"] = kexec, kexec_cpu
    out["memset_ms"] = memset
    out["ratio"] = {k: round(kexec[k] / max(memset[k], 1e-6), 1) for k in kexec}
    put("run_fixed_s", _process_s(_cli("run", "efi-kexec-fixed"), repeats), 3)
    scenario = load_builtin("efi-kexec-fixed")
    run_scenario(scenario)  # the first run pays one-time imports and caches

    def in_process() -> tuple[float, float]:
        with _Clock() as c:
            run_scenario(scenario)
        return c.wall * 1000, c.cpu * 1000

    put("in_process_fixed_ms", _median(in_process, repeats), 2)
    matrix = ["matrix", "--to", "v6.6", "--platform", "qemu-virt"] if quick else [
        "matrix", "--from", "all"
    ]
    put("matrix_s", _process_s(_cli(*matrix), 1), 2)
    rss = subprocess.run(
        [sys.executable, "-c", _RSS_SCRIPT], check=True, capture_output=True, text=True
    )
    # VmHWM is in KiB
    out["peak_rss_mb"] = round(int(rss.stdout.split()[-1]) / 1024, 1)
    out["cpu_time"] = cpu
    return out


def format_text(figures: dict[str, Any]) -> str:
    m = figures["machine"]
    lines = [
        f"machine: {m['cpu']}, {m['cpus']} CPUs, Python {m['python']}, {m['system']}, "
        f"load {' '.join(map(str, m['load_average']))}",
        f"msi_rate             {figures['msi_rate']:>14,} MSIs/s (one at a time, full path)",
        f"msi_batch_rate       {figures['msi_batch_rate']:>14,} MSIs/s (bursts of 10,000)",
    ]
    for label in figures["kexec_cycle_ms"]:
        lines.append(
            f"kexec_cycle_ms       {label:<10} {figures['kexec_cycle_ms'][label]:>9} ms"
            f"  memset {figures['memset_ms'][label]} ms  ratio {figures['ratio'][label]}"
        )
    lines += [
        f"run_fixed_s          {figures['run_fixed_s']:>14} s (gickexec run efi-kexec-fixed)",
        f"in_process_fixed_ms  {figures['in_process_fixed_ms']:>14} ms",
        f"matrix_s             {figures['matrix_s']:>14} s (gickexec matrix --from all)",
        f"peak_rss_mb          {figures['peak_rss_mb']:>14} MB (512 CPUs, IDbits 24, 3 kexecs)",
        f"cpu time (same figures, this process and children): {figures['cpu_time']}",
    ]
    return "\n".join(lines)
