"""Text rendering of an ``inspect`` document (gickexec.inspect.analyze.inspect_image).

Verdict words carry ANSI colour (``click.style``); ``click.echo`` strips it off a
terminal or when colour is turned off."""

from __future__ import annotations

from typing import Any

import click

__all__ = ["render_inspection"]


def _range(addr: int, size: int) -> str:
    return f"[{addr:#014x}-{addr + size - 1:#014x}]"


def render_inspection(doc: dict[str, Any]) -> str:
    """What the next kernel would see, in the order it would see it."""
    img = doc["image"]
    out = [f"image  {img['path']} ({img['kind']}, {len(img['segments'])} segment(s))"]
    out += [f"  warning: {w}" for w in img["warnings"]]
    st = doc.get("systab")
    if st:
        crc = "CRC ok" if st["crc_ok"] else "CRC BAD"
        out.append(f"EFI system table @{st['addr']:#x} ({st['how']}), UEFI {st['revision']}, {crc}")
        out += [
            f"  config table {c['guid']} {c['name'] or '(unknown)'} -> {c['table']:#x}"
            for c in st["config_tables"]
        ]
    mr = doc.get("memreserve")
    if mr:
        out.append(
            f"efi: MEMRESERVE={mr['root']:#x} ({mr['how']}); layout {mr['layout']} "
            f"({mr['layout_reason']}); {len(mr['nodes'])} node(s) counting the root, "
            f"{mr['entries']} reservation(s)"
        )
        for n in mr["nodes"]:
            out.append(
                f"  node @{n['addr']:#x} size {n['size']} count {n['count']} next {n['next']:#x}"
            )
            out += [f"    reserved {_range(e['addr'], e['size'])}" for e in n["entries"]]
        if mr["error"]:
            out.append(f"  walk stopped: {mr['error']}")
    if doc.get("tables_how"):
        out.append(f"live LPI tables ({doc['tables_how']}):")
    for t in doc["tables"]:
        who = "LPI property table" if t["kind"] == "prop" else f"CPU{t['cpu']} LPI pending table"
        cover = "reserved" if t["covered"] else click.style("NOT RESERVED", fg="red", bold=True)
        out.append(f"{who} {_range(t['addr'], t['size'])} {cover}")
        if "error" in t:
            out.append(f"  cannot decode: {t['error']}")
        elif t["kind"] == "prop":
            prios = ", ".join(f"{p} x{c}" for p, c in t["priorities"].items())
            out.append(f"  {t['enabled']} LPI(s) enabled; priorities: {prios or '-'}")
        else:
            lpis = " ".join(str(i) for i in t["pending_lpis"][:32])
            more = " ..." if t["pending"] > 32 else ""
            out.append(f"  {t['pending']} LPI(s) pending{': ' + lpis + more if lpis else ''}")
            if t["first_kib_nonzero"]:
                out.append("  first 1 KiB (IMPLEMENTATION DEFINED) is not zero")
    out += [click.style("problem: ", fg="yellow", bold=True) + p for p in doc["problems"]]
    n = len(doc["tables"])
    out.append(
        click.style(f"ok: all {n} live LPI table(s) checked are covered", fg="green")
        + " by the memreserve list"
        if doc["ok"]
        else click.style(
            "NOT OK" + ("" if n else ": nothing could be checked"), fg="red", bold=True
        )
    )
    return "\n".join(out) + "\n"
