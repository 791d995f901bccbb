"""Scenario files (TOML): parsing and validation with errors that name file, line and field.

A scenario names a platform preset (optionally overriding CPU count and GIC knobs), the
MSI devices, the steps (``boot``, ``kexec``, ``traffic``, ``page-cache``, ``repeat``) and
what it expects.  See docs/scenarios.md for the format.  Validation never raises anything
but :class:`ScenarioError`.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gickexec.bounded import InputError, read_input, show
from gickexec.hw.knobs import knobs_with_overrides
from gickexec.hw.memory import MemRegion
from gickexec.hw.platform import BOOT_PATHS, PLATFORMS, Platform
from gickexec.kernel.cmdline import CmdlineError, parse_cmdline, parse_size
from gickexec.kernel.kexec import INITRD_BYTES, LOADERS, ULONG_MAX, KexecSegments, Loader
from gickexec.kernel.profiles import PROFILES

__all__ = [
    "MAX_SCENARIO_BYTES",
    "MAX_SEED",
    "MAX_TOTAL_MSIS",
    "Device",
    "Expect",
    "Scenario",
    "ScenarioError",
    "Step",
    "load_scenario",
    "parse_scenario",
]

MAX_CPUS = 512
#: A scenario file is a few KiB; tomllib parses about 4 MiB a second.
MAX_SCENARIO_BYTES = 1 << 20
MAX_SEED = 2**63
# Bounds on the work a scenario asks for, checked before anything runs, set to what plays
# in seconds today (measured: 100,000 MSIs in about 5 s, 2,000 kexecs in about 12 s).
MAX_MSIS_PER_STEP = 100_000
MAX_STEPS = 1_000
#: MSIs of the whole scenario, repeats unrolled: traffic, handover and in-flight
#: (``inflight_msis`` counts per device).
MAX_TOTAL_MSIS = 200_000
#: CONFIG_NR_CPUS: arch/arm64/Kconfig "range 2 4096"
MAX_NR_CPUS = 4096
#: Expected counts (MSIs, bits, entries) are at most this, like the seed.
MAX_COUNT = 2**63


class ScenarioError(Exception):
    """A scenario file is malformed; the message names the file, line and field."""

    def __init__(self, source: str, field_path: str, message: str, line: int | None = None) -> None:
        where = f"{source}:{line}" if line else source
        what = f" field '{field_path}':" if field_path else ""
        super().__init__(f"{where}:{what} {message}")
        self.source = source
        self.field_path = field_path
        self.line = line


@dataclass(frozen=True, slots=True)
class Device:
    name: str
    device_id: int
    vectors: int
    shutdown_hook: bool = True


@dataclass(frozen=True, slots=True)
class Step:
    """One step; ``action`` selects which of the other fields matter."""

    action: str
    kernel: str = ""
    device: str = ""
    msis: int = 0
    fraction: float = 0.0
    handover_msis: int = 0
    times: int = 1
    steps: tuple[Step, ...] = ()
    cmdline: str = ""
    cpu: int = 0
    inflight_msis: int = 0
    loader: Loader = "kexec-tools"
    #: bytes of the initramfs the boot loader (boot) or kexec-tools (kexec, kdump) loads
    initrd: int = 0
    #: boot: where the boot loader put the image (pins the EFI stub's KASLR choice)
    image: int | None = None
    #: kexec: ``--mem-min`` / ``--mem-max``
    mem_min: int = 0
    mem_max: int = ULONG_MAX
    #: kexec, kdump: the segments a real kexec-tools printed (``kexec -d``), loaded where
    #: it put them instead of where the model's loader would (set by ``gickexec
    #: preflight``, not by scenario files)
    segments: KexecSegments | None = None
    #: kdump: events per device raised after the panic masked the vectors (held in the
    #: device's Pending Bit Array until the capture kernel's driver unmasks them)
    masked_msis: int = 0


#: A numeric expectation: exact value, or inclusive (min, max) with None for open.
Range = tuple[int | None, int | None]
#: A per-generation boolean expectation: one value for all, a list, or (first, rest).
PerGen = bool | tuple[bool, ...] | tuple[str, bool, bool]


@dataclass(frozen=True, slots=True)
class Expect:
    msis_sent: Range | None = None
    msis_delivered: Range | None = None
    msis_lost: Range | None = None
    corrupted_bits: Range | None = None
    memreserve_nodes: Range | None = None
    memreserve_entries: Range | None = None
    memreserve_stable: bool | None = None
    tainted: PerGen | None = None
    reused_tables: PerGen | None = None
    crashed: PerGen | None = None
    log_contains: tuple[str, ...] = ()
    log_absent: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str
    platform: Platform
    seed: int
    devices: tuple[Device, ...]
    steps: tuple[Step, ...]
    expect: Expect
    source: str = "<string>"
    text: str = field(default="", repr=False)
    #: CONFIG_NR_CPUS of every kernel the scenario boots (None: each profile's default)
    config_nr_cpus: int | None = None


# -- locating fields in the text -----------------------------------------------------------

_HEADER = re.compile(r"^\s*\[\[?\s*([A-Za-z0-9_.\-]+)\s*\]\]?")


#: ``steps[1].steps[2].msis``: a field of an inline table inside an array of a table
_NESTED = re.compile(
    r"([A-Za-z0-9_\-]+\[[0-9]+\])\.([A-Za-z0-9_\-]+)\[([0-9]+)\](?:\.([A-Za-z0-9_\-]+))?"
)


def _inline_line(text: str, line: int, key: str, index: int, field: str | None) -> int | None:
    """The line of ``field`` in the ``index``-th inline table of the array ``key = [...]``
    that starts at 1-based ``line`` (``repeat`` steps), or of that table when ``field``
    is None; None when the text does not have that shape."""
    lines = text.splitlines()
    start = sum(len(x) + 1 for x in lines[: line - 1])
    m = re.compile(rf"{re.escape(key)}\s*=\s*\[").search(text, start)
    if m is None:
        return None
    depth, seen, pos = 0, -1, m.end()
    while pos < len(text):
        ch = text[pos]
        if ch in "\"'":  # skip strings: braces inside them do not count
            end = text.find(ch, pos + 1)
            pos = len(text) if end < 0 else end + 1
            continue
        if ch == "{":
            depth += 1
            if depth == 1:
                seen += 1
                if seen == index:
                    close = text.find("}", pos)
                    body = text[pos : close if close >= 0 else len(text)]
                    f = re.search(rf"\b{re.escape(field)}\s*=", body) if field else None
                    at = pos + (f.start() if f else 0)
                    return text.count("\n", 0, at) + 1
        elif ch == "}":
            depth -= 1
        elif ch == "]" and depth == 0:
            return None
        pos += 1
    return None


def _locate(text: str, path: str) -> int | None:
    """Best-effort line number of ``path`` (e.g. ``steps[2].msis``) in TOML ``text``."""
    if not text:
        return None
    nested = _NESTED.fullmatch(path)
    if nested:
        outer = _locate(text, nested.group(1) + "." + nested.group(2))
        if outer is not None:
            inner = _inline_line(
                text, outer, nested.group(2), int(nested.group(3)), nested.group(4)
            )
            if inner is not None:
                return inner
    parts = re.findall(r"([A-Za-z0-9_\-]+)(?:\[([0-9]+)\])?", path)
    lines = text.splitlines()
    if not parts:
        return None
    table, index = parts[0]
    key = parts[1][0] if len(parts) > 1 else None
    start = 0
    if index:
        seen = -1
        for i, line in enumerate(lines):
            m = _HEADER.match(line)
            if m and m.group(1) == table and line.lstrip().startswith("[["):
                seen += 1
                if seen == int(index):
                    start = i
                    break
        else:
            return None
    elif key is not None:
        for i, line in enumerate(lines):
            m = _HEADER.match(line)
            if m and m.group(1) == table:
                start = i
                break
        else:
            key, start = table, 0
    else:
        key = table
    if key is None:
        return start + 1
    pat = re.compile(rf"^\s*{re.escape(key)}\s*=")
    for i in range(start, len(lines)):
        if i > start and _HEADER.match(lines[i]) and key != table:
            break
        if pat.match(lines[i]):
            return i + 1
        m = _HEADER.match(lines[i])
        if key == table and m and m.group(1) == key:  # a table header, e.g. [devices]
            return i + 1
    return start + 1


class _Ctx:
    def __init__(self, source: str, text: str) -> None:
        self.source = source
        self.text = text

    def fail(self, path: str, message: str) -> ScenarioError:
        return ScenarioError(self.source, path, message, _locate(self.text, path))

    def table(self, value: Any, path: str) -> Mapping[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(path, f"must be a table, not {_toml_type(value)}")
        return value

    def keys(self, table: Mapping[str, Any], path: str, allowed: set[str]) -> None:
        for k in table:
            if k not in allowed:
                raise self.fail(
                    f"{path}.{k}" if path else k,
                    f"unknown field (expected one of: {', '.join(sorted(allowed))})",
                )

    def int_(self, value: Any, path: str, lo: int = 0, hi: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(path, f"must be an integer, not {show(value)}")
        if value < lo or (hi is not None and value > hi):
            bound = f"{lo}..{hi}" if hi is not None else f">= {lo}"
            raise self.fail(path, f"must be {bound}, not {show(value)}")
        return value

    def str_(self, value: Any, path: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(path, f"must be a non-empty string, not {show(value)}")
        return value

    def bool_(self, value: Any, path: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(path, f"must be true or false, not {show(value)}")
        return value


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file."""
    p = Path(path)
    try:
        text = read_input(str(p), limit=MAX_SCENARIO_BYTES).decode("utf-8")
    except (InputError, UnicodeDecodeError) as e:
        raise ScenarioError(str(p), "", f"cannot read: {e}") from None
    return parse_scenario(text, str(p))


