"""PNG figures of a scenario result (matplotlib, Agg backend: no display needed).

* :func:`memory_map_figure`: one row per kernel generation over the machine's RAM (banks
  side by side, each scaled to its size), the ranges the kernel held coloured by what
  they were, memblock reservations as a strip under each row, the next kernel's image
  where the loader staged it, the LPI tables of earlier generations that are no longer
  the kernel's drawn hatched as stale, and every corrupted bit as a red marker in the
  row of the kernel that was running, filled with the colour of what the bit hit.
* :func:`timeline_figure`: MSIs sent, delivered and lost after each scenario step with
  boots, kexecs and kdumps marked, and delivered / lost per CPU over the whole scenario.
"""

from __future__ import annotations

import bisect
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.artist import Artist
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import MaxNLocator

__all__ = [
    "DPI",
    "KIND_COLOURS",
    "marker_groups",
    "memory_map_figure",
    "timeline_figure",
    "timeline_lost",
]

#: Colour of each memory kind (runner.memory_map "kind"), shared with the HTML legend.
KIND_COLOURS = {
    "image": "#4e79a7",
    "boot-data": "#ff9da7",
    "lpi-prop": "#f28e2b",
    "lpi-pend": "#e15759",
    "its": "#76b7b2",
    "memreserve": "#59a14f",
    "kexec": "#edc948",
    "page-cache": "#d9d9d9",
    "other": "#9c755f",
    "reserved": "#b07aa1",
    "free": "#ffffff",
}
#: Legend text of the kinds whose name alone would not say what they are.
_LEGEND = {
    "reserved": "memblock reserved",
    "kexec": "kexec: staged next kernel, crashkernel",
    "boot-data": "initrd, device tree",
}
_GAP = 0.02  # axis fraction between RAM banks
#: Resolution of every figure: small tables and markers stay legible when zoomed.
DPI = 150
#: Corrupted bits closer than this (axis fraction) share one marker, labelled with the count.
_MARKER_BUCKET = 0.004
_MIN_WIDTH = 0.002  # small tables stay visible


class _Axis:
    """Physical address -> x in [0, 1]: RAM banks side by side, each scaled to its size."""

    def __init__(self, ram: list[dict[str, int]]) -> None:
        self.banks = sorted((r["start"], r["size"]) for r in ram)
        total = sum(size for _, size in self.banks) or 1
        usable = 1 - _GAP * (len(self.banks) - 1)
        self.x0: list[float] = []
        x = 0.0
        for _, size in self.banks:
            self.x0.append(x)
            x += usable * size / total + _GAP
        self.scale = usable / total
        self.starts = [b for b, _ in self.banks]

    def x(self, addr: int) -> float | None:
        i = bisect.bisect_right(self.starts, addr) - 1
        if i < 0 or addr >= self.banks[i][0] + self.banks[i][1]:
            return None
        return self.x0[i] + (addr - self.banks[i][0]) * self.scale


