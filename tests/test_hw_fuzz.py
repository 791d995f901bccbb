"""Stateful fuzzing of the GIC model on every platform preset.

Random register writes to redistributors and the ITS, random command-queue contents,
random MSIs and random acknowledges.  Two invariants:

* no Python exception escapes: whatever the guest does is recorded as data;
* every memory write by a GIC agent lands inside a table the GIC was given: for a
  redistributor, inside the pending table it latched; for the ITS, inside its device
  table (or a level-2 page a valid level-1 descriptor names), its collection table, or
  the ITT some valid device table entry names.
"""

from __future__ import annotations

import dataclasses
from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from gickexec.arch.gicv3 import (
    INTID_SPURIOUS,
    LPI_INTID_BASE,
    GicrOffset,
    GicrPendbaser,
    GicrPropbaser,
    GitsBaser,
    GitsCbaser,
    GitsCtlr,
    GitsOffset,
)
from gickexec.arch.its import (
    CMD_BYTES,
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
)
from gickexec.hw.machine import Machine
from gickexec.hw.memory import PAGE_SIZE, Agent, AgentKind, GicWrite, PhysicalMemory
from gickexec.hw.platform import PLATFORMS, Platform

SZ_64K = 0x10000
KERNEL = Agent(AgentKind.KERNEL, 0, generation=1)
DEVICES = (0x0, 0x10, 0x100, 0x2001, 0xFFFF)
_CMD_KINDS = [
    "MAPD",
    "MAPC",
    "MAPTI",
    "MAPI",
    "MOVI",
    "MOVALL",
    "INT",
    "CLEAR",
    "DISCARD",
    "INV",
    "INVALL",
    "SYNC",
]
U64 = (1 << 64) - 1


def _mostly(usual: st.SearchStrategy[int], wild: st.SearchStrategy[int]) -> st.SearchStrategy[int]:
    """``usual`` three times in four, ``wild`` otherwise."""
    return st.one_of(usual, usual, usual, wild)


#: an address: anything, or one of the layout's tables (resolved by GicFuzz._resolve)
_ADDR: st.SearchStrategy[int | str] = st.one_of(
    st.integers(0, (1 << 52) - 1),
    st.sampled_from(["prop", "pend", "cmdq", "dt", "l2", "ct", "itt", "ram_end"]),
)


class _Layout:
    """Where the fuzz places the GIC's tables in a platform's first RAM bank."""

    def __init__(self, platform: Platform) -> None:
        bank = platform.ram[0]
        b = (bank.start + 0xFF_FFFF) & ~0xFF_FFFF
        assert bank.contains(b, 0x400_0000)
        self.prop = b
        self.pend = [b + 0x10_0000 + cpu * SZ_64K for cpu in range(platform.cpus)]
        self.cmdq = b + 0x20_0000
        self.dt = b + 0x30_0000  # flat: 8 pages of 64 KiB
        self.l2 = [b + 0xC0_0000 + i * SZ_64K for i in range(8)]
        self.ct = b + 0x80_0000
        self.itt = [b + 0x100_0000 + i * SZ_64K for i in range(len(DEVICES))]
        self.ram = bank

    def addresses(self) -> list[int]:
        return [self.prop, *self.pend, self.cmdq, self.dt, *self.l2, self.ct, *self.itt]


def _u64_entries(mem: PhysicalMemory, start: int, size: int) -> list[tuple[int, np.ndarray]]:
    """(address of the first, entries) for the 8-byte entries of ``[start, start+size)``
    that lie in pages holding data (untouched pages are all-zero entries)."""
    out = []
    end = start + size
    for pfn in mem.nonzero_pages(start, size):
        lo = max(start, pfn * PAGE_SIZE)
        hi = min(end, (pfn + 1) * PAGE_SIZE)
        lo += -(lo - start) % 8
        n = (hi - lo) // 8
        if n <= 0 or not mem.is_ram(lo, n * 8):
            continue
        out.append((lo, np.frombuffer(mem.read(lo, n * 8), dtype="<u8")))
    return out