def parse_scenario(text: str, source: str = "<string>") -> Scenario:
    """Validate TOML ``text`` as a scenario; ``source`` names it in error messages."""
    ctx = _Ctx(source, text)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"line (\d+)", str(e))
        raise ScenarioError(
            source, "", f"not valid TOML: {e}", int(m.group(1)) if m else None
        ) from None
    except ValueError as e:  # tomllib's int() of a literal beyond the conversion limit
        raise ScenarioError(source, "", f"not valid TOML: {e}") from None
    except RecursionError:
        raise ScenarioError(
            source, "", "not valid TOML: arrays or tables nested too deeply"
        ) from None
    ctx.keys(
        data,
        "",
        {
            "name",
            "description",
            "platform",
            "boot",
            "seed",
            "cpus",
            "config_nr_cpus",
            "ram",
            "knobs",
            "devices",
            "steps",
            "expect",
        },
    )
    name = ctx.str_(data.get("name", Path(source).stem), "name")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise ctx.fail("description", "must be a string")
    pname = ctx.str_(data.get("platform", ""), "platform")
    if pname not in PLATFORMS:
        raise ctx.fail(
            "platform", f"unknown platform {show(pname)} (known: {', '.join(PLATFORMS)})"
        )
    platform = PLATFORMS[pname]
    if "cpus" in data:
        platform = platform.with_cpus(ctx.int_(data["cpus"], "cpus", 1, MAX_CPUS))
    if "ram" in data:
        platform = platform.with_ram(_ram(ctx, data["ram"], platform))

    if "knobs" in data:
        knobs = ctx.table(data["knobs"], "knobs")
        for knob, value in knobs.items():  # one at a time: the error names the knob's line
            try:
                knobs_with_overrides(platform.knobs, {knob: value})
            except ValueError as e:
                raise ctx.fail(f"knobs.{knob}", str(e)) from None
        platform = platform.with_knobs(knobs_with_overrides(platform.knobs, dict(knobs)))
    if "boot" in data:
        platform = _boot_path(ctx, data["boot"], platform)
    seed = ctx.int_(data.get("seed", 0), "seed", 0, MAX_SEED)
    devices = _devices(ctx, data.get("devices", []))
    names = {d.name for d in devices}
    raw_steps = data.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise ctx.fail("steps", "must be a non-empty array of tables ([[steps]])")
    steps = tuple(
        _step(ctx, s, f"steps[{i}]", names, top=True, cpus=platform.cpus)
        for i, s in enumerate(raw_steps)
    )
    if steps[0].action != "boot":
        raise ctx.fail("steps[0].action", "the first step must be 'boot'")
    _check_work(ctx, steps, len(devices))
    _check_kernel_kinds(ctx, steps)
    _check_images(ctx, steps, platform)
    expect = _expect(ctx, data.get("expect", {}))
    config_nr_cpus = (
        ctx.int_(data["config_nr_cpus"], "config_nr_cpus", 2, MAX_NR_CPUS)
        if "config_nr_cpus" in data
        else None
    )
    return Scenario(
        name, description, platform, seed, devices, steps, expect, source, text, config_nr_cpus
    )


