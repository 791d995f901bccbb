"""Compare a model run with a real serial log: kernel lines per generation, and kexec segments.

A real log (a QEMU serial console, ``dmesg`` with or without timestamps, or the project's
realcheck format with ``[host  S.SS]`` prefixes) is split into kernel generations at each
"Booting Linux on physical CPU" line.  Of every generation the lines that matter to the
handover are compared (:data:`COMPARED`: GIC, ITS, EFI, SMP, kexec and kdump lines, the
command line and the early reservations), in order, word for word except for hexadecimal
values, which may differ (KASLR and firmware randomness move them).  ``exact`` counts the
lines that are equal including every address.  kexec-tools' ``-d`` output (``segment[N]``
lines) is compared with the segments the model's loader chose.

This is the measure of the model's fidelity: tests/test_realcheck.py asserts it on the
real runs in tests/data/realcheck, and ``gickexec compare SCENARIO LOG`` prints it.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Any

from gickexec.scenario.world import World

__all__ = [
    "COMPARED",
    "Comparison",
    "GenerationDiff",
    "compare_world",
    "compared_lines",
    "kexec_segments",
    "mask_hex",
    "model_segments",
    "split_generations",
]

#: Kernel lines that take part in the comparison (prefix patterns).
COMPARED = re.compile(
    r"^(?:Booting Linux on physical CPU|Machine model:|efi: |cma: Reserved|crashkernel |"
    r"OF: fdt: Reserving|Reserving \d+KB of memory|Kernel command line:|"
    r"Unknown kernel command line parameters|NR_IRQS:|GICv3: |GIC: |ITS |ITS@|"
    r"Root IRQ handler|Platform MSI: |PCI/MSI: |fsl-mc MSI: |Remapping and enabling EFI|"
    r"EFI services will not be available|smp: |SMP: |CPU\d+: Booted secondary|"
    r"CPU\d+: (?:shutdown|Failed to disable LPIs|Timeout while)|psci: CPU\d+ killed|"
    r"Freeing initrd memory|kexec_core: |Starting crashdump kernel|Kernel panic - not syncing|"
    r"Bye!|Number of cores)"
)
_HOST = re.compile(r"^\[host\s+[\d.]+\]\s?")
_STAMP = re.compile(r"^\[\s*\d+\.\d+\]\s?")
_HEX = re.compile(r"(?<![0-9A-Za-z])(?:0x)?[0-9a-fA-F]*[0-9][0-9a-fA-F]*(?![0-9A-Za-z])")
_SEGMENT = re.compile(r"segment\[(\d+)\]\.(mem|memsz)\s*=\s*0x([0-9a-fA-F]+)")
#: A line longer than this is cut (a garbled console line must not blow up the diff)
MAX_LINE = 4096
#: Lines of a log read at most
MAX_LINES = 1_000_000


def mask_hex(line: str) -> str:
    """``line`` with every number (hex or decimal, with or without 0x) replaced by ``#``."""
    return _HEX.sub("#", line)


def split_generations(text: str) -> list[list[str]]:
    """Kernel lines of each boot in a serial log or dmesg: prefixes and printk timestamps
    stripped.  When the log has printk timestamps, only stamped lines are the kernel's
    (the rest is firmware and userspace); without them (``dmesg -t``) every line is."""
    lines = [_HOST.sub("", raw[:MAX_LINE]) for raw in text.splitlines()[:MAX_LINES]]
    stamped = any(_STAMP.match(ln) for ln in lines)
    gens: list[list[str]] = []
    for raw in lines:
        m = _STAMP.match(raw)
        if m is None and stamped:
            continue
        line = raw[m.end() :] if m is not None else raw
        if "Booting Linux on physical CPU" in line:
            line = line[line.index("Booting Linux") :]
            gens.append([])
        if gens:
            gens[-1].append(line.rstrip("\r"))
    return gens


def compared_lines(lines: list[str]) -> list[str]:
    return [ln for ln in lines if COMPARED.match(ln)]


def kexec_segments(text: str) -> list[list[tuple[int, int]]]:
    """``(mem, memsz)`` of every ``kexec_load`` segment kexec-tools' ``-d`` printed, one
    list per load, in the order printed."""
    loads: list[list[tuple[int, int]]] = []
    current: dict[int, dict[str, int]] = {}
    for raw in text.splitlines()[:MAX_LINES]:
        if "nr_segments" in raw:
            if current:
                loads.append(_segments(current))
            current = {}
        m = _SEGMENT.search(raw)
        if m:
            current.setdefault(int(m.group(1)), {})[m.group(2)] = int(m.group(3), 16)
    if current:
        loads.append(_segments(current))
    return loads