def memory_map_figure(result: dict[str, Any], path: Path) -> None:
    """Write the memory map of every generation of ``result`` to ``path`` (PNG)."""
    gens = result["generations"]
    axis = _Axis(result["platform"]["ram"])
    fig, ax = plt.subplots(figsize=(12, 2.2 + 0.9 * max(1, len(gens))), dpi=DPI)
    for x0, (_, size) in zip(axis.x0, axis.banks, strict=True):
        ax.add_patch(
            Rectangle((x0, -0.5), size * axis.scale, len(gens), fc="#f7f7f7", ec="#bbbbbb")
        )
    earlier_tables: list[dict[str, Any]] = []
    for row, g in enumerate(gens):
        y = len(gens) - 1 - row
        held = {(m["start"], m["kind"]) for m in g["memory_map"]}
        for m in g["memory_map"]:
            _bar(ax, axis, m["start"], m["size"], y, KIND_COLOURS.get(m["kind"], "#999999"))
        for r in g["reserved"]:  # memblock reservations: a strip under the row
            _bar(ax, axis, r["start"], r["size"], y, KIND_COLOURS["reserved"], low=True)
        if row + 1 < len(gens) and gens[row + 1]["entry"] != "firmware":
            # where the loader staged the next kernel (image, initrd, DTB) before the jump
            for seg in _segments(gens[row + 1]):
                _bar(ax, axis, seg["addr"], seg["size"], y, KIND_COLOURS["kexec"])
        for t in earlier_tables:
            if (t["start"], t["kind"]) not in held:
                _bar(ax, axis, t["start"], t["size"], y, "none", hatch="////", edge="#e15759")
        earlier_tables += [m for m in g["memory_map"] if m["kind"] in ("lpi-prop", "lpi-pend")]
    _corruption_markers(ax, axis, result)
    ax.set_yticks(range(len(gens)))
    ax.set_yticklabels([_row_label(g) for g in reversed(gens)])
    starts = list(axis.x0)
    ends = [x0 + size * axis.scale for x0, (_, size) in zip(axis.x0, axis.banks, strict=True)]
    # bank starts below, last bytes above (as /proc/iomem prints ranges); a label close
    # to its neighbour moves one line out, so labels of small banks do not collide
    ax.set_xticks(starts)
    ax.set_xticklabels(_staggered(starts, [b for b, _ in axis.banks], below=True), fontsize=7)
    top = ax.secondary_xaxis("top")
    top.set_xticks(ends)
    top.set_xticklabels(
        _staggered(ends, [b + size - 1 for b, size in axis.banks], below=False), fontsize=7
    )
    ax.set_xlim(-0.005, 1.005)
    ax.set_ylim(-0.6, len(gens) - 0.4)
    ax.set_title(f"{result['name']}: physical memory per kernel generation", pad=22)
    shown = {m["kind"] for g in gens for m in g["memory_map"]} | {"reserved"}
    if any(g["entry"] != "firmware" for g in gens):
        shown.add("kexec")
    handles: list[Artist] = [
        Patch(fc=c, ec="#999999", label=_LEGEND.get(k, k))
        for k, c in KIND_COLOURS.items()
        if k in shown
    ]
    handles.append(Patch(fc="none", ec="#e15759", hatch="////", label="stale LPI table"))
    handles.append(
        Line2D([], [], marker="v", mfc="#ffffff", mec="#d62728", ls="", label="corrupted bit(s)")
    )
    fig.legend(handles=handles, loc="lower center", ncol=6, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.06 + 0.02 * (len(handles) // 6), 1, 1))
    fig.savefig(path, format="png")
    plt.close(fig)


#: Tick labels closer than this (axis fraction) are staggered.
_LABEL_ROOM = 0.09


def _staggered(xs: list[float], addrs: list[int], *, below: bool) -> list[str]:
    out: list[str] = []
    last = -1.0
    shifted = False
    for x, a in zip(xs, addrs, strict=True):
        shifted = x - last < _LABEL_ROOM and not shifted
        text = f"{a:#x}"
        out.append(("\n" + text if below else text + "\n") if shifted else text)
        last = x
    return out


def _row_label(g: dict[str, Any]) -> str:
    os_name = g.get("os", "Linux")
    entry = "firmware" if g["entry"] == "firmware" else f"by {g['entry']}"
    return f"gen {g['index']}: {os_name} {g['kernel']} ({entry})"


def marker_groups(result: dict[str, Any]) -> list[tuple[int, float, str, int]]:
    """Corrupted bits as drawn: ``(generation, x, kind hit, bits)`` per marker, bits
    that would overlap sharing one marker."""
    gens = result["generations"]
    axis = _Axis(result["platform"]["ram"])
    groups: dict[tuple[int, int], list[Any]] = {}
    for e in result["corruption"]["events"]:
        x = axis.x(e["addr"])
        if x is None or e["generation"] >= len(gens):
            continue
        key = (e["generation"], round(x / _MARKER_BUCKET))
        if key in groups:
            groups[key][3] += 1
        else:
            groups[key] = [e["generation"], x, _kind_at(gens[e["generation"]], e["addr"]), 1]
    return [(g, x, k, n) for g, x, k, n in groups.values()]


def _corruption_markers(ax: Any, axis: _Axis, result: dict[str, Any]) -> None:
    """A red marker per corrupted bit (filled with the colour of what it hit); bits too
    close to tell apart share a marker with their count beside it."""
    ngens = len(result["generations"])
    for gen, x, kind, bits in marker_groups(result):
        y = ngens - 1 - gen
        ax.plot(
            [x],
            [y + 0.32],
            marker="v",
            markersize=8,
            zorder=5,
            mfc=KIND_COLOURS.get(kind, "#ffffff"),
            mec="#d62728",
            mew=1.5,
        )
        if bits > 1:
            ax.annotate(
                f"{bits} bits",
                (x, y + 0.32),
                xytext=(4, 4),
                textcoords="offset points",
                fontsize=7,
                color="#d62728",
                zorder=6,
            )


def _bar(
    ax: Any,
    axis: _Axis,
    start: int,
    size: int,
    y: int,
    colour: str,
    *,
    hatch: str | None = None,
    edge: str = "none",
    low: bool = False,
) -> None:
    x = axis.x(start)
    if x is None:
        return
    width = max(size * axis.scale, _MIN_WIDTH)
    y0, height = (y - 0.42, 0.08) if low else (y - 0.3, 0.6)
    ax.add_patch(Rectangle((x, y0), width, height, fc=colour, ec=edge, hatch=hatch, lw=0.6))


def _segments(gen: dict[str, Any]) -> list[dict[str, int]]:
    """The kexec segments the loader placed for ``gen`` (its image when none recorded)."""
    segs = gen.get("segments")
    if not segs:
        return [gen["image"]]
    return [v for k, v in segs.items() if k != "loader" and isinstance(v, dict)]


def _kind_at(gen: dict[str, Any], addr: int) -> str:
    """What the memory at ``addr`` was in ``gen`` ("free" if the kernel held nothing)."""
    for m in gen["memory_map"]:
        if m["start"] <= addr < m["start"] + m["size"]:
            return str(m["kind"])
    return "free"


def timeline_lost(steps: list[dict[str, Any]]) -> list[int]:
    """MSIs lost after each step, counting those stuck pending behind tables no kernel
    reads (the books only call them lost at the end; older documents lack "stuck")."""
    return [t["lost"] + t.get("stuck", 0) for t in steps]


def timeline_figure(result: dict[str, Any], path: Path) -> None:
    """Write the scenario's timeline (MSIs delivered and lost after each step, with boots,
    kexecs and kdumps marked) and MSIs per CPU of ``result`` to ``path`` (PNG)."""
    msis = result["msis"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2), dpi=DPI)
    steps = result.get("timeline") or []
    xs = [t["step"] for t in steps]
    # sent wide and light underneath: it stays visible where delivered runs along it
    left.plot(xs, [t["sent"] for t in steps], color="#4e79a7", lw=5, alpha=0.45, label="sent")
    left.plot(xs, [t["delivered"] for t in steps], color="#59a14f", marker=".", label="delivered")
    left.plot(
        xs, timeline_lost(steps), color="#e15759", marker=".", label="lost (incl. stuck pending)"
    )
    for t in steps:
        if t["action"] in ("boot", "kexec", "kdump"):
            left.axvline(t["step"], color="#999999", ls="--", lw=0.8)
            left.text(  # above the plot, so no label sits on a curve
                t["step"],
                1.01,
                f"{t['action']} {t['what']}"
                + ("" if t.get("outcome", "done") == "done" else f" ({t['outcome']})"),
                transform=left.get_xaxis_transform(),
                rotation=35,
                ha="left",
                va="bottom",
                fontsize=7,
                color="#555555",
            )
    left.set_xlabel("step (repeats unrolled)")
    left.xaxis.set_major_locator(MaxNLocator(integer=True))
    left.set_ylabel("MSIs (cumulative)")
    # cumulative curves rise to the right: the upper left stays free for the legend
    left.legend(fontsize=8, loc="upper left")
    cpus = sorted(
        {int(c) for c in msis["delivered_per_cpu"]} | {int(c) for c in msis["lost_per_cpu"]}
    )
    d = [msis["delivered_per_cpu"].get(str(c), msis["delivered_per_cpu"].get(c, 0)) for c in cpus]
    lo = [msis["lost_per_cpu"].get(str(c), msis["lost_per_cpu"].get(c, 0)) for c in cpus]
    right.bar(cpus, d, color="#59a14f", label="delivered")
    right.bar(cpus, lo, bottom=d, color="#e15759", label="lost")
    right.set_ylim(0, 1.08 * max([a + b for a, b in zip(d, lo, strict=True)], default=1) or 1)
    right.set_xlabel("CPU")
    right.xaxis.set_major_locator(MaxNLocator(integer=True))
    right.set_title(f"per CPU: {msis['delivered']} delivered, {msis['lost']} lost")
    right.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
