"""Guest physical memory images: ELF cores (QEMU ``dump-guest-memory``, kdump vmcores)
and raw dumps, read through bounded, read-only accessors.

Files are memory-mapped, never read whole: a multi-GiB image costs address space, not
RAM (where the address space is limited and mapping fails, they are read piecewise with
``pread``).  Only regular files are opened.  Every header field that points into the
file is checked against the file's size before it is used; a hostile image gets an
:class:`ImageError` naming what is wrong, or a warning in :attr:`MemoryImage.warnings`
when the problem can be worked around (e.g. two PT_LOAD segments claiming the same
physical page: the first one wins, as ``crash`` does).
"""

from __future__ import annotations

import bisect
import mmap
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from gickexec.bounded import InputError, open_regular

__all__ = ["ImageError", "MemoryImage", "Segment", "open_image"]

#: More PT_LOAD segments than this is no memory dump we know how to read.
MAX_SEGMENTS = 65536
_ELF_MAGIC = b"\x7fELF"


class ImageError(Exception):
    """The image cannot be read as a guest memory image (message says why)."""


@dataclass(frozen=True, slots=True)
class Segment:
    """``size`` bytes of guest physical memory at ``paddr``, ``filesz`` of them stored at
    ``offset`` in the file (the rest read as zero)."""

    paddr: int
    size: int
    offset: int
    filesz: int

    @property
    def end(self) -> int:
        return self.paddr + self.size


class _FileView:
    """Byte slices of a file by ``pread``: what ``mmap`` gives, when mapping failed."""

    def __init__(self, fd: int, size: int) -> None:
        self._fd = fd
        self._size = size

    def __getitem__(self, s: slice) -> bytes:
        start, stop, _ = s.indices(self._size)
        return os.pread(self._fd, max(0, stop - start), start)

    def close(self) -> None:
        """Nothing to unmap; the descriptor belongs to the image."""


@dataclass(slots=True)
class MemoryImage:
    """A read-only view of guest physical memory backed by a file."""

    path: Path
    kind: str
    segments: list[Segment]
    warnings: list[str] = field(default_factory=list)
    notes: dict[str, bytes] = field(default_factory=dict)
    _map: mmap.mmap | _FileView | None = None
    _fd: int = -1
    _starts: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.segments.sort(key=lambda s: s.paddr)
        self._starts = [s.paddr for s in self.segments]

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> MemoryImage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def total_bytes(self) -> int:
        return sum(s.size for s in self.segments)

    def _segment_at(self, addr: int) -> Segment | None:
        i = bisect.bisect_right(self._starts, addr) - 1
        if i >= 0 and addr < self.segments[i].end:
            return self.segments[i]
        return None

    def is_ram(self, addr: int, size: int) -> bool:
        """Whether ``[addr, addr + size)`` lies entirely in the image's segments."""
        if size <= 0 or addr < 0:
            return size == 0
        while size > 0:
            seg = self._segment_at(addr)
            if seg is None:
                return False
            step = min(size, seg.end - addr)
            addr += step
            size -= step
        return True

    def read(self, addr: int, size: int) -> bytes:
        """``size`` bytes at physical ``addr``; raises ImageError where the image has none."""
        out = bytearray()
        while size > 0:
            seg = self._segment_at(addr)
            if seg is None:
                raise ImageError(f"physical address {addr:#x} is not in the image")
            step = min(size, seg.end - addr)
            lo = addr - seg.paddr
            stored = max(0, min(step, seg.filesz - lo))
            if stored:
                assert self._map is not None
                out += self._map[seg.offset + lo : seg.offset + lo + stored]
            out += bytes(step - stored)
            addr += step
            size -= step
        return bytes(out)

    def data_runs(self, chunk: int = 1 << 20) -> Iterator[tuple[int, bytes]]:
        """(physical address, bytes) of the stored data, in chunks of at most ``chunk``
        bytes, skipping holes of a sparse file so that scanning a mostly-empty multi-GiB
        image reads only what is there."""
        assert self._map is not None
        for seg in self.segments:
            pos, end = seg.offset, seg.offset + seg.filesz
            while pos < end:
                pos = _next_data(self._fd, pos, end)
                if pos >= end:
                    break
                stop = min(end, pos + chunk)
                yield seg.paddr + pos - seg.offset, self._map[pos:stop]
                pos = stop


def _next_data(fd: int, pos: int, end: int) -> int:
    """The first file offset >= ``pos`` that holds data (``end`` if none)."""
    seek_data = getattr(os, "SEEK_DATA", None)
    if fd < 0 or seek_data is None:
        return pos
    try:
        return min(os.lseek(fd, pos, seek_data), end)
    except OSError:
        return end  # ENXIO: only a hole from pos to the end of the file