def _boot_path(ctx: _Ctx, raw: Any, platform: Platform) -> Platform:
    """``boot = "efi" | "dt"``: the same hardware booted through UEFI or a device tree."""
    if raw in ("efi", "dt"):
        return dataclasses.replace(platform, firmware=raw)
    if raw not in BOOT_PATHS:
        raise ctx.fail("boot", f"must be one of efi, dt, {', '.join(BOOT_PATHS)}, not {raw!r}")
    try:
        return platform.with_boot(raw)
    except ValueError as e:
        raise ctx.fail("boot", str(e)) from None


#: RAM a scenario may give a machine: 64 MiB .. 16 TiB per bank, 16 banks
MIN_BANK, MAX_BANK, MAX_BANKS = 64 << 20, 16 << 40, 16


def _size(ctx: _Ctx, value: Any, path: str) -> int:
    """A byte count: an integer or a size string such as "1G" or "512M"."""
    if isinstance(value, str):
        try:
            return parse_size(value)
        except CmdlineError as e:
            raise ctx.fail(path, str(e)) from None
    return ctx.int_(value, path, 0, 1 << 52)


def _ram(ctx: _Ctx, raw: Any, platform: Platform) -> tuple[MemRegion, ...]:
    """``ram = "1G"`` (the first bank, at the preset's base, resized; the others
    dropped) or ``ram = [{ start = 0x40000000, size = "1G" }, ...]``."""
    if not isinstance(raw, list):
        size = _size(ctx, raw, "ram")
        if not MIN_BANK <= size <= MAX_BANK or size % 0x200000:
            raise ctx.fail("ram", "must be a multiple of 2 MiB from 64 MiB to 16 TiB")
        return (MemRegion(platform.ram[0].start, size, "System RAM"),)
    if not 1 <= len(raw) <= MAX_BANKS:
        raise ctx.fail("ram", f"must list 1 to {MAX_BANKS} banks")
    banks: list[MemRegion] = []
    for i, b in enumerate(raw):
        path = f"ram[{i}]"
        t = ctx.table(b, path)
        ctx.keys(t, path, {"start", "size"})
        start = ctx.int_(t.get("start"), f"{path}.start", 0, 1 << 52)
        size = _size(ctx, t.get("size"), f"{path}.size")
        if start % 0x200000 or size % 0x200000 or not MIN_BANK <= size <= MAX_BANK:
            raise ctx.fail(path, "start and size must be 2 MiB multiples, 64 MiB to 16 TiB")
        if banks and start < banks[-1].end:
            raise ctx.fail(f"{path}.start", "banks must be in order and not overlap")
        banks.append(MemRegion(start, size, "System RAM"))
    return tuple(banks)


