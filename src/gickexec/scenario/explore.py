"""Exploration campaigns: random kexec/kdump histories, checked after every step.

A campaign is a pure function of its :class:`Campaign` settings: history ``i`` is generated
from ``(seed, i)`` alone, played with :func:`gickexec.scenario.runner.play`, and checked
after each step against the invariants in :data:`INVARIANTS`.  A failing history is shrunk
(delta debugging over its steps, then over devices, CPUs and step parameters) to a
minimal history with the same *signature*, a stable, address-free sentence naming the
broken invariant, the kernel concerned and the cause.  Minimal histories are scenario
TOML files that ``gickexec run`` replays.

Results stream to ``results.jsonl`` in history order whatever the number of workers, so
the same settings give the same files; ``resume`` continues a killed campaign from the
histories already written.  docs/explore.md describes the invariants and the summary.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

from gickexec.arch.gicv3 import LPI_INTID_BASE
from gickexec.hw.platform import PLATFORMS
from gickexec.kernel.kexec import LOADERS
from gickexec.kernel.profiles import PROFILES
from gickexec.scenario.runner import play
from gickexec.scenario.schema import Scenario, ScenarioError, Step, parse_scenario
from gickexec.scenario.world import World

__all__ = [
    "DEFAULT_PLATFORMS",
    "INVARIANTS",
    "Campaign",
    "ExploreError",
    "Failure",
    "Progress",
    "check_scenario",
    "generate",
    "history_toml",
    "parse_history",
    "run_batch",
    "run_campaign",
    "run_history",
    "shrink",
    "signature_id",
    "summary_text",
]

#: name -> what it demands, in the order they are checked after each step (the first
#: broken one names the failure; docs/explore.md says more)
INVARIANTS: dict[str, str] = {
    "uncovered-table": (
        "every LPI table the GIC still uses after a kexec or kdump is reserved by the "
        "next kernel (or outside its memory)"
    ),
    "unasked-crash": "no kernel dies unless the history panicked it",
    "gic-write": "the GIC writes only inside the tables the kernel in charge gave it",
    "msi-lost": "every MSI sent to a vector the running kernel has set up is delivered",
    "memreserve-bounded": (
        "the memreserve list walks cleanly and holds at most 2 x (CPUs + 1) entries"
    ),
}

DEFAULT_PLATFORMS = ("efi-server-8", "qemu-virt", "kvm-guest", "rk3566-dt")
RESULTS = "results.jsonl"
SUMMARY = "summary.json"
CAMPAIGN = "campaign.json"
REPRODUCERS = "reproducers"
#: histories per task handed to a worker: big enough to amortise the hand-off
BATCH = 8
#: results.jsonl is flushed after every line and fsync()ed at most this often (seconds)
FSYNC_INTERVAL = 1.0
#: accepted one-change simplifications per shrink (each makes the history smaller)
MAX_SIMPLIFICATIONS = 64
_CRASHKERNEL = "crashkernel=256M"
#: seconds to wait for a Dask scheduler before giving up
DASK_CONNECT_TIMEOUT = 30.0

Boot = Literal["efi", "dt"]
History = dict[str, Any]


class ExploreError(Exception):
    """Settings or an output directory the campaign cannot use; the message says why."""


@dataclass(frozen=True, slots=True)
class Campaign:
    """What a campaign explores; with ``budget``, everything its results depend on."""

    seed: int = 0
    budget: int = 100
    platforms: tuple[str, ...] = DEFAULT_PLATFORMS
    kernels: tuple[str, ...] = tuple(PROFILES)
    #: boot paths to draw from; empty: each platform's own firmware
    boots: tuple[Boot, ...] = ()
    max_steps: int = 6
    invariants: tuple[str, ...] = tuple(INVARIANTS)

    def __post_init__(self) -> None:
        for given, known, what in (
            (self.platforms, PLATFORMS, "platform"),
            (self.kernels, PROFILES, "kernel profile"),
            (self.invariants, INVARIANTS, "invariant"),
        ):
            bad = [n for n in given if n not in known]
            if bad or not given:
                raise ExploreError(
                    f"unknown {what} {', '.join(bad) or '(none given)'} (known: {', '.join(known)})"
                )
        if not any(PROFILES[k].kind == "linux" for k in self.kernels):
            raise ExploreError("--kernels needs at least one Linux profile to boot first")
        if any(b not in ("efi", "dt") for b in self.boots):
            raise ExploreError(f"unknown boot path in {self.boots} (known: efi, dt)")
        if not 2 <= self.max_steps <= 64:
            raise ExploreError(f"--max-steps {self.max_steps}: must be 2..64")
        if self.budget < 1:
            raise ExploreError(f"--budget {self.budget}: must be at least 1")

    def as_dict(self) -> dict[str, Any]:
        """The settings as JSON has them (lists, not tuples)."""
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }


@dataclass(frozen=True, slots=True)
class Failure:
    """The first broken invariant of a history."""

    invariant: str
    signature: str
    step: int
    message: str
    #: an ``[expect]`` table that the history, ended after ``step``, does not meet
    expect: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False)


@dataclass(frozen=True, slots=True)
class _Found:
    message: str
    signature: str
    expect: dict[str, Any]


# -- generation --------------------------------------------------------------------------


def generate(campaign: Campaign, index: int) -> History:
    """History ``index`` of ``campaign``: a function of the seed and the index only."""
    rng = random.Random(f"gickexec-explore:{campaign.seed}:{index}")
    platform = rng.choice(campaign.platforms)
    cpus = PLATFORMS[platform].cpus
    linux = [k for k in campaign.kernels if PROFILES[k].kind == "linux"]
    devices = [
        {
            "name": f"nic{i}",
            "device_id": 0x100 + i,
            "vectors": rng.choice((1, 2, 4, 8)),
            "shutdown_hook": rng.random() < 0.85,
        }
        for i in range(rng.choice((1, 1, 2)))
    ]
    history: History = {
        "name": f"explore-{campaign.seed}-{index}",
        "platform": platform,
        "seed": rng.randrange(1 << 32),
        "devices": devices,
    }
    if campaign.boots:
        history["boot"] = rng.choice(campaign.boots)
    steps = [{"action": "boot", "kernel": rng.choice(linux), "cmdline": _cmdline(rng, cpus)}]
    for _ in range(rng.randint(1, campaign.max_steps - 1)):
        step = _random_step(rng, campaign.kernels, linux, devices, cpus)
        steps.append(step)
        if step["action"] == "kexec" and PROFILES[step["kernel"]].kind != "linux":
            break  # FreeBSD kboot is a last kernel: it kexecs nothing (schema refuses it)
    history["steps"] = steps
    return history


def _cmdline(rng: random.Random, cpus: int) -> str:
    words = [_CRASHKERNEL] if rng.random() < 0.6 else []
    if cpus > 1 and rng.random() < 0.15:
        words.append(f"maxcpus={rng.randint(1, cpus)}")
    if cpus > 1 and rng.random() < 0.05:
        words.append(f"nr_cpus={rng.randint(1, cpus)}")
    if rng.random() < 0.03:
        words.append("irqchip.gicv3_nolpi=1")
    return " ".join(words)


def _random_step(
    rng: random.Random,
    kernels: Sequence[str],
    linux: Sequence[str],
    devices: Sequence[dict[str, Any]],
    cpus: int,
) -> dict[str, Any]:
    cpu = rng.randrange(min(cpus, 8))
    action = rng.choices(
        ("traffic", "kexec", "kdump", "cpu-down", "cpu-up", "page-cache", "boot", "unbind", "bind"),
        weights=(4, 3, 1.5, 1, 1, 1, 0.3, 0.7, 0.7),
    )[0]
    match action:
        case "traffic":
            return {
                "action": action,
                "device": rng.choice(devices)["name"],
                "msis": rng.choice((1, 4, 16, 64)),
            }
        case "kexec":
            return {
                "action": action,
                "kernel": rng.choice(kernels),
                "loader": rng.choice(LOADERS),
                "cmdline": _cmdline(rng, cpus),
                "handover_msis": rng.choice((0, 0, 0, 4)),
            }
        case "kdump":
            return {
                "action": action,
                "kernel": rng.choice(linux),
                "panic_cpu": cpu,
                "inflight_msis": rng.choice((0, 4, 16)),
            }
        case "unbind" | "bind":
            return {"action": action, "device": rng.choice(devices)["name"]}
        case "cpu-down" | "cpu-up":
            return {"action": action, "cpu": cpu}
        case "page-cache":
            return {"action": action, "fraction": rng.choice((0.25, 0.5, 0.9))}
        case _:
            return {"action": "boot", "kernel": rng.choice(linux), "cmdline": _cmdline(rng, cpus)}


# -- histories as scenario TOML ------------------------------------------------------------


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        # JSON string escapes (\" \\ \uXXXX) are TOML basic-string escapes too; TOML
        # also wants DEL escaped, which JSON leaves alone.
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML form for {value!r}")


def history_toml(history: History, comments: Sequence[str] = ()) -> str:
    """The history as a scenario file (docs/scenarios.md)."""
    # A comment ends at a newline and may not hold control characters.
    lines = [f"# {c.encode('unicode_escape').decode('ascii')}" for c in comments]
    for key in ("name", "description", "platform", "boot", "cpus", "seed"):
        if key in history:
            lines.append(f"{key} = {_toml_value(history[key])}")
    for table in ("devices", "steps"):
        for item in history[table]:
            lines += ["", f"[[{table}]]"] + [f"{k} = {_toml_value(v)}" for k, v in item.items()]
    if history.get("expect"):
        lines += ["", "[expect]"] + [
            f"{k} = {_toml_value(v)}" for k, v in history["expect"].items()
        ]
    return "\n".join(lines) + "\n"


def parse_history(history: History) -> Scenario:
    """The history as a validated :class:`Scenario` (what ``gickexec run`` would load)."""
    return parse_scenario(history_toml(history), f"<{history['name']}>")


# -- invariants ----------------------------------------------------------------------------

_HEX = re.compile(r"0x[0-9a-fA-F]+")
_NUM = re.compile(r"\d+")


def _cause(text: str) -> str:
    """``text`` without addresses and numbers, so one cause reads the same every time."""
    return _NUM.sub("N", _HEX.sub("ADDR", text))


class _Violation(Exception):
    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


@dataclass(slots=True)
class _Books:
    """What the checks compare across one step."""

    generations: int
    crashed: frozenset[int]
    lost: Counter[str]
    in_flight: int
    sent: int
    corrupted_bits: int
    corruption_events: int
    #: (cpu, "property" | "pending", address, size) the redistributors use
    live_tables: tuple[tuple[int, str, int, int], ...]
    #: the memreserve list's entries, read the way the running kernel reads them
    published: tuple[tuple[int, int], ...]

    @classmethod
    def of(cls, world: World) -> _Books:
        tables: list[tuple[int, str, int, int]] = []
        for rd in world.machine.rdists:
            if not rd.enable_lpis or rd.prop_addr is None or rd.pend_addr is None:
                continue
            # The bytes the redistributor reads and writes: one configuration byte per
            # LPI from INTID 8192, one pending bit per INTID.
            tables.append((rd.cpu, "property", rd.prop_addr, rd.lpi_limit - LPI_INTID_BASE))
            tables.append((rd.cpu, "pending", rd.pend_addr, rd.pending_table_bytes))
        ledger = world.ledger
        chain = world.memreserve_chain()
        return cls(
            len(world.generations),
            frozenset(k.generation for k in world.generations if k.crashed is not None),
            Counter(ledger.lost_reasons),
            ledger.in_flight,
            ledger.sent,
            world.corruption.bits,
            len(world.corruption.events),
            tuple(tables),
            tuple(chain.entries) if chain is not None else (),
        )


class _Checker:
    """The after-step hook of :func:`play`: raises :class:`_Violation` at the first
    broken invariant."""

    def __init__(self, scenario: Scenario, invariants: Sequence[str]) -> None:
        self.steps = scenario.steps
        self.invariants = invariants
        self.before: _Books | None = None
        self.asked: set[int] = set()
        #: top-level steps played so far
        self.done = 0

    def __call__(self, index: int, world: World) -> None:
        now = _Books.of(world)
        before = self.before or _NOTHING_YET
        step = self.steps[index]
        if step.action == "kdump" and before.generations:
            self.asked.add(before.generations - 1)
        elif step.action == "repeat" and any(s.action == "kdump" for s in step.steps):
            # Checked as one step (generated histories have no repeat): any kernel that
            # ran during it may be one a kdump panicked.
            self.asked.update(range(max(before.generations - 1, 0), now.generations))
        broken = [
            (name, found)
            for name in INVARIANTS
            if name in self.invariants
            and (found := _CHECKS[name](self, step, world, before, now)) is not None
        ]
        if broken:
            # The first names the failure; the reproducer expects what all of them demand.
            name, first = broken[0]
            expect = {k: v for _, found in broken for k, v in found.expect.items()}
            signature = f"{name}: {first.signature}"
            raise _Violation(Failure(name, signature, index, first.message, expect))
        self.before = now
        self.done = index + 1


_NOTHING_YET = _Books(0, frozenset(), Counter(), 0, 0, 0, 0, (), ())

Check = Callable[[_Checker, Step, World, _Books, _Books], _Found | None]


def _at_most(value: int) -> int | dict[str, int]:
    return value if value == 0 else {"max": value}


def _check_msi_lost(
    checker: _Checker, step: Step, world: World, before: _Books, now: _Books
) -> _Found | None:
    if step.action != "traffic" or not world.generations:
        return None
    k = world.kernel
    nvec = world.machine.devices[step.device].nvec
    if k.crashed is not None or any((step.device, v) not in k.irq_of_vector for v in range(nvec)):
        return None
    lost = now.lost - before.lost
    stuck = now.in_flight - before.in_flight
    if not lost and stuck <= 0:
        return None
    reason = lost.most_common(1)[0][0] if lost else "stuck pending after the step"
    n = sum(lost.values()) + max(stuck, 0)
    return _Found(
        f"{n} of {now.sent - before.sent} MSIs from {step.device} lost in gen "
        f"{k.generation} ({k.profile.name}), every vector set up: {reason}",
        f"[{k.profile.name}] {_cause(reason)}",
        {"msis_lost": _at_most(sum(before.lost.values()))},
    )


def _check_gic_write(
    checker: _Checker, step: Step, world: World, before: _Books, now: _Books
) -> _Found | None:
    if now.corrupted_bits == before.corrupted_bits:
        return None
    expect = {"corrupted_bits": _at_most(before.corrupted_bits)}
    events = world.corruption.events[before.corruption_events :]
    if not events:
        return _Found(
            f"{now.corrupted_bits - before.corrupted_bits} bits corrupted (events truncated)",
            "corruption beyond the event log",
            expect,
        )
    e = events[0]
    writer = "ITS" if e.writer.startswith("ITS") else "GICR"
    # The kernel whose tables the GIC was using: between kernels, the one that left.
    gen = e.generation - 1 if e.between_kernels else e.generation
    profile = world.generations[gen].profile.name if 0 <= gen < len(world.generations) else "?"
    when = "between kernels" if e.between_kernels else "while a kernel ran"
    return _Found(
        f"{now.corrupted_bits - before.corrupted_bits} bits written by the GIC outside its "
        f"tables; first: {e.writer} at {e.addr:#x} bit {e.bit} into {e.owner} (gen "
        f"{e.generation}, {when})",
        f"[{profile}] {writer} wrote {when} into {_cause(e.owner)}",
        expect,
    )


def _uncovered(world: World, addr: int, size: int) -> bool:
    """Whether part of ``[addr, addr + size)`` is in the running kernel's memory and not
    reserved there."""
    k = world.kernel
    for start, end in k.memory:
        lo, hi = max(start, addr), min(end, addr + size)
        if lo < hi and not k.memblock.is_reserved_range(lo, hi - lo):
            return True
    return False


def _segment_over(world: World, addr: int, size: int) -> str | None:
    """Which of the running kernel's kexec segments overlaps ``[addr, addr + size)``."""
    segments = world.kernel.segments
    if segments is None:
        return None
    return next((n for n, a, z in segments.named() if a < addr + size and addr < a + z), None)


