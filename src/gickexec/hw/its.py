"""GICv3 ITS: command queue, device/collection tables and ITTs in memory, translation.

Everything the ITS knows lives in memory the kernel gave it: commands are read from the
queue at GITS_CBASER, device table entries from the GITS_BASER<n> of Type Device (flat or
two-level), collection entries from the Type Collection table, and translation entries
from the ITT named by the device's entry (Arm IHI 0069, the ITS's table walk).  Successful walks
are remembered in a translation cache, (DeviceID, EventID) -> (redistributor, INTID),
dropped whenever anything the walk read may have changed: any ITS register write other
than GITS_TRANSLATER, any command, and any write or fill into a page the walk read (a
memory watch).  So the cache never yields a translation the walk would not find; with
``translation_cache = False`` (the reference path) every MSI walks the tables.
Command errors follow ``knobs.its_error_policy``; translation errors drop the MSI.  Both
are recorded as :class:`~gickexec.hw.events.GuestError`, never raised.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from gickexec.arch.gicv3 import (
    GITS_BASER,
    GITS_CWRITER,
    LPI_INTID_BASE,
    BaserType,
    GitsBaser,
    GitsCbaser,
    GitsCtlr,
    GitsOffset,
    GitsTyper,
)
from gickexec.arch.its import (
    CMD_BYTES,
    CTE,
    DTE,
    ITE,
    Clear,
    Discard,
    Int,
    Inv,
    Invall,
    ItsCommand,
    Mapc,
    Mapd,
    Mapi,
    Mapti,
    Movall,
    Movi,
    Sync,
    UnknownCommand,
    decode_command,
)
from gickexec.hw.events import EventLog, GuestError
from gickexec.hw.gicd import Distributor
from gickexec.hw.gicr import PENDED_OUTCOMES, Redistributor
from gickexec.hw.knobs import GicKnobs
from gickexec.hw.memory import Agent, AgentKind, BusFault, PhysicalMemory, RegisterBlock

__all__ = ["Its", "MsiResult"]

#: Bytes of the model's DTE, CTE and ITE formats (arch/its.py); an ITT entry may be
#: larger (knob itt_entry_size), the rest of it is left as zeros.
_ENTRY_BYTES = 8
_PAGE_64K = 0b10
_SHAREABILITY = GITS_BASER.field("Shareability").mask
# The model's fixed GITS_BASER<n>.Type assignment (RO fields).
_BASER_TYPES = (BaserType.DEVICE, BaserType.COLLECTION) + (BaserType.NONE,) * 6
_TABLE_OF_TYPE = {BaserType.DEVICE: 0, BaserType.COLLECTION: 1}  # _BASER_TYPES.index
# GITS_CWRITER fields, written once or twice per command the kernel posts
_CWRITER_OFFSET = GITS_CWRITER.field("Offset").mask
_CWRITER_RETRY = GITS_CWRITER.field("Retry").mask
_L1_VALID = 1 << 63
_L1_ADDR_MASK = ((1 << 52) - 1) & ~0xFFF


class MsiResult(NamedTuple):
    """Where an MSI ended up: pended at ``cpu`` as ``intid``, or dropped for ``reason``.

    A named tuple rather than a frozen dataclass: one is made per MSI."""

    outcome: str
    cpu: int | None = None
    intid: int | None = None

    @property
    def pended(self) -> bool:
        return self.outcome in PENDED_OUTCOMES


class _Table(NamedTuple):
    """What a table walk needs of one GITS_BASER<n>, computed once per register write."""

    valid: bool
    indirect: bool
    entry_bytes: int
    table_bytes: int
    address: int
    page_bytes: int

    @classmethod
    def of(cls, b: GitsBaser) -> _Table:
        return cls(
            bool(b.Valid), bool(b.Indirect), b.entry_bytes, b.table_bytes, b.address, b.page_bytes
        )


class _Queue(NamedTuple):
    """What command processing needs of GITS_CBASER, computed once per register write
    (every GITS_CWRITER write checks and walks the queue)."""

    valid: bool
    address: int
    queue_bytes: int

    @classmethod
    def of(cls, c: GitsCbaser) -> _Queue:
        return cls(bool(c.Valid), c.address, c.queue_bytes)


class _CommandError(Exception):
    """Internal: a command failed; carries the E_ITS_* code (§3.7 pattern 0x01CCEE)."""

    def __init__(self, code: int, what: str) -> None:
        super().__init__(what)
        self.code = code
        self.what = what


def _err(opcode: int, kind: int, what: str) -> _CommandError:
    return _CommandError(0x010000 | (opcode << 8) | kind, what)


# E_ITS_* error kinds (low byte)
_DEVICE_OOR, _ITTSIZE_OOR, _COLLECTION_OOR, _UNMAPPED_DEVICE = 0x01, 0x02, 0x03, 0x04
_ID_OOR, _PHYSICALID_OOR, _UNMAPPED_INTERRUPT, _UNMAPPED_COLLECTION = 0x05, 0x06, 0x07, 0x09


class Its(RegisterBlock):
    """One ITS: control frame registers plus the translation frame's GITS_TRANSLATER."""

    #: False: the reference path, every MSI walks the tables in memory (per instance or,
    #: for every ITS made from then on, on the class)
    translation_cache = True

    def __init__(
        self,
        index: int,
        *,
        mem: PhysicalMemory,
        gicd: Distributor,
        rdists: Sequence[Redistributor],
        rd_bases: Sequence[int],
        knobs: GicKnobs,
        events: EventLog,
    ) -> None:
        self.index = index
        self.mem = mem
        self.gicd = gicd
        self.rdists = rdists
        self.knobs = knobs
        self.events = events
        self.agent = Agent(AgentKind.ITS, index)
        # With PTA=1, RDbase in commands is the redistributor frame's address >> 16.
        self._rd_by_rdbase = {base >> 16: rd for base, rd in zip(rd_bases, rdists, strict=True)}
        cil = knobs.collection_id_bits < 16
        self.typer = GitsTyper(
            Physical=1,
            ITT_entry_size=knobs.itt_entry_size - 1,
            ID_bits=knobs.event_id_bits - 1,
            Devbits=knobs.device_id_bits - 1,
            PTA=int(knobs.pta),
            HCC=knobs.hcc,
            CIL=int(cil),
            CIDbits=knobs.collection_id_bits - 1 if cil else 0,
            # The translation cache is dropped on every GITS_CTLR write (see write_reg).
            INV=1,
        )
        self._event_bits = self.typer.ID_bits + 1
        #: ICIDs are below this (collection_id_bits); those below GITS_TYPER.HCC name
        #: collections held in the ITS, the others index the collection table (asked by
        #: every MAPC and INVALL: attributes, not methods)
        self._icid_limit = 1 << knobs.collection_id_bits
        self._hcc = self.typer.HCC
        #: Collections held in the ITS (ICID < HCC): ICID -> RDbase (§3.3).
        self.hw_collections: dict[int, int] = {}
        self.enabled = False
        self.cbaser = 0
        self._queue = _Queue.of(GitsCbaser.decode(0))
        self.cwriter = 0
        self.creadr = 0
        self.stalled = False
        self._queue_invalid = False
        self.baser = [self._baser_ro_bits(n) for n in range(8)]
        # GITS_BASER<n> decoded once per write, not once per table access.
        self._tables = [_Table.of(GitsBaser.decode(v)) for v in self.baser]
        self.commands_executed = 0
        self._translations: dict[tuple[int, int], tuple[Redistributor, int]] = {}
        #: With the hypervisor holding pending state (KVM), its list of mapped events:
        #: (DeviceID, EventID) -> [pINTID, ICID], and how many events map each pINTID
        #: (a struct vgic_irq is shared by the events that map one LPI).
        self._hyp_ites: dict[tuple[int, int], list[int]] = {}
        self._hyp_lpi_refs: dict[int, int] = {}
        # Addresses of the table entries the current walk reads (None: not recording).
        self._walk_reads: list[int] | None = None

    @property
    def name(self) -> str:
        return f"ITS{self.index}"

    # -- registers ------------------------------------------------------------------

    @staticmethod
    def _baser_ro_bits(n: int) -> int:
        t = _BASER_TYPES[n]
        if t == BaserType.NONE:
            return 0
        return GitsBaser(Type=t, Entry_Size=_ENTRY_BYTES - 1, Page_Size=_PAGE_64K).encode()

    def ctlr(self) -> GitsCtlr:
        # The model completes all work synchronously: quiescent whenever disabled.
        return GitsCtlr(Enabled=int(self.enabled), Quiescent=int(not self.enabled))

    regs64 = frozenset(
        [GitsOffset.TYPER, GitsOffset.CBASER, GitsOffset.CWRITER, GitsOffset.CREADR]
        + [GitsOffset.BASER + 8 * n for n in range(8)]
    )

    def current(self, offset: int) -> int:
        if offset == GitsOffset.CBASER:
            return self.cbaser
        if offset == GitsOffset.CWRITER:
            return self.cwriter
        if GitsOffset.BASER <= offset < GitsOffset.BASER + 64 and offset % 8 == 0:
            return self.baser[(offset - GitsOffset.BASER) // 8]
        return 0

    def read_reg(self, offset: int, size: int) -> int:
        if offset == GitsOffset.CTLR:
            return self.ctlr().encode()
        if offset == GitsOffset.TYPER:
            return self.typer.encode()
        if offset == GitsOffset.IIDR:
            return self.gicd.iidr
        if offset == GitsOffset.CREADR:
            return self.creadr | int(self.stalled)
        return self.current(offset)

    def write_reg(self, offset: int, value: int, agent: Agent) -> None:
        if offset == GitsOffset.TRANSLATER:
            # The DeviceID comes from the bus, i.e. from the writing agent.
            self.translate_msi(agent.index, value & 0xFFFFFFFF)
            return
        # Every other register may change what a walk finds (CTLR, CBASER, BASER) or
        # runs commands (CWRITER): invalidate_translations(), without its call.
        self._translations.clear()
        if offset == GitsOffset.CTLR:
            self._write_ctlr(GitsCtlr.decode(value))
        elif offset == GitsOffset.CBASER:
            self._write_cbaser(value)
        elif offset == GitsOffset.CWRITER:
            self._write_cwriter(value)
        elif GitsOffset.BASER <= offset < GitsOffset.BASER + 64 and offset % 8 == 0:
            self._write_baser((offset - GitsOffset.BASER) // 8, value)
        else:
            self.events.emit(GuestError(self.name, f"write to offset {offset:#x}", "ignored"))

    def _write_ctlr(self, ctlr: GitsCtlr) -> None:
        was = self.enabled
        if ctlr.Enabled and not was and self.knobs.its_enable_invalid_tables == "refused":
            invalid = [n for n, t in enumerate(_BASER_TYPES) if t and not self.baser[n] >> 63]
            if not GitsCbaser.decode(self.cbaser).Valid or invalid:
                self.events.emit(
                    GuestError(
                        self.name,
                        "ITS enabled with GITS_CBASER or GITS_BASER<n> not Valid",
                        "refused: Enabled stays 0 (knob its_enable_invalid_tables)",
                    )
                )
                return
        self.enabled = bool(ctlr.Enabled)
        if self.enabled and not was:
            self.process_commands()

    def _table_write_ignored(self, reg: str) -> bool:
        """UNPREDICTABLE writes while enabled (§3.4, §3.5): knob-selected outcome."""
        if not self.enabled:
            return False
        ignored = self.knobs.its_table_writes_while_enabled == "ignored"
        self.events.emit(
            GuestError(self.name, f"{reg} written while enabled", "ignored" if ignored else "taken")
        )
        return ignored

    def _write_cbaser(self, value: int) -> None:
        if self._table_write_ignored("GITS_CBASER"):
            return
        if not self.knobs.shareability:
            value &= ~_SHAREABILITY
        cbaser = GitsCbaser.decode(value)
        self.cbaser = cbaser.encode()
        self._queue = _Queue.of(cbaser)
        self.creadr = 0  # "cleared to 0 when a value is written to GITS_CBASER"
        self.stalled = False
        self._queue_invalid = False

    def _write_cwriter(self, value: int) -> None:
        offset = value & _CWRITER_OFFSET  # Offset [19:5], in bytes
        retry = value & _CWRITER_RETRY
        if offset >= self._queue.queue_bytes:
            # CONSTRAINED UNPREDICTABLE (§3.4): "queue invalid until a valid value is
            # written", or (KVM) the write is ignored.
            invalid = self.knobs.cwriter_out_of_range == "queue-invalid"
            self._queue_invalid = self._queue_invalid or invalid
            self.events.emit(
                GuestError(
                    self.name,
                    f"GITS_CWRITER {offset:#x} beyond the queue",
                    "queue invalid" if invalid else "write ignored",
                )
            )
            return
        self._queue_invalid = False
        self.cwriter = offset
        if retry and self.stalled:
            self.stalled = False
        self.process_commands()

    def _write_baser(self, n: int, value: int) -> None:
        if _BASER_TYPES[n] == BaserType.NONE:
            return  # unimplemented registers are RES0
        if self._table_write_ignored(f"GITS_BASER{n}"):
            return
        b = GitsBaser.decode(value)
        # Type and Entry_Size are RO; only flat tables for collections; Indirect is
        # RAZ/WI where only flat tables are supported.
        device = _BASER_TYPES[n] == BaserType.DEVICE
        indirect = b.Indirect if device and self.knobs.its_indirect else 0
        # Page_Size 0b11 is reserved; like QEMU, the model takes it as 64 KiB.
        page = _PAGE_64K if self.knobs.its_page_size_64k_only or b.Page_Size == 3 else b.Page_Size
        self.baser[n] = GitsBaser(
            Size=b.Size,
            Page_Size=page,
            Shareability=b.Shareability if self.knobs.shareability else 0,
            Physical_Address=b.Physical_Address,
            Entry_Size=_ENTRY_BYTES - 1,
            OuterCache=b.OuterCache,
            Type=_BASER_TYPES[n],
            InnerCache=b.InnerCache,
            Indirect=indirect,
            Valid=b.Valid,
        ).encode()
        self._tables[n] = _Table.of(GitsBaser.decode(self.baser[n]))
        if device and not b.Valid:
            # KVM vgic_mmio_write_its_baser(): an invalid device table frees every device
            for key in list(self._hyp_ites):
                self._vgic_put_lpi(key)

    # -- table walks ----------------------------------------------------------------

    def _table(self, kind: int) -> _Table:
        return self._tables[_TABLE_OF_TYPE[kind]]

    def _read_u64(self, addr: int) -> int:
        """A table read of the walk (recorded while a translation is being cached)."""
        if self._walk_reads is not None:
            self._walk_reads.append(addr)
        return self.mem.read_u64(addr)

    def invalidate_translations(self) -> None:
        """Drop the translation cache (called by memory watches on the tables, too)."""
        self._translations.clear()

    def _entry_addr(self, kind: int, index: int) -> int | None:
        """Address of entry ``index`` in the table of ``kind``, or None if it has none."""
        b = self._tables[_TABLE_OF_TYPE[kind]]  # _table(kind), without its call
        if not b.valid:
            return None
        esz = b.entry_bytes
        if not b.indirect:
            if (index + 1) * esz > b.table_bytes:
                return None
            return b.address + index * esz
        per_page = b.page_bytes // esz
        l1_index = index // per_page
        if (l1_index + 1) * 8 > b.table_bytes:
            return None
        l1 = self._read_u64(b.address + 8 * l1_index)
        if not l1 & _L1_VALID:
            return None
        return (l1 & _L1_ADDR_MASK & ~(b.page_bytes - 1)) + (index % per_page) * esz

    def _read_entry(self, kind: int, index: int) -> int | None:
        addr = self._entry_addr(kind, index)
        return None if addr is None else self._read_u64(addr)

    def read_dte(self, device_id: int) -> DTE | None:
        """The device table entry for ``device_id`` (None: no entry or invalid)."""
        if device_id >> (self.typer.Devbits + 1):
            return None
        raw = self._read_entry(BaserType.DEVICE, device_id)
        if raw is None:
            return None
        dte = DTE.decode(raw)
        return dte if dte.Valid else None

    def read_cte(self, icid: int) -> CTE | None:
        if icid >= self._icid_limit:
            return None
        if icid < self._hcc:
            rdbase = self.hw_collections.get(icid)
            return None if rdbase is None else CTE(Valid=1, RDbase=rdbase)
        raw = self._read_entry(BaserType.COLLECTION, icid)
        if raw is None:
            return None
        cte = CTE.decode(raw)
        return cte if cte.Valid else None

    def ite_address(self, dte: DTE, event_id: int) -> int:
        return dte.itt_address + event_id * self.knobs.itt_entry_size

    def read_ite(self, dte: DTE, event_id: int) -> ITE | None:
        if event_id >= dte.num_events:
            return None
        ite = ITE.decode(self._read_u64(self.ite_address(dte, event_id)))
        return ite if ite.Valid and ite.IntType == 1 else None

    def _write_ite(self, addr: int, ite: ITE | None) -> None:
        """Write a whole ITT entry: the model's 8 bytes, then zeros (None: invalidate)."""
        raw = (ite.encode() if ite else 0).to_bytes(_ENTRY_BYTES, "little")
        self.mem.write(addr, raw.ljust(self.knobs.itt_entry_size, b"\0"), self.agent)

    def rdist(self, rdbase: int) -> Redistributor | None:
        """The redistributor an RDbase names: a processor number, or with PTA an address."""
        if self.knobs.pta:
            return self._rd_by_rdbase.get(rdbase)
        return self.rdists[rdbase] if rdbase < len(self.rdists) else None

    def _target(self, icid: int) -> Redistributor | None:
        cte = self.read_cte(icid)
        return None if cte is None else self.rdist(cte.RDbase)

    # -- translation ----------------------------------------------------------------

    def translate_msi(self, device_id: int, event_id: int) -> MsiResult:
        """A write of ``event_id`` to GITS_TRANSLATER by device ``device_id``."""
        if event_id >> self._event_bits:
            # CONSTRAINED UNPREDICTABLE (§3.6): ignore the extra bits or the write.
            if self.knobs.translater_high_event_bits == "write-ignored":
                return MsiResult("EventID beyond GITS_TYPER.ID_bits")
            event_id &= (1 << (self.typer.ID_bits + 1)) - 1
        try:
            if not self.enabled:
                return MsiResult("ITS disabled")
            if not self.translation_cache:
                return self._walk(device_id, event_id)
            hit = self._translations.get((device_id, event_id))
            if hit is not None:
                rd, intid = hit
                # tuple.__new__: the named tuple without its Python-level __new__
                return tuple.__new__(MsiResult, (rd.set_pending(intid), rd.cpu, intid))
            return self._walk_and_cache(device_id, event_id)
        except BusFault as fault:
            self.events.emit(GuestError(self.name, f"table read fault: {fault}", "MSI dropped"))
            return MsiResult("ITS table not in RAM")

    def cached_translation(self, device_id: int, event_id: int) -> tuple[Redistributor, int] | None:
        """The (redistributor, INTID) a GITS_TRANSLATER write of ``event_id`` by
        ``device_id`` goes to, when the translation cache holds it and the ITS is enabled;
        None otherwise (``translate_msi`` then walks).  Changes nothing."""
        if event_id >> self._event_bits or not (self.enabled and self.translation_cache):
            return None
        return self._translations.get((device_id, event_id))

    def _walk_and_cache(self, device_id: int, event_id: int) -> MsiResult:
        """A cache miss: walk, recording the reads the translation depends on."""
        self._walk_reads = []
        try:
            return self._walk(device_id, event_id)
        finally:
            self._walk_reads = None

    def _walk(self, device_id: int, event_id: int) -> MsiResult:
        """Translate through the tables in memory (the architectural path)."""
        if device_id >> (self.typer.Devbits + 1):
            return MsiResult("DeviceID out of range")
        dte = self.read_dte(device_id)
        if dte is None:
            return MsiResult("DeviceID not mapped")
        if event_id >= dte.num_events:
            return MsiResult("EventID out of range")
        ite = self.read_ite(dte, event_id)
        if ite is None:
            return MsiResult("EventID not mapped")
        rd = self._target(ite.ICID)
        if rd is None:
            return MsiResult(f"collection {ite.ICID} not mapped")
        reads = self._walk_reads
        if reads is not None:
            self._translations[(device_id, event_id)] = (rd, ite.pINTID)
            # An 8-byte entry may straddle two pages (odd itt_entry_size).
            pages = {a >> 12 for a in reads} | {(a + 7) >> 12 for a in reads}
            self.mem.watch_pages(pages, self.invalidate_translations)
        outcome = rd.set_pending(ite.pINTID)
        return MsiResult(outcome, rd.cpu, ite.pINTID)

    # -- command queue --------------------------------------------------------------

    def process_commands(self) -> None:
        """Run commands from GITS_CREADR up to GITS_CWRITER (synchronously)."""
        queue = self._queue
        if not (self.enabled and queue.valid) or self.stalled or self._queue_invalid:
            return
        qsize = queue.queue_bytes
        base = queue.address  # no command writes GITS_CBASER
        # Each step advances CREADR, so at most qsize/32 steps reach CWRITER.
        for _ in range(qsize // CMD_BYTES):
            if self.creadr == self.cwriter:
                return
            try:
                raw = self.mem.read(base + self.creadr, CMD_BYTES)
                self._execute(decode_command(raw))
            except _CommandError as e:
                self.events.emit(
                    GuestError(
                        self.name,
                        e.what,
                        "queue stalled" if self.knobs.its_error_policy == "stall" else "skipped",
                        e.code,
                    )
                )
                if self.knobs.its_error_policy == "stall":
                    self.stalled = True
                    return
            except BusFault as fault:
                # Like QEMU: a memory error reading a command or table stalls.
                self.events.emit(GuestError(self.name, str(fault), "queue stalled"))
                self.stalled = True
                return
            self.commands_executed += 1
            self.creadr = (self.creadr + CMD_BYTES) % qsize

    def _check_icid(self, opcode: int, icid: int) -> int | None:
        """Raise the command error of an ICID beyond the collections; otherwise the
        address of its collection table entry, or None for a collection held in the ITS
        (which MAPC needs next, without a second table look-up)."""
        if icid >= self._icid_limit:
            raise _err(opcode, _COLLECTION_OOR, f"ICID {icid} beyond the collection ID bits")
        if icid < self._hcc:
            return None
        addr = self._entry_addr(BaserType.COLLECTION, icid)
        if addr is None:
            raise _err(opcode, _COLLECTION_OOR, f"ICID {icid} beyond the collection table")
        return addr

    def _lookup(self, opcode: int, device_id: int, event_id: int) -> tuple[DTE, ITE, int]:
        dte = self.read_dte(device_id)
        if dte is None:
            raise _err(opcode, _UNMAPPED_INTERRUPT, f"device {device_id:#x} not mapped")
        ite = self.read_ite(dte, event_id)
        if ite is None:
            raise _err(
                opcode, _UNMAPPED_INTERRUPT, f"event {event_id} of {device_id:#x} not mapped"
            )
        return dte, ite, self.ite_address(dte, event_id)

    def _target_or_error(self, opcode: int, icid: int) -> Redistributor:
        rd = self._target(icid)
        if rd is None:
            raise _err(opcode, _UNMAPPED_COLLECTION, f"collection {icid} not mapped")
        return rd

    def _execute(self, cmd: ItsCommand | UnknownCommand) -> None:
        # Commands change mappings (MAPC of a collection held in the ITS touches no
        # memory) and are where software expects a change to become visible:
        # invalidate_translations(), without its call (every command).
        self._translations.clear()
        match cmd:
            case Mapd():
                self._mapd(cmd)
            case Mapc():
                self._mapc(cmd)
            case Mapti() | Mapi():
                self._mapti(cmd)
            case Inv():
                _, ite, _ = self._lookup(cmd.OPCODE, cmd.DeviceID, cmd.EventID)
                self._target_or_error(cmd.OPCODE, ite.ICID).invalidate(ite.pINTID)
            case Invall():
                self._target_or_error(cmd.OPCODE, cmd.ICID).invalidate_all()
            case Sync():
                if self.rdist(cmd.RDbase) is None:
                    raise _err(cmd.OPCODE, 0x01, f"SYNC RDbase {cmd.RDbase} out of range")
            case Int():
                _, ite, _ = self._lookup(cmd.OPCODE, cmd.DeviceID, cmd.EventID)
                self._target_or_error(cmd.OPCODE, ite.ICID).set_pending(ite.pINTID)
            case Clear():
                # CLEAR (0x04) errors are numbered 0x0105EE: E_ITS_CLEAR_UNMAPPED_INTERRUPT
                # is 0x010507 (KVM arch/arm64/kvm/vgic/vgic-its.c E_ITS_CLEAR_UNMAPPED_INTERRUPT,
                # UNCONFIRMED against IHI 0069).
                _, ite, _ = self._lookup(0x05, cmd.DeviceID, cmd.EventID)
                self._target_or_error(0x05, ite.ICID).clear_pending(ite.pINTID)
            case Discard():
                _, ite, addr = self._lookup(cmd.OPCODE, cmd.DeviceID, cmd.EventID)
                rd = self._target(ite.ICID)
                if rd is not None:
                    rd.clear_pending(ite.pINTID)
                self._write_ite(addr, None)
                if (cmd.DeviceID, cmd.EventID) in self._hyp_ites:
                    self._vgic_put_lpi((cmd.DeviceID, cmd.EventID))
            case Movi():
                self._movi(cmd)
            case Movall():
                self._movall(cmd)
            case UnknownCommand():
                raise _CommandError(0x010000 | (cmd.opcode << 8), f"{cmd.name}: not supported")

    def _mapd(self, cmd: Mapd) -> None:
        addr = None
        if not cmd.DeviceID >> (self.typer.Devbits + 1):
            addr = self._entry_addr(BaserType.DEVICE, cmd.DeviceID)
        if addr is None:
            raise _err(cmd.OPCODE, _DEVICE_OOR, f"MAPD DeviceID {cmd.DeviceID:#x} out of range")
        if cmd.V and cmd.Size > self.typer.ID_bits:
            raise _err(cmd.OPCODE, _ITTSIZE_OOR, f"MAPD Size {cmd.Size} > ID_bits")
        dte = DTE(Valid=cmd.V, Size=cmd.Size if cmd.V else 0, ITT_addr=cmd.ITT_addr if cmd.V else 0)
        self.mem.write_u64(addr, dte.encode(), self.agent)
        if self.knobs.pending_state_in_hypervisor:
            # KVM vgic_its_cmd_handle_mapd(): a mapped device is freed (its events with
            # it) before it is mapped again
            for key in [k for k in self._hyp_ites if k[0] == cmd.DeviceID]:
                self._vgic_put_lpi(key)

    def _mapc(self, cmd: Mapc) -> None:
        if cmd.V and self.rdist(cmd.RDbase) is None:
            raise _err(cmd.OPCODE, 0x02, f"MAPC RDbase {cmd.RDbase:#x} is no redistributor")
        addr = self._check_icid(cmd.OPCODE, cmd.ICID)
        if addr is None:  # held in the ITS
            if cmd.V:
                self.hw_collections[cmd.ICID] = cmd.RDbase
            else:
                self.hw_collections.pop(cmd.ICID, None)
            return
        cte = CTE(Valid=cmd.V, RDbase=cmd.RDbase if cmd.V else 0)
        self.mem.write_u64(addr, cte.encode(), self.agent)

    def _mapti(self, cmd: Mapti | Mapi) -> None:
        op = cmd.OPCODE
        pintid = cmd.pINTID if isinstance(cmd, Mapti) else cmd.EventID
        dte = self.read_dte(cmd.DeviceID)
        if dte is None:
            raise _err(op, _UNMAPPED_DEVICE, f"device {cmd.DeviceID:#x} not mapped")
        if cmd.EventID >= dte.num_events:
            raise _err(op, _ID_OOR, f"EventID {cmd.EventID} beyond the ITT")
        self._check_icid(op, cmd.ICID)
        if not LPI_INTID_BASE <= pintid < 1 << self.gicd.id_bits:
            raise _err(op, _PHYSICALID_OOR, f"pINTID {pintid} is no LPI")
        addr = self.ite_address(dte, cmd.EventID)
        if self.knobs.mapti_overwrite == "ignored" and self.read_ite(dte, cmd.EventID):
            # UNPREDICTABLE (§7.14): KVM keeps the existing mapping.
            self.events.emit(
                GuestError(self.name, f"MAPTI over mapped event {cmd.EventID}", "ignored")
            )
            return
        self._write_ite(addr, ITE(Valid=1, IntType=1, pINTID=pintid, ICID=cmd.ICID))
        if self.knobs.pending_state_in_hypervisor:
            self._vgic_add_lpi(cmd.DeviceID, cmd.EventID, pintid, cmd.ICID)

    def _vgic_add_lpi(self, device_id: int, event_id: int, pintid: int, icid: int) -> None:
        """KVM's vgic_its_cmd_handle_mapi() -> vgic_add_lpi() (arch/arm64/kvm/vgic/
        vgic-its.c, Linux 5.10.7 and 6.6.9): an LPI no other event maps yet is created,
        and reads its pending bit from the table of its target vCPU (none while the
        collection is unmapped)."""
        if (device_id, event_id) in self._hyp_ites:
            self._vgic_put_lpi((device_id, event_id))  # a MAPTI over a mapping (knob)
        self._hyp_ites[(device_id, event_id)] = [pintid, icid]
        refs = self._hyp_lpi_refs.get(pintid, 0)
        self._hyp_lpi_refs[pintid] = refs + 1
        rd = self._target(icid)
        if not refs and rd is not None:
            rd.lpi_sync_pending_status(pintid)

    def _vgic_put_lpi(self, key: tuple[int, int]) -> None:
        """An event's mapping goes (DISCARD, or its device's MAPD); the LPI goes with its
        last event (vgic_put_irq())."""
        pintid, _ = self._hyp_ites.pop(key)
        refs = self._hyp_lpi_refs.pop(pintid) - 1
        if refs:
            self._hyp_lpi_refs[pintid] = refs

    def mapped_lpis(self, rd: Redistributor) -> list[int]:
        """KVM's vgic_copy_lpi_list(): the LPIs some event maps with ``rd`` as target."""
        return sorted({p for p, icid in self._hyp_ites.values() if self._target(icid) is rd})

    def _movi(self, cmd: Movi) -> None:
        _, ite, addr = self._lookup(cmd.OPCODE, cmd.DeviceID, cmd.EventID)
        new_rd = self._target(cmd.ICID)
        if new_rd is None:
            raise _err(cmd.OPCODE, _UNMAPPED_COLLECTION, f"collection {cmd.ICID} not mapped")
        old_rd = self._target(ite.ICID)
        if old_rd is not None and old_rd is not new_rd:
            self._move_pending(old_rd, new_rd, ite.pINTID)
        self._write_ite(addr, ITE(Valid=1, IntType=1, pINTID=ite.pINTID, ICID=cmd.ICID))
        hyp = self._hyp_ites.get((cmd.DeviceID, cmd.EventID))
        if hyp is not None:
            hyp[1] = cmd.ICID  # KVM's update_affinity_ite()

    def _move_pending(self, src: Redistributor, dst: Redistributor, intid: int) -> None:
        """Move one LPI's pending state; to a disabled target per knob (§7.15)."""
        if not dst.enable_lpis and self.knobs.move_to_disabled_rdist == "nop":
            return
        if src.clear_pending(intid):
            dst.set_pending(intid)  # dropped by a disabled target

    def _movall(self, cmd: Movall) -> None:
        src, dst = self.rdist(cmd.RDbase1), self.rdist(cmd.RDbase2)
        if src is None or dst is None:
            raise _err(cmd.OPCODE, 0x01, "MOVALL RDbase out of range")
        if src is dst:
            return
        for intid in sorted(src.pending_lpis()):
            self._move_pending(src, dst, intid)
