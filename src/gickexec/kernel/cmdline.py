"""The kernel command line parameters the model honours.

Only parameters that change what happens to LPI tables are modelled:

* ``crashkernel=SIZE`` reserves memory for a capture kernel (arm64 ``reserve_crashkernel``);
* ``maxcpus=N`` brings up only N CPUs at boot, the others stay possible and can be
  hotplugged later;
* ``nr_cpus=N`` makes only N CPUs possible (what kdump initramfs tooling passes as
  ``nr_cpus=1``);
* ``irqchip.gicv3_nolpi=1`` turns LPI support off (``gic_dist_supports_lpis()``).

* ``nokaslr`` keeps the EFI stub from randomising where the image runs.

Every other parameter is passed through and shown in the "Kernel command line:" line, as
a real kernel does; those the kernel does not know at all (no ``__setup``/``early_param``
or module parameter of that name: :data:`KNOWN_ELSEWHERE` lists the common ones the model
recognises without interpreting) go to init and are listed in "Unknown kernel command
line parameters".  Malformed values of the interpreted parameters are errors.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gickexec.bounded import InputError, clip, parse_uint

__all__ = ["KNOWN_ELSEWHERE", "CmdlineError", "KernelCmdline", "parse_cmdline", "parse_size"]

#: Parameters a Linux kernel knows (init/main.c, kernel/printk, drivers ...) that change
#: nothing the model follows: passed through, not reported as unknown.
KNOWN_ELSEWHERE = frozenset(
    {
        "console", "earlycon", "earlyprintk", "initrd", "quiet", "debug", "loglevel",
        "root", "rootwait", "rootfstype", "rw", "ro", "init", "rdinit", "panic",
        "reset_devices", "acpi", "efi", "mem", "cma", "swiotlb", "iommu", "kaslr",
        "ignore_loglevel", "printk.time", "elfcorehdr", "noinitrd", "nosmp", "irqaffinity",
        "systemd.unit", "numa", "mitigations", "kpti", "rodata", "pci", "usbcore.autosuspend",
    }
)

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
    nokaslr: bool = False
    #: the line as given (what "Kernel command line:" prints)
    text: str = ""
    #: words the kernel does not know (passed to init)
    unknown: tuple[str, ...] = ()

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
        if self.nokaslr:
            parts.append("nokaslr")
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
    """Parse the parameters above; the rest pass through (see the module docstring)."""
    crash = 0
    maxcpus: int | None = None
    nr_cpus: int | None = None
    nolpi = False
    nokaslr = False
    unknown: list[str] = []
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
            case "nokaslr":
                nokaslr = True
            case _ if name in KNOWN_ELSEWHERE or name.startswith(("irqchip.", "efi.")):
                pass
            case _:
                unknown.append(word)
    return KernelCmdline(crash, maxcpus, nr_cpus, nolpi, nokaslr, text, tuple(unknown))
