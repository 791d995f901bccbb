"""The redistributor: the EnableLPIs latch, LPI tables in memory, and acknowledge order."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gickexec.arch.gicv3 import (
    INTID_SPURIOUS,
    GicdOffset,
    GicrCtlr,
    GicrOffset,
    GicrPendbaser,
    GicrPropbaser,
    LpiConfig,
)
from gickexec.hw.cpuif import IccReg
from gickexec.hw.gicr import LpiOutcome, Redistributor
from gickexec.hw.machine import Machine
from gickexec.hw.memory import Agent, AgentKind, GicWrite, MemRegion
from gickexec.hw.platform import PLATFORMS

PROP = 0x8010_0000
PEND = 0x8020_0000  # + cpu * 64 KiB
NEW_PROP = 0x8040_0000
NEW_PEND = 0x8050_0000


def _machine(**knobs: Any) -> Machine:
    base = PLATFORMS["efi-server-8"]
    return Machine(base.with_knobs(dataclasses.replace(base.knobs, **knobs)))


def _kernel(cpu: int = 0) -> Agent:
    return Agent(AgentKind.KERNEL, cpu, generation=1)


def _rd_addr(m: Machine, cpu: int, offset: int) -> int:
    return m.gicr_base(cpu) + offset


def _write_prop(m: Machine, cpu: int, addr: int, id_bits_minus_1: int = 15) -> int:
    value = GicrPropbaser(
        IDbits=id_bits_minus_1, InnerCache=7, Shareability=1, Physical_Address=addr >> 12
    ).encode()
    m.mem.mmio_write(_rd_addr(m, cpu, GicrOffset.PROPBASER), 8, value, _kernel(cpu))
    return value


def _write_pend(m: Machine, cpu: int, addr: int, *, ptz: bool = False) -> int:
    value = GicrPendbaser(
        InnerCache=7, Shareability=1, Physical_Address=addr >> 16, PTZ=int(ptz)
    ).encode()
    m.mem.mmio_write(_rd_addr(m, cpu, GicrOffset.PENDBASER), 8, value, _kernel(cpu))
    return value


def _ctlr(m: Machine, cpu: int) -> GicrCtlr:
    return GicrCtlr.decode(m.mem.mmio_read(_rd_addr(m, cpu, GicrOffset.CTLR), 4))


def _set_enable(m: Machine, cpu: int, on: bool) -> None:
    m.mem.mmio_write(_rd_addr(m, cpu, GicrOffset.CTLR), 4, int(on), _kernel(cpu))


def _enable(
    m: Machine,
    cpu: int = 0,
    *,
    prop: int = PROP,
    pend: int | None = None,
    id_bits: int = 15,
    ptz: bool = False,
) -> Redistributor:
    pend = PEND + cpu * 0x10000 if pend is None else pend
    _write_prop(m, cpu, prop, id_bits)
    _write_pend(m, cpu, pend, ptz=ptz)
    _set_enable(m, cpu, True)
    return m.rdists[cpu]


def _open_cpu(m: Machine, cpu: int = 0, pmr: int = 0xF0) -> None:
    """What gic_dist_init() and gic_cpu_sys_reg_init() do: Group 1 on at the
    Distributor, then PMR and IGRPEN1 through the System registers."""
    m.mem.mmio_write(m.platform.gicd_base + GicdOffset.CTLR, 4, 0x13, _kernel(cpu))
    m.cpuifs[cpu].msr(IccReg.PMR, pmr)
    m.cpuifs[cpu].msr(IccReg.IGRPEN1, 1)


def _cfg(priority: int = 0xA0, enable: bool = True) -> int:
    return LpiConfig(Enable=int(enable), Group1=1, Priority=priority >> 2).encode()


def _set_cfg(
    m: Machine, intid: int, priority: int = 0xA0, enable: bool = True, prop: int = PROP
) -> None:
    m.mem.write_u8(prop + intid - 8192, _cfg(priority, enable), _kernel())


def _pend_bit(m: Machine, table: int, intid: int) -> bool:
    return bool(m.mem.read_u8(table + intid // 8) & (1 << (intid % 8)))


def _latched(rd: Redistributor) -> tuple[int | None, int | None, int]:
    return rd.prop_addr, rd.pend_addr, rd.id_bits


def _errors(m: Machine) -> list[str]:
    return [str(e) for e in m.events.errors]


# -- programming and the latch --------------------------------------------------------


def test_program_and_enable_latches_the_tables() -> None:
    m = _machine()
    prop = _write_prop(m, 2, PROP)
    pend = _write_pend(m, 2, PEND)
    rd = m.rdists[2]
    assert not rd.enable_lpis and rd.prop_addr is None
    assert m.mem.mmio_read(_rd_addr(m, 2, GicrOffset.PROPBASER), 8) == prop
    assert m.mem.mmio_read(_rd_addr(m, 2, GicrOffset.PENDBASER), 8) == pend
    _set_enable(m, 2, True)
    assert _ctlr(m, 2).EnableLPIs == 1 and _ctlr(m, 2).RWP == 0
    assert _latched(rd) == (PROP, PEND, 16)
    assert rd.pending_table_bytes == 8192
    assert m.events.errors == []


def test_reserved_bits_of_the_base_registers_read_as_zero() -> None:
    m = _machine()
    reg = _rd_addr(m, 0, GicrOffset.PROPBASER)
    m.mem.mmio_write(reg, 8, (1 << 64) - 1, _kernel())
    got = m.mem.mmio_read(reg, 8)
    assert (
        got
        == GicrPropbaser(
            IDbits=31, InnerCache=7, Shareability=3, Physical_Address=(1 << 40) - 1, OuterCache=7
        ).encode()
    )
    reg = _rd_addr(m, 0, GicrOffset.PENDBASER)
    m.mem.mmio_write(reg, 8, (1 << 64) - 1, _kernel())
    assert m.mem.mmio_read(reg, 8) & ((1 << 62) | (1 << 63) | 0xF07F) == 0


@pytest.mark.parametrize("which", ["prop", "pend"])
def test_base_rewrite_ignored_while_enabled(which: str) -> None:
    m = _machine(base_writes_ignored_while_enabled=True)
    prop_v = _write_prop(m, 0, PROP)
    pend_v = _write_pend(m, 0, PEND)
    _set_enable(m, 0, True)
    if which == "prop":
        _write_prop(m, 0, NEW_PROP)
    else:
        _write_pend(m, 0, NEW_PEND)
    assert m.mem.mmio_read(_rd_addr(m, 0, GicrOffset.PROPBASER), 8) == prop_v
    assert m.mem.mmio_read(_rd_addr(m, 0, GicrOffset.PENDBASER), 8) == pend_v
    assert len(m.events.errors) == 1
    err = m.events.errors[0]
    assert err.source == "GICR(CPU0)" and err.outcome == "write ignored"
    assert ("PROPBASER" if which == "prop" else "PENDBASER") in err.what
    rd = m.rdists[0]
    assert rd.set_pending(9000) == LpiOutcome.PENDED
    assert _pend_bit(m, PEND, 9000) and not _pend_bit(m, NEW_PEND, 9000)


@settings(max_examples=40, deadline=None)
@given(intid=st.integers(8192, (1 << 16) - 1))
def test_base_rewrite_accepted_but_old_pending_table_keeps_being_written(intid: int) -> None:
    m = _machine(base_writes_ignored_while_enabled=False)
    _enable(m, 1, pend=PEND)
    seen: list[GicWrite] = []
    m.mem.observe_gic_writes(seen.append)
    new_prop = _write_prop(m, 1, NEW_PROP)
    new_pend = _write_pend(m, 1, NEW_PEND)
    # the registers took the values...
    assert m.mem.mmio_read(_rd_addr(m, 1, GicrOffset.PROPBASER), 8) == new_prop
    assert m.mem.mmio_read(_rd_addr(m, 1, GicrOffset.PENDBASER), 8) == new_pend
    assert [e.outcome for e in m.events.errors] == [
        "register updated; tables latched at enable stay in use"
    ] * 2
    # ...but the redistributor keeps the tables it latched
    rd = m.rdists[1]
    assert rd.set_pending(intid) == LpiOutcome.PENDED
    byte = PEND + intid // 8
    assert m.mem.read_u8(byte) == 1 << (intid % 8)
    assert seen == [GicWrite(byte, b"\x00", bytes([1 << (intid % 8)]), rd.agent)]
    assert m.mem.nonzero_pages(NEW_PEND, 0x10000) == []
    assert rd.is_pending(intid) and rd.pend_addr == PEND


def test_enable_lpis_sticky_when_not_clearable() -> None:
    m = _machine(enable_lpis_clearable=False)
    rd = _enable(m, 0)
    _set_enable(m, 0, False)
    assert _ctlr(m, 0).EnableLPIs == 1
    assert rd.enable_lpis and rd.pend_addr == PEND
    assert len(m.events.errors) == 1 and "EnableLPIs cleared" in m.events.errors[0].what
    assert rd.set_pending(8200) == LpiOutcome.PENDED


@settings(max_examples=10, deadline=None)
@given(reads=st.integers(0, 5))
def test_clearing_enable_lpis_raises_rwp_for_some_reads(reads: int) -> None:
    m = _machine(enable_lpis_clearable=True, rwp_clear_after_reads=reads)
    rd = _enable(m, 0)
    _set_enable(m, 0, False)
    assert not rd.enable_lpis
    seen = [_ctlr(m, 0) for _ in range(reads + 2)]
    assert [c.RWP for c in seen] == [1] * reads + [0, 0]
    assert all(c.EnableLPIs == 0 for c in seen)
    assert rd.set_pending(8200) == LpiOutcome.LPIS_DISABLED
    assert m.events.errors == []


@pytest.mark.parametrize("ces", [False, True])
@pytest.mark.parametrize("ir", [False, True])
def test_ctlr_and_typer_read_as_their_records_encode(ces: bool, ir: bool) -> None:
    # GICR_CTLR is read from an encoding cached by value, GICR_TYPER from one made at
    # reset: both must be what the records encode, in every state the model sets.
    m = _machine(
        report_ces=ces, report_ir=ir, enable_lpis_clearable=True, rwp_clear_after_reads=1
    )
    rd = m.rdists[0]
    typer = m.mem.mmio_read(_rd_addr(m, 0, GicrOffset.TYPER), 8)
    assert typer == rd.typer.encode()
    states = []
    for action in ("reset", "enable", "disable"):
        if action == "enable":
            _enable(m, 0)
        elif action == "disable":
            _set_enable(m, 0, False)
        expected = GicrCtlr(
            EnableLPIs=int(rd.enable_lpis), CES=int(ces), IR=int(ir), RWP=int(rd._rwp_reads > 0)
        ).encode()
        states.append(expected)
        assert m.mem.mmio_read(_rd_addr(m, 0, GicrOffset.CTLR), 4) == expected
        assert rd.ctlr().encode() == m.mem.mmio_read(_rd_addr(m, 0, GicrOffset.CTLR), 4)
    assert len(set(states)) == 3  # reset, enabled, RWP while disabling


def test_reenable_during_rwp_is_ignored_then_new_tables_are_used() -> None:
    m = _machine(
        enable_lpis_clearable=True, rwp_clear_after_reads=2, base_writes_ignored_while_enabled=True
    )
    rd = _enable(m, 0)
    _set_enable(m, 0, False)
    _set_enable(m, 0, True)  # RWP still 1: UNPREDICTABLE, the model ignores it
    assert not rd.enable_lpis
    _write_pend(m, 0, NEW_PEND)  # also before RWP==0: ignored
    assert "EnableLPIs set while RWP=1" in _errors(m)[0]
    assert "written while EnableLPIs=1" in _errors(m)[1]
    while _ctlr(m, 0).RWP:
        pass
    _write_prop(m, 0, NEW_PROP)
    _write_pend(m, 0, NEW_PEND)
    _set_enable(m, 0, True)
    assert (rd.prop_addr, rd.pend_addr) == (NEW_PROP, NEW_PEND)
    assert rd.set_pending(8193) == LpiOutcome.PENDED
    assert _pend_bit(m, NEW_PEND, 8193) and not _pend_bit(m, PEND, 8193)


def test_lpis_arriving_while_disabled_are_dropped_and_write_nothing() -> None:
    m = _machine()
    seen: list[GicWrite] = []
    m.mem.observe_gic_writes(seen.append)
    _write_prop(m, 0, PROP)
    _write_pend(m, 0, PEND)
    rd = m.rdists[0]
    for intid in (8192, 9000, 65535):
        assert rd.set_pending(intid) == LpiOutcome.LPIS_DISABLED
        assert not rd.is_pending(intid)
        assert not rd.clear_pending(intid)
    assert seen == [] and m.mem.pages_touched == 0
    assert rd.pending_lpis() == set()


@pytest.mark.parametrize(
    ("id_bits_minus_1", "latched", "inside", "outside"),
    [
        (15, 16, [8192, 65535], [0, 31, 1023, 8191, 65536, 1 << 20]),
        (13, 14, [8192, 16383], [8191, 16384]),
        (12, 13, [], [8192, 8191, 9000]),  # < 14 bits: every LPI is out of range
        (0, 1, [], [8192]),
        (23, 16, [65535], [65536, 1 << 23]),  # clamped to GICD_TYPER.IDbits
        (31, 16, [65535], [65536]),
    ],
)
def test_intid_range(
    id_bits_minus_1: int, latched: int, inside: list[int], outside: list[int]
) -> None:
    m = _machine()
    assert m.gicd.id_bits == 16
    rd = _enable(m, 0, id_bits=id_bits_minus_1)
    assert rd.id_bits == latched
    seen: list[GicWrite] = []
    m.mem.observe_gic_writes(seen.append)
    for intid in outside:
        assert rd.set_pending(intid) == LpiOutcome.OUT_OF_RANGE
    assert seen == []
    for intid in inside:
        assert rd.set_pending(intid) == LpiOutcome.PENDED
        assert _pend_bit(m, PEND, intid)
        assert rd.set_pending(intid) == LpiOutcome.ALREADY_PENDING
    assert len(seen) == len(inside)


def test_pending_table_outside_ram_is_a_guest_error() -> None:
    m = _machine()
    rd = _enable(m, 0, pend=0x4000_0000)  # below RAM
    assert rd.set_pending(8192) == LpiOutcome.BUS_FAULT
    assert "not in RAM" in _errors(m)[-1]
    assert not rd.is_pending(8192)


# -- disabled LPIs, configuration caching and INV --------------------------------------


@pytest.mark.parametrize("use_invall", [False, True])
def test_disabled_lpi_stays_pending_until_enabled_and_invalidated(use_invall: bool) -> None:
    m = _machine(config_cache=True)
    rd = _enable(m, 0)
    _open_cpu(m)
    intid = 8192 + 77
    _set_cfg(m, intid, enable=False)
    assert rd.set_pending(intid) == LpiOutcome.PENDED
    cpu = m.cpuifs[0]
    assert cpu.acknowledge() == INTID_SPURIOUS
    assert _pend_bit(m, PEND, intid)  # still pending in memory
    _set_cfg(m, intid, enable=True)
    assert cpu.acknowledge() == INTID_SPURIOUS  # cached configuration: invisible
    assert _pend_bit(m, PEND, intid)
    if use_invall:
        rd.invalidate_all()
    else:
        rd.invalidate(intid)
    assert cpu.acknowledge() == intid
    assert not _pend_bit(m, PEND, intid)
    assert cpu.acknowledge() == INTID_SPURIOUS


def test_invalidating_another_lpi_does_not_refresh_the_cache() -> None:
    m = _machine(config_cache=True)
    rd = _enable(m, 0)
    _open_cpu(m)
    rd.set_pending(8300)
    _set_cfg(m, 8300)
    rd.invalidate(8301)
    assert m.cpuifs[0].acknowledge() == INTID_SPURIOUS


def test_without_config_cache_changes_are_visible_at_once() -> None:
    m = _machine(config_cache=False)
    rd = _enable(m, 0)
    _open_cpu(m)
    intid = 8192 + 5
    assert rd.set_pending(intid) == LpiOutcome.PENDED
    assert m.cpuifs[0].acknowledge() == INTID_SPURIOUS
    _set_cfg(m, intid, priority=0x80, enable=True)
    assert m.cpuifs[0].acknowledge() == intid
    assert not _pend_bit(m, PEND, intid)


def test_config_is_read_from_the_latched_property_table() -> None:
    m = _machine(base_writes_ignored_while_enabled=False, config_cache=False)
    rd = _enable(m, 0)
    _open_cpu(m)
    _write_prop(m, 0, NEW_PROP)
    _set_cfg(m, 8192, prop=NEW_PROP)  # enabled in the table the register now names
    rd.set_pending(8192)
    assert m.cpuifs[0].acknowledge() == INTID_SPURIOUS
    _set_cfg(m, 8192, prop=PROP)
    assert m.cpuifs[0].acknowledge() == 8192


# -- acknowledge ----------------------------------------------------------------------


def test_acknowledge_clears_the_pending_bit_in_memory() -> None:
    m = _machine()
    rd = _enable(m, 3)
    _open_cpu(m, 3)
    pend = PEND + 3 * 0x10000
    for intid in (8192, 8199, 8200):
        _set_cfg(m, intid)
        rd.set_pending(intid)
    assert m.mem.read(pend + 1024, 2) == b"\x81\x01"
    cpu = m.cpuifs[3]
    got = []
    for _ in range(3):
        got.append(cpu.acknowledge())
        cpu.eoi(got[-1])
    assert got == [8192, 8199, 8200]
    assert m.mem.read(pend + 1024, 2) == b"\x00\x00"
    assert cpu.acknowledge() == INTID_SPURIOUS
    assert rd.pending_lpis() == set()


def test_nothing_acknowledged_with_group1_disabled_or_pmr_zero() -> None:
    m = _machine()
    rd = _enable(m, 0)
    cpu = m.cpuifs[0]
    _set_cfg(m, 8192, priority=0x00)
    rd.set_pending(8192)
    assert cpu.acknowledge() == INTID_SPURIOUS  # reset: igrpen1 off, PMR 0
    cpu.igrpen1 = True
    assert cpu.acknowledge() == INTID_SPURIOUS  # PMR 0 masks everything
    cpu.pmr = 0xF0
    cpu.igrpen1 = False
    assert cpu.acknowledge() == INTID_SPURIOUS
    assert _pend_bit(m, PEND, 8192)
    cpu.igrpen1 = True
    assert cpu.acknowledge() == INTID_SPURIOUS  # GICD_CTLR: Group 1 still off
    m.mem.mmio_write(m.platform.gicd_base + GicdOffset.CTLR, 4, 0x13, _kernel())
    assert cpu.acknowledge() == 8192


def test_priority_order_pmr_and_running_priority() -> None:
    m = _machine()
    rd = _enable(m, 0)
    _open_cpu(m, pmr=0x80)
    cpu = m.cpuifs[0]
    _set_cfg(m, 9000, priority=0x80)  # == PMR: masked (strictly higher priority needed)
    _set_cfg(m, 9001, priority=0x40)
    _set_cfg(m, 9002, priority=0x60)
    for intid in (9000, 9001, 9002):
        rd.set_pending(intid)
    assert cpu.acknowledge() == 9001
    assert cpu.running_priority == 0x40
    # 0x60 does not pre-empt 0x40
    assert cpu.acknowledge() == INTID_SPURIOUS
    cpu.eoi(9001)
    assert cpu.acknowledge() == 9002
    cpu.eoi(9002)
    assert cpu.acknowledge() == INTID_SPURIOUS
    cpu.pmr = 0x88
    assert cpu.acknowledge() == 9000
    assert cpu.running_priority == 0x80
    cpu.eoi(9000)
    assert cpu.running_priority == 0x100


def test_config_priority_uses_bits_7_to_2() -> None:
    m = _machine()
    rd = _enable(m, 0)
    _open_cpu(m, pmr=0x44)
    m.mem.write_u8(PROP + 10, 0x43, _kernel())  # priority 0x40, group1, enabled
    m.mem.write_u8(PROP + 11, 0x47, _kernel())  # priority 0x44: masked by PMR 0x44
    rd.set_pending(8192 + 11)
    rd.set_pending(8192 + 10)
    assert rd.config(8192 + 10).priority == 0x40
    assert m.cpuifs[0].acknowledge() == 8192 + 10
    m.cpuifs[0].eoi(8192 + 10)
    assert m.cpuifs[0].acknowledge() == INTID_SPURIOUS


@settings(max_examples=30, deadline=None)
@given(
    intids=st.sets(st.integers(8192, 8192 + 4000), min_size=2, max_size=12),
    lowest_first=st.booleans(),
)
def test_equal_priority_order_follows_the_knob(intids: set[int], lowest_first: bool) -> None:
    m = _machine(equal_priority_lowest_intid=lowest_first)
    rd = _enable(m, 0)
    _open_cpu(m)
    for intid in intids:
        _set_cfg(m, intid, priority=0xA0)
        rd.set_pending(intid)
    got = []
    for _ in intids:
        got.append(m.cpuifs[0].acknowledge())
        m.cpuifs[0].eoi(got[-1])
    assert got == sorted(intids, reverse=not lowest_first)


@settings(max_examples=40, deadline=None)
@given(
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("lpi"), st.integers(8192, 8192 + 300), st.integers(0, 63)),
            st.tuples(st.just("ack"), st.just(0), st.just(0)),
        ),
        max_size=40,
    )
)
def test_acknowledge_sequence_matches_a_reference(ops: list[tuple[str, int, int]]) -> None:
    """Any interleaving of arrivals and acknowledges (each followed by EOI)."""
    m = _machine(config_cache=False)
    rd = _enable(m, 0)
    _open_cpu(m, pmr=0xF0)
    prio: dict[int, int] = {}
    pending: set[int] = set()
    for kind, intid, p in ops:
        if kind == "lpi":
            if intid not in pending:
                prio[intid] = p << 2
                _set_cfg(m, intid, priority=p << 2)
            outcome = rd.set_pending(intid)
            assert outcome == (
                LpiOutcome.ALREADY_PENDING if intid in pending else LpiOutcome.PENDED
            )
            pending.add(intid)
        else:
            eligible = [i for i in pending if prio[i] < 0xF0]
            want = min(eligible, key=lambda i: (prio[i], i)) if eligible else INTID_SPURIOUS
            got = m.cpuifs[0].acknowledge()
            assert got == want
            m.cpuifs[0].eoi(got)
            pending.discard(got)
        for i in pending:
            assert _pend_bit(m, PEND, i)


# -- pending table scan on enable and PTZ ----------------------------------------------


def test_pending_bits_in_memory_before_enable_become_pending() -> None:
    m = _machine(scan_pending_table_on_enable=True)
    for intid in (8192, 8200, 60000):
        byte = PEND + intid // 8
        m.mem.write_u8(byte, m.mem.read_u8(byte) | 1 << intid % 8, _kernel())
    m.mem.write_u8(PEND + 10, 0xFF, _kernel())  # IMPDEF first 1 KiB: not LPIs
    m.mem.write_u8(PEND + 8191, 0x80, _kernel())  # INTID 65535: the table's last bit
    rd = _enable(m, 0)
    assert rd.pending_lpis() == {8192, 8200, 60000, 65535}


def test_scanned_lpis_are_acknowledged_in_order() -> None:
    m = _machine()
    _open_cpu(m)
    for intid in (8192, 8200, 60000):
        m.mem.write_u8(PEND + intid // 8, 1 << intid % 8, _kernel())
        _set_cfg(m, intid)
    _enable(m, 0)
    got = []
    for _ in range(4):
        got.append(m.cpuifs[0].acknowledge())
        m.cpuifs[0].eoi(got[-1])
    assert got == [8192, 8200, 60000, INTID_SPURIOUS]
    assert m.mem.read(PEND + 1024, 8192 - 1024) == bytes(8192 - 1024)


def test_ptz_skips_the_scan_and_reads_as_zero() -> None:
    m = _machine(scan_pending_table_on_enable=True)
    m.mem.write_u8(PEND + 8200 // 8, 1 << (8200 % 8), _kernel())
    _set_cfg(m, 8200)
    _open_cpu(m)
    value = _write_pend(m, 0, PEND, ptz=True)
    assert value >> 62 & 1
    reg = _rd_addr(m, 0, GicrOffset.PENDBASER)
    assert GicrPendbaser.decode(m.mem.mmio_read(reg, 8)).PTZ == 0
    assert m.mem.mmio_read(reg, 8) == value & ~(1 << 62)
    _write_prop(m, 0, PROP)
    _set_enable(m, 0, True)
    rd = m.rdists[0]
    assert rd.pending_lpis() == set()
    assert GicrPendbaser.decode(m.mem.mmio_read(reg, 8)).PTZ == 0
    assert m.cpuifs[0].acknowledge() == INTID_SPURIOUS


def test_scan_knob_off_ignores_the_table() -> None:
    m = _machine(scan_pending_table_on_enable=False)
    m.mem.write_u8(PEND + 8200 // 8, 1 << (8200 % 8), _kernel())
    rd = _enable(m, 0)
    assert rd.pending_lpis() == set()
    assert rd.is_pending(8200)  # the bit is still in memory


def test_scan_of_a_pending_table_partly_outside_ram_is_a_guest_error() -> None:
    base = PLATFORMS["efi-server-8"]
    # RAM that ends 4 KiB into the 8 KiB pending table
    m = Machine(dataclasses.replace(base, ram=(MemRegion(0x8000_0000, 0x11000),)))
    pend = 0x8001_0000
    m.mem.write_u8(pend + 1024, 1, _kernel())
    rd = _enable(m, 0, prop=0x8000_0000, pend=pend)
    assert rd.enable_lpis and rd.pending_lpis() == set()
    assert [(e.what, e.outcome) for e in m.events.errors] == [
        ("pending table not in RAM", "scan skipped")
    ]
    assert rd.set_pending(8192) == LpiOutcome.ALREADY_PENDING  # the RAM half still works
    assert rd.set_pending(8192 + 4096 * 8) == LpiOutcome.BUS_FAULT


def test_waker_and_typer() -> None:
    m = _machine()
    base = m.gicr_base(7)
    assert m.mem.mmio_read(base + GicrOffset.WAKER, 4) == 0b110
    m.mem.mmio_write(base + GicrOffset.WAKER, 4, 0, _kernel(7))
    assert m.mem.mmio_read(base + GicrOffset.WAKER, 4) == 0
    typer = m.mem.mmio_read(base + GicrOffset.TYPER, 8)
    assert typer & 1 and typer >> 4 & 1  # PLPIS, Last
    assert (typer >> 8) & 0xFFFF == 7
    assert typer >> 32 == m.platform.affinity(7)
    assert m.mem.mmio_read(base + GicrOffset.TYPER + 4, 4) == typer >> 32
    assert not m.mem.mmio_read(m.gicr_base(6) + GicrOffset.TYPER, 8) >> 4 & 1


# -- the CPU interface as software drives it -------------------------------------------


def test_gicd_group1_disable_stops_lpis_being_forwarded() -> None:
    """QEMU 703090770c19: LPIs are Group 1 Non-secure; with GICD_CTLR's enable clear the
    redistributor keeps them pending and the CPU interface presents nothing."""
    m = _machine()
    _enable(m, 0)
    _open_cpu(m)
    intid = 8192 + 5
    _set_cfg(m, intid)
    gicd_ctlr = m.platform.gicd_base + GicdOffset.CTLR
    m.mem.mmio_write(gicd_ctlr, 4, 0x10, _kernel())  # ARE_NS only
    assert m.rdists[0].set_pending(intid) == LpiOutcome.PENDED
    cpu = m.cpuifs[0]
    assert cpu.mrs(IccReg.HPPIR1) == INTID_SPURIOUS
    assert cpu.mrs(IccReg.IAR1) == INTID_SPURIOUS
    assert _pend_bit(m, PEND, intid)
    m.mem.mmio_write(gicd_ctlr, 4, 0x13, _kernel())
    assert cpu.mrs(IccReg.HPPIR1) == intid  # HPPIR does not acknowledge
    assert cpu.mrs(IccReg.IAR1) == intid
    assert not _pend_bit(m, PEND, intid)
    assert cpu.running_priority == 0xA0
    cpu.msr(IccReg.EOIR1, intid)
    assert cpu.running_priority == 0x100


def test_icc_registers_read_back_and_guard_their_direction() -> None:
    m = _machine()
    cpu = m.cpuifs[0]
    cpu.msr(IccReg.PMR, 0x1F0)  # Priority is [7:0]
    assert cpu.mrs(IccReg.PMR) == 0xF0
    cpu.msr(IccReg.IGRPEN1, 0b10)  # only Enable [0]
    assert cpu.mrs(IccReg.IGRPEN1) == 0
    cpu.msr(IccReg.IGRPEN1, 1)
    assert cpu.mrs(IccReg.IGRPEN1) == 1
    cpu.msr(IccReg.IAR1, 5)
    assert cpu.mrs(IccReg.EOIR1) == 0
    assert _errors(m)[-2:] == [
        "ICC(CPU0): write to read-only ICC_IAR1_EL1 -> ignored (UNDEFINED)",
        "ICC(CPU0): read of write-only ICC_EOIR1_EL1 -> ignored (UNDEFINED)",
    ]
