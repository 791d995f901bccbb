"""What a running arm64 Linux shows about its GIC, memory and planned kexec: the reader
behind ``gickexec preflight``.

Three inputs, each what a user can copy off a live system (``gickexec collect`` prints a
script that gathers them):

* the kernel log of the running boot: ``dmesg`` (with or without printk timestamps) or a
  whole serial log; in a serial log with several boots the first one is the running
  kernel, as in the project's realcheck logs (tests/data/realcheck), whose ``RC iomem:``
  and ``RC kexec-d:`` lines embed the other two inputs;
* ``/proc/iomem`` read as root (for other users the kernel prints every address as 0,
  ``kernel/resource.c`` ``r_show()``);
* optionally kexec-tools' ``-d`` output of the planned ``kexec -l`` or ``kexec -p``.

The kernel lines are the format strings of Linux 6.1 (``drivers/irqchip/irq-gic-v3-its.c``
``its_setup_baser()`` "ITS@%pa: allocated %d %s @%lx", ``its_cpu_init_lpis()`` "CPU%d:
using %s LPI pending table @%pa", ``allocate_lpi_tables()`` "using LPI property table
@%pa"; ``drivers/firmware/efi/efi.c`` "MEMRESERVE=0x%lx", ``efi_init()`` (arm64
``drivers/firmware/efi/efi-init.c``) "UEFI not found."; ``arch/arm64/mm/init.c``
``reserve_crashkernel()`` "crashkernel reserved: ...").  Parsing is line by line with
anchored regular expressions and a bound on the lines read; what cannot be read raises
:class:`LiveError` with a message saying which input and why.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gickexec.bounded import InputError, clip, read_input
from gickexec.scenario.compare import MAX_LINES, kexec_segments, split_generations

__all__ = [
    "BUNDLE_FILES",
    "INTERRUPTS_PREFIX",
    "IOMEM_PREFIX",
    "KEXEC_D_PREFIX",
    "KexecPlan",
    "LiveError",
    "LiveSystem",
    "LiveTables",
    "parse_interrupts",
    "parse_iomem",
    "parse_kernel_log",
    "parse_kexec_debug",
    "read_bundle",
    "read_live",
    "read_text",
    "tables_from_lines",
]

#: How the realcheck logs' ``/init`` embeds /proc/iomem and ``kexec -d`` output.
IOMEM_PREFIX = "RC iomem: "
KEXEC_D_PREFIX = "RC kexec-d: "
INTERRUPTS_PREFIX = "RC irq: "

#: Every number a pattern captures is bounded: decimal to a few digits, hex to 64 bits
#: (CPython refuses to convert very long decimal strings)
_HOST = re.compile(r"^\[host\s+[\d.]+\]\s?")
_VERSION = re.compile(r"Linux version (\d{1,4})\.(\d{1,4})(?:\.(\d{1,6}))?(\S*)")
_ITS = re.compile(
    r"^ITS@0x([0-9a-f]{1,16}): allocated (\d{1,10}) (Devices|Interrupt Collections|Virtual CPUs) "
    r"@([0-9a-f]{1,16})"
)
#: Older kernels print "GIC: ..." and the pending line without "GICv3: " and without
#: "allocated"/"reserved" (the model's pre-v4.20 printk era: kernel/printk.py
#: ITS_PROP_TABLE_OLD, ITS_PEND_TABLE_OLD)
_PROP = re.compile(r"^(?:GICv3|GIC): using LPI property table @0x([0-9a-f]{1,16})")
_PEND = re.compile(
    r"^(?:GICv3: )?CPU(\d{1,5}): using (?:(allocated|reserved) )?LPI pending table "
    r"@0x([0-9a-f]{1,16})"
)
_REDIST = re.compile(
    r"^GICv3: CPU(\d{1,5}): found redistributor [0-9a-f]{1,16} region \d{1,5}:0x([0-9a-f]{1,16})"
)
#: QEMU virt's memory map (hw/arm/virt.c ``base_memmap``): VIRT_GIC_ITS 0x08080000,
#: VIRT_GIC_REDIST 0x080A0000; a log whose firmware tables do not name the machine
#: still shows them
_QEMU_VIRT_GIC = ("ITS [mem 0x08080000-0x0809ffff]", 0x080A0000)
_MEMRESERVE = re.compile(r"^efi: .*\bMEMRESERVE=0x([0-9a-f]{1,16})")
_CRASH = re.compile(r"^crashkernel reserved: 0x([0-9a-f]{1,16}) - 0x([0-9a-f]{1,16})")
_INITRD = re.compile(r"^Freeing initrd memory: (\d{1,12})K")
_SMP = re.compile(r"^smp: Brought up \d{1,5} nodes?, (\d{1,6}) CPUs?")
_ITS_MEM = re.compile(r"^ITS \[mem 0x([0-9a-f]{1,16})-")
_ITS_MSI = re.compile(r"\bITS-MSI\s+(\d{1,10})\s")
_IOMEM = re.compile(r"^(\s*)([0-9a-fA-F]{1,16})-([0-9a-fA-F]{1,16}) : (.+?)\s*$")
_KEXEC_CMDLINE = re.compile(r"arch_process_options:\d{1,6}: command_line: (.{0,4096})$")
_KEXEC_INITRD = re.compile(r"^initrd: base ([0-9a-f]{1,16}), size [0-9a-f]{1,16}h \((\d{1,15})\)")
_KEXEC_IMAGE_SIZE = re.compile(r"image_arm64_load: image_size:\s+([0-9a-f]{1,16})")


class LiveError(ValueError):
    """An input preflight cannot read; the message names the input and the reason."""


@dataclass(frozen=True, slots=True)
class LiveTables:
    """The GIC tables the running kernel printed: ITS tables ``(kind, addr)``, the LPI
    property table and each CPU's pending table (and whether it was reused)."""

    its: tuple[tuple[str, int], ...]
    prop: int | None
    pend: dict[int, int] = field(default_factory=dict)
    reused: bool = False

    def ranges(self) -> list[tuple[str, int, int]]:
        """``(what, addr, bytes)`` of every table, 64 KiB each (Linux 6.1 allocates the
        property table and every pending table as 64 KiB: ``LPI_NRBITS`` 16 bits for
        QEMU's and most GICs' IDbits, ``its_allocate_pending_table()`` rounds to
        ``LPI_PENDBASE_SZ`` 64 KiB; ITS tables are at least one 64 KiB page here).
        UNCONFIRMED for GICs with more than 16 ID bits: there the property table is larger."""
        out = [(f"ITS {kind}", addr, 0x10000) for kind, addr in self.its]
        if self.prop is not None:
            out.append(("LPI property table", self.prop, 0x10000))
        out.extend(
            (f"CPU{cpu} LPI pending table", a, 0x10000) for cpu, a in sorted(self.pend.items())
        )
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "its": [{"kind": k, "addr": a} for k, a in self.its],
            "prop": self.prop,
            "pend": {str(c): a for c, a in sorted(self.pend.items())},
            "reused": self.reused,
        }


