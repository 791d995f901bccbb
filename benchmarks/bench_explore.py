"""Throughput of exploration campaigns on a 4-CPU platform (rk3566-dt; another preset as
the first argument, e.g. qemu-virt, which mirrors the real runs with 2 CPUs).

Three figures: five-step histories checked per second on one core (generation, play and
the invariants after every step, no shrinking); a whole campaign on one worker (with
shrinking of the failures and results.jsonl); the same campaign on every core.  The
one-process figures are also given per CPU second, which a busy machine does not skew.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from gickexec.scenario.explore import (
    Campaign,
    check_scenario,
    generate,
    parse_history,
    run_campaign,
)

PLATFORM = sys.argv[1] if len(sys.argv) > 1 else "rk3566-dt"
HISTORIES = 200
BUDGET = 400


def five_step_rate() -> tuple[float, float, int]:
    campaign = Campaign(seed=1, budget=HISTORIES, platforms=(PLATFORM,), max_steps=5)
    histories = []
    index = 0
    while len(histories) < HISTORIES:
        h = generate(campaign, index)
        index += 1
        if len(h["steps"]) == 5:
            histories.append(h)
    t, cpu = time.perf_counter(), time.process_time()
    failed = sum(check_scenario(parse_history(h)) is not None for h in histories)
    n = len(histories)
    return n / (time.perf_counter() - t), n / (time.process_time() - cpu), failed


def campaign_rate(workers: int) -> tuple[float, float, int]:
    """Histories per wall second, per CPU second of this process (meaningful with one
    worker only), and failures."""
    campaign = Campaign(seed=1, budget=BUDGET, platforms=(PLATFORM,), max_steps=5)
    with tempfile.TemporaryDirectory() as out:
        t, cpu = time.perf_counter(), time.process_time()
        doc = run_campaign(campaign, Path(out), workers=workers, quiet=True)
        wall, used = time.perf_counter() - t, time.process_time() - cpu
        return BUDGET / wall, BUDGET / used, doc["failures"]


def main() -> None:
    wall, cpu, failed = five_step_rate()
    print(
        f"five-step histories checked, 1 core   {wall:7.1f}/s  {cpu:7.1f}/CPU-s  ({failed} failed)"
    )
    wall, cpu, failed = campaign_rate(1)
    print(
        f"campaign --max-steps 5, 1 worker      {wall:7.1f}/s  {cpu:7.1f}/CPU-s  ({failed} failed)"
    )
    cores = os.cpu_count() or 1
    wall, _, failed = campaign_rate(cores)
    print(f"campaign --max-steps 5, {cores} workers     {wall:7.1f}/s  ({failed} failed)")


if __name__ == "__main__":
    main()
