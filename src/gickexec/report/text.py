"""Plain-text rendering of result documents: kernel logs, /proc/interrupts, the verdict."""

from __future__ import annotations

from typing import Any

__all__ = ["render_proc_interrupts", "render_scenario", "render_summary"]

_RULE = "═"
#: Corruption events listed in full before the rest are summarised.
MAX_EVENTS_SHOWN = 12


def render_proc_interrupts(gen: dict[str, Any]) -> list[str]:
    """``/proc/interrupts`` for a generation's MSIs (other IRQs are not modelled)."""
    irqs = gen["interrupts"]
    if not irqs:
        return ["  (no MSIs registered)"]
    ncpu = len(irqs[0]["per_cpu"])
    head = " " * 5 + "".join(f"{'CPU' + str(c):>11}" for c in range(ncpu))
    lines = [head]
    for d in irqs:
        counts = "".join(f"{n:>11}" for n in d["per_cpu"])
        lines.append(f"{d['irq']:>4}:{counts}   ITS-MSI {d['its_msi']:>7} Edge      {d['name']}")
    return lines


def _hex(addr: int) -> str:
    return f"0x{addr:016x}"


def render_scenario(result: dict[str, Any], *, logs: bool = True) -> str:
    """The full text report of one scenario."""
    out: list[str] = []
    p = result["platform"]
    title = f" {result['name']} "
    out.append(_RULE * 3 + title + _RULE * max(3, 76 - len(title)))
    if result["description"]:
        out.append(result["description"])
    out.append(
        f"platform {p['name']} ({p['cpus']} CPUs, {p['firmware'].upper()} boot), "
        f"seed {result['seed']}"
    )
    for g in result["generations"]:
        how = "booted by firmware" if g["entry"] == "firmware" else "entered by kexec"
        out.append("")
        out.append(
            f"── generation {g['index']}: Linux {g['kernel']}, {g['boot'].upper()}, {how} ──"
        )
        if logs:
            out.extend("  " + line for line in g["log"])
        out.append(
            f"── /proc/interrupts, generation {g['index']} "
            f"({g['msis_delivered']} of {g['msis_sent']} MSIs handled) ──"
        )
        out.extend(render_proc_interrupts(g))
    out.append("")
    out.extend(_verdict(result))
    return "\n".join(out)


def _verdict(result: dict[str, Any]) -> list[str]:
    out = ["── verdict ──"]
    m = result["msis"]
    out.append(f"MSIs        sent {m['sent']}, delivered {m['delivered']}, lost {m['lost']}")
    for reason, n in m["lost_reasons"].items():
        out.append(f"  lost {n:>6}: {reason}")
    if m["lost_per_cpu"]:
        per = ", ".join(f"CPU{c} {n}" for c, n in m["lost_per_cpu"].items())
        out.append(f"  lost per CPU: {per}")
    c = result["corruption"]
    if c["bits"]:
        out.append(
            f"corruption  {c['bits']} bit(s) written by the GIC outside the tables it was given:"
        )
        for e in c["events"][:MAX_EVENTS_SHOWN]:
            later = ""
            if e["owner_later"] and e["owner_later"] != e["owner"]:
                later = f", later {e['owner_later']}"
            when = "between kernels" if e["between_kernels"] else f"gen {e['generation']}"
            verb = "set" if e["value"] else "cleared"
            out.append(
                f"  {_hex(e['addr'])} bit {e['bit']} {verb} by {e['writer']}: "
                f"{e['owner']}{later} ({when})"
            )
        if c["bits"] > MAX_EVENTS_SHOWN:
            out.append(f"  ... {c['bits'] - MAX_EVENTS_SHOWN} more")
    else:
        out.append("corruption  none: every GIC write landed in a table the running kernel gave it")
    taints = ", ".join(f"gen{g['index']} {g['taints'] or '-'}" for g in result["generations"])
    out.append(f"taints      {taints}")
    reuse = ", ".join(
        f"gen{g['index']} {'yes' if g['reused_tables'] else 'no'}" for g in result["generations"]
    )
    out.append(f"reused LPI tables  {reuse}")
    mr = result["memreserve"]
    if mr["present"]:
        out.append(
            f"memreserve  {mr['nodes']} node(s), {mr['entries']} "
            f"entr{'y' if mr['entries'] == 1 else 'ies'} (root {_hex(mr['root'])})"
        )
    else:
        out.append("memreserve  no LINUX_EFI_MEMRESERVE_TABLE")
    checks = result.get("expectations", [])
    bad = [x for x in checks if not x["ok"]]
    if not checks:
        out.append("expectations  none declared")
    elif not bad:
        out.append(f"expectations  all {len(checks)} held")
    else:
        out.append(f"expectations  {len(bad)} of {len(checks)} FAILED:")
        for x in bad:
            out.append(f"  {x['check']}: expected {x['expected']}, got {x['actual']}")
    return out


def render_summary(results: list[dict[str, Any]]) -> str:
    """One line per scenario, then the plain pass/fail count."""
    lines = [""]
    for r in results:
        m = r["msis"]
        status = "ok  " if r["ok"] else "FAIL"
        lines.append(
            f"{status} {r['name']:<22} MSIs {m['delivered']}/{m['sent']} delivered, "
            f"{m['lost']} lost; {r['corruption']['bits']} corrupted bit(s)"
        )
    passed = sum(1 for r in results if r["ok"])
    lines.append(f"{passed} passed, {len(results) - passed} failed")
    return "\n".join(lines)
