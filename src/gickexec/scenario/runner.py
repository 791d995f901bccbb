"""Play a :class:`~gickexec.scenario.schema.Scenario` and judge it.

The result is plain data (``dict``/``list``/``int``/``str``/``bool``), so the same object
feeds the text report and ``--json`` (schema in docs/json.md).  Nothing time- or
host-dependent goes in: the same scenario and seed give the same result, byte for byte.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gickexec.kernel.kernel import Kernel
from gickexec.kernel.mm import SEG_DTB, SEG_IMAGE, SEG_INITRD, Owner
from gickexec.scenario.checks import evaluate
from gickexec.scenario.schema import Scenario, Step
from gickexec.scenario.world import World

__all__ = ["HEALTH_ORDER", "health", "play", "run_scenario"]


#: Called after each top-level step with its index and the world (e.g. to export memory).
StepHook = Callable[[int, World], None]


def play(scenario: Scenario, after_step: StepHook | None = None) -> World:
    """Run every step and close the books; returns the world for inspection."""
    world = World(scenario.platform, seed=scenario.seed)
    world.config_nr_cpus = scenario.config_nr_cpus
    for d in scenario.devices:
        world.add_device(
            d.name, device_id=d.device_id, nvec=d.vectors, shutdown_hook=d.shutdown_hook
        )
    for index, step in enumerate(scenario.steps):
        _do(world, step)
        if after_step is not None:
            after_step(index, world)
    world.finish()
    return world


def _mark(step: Step, world: World, outcome: str) -> None:
    """Record the books after one executed step (repeats unrolled) for the timeline:
    whether it happened, the notes and GIC programming errors it left, and the MSIs still
    pending then (``stuck``: after a step every deliverable MSI has been taken, so the
    rest wait behind tables no kernel will read, and the end of the run counts them
    lost)."""
    what = {
        "traffic": f"{step.device} x{step.msis}",
        "page-cache": f"{step.fraction:.0%}",
        "repeat": f"x{step.times}",
        "cpu-down": f"CPU{step.cpu}",
        "cpu-up": f"CPU{step.cpu}",
        "unbind": step.device,
        "bind": step.device,
    }.get(step.action, step.kernel)
    ledger = world.ledger
    noted = sum(len(t["notes"]) for t in world.timeline)
    events = world.machine.events
    seen = sum(t["guest_errors"]["count"] for t in world.timeline)
    new_errors = len(events.errors) + events.dropped - seen
    world.timeline.append(
        {
            "step": len(world.timeline),
            "action": step.action,
            "what": what,
            "outcome": outcome,
            "notes": world.notes[noted:],
            "guest_errors": {
                "count": new_errors,
                "first": str(events.errors[seen])
                if new_errors and seen < len(events.errors)
                else None,
            },
            "generation": len(world.generations) - 1,
            "sent": ledger.sent,
            "delivered": ledger.delivered,
            "lost": ledger.lost,
            "stuck": ledger.in_flight,
        }
    )


def _do(world: World, step: Step) -> None:
    gens, notes = len(world.generations), len(world.notes)
    was_dead = bool(world.generations) and world.kernel.crashed is not None
    match step.action:
        case "boot":
            world.boot(step.kernel, cmdline=step.cmdline, initrd=step.initrd, image=step.image)
        case "kexec":
            world.kexec(
                step.kernel,
                cmdline=step.cmdline,
                handover_msis=step.handover_msis,
                loader=step.loader,
                initrd=step.initrd,
                mem_min=step.mem_min,
                mem_max=step.mem_max,
                segments=step.segments,
            )
        case "kdump":
            world.kdump(
                step.kernel,
                cmdline=step.cmdline,
                panic_cpu=step.cpu,
                inflight_msis=step.inflight_msis,
                masked_msis=step.masked_msis,
                initrd=step.initrd,
                segments=step.segments,
            )
        case "cpu-down":
            world.cpu_down(step.cpu)
        case "cpu-up":
            world.cpu_up(step.cpu)
        case "traffic":
            world.traffic(step.device, step.msis)
        case "page-cache":
            world.fill_page_cache(step.fraction)
        case "unbind":
            world.unbind(step.device)
        case "bind":
            world.bind(step.device)
        case "vmm-save":
            world.vmm_save()
        case "repeat":
            for _ in range(step.times):
                for sub in step.steps:
                    _do(world, sub)
            return
        case _:
            raise AssertionError(f"unvalidated step {step.action!r}")
    _mark(step, world, _outcome(step, world, gens, notes, was_dead))


def _outcome(step: Step, world: World, gens: int, notes: int, was_dead: bool) -> str:
    """The step's outcome: "done", "skipped" (it could not happen as asked) or "hung"
    (a kdump with no capture kernel loaded: the panicked machine stops)."""
    started = len(world.generations) > gens
    if step.action == "kdump" and not started:
        return "skipped" if was_dead else "hung"
    if step.action == "kexec" and not started:
        return "skipped"
    if step.action in ("cpu-down", "cpu-up") and len(world.notes) > notes:
        # the kernel is dead or refused (the boot CPU, a CPU already in that state)
        return "skipped"
    return "done"


def run_scenario(scenario: Scenario, after_step: StepHook | None = None) -> dict[str, Any]:
    """Play ``scenario`` and return its result document."""
    world = play(scenario, after_step)
    result = describe(scenario, world)
    checks = evaluate(scenario.expect, result)
    result["expectations"] = checks
    result["expectations_held"] = all(c["ok"] for c in checks) if checks else None
    result["health"] = health(result)
    # Declared expectations decide; a scenario without any is judged by its health.
    result["ok"] = result["expectations_held"] if checks else not result["health"]["problems"]
    return result


#: Health problem kinds, worst first.
HEALTH_ORDER = ("crashed", "hung", "corrupted", "lost", "skipped", "tainted", "guest-errors")


def health(result: dict[str, Any]) -> dict[str, Any]:
    """What went wrong in a result document, worst first, whatever was expected:
    ``{"healthy": bool, "problems": [{"kind", "summary"}]}`` (kinds in HEALTH_ORDER).

    A kernel that panicked because a kdump step asked it to is not a crash; one that
    died on its own is, and so is a kdump that found no capture kernel (a hang)."""
    problems: list[tuple[str, str]] = []
    asked = _kdump_panics(result["timeline"])
    for g in result["generations"]:
        if g["crashed"] and g["index"] not in asked:
            problems.append(("crashed", f"gen {g['index']} ({g['kernel']}): {g['crash_cause']}"))
    for t in result["timeline"]:
        if t["outcome"] in ("hung", "skipped"):
            why = "; ".join(t["notes"]) or f"{t['action']} {t['what']}"
            problems.append((t["outcome"], f"step {t['step']} {t['action']}: {why}"))
    bits = result["corruption"]["bits"]
    if bits:
        owners = sorted({e["owner"] for e in result["corruption"]["events"]})
        problems.append(
            (
                "corrupted",
                f"{bits} bit(s) written outside the GIC's tables, into " + ", ".join(owners),
            )
        )
    m = result["msis"]
    if m["lost"]:
        problems.append(("lost", f"{m['lost']} of {m['sent']} MSIs lost"))
    if m["held_at_device"]:
        # a masked vector's events wait in the device's Pending Bit Array; still there at
        # the end, they were never delivered, which a user must see as a loss of service
        problems.append(
            (
                "lost",
                f"{m['held_at_device']} of {m['sent']} MSI events still held at the device "
                "(vector masked, never unmasked)",
            )
        )
    for g in result["generations"]:
        if g["taints"]:
            problems.append(("tainted", f"gen {g['index']} ({g['kernel']}): {g['taints']}"))
    if result["guest_errors"]:
        n = len(result["guest_errors"])
        problems.append(
            ("guest-errors", f"{n} GIC programming error(s), first: " + result["guest_errors"][0])
        )
    problems.sort(key=lambda p: HEALTH_ORDER.index(p[0]))
    return {
        "healthy": not problems,
        "problems": [{"kind": k, "summary": text} for k, text in problems],
    }


def _kdump_panics(timeline: list[dict[str, Any]]) -> set[int]:
    """Generations that panicked because a kdump step made them (the one running before
    each kdump step that was not skipped)."""
    out: set[int] = set()
    before = 0
    for t in timeline:
        if t["action"] == "kdump" and t["outcome"] != "skipped":
            out.add(before)
        before = t["generation"]
    return out


#: Ranges per generation in ``memory_map`` and ``reserved`` (the rest are left out).
MAX_MAP_RANGES = 4096


#: Map kinds of the roles the kernel model gives memory (GIC tables, boot segments).
_ROLE_KINDS = {
    "prop": "lpi-prop",
    "pend": "lpi-pend",
    "its": "its",
    SEG_IMAGE: "image",
    SEG_INITRD: "boot-data",
    SEG_DTB: "boot-data",
}


def _kind(owner: Owner) -> str:
    """A coarse class of what memory holds, for maps and colours."""
    if owner.role is not None:
        return _ROLE_KINDS[owner.role.kind]
    label = owner.label.lower()
    for key, kind in (
        ("kernel image", "image"),
        ("page cache", "page-cache"),
        ("memreserve", "memreserve"),
        ("its", "its"),
        ("kexec", "kexec"),
        ("crash", "kexec"),
    ):
        if key in label:
            return kind
    return "other"


def memory_map(k: Kernel) -> list[dict[str, Any]]:
    """What the kernel's memory held when it stopped: labelled ranges, adjacent ranges
    with the same label merged (page cache comes in 2 MiB pieces)."""
    out: list[dict[str, Any]] = []
    for start, end, owner in k.owners.items():
        last = out[-1] if out else None
        if last and last["label"] == owner.label and last["start"] + last["size"] == start:
            last["size"] = end - last["start"]
            continue
        if len(out) >= MAX_MAP_RANGES:
            break
        cpu = owner.role.index if owner.role is not None and owner.role.kind == "pend" else None
        out.append(
            {
                "start": start,
                "size": end - start,
                "label": owner.label,
                "kind": _kind(owner),
                "cpu": cpu,
            }
        )
    return out


def _owner_later(world: World, generation: int, addr: int) -> str | None:
    if generation >= len(world.generations):
        return None
    owner = world.generations[generation].owner(addr)
    return owner.label if owner is not None else "free memory"


def describe(scenario: Scenario, world: World) -> dict[str, Any]:
    """The result document of a played scenario (without expectations)."""
    ledger = world.ledger
    gens: list[dict[str, Any]] = []
    for k in world.generations:
        mr = (
            world.memreserve_after[k.generation]
            if k.generation < len(world.memreserve_after)
            else None
        )
        gens.append(
            {
                "index": k.generation,
                "kernel": k.profile.name,
                "os": "Linux" if k.profile.kind == "linux" else "FreeBSD",
                "boot": k.boot_method,
                "entry": k.entry,
                "cmdline": str(k.cmdline),
                "crashed": k.crashed is not None,
                "crash_cause": k.crashed,
                "log": list(k.log.lines),
                "reused_tables": k.reused_tables,
                "tainted": k.tainted,
                "taints": k.log.taint_string,
                "msis_sent": ledger.sent_per_generation[k.generation],
                "msis_delivered": ledger.delivered_per_generation[k.generation],
                "unexpected_irqs": k.unexpected_irqs,
                "interrupts": [
                    {
                        "irq": d.virq,
                        "hwirq": d.hwirq,
                        "its_msi": d.hwirq_name,
                        "name": d.action,
                        "per_cpu": [d.counts.get(c, 0) for c in k.possible_cpus],
                    }
                    for d in sorted(k.irqs.values(), key=lambda d: d.virq)
                ],
                "memreserve": None if mr is None else {"nodes": mr[0], "entries": mr[1]},
                "image": {"addr": k.image[0], "size": k.image[1]},
                "memory_map": memory_map(k),
                "reserved": [
                    {"start": a, "size": b - a} for a, b in k.memblock.reserved[:MAX_MAP_RANGES]
                ],
                "memblock": {
                    "reserved_regions": len(k.memblock.reserved),
                    "max": k.memblock.max_reserved,
                    "dropped": len(k.memblock.dropped),
                    "resized": [{"addr": a, "size": z} for a, z in k.memblock.resized],
                },
                "segments": None
                if k.segments is None
                else {
                    "loader": k.segments.loader,
                    **{n: {"addr": a, "size": z} for n, a, z in k.segments.named()},
                },
            }
        )
    events = [
        {
            "addr": e.addr,
            "bit": e.bit,
            "value": e.value,
            "writer": e.writer,
            "owner": e.owner,
            "owner_later": _owner_later(world, e.generation, e.addr),
            "generation": e.generation,
            "between_kernels": e.between_kernels,
        }
        for e in world.corruption.events
    ]
    chain = world.memreserve_chain()
    memreserve: dict[str, Any] = {"present": chain is not None, "nodes": 0, "entries": 0}
    if chain is not None:
        memreserve.update(
            root=chain.root,
            nodes=len(chain.list_nodes),
            entries=len(chain.entries),
            error=chain.error,
            list=[
                {
                    "addr": n.addr,
                    "size": n.size,
                    "count": n.count,
                    "entries": [{"addr": b, "size": s} for b, s in n.entries],
                }
                for n in chain.list_nodes
            ],
        )
    p = scenario.platform
    return {
        "name": scenario.name,
        "description": scenario.description,
        "source": scenario.source,
        "platform": {
            "name": p.name,
            "cpus": p.cpus,
            "firmware": p.firmware,
            "knobs": p.knobs.as_dict(),
            "ram": [{"start": r.start, "size": r.size} for r in p.ram],
        },
        "seed": scenario.seed,
        "timeline": world.timeline,
        "generations": gens,
        "msis": {
            "sent": ledger.sent,
            "delivered": ledger.delivered,
            "lost": ledger.lost,
            "held_at_device": ledger.held_at_device,
            "lost_reasons": dict(sorted(ledger.lost_reasons.items())),
            "delivered_per_cpu": {str(c): n for c, n in sorted(ledger.delivered_per_cpu.items())},
            "lost_per_cpu": {str(c): n for c, n in sorted(ledger.lost_per_cpu.items())},
        },
        "corruption": {
            "bits": world.corruption.bits,
            "events": events,
            "events_truncated": world.corruption.bits > len(events),
        },
        "memreserve": memreserve,
        "guest_errors": [str(e) for e in world.machine.events.errors],
        "notes": list(world.notes),
        "model": {"pages_touched": world.machine.mem.pages_touched},
    }
