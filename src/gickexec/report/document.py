"""Result documents read back for ``gickexec report``: bounded before anything renders.

A saved ``gickexec run --json`` document may have been edited or produced elsewhere.  The
renderers trust its shape (a wrong one is a KeyError/TypeError the command line turns
into a clear error) but not its size: matplotlib converts numbers to C ``long`` and
draws every range, so a count of 2^80 crashes it and tens of thousands of ranges,
timeline points or generations take minutes.  :func:`bound_results` refuses numbers no
result holds and cuts long lists to what a page can show, saying what it left out.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

__all__ = [
    "MAX_DEPTH",
    "MAX_DRAWN",
    "MAX_EVENTS",
    "MAX_GENERATIONS",
    "MAX_LOG_LINES",
    "MAX_SCENARIOS",
    "MAX_TIMELINE",
    "ResultDocumentError",
    "bound_results",
]

#: Numbers in a result are addresses (< 2^64) and counts; nothing is below -2^63.
_INT_MIN, _INT_LIMIT = -(2**63), 2**64
#: Counts matplotlib draws as bar heights and line points must fit a C long.
_COUNT_LIMIT = 2**63
#: A result nests about six levels deep; deeper is no result document.
MAX_DEPTH = 32
MAX_SCENARIOS = 64
MAX_GENERATIONS = 64
#: Memory-map ranges and memblock reservations drawn per figure (matplotlib takes about
#: 1 ms a rectangle; the built-in scenarios draw up to 4214).  A document with more has
#: each generation's lists cut to an equal share, neighbouring ranges drawn merged.
MAX_DRAWN = 8192
MAX_LOG_LINES = 4096
#: Timeline points drawn; a longer timeline is sampled evenly, its last point kept.
MAX_TIMELINE = 500
#: Corrupted bits marked in the memory map (the count stays complete).
MAX_EVENTS = 512
_MAX_CPUS = 1024


_DRAWN_KEYS = ("memory_map", "reserved")


class ResultDocumentError(ValueError):
    """The document is no result of ``gickexec run --json`` (message says where)."""


def bound_results(scenarios: list[Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """``scenarios`` checked and cut to the bounds above; the notes say what was cut."""
    _check_values(scenarios)
    notes: list[str] = []
    if len(scenarios) > MAX_SCENARIOS:
        notes.append(f"{len(scenarios)} scenarios: the first {MAX_SCENARIOS} are shown")
        scenarios = scenarios[:MAX_SCENARIOS]
    out = []
    for i, sc in enumerate(scenarios):
        if not isinstance(sc, dict):
            raise ResultDocumentError(f"scenarios[{i}] is not an object")
        out.append(_bound_scenario(sc, notes))
    return out, notes


def _check_values(doc: Any) -> None:
    """Every integer within 64 bits, nesting at most :data:`MAX_DEPTH` (iteratively: a
    hostile document must not exhaust the stack here either)."""
    # One iterator over the child containers of each open container, so memory stays
    # bounded by the depth; each container's numbers are checked in one comprehension.
    stack: list[tuple[Iterator[tuple[object, Any]], str]] = [(iter([("scenarios", doc)]), "")]
    while stack:
        items, parent = stack[-1]
        step = next(items, None)
        if step is None:
            stack.pop()
            continue
        key, value = step
        here = _path(parent, key)
        if len(stack) > MAX_DEPTH:
            raise ResultDocumentError(f"{here}: nested more than {MAX_DEPTH} deep")
        keys = list(value) if isinstance(value, dict) else range(len(value))
        values = list(value.values()) if isinstance(value, dict) else value
        numbers = [v for v in values if type(v) is int]  # bool is no int here
        if numbers and (min(numbers) < _INT_MIN or max(numbers) >= _INT_LIMIT):
            k, v = next(
                (k, v)
                for k, v in zip(keys, values, strict=True)
                if type(v) is int and not _INT_MIN <= v < _INT_LIMIT
            )
            raise ResultDocumentError(
                f"{_path(here, k)}: a {v.bit_length()}-bit integer is no address or count"
            )
        children = [i for i, v in enumerate(values) if type(v) is dict or type(v) is list]
        stack.append((iter([(keys[i], values[i]) for i in children]), here))


def _path(parent: str, key: object) -> str:
    if isinstance(key, int):
        return f"{parent}[{key}]"
    return f"{parent}.{str(key)[:40]}" if parent else str(key)[:40]


def _count(value: Any, path: str) -> None:
    if isinstance(value, int) and not -_COUNT_LIMIT <= value < _COUNT_LIMIT:
        raise ResultDocumentError(f"{path}: {value:#x} is beyond any count of MSIs")


def _cut(items: list[Any], limit: int, what: str, notes: list[str]) -> list[Any]:
    if len(items) <= limit:
        return items
    notes.append(f"{what}: {len(items)}, the first {limit} shown")
    return items[:limit]


def _bound_scenario(sc: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    name = str(sc.get("name", "?"))[:80]
    sc = dict(sc)
    gens = sc.get("generations")
    if isinstance(gens, list):
        gens = _cut(gens, MAX_GENERATIONS, f"{name}: generations", notes)
        drawn = sum(
            len(ranges)
            for g in gens
            if isinstance(g, dict)
            for ranges in (g.get(k) for k in _DRAWN_KEYS)
            if isinstance(ranges, list)
        )
        share = MAX_DRAWN // (2 * len(gens)) if drawn > MAX_DRAWN else MAX_DRAWN
        sc["generations"] = [
            _bound_generation(g, f"{name}: gen {i}", share, notes) for i, g in enumerate(gens)
        ]
    timeline = sc.get("timeline")
    if isinstance(timeline, list) and len(timeline) > MAX_TIMELINE:
        every = -(-len(timeline) // MAX_TIMELINE)
        sampled = timeline[::every]
        if sampled[-1] is not timeline[-1]:
            sampled.append(timeline[-1])
        notes.append(f"{name}: {len(timeline)} timeline points, every {every}th drawn")
        sc["timeline"] = sampled
    for t in sc.get("timeline") or []:
        if isinstance(t, dict):
            for k in ("step", "sent", "delivered", "lost"):
                _count(t.get(k), f"{name}: timeline.{k}")
    msis = sc.get("msis")
    if isinstance(msis, dict):
        for k in ("delivered_per_cpu", "lost_per_cpu"):
            per_cpu = msis.get(k)
            if isinstance(per_cpu, dict):
                if len(per_cpu) > _MAX_CPUS:
                    raise ResultDocumentError(f"{name}: msis.{k} has more than {_MAX_CPUS} CPUs")
                for cpu, n in per_cpu.items():
                    _count(n, f"{name}: msis.{k}.{str(cpu)[:20]}")
    for key, inner, limit, what in (
        ("corruption", "events", MAX_EVENTS, "corruption events"),
        ("memreserve", "list", MAX_LOG_LINES, "memreserve nodes"),
    ):
        outer = sc.get(key)
        if isinstance(outer, dict) and isinstance(outer.get(inner), list):
            sc[key] = {**outer, inner: _cut(outer[inner], limit, f"{name}: {what}", notes)}
    return sc


def _bound_generation(g: Any, what: str, share: int, notes: list[str]) -> Any:
    if not isinstance(g, dict):
        return g
    g = dict(g)
    if isinstance(g.get("log"), list):
        g["log"] = _cut(g["log"], MAX_LOG_LINES, f"{what} log lines", notes)
    for key in _DRAWN_KEYS:
        ranges = g.get(key)
        if isinstance(ranges, list) and len(ranges) > share:
            g[key] = _merged(ranges, share)
            notes.append(f"{what} {key}: {len(ranges)} ranges drawn as {len(g[key])} merged ones")
    return g


def _merged(ranges: list[Any], count: int) -> list[Any]:
    """``ranges`` (memory-map objects or ``[start, size]`` pairs) in address order, merged
    into ``count`` runs of neighbours; a run takes the attributes of its largest member."""

    def span(r: Any) -> tuple[int, int]:
        start, size = (r["start"], r["size"]) if isinstance(r, dict) else (r[0], r[1])
        return int(start), int(size)

    ordered = sorted(ranges, key=lambda r: span(r)[0])
    per = -(-len(ordered) // count)
    out: list[Any] = []
    for i in range(0, len(ordered), per):
        group = ordered[i : i + per]
        lo = span(group[0])[0]
        hi = max(a + b for a, b in map(span, group))
        biggest = max(group, key=lambda r: span(r)[1])
        if isinstance(biggest, dict):
            out.append({**biggest, "start": lo, "size": hi - lo, "label": f"{len(group)} ranges"})
        else:
            out.append([lo, hi - lo])
    return out