def _check_images(ctx: _Ctx, steps: tuple[Step, ...], platform: Platform) -> None:
    """A pinned boot image must lie in one RAM bank, all of its ``image_size``: no boot
    loader can put it anywhere else."""
    for i, step in enumerate(steps):
        if step.action != "boot" or step.image is None:
            continue
        size = PROFILES[step.kernel].build.image_size
        if not any(b.contains(step.image, size) for b in platform.ram):
            banks = ", ".join(f"[{b.start:#x}, {b.end:#x})" for b in platform.ram)
            raise ctx.fail(
                f"steps[{i}].image",
                f"{step.image:#x} + {size:#x} bytes of image is not inside RAM ({banks})",
            )


def _devices(ctx: _Ctx, raw: Any) -> tuple[Device, ...]:
    if not isinstance(raw, list):
        raise ctx.fail("devices", "must be an array of tables ([[devices]])")
    out: list[Device] = []
    ids: set[int] = set()
    for i, d in enumerate(raw):
        path = f"devices[{i}]"
        t = ctx.table(d, path)
        ctx.keys(t, path, {"name", "device_id", "vectors", "shutdown_hook"})
        name = ctx.str_(t.get("name"), f"{path}.name")
        if any(o.name == name for o in out):
            raise ctx.fail(f"{path}.name", f"duplicate device name {show(name)}")
        dev_id = ctx.int_(t.get("device_id"), f"{path}.device_id", 0, 0xFFFF)
        if dev_id in ids:
            raise ctx.fail(f"{path}.device_id", f"DeviceID {dev_id:#x} used twice")
        ids.add(dev_id)
        vectors = ctx.int_(t.get("vectors", 1), f"{path}.vectors", 1, 2048)
        hook = ctx.bool_(t.get("shutdown_hook", True), f"{path}.shutdown_hook")
        out.append(Device(name, dev_id, vectors, hook))
    return tuple(out)


