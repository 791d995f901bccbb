"""The compatibility matrix: kexec or kdump from kernel X into kernel Y on platform P,
booted through EFI or a device tree, one small fixed workload per cell.

Each cell boots ``from`` (with ``crashkernel=`` for kdump), lets a NIC deliver MSIs,
then kexecs (or panics into a ``nr_cpus=1`` capture kernel on CPU 1) into ``to`` and
sends the same traffic again.  The outcome is the worst thing that happened to the
second kernel: ``crash`` > ``corruption`` > ``lpis-lost`` > ``taint`` > ``ok``.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import click

from gickexec.hw.platform import PLATFORMS
from gickexec.kernel.kernel import Kernel
from gickexec.kernel.kexec import Loader
from gickexec.kernel.profiles import get_profile
from gickexec.scenario.world import World

__all__ = [
    "MATRIX_PLATFORMS",
    "MATRIX_PROFILES",
    "OUTCOME_TOKENS",
    "Cell",
    "cells",
    "key_line",
    "matrix_markdown",
    "matrix_text",
    "run_cell",
    "run_cells",
]

Mode = Literal["kexec", "kdump"]
Boot = Literal["efi", "dt"]

MATRIX_PROFILES = ("v4.19", "v4.20", "v5.0", "v5.2", "v5.5", "v5.14", "v5.17", "v6.6")
MATRIX_PLATFORMS = ("efi-server-8", "qemu-virt")
MSIS = 64
PANIC_CPU = 1
CRASHKERNEL = "crashkernel=512M"

# The lines that best say what happened, most telling first.
_KEY_LINES = (
    "Unable to handle kernel",
    "Internal error:",
    "Initramfs unpacking failed",
    "Error: invalid device tree blob",
    "Kernel panic",
    "GICv3: Expected reserved range",
    "Failed to disable LPIs",
    "Booted with LPIs enabled",
    "WARNING:",
    "GICv3: Using preallocated redistributor tables",
    "using allocated LPI pending table",
    "CPU0: using LPI pending table",
)


@dataclass(frozen=True, slots=True)
class Cell:
    """One experiment of the matrix."""

    from_: str
    to: str
    mode: Mode
    boot: Boot
    platform: str
    loader: Loader = "kexec-tools"


def cells(
    froms: Sequence[str] | None,
    tos: Sequence[str],
    modes: Sequence[Mode],
    boots: Sequence[Boot],
    platforms: Sequence[str],
    loader: Loader = "kexec-tools",
) -> list[Cell]:
    """The grid; ``froms=None`` pairs every ``to`` with itself."""
    out: list[Cell] = []
    for platform in platforms:
        for boot in boots:
            for mode in modes:
                for to in tos:
                    for frm in [to] if froms is None else froms:
                        out.append(Cell(frm, to, mode, boot, platform, loader))
    return out


def run_cell(cell: Cell, seed: int = 1) -> dict[str, Any]:
    """Play one cell; returns its JSON object (see docs/compatibility.md)."""
    base = PLATFORMS[cell.platform]
    w = World(dataclasses.replace(base, firmware=cell.boot), seed=seed)
    w.add_device("nic0", device_id=0x100, nvec=min(8, base.cpus))
    w.boot(cell.from_, cmdline=CRASHKERNEL if cell.mode == "kdump" else "")
    w.traffic("nic0", MSIS)
    before = w.ledger.lost
    if cell.mode == "kexec":
        second: Kernel | None = w.kexec(cell.to, loader=cell.loader)
    else:
        second = w.kdump(cell.to, panic_cpu=PANIC_CPU)
    w.traffic("nic0", MSIS)
    w.finish()
    lost = w.ledger.lost - before
    if second is None:
        # crashkernel= found no room, or kexec -p no place for a segment: nothing boots
        return _cell_result(cell, w, w.generations[-1], lost, "hang", " ".join(w.notes))
    if second.generation == 0:
        return _cell_result(cell, w, second, lost, "n/a", " ".join(w.notes))
    bits = w.corruption.bits
    taints = second.log.taint_string
    if second.crashed is not None:
        outcome = "hang" if second.crashed.startswith("hang") else "crash"
    elif bits:
        outcome = "corruption"
    elif lost:
        outcome = "lpis-lost"
    elif taints:
        outcome = "taint"
    else:
        outcome = "ok"
    return _cell_result(cell, w, second, lost, outcome, _reason(cell, second, outcome))


def default_jobs() -> int:
    """The CPUs this process may run on (what ``--jobs`` defaults to)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


#: Called after each cell with the number done, the total and the cell's name.
CellProgress = Callable[[int, int, str], None]


