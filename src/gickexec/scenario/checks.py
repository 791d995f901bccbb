"""Judging a result document against a scenario's ``[expect]`` table."""

from __future__ import annotations

from typing import Any

from gickexec.scenario.schema import Expect, PerGen, Range

__all__ = ["evaluate"]


def _range_doc(r: Range) -> dict[str, int | None]:
    """A declared range as the result document holds it (None: unbounded that side)."""
    lo, hi = r
    return {"min": lo, "max": hi}


def _in_range(value: int, r: Range) -> bool:
    lo, hi = r
    return (lo is None or value >= lo) and (hi is None or value <= hi)


def _expected_list(spec: PerGen, n: int) -> list[bool]:
    if isinstance(spec, bool):
        return [spec] * n
    if len(spec) == 3 and spec[0] == "first-rest":
        return [bool(spec[1])] + [bool(spec[2])] * (n - 1)
    return [bool(x) for x in spec]


def evaluate(expect: Expect, result: dict[str, Any]) -> list[dict[str, Any]]:
    """One record per declared expectation: what, expected, actual, ok."""
    out: list[dict[str, Any]] = []

    def add(check: str, expected: Any, actual: Any, ok: bool) -> None:
        out.append({"check": check, "expected": expected, "actual": actual, "ok": ok})

    msis = result["msis"]
    numeric = {
        "msis_sent": msis["sent"],
        "msis_delivered": msis["delivered"],
        "msis_lost": msis["lost"],
        "corrupted_bits": result["corruption"]["bits"],
        "memreserve_nodes": result["memreserve"]["nodes"],
        "memreserve_entries": result["memreserve"]["entries"],
    }
    for key, actual in numeric.items():
        r: Range | None = getattr(expect, key)
        if r is not None:
            add(key, _range_doc(r), actual, _in_range(actual, r))
    gens = result["generations"]
    for key in ("tainted", "reused_tables", "crashed"):
        spec: PerGen | None = getattr(expect, key)
        if spec is None:
            continue
        want = _expected_list(spec, len(gens))
        have = [bool(g[key]) for g in gens]
        add(key, want, have, want == have)
    if expect.memreserve_stable is not None:
        counts = [g["memreserve"]["entries"] if g["memreserve"] else None for g in gens]
        stable = len(counts) > 1 and counts[0] is not None and all(c == counts[0] for c in counts)
        add(
            "memreserve_stable",
            expect.memreserve_stable,
            counts,
            stable == expect.memreserve_stable,
        )
    lines = [line for g in gens for line in g["log"]]
    for text in expect.log_contains:
        add(
            "log_contains",
            text,
            any(text in line for line in lines),
            any(text in line for line in lines),
        )
    for text in expect.log_absent:
        found = any(text in line for line in lines)
        add("log_absent", text, not found, not found)
    return out
