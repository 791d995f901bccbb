"""Expose the model's physical memory to drgn (optional: ``pip install gickexec[drgn]``).

>>> prog = drgn_program(world.machine.mem)              # doctest: +SKIP
>>> prog.read(0x80000000, 16, physical=True)            # doctest: +SKIP

The Program has one physical memory segment per RAM range, read through the model's
sparse memory (nothing is copied).  There is no kernel image or debug info: use it to
read raw structures, e.g. with drgn's ``Object`` over a type you create.
"""

from __future__ import annotations

from typing import Any

from gickexec.hw.memory import PhysicalMemory

__all__ = ["drgn_program"]


def drgn_program(mem: PhysicalMemory) -> Any:
    """A ``drgn.Program`` (aarch64, little endian) reading ``mem``; ImportError without drgn."""
    import drgn  # noqa: PLC0415 - optional dependency

    platform = drgn.Platform(
        drgn.Architecture.AARCH64,
        drgn.PlatformFlags.IS_64_BIT | drgn.PlatformFlags.IS_LITTLE_ENDIAN,
    )
    prog = drgn.Program(platform)

    def reader(address: int, count: int, offset: int, physical: bool) -> bytes:
        return mem.read(address, count)

    for r in mem.ram:
        prog.add_memory_segment(r.start, r.size, reader, physical=True)
    return prog