def _its_write_allowed(m: Machine, addr: int, size: int) -> bool:
    """Is ``[addr, addr+size)`` inside a table the ITS was given (as programmed now)?"""
    mem, its = m.mem, m.its
    end = addr + size

    def inside(lo: int, n: int) -> bool:
        return lo <= addr and end <= lo + n

    ct = GitsBaser.decode(its.baser[1])
    if ct.Valid and inside(ct.address, ct.table_bytes):
        return True
    dt = GitsBaser.decode(its.baser[0])
    if not dt.Valid:
        return False
    if dt.Indirect:
        pages = []
        for _, l1 in _u64_entries(mem, dt.address, dt.table_bytes):
            for d in l1[(l1 >> np.uint64(63)) == 1]:
                pages.append(int(d) & ((1 << 52) - 1) & ~0xFFF & ~(dt.page_bytes - 1))
        if any(inside(p, dt.page_bytes) for p in pages):
            return True
        regions = [(p, dt.page_bytes) for p in pages]
    else:
        if inside(dt.address, dt.table_bytes):
            return True
        regions = [(dt.address, dt.table_bytes)]
    for start, length in regions:
        for _, dtes in _u64_entries(mem, start, length):
            valid = dtes[(dtes & np.uint64(1)) == 1]
            for d in valid:
                v = int(d)
                itt = ((v >> 6) & ((1 << 44) - 1)) << 8
                events = 1 << (((v >> 1) & 0x1F) + 1)
                if inside(itt, events * its.knobs.itt_entry_size):
                    return True
    return False


