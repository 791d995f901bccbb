"""The kernel command line parameters the model honours.

Only parameters that change what happens to LPI tables are modelled:

* ``crashkernel=SIZE`` reserves memory for a capture kernel (arm64 ``reserve_crashkernel``);
* ``maxcpus=N`` brings up only N CPUs at boot, the others stay possible and can be
  hotplugged later;
* ``nr_cpus=N`` makes only N CPUs possible (what kdump initramfs tooling passes as
  ``nr_cpus=1``);
* ``irqchip.gicv3_nolpi=1`` turns LPI support off (``gic_dist_supports_lpis()``).

Unknown parameters are rejected rather than ignored so that a typo in a scenario is an
error, not a silently different experiment.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gickexec.bounded import InputError, clip, parse_uint

__all__ = ["CmdlineError", "KernelCmdline", "parse_cmdline", "parse_size"]

# [0-9], not \d: memparse()'s simple_strtoull() takes ASCII digits only.
_SIZE = re.compile(r"([0-9]+)([KMGkmg]?)", re.ASCII)
_SHIFT = {"": 0, "k": 10, "m": 20, "g": 30}


class CmdlineError(ValueError):
    """A command line the model cannot use; the message says which parameter and why."""


@dataclass(frozen=True, slots=True)
class KernelCmdline:
    crashkernel: int = 0
    maxcpus: int | None = None
    nr_cpus: int | None = None
    gicv3_nolpi: bool = False

    def __str__(self) -> str:
        parts = []
        if self.crashkernel:
            parts.append(f"crashkernel={self.crashkernel >> 20}M")
        if self.maxcpus is not None:
            parts.append(f"maxcpus={self.maxcpus}")
        if self.nr_cpus is not None:
            parts.append(f"nr_cpus={self.nr_cpus}")
        if self.gicv3_nolpi:
            parts.append("irqchip.gicv3_nolpi=1")
        return " ".join(parts)


def parse_size(text: str) -> int:
    """``memparse()`` of ``text`` (``512M``, ``1G``, ``65536``)."""
    m = _SIZE.fullmatch(text)
    if not m:
        raise CmdlineError(f"{clip(text)!r} is not a size (e.g. 512M)")
    try:
        return parse_uint(m.group(1), "size", bases=False) << _SHIFT[m.group(2).lower()]
    except InputError as e:
        raise CmdlineError(str(e)) from None


def _count(name: str, value: str) -> int:
    try:
        return parse_uint(value, name, bases=False)
    except InputError:
        raise CmdlineError(f"{name}={clip(value)}: expects a number of CPUs") from None


def parse_cmdline(text: str) -> KernelCmdline:
    """Parse the parameters above; anything else is a :class:`CmdlineError`."""
    crash = 0
    maxcpus: int | None = None
    nr_cpus: int | None = None
    nolpi = False
    for word in text.split():
        name, _, value = word.partition("=")
        match name:
            case "crashkernel":
                crash = parse_size(value)
                if crash == 0:
                    raise CmdlineError("crashkernel=0 reserves nothing")
            case "maxcpus":
                maxcpus = _count(name, value)
            case "nr_cpus":
                nr_cpus = _count(name, value)
                if nr_cpus == 0:
                    raise CmdlineError("nr_cpus=0: at least the boot CPU runs")
            case "irqchip.gicv3_nolpi":
                if value not in ("0", "1", "y", "n", ""):
                    raise CmdlineError(f"irqchip.gicv3_nolpi={clip(value)}: expects 0 or 1")
                nolpi = value in ("1", "y", "")
            case _:
                raise CmdlineError(
                    f"{clip(word)!r}: not a parameter the model knows "
                    "(crashkernel=, maxcpus=, nr_cpus=, irqchip.gicv3_nolpi=)"
                )
    return KernelCmdline(crash, maxcpus, nr_cpus, nolpi)
