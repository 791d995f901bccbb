"""The text of a ``gickexec preflight`` prediction document (docs/preflight.md)."""

from __future__ import annotations

import textwrap
from typing import Any

__all__ = ["preflight_text"]

#: Explanations are wrapped to this width (the kernel lines are not)
WIDTH = 92


def _tables(t: dict[str, Any]) -> str:
    parts = [f"ITS {i['kind']} @{i['addr']:#x}" for i in t["its"]]
    if t["prop"] is not None:
        parts.append(f"property @{t['prop']:#x}")
    parts += [f"CPU{c} pending @{a:#x}" for c, a in t["pend"].items()]
    return ", ".join(parts) or "none (no ITS, or LPIs off)"


def preflight_text(doc: dict[str, Any]) -> str:
    live, model = doc["live"], doc["model"]
    out = []
    ram = ", ".join(f"{r['base']:#x}+{r['size']:#x}" for r in live["ram"])
    machine = f" ({live['machine']})" if live["machine"] else ""
    out.append(
        f"running: Linux {live['release']}, boot {live['boot']}{machine}, "
        f"{live['cpus']} CPUs, System RAM {ram}"
    )
    out.append(f"  LPI tables: {_tables(live['tables'])}")
    if live["memreserve"] is not None:
        out.append(f"  EFI MEMRESERVE root @{live['memreserve']:#x}")
    if live["crashkernel"] is not None:
        c = live["crashkernel"]
        out.append(f"  crashkernel @{c['base']:#x}+{c['size']:#x}")
    plan = live["kexec"]
    if plan is not None:
        segs = ", ".join(f"{s['mem']:#x}+{s['memsz']:#x}" for s in plan["segments"])
        out.append(
            f"  planned ({'kexec -p' if plan['kdump'] else 'kexec -l'}, from kexec -d): {segs}"
        )
    out.append(
        f"model: {model['platform']} ({model['boot']}), {model['kernel']} -> "
        f"{model['next_kernel']} by {model['handover']}"
    )
    if model["reproduced"]:
        out.append("  the model's first kernel put every table where the live one did")
    else:
        out.append("  the model does NOT reproduce the live system; the prediction is the model's:")
        out.extend(f"    {d}" for d in model["differences"])
    for p in doc["predictions"]:
        verdict = "safe" if p["safe"] else "UNSAFE"
        out.append(f"EnableLPIs {p['enable_lpis']}: {verdict}: {p['outcome']}")
        out.extend(textwrap.wrap(p["why"], WIDTH, initial_indent="  ", subsequent_indent="  "))
        if p["lines"]:
            out.append("  the next kernel will print:")
            out.extend(f"    {ln}" for ln in p["lines"])
        for w in p.get("stray_writes", []):
            out.append(f"  stray bit at {w['addr']:#x} ({w['owner']}), by {w['writer']}")
        for n in p["notes"]:
            out.append(f"  note: {n}")
    if doc["suggestions"]:
        out.append("what would make it safe (played through the model where it says so):")
        for s in doc["suggestions"]:
            tried = (
                ""
                if s["outcome"] is None
                else f"  [model: {s['outcome']}, {'safe' if s['safe'] else 'still unsafe'}]"
            )
            out.extend(
                textwrap.wrap(
                    f"{s['suggestion']}{tried}",
                    WIDTH,
                    initial_indent="  - ",
                    subsequent_indent="    ",
                )
            )
    out.append("SAFE" if doc["safe"] else "UNSAFE")
    return "\n".join(out)