def _check_uncovered(
    checker: _Checker, step: Step, world: World, before: _Books, now: _Books
) -> _Found | None:
    if step.action not in ("kexec", "kdump") or now.generations != before.generations + 1:
        return None
    still = set(now.live_tables)
    old = world.generations[-2].profile.name
    new = world.kernel.profile.name
    for table in before.live_tables:
        cpu, kind, addr, size = table
        if table not in still or not _uncovered(world, addr, size):
            continue
        if world.firmware is None:
            why = f"{kind} table left live, no memreserve list (device-tree boot)"
        elif not any(b <= addr and addr + size <= b + s for b, s in before.published):
            why = f"{kind} table not published in the memreserve list by {old}"
        elif seg := _segment_over(world, addr, size):
            # The kernel reserved the table and the segment, then freed the segment
            # (the initrd after unpacking) and the table's reservation with it.
            loader = world.kernel.segments.loader if world.kernel.segments else "?"
            why = f"{kind} table under the {seg} that {loader} in {old} placed"
        elif (wrote := world.generations[-2].profile.memreserve_layout) != (
            reads := world.kernel.profile.memreserve_layout
        ):
            how = f"reads as {reads}" if reads else "does not read"
            why = f"{kind} table published in the {wrote} list layout by {old}, which {new} {how}"
        else:
            why = f"{kind} table published but not reserved by {new}"
        complaint = "Expected reserved range"
        logged = any(complaint in line for line in world.kernel.log.lines)
        return _Found(
            f"CPU{cpu}'s LPI {kind} table [{addr:#x}, {addr + size:#x}) is still live in gen "
            f"{world.kernel.generation} ({new}, entered by {step.action}) and not reserved: "
            f"{why}",
            why,
            {"log_absent": [complaint]} if logged else {},
        )
    return None


