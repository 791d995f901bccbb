"""Plain-text rendering of result documents: kernel logs, /proc/interrupts, the verdict.

The text carries dmesg-style colour as ANSI escapes (``click.style``); ``click.echo``
strips them when the output is not a terminal or colour is turned off, so callers
decide with its ``color`` argument, not here.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterable
from typing import Any, Literal

import click

__all__ = [
    "LogDetail",
    "decisive_lines",
    "expected_text",
    "line_class",
    "render_proc_interrupts",
    "render_scenario",
    "render_summary",
    "step_remarks",
]

_RULE = "═"
#: Corruption events listed in full before the rest are summarised.
MAX_EVENTS_SHOWN = 12
#: Width the verdict's problem lines wrap at.
VERDICT_WIDTH = 100
#: How much of each kernel log the text report shows.
LogDetail = Literal["full", "key", "none"]

# The log lines that decide an outcome, and the ones that report a failure (one place
# for the rule, shared by the text and the HTML report).
_MATTERS = re.compile(
    r"LPI|ITS@|MEMRESERVE|reserved range|preallocated|redistributor tables|"
    r"\bkexec|crashkernel|crashdump|efi: EFI"
)
_FAILS = re.compile(
    r"Booted with LPIs enabled|Failed to disable LPIs|WARNING|not found|cut here|"
    r"Kernel panic|Unable to handle|timeout|Unexpected interrupt|Internal error|Oops|"
    r"failed|Error:"
)
# What differs between the per-CPU copies of one message: CPU numbers and addresses.
_PER_CPU = re.compile(r"CPU\d+|@?0x[0-9a-f]+|@[0-9a-f]+|\b\d+\b")


def line_class(line: str) -> str:
    """Class of a kernel log line: "warn" (a failure), "hl" (decides the outcome) or ""."""
    if _FAILS.search(line):
        return "warn"
    if _MATTERS.search(line):
        return "hl"
    return ""


def decisive_lines(log: Iterable[str]) -> list[str]:
    """The lines of a log that decide the outcome, each per-CPU message once (the first,
    with a count of the other CPUs' copies): what fits on a screen."""
    kept: list[list[Any]] = []  # [line, copies] in log order
    seen: dict[str, list[Any]] = {}
    for line in log:
        if not line_class(line):
            continue
        key = _PER_CPU.sub("#", line)
        if key in seen and "CPU" in line:
            seen[key][1] += 1
            continue
        seen[key] = [line, 0]
        kept.append(seen[key])
    return [line + (f"  [+{n} more like it]" if n else "") for line, n in kept]


def _paint(line: str) -> str:
    """dmesg-style colour: failures red and bold, deciding lines bold."""
    cls = line_class(line)
    if cls == "warn":
        return click.style(line, fg="red", bold=True)
    return click.style(line, bold=True) if cls == "hl" else line


#: CPU columns and rows the collapsed /proc/interrupts shows before it condenses.
MAX_COLUMNS = 8
MAX_ROWS = 16


def render_proc_interrupts(gen: dict[str, Any], *, all_rows: bool = True) -> list[str]:
    """``/proc/interrupts`` for a generation's MSIs (other IRQs are not modelled).

    Without ``all_rows`` the CPUs that took none of these interrupts and the rows nobody
    took are left out; when more than MAX_COLUMNS CPUs remain, each row gives its total
    and the CPUs that took it instead, and at most MAX_ROWS rows are shown.  A last
    line says what was left out."""
    irqs = gen["interrupts"]
    if not irqs:
        return ["  (no MSIs registered)"]
    ncpu = len(irqs[0]["per_cpu"])
    cpus = list(range(ncpu))
    rows = irqs
    if not all_rows:
        cpus = [c for c in cpus if any(d["per_cpu"][c] for d in irqs)]
        rows = [d for d in irqs if any(d["per_cpu"])]
    condensed = not all_rows and len(cpus) > MAX_COLUMNS
    shown = rows[:MAX_ROWS] if not all_rows else rows
    lines: list[str] = []
    if condensed:
        lines.append(f"{'':5}{'total':>11}  {'on CPUs':<24}")
    elif shown:
        lines.append(" " * 5 + "".join(f"{'CPU' + str(c):>11}" for c in cpus))
    for d in shown:
        tail = f"   ITS-MSI {d['its_msi']:>7} Edge      {d['name']}"
        if condensed:
            on = _cpu_ranges([c for c in cpus if d["per_cpu"][c]])
            lines.append(f"{d['irq']:>4}:{sum(d['per_cpu']):>11}  {on:<24}{tail}")
        else:
            lines.append(f"{d['irq']:>4}:" + "".join(f"{d['per_cpu'][c]:>11}" for c in cpus) + tail)
    hidden = [f"{ncpu - len(cpus)} idle CPU(s)"] if len(cpus) < ncpu else []
    hidden += [f"{len(irqs) - len(rows)} idle row(s)"] if len(rows) < len(irqs) else []
    hidden += [f"{len(rows) - len(shown)} more busy row(s)"] if len(shown) < len(rows) else []
    if hidden:
        lines.append(f"  ({' and '.join(hidden)} not shown; --all shows them)")
    return lines


def _cpu_ranges(cpus: list[int]) -> str:
    """``[0, 1, 2, 5]`` as ``CPU0-2,5``."""
    parts: list[tuple[int, int]] = []
    for c in cpus:
        if parts and parts[-1][1] == c - 1:
            parts[-1] = (parts[-1][0], c)
        else:
            parts.append((c, c))
    return "CPU" + ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in parts) if parts else "-"