class GicFuzz(RuleBasedStateMachine):
    """Subclassed per platform (the ``platform`` attribute)."""

    platform: Platform
    indirect: bool = False

    def __init__(self) -> None:
        super().__init__()
        self.m = Machine(self.platform)
        self.lay = _Layout(self.platform)
        self.violations: list[str] = []
        self.gic_writes = 0
        self.msi_outcomes: Counter[str] = Counter()
        self.m.mem.observe_gic_writes(self._check_write)
        self._setup()

    # -- a working system to start from ----------------------------------------------

    def _setup(self) -> None:
        m, lay = self.m, self.lay
        mem = m.mem
        mem.fill(lay.prop, SZ_64K, 0xA3, KERNEL)  # priority 0xa0, group 1, enabled
        for cpu, rd in enumerate(m.rdists):
            base = m.gicr_base(cpu)
            prop = GicrPropbaser(IDbits=15, Physical_Address=lay.prop >> 12).encode()
            pend = GicrPendbaser(Physical_Address=lay.pend[cpu] >> 16, PTZ=1).encode()
            mem.mmio_write(base + GicrOffset.PROPBASER, 8, prop, KERNEL)
            mem.mmio_write(base + GicrOffset.PENDBASER, 8, pend, KERNEL)
            mem.mmio_write(base + GicrOffset.CTLR, 4, 1, KERNEL)
            assert rd.enable_lpis
            m.cpuifs[cpu].pmr = 0xF0
            m.cpuifs[cpu].igrpen1 = True
        its = m.platform.its_base
        cbaser = GitsCbaser(Size=15, Physical_Address=lay.cmdq >> 12, Valid=1).encode()
        mem.mmio_write(its + GitsOffset.CBASER, 8, cbaser, KERNEL)
        if self.indirect:
            # level 1: one descriptor per 8192 DeviceIDs; every DEVICES entry has a page
            for i in range(8):
                mem.write_u64(lay.dt + 8 * i, lay.l2[i] | 1 << 63, KERNEL)
        tables = ((lay.dt, 1 if self.indirect else 8), (lay.ct, 1))
        for n, (addr, pages) in enumerate(tables):
            old = GitsBaser.decode(mem.mmio_read(its + GitsOffset.BASER + 8 * n, 8))
            val = dataclasses.replace(
                old,
                Size=pages - 1,
                Page_Size=0b10,
                Physical_Address=addr >> 12,
                Indirect=int(self.indirect and n == 0),
                Valid=1,
            )
            mem.mmio_write(its + GitsOffset.BASER + 8 * n, 8, val.encode(), KERNEL)
        mem.mmio_write(its + GitsOffset.CWRITER, 8, 0, KERNEL)
        mem.mmio_write(its + GitsOffset.CTLR, 4, 1, KERNEL)
        cmds: list[ItsCommand] = [
            Mapc(ICID=c, RDbase=self._rdbase(c)) for c in range(m.platform.cpus)
        ]
        for i, dev in enumerate(DEVICES):
            cmds.append(Mapd(DeviceID=dev, Size=4, ITT_addr=lay.itt[i] >> 8))
            cmds += [
                Mapti(DeviceID=dev, EventID=e, pINTID=8192 + 32 * i + e, ICID=e % m.platform.cpus)
                for e in range(8)
            ]
        for cmd in cmds:
            self._queue(cmd.to_bytes())
        assert m.events.errors == [], m.events.errors
        assert m.its.translate_msi(DEVICES[0], 1).pended

    # -- the invariant checked on every GIC write --------------------------------------

    def _check_write(self, w: GicWrite) -> None:
        self.gic_writes += 1
        size = len(w.new)
        if len(w.old) != size:
            self.violations.append(f"{w.agent}: old/new sizes differ at {w.addr:#x}")
        if w.agent.kind is AgentKind.GICR:
            rd = self.m.rdists[w.agent.index]
            pend = rd.pend_addr
            if not rd.enable_lpis or pend is None:
                self.violations.append(f"{rd.name} wrote {w.addr:#x} with LPIs disabled")
            elif not (pend <= w.addr and w.addr + size <= pend + rd.pending_table_bytes):
                self.violations.append(
                    f"{rd.name} wrote {w.addr:#x} outside its pending table {pend:#x}"
                )
        elif not _its_write_allowed(self.m, w.addr, size):
            self.violations.append(f"{w.agent} wrote {w.addr:#x}+{size} outside its tables")

    # -- helpers ---------------------------------------------------------------------

    def _rdbase(self, cpu: int) -> int:
        """RDbase naming ``cpu``'s redistributor (an address with GITS_TYPER.PTA)."""
        return self.m.gicr_base(cpu) >> 16 if self.platform.knobs.pta else cpu

    def _queue(self, raw: bytes) -> None:
        """Put 32 bytes at the ITS's write pointer and advance GITS_CWRITER past them."""
        its = self.m.its
        cb = GitsCbaser.decode(its.cbaser)
        slot = cb.address + its.cwriter
        if self.m.mem.is_ram(slot, CMD_BYTES):
            self.m.mem.write(slot, raw, KERNEL)
        nxt = (its.cwriter + CMD_BYTES) % cb.queue_bytes
        self.m.mem.mmio_write(self.m.platform.its_base + GitsOffset.CWRITER, 8, nxt, KERNEL)

    def _resolve(self, a: int | str, align: int) -> int:
        lay = self.lay
        if isinstance(a, int):
            return a & ~(align - 1)
        return {
            "prop": lay.prop,
            "pend": lay.pend[0],
            "cmdq": lay.cmdq,
            "dt": lay.dt,
            "l2": lay.l2[0],
            "ct": lay.ct,
            "itt": lay.itt[1],
            "ram_end": (lay.ram.end - align) & ~(align - 1),
        }[a]

    # -- rules -----------------------------------------------------------------------

    @rule(
        cpu=st.integers(0, 7),
        which=st.sampled_from(["ctlr", "prop", "pend", "waker", "other", "raw"]),
        addr=_ADDR,
        bits=st.integers(0, 31),
        flag=st.booleans(),
        raw=st.integers(0, U64),
        offset=st.sampled_from([0x4, 0x8, 0x10, 0x40, 0x48, 0xA0, 0xFFE8, 0x10000]),
    )
    def gicr_write(
        self,
        cpu: int,
        which: str,
        addr: int | str,
        bits: int,
        flag: bool,
        raw: int,
        offset: int,
    ) -> None:
        cpu %= self.platform.cpus
        base = self.m.gicr_base(cpu)
        match which:
            case "ctlr":
                off, val = GicrOffset.CTLR, int(flag)
            case "prop":
                a = self._resolve(addr, 0x1000)
                off, val = (
                    GicrOffset.PROPBASER,
                    GicrPropbaser(
                        IDbits=bits, Physical_Address=(a >> 12) & ((1 << 40) - 1)
                    ).encode(),
                )
            case "pend":
                a = self._resolve(addr, SZ_64K)
                off, val = (
                    GicrOffset.PENDBASER,
                    GicrPendbaser(
                        Physical_Address=(a >> 16) & ((1 << 36) - 1), PTZ=int(flag)
                    ).encode(),
                )
            case "waker":
                off, val = GicrOffset.WAKER, raw & 0xFFFFFFFF
            case "other":
                off, val = offset, raw
            case _:
                off, val = (raw % GicrOffset.STRIDE) & ~7, raw
        self.m.mem.mmio_write(base + off, 8, val, Agent(AgentKind.KERNEL, cpu, 1))
        self.m.mem.mmio_read(base + GicrOffset.CTLR, 4)  # consumes RWP reads

    @rule(
        which=st.sampled_from(["ctlr", "cbaser", "cwriter", "baser", "translater", "raw"]),
        addr=_ADDR,
        n=st.integers(0, 7),
        size=st.integers(0, 255) | st.integers(0, 3),
        page=st.integers(0, 3),
        flags=st.integers(0, 3),
        raw=st.integers(0, U64),
    )
    def its_write(
        self, which: str, addr: int | str, n: int, size: int, page: int, flags: int, raw: int
    ) -> None:
        base = self.m.platform.its_base
        agent = KERNEL
        match which:
            case "ctlr":
                off, val = GitsOffset.CTLR, GitsCtlr(Enabled=flags & 1).encode()
            case "cbaser":
                a = self._resolve(addr, 0x1000)
                off, val = (
                    GitsOffset.CBASER,
                    GitsCbaser(
                        Size=size, Physical_Address=(a >> 12) & ((1 << 40) - 1), Valid=flags & 1
                    ).encode(),
                )
            case "cwriter":
                off, val = GitsOffset.CWRITER, (raw & 0xFFFE0) | (flags & 1)
            case "baser":
                a = self._resolve(addr, 0x1000)
                off = GitsOffset.BASER + 8 * n
                val = GitsBaser(
                    Size=size,
                    Page_Size=page,
                    Physical_Address=(a >> 12) & ((1 << 36) - 1),
                    Indirect=flags & 1,
                    Valid=flags >> 1,
                ).encode()
            case "translater":
                off, val = GitsOffset.TRANSLATER, raw & 0xF
                agent = Agent(AgentKind.DEVICE, DEVICES[n % len(DEVICES)])
            case _:
                off, val = (raw % GitsOffset.SIZE) & ~7, raw
        self.m.mem.mmio_write(base + off, 8, val, agent)

    @rule(data=st.binary(min_size=CMD_BYTES, max_size=CMD_BYTES))
    def raw_command(self, data: bytes) -> None:
        self._queue(data)

    @rule(
        kind=st.sampled_from(_CMD_KINDS),
        dev=st.sampled_from(DEVICES) | st.integers(0, (1 << 32) - 1),
        event=st.integers(0, 40) | st.integers(0, (1 << 32) - 1),
        intid=st.integers(LPI_INTID_BASE - 2, LPI_INTID_BASE + 300) | st.integers(0, (1 << 32) - 1),
        icid=st.integers(0, 12) | st.integers(0, 0xFFFF),
        rdbase=st.integers(0, 10),
        size=st.integers(0, 31),
        itt=st.integers(0, len(DEVICES) - 1) | st.integers(0, (1 << 44) - 1),
        valid=st.integers(0, 1),
    )
    def command(
        self,
        kind: str,
        dev: int,
        event: int,
        intid: int,
        icid: int,
        rdbase: int,
        size: int,
        itt: int,
        valid: int,
    ) -> None:
        itt_field = self.lay.itt[itt] >> 8 if itt < len(DEVICES) else itt
        # 0..8 name redistributors (as RDbase is encoded for this ITS); 9, 10 are raw
        rdbase = self._rdbase(rdbase % self.platform.cpus) if rdbase < 9 else rdbase
        cmd: ItsCommand
        match kind:
            case "MAPD":
                cmd = Mapd(DeviceID=dev, Size=size, ITT_addr=itt_field, V=valid)
            case "MAPC":
                cmd = Mapc(ICID=icid, RDbase=rdbase, V=valid)
            case "MAPTI":
                cmd = Mapti(DeviceID=dev, EventID=event, pINTID=intid, ICID=icid)
            case "MAPI":
                cmd = Mapi(DeviceID=dev, EventID=event, ICID=icid)
            case "MOVI":
                cmd = Movi(DeviceID=dev, EventID=event, ICID=icid)
            case "MOVALL":
                cmd = Movall(RDbase1=rdbase, RDbase2=self._rdbase(icid % self.platform.cpus))
            case "INT":
                cmd = Int(DeviceID=dev, EventID=event)
            case "CLEAR":
                cmd = Clear(DeviceID=dev, EventID=event)
            case "DISCARD":
                cmd = Discard(DeviceID=dev, EventID=event)
            case "INV":
                cmd = Inv(DeviceID=dev, EventID=event)
            case "INVALL":
                cmd = Invall(ICID=icid)
            case _:
                cmd = Sync(RDbase=rdbase)
        self._queue(cmd.to_bytes())

    @rule()
    def recover_stalled_queue(self) -> None:
        """What a driver does about a stall: replace the command by SYNC and retry."""
        its = self.m.its
        if not its.stalled:
            return
        slot = GitsCbaser.decode(its.cbaser).address + its.creadr
        if self.m.mem.is_ram(slot, CMD_BYTES):
            self.m.mem.write(slot, Sync(RDbase=0).to_bytes(), KERNEL)
        base = self.m.platform.its_base
        self.m.mem.mmio_write(base + GitsOffset.CWRITER, 8, its.cwriter | 1, KERNEL)

    @rule(
        msis=st.lists(
            st.tuples(
                _mostly(st.sampled_from(DEVICES), st.integers(0, (1 << 20) - 1)),
                _mostly(st.integers(0, 9), st.integers(0, (1 << 32) - 1)),
            ),
            min_size=1,
            max_size=8,
        )
    )
    def msi(self, msis: list[tuple[int, int]]) -> None:
        for dev, event in msis:
            res = self.m.its.translate_msi(dev, event)
            self.msi_outcomes[str(res.outcome)] += 1
            if res.pended:
                assert res.cpu is not None and res.intid is not None
                assert self.m.rdists[res.cpu].is_pending(res.intid)

    @rule(
        cpu=st.integers(0, 7),
        eoi=st.booleans(),
        pmr=_mostly(st.just(0xF0), st.sampled_from([0x00, 0x80, 0xA0, 0xFF])),
    )
    def acknowledge(self, cpu: int, eoi: bool, pmr: int) -> None:
        cpu %= self.platform.cpus
        cif = self.m.cpuifs[cpu]
        cif.pmr = pmr
        intid = cif.acknowledge()
        if intid != INTID_SPURIOUS:
            assert LPI_INTID_BASE <= intid < self.m.rdists[cpu].lpi_limit
            assert not self.m.rdists[cpu].is_pending(intid)
        if eoi:
            cif.eoi(intid)

    @rule()
    def drain_every_cpu(self) -> None:
        """Each CPU acknowledges (and EOIs) until nothing is left for it."""
        for cif in self.m.cpuifs:
            cif.pmr = 0xF0
            for _ in range(64):
                intid = cif.acknowledge()
                cif.eoi(intid)
                if intid == INTID_SPURIOUS:
                    break

    @rule(index=st.integers(0, 9), page=st.integers(0, 9), valid=st.booleans())
    def kernel_writes_l1_descriptor(self, index: int, page: int, valid: bool) -> None:
        """Level-1 device table descriptors are software's to write (into the table now
        programmed; with a flat table this overwrites a DTE, which is software's right)."""
        dt = GitsBaser.decode(self.m.its.baser[0])
        target = self.lay.l2[page] if page < len(self.lay.l2) else 0x10_0000_0000 + page
        if self.m.mem.is_ram(dt.address + 8 * index, 8):
            self.m.mem.write_u64(dt.address + 8 * index, target | int(valid) << 63, KERNEL)

    @rule(intid=st.integers(LPI_INTID_BASE, LPI_INTID_BASE + 400), cfg=st.integers(0, 255))
    def kernel_writes_config(self, intid: int, cfg: int) -> None:
        self.m.mem.write_u8(self.lay.prop + intid - LPI_INTID_BASE, cfg, KERNEL)

    # -- invariants ------------------------------------------------------------------

    @invariant()
    def gic_writes_stay_in_their_tables(self) -> None:
        assert self.violations == []

    @invariant()
    def registers_stay_consistent(self) -> None:
        its = self.m.its
        cb = GitsCbaser.decode(its.cbaser)
        assert its.creadr % CMD_BYTES == 0 and its.cwriter % CMD_BYTES == 0
        assert its.creadr < cb.queue_bytes
        for rd in self.m.rdists:
            if rd.enable_lpis:
                assert all(LPI_INTID_BASE <= i < rd.lpi_limit for i in rd.pending_lpis())
            else:
                assert rd.pending_lpis() == set()