def _check_memreserve(
    checker: _Checker, step: Step, world: World, before: _Books, now: _Books
) -> _Found | None:
    chain = world.memreserve_chain()
    if chain is None:
        return None
    profile = world.kernel.profile.name if world.generations else "?"
    if chain.error is not None:
        return _Found(
            f"memreserve list: {chain.error}", f"[{profile}] walk: {_cause(chain.error)}", {}
        )
    bound = 2 * (world.platform.cpus + 1)
    if len(chain.entries) > bound:
        return _Found(
            f"memreserve list holds {len(chain.entries)} entries in {len(chain.list_nodes)} "
            f"nodes, more than {bound}",
            f"[{profile}] more than 2 x (CPUs + 1) entries",
            {"memreserve_entries": {"max": bound}},
        )
    return None


def _check_crash(
    checker: _Checker, step: Step, world: World, before: _Books, now: _Books
) -> _Found | None:
    for gen in sorted(now.crashed - before.crashed - checker.asked):
        k = world.generations[gen]
        wanted = [g in now.crashed and g in checker.asked for g in range(now.generations)]
        return _Found(
            f"kernel gen {gen} ({k.profile.name}) died unasked: {k.crashed}",
            f"[{k.profile.name}] {_cause(k.crashed or '')}",
            {"crashed": wanted},
        )
    return None


