"""Preflight bundles made from the model's own runs (what collect.sh would have gathered
on the machine the scenario models), for tests/test_preflight.py."""

from __future__ import annotations

from pathlib import Path

from gickexec.scenario.compare import model_segments
from gickexec.scenario.runner import play
from gickexec.scenario.schema import Scenario


def kexec_debug_text(
    cmdline: str, initrd: int, segments: list[tuple[int, int]], kdump: bool
) -> str:
    """kexec-tools 2.0.25's -d lines preflight reads, as the real runs printed them."""
    out = [f"arch_process_options:178: command_line: {cmdline}"]
    if initrd:
        base = segments[1][0]
        out.append(f"initrd: base {base:x}, size {initrd:x}h ({initrd})")
    if kdump:
        out.append("load_crashdump_segments: page_offset:   0000000000000000")
    out.append(f"nr_segments = {len(segments)}")
    for i, (mem, memsz) in enumerate(segments):
        out += [f"segment[{i}].mem   = {mem:#x}", f"segment[{i}].memsz = {memsz:#x}"]
    return "\n".join(out) + "\n"


def write_bundle(sc: Scenario, out: Path, *, kexec_d: bool = True) -> Path:
    """Play ``sc`` and write the bundle of its first kernel: dmesg, /proc/iomem (System
    RAM and Kernel code), /proc/interrupts' ITS-MSI rows and the kexec -d output of the
    handover the scenario plans."""
    world = play(sc)
    k0 = world.generations[0]
    out.mkdir(parents=True, exist_ok=True)
    lines = list(k0.log.lines)
    if sc.platform.acpi:
        # the model leaves out the ACPI table dump; its first line says "ACPI" to preflight
        lines.insert(2, "ACPI: RSDP 0x00000000FC000018 000024 (v02 GICKEX)")
    (out / "dmesg.txt").write_text("\n".join(lines) + "\n")
    code = k0.iomem_kernel[0][0]
    iomem = [f"{s:08x}-{e - 1:08x} : System RAM" for s, e in k0.system_ram]
    iomem.append(
        f"  {code:08x}-{k0.iomem_kernel[0][0] + k0.iomem_kernel[0][1] - 1:08x} : Kernel code"
    )
    (out / "iomem.txt").write_text("\n".join(iomem) + "\n")
    rows = [
        f" {40 + i}:  0  0  ITS-MSI {(d.device_id << 11) | v} Edge  {d.name}"
        for i, d in enumerate(sc.devices)
        for v in range(d.vectors)
    ]
    (out / "interrupts.txt").write_text("\n".join(rows) + "\n")
    handover = next((s for s in sc.steps if s.action in ("kexec", "kdump")), None)
    if handover is None:
        raise ValueError(f"{sc.name}: no top-level kexec or kdump step")
    loads = model_segments(world)
    if kexec_d and loads:
        text = kexec_debug_text(
            handover.cmdline, handover.initrd, loads[0], handover.action == "kdump"
        )
        (out / "kexec-d.txt").write_text(text)
    return out