_STEP_FIELDS = {
    "boot": {"kernel", "cmdline", "initrd", "image"},
    "kexec": {"kernel", "cmdline", "handover_msis", "loader", "initrd", "mem_min", "mem_max"},
    "kdump": {"kernel", "cmdline", "panic_cpu", "inflight_msis", "masked_msis", "initrd"},
    "cpu-down": {"cpu"},
    "cpu-up": {"cpu"},
    "traffic": {"device", "msis"},
    "page-cache": {"fraction"},
    "repeat": {"times", "steps"},
    "unbind": {"device"},
    "bind": {"device"},
    "vmm-save": set(),
}


def _step(
    ctx: _Ctx, raw: Any, path: str, devices: set[str], *, top: bool, cpus: int = MAX_CPUS
) -> Step:
    t = ctx.table(raw, path)
    action = ctx.str_(t.get("action"), f"{path}.action")
    if action not in _STEP_FIELDS:
        raise ctx.fail(
            f"{path}.action",
            f"unknown action {show(action)} (expected one of: {', '.join(_STEP_FIELDS)})",
        )
    ctx.keys(t, path, _STEP_FIELDS[action] | {"action"})
    kernel = ""
    if action in ("boot", "kexec", "kdump"):
        kernel = ctx.str_(t.get("kernel"), f"{path}.kernel")
        if kernel not in PROFILES:
            raise ctx.fail(
                f"{path}.kernel",
                f"unknown kernel profile {show(kernel)} (known: {', '.join(PROFILES)})",
            )
    device = ""
    msis = 0
    if action == "traffic":
        device = ctx.str_(t.get("device"), f"{path}.device")
        if device not in devices:
            raise ctx.fail(f"{path}.device", f"no device named {show(device)}")
        msis = ctx.int_(t.get("msis"), f"{path}.msis", 0, MAX_MSIS_PER_STEP)
    if action in ("bind", "unbind"):
        device = ctx.str_(t.get("device"), f"{path}.device")
        if device not in devices:
            raise ctx.fail(f"{path}.device", f"no device named {device!r}")
    fraction = 0.0
    if action == "page-cache":
        f = t.get("fraction")
        if isinstance(f, bool) or not isinstance(f, int | float) or not 0 <= f <= 1:
            raise ctx.fail(f"{path}.fraction", f"must be a number from 0 to 1, not {show(f)}")
        fraction = float(f)
    handover = ctx.int_(t.get("handover_msis", 0), f"{path}.handover_msis", 0, MAX_MSIS_PER_STEP)
    times = 1
    sub: tuple[Step, ...] = ()
    if action == "repeat":
        if not top:
            raise ctx.fail(f"{path}.action", "'repeat' cannot be nested")
        times = ctx.int_(t.get("times"), f"{path}.times", 1, MAX_STEPS)
        raw_sub = t.get("steps")
        if not isinstance(raw_sub, list) or not raw_sub:
            raise ctx.fail(f"{path}.steps", "must be a non-empty array of step tables")
        sub = tuple(
            _step(ctx, s, f"{path}.steps[{i}]", devices, top=False, cpus=cpus)
            for i, s in enumerate(raw_sub)
        )
    cmdline = t.get("cmdline", "nr_cpus=1" if action == "kdump" else "")
    if not isinstance(cmdline, str):
        raise ctx.fail(f"{path}.cmdline", f"must be a string, not {show(cmdline)}")
    try:
        parsed = parse_cmdline(cmdline)
    except CmdlineError as e:
        raise ctx.fail(f"{path}.cmdline", str(e)) from None
    for name, value in (("maxcpus", parsed.maxcpus), ("nr_cpus", parsed.nr_cpus)):
        if value is not None and value > cpus:
            raise ctx.fail(f"{path}.cmdline", f"{name}={value}: the platform has {cpus} CPUs")
    cpu_key = "panic_cpu" if action == "kdump" else "cpu"
    cpu = ctx.int_(t.get(cpu_key, 0), f"{path}.{cpu_key}", 0, cpus - 1)
    if action in ("cpu-down", "cpu-up") and "cpu" not in t:
        raise ctx.fail(f"{path}.cpu", "missing: which CPU")
    inflight = ctx.int_(t.get("inflight_msis", 0), f"{path}.inflight_msis", 0, MAX_MSIS_PER_STEP)
    masked = ctx.int_(t.get("masked_msis", 0), f"{path}.masked_msis", 0, MAX_MSIS_PER_STEP)
    loader = t.get("loader", "kexec-tools")
    if loader not in LOADERS:
        raise ctx.fail(
            f"{path}.loader",
            f"unknown loader {show(loader)} (expected one of: {', '.join(LOADERS)})",
        )
    default_initrd = 0 if action == "boot" else INITRD_BYTES
    initrd = _size(ctx, t.get("initrd", default_initrd), f"{path}.initrd")
    if initrd > 1 << 34:
        raise ctx.fail(f"{path}.initrd", "must be at most 16 GiB")
    image = None
    if "image" in t:
        image = ctx.int_(t["image"], f"{path}.image", 0, 1 << 52)
        if image % 0x10000:
            raise ctx.fail(f"{path}.image", "must be 64 KiB aligned (EFI_KIMG_ALIGN)")
    mem_min = ctx.int_(t.get("mem_min", 0), f"{path}.mem_min", 0, ULONG_MAX)
    mem_max = ctx.int_(t.get("mem_max", ULONG_MAX), f"{path}.mem_max", 0, ULONG_MAX)
    if mem_min >= mem_max:
        raise ctx.fail(f"{path}.mem_max", "must be above mem_min")
    return Step(
        action,
        kernel,
        device,
        msis,
        fraction,
        handover,
        times,
        sub,
        cmdline,
        cpu,
        inflight,
        loader,
        initrd,
        image,
        mem_min,
        mem_max,
        masked_msis=masked,
    )