_CHECKS: dict[str, Check] = {
    "uncovered-table": _check_uncovered,
    "unasked-crash": _check_crash,
    "gic-write": _check_gic_write,
    "msi-lost": _check_msi_lost,
    "memreserve-bounded": _check_memreserve,
}
assert set(_CHECKS) == set(INVARIANTS)


def check_scenario(
    scenario: Scenario, invariants: Sequence[str] = tuple(INVARIANTS)
) -> Failure | None:
    """Play ``scenario`` and return its first broken invariant, or None."""
    checker = _Checker(scenario, invariants)
    try:
        play(scenario, checker)
    except _Violation as v:
        return v.failure
    except Exception as e:
        # A bug of the model is a finding too, not the end of the campaign.
        what = f"{type(e).__name__}: {e}"
        return Failure(
            "model-error",
            f"model-error: {_cause(what)}",
            min(checker.done, len(scenario.steps) - 1),
            f"the model raised {what}",
        )
    return None


def _check(history: History, invariants: Sequence[str]) -> Failure | None:
    return check_scenario(parse_history(history), invariants)


# -- shrinking -----------------------------------------------------------------------------


def _same(history: History, signature: str, invariants: Sequence[str]) -> bool:
    try:
        failure = _check(history, invariants)
    except ScenarioError:
        return False
    return failure is not None and failure.signature == signature