def open_image(path: str | Path, *, base: int | None = None) -> MemoryImage:
    """Open an ELF core (PT_LOAD segments, physical addresses) or, with ``base``, a raw
    image of physical memory starting at ``base``."""
    path = Path(path)
    try:
        fd, st = open_regular(path)
    except InputError as e:
        raise ImageError(str(e)) from None
    try:
        size = st.st_size
        if size == 0:
            raise ImageError(f"{path}: empty file")
        mapped = _map_file(fd, size)
    except BaseException:
        os.close(fd)
        raise
    try:
        if mapped[:4] == _ELF_MAGIC and base is None:
            img = _open_elf(path, mapped, size)
            img._fd = fd
            return img
        if base is None:
            raise ImageError(f"{path}: not an ELF core; give --base ADDR to read it as a raw image")
        if base < 0 or base % 4096:
            raise ImageError(f"--base {base:#x} must be a page-aligned physical address")
        return MemoryImage(path, "raw", [Segment(base, size, 0, size)], _map=mapped, _fd=fd)
    except BaseException:
        mapped.close()
        os.close(fd)
        raise


def _map_file(fd: int, size: int) -> mmap.mmap | _FileView:
    try:
        return mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
    except (OSError, OverflowError, ValueError):  # ENOMEM under RLIMIT_AS, 32-bit hosts
        return _FileView(fd, size)


def _open_elf(path: Path, mapped: mmap.mmap | _FileView, size: int) -> MemoryImage:
    try:
        fh = path.open("rb")  # pyelftools reads headers through a file object
    except OSError as e:
        raise ImageError(f"{path}: {e.strerror}") from None
    with fh:
        return _read_elf(path, fh, mapped, size)


def _read_elf(path: Path, fh: BinaryIO, mapped: mmap.mmap | _FileView, size: int) -> MemoryImage:
    try:
        elf = ELFFile(fh)
        if elf.header["e_type"] != "ET_CORE":
            raise ImageError(f"{path}: ELF file but not a core dump ({elf.header['e_type']})")
        count = elf.num_segments()
        if count > MAX_SEGMENTS:
            raise ImageError(f"{path}: {count} program headers (more than {MAX_SEGMENTS})")
        raw: list[Segment] = []
        notes: dict[str, bytes] = {}
        warnings: list[str] = []
        for i in range(count):
            ph = elf.get_segment(i)
            kind = ph["p_type"]
            if kind == "PT_NOTE":
                notes.update(_notes(ph, size, warnings))
                continue
            if kind != "PT_LOAD":
                continue
            off, filesz, memsz, paddr = (
                ph["p_offset"],
                ph["p_filesz"],
                ph["p_memsz"],
                ph["p_paddr"],
            )
            if filesz > memsz:
                raise ImageError(f"{path}: PT_LOAD {i}: p_filesz {filesz:#x} > p_memsz {memsz:#x}")
            if off + filesz > size:
                raise ImageError(
                    f"{path}: PT_LOAD {i} at file offset {off:#x}+{filesz:#x} runs past the "
                    f"end of the file ({size:#x} bytes): truncated image?"
                )
            if memsz:
                raw.append(Segment(paddr, memsz, off, filesz))
    except ELFError as e:
        raise ImageError(f"{path}: malformed ELF: {e}") from None
    except (ValueError, KeyError, IndexError) as e:  # pyelftools on truncated headers
        raise ImageError(f"{path}: malformed ELF: {e}") from None
    except (OSError, OverflowError) as e:  # a header offset beyond what a seek can reach
        raise ImageError(f"{path}: malformed ELF: header offset out of range ({e})") from None
    if not raw:
        raise ImageError(f"{path}: ELF core without PT_LOAD segments")
    return MemoryImage(path, "elf", _without_overlaps(raw, warnings), warnings, notes, _map=mapped)


def _notes(ph: object, size: int, warnings: list[str]) -> dict[str, bytes]:
    """Name -> descriptor of the notes of one PT_NOTE segment (bounded by the file)."""
    out: dict[str, bytes] = {}
    try:
        for note in ph.iter_notes():  # type: ignore[attr-defined]
            if len(out) >= 64:
                warnings.append("more than 64 ELF notes; the rest ignored")
                break
            desc = note["n_desc"]
            out[str(note["n_name"])] = desc if isinstance(desc, bytes) else str(desc).encode()
    except (ELFError, ValueError, KeyError, IndexError, UnicodeDecodeError) as e:
        warnings.append(f"unreadable PT_NOTE: {e}")
    except (OSError, OverflowError) as e:  # p_offset beyond what a seek can reach
        warnings.append(f"unreadable PT_NOTE: offset out of range ({e})")
    return out


def _without_overlaps(segments: list[Segment], warnings: list[str]) -> list[Segment]:
    """Trim segments that overlap an earlier (lower-addressed, then earlier) one."""
    segments = sorted(segments, key=lambda s: s.paddr)
    out: list[Segment] = []
    for seg in segments:
        if out and seg.paddr < out[-1].end:
            prev = out[-1]
            warnings.append(
                f"PT_LOAD [{seg.paddr:#x}, {seg.end:#x}) overlaps [{prev.paddr:#x}, "
                f"{prev.end:#x}); the overlapping part of the later one is ignored"
            )
            cut = prev.end - seg.paddr
            if cut < seg.size:
                out.append(
                    Segment(prev.end, seg.size - cut, seg.offset + cut, max(0, seg.filesz - cut))
                )
            continue
        out.append(seg)
    return out