@dataclass(frozen=True, slots=True)
class KexecPlan:
    """What kexec-tools' ``-d`` output says of the planned load."""

    kdump: bool
    segments: tuple[tuple[int, int], ...]
    cmdline: str | None
    initrd_bytes: int | None
    image_size: int | None

    def to_json(self) -> dict[str, Any]:
        return {
            "kdump": self.kdump,
            "segments": [{"mem": a, "memsz": s} for a, s in self.segments],
            "cmdline": self.cmdline,
            "initrd_bytes": self.initrd_bytes,
            "image_size": self.image_size,
        }


@dataclass(frozen=True, slots=True)
class LiveSystem:
    """The running system as its kernel log and /proc/iomem show it."""

    release: str
    version: tuple[int, int]
    efi: bool
    acpi: bool
    machine: str
    qemu_virt: bool
    cmdline: str
    cpus: int
    memreserve: int | None
    tables: LiveTables
    crashkernel: tuple[int, int] | None
    ram: tuple[tuple[int, int], ...]
    #: where /proc/iomem's "Kernel code" (``_stext``) starts: the image's load address
    #: plus the build's ``_stext`` offset (kernel/profiles.py ``KernelBuild.stext``)
    kernel_code: int | None
    initrd_bytes: int
    plan: KexecPlan | None
    #: ``(device_id, vectors)`` of the MSI devices /proc/interrupts shows
    devices: tuple[tuple[int, int], ...] = ()
    #: the first ITS's and CPU0's redistributor's MMIO addresses, as the log shows them
    its_base: int | None = None
    gicr_base: int | None = None

    @property
    def boot(self) -> str:
        """The boot path: "uefi-acpi", "uefi-dt" or "dt"."""
        if not self.efi:
            return "dt"
        return "uefi-acpi" if self.acpi else "uefi-dt"

    def to_json(self) -> dict[str, Any]:
        return {
            "release": self.release,
            "efi": self.efi,
            "boot": self.boot,
            "machine": self.machine,
            "qemu_virt": self.qemu_virt,
            "cmdline": self.cmdline,
            "cpus": self.cpus,
            "memreserve": self.memreserve,
            "tables": self.tables.to_json(),
            "crashkernel": (
                None
                if self.crashkernel is None
                else {"base": self.crashkernel[0], "size": self.crashkernel[1]}
            ),
            "ram": [{"base": b, "size": s} for b, s in self.ram],
            "kernel_code": self.kernel_code,
            "initrd_bytes": self.initrd_bytes,
            "kexec": None if self.plan is None else self.plan.to_json(),
            "devices": [{"device_id": d, "vectors": v} for d, v in self.devices],
        }