def _with_steps(history: History, steps: list[dict[str, Any]]) -> History:
    return {**history, "steps": steps}


def _ddmin_steps(history: History, keep: Callable[[History], bool]) -> History:
    """Zeller's ddmin over the steps after the first boot."""
    head, rest = history["steps"][:1], history["steps"][1:]
    n = 2
    while len(rest) >= 2:
        chunk = -(-len(rest) // n)
        parts = [rest[i : i + chunk] for i in range(0, len(rest), chunk)]
        for i in range(len(parts)):
            complement = [s for j, p in enumerate(parts) if j != i for s in p]
            if keep(_with_steps(history, head + complement)):
                rest, n = complement, max(n - 1, 2)
                break
        else:
            if n >= len(rest):
                break
            n = min(n * 2, len(rest))
    if len(rest) == 1 and keep(_with_steps(history, head)):
        rest = []
    return _with_steps(history, head + rest)


_SIMPLER: dict[str, tuple[Any, ...]] = {
    "msis": (1,),
    "handover_msis": (0,),
    "inflight_msis": (0,),
    "cmdline": ("",),
    "loader": ("kexec-tools",),
    "fraction": (0.25,),
    "panic_cpu": (0,),
    "cpu": (1,),
}


def _candidates(history: History) -> Iterator[History]:
    """Simpler variants of ``history``, one change each."""
    devices = history["devices"]
    for d in devices:
        others = [o for o in devices if o is not d]
        if others:
            steps = [s for s in history["steps"] if s.get("device") != d["name"]]
            yield {**history, "devices": others, "steps": steps}
        if d["vectors"] > 1:
            yield {**history, "devices": [{**o, "vectors": 1} if o is d else o for o in devices]}
    cpus = history.get("cpus", PLATFORMS[history["platform"]].cpus)
    for fewer in (2, 4, 8):
        if fewer < cpus:
            yield {**history, "cpus": fewer}
    for i, step in enumerate(history["steps"]):
        for key, values in _SIMPLER.items():
            for value in values:
                if key in step and step[key] != value:
                    steps = list(history["steps"])
                    steps[i] = {**step, key: value}
                    yield _with_steps(history, steps)
        if step["action"] in ("kexec", "boot") and PROFILES[step["kernel"]].kind == "linux":
            # crashkernel= matters only when a kdump follows; keep it and drop the rest
            words = step.get("cmdline", "").split()
            if len(words) > 1 and _CRASHKERNEL in words:
                steps = list(history["steps"])
                steps[i] = {**step, "cmdline": _CRASHKERNEL}
                yield _with_steps(history, steps)


def shrink(history: History, failure: Failure, invariants: Sequence[str]) -> History:
    """A smaller history with ``failure``'s signature (delta debugging, then parameters)."""
    seen: dict[str, bool] = {}

    def keep(h: History) -> bool:
        # ddmin and the parameter passes propose the same history more than once
        text = history_toml(h)
        if text not in seen:
            seen[text] = _same(h, failure.signature, invariants)
        return seen[text]

    # Steps after the failing one cannot matter.
    h = _with_steps(history, history["steps"][: failure.step + 1])
    h = _ddmin_steps(h, keep)
    for _ in range(MAX_SIMPLIFICATIONS):
        # Candidates are derived from the current history: after each accepted change,
        # start again from the smaller one.
        simpler = next((c for c in _candidates(h) if keep(c)), None)
        if simpler is None:
            break
        h = simpler
    h = _ddmin_steps(h, keep)
    last = _check(h, invariants)
    assert last is not None
    return _with_steps(h, h["steps"][: last.step + 1])


# -- one history ---------------------------------------------------------------------------


def run_history(campaign: Campaign, index: int) -> dict[str, Any]:
    """Generate, check and (if it fails) shrink history ``index``: its results line."""
    history = generate(campaign, index)
    failure = _check(history, campaign.invariants)
    line: dict[str, Any] = {
        "index": index,
        "platform": history["platform"],
        "steps": len(history["steps"]),
        "ok": failure is None,
    }
    if failure is None:
        return line
    small = shrink(history, failure, campaign.invariants)
    small_failure = _check(small, campaign.invariants)
    assert small_failure is not None and small_failure.signature == failure.signature
    small["name"] = f"explore-{campaign.seed}-{index}-min"
    small["description"] = small_failure.message
    small["expect"] = small_failure.expect
    line["failure"] = {
        "invariant": failure.invariant,
        "signature": failure.signature,
        "step": failure.step,
        "message": failure.message,
        "shrunk_steps": len(small["steps"]),
        "reproducer": history_toml(
            small,
            [
                f"gickexec explore: history {index} of seed {campaign.seed}, shrunk",
                f"signature: {failure.signature}",
                f"fails at step {small_failure.step}; replay: gickexec run THIS-FILE",
            ],
        ),
    }
    return line


def run_batch(campaign: Campaign, indices: Sequence[int]) -> list[dict[str, Any]]:
    """The unit of work handed to a worker process or a Dask task."""
    return [run_history(campaign, i) for i in indices]


# -- campaign ------------------------------------------------------------------------------


def signature_id(signature: str) -> str:
    """A short stable name for a signature (the reproducer's file name)."""
    return hashlib.sha256(signature.encode()).hexdigest()[:12]


@dataclass(slots=True)
class _Summary:
    histories: int = 0
    failures: int = 0
    counts: Counter[str] = dataclasses.field(default_factory=Counter)
    #: signature -> (shrunk steps, reproducer length, index), reproducer text, invariant
    best: dict[str, tuple[tuple[int, int, int], str, str]] = dataclasses.field(default_factory=dict)

    def add(self, line: dict[str, Any]) -> None:
        self.histories += 1
        failure = line.get("failure")
        if failure is None:
            return
        self.failures += 1
        sig = failure["signature"]
        self.counts[sig] += 1
        key = (failure["shrunk_steps"], len(failure["reproducer"]), line["index"])
        if sig not in self.best or key < self.best[sig][0]:
            self.best[sig] = (key, failure["reproducer"], failure["invariant"])

    def document(self, out: Path, campaign: Campaign) -> dict[str, Any]:
        signatures = [
            {
                "signature": sig,
                "invariant": self.best[sig][2],
                "count": count,
                "steps": self.best[sig][0][0],
                "history": self.best[sig][0][2],
                "reproducer": str(out / REPRODUCERS / f"{signature_id(sig)}.toml"),
            }
            for sig, count in sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))
        ]
        return {
            "campaign": campaign.as_dict(),
            "histories": self.histories,
            "failures": self.failures,
            "signatures": signatures,
        }


