"""Play a :class:`~gickexec.scenario.schema.Scenario` and judge it.

The result is plain data (``dict``/``list``/``int``/``str``/``bool``), so the same object
feeds the text report and ``--json`` (schema in docs/json.md).  Nothing time- or
host-dependent goes in: the same scenario and seed give the same result, byte for byte.
"""

from __future__ import annotations

from typing import Any

from gickexec.scenario.checks import evaluate
from gickexec.scenario.schema import Scenario, Step
from gickexec.scenario.world import World

__all__ = ["play", "run_scenario"]


def play(scenario: Scenario) -> World:
    """Run every step and close the books; returns the world for inspection."""
    world = World(scenario.platform, seed=scenario.seed)
    for d in scenario.devices:
        world.add_device(
            d.name, device_id=d.device_id, nvec=d.vectors, shutdown_hook=d.shutdown_hook
        )
    for step in scenario.steps:
        _do(world, step)
    world.finish()
    return world


def _do(world: World, step: Step) -> None:
    match step.action:
        case "boot":
            world.boot(step.kernel, cmdline=step.cmdline)
        case "kexec":
            world.kexec(
                step.kernel,
                cmdline=step.cmdline,
                handover_msis=step.handover_msis,
                loader=step.loader,
            )
        case "kdump":
            world.kdump(
                step.kernel,
                cmdline=step.cmdline,
                panic_cpu=step.cpu,
                inflight_msis=step.inflight_msis,
            )
        case "cpu-down":
            world.cpu_down(step.cpu)
        case "cpu-up":
            world.cpu_up(step.cpu)
        case "traffic":
            world.traffic(step.device, step.msis)
        case "page-cache":
            world.fill_page_cache(step.fraction)
        case "repeat":
            for _ in range(step.times):
                for sub in step.steps:
                    _do(world, sub)
        case _:
            raise AssertionError(f"unvalidated step {step.action!r}")


def run_scenario(scenario: Scenario) -> dict[str, Any]:
    """Play ``scenario`` and return its result document."""
    world = play(scenario)
    result = describe(scenario, world)
    checks = evaluate(scenario.expect, result)
    result["expectations"] = checks
    result["ok"] = all(c["ok"] for c in checks)
    return result


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
                "memblock": {
                    "reserved_regions": len(k.memblock.reserved),
                    "max": k.memblock.max_reserved,
                    "dropped": len(k.memblock.dropped),
                    "resized": [[a, z] for a, z in k.memblock.resized],
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
                    "entries": [[b, s] for b, s in n.entries],
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
        },
        "seed": scenario.seed,
        "generations": gens,
        "msis": {
            "sent": ledger.sent,
            "delivered": ledger.delivered,
            "lost": ledger.lost,
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