def _segments(found: dict[int, dict[str, int]]) -> list[tuple[int, int]]:
    return [(v.get("mem", 0), v.get("memsz", 0)) for _, v in sorted(found.items())]


@dataclass(slots=True)
class GenerationDiff:
    """One generation's comparison: ``real`` and ``model`` compared lines, how many match
    (numbers masked) and exactly, and the lines only one side has."""

    generation: int
    real: list[str]
    model: list[str]
    matched: int = 0
    exact: int = 0
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    differing: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing and not self.extra


@dataclass(slots=True)
class Comparison:
    generations: list[GenerationDiff]
    segments_real: list[list[tuple[int, int]]]
    segments_model: list[list[tuple[int, int]]]

    @property
    def lines_ok(self) -> bool:
        return all(g.ok for g in self.generations)

    @property
    def segments_ok(self) -> bool:
        return self.segments_real == self.segments_model

    @property
    def ok(self) -> bool:
        return self.lines_ok and self.segments_ok

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "generations": [
                {
                    "generation": g.generation,
                    "real_lines": len(g.real),
                    "model_lines": len(g.model),
                    "matched": g.matched,
                    "exact": g.exact,
                    "missing": g.missing,
                    "extra": g.extra,
                    "differing": [{"real": r, "model": m} for r, m in g.differing],
                }
                for g in self.generations
            ],
            "segments": {
                "ok": self.segments_ok,
                "real": [[{"mem": a, "memsz": s} for a, s in load] for load in self.segments_real],
                "model": [
                    [{"mem": a, "memsz": s} for a, s in load] for load in self.segments_model
                ],
            },
        }

    def text(self) -> str:
        out: list[str] = []
        verdict = "matches" if self.ok else "differs from"
        out.append(f"the model {verdict} the real log")
        for g in self.generations:
            out.append(
                f"generation {g.generation}: {g.matched}/{len(g.real)} real lines matched "
                f"({g.exact} exactly), {len(g.extra)} model line(s) the real kernel did "
                "not print"
            )
            out.extend(f"  - missing: {ln}" for ln in g.missing)
            out.extend(f"  + extra:   {ln}" for ln in g.extra)
            out.extend(f"  ~ real:    {r}\n    model:   {m}" for r, m in g.differing)
        padded = self.segments_model + [[]] * len(self.segments_real)
        for i, real in enumerate(self.segments_real):
            model = padded[i]
            same = "same" if real == model else "DIFFERENT"
            out.append(f"kexec load {i}: segments {same}")
            fmt = ", ".join
            out.append(f"  real:  {fmt(f'{a:#x}+{s:#x}' for a, s in real)}")
            out.append(f"  model: {fmt(f'{a:#x}+{s:#x}' for a, s in model)}")
        return "\n".join(out)


def _diff(n: int, real: list[str], model: list[str]) -> GenerationDiff:
    g = GenerationDiff(n, real, model)
    rm, mm = [mask_hex(x) for x in real], [mask_hex(x) for x in model]
    sm = difflib.SequenceMatcher(a=rm, b=mm, autojunk=False)
    for tag, i1, i2, j1, j2 in sm.get_opcodes():
        if tag == "equal":
            g.matched += i2 - i1
            for a, b in zip(real[i1:i2], model[j1:j2], strict=True):
                if a == b:
                    g.exact += 1
                else:
                    g.differing.append((a, b))
            continue
        g.missing.extend(real[i1:i2])
        g.extra.extend(model[j1:j2])
    return g


def model_segments(world: World) -> list[list[tuple[int, int]]]:
    """``(mem, memsz)`` of every kexec-tools load the model made, in kexec -d's order."""
    loads: list[list[tuple[int, int]]] = []
    for k in world.generations:
        seg = k.segments if k.segments is not None else (k.kdump.segments if k.kdump else None)
        if seg is None or seg.loader != "kexec-tools":
            continue
        order = [seg.image, seg.initrd, seg.dtb]
        if seg.purgatory is not None:
            order.append(seg.purgatory)
        if seg.elfcorehdr is not None:
            order.append(seg.elfcorehdr)
        loads.append([s for s in order if s[1]])
    return loads


def compare_world(world: World, real_log: str) -> Comparison:
    """Compare every generation ``world`` ran with the boots of ``real_log``."""
    real = split_generations(real_log)
    gens = []
    for n in range(max(len(real), len(world.generations))):
        r = compared_lines(real[n]) if n < len(real) else []
        m = compared_lines(world.generations[n].log.lines) if n < len(world.generations) else []
        gens.append(_diff(n, r, m))
    return Comparison(gens, kexec_segments(real_log), model_segments(world))