def _load_results(path: Path, budget: int) -> list[dict[str, Any]]:
    """The lines of an earlier run.  A torn last line (the process was killed while
    writing it: no newline) is cut off the file; any other bad line is an error."""
    data = path.read_bytes()
    pieces = data.splitlines(keepends=True)
    torn = pieces.pop() if pieces and not pieces[-1].endswith(b"\n") else b""
    lines = [_results_line(raw, f"{path}:{n}", budget) for n, raw in enumerate(pieces, 1)]
    if torn:
        with path.open("r+b") as f:
            f.truncate(len(data) - len(torn))
    return lines


_FAILURE_FIELDS = (
    ("invariant", str),
    ("signature", str),
    ("reproducer", str),
    ("shrunk_steps", int),
)


def _results_line(raw: bytes, where: str, budget: int) -> dict[str, Any]:
    try:
        line = json.loads(raw)
    except ValueError as e:
        raise ExploreError(f"{where}: not JSON ({e})") from None
    good = (
        isinstance(line, dict)
        and type(line.get("index")) is int
        and isinstance(line.get("ok"), bool)
    )
    if good and not line["ok"]:
        failure = line.get("failure")
        good = isinstance(failure, dict) and all(
            isinstance(failure.get(k), t) for k, t in _FAILURE_FIELDS
        )
    if not good:
        raise ExploreError(f"{where}: not a results line of gickexec explore")
    if not 0 <= line["index"] < budget:
        raise ExploreError(f"{where}: history {line['index']} is beyond --budget {budget}")
    return dict(line)


