"""Write the simulated machine's memory as an ELF core, the way a vmcore or QEMU's
``dump-guest-memory`` lays it out: ELF64, ET_CORE, EM_AARCH64, one PT_LOAD per RAM range
with its physical address, plus a PT_NOTE ``GICKEXEC`` telling where the EFI system
table is (so ``gickexec inspect`` needs no options).

Memory is sparse: the file is created with its full size and only the pages the model
stores are written, so an 8 GiB machine costs a sparse file with a few hundred KiB of
data (``inspect`` skips the holes with SEEK_DATA).  The file appears atomically, with
the mode of the file it replaces (or the umask's); an existing target that is not a
regular file (a FIFO, a device, a symlink) is refused, and temporary files an
interrupted earlier run left behind are removed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import struct
import tempfile
from pathlib import Path

from gickexec.bounded import InputError, parse_uint
from gickexec.hw.machine import Machine
from gickexec.hw.memory import PAGE_SIZE, PhysicalMemory

__all__ = [
    "NOTE_NAME",
    "VmcoreTargetError",
    "machine_info",
    "parse_note",
    "target_mode",
    "write_vmcore",
]

NOTE_NAME = "GICKEXEC"
_NOTE_TYPE = 0x47434B58  # "XKCG": the model's own note type
_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_PHDR = struct.Struct("<IIQQQQQQ")
_ET_CORE, _EM_AARCH64, _PT_LOAD, _PT_NOTE = 4, 183, 1, 4
_PF_RWX = 7


class VmcoreTargetError(OSError):
    """The output path exists and is not a regular file."""


def _pad4(b: bytes) -> bytes:
    return b + bytes(-len(b) % 4)


def _note(name: str, desc: bytes) -> bytes:
    n = name.encode() + b"\0"
    return struct.pack("<III", len(n), len(desc), _NOTE_TYPE) + _pad4(n) + _pad4(desc)


def write_vmcore(mem: PhysicalMemory, path: str | Path, *, info: dict[str, int]) -> int:
    """Write ``mem``'s RAM to ``path``; ``info`` (e.g. ``{"EFI_SYSTAB": addr}``) goes into
    the note as ``KEY=0x...`` lines.  Returns the number of data bytes written."""
    path = Path(path)
    desc = "".join(f"{k}={v:#x}\n" for k, v in sorted(info.items())).encode()
    note = _note(NOTE_NAME, desc)
    ram = list(mem.ram)
    phnum = 1 + len(ram)
    offset = _EHDR.size + phnum * _PHDR.size
    note_off = offset
    offset += len(note)
    offset += -offset % PAGE_SIZE
    phdrs = [_PHDR.pack(_PT_NOTE, 0, note_off, 0, 0, len(note), len(note), 4)]
    placed: list[tuple[int, int, int]] = []  # (file offset, paddr, size)
    for r in ram:
        phdrs.append(_PHDR.pack(_PT_LOAD, _PF_RWX, offset, 0, r.start, r.size, r.size, PAGE_SIZE))
        placed.append((offset, r.start, r.size))
        offset += r.size
    ident = b"\x7fELF" + bytes((2, 1, 1, 0)) + bytes(8)
    ehdr = _EHDR.pack(
        ident,
        _ET_CORE,
        _EM_AARCH64,
        1,
        0,
        _EHDR.size,
        0,
        0,
        _EHDR.size,
        _PHDR.size,
        phnum,
        64,
        0,
        0,
    )
    written = 0
    mode = target_mode(path)
    _remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{_temp_prefix(path)}{os.getpid()}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(ehdr + b"".join(phdrs) + note)
            f.truncate(offset)
            for file_off, start, size in placed:
                for run_start, data in _runs(mem, start, size):
                    f.seek(file_off + run_start - start)
                    f.write(data)
                    written += len(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return written


def target_mode(path: str | Path) -> int:
    """The mode a core written to ``path`` gets: the replaced file's, or what the umask
    allows; :class:`VmcoreTargetError` when ``path`` is no place to write one."""
    path = Path(path)
    if not path.parent.is_dir():
        raise VmcoreTargetError(errno.ENOENT, f"no such directory {path.parent}")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask
    if not stat.S_ISREG(st.st_mode):
        raise VmcoreTargetError(errno.EEXIST, "exists and is not a regular file; not replacing it")
    return stat.S_IMODE(st.st_mode)


def _temp_prefix(path: Path) -> str:
    return f".{path.name}.tmp-"


def _remove_stale_temps(path: Path) -> None:
    """Temporary files of earlier writers of ``path`` whose process no longer runs."""
    prefix = _temp_prefix(path)
    with contextlib.suppress(OSError):
        for entry in os.scandir(path.parent):
            pid = entry.name.removeprefix(prefix).partition(".")[0]
            ours = entry.name.startswith(prefix) and pid.isascii() and pid.isdigit()
            if ours and int(pid) != os.getpid() and not _alive(int(pid)):
                Path(entry.path).unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # someone else's process (or no pid we can ask about): leave it
    return True


def _runs(mem: PhysicalMemory, start: int, size: int) -> list[tuple[int, bytes]]:
    """Consecutive stored pages of ``[start, start + size)`` coalesced into runs."""
    out: list[tuple[int, bytes]] = []
    run: list[int] = []
    for pfn in [*mem.nonzero_pages(start, size), -2]:
        if run and pfn != run[-1] + 1:
            lo = run[0] * PAGE_SIZE
            out.append((lo, mem.read(lo, len(run) * PAGE_SIZE)))
            run = []
        if pfn >= 0:
            run.append(pfn)
    return out


def machine_info(machine: Machine, systab: int | None) -> dict[str, int]:
    """What a debugger would add to a dump: the EFI system table address and, for every
    redistributor with LPIs enabled, GICR_PROPBASER and GICR_PENDBASER as they read."""
    info = {} if systab is None else {"EFI_SYSTAB": systab}
    for rd in machine.rdists:
        if rd.enable_lpis:
            info[f"GICR{rd.cpu}_PROPBASER"] = rd.propbaser
            info[f"GICR{rd.cpu}_PENDBASER"] = rd.pendbaser
    return info


def parse_note(desc: bytes) -> dict[str, int]:
    """The ``KEY=0x...`` lines of a GICKEXEC note (malformed lines, and values that are no
    64-bit register or address, are skipped)."""
    out: dict[str, int] = {}
    for line in desc.decode("ascii", "replace").splitlines()[:4096]:
        key, sep, value = line.partition("=")
        with contextlib.suppress(InputError):
            number = parse_uint(value.strip(), key)
            if sep and number < 1 << 64:
                out[key.strip()] = number
    return out