def _hex(addr: int) -> str:
    return f"{addr:#x}"


def _heading(g: dict[str, Any]) -> str:
    how = {
        "firmware": "booted by firmware",
        "kexec": "entered by kexec",
        "kdump": "entered by kdump (capture kernel)",
    }[g["entry"]]
    crashed = ", CRASHED" if g["crashed"] else ""
    return f"{g['os']} {g['kernel']}, {g['boot'].upper()}, {how}{crashed}"


def render_scenario(
    result: dict[str, Any], *, logs: LogDetail = "full", all_rows: bool = True
) -> str:
    """The text report of one scenario: per generation its log (all of it, the decisive
    lines, or none), the notes of the steps it ran and /proc/interrupts; the verdict."""
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
    previous: list[str] = []
    for g in result["generations"]:
        out.append("")
        out.append(f"── generation {g['index']}: {_heading(g)} ──")
        if logs != "none":
            shown = g["log"] if logs == "full" else decisive_lines(g["log"])
            out.extend("  " + _paint(line) for line in shown)
            if logs == "key" and len(shown) < len(g["log"]):
                out.append(f"  ({len(g['log'])} log lines in all; -v shows them)")
        out.extend(_step_notes(result, g["index"]))
        out.append(
            f"── /proc/interrupts, generation {g['index']} "
            f"({g['msis_delivered']} of {g['msis_sent']} MSIs handled) ──"
        )
        table = render_proc_interrupts(g, all_rows=all_rows)
        if not all_rows and table == previous:
            table = [f"  (as in generation {g['index'] - 1})"]
        else:
            previous = table
        out.extend(table)
    out.append("")
    out.extend(_verdict(result))
    return "\n".join(out)


def step_remarks(result: dict[str, Any], generation: int) -> list[tuple[dict[str, Any], str]]:
    """The steps run under ``generation`` that did not simply happen, or left notes or
    GIC programming errors, each with what to say about it."""
    out: list[tuple[dict[str, Any], str]] = []
    for t in result["timeline"]:
        if t["generation"] != generation:
            continue
        said = list(t["notes"])
        errors = t.get("guest_errors") or {"count": 0}
        if errors["count"]:
            first = f", first: {errors['first']}" if errors.get("first") else ""
            said.append(f"{errors['count']} GIC programming error(s){first}")
        if said or t["outcome"] != "done":
            flag = "" if t["outcome"] == "done" else f" {t['outcome'].upper()}"
            out.append((t, f"step {t['step']} {t['action']} {t['what']}{flag}: " + "; ".join(said)))
    return out


def _step_notes(result: dict[str, Any], generation: int) -> list[str]:
    """Each remark on a step, wrapped to the verdict's width (GIC errors run long)."""
    out: list[str] = []
    for _, text in step_remarks(result, generation):
        lines = textwrap.wrap(text, VERDICT_WIDTH - 5, break_on_hyphens=False) or [""]
        out.append(click.style(f"  !! {lines[0]}", fg="yellow"))
        out.extend(click.style(f"     {line}", fg="yellow") for line in lines[1:])
    return out


def expected_text(check: dict[str, Any]) -> str:
    """An expectation's ``expected`` as text: a ``{min, max}`` range as ``400``,
    ``>= 1``, ``<= 8`` or ``1..8``; anything else as it is."""
    want = check["expected"]
    if not (isinstance(want, dict) and set(want) == {"min", "max"}):
        return str(want)
    lo, hi = want["min"], want["max"]
    if lo == hi:
        return str(lo)
    if hi is None:
        return f">= {lo}"
    return f"<= {hi}" if lo is None else f"{lo}..{hi}"