def _prepare(out: Path, campaign: Campaign, resume: bool) -> list[dict[str, Any]]:
    """Check or create the output directory; the results already there (on resume)."""
    results = out / RESULTS
    settings = out / CAMPAIGN
    try:
        out.mkdir(parents=True, exist_ok=True)
        if resume and settings.exists():
            saved = json.loads(settings.read_text(encoding="utf-8"))
            mine = campaign.as_dict()
            if not isinstance(saved, dict) or {k: v for k, v in saved.items() if k != "budget"} != {
                k: v for k, v in mine.items() if k != "budget"
            }:
                raise ExploreError(
                    f"{settings}: the campaign there has other settings; resume it with "
                    "those, or use another --out"
                )
        elif results.exists() and results.stat().st_size:
            raise ExploreError(f"{results} exists: add --resume to continue that campaign")
        settings.write_text(json.dumps(campaign.as_dict(), indent=1) + "\n", encoding="utf-8")
        done = _load_results(results, campaign.budget) if resume and results.exists() else []
    except OSError as e:
        raise ExploreError(f"{out}: {e.strerror or e}") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise ExploreError(f"{settings}: not readable JSON: {e}") from None
    indices = [line["index"] for line in done]
    if len(set(indices)) != len(indices):
        raise ExploreError(f"{results}: a history appears twice")
    return done


def _batches(todo: Sequence[int]) -> list[list[int]]:
    return [list(todo[i : i + BATCH]) for i in range(0, len(todo), BATCH)]


def _local(
    campaign: Campaign, batches: list[list[int]], workers: int
) -> Iterator[list[dict[str, Any]]]:
    if workers == 1:
        for batch in batches:
            yield run_batch(campaign, batch)
        return
    import multiprocessing  # noqa: PLC0415 - only campaigns with workers need it

    with multiprocessing.Pool(workers) as pool:
        yield from pool.imap(_BatchRunner(campaign), batches)


@dataclass(frozen=True, slots=True)
class _BatchRunner:
    """A picklable ``run_batch`` bound to its campaign."""

    campaign: Campaign

    def __call__(self, batch: list[int]) -> list[dict[str, Any]]:
        return run_batch(self.campaign, batch)


def _on_dask(
    campaign: Campaign, batches: list[list[int]], address: str
) -> Iterator[list[dict[str, Any]]]:
    """The batches on an existing Dask cluster, a bounded window of them in flight,
    taken back in order so the results file is the same as a local run's."""
    try:
        from distributed import Client  # noqa: PLC0415 - optional extra gickexec[dask]
    except ImportError:
        raise ExploreError(
            "--dask needs the distributed package: pip install 'gickexec[dask]'"
        ) from None
    try:
        client = Client(address, timeout=DASK_CONNECT_TIMEOUT)  # type: ignore[no-untyped-call]
    except (OSError, TimeoutError, ValueError) as e:
        raise ExploreError(f"--dask {address}: cannot reach the scheduler: {e}") from None
    with client:
        threads = client.nthreads()  # type: ignore[no-untyped-call]
        window = 4 * max(1, sum(threads.values()))
        pending: list[Any] = []
        queue = iter(batches)
        for batch in queue:
            pending.append(client.submit(run_batch, campaign, batch, pure=False))
            if len(pending) >= window:
                break
        while pending:
            done = pending.pop(0)
            nxt = next(queue, None)
            if nxt is not None:
                pending.append(client.submit(run_batch, campaign, nxt, pure=False))
            yield done.result()


