"""Throughput of exploration campaigns on a 4-CPU platform (qemu-virt).

Three figures: five-step histories checked per second on one core (generation, play and
the invariants after every step, no shrinking); a whole campaign on one worker (with
shrinking of the failures and results.jsonl); the same campaign on every core.
"""

from __future__ import annotations

import os
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

PLATFORM = "qemu-virt"
HISTORIES = 200
BUDGET = 400


def five_step_rate() -> tuple[float, int]:
    campaign = Campaign(seed=1, budget=HISTORIES, platforms=(PLATFORM,), max_steps=5)
    histories = []
    index = 0
    while len(histories) < HISTORIES:
        h = generate(campaign, index)
        index += 1
        if len(h["steps"]) == 5:
            histories.append(h)
    t = time.perf_counter()
    failed = sum(check_scenario(parse_history(h)) is not None for h in histories)
    return len(histories) / (time.perf_counter() - t), failed


def campaign_rate(workers: int) -> tuple[float, int]:
    campaign = Campaign(seed=1, budget=BUDGET, platforms=(PLATFORM,), max_steps=5)
    with tempfile.TemporaryDirectory() as out:
        t = time.perf_counter()
        doc = run_campaign(campaign, Path(out), workers=workers, quiet=True)
        return BUDGET / (time.perf_counter() - t), doc["failures"]


def main() -> None:
    rate, failed = five_step_rate()
    print(f"five-step histories, checked, 1 core    {rate:8.1f} /s  ({failed} failed)")
    rate, failed = campaign_rate(1)
    print(f"campaign --max-steps 5, 1 worker        {rate:8.1f} /s  ({failed} failed, shrunk)")
    cores = os.cpu_count() or 1
    rate, failed = campaign_rate(cores)
    print(
        f"campaign --max-steps 5, {cores} workers       {rate:8.1f} /s  ({failed} failed, shrunk)"
    )


if __name__ == "__main__":
    main()