def _first_boot(text: str) -> tuple[str, list[str]]:
    """The running kernel's part of ``text`` (up to the second boot) and its lines."""
    gens = split_generations(text)
    if not gens:
        if _VERSION.search(text) or "Linux version" in text:
            raise LiveError(
                "kernel log: a Linux log without 'Booting Linux on physical CPU' -- not an "
                "arm64 kernel's (preflight reads arm64 GICv3 systems), or its start was "
                "cut off (dmesg's ring buffer overwritten: read it early, or boot with a "
                "larger log_buf_len=)"
            )
        raise LiveError("kernel log: no Linux boot in it ('Booting Linux on physical CPU')")
    raw = text.splitlines()[:MAX_LINES]
    starts = [i for i, ln in enumerate(raw) if "Booting Linux on physical CPU" in ln]
    part = "\n".join(raw[: starts[1]]) if len(starts) > 1 else "\n".join(raw)
    return part, gens[0]


def _embedded(text: str, prefix: str) -> str:
    """The lines a realcheck log embeds after ``prefix`` (host stamps removed)."""
    out = []
    for raw in text.splitlines()[:MAX_LINES]:
        line = _HOST.sub("", raw)
        if line.startswith(prefix):
            out.append(line[len(prefix) :])
    return "\n".join(out)


def parse_iomem(text: str) -> tuple[list[tuple[int, int]], int | None]:
    """``(System RAM ranges as (base, size), where "Kernel code" starts)`` of
    /proc/iomem: top-level "System RAM" entries (adjacent ones merged) and the first
    "Kernel code" child."""
    ram: list[tuple[int, int]] = []
    code: int | None = None
    seen = 0
    for raw in text.splitlines()[:MAX_LINES]:
        m = _IOMEM.match(raw)
        if m is None:
            continue
        seen += 1
        indent, start, end, name = m.groups()
        lo, hi = int(start, 16), int(end, 16)
        if hi < lo:
            raise LiveError(f"/proc/iomem: {raw.strip()!r}: the range ends before it starts")
        if not indent and name == "System RAM":
            if ram and ram[-1][0] + ram[-1][1] == lo:
                ram[-1] = (ram[-1][0], ram[-1][1] + hi - lo + 1)
            else:
                ram.append((lo, hi - lo + 1))
        elif name == "Kernel code" and code is None:
            code = lo
    if not seen:
        raise LiveError("/proc/iomem: no 'START-END : NAME' line in it (another file?)")
    if not ram:
        raise LiveError("/proc/iomem: no top-level 'System RAM' range")
    if all(b == 0 for b, _ in ram):
        raise LiveError(
            "/proc/iomem: every address reads 0 -- it was read by a user other than root "
            "(the kernel hides the addresses): read it as root"
        )
    return ram, code


def parse_kexec_debug(text: str) -> KexecPlan:
    """The planned load in kexec-tools' ``-d`` output (2.0.25's format: the segment list
    ``kexec_load()`` prints, sorted by address; ``load_crashdump_segments`` for ``-p``)."""
    if KEXEC_D_PREFIX in text:
        text = _embedded(text, KEXEC_D_PREFIX)
    loads = kexec_segments(text)
    if not loads or not loads[-1]:
        raise LiveError(
            "kexec -d output: no 'segment[N].mem/.memsz' lines (the load failed or the "
            "output was cut: run the same 'kexec -d -l ...' or 'kexec -d -p ...' again)"
        )
    segments = tuple(loads[-1])
    if any(size == 0 for _, size in segments):
        raise LiveError("kexec -d output: a segment without its memsz line (cut off?)")
    cmdline = initrd = image_size = None
    for raw in text.splitlines()[:MAX_LINES]:
        line = raw.strip()
        if (m := _KEXEC_CMDLINE.search(raw.rstrip("\r"))) is not None:
            # as printed, trailing blanks too: they are part of the DTB's bootargs
            cmdline = m.group(1)
        elif (m := _KEXEC_INITRD.match(line)) is not None:
            initrd = int(m.group(2))
        elif (m := _KEXEC_IMAGE_SIZE.search(line)) is not None:
            image_size = int(m.group(1), 16)
    kdump = "load_crashdump_segments" in text
    return KexecPlan(kdump, segments, cmdline, initrd, image_size)


