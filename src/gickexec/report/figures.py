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

__all__ = ["KIND_COLOURS", "memory_map_figure", "timeline_figure"]

#: Colour of each memory kind (runner.memory_map "kind"), shared with the HTML legend.
KIND_COLOURS = {
    "image": "#4e79a7",
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
_GAP = 0.02  # axis fraction between RAM banks
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
    fig, ax = plt.subplots(figsize=(12, 1.2 + 0.9 * max(1, len(gens))), dpi=100)
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
    for e in result["corruption"]["events"]:
        x = axis.x(e["addr"])
        if x is not None and e["generation"] < len(gens):
            y = len(gens) - 1 - e["generation"]
            kind = _kind_at(gens[e["generation"]], e["addr"])
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
    ax.set_yticks(range(len(gens)))
    ax.set_yticklabels([f"gen {g['index']}: {g['kernel']} ({g['entry']})" for g in reversed(gens)])
    ax.set_xticks([*axis.x0])
    ax.set_xticklabels([f"{b:#x}" for b, _ in axis.banks], fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.6, len(gens) - 0.4)
    ax.set_title(f"{result['name']}: physical memory per kernel generation")
    handles: list[Artist] = [
        Patch(fc=c, ec="#999999", label="memblock reserved" if k == "reserved" else k)
        for k, c in KIND_COLOURS.items()
    ]
    handles.append(Patch(fc="none", ec="#e15759", hatch="////", label="stale LPI table"))
    handles.append(
        Line2D([], [], marker="v", mfc="#ffffff", mec="#d62728", ls="", label="corrupted bit")
    )
    ax.legend(
        handles=handles,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.12),
        ncol=6,
        fontsize=8,
        frameon=False,
    )
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


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


def timeline_figure(result: dict[str, Any], path: Path) -> None:
    """Write the scenario's timeline (MSIs delivered and lost after each step, with boots,
    kexecs and kdumps marked) and MSIs per CPU of ``result`` to ``path`` (PNG)."""
    msis = result["msis"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 3.8), dpi=100)
    steps = result.get("timeline") or []
    xs = [t["step"] for t in steps]
    left.plot(xs, [t["sent"] for t in steps], color="#4e79a7", marker=".", label="sent")
    left.plot(xs, [t["delivered"] for t in steps], color="#59a14f", marker=".", label="delivered")
    left.plot(xs, [t["lost"] for t in steps], color="#e15759", marker=".", label="lost")
    top = max([t["sent"] for t in steps], default=1) or 1
    for t in steps:
        if t["action"] in ("boot", "kexec", "kdump"):
            left.axvline(t["step"], color="#999999", ls="--", lw=0.8)
            left.text(
                t["step"],
                top,
                f" {t['action']} {t['what']}",
                rotation=90,
                va="top",
                fontsize=7,
                color="#555555",
            )
    left.set_xlabel("step (repeats unrolled)")
    left.xaxis.set_major_locator(MaxNLocator(integer=True))
    left.set_ylabel("MSIs (cumulative)")
    left.set_title("timeline: boots, kexecs/kdumps and traffic")
    left.legend(fontsize=8, loc="center left")
    cpus = sorted(
        {int(c) for c in msis["delivered_per_cpu"]} | {int(c) for c in msis["lost_per_cpu"]}
    )
    d = [msis["delivered_per_cpu"].get(str(c), msis["delivered_per_cpu"].get(c, 0)) for c in cpus]
    lo = [msis["lost_per_cpu"].get(str(c), msis["lost_per_cpu"].get(c, 0)) for c in cpus]
    right.bar(cpus, d, color="#59a14f", label="delivered")
    right.bar(cpus, lo, bottom=d, color="#e15759", label="lost")
    right.set_xlabel("CPU")
    right.set_title(f"per CPU: {msis['delivered']} delivered, {msis['lost']} lost")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