def _msis(step: Step, devices: int) -> int:
    return step.msis + step.handover_msis + (step.inflight_msis + step.masked_msis) * devices


def _check_work(ctx: _Ctx, steps: tuple[Step, ...], devices: int) -> None:
    """Refuse scenarios that would run for minutes, at the step that crosses a bound."""
    count = msis = 0
    for i, s in enumerate(steps):
        times = s.times if s.action == "repeat" else 1
        body = s.steps if s.action == "repeat" else (s,)
        count += times * len(body)
        msis += times * sum(_msis(b, devices) for b in body)
        where = f"steps[{i}].times" if s.action == "repeat" else f"steps[{i}]"
        if count > MAX_STEPS:
            raise ctx.fail(where, f"the scenario expands to more than {MAX_STEPS} steps here")
        if msis > MAX_TOTAL_MSIS:
            raise ctx.fail(
                where, f"the scenario sends more than {MAX_TOTAL_MSIS} MSIs by this step"
            )


def _check_kernel_kinds(ctx: _Ctx, steps: tuple[Step, ...]) -> None:
    """FreeBSD kboot is only ever a next kernel: firmware boots Linux, and the model has
    no FreeBSD kexec for a kernel after it."""
    running = ""
    for i, s in enumerate(steps):
        # a repeat body runs at least twice when times > 1: twice shows every transition
        body = [(f"steps[{i}].steps[{j}]", b) for j, b in enumerate(s.steps)] * min(s.times, 2)
        for path, b in body if s.action == "repeat" else [(f"steps[{i}]", s)]:
            if b.action not in ("boot", "kexec", "kdump"):
                continue
            if b.action == "boot" and PROFILES[b.kernel].kind != "linux":
                raise ctx.fail(f"{path}.kernel", f"{b.kernel} cannot boot from firmware")
            if b.action != "boot" and PROFILES[running].kind != "linux":
                raise ctx.fail(f"{path}.action", f"{running} cannot {b.action} another kernel")
            running = b.kernel