def tables_from_lines(lines: list[str]) -> LiveTables:
    """The ITS and LPI tables one boot's kernel lines name (a live log's or the model's)."""
    its: list[tuple[str, int]] = []
    prop: int | None = None
    pend: dict[int, int] = {}
    reused = False
    for line in lines:
        if (m := _ITS.match(line)) is not None:
            its.append((m.group(3), int(m.group(4), 16)))
        elif (m := _PROP.match(line)) is not None:
            prop = int(m.group(1), 16)
        elif (m := _PEND.match(line)) is not None:
            pend[int(m.group(1))] = int(m.group(3), 16)
            reused = reused or m.group(2) == "reserved"
        elif line.startswith("GICv3: Using preallocated redistributor tables"):
            reused = True
    return LiveTables(tuple(its), prop, pend, reused)


def parse_interrupts(text: str) -> list[tuple[int, int]]:
    """``(device_id, vectors)`` of every PCI device with ITS-MSI rows in
    /proc/interrupts.  A PCI MSI's hwirq is ``(requester ID << 11) | vector index``
    (Linux 6.1 drivers/pci/msi/irqdomain.c ``pci_msi_domain_calc_hwirq()``, with the PCI
    domain number above bit 27), and the ITS's DeviceID is the requester ID on a machine
    without an ID translation (QEMU virt; UNCONFIRMED elsewhere: an IORT or msi-map may
    translate it)."""
    vectors: dict[int, int] = {}
    for raw in text.splitlines()[:MAX_LINES]:
        m = _ITS_MSI.search(raw)
        if m is None:
            continue
        hwirq = int(m.group(1))
        dev = (hwirq >> 11) & 0xFFFF
        vectors[dev] = max(vectors.get(dev, 0), (hwirq & 0x7FF) + 1)
    return sorted(vectors.items())


def parse_kernel_log(text: str) -> dict[str, Any]:
    """The running kernel's facts from its log (the fields of :class:`LiveSystem` that
    the log holds)."""
    _, lines = _first_boot(text)
    release = ""
    version: tuple[int, int] | None = None
    efi: bool | None = None
    acpi = False
    machine = ""
    cmdline = ""
    redists: set[int] = set()
    smp_cpus = 0
    memreserve: int | None = None
    crash: tuple[int, int] | None = None
    initrd_k = 0
    gicv3 = False
    gicr0: int | None = None
    its_base: int | None = None
    for line in lines:
        if (m := _VERSION.search(line)) is not None and not release:
            release = line[m.start() + len("Linux version ") :].split()[0]
            version = (int(m.group(1)), int(m.group(2)))
        if line == "efi: UEFI not found.":
            efi = False
        elif line.startswith("efi: EFI v"):
            efi = True
        elif line.startswith("ACPI: RSDP"):
            acpi = True
            machine = machine or ("BOCHS" if "BOCHS" in line else "")
        elif line.startswith("Machine model: "):
            machine = line.removeprefix("Machine model: ")
        elif line.startswith("Kernel command line: "):
            cmdline = line.removeprefix("Kernel command line: ")
        elif line.startswith("GICv3: "):
            gicv3 = True
        elif (m := _ITS_MEM.match(line)) is not None and its_base is None:
            its_base = int(m.group(1), 16)
        if (m := _MEMRESERVE.match(line)) is not None:
            memreserve = int(m.group(1), 16)
        elif (m := _REDIST.match(line)) is not None:
            redists.add(int(m.group(1)))
            if int(m.group(1)) == 0:
                gicr0 = int(m.group(2), 16)
        elif (m := _CRASH.match(line)) is not None:
            lo, hi = int(m.group(1), 16), int(m.group(2), 16)
            crash = (lo, hi - lo)
        elif (m := _INITRD.match(line)) is not None:
            initrd_k = int(m.group(1))
        elif (m := _SMP.match(line)) is not None:
            smp_cpus = int(m.group(1))
    if version is None:
        raise LiveError(
            "kernel log: no 'Linux version' banner (the log's start is missing: dmesg's "
            "ring buffer overwritten, or a log that starts after the boot)"
        )
    if not gicv3:
        raise LiveError(
            "kernel log: no 'GICv3:' line -- the machine has no GICv3 (a GICv2 has no "
            "LPIs) or this is not an arm64 kernel's log"
        )
    if efi is None:
        raise LiveError("kernel log: no 'efi:' line, so EFI or not cannot be told (cut off?)")
    tables = tables_from_lines(lines)
    if tables.its and tables.prop is None:
        raise LiveError(
            "kernel log: ITS tables but no 'using LPI property table' line (the log is cut "
            "off before the LPI setup)"
        )
    return {
        "release": release,
        "version": version,
        "efi": efi,
        "acpi": acpi,
        "machine": machine,
        "qemu_virt": machine in ("BOCHS", "linux,dummy-virt")
        or (_QEMU_VIRT_GIC[0] in lines and gicr0 == _QEMU_VIRT_GIC[1]),
        "its_base": its_base,
        "gicr_base": gicr0,
        "cmdline": cmdline,
        "cpus": max(len(redists), smp_cpus, 1),
        "memreserve": memreserve,
        "tables": tables,
        "crashkernel": crash,
        # free_initrd_mem() frees the whole pages inside the initrd: the exact byte
        # count is not printed; the model takes the pages it freed
        "initrd_bytes": initrd_k * 1024,
    }


