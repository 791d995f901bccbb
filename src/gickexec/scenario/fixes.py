"""The candidate fixes for device-tree systems, each played through the model
(``gickexec fixes``, docs/dt-fixes.md).

A fix is an option of the platform's firmware, of the kernel or of the loader.  Each
cell boots a chain of kernels on QEMU ``virt`` (2 CPUs, 1 GiB, a NIC sending MSIs in
every generation), hands over from one to the next by kexec, the last handover by
kexec or by a panic into a capture kernel, and reports the worst that happened after
the first boot: ``crash``/``hang`` > ``corruption`` > ``lpis-lost`` > ``taint`` > ``ok``,
``n/a`` where a handover cannot be made (the note says why).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from gickexec.fw.devicetree import (
    Fdt,
    fdt_add_resv_mem_gic_rd_tables,
    gic_lpi_size,
    gic_lpi_tables_init,
    lpi_carveout_base,
)
from gickexec.hw.memory import Agent, AgentKind
from gickexec.hw.platform import PLATFORMS, Platform
from gickexec.kernel.dt_fixes import FixKernel, Knows
from gickexec.kernel.efi import install_memreserve_table
from gickexec.kernel.kernel import Kernel
from gickexec.kernel.kexec import Loader
from gickexec.kernel.profiles import KernelProfile, get_profile
from gickexec.scenario.matrix import MSIS, OUTCOME_TOKENS, PANIC_CPU, Boot, Mode, key_line
from gickexec.scenario.world import World

__all__ = [
    "CHAINS",
    "FIXES",
    "Chain",
    "Fix",
    "FixCell",
    "FixWorld",
    "fix_cells",
    "fixes_doc",
    "fixes_markdown",
    "fixes_text",
    "run_fix_cell",
    "run_fix_cells",
]

EnableLpis = Literal["one-way", "clearable"]
Firmware = Literal["", "u-boot-lpi-tables", "vmm-memreserve"]

# MSIS and PANIC_CPU are the matrix's (scenario/matrix.py): the two tables' cells compare
PLATFORM = "qemu-virt"
CRASHKERNEL = "crashkernel=512M"
NOLPI = "irqchip.gicv3_nolpi=1"


@dataclass(frozen=True, slots=True)
class Fix:
    """One candidate fix: what a kernel that has it does, what the firmware does, and
    what each party must provide (the table's "asks of" columns)."""

    name: str
    title: str
    source: str
    asks_firmware: str
    asks_kernel: str
    asks_kexec_tools: str
    #: the boots the fix is evaluated on
    boots: tuple[Boot, ...] = ("dt", "efi")
    #: what a kernel that knows the fix implements (kernel/dt_fixes.py)
    knows: frozenset[Knows] = frozenset()
    #: what the firmware or VMM does before the first kernel
    firmware: Firmware = ""
    #: on the command line of every kernel that knows the fix
    cmdline: str = ""
    #: how the model plays the fix (docs/dt-fixes.md prints them under its table)
    notes: tuple[str, ...] = ()

    @property
    def has_kernel_part(self) -> bool:
        """Kernels can know the fix or not (else every kernel of a chain is the same)."""
        return bool(self.knows or self.cmdline)


FIXES: tuple[Fix, ...] = (
    Fix(
        "none",
        "Nothing (today's device-tree boot), for reference",
        "Linux v6.6 drivers/irqchip/irq-gic-v3-its.c as modelled (kernel/gic_v3_its.py)",
        "-",
        "-",
        "-",
        boots=("dt",),
        notes=(
            "Nothing reserves the tables on a device-tree boot: kexec-tools and "
            "kexec_file_load() may place the next image over them, and the next kernel "
            "then resets the 'preallocated' property table over its own code.",
        ),
    ),
    Fix(
        "efi-memreserve",
        "Upstream EFI memreserve (today's fix, EFI boots only)",
        'Linux commit 71e0940d52e1 ("efi: honour memory reservations passed via a linux '
        'specific config table") and the v4.20 series ("irqchip/gic-v3-its: Register LPI '
        'tables with EFI config table")',
        "UEFI (the EFI stub installs the LINUX_EFI_MEMRESERVE_TABLE root)",
        "v4.20+",
        "v5.5+ kernels list the reservations in /proc/iomem, which kexec-tools avoids",
        boots=("efi",),
    ),
    Fix(
        "memory-region",
        "GIC memory-region phandle to /reserved-memory nodes holding the tables",
        'LKML, August 2019, "Allow kexec reboot for GICv3 and device tree" (rejected: '
        '"kernel 1 knows about the DT hack, kernel 2 doesn\'t, panic follows"; author and '
        "message id UNCONFIRMED)",
        "-",
        "every kernel that allocates tables writes them into the next DTB; reuse needs v4.20+",
        "stock kexec-tools copies /sys/firmware/fdt (read_sys_dtb()), which the kernel "
        "cannot change: it would have to add the nodes itself (e.g. from /proc/device-tree)",
        knows=frozenset({"memory-region"}),
        notes=(
            "A kernel that knows the fix reserves its tables in memblock and /proc/iomem "
            "(so neither loader places the next kernel on them) and, on kexec_file_load(), "
            "writes them as /reserved-memory nodes named by the GIC node's memory-region "
            "into the tree it builds.  The receiving side needs nothing new: every kernel "
            "reserves /reserved-memory (early_init_fdt_scan_reserved_mem()), and a v4.20+ "
            "kernel reuses tables that gic_check_reserved_range() finds reserved, aware "
            "of the fix or not.  An unaware kernel passes the nodes on unchanged in its own "
            "tree (they still describe the tables it reused); one that cannot reuse them "
            "(v4.19) leaves them stale.",
            "With kexec-tools the nodes never reach the next kernel: it copies "
            "/sys/firmware/fdt, the blob the running kernel was booted with.",
        ),
    ),
    Fix(
        "firmware-owned",
        "Firmware owns the tables: the boot loader enables LPIs and publishes a "
        "/reserved-memory node for them",
        "U-Boot, NXP Layerscape's LPI one-way reset workaround: commits a4625d494bf "
        '("board: fsl: lx2160a: Program GIC LPI configuration table") and 8cf113f473f '
        '("board: fsl: lx2160a: Add GIC LPI memory reserve fixup", fdt_fixup_gic_lpi_memory(), '
        'a "gic-lpi" node) (v2020.04), since f40b120e936 ("fsl-layerscape: Move GIC RD '
        'tables init to soc.c") (v2020.07) arch/arm/cpu/armv8/fsl-layerscape/soc.c '
        'ls_gic_rd_tables_init() (a "gic-rd-tables" node) and arch/arm/lib/gic-v3-its.c '
        "gic_lpi_tables_init()",
        "allocate, program and enable the tables in every redistributor (U-Boot programs "
        "GICR_PROPBASER of the first only) and reserve them in the DT",
        "v4.20+ (reuse of preallocated tables); a v4.19 kernel finds LPIs already enabled",
        "- (the node is in /sys/firmware/fdt)",
        firmware="u-boot-lpi-tables",
        notes=(
            "Before the first kernel the boot loader adds the 'gic-rd-tables' "
            "/reserved-memory node and runs gic_lpi_tables_init() there, at "
            "ALIGN(resv_ram - GIC_LPI_SIZE, SZ_64K) with the model's resv_ram 256 MiB "
            "below the top of RAM.  Every kernel then boots with LPIs enabled on tables "
            "that are reserved: v4.20+ reuses them ('Using preallocated redistributor "
            "tables') on the first boot and after every kexec or kdump, since the node is "
            "part of the boot-time tree both loaders copy.  Linux has no code for such a "
            "node: it honours it as reserved memory, which is all the reuse asks.  A "
            "U-Boot device-tree binding for the tables' place (a 'gic-lpi-base' syscon at "
            "0x80000000, af288cb291d and 2ae7adc659f, 2020) was reverted (a84cea06bb8, "
            '60b9b47d295: "Ad-hoc bindings that are not part of the upstream device tree '
            '/ bindings are not allowed in-tree"; Acked-by Marc Zyngier).',
        ),
    ),
    Fix(
        "vmm-memreserve",
        "A VMM or boot loader synthesises an EFI memreserve root for a direct DT boot",
        "OpenVMM openvmm/openvmm_core/src/worker/vm_loaders/linux.rs "
        "write_efi_and_acpi_tables() and build_stub_dt() (its arm64 direct boot with ACPI; "
        "the same for a full device tree UNCONFIRMED); Linux drivers/firmware/efi/"
        "fdtparams.c efi_get_fdt_params() and efi-init.c efi_init()",
        "an EFI system table whose configuration table holds an empty "
        "LINUX_EFI_MEMRESERVE_TABLE root, an EFI memory map, and the five /chosen "
        "linux,uefi-system-table/-mmap-start/-mmap-size/-mmap-desc-size/-mmap-desc-ver "
        "properties",
        "v4.20+ (EFI config tables are found from /chosen without the stub)",
        "- (/chosen is in /sys/firmware/fdt)",
        boots=("dt",),
        firmware="vmm-memreserve",
        notes=(
            "The VMM writes an EFI system table with an empty memreserve root before the "
            "first kernel, which it enters directly (no EFI stub, no boot services).  "
            "Linux finds EFI from /chosen (efi_get_fdt_params() needs all five "
            "linux,uefi-* properties), parses the configuration tables, and from then on "
            "behaves as on a UEFI boot: it publishes its tables in the memreserve list "
            "and the next kernel reuses them.  The model places the first image as its "
            "EFI stub loader would (KASLR off).",
        ),
    ),
    Fix(
        "kho",
        "Kexec HandOver: the tables preserved in a KHO sub-tree (a design)",
        "Linux v6.16 kernel/kexec_handover.c (kho=on, /chosen/linux,kho-fdt, "
        "kho_preserve_phys()); no upstream GIC support: the sub-tree schema is this "
        "project's design (its schema below)",
        "-",
        "KHO core (v6.16+) and a GIC driver that preserves its tables and reuses them",
        "kexec_file_load only (kexec -s): KHO is not passed by kexec_load",
        knows=frozenset({"kho"}),
        cmdline="kho=on",
        notes=(
            "Design (no upstream GIC KHO support exists as far as we know): at kexec_file_load() "
            "the GIC driver kho_preserve_phys()es the property table and each pending "
            "table and adds a sub-tree to the KHO FDT that /chosen/linux,kho-fdt points "
            "to: node 'gic-v3-lpi', compatible = \"gickexec,gic-v3-lpi-tables-v1\", "
            "prop-table = <base size> (64-bit cells), pend-tables = <mpidr base size>... "
            "one triple per redistributor with LPIs enabled.  The next KHO kernel reserves "
            "the preserved ranges while it deserialises the KHO memory map, so a v4.20+ "
            "reuse finds them reserved; a GIC driver that knows the sub-tree can also "
            "check PROPBASER/PENDBASER against it.  A kernel without KHO ignores "
            "/chosen/linux,kho-fdt and the tables are unreserved, as today.",
            "The KHO FDT describes one handover: kexec-tools' kexec_load() path passes none.",
        ),
    ),
    Fix(
        "same-placement",
        "Same placement by construction: every kernel puts the tables at one fixed address",
        "the 2018 out-of-tree workaround that reused identical allocations "
        "(UNCONFIRMED: no patch located)",
        "-",
        "every kernel of the chain reserves the same fixed area early and allocates the "
        "tables there",
        "- (the area is 'reserved' in /proc/iomem)",
        knows=frozenset({"same-placement"}),
        notes=(
            "A kernel that knows the fix memblock-reserves one fixed area (where the "
            "firmware-owned fix's boot loader puts its tables) before anything else and "
            "allocates the "
            "property table and the pending tables there, laid out as U-Boot does.  The "
            "next kernel that does the same finds the programmed tables reserved and "
            "reuses them; one that does not finds them unreserved.",
        ),
    ),
    Fix(
        "gicv3-nolpi",
        "irqchip.gicv3_nolpi=1: no LPIs at all",
        "Linux drivers/irqchip/irq-gic-v3.c gic_dist_supports_lpis() (gicv3_nolpi, "
        "already in v4.19.1; first release UNCONFIRMED)",
        "-",
        "the parameter on the kernel command line (no MSIs through the ITS)",
        "-",
        cmdline=NOLPI,
        notes=(
            "A kernel with the parameter sets up no ITS and no LPI tables: its MSIs are "
            "lost (the model's NIC has no INTx fallback).  It does not clear an "
            "EnableLPIs a previous kernel left set; since that kernel shut its devices "
            "down and this one never enables their MSIs, nothing writes into the old "
            "tables.",
        ),
    ),
)


@dataclass(frozen=True, slots=True)
class Chain:
    """Kernels booted one after the other: (profile, knows the fix)."""

    name: str
    kernels: tuple[tuple[str, bool], ...]


_K, _U, _OLD = ("v6.6", True), ("v6.6", False), ("v4.19", False)
CHAINS: tuple[Chain, ...] = (
    Chain("knows -> knows", (_K, _K)),
    Chain("4 knowing kernels", (_K, _K, _K, _K)),
    Chain("knows -> unaware", (_K, _U)),
    Chain("unaware -> knows", (_U, _K)),
    Chain("knows -> unaware -> knows", (_K, _U, _K)),
    Chain("knows -> v4.19 -> knows", (_K, _OLD, _K)),
)


@dataclass(frozen=True, slots=True)
class FixCell:
    """One experiment: a fix, a chain, how the last handover happens and the machine."""

    fix: str
    chain: str
    mode: Mode
    boot: Boot
    enable_lpis: EnableLpis
    loader: Loader


def fix_cells(fixes: Sequence[Fix] = FIXES) -> list[FixCell]:
    """The grid of docs/dt-fixes.md: kexec with both loaders, kdump with kexec-tools'
    ``kexec -p`` (the model's only capture-kernel loader)."""
    out: list[FixCell] = []
    for fix in fixes:
        for chain in CHAINS:
            for mode in ("kexec", "kdump"):
                for boot in fix.boots:
                    for lpis in ("one-way", "clearable"):
                        loaders: tuple[Loader, ...] = (
                            ("kexec-tools", "kexec_file_load")
                            if mode == "kexec"
                            else ("kexec-tools",)
                        )
                        for loader in loaders:
                            out.append(FixCell(fix.name, chain.name, mode, boot, lpis, loader))
    return out


def _platform(fix: Fix, boot: Boot, lpis: EnableLpis) -> Platform:
    base = PLATFORMS[PLATFORM]
    one_way = lpis == "one-way"
    # A GIC that cannot clear EnableLPIs also ignores base writes while it is set, as the
    # hardware presets do (hw/platform.py _ARM_GIC_HW).
    knobs = dataclasses.replace(
        base.knobs,
        enable_lpis_clearable=not one_way,
        base_writes_ignored_while_enabled=one_way,
    )
    p = base.with_boot("dt" if boot == "dt" else "uefi-dt").with_knobs(knobs)
    if fix.firmware == "vmm-memreserve":
        # EFI tables without UEFI boot services: no EFI stub, the VMM places the image
        return dataclasses.replace(p, firmware="efi", efi_stub=False, efi_rng=False)
    return p


class FixWorld(World):
    """A world whose Linux kernels run with the device tree the previous one handed over
    and implement ``fix`` where the chain says they know it."""

    def __init__(self, platform: Platform, fix: Fix, *, seed: int = 0) -> None:
        super().__init__(platform, seed=seed)
        self.fix = fix
        self.next_fdt = Fdt()
        self.next_knows: frozenset[Knows] = frozenset()
        firmware = Agent(AgentKind.FIRMWARE)
        if fix.firmware == "u-boot-lpi-tables":
            # ls_gic_rd_tables_init(): the node first, then the tables
            base = lpi_carveout_base(self.machine)
            size = gic_lpi_size(platform.cpus)
            self.next_fdt = fdt_add_resv_mem_gic_rd_tables(self.next_fdt, base, size)
            error = gic_lpi_tables_init(self.machine, base, platform.cpus)
            if error:
                self.notes.append(f"U-Boot: {error}")
        elif fix.firmware == "vmm-memreserve":
            assert self.firmware is not None
            # the empty root the stub would install (struct linux_efi_memreserve)
            install_memreserve_table(self.firmware, self.machine.mem, get_profile("v6.6"), firmware)

    def _kernel_class(self, profile: KernelProfile) -> Callable[..., Kernel]:
        if profile.kind != "linux":
            return super()._kernel_class(profile)
        return functools.partial(FixKernel, fdt=self.next_fdt, knows=self.next_knows)

    def _loader_view(self, old: Kernel, loader: Loader) -> list[tuple[int, int]]:
        view = super()._loader_view(old, loader)
        return view + old.published_lpi_tables() if isinstance(old, FixKernel) else view

    def prepare(self, knows: bool, loader: Loader, *, kdump: bool) -> str:
        """Before the next kernel starts: the tree it gets and what it knows; returns the
        fix's command-line words for it."""
        if self.generations:
            old = self.kernel
            assert isinstance(old, FixKernel)
            self.next_fdt = old.handover_fdt(loader, kdump=kdump)
        self.next_knows = self.fix.knows if knows else frozenset()
        return self.fix.cmdline if knows else ""


def run_fix_cell(cell: FixCell, seed: int = 1) -> dict[str, Any]:
    """Play one cell; returns its JSON object (docs/dt-fixes.md)."""
    fix = next(f for f in FIXES if f.name == cell.fix)
    chain = next(c for c in CHAINS if c.name == cell.chain)
    w = FixWorld(_platform(fix, cell.boot, cell.enable_lpis), fix, seed=seed)
    w.add_device("nic0", device_id=0x100, nvec=2)
    last = len(chain.kernels) - 1
    lost_before = 0
    note = ""
    for i, (profile, knows) in enumerate(chain.kernels):
        kdump = cell.mode == "kdump" and i == last
        words = [w.prepare(knows, cell.loader, kdump=kdump)]
        if cell.mode == "kdump" and i == last - 1:
            words.append(CRASHKERNEL)
        cmdline = " ".join(x for x in words if x)
        if i == 0:
            w.boot(profile, cmdline=cmdline)
            w.traffic("nic0", MSIS)
            lost_before = w.ledger.lost
            continue
        count = len(w.generations)
        if kdump:
            w.kdump(profile, cmdline=f"nr_cpus=1 {cmdline}".strip(), panic_cpu=PANIC_CPU)
        else:
            w.kexec(profile, cmdline=cmdline, loader=cell.loader)
        if len(w.generations) == count:
            note = " ".join(w.notes)
            break
        w.traffic("nic0", MSIS)
    w.finish()
    # events still held in a masked vector's Pending Bit Array at the end were never
    # delivered either (e.g. a capture kernel with gicv3_nolpi never unmasks the vector)
    undelivered = w.ledger.lost - lost_before + w.ledger.held_at_device
    return _result(cell, w, undelivered, note, chain)


def _result(cell: FixCell, w: World, lost: int, note: str, chain: Chain) -> dict[str, Any]:
    later = w.generations[1:]
    # the kernel a kdump cell panics on purpose is not a failure
    panicked = len(chain.kernels) - 2 if cell.mode == "kdump" else -1
    dead = next(
        (
            k
            for k in w.generations
            if k.crashed is not None
            and not (k.generation == panicked and k.crashed.startswith("panic:"))
        ),
        None,
    )
    where: Kernel | None
    if dead is not None:
        assert dead.crashed is not None
        outcome = "hang" if dead.crashed.startswith("hang") else "crash"
        where = dead
    elif w.corruption.bits:
        outcome = "corruption"
        where = w.generations[w.corruption.events[0].generation] if w.corruption.events else None
    elif lost:
        outcome = "lpis-lost"
        led = w.ledger
        where = next(
            (
                k
                for k in later
                if led.delivered_per_generation[k.generation]
                < led.sent_per_generation[k.generation]
            ),
            None,
        )
    elif any(k.log.taint_string for k in later):
        outcome = "taint"
        where = next(k for k in later if k.log.taint_string)
    elif note:
        outcome, where = "n/a", None
    else:
        outcome, where = "ok", None
    if where is None and outcome not in ("ok", "n/a") and later:
        where = later[-1]
    fix = next(f for f in FIXES if f.name == cell.fix)
    knows = [k and fix.has_kernel_part for _, k in chain.kernels]
    return {
        "fix": cell.fix,
        "chain": cell.chain,
        "mode": cell.mode,
        "boot": cell.boot,
        "enable_lpis": cell.enable_lpis,
        "loader": cell.loader,
        "ok": outcome == "ok",
        "outcome": outcome,
        "generations": len(w.generations),
        "lost_msis": lost,
        "corrupted_bits": w.corruption.bits,
        "corrupted_owners": sorted({e.owner for e in w.corruption.events}),
        "reused_tables": [k.reused_tables for k in later],
        "where": None if where is None else where.generation,
        "where_kernel": "" if where is None else _kernel_name(where, knows),
        # the panic a kdump cell asks for is not what went wrong
        "key_line": ""
        if where is None
        else key_line(where, ("Kernel panic",) if where.generation == panicked else ()),
        # a dead kernel's successors are skipped: the death says it all
        "note": "" if dead is not None else note,
        "crashed": "" if dead is None else dead.crashed,
    }


def _kernel_name(k: Kernel, knows: list[bool]) -> str:
    aware = " (knows the fix)" if knows[k.generation] else ""
    return f"gen {k.generation} {k.profile.name}{aware}"


def run_fix_cells(grid: Sequence[FixCell], seed: int = 1) -> list[dict[str, Any]]:
    """Play every cell in grid order (the whole grid takes seconds: no processes)."""
    return [run_fix_cell(c, seed) for c in grid]


def fixes_doc(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The JSON document of ``gickexec fixes --json``."""
    return {
        "platform": PLATFORM,
        "msis_per_generation": MSIS,
        "fixes": [
            {
                "name": f.name,
                "title": f.title,
                "source": f.source,
                "asks": {
                    "firmware": f.asks_firmware,
                    "kernel": f.asks_kernel,
                    "kexec_tools": f.asks_kexec_tools,
                },
                "boots": list(f.boots),
                "summary": _summary(f, results),
            }
            for f in FIXES
        ],
        "chains": [
            {"name": c.name, "kernels": [{"profile": p, "knows": k} for p, k in c.kernels]}
            for c in CHAINS
        ],
        "cells": list(results),
    }


_ABBREV = {"one-way": "1w", "clearable": "cl", "kexec-tools": "kt", "kexec_file_load": "kf"}


def _column(r: dict[str, Any]) -> str:
    return f"{r['mode']} {r['boot']} {_ABBREV[r['enable_lpis']]} {_ABBREV[r['loader']]}"


def _token(r: dict[str, Any]) -> str:
    token = OUTCOME_TOKENS[r["outcome"]]
    return token if r["where"] is None else f"{token}@{r['where']}"


def _summary(fix: Fix, results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Cells per outcome, and the chains in which every cell is ok."""
    mine = [r for r in results if r["fix"] == fix.name]
    outcomes: dict[str, int] = {}
    for r in mine:
        outcomes[r["outcome"]] = outcomes.get(r["outcome"], 0) + 1
    holds = [
        c.name
        for c in CHAINS
        if all(r["ok"] for r in mine if r["chain"] == c.name)
        and any(r["chain"] == c.name for r in mine)
    ]
    ok = outcomes.get("ok", 0)
    return {"cells": len(mine), "ok": ok, "outcomes": outcomes, "holds_in_chains": holds}


def _summary_words(s: dict[str, Any]) -> str:
    outcomes = sorted(s["outcomes"].items())
    bad = ", ".join(f"{n} {OUTCOME_TOKENS[o]}" for o, n in outcomes if o != "ok")
    return f"ok in {s['ok']} of {s['cells']} cells" + (f" ({bad} otherwise)" if bad else "")


def _reasons(rows: Sequence[dict[str, Any]]) -> list[str]:
    """One line per distinct way the cells failed: outcome, kernel, key line, note."""
    groups: dict[tuple[str, str, str, str], list[dict[str, Any]]] = {}
    for r in rows:
        if r["ok"]:
            continue
        key = (_token(r), r["where_kernel"], r["crashed"] or r["key_line"], r["note"])
        groups.setdefault(key, []).append(r)
    out = []
    for (token, kernel, line, note), cells in groups.items():
        where = f" in {kernel}" if kernel else ""
        text = f"**{token}**{where}"
        if line:
            text += f": `{line}`"
        if note:
            text += f"; {note}"
        bits = sorted({r["corrupted_bits"] for r in cells} - {0})
        if bits:
            owners = sorted({o for r in cells for o in r["corrupted_owners"]})
            text += f"; {', '.join(map(str, bits))} bits written into {', '.join(owners)}"
        lost = sorted({r["lost_msis"] for r in cells} - {0})
        if lost:
            text += f"; MSIs lost: {', '.join(map(str, lost))}"
        chains = ", ".join(dict.fromkeys(r["chain"] for r in cells))
        count = f"{len(cells)} cell{'s' if len(cells) > 1 else ''}"
        out.append(f"{text} ({count}: {chains}).")
    return out


def fixes_markdown(results: Sequence[dict[str, Any]], command: str) -> str:
    """docs/dt-fixes.md: a summary, then per fix its source, what it asks, the grid of
    chains x handovers, and each distinct failure."""
    chains = "; ".join(
        f"*{c.name}*: " + " -> ".join(f"{p}{'+fix' if k else ''}" for p, k in c.kernels)
        for c in CHAINS
    )
    out = [
        "# Candidate fixes for device-tree systems",
        "",
        f"Generated by `{command}`; do not edit by hand.  Every cell is a run of the model.",
        "",
        f"Each cell boots a chain of kernels on `{PLATFORM}` (2 CPUs, 1 GiB; a NIC sends "
        f"{MSIS} MSIs in every generation), kexecs from each to the next and makes the last "
        f"handover a kexec or a panic into a `nr_cpus=1` capture kernel on CPU {PANIC_CPU} "
        f"(`{CRASHKERNEL}` on the kernel before it).  Chains ({chains}); *+fix* is a kernel "
        "that has the fix, the others are unaware of it.  Columns: mode, boot (`dt`: the "
        "board's device tree, QEMU's `-kernel` loader; `efi`: UEFI handing over the device "
        "tree), EnableLPIs (`1w` one-way, base registers ignored while set; `cl` "
        "clearable), loader (`kt` kexec-tools `kexec -l`/`-p`, which copies "
        "`/sys/firmware/fdt`; `kf` `kexec_file_load()`, `kexec -s`, which builds the next "
        "tree in the kernel; a kdump always loads with `kexec -p`).  Outcomes, the worst "
        "after the first boot: `ok`; `lost` (MSIs lost, or held at a masked device vector "
        "and never sent); `CORRUPT` (the GIC wrote into "
        "memory no kernel gave it); `taint`; `CRASH`; `HANG`; `n/a` (a handover could not "
        "be made); `@N` names the generation where it happened (0 is the first kernel).",
        "",
        "## Summary",
        "",
        "| fix | cells | holds in every cell of | asks of firmware | asks of the kernel "
        "| asks of kexec-tools |",
        "|---|---|---|---|---|---|",
    ]
    for f in FIXES:
        s = _summary(f, results)
        holds = ", ".join(s["holds_in_chains"]) or "no chain"
        out.append(
            f"| [{f.name}](#{f.name}) | {_summary_words(s)} | {holds} | {f.asks_firmware} "
            f"| {f.asks_kernel} | {f.asks_kexec_tools} |"
        )
    out.append("")
    for f in FIXES:
        rows = [r for r in results if r["fix"] == f.name]
        columns = list(dict.fromkeys(_column(r) for r in rows))
        by = {(r["chain"], _column(r)): r for r in rows}
        out += [
            f'<a id="{f.name}"></a>',
            "",
            f"## {f.name}: {f.title}",
            "",
            f"Source: {f.source}.",
            "",
            f"Asks of firmware: {f.asks_firmware}.  Of the kernel: {f.asks_kernel}.  "
            f"Of kexec-tools: {f.asks_kexec_tools}.",
            "",
            "| chain | " + " | ".join(columns) + " |",
            "|---" * (len(columns) + 1) + "|",
        ]
        for c in CHAINS:
            cells = [_token(by[(c.name, col)]) if (c.name, col) in by else "" for col in columns]
            out.append(f"| {c.name} | " + " | ".join(cells) + " |")
        out.append("")
        out += [f"- {line}" for line in _reasons(rows)] or ["- Every cell is ok."]
        out += ["", *(f"{n}" + "\n" for n in f.notes)]
    return "\n".join(out).rstrip() + "\n"


def fixes_text(results: Sequence[dict[str, Any]]) -> str:
    """Verdict first: one line per fix, then its distinct failures."""
    lines = []
    for f in FIXES:
        s = _summary(f, results)
        holds = ", ".join(s["holds_in_chains"]) or "no chain"
        lines.append(f"{f.name:<15} {_summary_words(s)}; holds in: {holds}")
        rows = [r for r in results if r["fix"] == f.name]
        lines += [f"{'':>15} {line.replace('**', '').replace('`', '')}" for line in _reasons(rows)]
    return "\n".join(lines)