class Progress:
    """Progress on stderr: a redrawn bar on a terminal, a plain line every
    ``interval`` seconds otherwise, nothing when quiet."""

    def __init__(
        self,
        total: int,
        done: int,
        *,
        quiet: bool,
        stream: IO[str] | None = None,
        interval: float = 10.0,
    ) -> None:
        self.stream = stream or sys.stderr
        self.mode = "quiet" if quiet else "bar" if self.stream.isatty() else "lines"
        self.total = total
        self.start_done = self.done = done
        self.failures = 0
        self.interval = 0.1 if self.mode == "bar" else interval
        self.t0 = self.last = time.monotonic()

    def update(self, done: int, failures: int) -> None:
        self.done, self.failures = done, failures
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            self._draw()

    def _rate(self) -> float:
        elapsed = time.monotonic() - self.t0
        return (self.done - self.start_done) / elapsed if elapsed > 0 else 0.0

    def _draw(self, end: str = "") -> None:
        if self.mode == "quiet":
            return
        stats = (
            f"{self.done}/{self.total} histories, {self._rate():.1f}/s, {self.failures} failures"
        )
        if self.mode == "bar":
            width = 30
            filled = width * self.done // max(self.total, 1)
            bar = "#" * filled + "." * (width - filled)
            self.stream.write(f"\r[{bar}] {stats}\x1b[K{end}")
        else:
            self.stream.write(f"explore: {stats}\n")
        self.stream.flush()

    def close(self) -> None:
        self._draw("\n")


def run_campaign(
    campaign: Campaign,
    out: Path,
    *,
    workers: int | None = None,
    dask: str | None = None,
    resume: bool = False,
    quiet: bool = False,
    progress_stream: IO[str] | None = None,
) -> dict[str, Any]:
    """Run (or, with ``resume``, continue) ``campaign`` into ``out``; returns the summary
    document also written to ``out/summary.json``."""
    done = _prepare(out, campaign, resume)
    summary = _Summary()
    for line in sorted(done, key=lambda line: line["index"]):
        summary.add(line)
    finished = {line["index"] for line in done}
    todo = [i for i in range(campaign.budget) if i not in finished]
    batches = _batches(todo)
    stream: Iterable[list[dict[str, Any]]] = (
        _on_dask(campaign, batches, dask)
        if dask is not None
        else _local(campaign, batches, workers or os.cpu_count() or 1)
    )
    progress = Progress(campaign.budget, len(done), quiet=quiet, stream=progress_stream)
    results = out / RESULTS
    try:
        with results.open("a", encoding="utf-8") as f:
            synced = time.monotonic()
            for batch in stream:
                for line in batch:
                    f.write(json.dumps(line, sort_keys=True) + "\n")
                    f.flush()
                    summary.add(line)
                if time.monotonic() - synced >= FSYNC_INTERVAL:
                    os.fsync(f.fileno())
                    synced = time.monotonic()
                progress.update(summary.histories, summary.failures)
            os.fsync(f.fileno())
    except OSError as e:
        raise ExploreError(f"{results}: {e.strerror or e}") from None
    progress.close()
    return _write_summary(summary, out, campaign)


def _write_summary(summary: _Summary, out: Path, campaign: Campaign) -> dict[str, Any]:
    doc = summary.document(out, campaign)
    try:
        (out / REPRODUCERS).mkdir(exist_ok=True)
        for sig, (_, text, _) in summary.best.items():
            (out / REPRODUCERS / f"{signature_id(sig)}.toml").write_text(text, encoding="utf-8")
        tmp = out / (SUMMARY + ".tmp")
        tmp.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
        tmp.replace(out / SUMMARY)
    except OSError as e:
        raise ExploreError(f"{out}: {e.strerror or e}") from None
    return doc


def summary_text(doc: dict[str, Any]) -> str:
    """The summary as the terminal shows it."""
    lines = [
        f"{doc['histories']} histories, {doc['failures']} failed, "
        f"{len(doc['signatures'])} signatures"
    ]
    for s in doc["signatures"]:
        lines.append(f"{s['count']:>6}  {s['signature']}")
        lines.append(f"        {s['steps']} steps: {s['reproducer']}")
    return "\n".join(lines)
