"""A next kernel that is not Linux but honours the memreserve table: FreeBSD via kboot.

FreeBSD's kboot (boot FreeBSD from a LinuxBoot Linux with kexec; Warner Losh, Netflix)
reads ``LINUX_EFI_MEMRESERVE_TABLE`` ("a linked list of ranges that are still in use that
the OS must avoid using", reviews.freebsd.org D37440), inherits the LPI tables a
redistributor already uses (D40902: "Panic if we're forced to re-use an address that
wasn't reserved early in boot"; D44038: "make sure what we read from PROPBASER matches
something in that table").

The model plays the part of that consumer that matters here: it reserves what the list
names, then for every redistributor with EnableLPIs set reads GICR_PROPBASER and
GICR_PENDBASER and panics unless each table's address lies in a reserved range; when all
do, it takes the tables over.  It probes no drivers (MSIs after it boots are not
handled).  Its console lines are reconstructions (UNCONFIRMED: FreeBSD's exact panic
and banner strings were not available to us).
"""

from __future__ import annotations

from collections.abc import Sequence

from gickexec.arch.efi import LINUX_EFI_MEMRESERVE_TABLE_GUID
from gickexec.arch.gicv3 import LPI_INTID_BASE, GicrCtlr, GicrOffset, GicrPendbaser, GicrPropbaser
from gickexec.fw.memreserve import walk_memreserve
from gickexec.fw.uefi import SystemTableError, read_config_tables
from gickexec.hw.machine import MsiDevice
from gickexec.kernel.kernel import Kernel
from gickexec.kernel.mm import BuddyAllocator, KernelFault, Owner, Role

__all__ = ["FreeBsdKboot"]


class FreeBsdKboot(Kernel):
    """FreeBSD entered by kboot's kexec: checks inherited LPI tables against the list."""

    inherited: bool = False

    def boot(self, devices: Sequence[tuple[MsiDevice, bool]] = ()) -> None:
        m = self.machine
        for cpuif in m.cpuifs:
            cpuif.reset()
        # UNCONFIRMED wording (FreeBSD's banner): see the module docstring.
        self.log.line("---<<BOOT>>---")
        self.log.line(f"FreeBSD {self.profile.release}-RELEASE arm64 (booted by kboot)")
        self._place_image()
        try:
            entries = self._memreserve()
            for addr, size in entries:
                self._memblock_reserve(addr, size, "reserved by the memreserve list")
            self._inherit_lpi_tables(entries)
        except KernelFault as fault:
            self.die(fault)
            return
        self.pages = BuddyAllocator(self.memblock.free_ranges())
        self.online_cpus = list(self.possible_cpus)

    @property
    def reused_tables(self) -> bool:
        return self.inherited

    def _memreserve(self) -> list[tuple[int, int]]:
        """Every (base, size) the list names; none without EFI or without the table."""
        if self.firmware is None:
            self.log.line("kboot: no EFI system table: no memory reservations to honour")
            return []
        try:
            _, tables = read_config_tables(self.machine.mem, self.firmware.systab)
        except SystemTableError as e:
            self.log.line(f"kboot: EFI system table unreadable: {e}")
            return []
        root = next((t.table for t in tables if t.guid == LINUX_EFI_MEMRESERVE_TABLE_GUID), 0)
        if not root:
            self.log.line("kboot: no LINUX_EFI_MEMRESERVE_TABLE")
            return []
        mem = self.machine.mem
        chain = walk_memreserve(mem.read, mem.is_ram, root, "v5.0")
        self.log.line(f"kboot: memreserve list @{root:#x}: {len(chain.entries)} reservation(s)")
        return chain.entries

    def _inherit_lpi_tables(self, entries: list[tuple[int, int]]) -> None:
        m = self.machine
        for cpu in range(m.platform.cpus):
            base = m.gicr_base(cpu)
            if not GicrCtlr.decode(m.mem.mmio_read(base + GicrOffset.CTLR, 4)).EnableLPIs:
                continue
            prop = GicrPropbaser.decode(m.mem.mmio_read(base + GicrOffset.PROPBASER, 8))
            pend = GicrPendbaser.decode(m.mem.mmio_read(base + GicrOffset.PENDBASER, 8))
            bits = prop.lpi_id_bits
            for what, addr, size, role in (
                ("GICR_PROPBASER", prop.address, (1 << bits) - LPI_INTID_BASE, Role("prop")),
                ("GICR_PENDBASER", pend.address, (1 << bits) // 8, Role("pend", cpu)),
            ):
                if not any(b <= addr < b + s for b, s in entries):
                    raise KernelFault(
                        f"FreeBSD kboot: CPU{cpu}'s {what} points to {addr:#x}, which the "
                        "memreserve list does not reserve: panic instead of reusing it",
                        [f"panic: CPU{cpu}: {what} {addr:#x} is not in a reserved range"],
                    )
                label = (
                    "LPI property table" if role.kind == "prop" else f"LPI pending table CPU{cpu}"
                )
                self.claim(addr, size, Owner(f"{label} (inherited)", role))
        self.inherited = True
        self.log.line("gicv3_its0: reusing the LPI tables the previous kernel programmed")