def _cell_name(cell: Cell) -> str:
    return f"{cell.from_} -> {cell.to} {cell.mode} {cell.boot} {cell.platform}"


def run_cells(
    grid: Sequence[Cell],
    seed: int = 1,
    jobs: int | None = None,
    progress: CellProgress | None = None,
) -> list[dict[str, Any]]:
    """Play every cell, in ``jobs`` processes (default: one per CPU), reporting each to
    ``progress`` as it completes.

    Cells share nothing and each is deterministic, and the results come back in grid
    order, so the output is the same for any number of jobs."""
    jobs = min(default_jobs() if jobs is None else jobs, len(grid))
    out: list[dict[str, Any]] = []

    def done(result: dict[str, Any]) -> None:
        out.append(result)
        if progress is not None:
            progress(len(out), len(grid), _cell_name(grid[len(out) - 1]))

    if jobs <= 1:
        for c in grid:
            done(run_cell(c, seed))
        return out
    # fork: the workers start with gickexec imported (spawn would import it again).
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    with ctx.Pool(jobs) as pool:
        # Small chunks: cells on big platforms cost far more than the rest.
        for result in pool.imap(_run_cell_args, [(c, seed) for c in grid], chunksize=4):
            done(result)
    return out


def _run_cell_args(args: tuple[Cell, int]) -> dict[str, Any]:
    return run_cell(*args)


def _cell_result(
    cell: Cell, w: World, second: Kernel, lost: int, outcome: str, reason: str
) -> dict[str, Any]:
    """The cell's JSON object (see docs/compatibility.md)."""
    owners = sorted({e.owner for e in w.corruption.events})
    return {
        "from": cell.from_,
        "to": cell.to,
        "mode": cell.mode,
        "boot": cell.boot,
        "platform": cell.platform,
        "loader": cell.loader,
        "ok": outcome == "ok",
        "outcome": outcome,
        "lost_msis": lost,
        "lost_cpus": len(w.ledger.lost_per_cpu),
        "lost_per_cpu": {str(c): n for c, n in sorted(w.ledger.lost_per_cpu.items())},
        "corrupted_bits": w.corruption.bits,
        "corrupted_owners": owners,
        "taints": second.log.taint_string,
        "reused_tables": second.reused_tables,
        "reason": reason,
        "key_line": "" if outcome == "n/a" else key_line(second),
    }


def key_line(k: Kernel, skip: tuple[str, ...] = ()) -> str:
    """The line of ``k``'s log that best says what happened (empty: none of them),
    ``skip`` markers aside."""
    for marker in (m for m in _KEY_LINES if m not in skip):
        for line in k.log.lines:
            if marker in line:
                return line
    return ""


def _reason(cell: Cell, k: Kernel, outcome: str) -> str:
    """One line on why, from the profiles' features and what the kernel did."""
    frm, to = get_profile(cell.from_), get_profile(cell.to)
    if k.crashed is not None:
        return f"{cell.to} died: {k.crashed}"
    parts: list[str] = []
    if k.reused_tables:
        how = "is_kdump_kernel()" if cell.mode == "kdump" else "the EFI memreserve list"
        parts.append(f"tables reused through {how}")
    elif not to.reuses_preallocated_lpi_tables:
        if any(line.endswith(": Failed to disable LPIs") for line in k.log.lines):
            parts.append(
                f"{cell.to} predates table reuse and cannot clear EnableLPIs on this GIC "
                "(redist_disable_lpis(): -EBUSY): its CPUs get no LPIs"
            )
        else:
            parts.append(
                f"{cell.to} predates table reuse: it cleared EnableLPIs and programmed "
                "new tables"
            )
    elif cell.boot == "dt":
        parts.append("no EFI: nothing reserved the tables, so they cannot be reused")
    elif not frm.registers_lpi_tables_with_efi:
        parts.append(f"{cell.from_} did not publish its tables in the EFI memreserve list")
    elif frm.memreserve_layout != to.memreserve_layout:
        parts.append(
            f"a {frm.memreserve_layout}-layout memreserve list read with the "
            f"{to.memreserve_layout} layout: no reservation covers the tables"
        )
    else:
        parts.append("the tables were not found reserved")
    warned = sorted(
        {line.rsplit(" ", 1)[-1] for line in k.log.lines if line.startswith("WARNING:")}
    )
    if warned:
        enodev = k.efi is not None and k.efi.memreserve_root == -1
        why = " (efi_mem_reserve_persistent: -ENODEV, no MEMRESERVE table)" if enodev else ""
        parts.append(f"WARN in {', '.join(warned)}{why}")
    if outcome == "corruption":
        parts.append("the GIC wrote pending bits into memory it does not own")
    return "; ".join(parts)