def _permissive(p: Platform) -> Platform:
    return p.with_knobs(
        dataclasses.replace(
            p.knobs,
            enable_lpis_clearable=True,
            base_writes_ignored_while_enabled=False,
            its_error_policy="skip" if p.knobs.its_error_policy == "stall" else "stall",
            config_cache=not p.knobs.config_cache,
            equal_priority_lowest_intid=not p.knobs.equal_priority_lowest_intid,
            scan_pending_table_on_enable=not p.knobs.scan_pending_table_on_enable,
            rwp_clear_after_reads=2,
            report_ir=not p.knobs.report_ir,
            direct_lpi=not p.knobs.direct_lpi,
            common_lpi_aff=3 - p.knobs.common_lpi_aff,
            config_cache_entries=4,
            pending_first_kb="table-ignored",
            ptz_reads_back=not p.knobs.ptz_reads_back,
            its_table_writes_while_enabled="accepted",
            its_enable_invalid_tables="refused",
            cwriter_out_of_range="write-ignored",
            mapti_overwrite="ignored",
            move_to_disabled_rdist="drop",
            itt_entry_size=16 if p.knobs.itt_entry_size != 16 else 12,
            collection_id_bits=8,
            hcc=4,
            pta=not p.knobs.pta,
            its_page_size_64k_only=not p.knobs.its_page_size_64k_only,
            shareability=not p.knobs.shareability,
            translater_high_event_bits="write-ignored",
            its_indirect=True,  # this variant runs with a two-level device table
        )
    )


@pytest.mark.parametrize("variant", ["preset", "other-knobs"])
@pytest.mark.parametrize("name", sorted(PLATFORMS))
def test_gic_fuzz(name: str, variant: str) -> None:
    """The preset with a flat device table; the other knob values with a two-level one."""
    other = variant != "preset"
    platform = _permissive(PLATFORMS[name]) if other else PLATFORMS[name]
    cls = type(
        f"GicFuzz_{name.replace('-', '_')}_{variant.replace('-', '_')}",
        (GicFuzz,),
        {"platform": platform, "indirect": other},
    )
    run_state_machine_as_test(  # type: ignore[no-untyped-call]
        cls,
        settings=settings(
            max_examples=30,
            stateful_step_count=50,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        ),
    )


def test_fuzz_layout_fits_every_preset() -> None:
    for p in PLATFORMS.values():
        lay = _Layout(p)
        assert all(p.ram[0].contains(a, SZ_64K) for a in lay.addresses())
        m = Machine(p)
        assert all(m.mem.is_ram(a) for a in lay.addresses())
