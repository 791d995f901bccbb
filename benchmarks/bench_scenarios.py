"""Median wall time of each built-in scenario (and of the whole default run)."""

from __future__ import annotations

import statistics
import time

from gickexec.scenario.builtin import builtin_names, load_builtin
from gickexec.scenario.runner import run_scenario

REPEATS = 5


def main() -> None:
    total = 0.0
    for name in builtin_names():
        sc = load_builtin(name)
        times = []
        for _ in range(REPEATS):
            t = time.perf_counter()
            run_scenario(sc)
            times.append(time.perf_counter() - t)
        med = statistics.median(times)
        total += med
        print(f"{name:<22} {med * 1000:8.1f} ms")
    print(f"{'all built-in':<22} {total * 1000:8.1f} ms")


if __name__ == "__main__":
    main()