def _health_line(result: dict[str, Any]) -> str:
    h = result["health"]
    if h["healthy"]:
        return click.style("healthy", fg="green", bold=True)
    kinds = list(dict.fromkeys(p["kind"] for p in h["problems"]))
    return click.style("UNHEALTHY", fg="red", bold=True) + ": " + ", ".join(kinds)


def _expectation_line(result: dict[str, Any]) -> str:
    checks = result["expectations"]
    bad = sum(not x["ok"] for x in checks)
    if not checks:
        return "none declared (judged by health)"
    if not bad:
        return click.style(f"all {len(checks)} held", fg="green")
    return click.style(f"{bad} of {len(checks)} FAILED", fg="red", bold=True)


def _verdict(result: dict[str, Any]) -> list[str]:
    out = ["── verdict ──", f"health      {_health_line(result)}"]
    for p in result["health"]["problems"]:
        # long causes (a crash's) wrap under themselves so the verdict fits a screen
        first, *rest = textwrap.wrap(p["summary"], VERDICT_WIDTH - 15, break_on_hyphens=False) or [
            ""
        ]
        kind = click.style(f"  {p['kind']:<12} ", fg="red", bold=p["kind"] in ("crashed", "hung"))
        out.append(kind + first)
        out += [" " * 15 + line for line in rest]
    out.append(f"expectations  {_expectation_line(result)}")
    out += [
        click.style(f"  {x['check']}: expected {expected_text(x)}, got {x['actual']}", fg="red")
        for x in result["expectations"]
        if not x["ok"]
    ]
    m = result["msis"]
    held = f", held at the device {m['held_at_device']}" if m.get("held_at_device") else ""
    out.append(f"MSIs        sent {m['sent']}, delivered {m['delivered']}, lost {m['lost']}{held}")
    for reason, n in m["lost_reasons"].items():
        out.append(f"  lost {n:>6}: {reason}")
    if m["lost_per_cpu"]:
        by_count: dict[int, list[int]] = {}
        for c, n in m["lost_per_cpu"].items():
            by_count.setdefault(n, []).append(int(c))
        per = "; ".join(f"{n} on {_cpu_ranges(sorted(cs))}" for n, cs in by_count.items())
        out.append(f"  lost per CPU: {per}")
    out.extend(_corruption(result["corruption"]))
    taints = ", ".join(f"gen{g['index']} {g['taints'] or '-'}" for g in result["generations"])
    out.append(f"taints      {taints}")
    reuse = ", ".join(
        f"gen{g['index']} {'yes' if g['reused_tables'] else 'no'}" for g in result["generations"]
    )
    out.append(f"reused LPI tables  {reuse}")
    mr = result["memreserve"]
    if mr["present"]:
        out.append(
            f"memreserve  {mr['nodes']} node(s) after the root, {mr['entries']} "
            f"entr{'y' if mr['entries'] == 1 else 'ies'} (root {_hex(mr['root'])})"
        )
    else:
        out.append("memreserve  no LINUX_EFI_MEMRESERVE_TABLE")
    return out


def _corruption(c: dict[str, Any]) -> list[str]:
    if not c["bits"]:
        return ["corruption  none: every GIC write landed in a table the running kernel gave it"]
    out = [
        click.style("corruption  ", fg="red", bold=True)
        + f"{c['bits']} bit(s) written by the GIC outside the tables it was given:"
    ]
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
    return out


def render_summary(results: list[dict[str, Any]]) -> str:
    """One line per scenario (the verdict that counts, expectations, health), then the
    count: "N passed, M failed" where a scenario passes when its expectations hold, or,
    with none declared, when it is healthy."""
    lines = [""]
    for r in results:
        status = (
            click.style("ok  ", fg="green") if r["ok"] else click.style("FAIL", fg="red", bold=True)
        )
        checks = r["expectations"]
        held = sum(x["ok"] for x in checks)
        expect = f"expectations {held}/{len(checks)} held" if checks else "no expectations"
        lines.append(f"{status} {r['name']:<22} {expect:<25} {_health_line(r)}")
    passed = sum(1 for r in results if r["ok"])
    lines.append(f"{passed} passed, {len(results) - passed} failed")
    return "\n".join(lines)