def _toml_type(value: Any) -> str:
    """What TOML calls the type of a parsed ``value``."""
    names = {list: "an array", dict: "a table", str: "a string", bool: "a boolean"}
    return names.get(type(value), type(value).__name__)


_EXPECT_RANGES = (
    "msis_sent",
    "msis_delivered",
    "msis_lost",
    "corrupted_bits",
    "memreserve_nodes",
    "memreserve_entries",
)
_EXPECT_PERGEN = ("tainted", "reused_tables", "crashed")


def _expect(ctx: _Ctx, raw: Any) -> Expect:
    t = ctx.table(raw, "expect")
    allowed = (
        set(_EXPECT_RANGES)
        | set(_EXPECT_PERGEN)
        | {"memreserve_stable", "log_contains", "log_absent"}
    )
    ctx.keys(t, "expect", allowed)
    values: dict[str, Any] = {}
    for k in _EXPECT_RANGES:
        if k in t:
            values[k] = _range(ctx, t[k], f"expect.{k}")
    for k in _EXPECT_PERGEN:
        if k in t:
            values[k] = _pergen(ctx, t[k], f"expect.{k}")
    if "memreserve_stable" in t:
        values["memreserve_stable"] = ctx.bool_(t["memreserve_stable"], "expect.memreserve_stable")
    for k in ("log_contains", "log_absent"):
        if k in t:
            v = t[k]
            if not isinstance(v, list) or not all(isinstance(s, str) and s for s in v):
                raise ctx.fail(f"expect.{k}", "must be an array of non-empty strings")
            values[k] = tuple(v)
    return Expect(**values)


def _range(ctx: _Ctx, v: Any, path: str) -> Range:
    if isinstance(v, dict):
        ctx.keys(v, path, {"min", "max"})
        lo = ctx.int_(v["min"], f"{path}.min", 0, MAX_COUNT) if "min" in v else None
        hi = ctx.int_(v["max"], f"{path}.max", 0, MAX_COUNT) if "max" in v else None
        if lo is None and hi is None:
            raise ctx.fail(path, "needs min, max or both")
        if lo is not None and hi is not None and lo > hi:
            raise ctx.fail(path, f"min {lo} is greater than max {hi}")
        return (lo, hi)
    n = ctx.int_(v, path, 0, MAX_COUNT)
    return (n, n)


def _pergen(ctx: _Ctx, v: Any, path: str) -> PerGen:
    if isinstance(v, bool):
        return v
    if isinstance(v, list) and v and all(isinstance(x, bool) for x in v):
        return tuple(v)
    if isinstance(v, dict):
        ctx.keys(v, path, {"first", "rest"})
        if set(v) != {"first", "rest"}:
            raise ctx.fail(path, "needs both 'first' and 'rest'")
        return (
            "first-rest",
            ctx.bool_(v["first"], f"{path}.first"),
            ctx.bool_(v["rest"], f"{path}.rest"),
        )
    raise ctx.fail(
        path,
        "must be true/false, an array of them (one per generation), or { first = ..., rest = ... }",
    )
