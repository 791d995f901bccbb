"""A self-contained HTML report (jinja2, no JavaScript) with PNG figures.

``write_report(results, outdir)`` writes ``index.html`` plus two PNGs per scenario into
``outdir``.  Everything is rendered into a temporary directory first and then moved into
place file by file with ``os.replace``, so a reader never sees half a page.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2

from gickexec.report.text import (
    expected_text,
    line_class,
    render_proc_interrupts,
    step_remarks,
)

__all__ = ["REPORT_TITLE", "render_iomem", "write_report"]

REPORT_TITLE = "gickexec report"
#: Events listed in the verdict before the rest are counted.
MAX_EVENTS = 20


def render_iomem(result: dict[str, Any], gen: dict[str, Any]) -> str:
    """A /proc/iomem-style view of one generation: RAM, the kernel image, reservations."""
    lines: list[str] = []
    image = (gen["image"]["addr"], gen["image"]["size"])
    for r in sorted(result["platform"]["ram"], key=lambda r: r["start"]):
        lo, hi = r["start"], r["start"] + r["size"]
        lines.append(f"{lo:08x}-{hi - 1:08x} : System RAM")
        nested = [
            (r["start"], r["size"], "reserved") for r in gen["reserved"] if lo <= r["start"] < hi
        ]
        if lo <= image[0] < hi and image[1]:
            nested.append((image[0], image[1], "Kernel image"))
        for a, s, what in sorted(nested):
            lines.append(f"  {a:08x}-{a + s - 1:08x} : {what}")
    return "\n".join(lines)


def _memreserve_line(result: dict[str, Any]) -> str:
    mr = result["memreserve"]
    if not mr["present"]:
        return "efi: no MEMRESERVE table"
    out = [f"efi: MEMRESERVE={mr['root']:#x}  ({mr['nodes']} node(s), {mr['entries']} entries)"]
    for node in mr.get("list", []):
        out.append(f"  node {node['addr']:#x}: count {node['count']} of {node['size']}")
        out += [f"    [{e['addr']:#x}-{e['addr'] + e['size'] - 1:#x}]" for e in node["entries"]]
    if mr.get("error"):
        out.append(f"  walk stopped: {mr['error']}")
    return "\n".join(out)


def _scenario_view(i: int, r: dict[str, Any]) -> dict[str, Any]:
    events = r["corruption"]["events"]
    return {
        "r": r,
        "anchor": f"s{i}",
        "map_png": f"s{i}-memory-map.png",
        "timeline_png": f"s{i}-timeline.png",
        "taints": ", ".join(f"gen{g['index']} {g['taints'] or '-'}" for g in r["generations"]),
        "events": [{**e, "addr": f"{e['addr']:#x}"} for e in events[:MAX_EVENTS]],
        "more_events": max(0, r["corruption"]["bits"] - MAX_EVENTS),
        "logs": [[(line, line_class(line)) for line in g["log"]] for g in r["generations"]],
        "iomem": [render_iomem(r, g) for g in r["generations"]],
        "interrupts": [
            f"/proc/interrupts, generation {g['index']}\n" + "\n".join(render_proc_interrupts(g))
            for g in r["generations"]
        ],
        "memreserve_line": _memreserve_line(r),
        "expectations": [{**c, "expected": expected_text(c)} for c in r["expectations"]],
        "health_kinds": ", ".join(dict.fromkeys(p["kind"] for p in r["health"]["problems"])),
        "step_notes": [step_remarks(r, g["index"]) for g in r["generations"]],
    }


#: What a report writes besides index.html: figures named after the scenario's position.
_FIGURE = re.compile(r"s\d+-(memory-map|timeline)\.png")


def write_report(
    results: list[dict[str, Any]],
    outdir: Path,
    progress: Callable[[int, int, str], None] | None = None,
) -> Path:
    """Render ``results`` (run result documents) into ``outdir``; returns index.html.

    Figures an earlier report left there for scenarios this one does not have are
    removed, so the folder holds one consistent report.  ``progress(done, total, name)``
    is called after each scenario's figures."""
    # matplotlib takes half a second to import: only reports pay for it.
    from gickexec.report.figures import memory_map_figure, timeline_figure  # noqa: PLC0415

    outdir.mkdir(parents=True, exist_ok=True)
    views = [_scenario_view(i, r) for i, r in enumerate(results)]
    template = resources.files("gickexec.report").joinpath("templates/report.html.j2")
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    page = env.from_string(template.read_text(encoding="utf-8")).render(
        title=REPORT_TITLE + ": " + ", ".join(r["name"] for r in results),
        scenarios=views,
        passed=sum(r["ok"] for r in results),
        failed=sum(not r["ok"] for r in results),
        max_gens=max((len(r["generations"]) for r in results), default=1),
    )
    tmp = Path(tempfile.mkdtemp(dir=outdir, prefix=".report-"))
    try:
        for n, v in enumerate(views, 1):
            memory_map_figure(v["r"], tmp / v["map_png"])
            timeline_figure(v["r"], tmp / v["timeline_png"])
            if progress is not None:
                progress(n, len(views), v["r"]["name"])
        (tmp / "index.html").write_text(page, encoding="utf-8")
        for f in sorted(tmp.iterdir(), key=lambda p: p.name == "index.html"):
            os.replace(f, outdir / f.name)  # the page last: its figures are there first
        wanted = {name for v in views for name in (v["map_png"], v["timeline_png"])}
        for old in outdir.iterdir():
            if _FIGURE.fullmatch(old.name) and old.name not in wanted:
                old.unlink()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return outdir / "index.html"