#: The files of a bundle (what ``collect.sh`` writes), by :func:`read_live` argument.
BUNDLE_FILES = {
    "log": "dmesg.txt",
    "iomem": "iomem.txt",
    "kexec_debug": "kexec-d.txt",
    "interrupts": "interrupts.txt",
}
#: A bundle file larger than this is refused (a whole serial log is a few MiB)
MAX_BUNDLE_FILE = 64 << 20


def read_bundle(directory: Path) -> LiveSystem:
    """:func:`read_live` on the files of a bundle directory (:data:`BUNDLE_FILES`);
    dmesg.txt and iomem.txt must be there, the others may be."""
    if not directory.is_dir():
        raise LiveError(f"{clip(str(directory))}: not a directory (a bundle is one)")
    texts: dict[str, str | None] = {}
    for arg, name in BUNDLE_FILES.items():
        path = directory / name
        if not path.exists():
            if arg in ("log", "iomem"):
                raise LiveError(
                    f"{clip(str(directory))}: no {name} in it (is it what collect.sh wrote?)"
                )
            texts[arg] = None
            continue
        texts[arg] = read_text(path)
    log = texts.pop("log")
    assert log is not None
    return read_live(log, **texts)


def read_text(path: Path) -> str:
    """A bounded input file as text (undecodable bytes replaced, NULs refused)."""
    try:
        data = read_input(str(path), limit=MAX_BUNDLE_FILE)
    except InputError as e:
        raise LiveError(str(e)) from None
    if b"\0" in data[:65536]:
        raise LiveError(f"{clip(str(path))}: binary data, not a text file")
    return data.decode("utf-8", errors="replace")


def read_live(
    log: str,
    iomem: str | None = None,
    kexec_debug: str | None = None,
    interrupts: str | None = None,
) -> LiveSystem:
    """Read a live system from its kernel log and, unless the log embeds them (realcheck
    logs), its /proc/iomem, kexec ``-d`` output and /proc/interrupts."""
    part, _ = _first_boot(log)
    facts = parse_kernel_log(log)
    if iomem is None:
        iomem = _embedded(part, IOMEM_PREFIX)
        if not iomem:
            raise LiveError("no /proc/iomem given (--iomem) and none embedded in the log")
    ram, kernel_code = parse_iomem(iomem)
    if kexec_debug is None:
        embedded = _embedded(part, KEXEC_D_PREFIX)
        kexec_debug = embedded or None
    plan = parse_kexec_debug(kexec_debug) if kexec_debug is not None else None
    if interrupts is None:
        interrupts = _embedded(part, INTERRUPTS_PREFIX)
    devices = tuple(parse_interrupts(interrupts))
    return LiveSystem(ram=tuple(ram), kernel_code=kernel_code, plan=plan, devices=devices, **facts)
