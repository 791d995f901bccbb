"""Predict a live system's planned kexec or kdump: ``gickexec preflight``.

From what :mod:`gickexec.inspect.live` read off the running system, build the scenario
the model needs -- the matching platform preset (QEMU ``virt`` when the log names it,
else a generic EFI server or DT board) with the system's RAM, CPUs and boot path, the
running kernel's profile, command line, initrd and the image where the boot loader put
it -- and play the planned handover into the next kernel.  The model's first kernel must
put its ITS and LPI tables where the live kernel did (it is checked and said when not);
then the next kernel's lines, the GIC's writes outside the tables and the MSIs after the
handover say what will happen.  Where the hardware's EnableLPIs behaviour is not known
both outcomes are played.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from gickexec.hw.memory import MemRegion
from gickexec.hw.platform import PLATFORMS, BootPath, Platform
from gickexec.inspect.live import LiveError, LiveSystem, tables_from_lines
from gickexec.kernel.cmdline import CmdlineError, parse_cmdline
from gickexec.kernel.kernel import Kernel
from gickexec.kernel.kexec import ULONG_MAX, KexecSegments
from gickexec.kernel.profiles import PROFILES, get_profile
from gickexec.scenario.compare import model_segments
from gickexec.scenario.runner import describe, health, play
from gickexec.scenario.schema import (
    MAX_BANK,
    MAX_BANKS,
    MAX_CPUS,
    MIN_BANK,
    Device,
    Expect,
    Scenario,
    Step,
)
from gickexec.scenario.world import World

__all__ = [
    "ENABLE_LPIS",
    "EnableLpis",
    "Outcome",
    "PreflightOptions",
    "build_scenario",
    "check_modelable",
    "plan_segments",
    "platform_for",
    "preflight",
    "profile_for",
]

EnableLpis = Literal["auto", "one-way", "clearable", "unknown"]
ENABLE_LPIS: tuple[EnableLpis, ...] = ("auto", "one-way", "clearable", "unknown")
#: Outcome classes, worst first; only "reuse" and "no-lpis" are safe.
Outcome = Literal[
    "hang", "lpis-lost", "corrupted", "no-handover", "lost-msis", "reuse", "no-lpis", "fresh"
]
#: no-lpis: safe for memory, but MSIs through the ITS never work
SAFE: frozenset[str] = frozenset({"reuse", "no-lpis", "fresh"})
#: MSIs each device sends before and after the handover (enough to see losses)
TRAFFIC = 20
_2M = 0x200000
_PROFILE_NAME = re.compile(r"v(\d+)\.(\d+)")
_RC = re.compile(r"-rc(\d+)")


@dataclass(frozen=True, slots=True)
class PreflightOptions:
    """What the user plans, where the inputs do not say it."""

    next_kernel: str | None = None
    cmdline: str | None = None
    kdump: bool = False
    enable_lpis: EnableLpis = "auto"
    mem_min: int | None = None
    mem_max: int | None = None
    initrd_bytes: int | None = None


def profile_for(version: tuple[int, int], release: str = "") -> str:
    """The newest modelled Linux profile not newer than ``version``: the behaviours the
    model knows change only at the profiles' releases.  A release candidate
    (``release`` "4.20.0-rc1") takes that candidate's profile when there is one, else
    the newest release before it."""
    rc = _RC.search(release)
    if rc is not None:
        name = f"v{version[0]}.{version[1]}-rc{rc.group(1)}"
        if name in PROFILES:
            return name
    best: tuple[tuple[int, int], str] | None = None
    for p in PROFILES.values():
        m = _PROFILE_NAME.fullmatch(p.name)
        if p.kind != "linux" or m is None:
            continue
        v = (int(m.group(1)), int(m.group(2)))
        if (v < version or (v == version and rc is None)) and (best is None or v > best[0]):
            best = (v, p.name)
    if best is None:
        raise LiveError(
            f"Linux {version[0]}.{version[1]} is older than every modelled kernel "
            f"(known: {', '.join(PROFILES)})"
        )
    return best[1]


def platform_for(live: LiveSystem, clearable: bool | None = None) -> Platform:
    """The preset for ``live``: ``qemu-virt`` for QEMU's virt machine (ACPI OEM "BOCHS"
    or "linux,dummy-virt"), whose firmware layout is modelled; otherwise a generic EFI
    server or DT board (UNCONFIRMED for any real board: its firmware's allocations are
    not modelled, so the tables may not land at the live addresses) with the live RAM.
    ``clearable`` sets the EnableLPIs knob (and CES, which reports it)."""
    boot: BootPath = "dt" if not live.efi else "uefi-acpi" if live.acpi else "uefi-dt"
    ram = _banks(live)
    if live.qemu_virt:
        p = PLATFORMS["qemu-virt"].with_boot(boot).with_ram(ram)
    else:
        base = PLATFORMS["efi-server-8" if live.efi else "rk3566-dt"]
        its = live.its_base if live.its_base is not None else base.its_base
        gicr = live.gicr_base if live.gicr_base is not None else base.gicr_base
        gicd = _free_gicd(base.gicd_base, ram, its, gicr, live.cpus)
        p = dataclasses.replace(
            base, boot=boot, boot_paths=(boot,), its_base=its, gicr_base=gicr, gicd_base=gicd
        )
        p = p.with_ram(ram)
    p = p.with_cpus(live.cpus)
    if clearable is not None:
        p = p.with_knobs(
            dataclasses.replace(p.knobs, enable_lpis_clearable=clearable, report_ces=clearable)
        )
    return p


def _banks(live: LiveSystem) -> tuple[MemRegion, ...]:
    """The RAM banks the model builds, within the scenario format's bounds (2 MiB
    multiples, 64 MiB to 16 TiB, at most 16 banks: scenario/schema.py).  Firmware carves
    its runtime regions out of a bank (AAVMF on QEMU virt, EDK II on servers), and the
    model's firmware does the same inside its banks: System RAM ranges less than 64 MiB
    apart are one bank; each bank is rounded inwards to 2 MiB (on QEMU virt the RAM
    starts and ends on 2 MiB boundaries, so nothing moves), and a bank under 64 MiB left
    out."""
    spans: list[list[int]] = []
    for b, size in sorted(live.ram):
        if spans and b - spans[-1][1] < MIN_BANK:
            spans[-1][1] = max(spans[-1][1], b + size)
        else:
            spans.append([b, b + size])
    rounded = [((lo + _2M - 1) & ~(_2M - 1), hi & ~(_2M - 1)) for lo, hi in spans]
    banks = tuple(MemRegion(lo, hi - lo, "System RAM") for lo, hi in rounded if hi - lo >= MIN_BANK)
    if not banks or len(banks) > MAX_BANKS:
        raise LiveError(
            f"/proc/iomem: {len(banks)} RAM banks of 64 MiB or more "
            f"(the model takes 1 to {MAX_BANKS})"
        )
    for r in banks:
        if r.size > MAX_BANK:
            raise LiveError(
                f"/proc/iomem: System RAM {r.start:#x}+{r.size:#x}: the model takes banks "
                "of 64 MiB to 16 TiB"
            )
    return banks


def check_modelable(live: LiveSystem, opts: PreflightOptions) -> None:
    """Refuse, with the reason, a system the model cannot build: too many CPUs, RAM out
    of the scenario bounds, an initrd larger than RAM, a command line the model rejects."""
    if not 1 <= live.cpus <= MAX_CPUS:
        raise LiveError(f"kernel log: {live.cpus} CPUs (the model takes 1 to {MAX_CPUS})")
    total = sum(r.size for r in _banks(live))
    for what, n in (
        ("the running initrd", live.initrd_bytes),
        ("--initrd-size", opts.initrd_bytes),
    ):
        if n is not None and n > total // 2:
            raise LiveError(f"{what}: {n} bytes, more than half the RAM ({total})")
    cmdlines = [("kernel log: Kernel command line", live.cmdline)]
    if opts.cmdline is not None:
        cmdlines.append(("--cmdline", opts.cmdline))
    if live.plan is not None and live.plan.cmdline is not None:
        cmdlines.append(("kexec -d command_line", live.plan.cmdline))
    for what, text in cmdlines:
        try:
            parse_cmdline(text)
        except CmdlineError as e:
            raise LiveError(f"{what}: {e}") from None


def _free_gicd(preset: int, ram: tuple[MemRegion, ...], its: int, gicr: int, cpus: int) -> int:
    """Where the model maps the distributor: Linux prints no GICD address, and it never
    shows in memory, so the preset's unless that overlaps the live RAM, ITS or
    redistributors; then the nearest free 64 KiB below the redistributors."""
    busy = [(r.start, r.start + r.size) for r in ram]
    busy += [(its, its + 0x20000), (gicr, gicr + cpus * 0x40000)]
    for at in (preset, *(gicr - 0x10000 * i for i in range(1, 257))):
        if at >= 0 and all(at + 0x10000 <= lo or hi <= at for lo, hi in busy):
            return at
    raise LiveError(f"no room for the GIC distributor's MMIO near {gicr:#x}")


def _boot_cmdline(live: LiveSystem, p: Platform) -> str:
    """The running kernel's command line without what its boot loader appended, which the
    model's loader appends itself (EDK II's " initrd=initrd")."""
    suffix = p.firmware_layout.initrd_cmdline if p.firmware == "efi" else ""
    cmdline = live.cmdline
    if suffix and cmdline.endswith(suffix):
        cmdline = cmdline[: -len(suffix)]
    return cmdline


def _image(live: LiveSystem, kernel: str) -> int | None:
    """Where the boot loader put the running image: "Kernel code" minus the build's
    ``_stext`` offset (0x10000 for the modelled build, measured in every real run)."""
    stext = get_profile(kernel).build.stext
    if live.kernel_code is None or live.kernel_code < stext:
        return None
    return live.kernel_code - stext


def _is_kdump(live: LiveSystem, opts: PreflightOptions) -> bool:
    return opts.kdump or (live.plan is not None and live.plan.kdump)


def build_scenario(
    live: LiveSystem,
    opts: PreflightOptions,
    clearable: bool | None = None,
    *,
    first_cmdline_extra: str = "",
    mem_min: int | None = None,
    segments: KexecSegments | None = None,
) -> Scenario:
    """The scenario of the planned handover: boot as the live kernel did, MSIs, then the
    kexec or kdump, then MSIs again."""
    p = platform_for(live, clearable)
    kernel = profile_for(live.version, live.release)
    nxt = opts.next_kernel or kernel
    if nxt not in PROFILES:
        raise LiveError(f"--next {nxt!r}: no such kernel profile (known: {', '.join(PROFILES)})")
    plan = live.plan
    devs = live.devices or ((0x100, 2),)
    devices = tuple(Device(f"msi-{d:04x}", d, v) for d, v in devs)
    traffic = tuple(Step("traffic", device=d.name, msis=TRAFFIC) for d in devices)
    cmdline = opts.cmdline
    if cmdline is None:
        cmdline = plan.cmdline if plan is not None and plan.cmdline is not None else live.cmdline
    initrd = opts.initrd_bytes
    if initrd is None:
        initrd = plan.initrd_bytes if plan is not None and plan.initrd_bytes else live.initrd_bytes
    kdump = _is_kdump(live, opts)
    if mem_min is None:
        mem_min = opts.mem_min
    if mem_min is None and plan is not None and not kdump:
        # kexec-tools took the lowest 2 MiB-aligned hole at or above --mem-min for the
        # image; asking the model's loader for the same lower bound reproduces the plan
        mem_min = plan.segments[0][0]
    boot = Step(
        "boot",
        kernel=kernel,
        cmdline=_boot_cmdline(live, p) + first_cmdline_extra,
        initrd=live.initrd_bytes,
        image=_image(live, kernel),
    )
    if kdump:
        handover = Step("kdump", kernel=nxt, cmdline=cmdline, initrd=initrd, segments=segments)
    else:
        handover = Step(
            "kexec",
            kernel=nxt,
            cmdline=cmdline,
            initrd=initrd,
            mem_min=mem_min or 0,
            mem_max=opts.mem_max if opts.mem_max is not None else ULONG_MAX,
            segments=segments,
        )
    return Scenario(
        name="preflight",
        description=f"the planned {'kdump' if kdump else 'kexec'} of a live {live.release}",
        platform=p,
        seed=1,
        devices=devices,
        steps=(boot, *traffic, handover, *traffic),
        expect=Expect(),
        source="<preflight>",
    )


def _ranges_hit(
    segs: list[tuple[str, int, int]], tables: list[tuple[str, int, int]]
) -> list[dict[str, Any]]:
    return [
        {"segment": sn, "segment_addr": sa, "table": tn, "table_addr": ta}
        for sn, sa, ss in segs
        for tn, ta, ts in tables
        if sa < ta + ts and ta < sa + ss
    ]


def _judge(world: World) -> dict[str, Any]:
    """What the played handover did: the outcome class, why, and the evidence."""
    result = describe(
        Scenario("preflight", "", world.platform, world.seed, (), (), Expect()), world
    )
    problems = health(result)["problems"]
    first = world.generations[0]
    tables = tables_from_lines(first.log.lines).ranges()
    evidence: dict[str, Any] = {"notes": list(world.notes), "segments_over_tables": []}
    if len(world.generations) < 2:
        why = "; ".join(world.notes) or "the handover did not happen"
        return {"outcome": "no-handover", "why": why, "lines": [], **evidence}
    nxt = world.generations[1]
    segs = nxt.segments if nxt.segments is not None else (nxt.kdump.segments if nxt.kdump else None)
    named = segs.named() if segs is not None else []
    over = _ranges_hit(named, tables)
    lines = [
        ln
        for ln in nxt.log.lines
        if ln.startswith(("GICv3: ", "ITS", "CPU")) and "found redistributor" not in ln
    ]
    stray = [
        {"addr": e["addr"], "owner": e["owner"], "writer": e["writer"]}
        for e in result["corruption"]["events"]
    ]
    evidence |= {
        "lines": lines,
        "segments": [{"name": n, "addr": a, "size": s} for n, a, s in named],
        "segments_over_tables": over,
        "stray_bits": result["corruption"]["bits"],
        "stray_writes": stray[:16],
        "msis": result["msis"],
        "tainted": nxt.tainted,
        "problems": problems,
    }
    text = "\n".join(nxt.log.lines)
    if nxt.crashed is not None:
        where = (
            "; ".join(
                f"the {h['segment']} at {h['segment_addr']:#x} covers the live {h['table']} "
                f"at {h['table_addr']:#x}"
                for h in over
            )
            or "no segment covers a live table"
        )
        why = f"the next kernel dies: {nxt.crashed} ({where})"
        return {"outcome": "hang", "why": why, **evidence}
    if "Failed to disable LPIs" in text:
        bits = result["corruption"]["bits"]
        owners = sorted({s["owner"] for s in stray})
        why = (
            "the next kernel finds LPIs enabled on tables nobody reserved and cannot turn "
            "them off (EnableLPIs is one-way): its LPIs never work "
            f"({result['msis']['lost']} of {result['msis']['sent']} MSIs lost), and the "
            "redistributors keep the old tables, whose memory the next kernel takes as "
            "free; stray pending bits in this run: "
            + (f"{bits}, in {', '.join(owners)}" if owners else "none")
        )
        return {"outcome": "lpis-lost", "why": why, **evidence}
    if "memory probably corrupted" in text or result["corruption"]["bits"]:
        owners = sorted({s["owner"] for s in stray})
        bits = result["corruption"]["bits"]
        later = sorted({_owner(nxt, a) for _, a, _ in tables})
        why = (
            "Booted with LPIs enabled, memory probably corrupted: nothing published the "
            "live tables, so the next kernel takes their memory as free ("
            + ", ".join(later)
            + "); it clears EnableLPIs and allocates new tables. Pending bits the GIC sets "
            "before that land in that memory: "
            + (f"{bits} did, in {', '.join(owners)}" if owners else "none in this run")
        )
        return {"outcome": "corrupted", "why": why, **evidence}
    if not tables:
        lost = result["msis"]["lost"]
        why = (
            "the running kernel has no LPI tables, so there is nothing to hand over; MSIs "
            f"through the ITS do not work at all ({lost} lost): devices fall back to wired "
            "interrupts or polling"
        )
        return {"outcome": "no-lpis", "why": why, **evidence}
    if result["msis"]["lost"]:
        why = f"{result['msis']['lost']} of {result['msis']['sent']} MSIs lost"
        return {"outcome": "lost-msis", "why": why, **evidence}
    if nxt.reused_tables:
        how = (
            "through is_kdump_kernel()" if nxt.entry == "kdump" else "from the EFI memreserve list"
        )
        why = f"the next kernel reuses the live tables ({how}): every MSI delivered"
        return {"outcome": "reuse", "why": why, **evidence}
    why = "the next kernel started without LPIs enabled and allocated its own tables"
    return {"outcome": "fresh", "why": why, **evidence}


def _owner(k: Kernel, addr: int) -> str:
    owner = k.owner(addr)
    return f"{addr:#x}: {owner.label if owner is not None else 'free memory'}"


def _fidelity(live: LiveSystem, world: World) -> dict[str, Any]:
    """Whether the model's first kernel put its tables (and crash region, and the
    planned segments) where the live system did."""
    first = world.generations[0]
    model_tables = tables_from_lines(first.log.lines)
    diffs: list[str] = []
    live_r = {(n, a) for n, a, _ in live.tables.ranges()}
    model_r = {(n, a) for n, a, _ in model_tables.ranges()}
    diffs += [f"live {n} at {a:#x}, the model's elsewhere" for n, a in sorted(live_r - model_r)]
    if live.crashkernel is not None and first.crashkernel != live.crashkernel:
        got = "none" if first.crashkernel is None else f"{first.crashkernel[0]:#x}"
        diffs.append(f"live crashkernel at {live.crashkernel[0]:#x}, the model's at {got}")
    model_segs = model_segments(world)
    segments_differ = False
    if live.plan is not None:
        want = list(live.plan.segments)
        got_segs = model_segs[0] if model_segs else []
        if got_segs != want:
            segments_differ = True
            fmt = ", ".join
            diffs.append(
                f"kexec -d segments {fmt(f'{a:#x}+{s:#x}' for a, s in want)}; the model's "
                f"loader: {fmt(f'{a:#x}+{s:#x}' for a, s in got_segs) or 'none'}"
            )
    return {"reproduced": not diffs, "differences": diffs, "segments_differ": segments_differ}


def _variants(live: LiveSystem, choice: EnableLpis) -> list[tuple[str, bool | None]]:
    if choice == "one-way":
        return [("one-way", False)]
    if choice == "clearable":
        return [("clearable", True)]
    if choice == "auto" and live.qemu_virt:
        return [("clearable (QEMU virt)", None)]
    return [("one-way", False), ("clearable", True)]


def _suggest(
    live: LiveSystem, opts: PreflightOptions, outcomes: list[dict[str, Any]], clearable: bool | None
) -> list[dict[str, Any]]:
    """What would make it safe, each alternative played through the model too."""
    out: list[dict[str, Any]] = []
    kdump = _is_kdump(live, opts)

    def play_alt(
        what: str, system: LiveSystem = live, options: PreflightOptions = opts, **kw: Any
    ) -> bool:
        world = play(build_scenario(system, options, clearable, **kw))
        j = _judge(world)
        out.append({"suggestion": what, "outcome": j["outcome"], "safe": j["outcome"] in SAFE})
        return bool(out[-1]["safe"])

    tables = live.tables.ranges()
    if any(o["segments_over_tables"] for o in outcomes) and tables and not kdump:
        top = max(a + s for _, a, s in tables)
        mem_min = (top + _2M - 1) & ~(_2M - 1)
        play_alt(
            f"kexec --mem-min={mem_min:#x} (keeps the segments off the live tables)",
            mem_min=mem_min,
        )
    if tables:
        play_alt(
            "irqchip.gicv3_nolpi=1 on the running kernel's command line (a reboot first; "
            "then no kernel enables LPIs, and no MSIs go through the ITS)",
            first_cmdline_extra=" irqchip.gicv3_nolpi=1",
        )
    uefi = (
        "boot through UEFI: the EFI stub and Linux >= 4.20 publish the tables in the EFI "
        "memreserve list and the next kernel reuses them"
    )
    if not live.efi and live.qemu_virt:
        # AAVMF with QEMU's device tree; the stub places the image, kexec-tools the rest
        play_alt(uefi, dataclasses.replace(live, efi=True, acpi=False, kernel_code=None, plan=None))
    elif not live.efi:
        out.append({"suggestion": uefi, "outcome": None, "safe": None})
    if live.crashkernel is None and (kdump or not live.efi):
        _suggest_crashkernel(live, opts, play_alt)
    elif live.crashkernel is not None and not kdump and not live.efi:
        base, size = live.crashkernel
        play_alt(
            f"kexec -p into the crashkernel= region already reserved at {base:#x} "
            f"({size >> 20} MiB) instead: the capture kernel reuses the tables through "
            "is_kdump_kernel()",
            options=dataclasses.replace(opts, kdump=True),
        )
    return out


#: crashkernel= sizes tried for a suggestion, smallest first
CRASHKERNEL_SIZES = (256 << 20, 512 << 20)


def _suggest_crashkernel(
    live: LiveSystem, opts: PreflightOptions, play_alt: Callable[..., bool]
) -> None:
    """Suggest the smallest ``crashkernel=`` the model plays safe, for a planned kdump
    without one, or as the way out of an unsafe kexec on a device-tree boot.

    arm64 ``reserve_crashkernel()`` (arch/arm64/mm/init.c, v4.19.1 to v6.1) takes the
    region top-down below 4 GiB from memblock in ``bootmem_init()``, before the ITS
    driver allocates a table, so the capture kernel's segments (all inside the region,
    kexec-tools ``kexec -p``) can never cover a live table, and ``is_kdump_kernel()``
    lets the capture kernel reuse the tables wherever they are.  Each size is played: a
    reboot with it, then the panic.  With a region given by the user at a fixed place
    (``crashkernel=SIZE@OFFSET``) that no longer holds; the model does not play offsets."""
    ram = sum(r.size for r in _banks(live))
    options = dataclasses.replace(opts, kdump=True)
    for size in CRASHKERNEL_SIZES:
        if size * 2 > ram:
            break
        what = (
            f"crashkernel={size >> 20}M on the running kernel's command line (a reboot "
            "first; the region is reserved before any LPI table is allocated, so the "
            "capture kernel's segments stay off the live tables), then kexec -p: the "
            "capture kernel reuses the tables through is_kdump_kernel()"
        )
        if play_alt(what, options=options, first_cmdline_extra=f" crashkernel={size >> 20}M"):
            return


def plan_segments(live: LiveSystem) -> KexecSegments:
    """The segments of the live plan as the model loads them.  kexec-tools prints them
    sorted by address (``sort_segments()`` before ``kexec_load()``, kexec/kexec.c; the
    real kdump run's -d output, tests/data/realcheck, lists the elfcorehdr it placed
    first as the last segment):
    the image lowest, then the initrd (if any), the DTB and the purgatory, all placed
    above the image; for ``-p`` the elfcorehdr last, at the top of the crash region."""
    plan = live.plan
    assert plan is not None
    segs = list(plan.segments)
    elfcorehdr = segs.pop() if plan.kdump and len(segs) > 3 else None
    if len(segs) == 4:
        image, initrd, dtb, purgatory = segs
    elif len(segs) == 3:
        image, dtb, purgatory = segs
        initrd = (0, 0)
    else:
        raise LiveError(
            f"kexec -d output: {len(plan.segments)} segments; the model knows kexec-tools' "
            "arm64 Image loads (image, initrd, DTB, purgatory, and elfcorehdr for -p)"
        )
    return KexecSegments(
        "kexec-tools", image, initrd, dtb, purgatory, elfcorehdr, plan.initrd_bytes or None
    )


def preflight(live: LiveSystem, opts: PreflightOptions) -> dict[str, Any]:
    """Play the planned handover on the model of ``live``; the prediction document.

    The handover is played with the model's own loader first; when its segments are
    not the ones kexec -d printed, it is played again with the printed ones."""
    check_modelable(live, opts)
    variants = _variants(live, opts.enable_lpis)
    scenario = build_scenario(live, opts, variants[0][1])
    first = play(scenario)
    fidelity = _fidelity(live, first)
    forced = fidelity.pop("segments_differ")
    segments = plan_segments(live) if forced else None
    predictions: list[dict[str, Any]] = []
    for i, (label, clearable) in enumerate(variants):
        world = (
            first
            if i == 0 and not forced
            else play(build_scenario(live, opts, clearable, segments=segments))
        )
        judged = _judge(world)
        judged["enable_lpis"] = label
        judged["safe"] = judged["outcome"] in SAFE
        predictions.append(judged)
    unsafe = [p for p in predictions if not p["safe"]]
    suggestions = _suggest(live, opts, predictions, variants[0][1]) if unsafe else []
    handover = next(s for s in scenario.steps if s.action in ("kexec", "kdump"))
    return {
        "live": live.to_json(),
        "model": {
            "platform": scenario.platform.name,
            "boot": scenario.platform.boot_path,
            "kernel": scenario.steps[0].kernel,
            "next_kernel": handover.kernel,
            "handover": handover.action,
            "segments": "kexec -d" if forced else "model loader",
            **fidelity,
        },
        "predictions": predictions,
        "suggestions": suggestions,
        "safe": not unsafe,
    }