#: Terminal colour of each outcome (click.echo strips it off a terminal).
_OUTCOME_STYLE: dict[str, dict[str, Any]] = {
    "ok": {"fg": "green"},
    "crash": {"fg": "red", "bold": True},
    "hang": {"fg": "red", "bold": True},
    "corruption": {"fg": "red", "bold": True},
    "lpis-lost": {"fg": "red"},
    "taint": {"fg": "yellow"},
}


def matrix_text(results: Iterable[dict[str, Any]]) -> str:
    """One line per cell, the outcome coloured."""
    lines = []
    for r in results:
        outcome = click.style(f"{r['outcome']:<10}", **_OUTCOME_STYLE.get(r["outcome"], {}))
        head = (
            f"{r['from']:>6} -> {r['to']:<6} {r['mode']:<5} {r['boot']:<3} "
            f"{r['platform']:<14} {outcome}"
        )
        detail = r["reason"]
        if r["lost_msis"]:
            detail += f" [{r['lost_msis']} MSIs lost on {r['lost_cpus']} CPUs]"
        if r["corrupted_bits"]:
            detail += f" [{r['corrupted_bits']} bits corrupted]"
        lines.append(f"{head} {detail}")
        if r["key_line"]:
            lines.append(f"{'':>38}| {r['key_line']}")
    return "\n".join(lines)


#: how a cell's outcome reads in a table (docs/compatibility.md, docs/dt-fixes.md)
OUTCOME_TOKENS = {
    "ok": "ok",
    "lpis-lost": "lost",
    "corruption": "CORRUPT",
    "taint": "taint",
    "crash": "CRASH",
    "hang": "HANG",
    "n/a": "n/a",
}


def matrix_markdown(results: Sequence[dict[str, Any]], command: str) -> str:
    """docs/compatibility.md: one from x to grid per (platform, boot, mode), then a
    paragraph per distinct non-ok reason naming the cells it explains."""
    out = [
        "# Compatibility matrix",
        "",
        f"Generated by `{command}`; do not edit by hand.",
        "",
        "Each cell boots the *from* kernel, lets a NIC deliver "
        f"{MSIS} MSIs, then kexecs (or panics into a `nr_cpus=1` capture kernel on CPU "
        f"{PANIC_CPU}, loaded with `{CRASHKERNEL}`) into the *to* kernel and sends {MSIS} "
        "more.  Outcomes: `ok`; `lost` (MSIs lost); `CORRUPT` (the GIC wrote into memory "
        "the running kernel did not give it); `taint` (a warning tainted the kernel, "
        "nothing lost); `CRASH` (the second kernel died); `HANG` (it stopped without a "
        "word, or no capture kernel could be loaded).  Rows: from; columns: to.",
        "",
    ]
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["platform"], r["boot"], r["mode"]), []).append(r)
    for (platform, boot, mode), rows in groups.items():
        tos = list(dict.fromkeys(r["to"] for r in rows))
        froms = list(dict.fromkeys(r["from"] for r in rows))
        by = {(r["from"], r["to"]): r for r in rows}
        out += [f"## {platform}, {boot.upper()} boot, {mode}", ""]
        out.append("| from \\ to | " + " | ".join(tos) + " |")
        out.append("|---" * (len(tos) + 1) + "|")
        for frm in froms:
            row = [OUTCOME_TOKENS[by[(frm, t)]["outcome"]] if (frm, t) in by else "" for t in tos]
            out.append(f"| **{frm}** | " + " | ".join(row) + " |")
        out.append("")
    out += ["## Why the non-ok cells are not ok", ""]
    reasons: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in results:
        if not r["ok"]:
            reasons.setdefault((r["outcome"], r["reason"]), []).append(r)
    for (outcome, reason), rows in sorted(reasons.items()):
        names = ", ".join(
            f"{r['from']}→{r['to']} {r['mode']} {r['boot']} {r['platform']}" for r in rows
        )
        lost = sorted({r["lost_msis"] for r in rows})
        key = next((r["key_line"] for r in rows if r["key_line"]), "")
        text = f"**{OUTCOME_TOKENS[outcome]}** — {reason}."
        if lost != [0]:
            text += f" MSIs lost per cell: {', '.join(map(str, lost))} of {MSIS}."
        if key:
            text += f" Key log line: `{key}`."
        out += [text, "", f"Cells ({len(rows)}): {names}.", ""]
    return "\n".join(out).rstrip() + "\n"
