"""The ITS: command queue, device/collection tables and ITTs in memory, MSI translation."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gickexec.arch.gicv3 import (
    INTID_SPURIOUS,
    BaserType,
    GicdOffset,
    GicrOffset,
    GicrPendbaser,
    GicrPropbaser,
    GitsBaser,
    GitsCbaser,
    GitsCtlr,
    GitsOffset,
    LpiConfig,
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
    Mapc,
    Mapd,
    Mapi,
    Mapti,
    Movall,
    Movi,
    Sync,
)
from gickexec.hw.gicr import LpiOutcome
from gickexec.hw.machine import Machine
from gickexec.hw.memory import Agent, AgentKind, GicWrite
from gickexec.hw.platform import PLATFORMS

SZ_64K = 0x10000
PROP = 0x8010_0000
PEND = 0x8020_0000  # + cpu * 64 KiB
CMDQ = 0x8100_0000
DT = 0x8200_0000
CT = 0x8300_0000
L2 = 0x8310_0000
ITT = 0x8400_0000  # + device index * 64 KiB
KERNEL = Agent(AgentKind.KERNEL, 0, generation=1)
DEV = 0x100


class Rig:
    """A machine whose ITS the test drives through MMIO and queue memory, like a driver."""

    def __init__(self, *, indirect: bool = False, queue_pages: int = 16, **knobs: Any) -> None:
        base = PLATFORMS["efi-server-8"]
        self.m = Machine(base.with_knobs(dataclasses.replace(base.knobs, **knobs)))
        self.its = self.m.its
        self.mem = self.m.mem
        self.base = self.m.platform.its_base
        # gic_dist_init(): ARE_NS | EnableGrp1A | EnableGrp1, or no LPI is forwarded
        self.mem.mmio_write(self.m.platform.gicd_base + GicdOffset.CTLR, 4, 0x13, KERNEL)
        for cpu in range(self.m.platform.cpus):
            rd = self.m.gicr_base(cpu)
            prop = GicrPropbaser(IDbits=15, Physical_Address=PROP >> 12).encode()
            pend = GicrPendbaser(Physical_Address=(PEND + cpu * SZ_64K) >> 16).encode()
            self.mem.mmio_write(rd + GicrOffset.PROPBASER, 8, prop, KERNEL)
            self.mem.mmio_write(rd + GicrOffset.PENDBASER, 8, pend, KERNEL)
            self.mem.mmio_write(rd + GicrOffset.CTLR, 4, 1, KERNEL)
            self.m.cpuifs[cpu].pmr = 0xF0
            self.m.cpuifs[cpu].igrpen1 = True
        self.queue_bytes = queue_pages * 0x1000
        self.write_cbaser(CMDQ, queue_pages)
        if indirect:
            self.write_baser(0, DT, size_pages=1, indirect=True)
            self.mem.write_u64(DT, L2 | 1 << 63, KERNEL)  # L1[0] valid, L1[1..] invalid
        else:
            self.write_baser(0, DT, size_pages=8)  # 2^16 DeviceIDs * 8 bytes
        self.write_baser(1, CT, size_pages=1)
        self.cmd_write = 0
        self.mmio(GitsOffset.CWRITER, 0)
        self.set_enabled(True)

    # -- registers ------------------------------------------------------------------

    def mmio(self, offset: int, value: int, size: int = 8, agent: Agent = KERNEL) -> None:
        self.mem.mmio_write(self.base + offset, size, value, agent)

    def read(self, offset: int, size: int = 8) -> int:
        return self.mem.mmio_read(self.base + offset, size)

    def write_cbaser(self, addr: int, pages: int) -> int:
        value = GitsCbaser(
            Size=pages - 1, Shareability=1, Physical_Address=addr >> 12, InnerCache=7, Valid=1
        ).encode()
        self.mmio(GitsOffset.CBASER, value)
        return value

    def write_baser(self, n: int, addr: int, *, size_pages: int, indirect: bool = False) -> int:
        old = GitsBaser.decode(self.read(GitsOffset.BASER + 8 * n))
        value = GitsBaser(
            Size=size_pages - 1,
            Page_Size=0b10,
            Shareability=1,
            Physical_Address=addr >> 12,
            Entry_Size=old.Entry_Size,
            Type=old.Type,
            InnerCache=7,
            Indirect=int(indirect),
            Valid=1,
        ).encode()
        self.mmio(GitsOffset.BASER + 8 * n, value)
        return value

    def set_enabled(self, on: bool) -> None:
        self.mmio(GitsOffset.CTLR, GitsCtlr(Enabled=int(on)).encode(), 4)

    @property
    def creadr(self) -> int:
        return self.read(GitsOffset.CREADR) & ~1

    @property
    def stalled(self) -> bool:
        return bool(self.read(GitsOffset.CREADR) & 1)

    # -- commands -------------------------------------------------------------------

    def put(self, *cmds: Any) -> int:
        """Write commands at the software write pointer; returns the first slot's offset."""
        first = self.cmd_write
        for cmd in cmds:
            raw = cmd if isinstance(cmd, bytes) else cmd.to_bytes()
            assert len(raw) == CMD_BYTES
            self.mem.write(CMDQ + self.cmd_write, raw, KERNEL)
            self.cmd_write = (self.cmd_write + CMD_BYTES) % self.queue_bytes
        return first

    def kick(self, retry: bool = False) -> None:
        self.mmio(GitsOffset.CWRITER, self.cmd_write | int(retry))

    def send(self, *cmds: Any) -> int:
        first = self.put(*cmds)
        self.kick()
        return first

    # -- conveniences ---------------------------------------------------------------

    def map_device(self, dev: int = DEV, events_log2: int = 5, itt: int = ITT) -> int:
        self.send(Mapd(DeviceID=dev, Size=events_log2 - 1, ITT_addr=itt >> 8, V=1))
        return itt

    def map_collections(self) -> None:
        self.send(*(Mapc(ICID=cpu, RDbase=cpu, V=1) for cpu in range(self.m.platform.cpus)))

    def set_cfg(self, intid: int, enable: bool = True, priority: int = 0xA0) -> None:
        cfg = LpiConfig(Enable=int(enable), Group1=1, Priority=priority >> 2).encode()
        self.mem.write_u8(PROP + intid - 8192, cfg, KERNEL)

    def pend_bit(self, cpu: int, intid: int) -> bool:
        return bool(self.mem.read_u8(PEND + cpu * SZ_64K + intid // 8) & 1 << intid % 8)

    def errors(self) -> list[str]:
        return [str(e) for e in self.m.events.errors]

    def codes(self) -> list[int | None]:
        return [e.code for e in self.m.events.errors]


def _mapped(rig: Rig, *, event: int = 5, intid: int = 8300, icid: int = 3) -> None:
    rig.map_device()
    rig.map_collections()
    rig.send(Mapti(DeviceID=DEV, EventID=event, pINTID=intid, ICID=icid))


# -- setup and registers --------------------------------------------------------------


def test_enable_and_registers() -> None:
    rig = Rig()
    ctlr = GitsCtlr.decode(rig.read(GitsOffset.CTLR, 4))
    assert ctlr.Enabled == 1 and ctlr.Quiescent == 0
    dt = GitsBaser.decode(rig.read(GitsOffset.BASER))
    assert (dt.Type, dt.entry_bytes, dt.address, dt.table_bytes) == (
        BaserType.DEVICE,
        8,
        DT,
        8 * SZ_64K,
    )
    ct = GitsBaser.decode(rig.read(GitsOffset.BASER + 8))
    assert (ct.Type, ct.address, ct.Valid) == (BaserType.COLLECTION, CT, 1)
    for n in range(2, 8):
        assert rig.read(GitsOffset.BASER + 8 * n) == 0
    assert GitsCbaser.decode(rig.read(GitsOffset.CBASER)).address == CMDQ
    assert rig.m.events.errors == []
    rig.set_enabled(False)
    ctlr = GitsCtlr.decode(rig.read(GitsOffset.CTLR, 4))
    assert ctlr.Enabled == 0 and ctlr.Quiescent == 1


def test_baser_read_only_fields_and_no_indirect_collections() -> None:
    rig = Rig()
    rig.set_enabled(False)
    raw = GitsBaser(
        Size=0,
        Page_Size=2,
        Physical_Address=CT >> 12,
        Entry_Size=31,
        Type=BaserType.VPE,
        Indirect=1,
        Valid=1,
    ).encode()
    rig.mmio(GitsOffset.BASER + 8, raw)
    back = GitsBaser.decode(rig.read(GitsOffset.BASER + 8))
    assert (back.Type, back.Entry_Size, back.Indirect) == (BaserType.COLLECTION, 7, 0)
    rig.mmio(GitsOffset.BASER + 16, raw)  # unimplemented: RES0
    assert rig.read(GitsOffset.BASER + 16) == 0


def test_base_registers_written_while_enabled_are_ignored() -> None:
    rig = Rig()
    cbaser = rig.read(GitsOffset.CBASER)
    baser0 = rig.read(GitsOffset.BASER)
    baser1 = rig.read(GitsOffset.BASER + 8)
    rig.write_cbaser(0x8800_0000, 1)
    rig.write_baser(0, 0x8800_0000, size_pages=1)
    rig.write_baser(1, 0x8800_0000, size_pages=1)
    assert rig.read(GitsOffset.CBASER) == cbaser
    assert rig.read(GitsOffset.BASER) == baser0
    assert rig.read(GitsOffset.BASER + 8) == baser1
    errs = rig.errors()
    assert len(errs) == 3 and all("while enabled" in e and "ignored" in e for e in errs)
    # the ITS still uses its tables
    _mapped(rig)
    assert rig.its.translate_msi(DEV, 5).pended


# -- mapping and translation ----------------------------------------------------------


def test_mapd_mapc_mapti_then_msi_sets_pending_at_target() -> None:
    rig = Rig()
    _mapped(rig, event=5, intid=8300, icid=3)
    assert rig.m.events.errors == []
    assert rig.mem.read_u64(DT + DEV * 8) == DTE(Valid=1, Size=4, ITT_addr=ITT >> 8).encode()
    assert rig.mem.read_u64(CT + 3 * 8) == CTE(Valid=1, RDbase=3).encode()
    assert rig.mem.read_u64(ITT + 5 * 8) == ITE(Valid=1, IntType=1, pINTID=8300, ICID=3).encode()
    assert rig.creadr == rig.cmd_write and not rig.stalled
    seen: list[GicWrite] = []
    rig.mem.observe_gic_writes(seen.append)
    res = rig.its.translate_msi(DEV, 5)
    assert (res.outcome, res.cpu, res.intid, res.pended) == (LpiOutcome.PENDED, 3, 8300, True)
    byte = PEND + 3 * SZ_64K + 8300 // 8
    assert seen == [GicWrite(byte, b"\x00", bytes([1 << 8300 % 8]), rig.m.rdists[3].agent)]
    assert rig.pend_bit(3, 8300) and not rig.pend_bit(0, 8300)
    rig.set_cfg(8300)
    rig.m.rdists[3].invalidate(8300)
    assert rig.m.cpuifs[3].acknowledge() == 8300
    assert not rig.pend_bit(3, 8300)


def test_msi_through_a_device_and_through_translater() -> None:
    rig = Rig()
    _mapped(rig, event=2, intid=8193, icid=6)
    dev = rig.m.add_device("nic", DEV, nvec=4)
    assert not rig.m.signal_msi(dev, 0).pended  # MSI-X off
    dev.bus_master = dev.msix_enabled = True
    dev.vectors[0].masked = False
    dev.vectors[0].data = 2
    dev.vectors[0].address = 0x1234
    assert "not an ITS doorbell" in rig.m.signal_msi(dev, 0).outcome
    dev.vectors[0].address = rig.m.translater_address
    res = rig.m.signal_msi(dev, 0)
    assert (res.outcome, res.cpu, res.intid) == (LpiOutcome.PENDED, 6, 8193)
    assert rig.pend_bit(6, 8193)
    rig.m.rdists[6].clear_pending(8193)
    # a write to GITS_TRANSLATER: the DeviceID comes from the bus (the writing agent)
    rig.mmio(GitsOffset.TRANSLATER, 2, 4, Agent(AgentKind.DEVICE, DEV))
    assert rig.pend_bit(6, 8193)
    rig.m.rdists[6].clear_pending(8193)
    rig.mmio(GitsOffset.TRANSLATER, 2, 4, Agent(AgentKind.DEVICE, DEV + 1))  # unmapped
    assert all(not rd.pending_lpis() for rd in rig.m.rdists)


@pytest.mark.parametrize(
    ("device", "event", "icid_mapped", "reason"),
    [
        (DEV + 1, 5, True, "DeviceID not mapped"),
        (1 << 16, 5, True, "DeviceID out of range"),
        (DEV, 32, True, "EventID out of range"),
        (DEV, 6, True, "EventID not mapped"),
        (DEV, 5, False, "collection 3 not mapped"),
    ],
)
def test_translation_failures_drop_the_msi(
    device: int, event: int, icid_mapped: bool, reason: str
) -> None:
    rig = Rig()
    rig.map_device()
    if icid_mapped:
        rig.map_collections()
    rig.send(Mapti(DeviceID=DEV, EventID=5, pINTID=8300, ICID=3))
    assert rig.m.events.errors == []
    res = rig.its.translate_msi(device, event)
    assert res.outcome == reason and not res.pended and res.cpu is None
    assert all(not rd.pending_lpis() for rd in rig.m.rdists)


def test_msi_while_its_disabled_is_dropped() -> None:
    rig = Rig()
    _mapped(rig)
    rig.set_enabled(False)
    assert rig.its.translate_msi(DEV, 5).outcome == "ITS disabled"
    rig.set_enabled(True)
    assert rig.its.translate_msi(DEV, 5).pended


def test_msi_to_a_redistributor_with_lpis_disabled() -> None:
    rig = Rig(enable_lpis_clearable=True)
    _mapped(rig, icid=2)
    rig.mem.mmio_write(rig.m.gicr_base(2) + GicrOffset.CTLR, 4, 0, KERNEL)
    res = rig.its.translate_msi(DEV, 5)
    assert res.outcome == LpiOutcome.LPIS_DISABLED and not res.pended
    assert not rig.pend_bit(2, 8300)


def test_mapi_uses_the_event_id_as_intid() -> None:
    rig = Rig()
    rig.map_device(events_log2=14)
    rig.map_collections()
    rig.send(Mapi(DeviceID=DEV, EventID=8195, ICID=1))
    assert rig.m.events.errors == []
    assert ITE.decode(rig.mem.read_u64(ITT + 8195 * 8)).pINTID == 8195
    res = rig.its.translate_msi(DEV, 8195)
    assert (res.cpu, res.intid) == (1, 8195) and rig.pend_bit(1, 8195)
    # an EventID below 8192 is no LPI
    rig.send(Mapi(DeviceID=DEV, EventID=7, ICID=1))
    assert rig.codes() == [0x010B06]


def test_int_and_clear() -> None:
    rig = Rig()
    _mapped(rig, icid=4)
    rig.send(Int(DeviceID=DEV, EventID=5))
    assert rig.pend_bit(4, 8300)
    rig.send(Clear(DeviceID=DEV, EventID=5))
    assert not rig.pend_bit(4, 8300)
    assert rig.m.events.errors == []


def test_clear_of_an_unmapped_event_uses_the_architected_code() -> None:
    """E_ITS_CLEAR_UNMAPPED_INTERRUPT is 0x010507, not 0x01 04 07 (KVM vgic-its.c)."""
    rig = Rig(its_error_policy="skip")
    _mapped(rig)
    rig.send(Clear(DeviceID=DEV, EventID=9), Clear(DeviceID=DEV + 1, EventID=5))
    assert rig.codes() == [0x010507, 0x010507]


def test_int_of_an_unmapped_event_is_an_error() -> None:
    rig = Rig(its_error_policy="skip")
    _mapped(rig)
    rig.send(Int(DeviceID=DEV, EventID=9))
    rig.send(Int(DeviceID=DEV + 1, EventID=5))
    assert rig.codes() == [0x010307, 0x010307]
    assert "event 9" in rig.errors()[0] and "not mapped" in rig.errors()[1]
    assert all(not rd.pending_lpis() for rd in rig.m.rdists)


def test_movi_moves_a_pending_lpi_to_the_new_redistributor() -> None:
    rig = Rig()
    _mapped(rig, icid=0)
    rig.set_cfg(8300, enable=False)  # disabled: it stays pending
    assert rig.its.translate_msi(DEV, 5).cpu == 0
    assert rig.pend_bit(0, 8300)
    rig.send(Movi(DeviceID=DEV, EventID=5, ICID=5))
    assert rig.m.events.errors == []
    assert not rig.pend_bit(0, 8300) and rig.pend_bit(5, 8300)
    assert rig.m.rdists[5].pending_lpis() == {8300}
    assert rig.m.rdists[0].pending_lpis() == set()
    assert ITE.decode(rig.mem.read_u64(ITT + 5 * 8)).ICID == 5
    rig.m.rdists[5].clear_pending(8300)
    assert rig.its.translate_msi(DEV, 5).cpu == 5
    # MOVI to an unmapped collection is an error
    rig.send(Movi(DeviceID=DEV, EventID=5, ICID=100))
    assert rig.codes() == [0x010109]


def test_movi_of_a_non_pending_lpi_moves_only_the_mapping() -> None:
    rig = Rig()
    _mapped(rig, icid=0)
    rig.send(Movi(DeviceID=DEV, EventID=5, ICID=7))
    assert all(not rd.pending_lpis() for rd in rig.m.rdists)
    assert rig.mem.nonzero_pages(PEND, 8 * SZ_64K) == []


def test_movall_moves_every_pending_lpi() -> None:
    rig = Rig()
    rig.map_device()
    rig.map_collections()
    rig.send(*(Mapti(DeviceID=DEV, EventID=e, pINTID=8192 + e, ICID=1) for e in range(4)))
    for e in range(4):
        rig.its.translate_msi(DEV, e)
    rig.send(Movall(RDbase1=1, RDbase2=2))
    assert rig.m.rdists[1].pending_lpis() == set()
    assert rig.m.rdists[2].pending_lpis() == {8192, 8193, 8194, 8195}
    assert rig.mem.read_u8(PEND + 2 * SZ_64K + 1024) == 0x0F
    assert rig.mem.read_u8(PEND + 1 * SZ_64K + 1024) == 0
    rig.send(Movall(RDbase1=1, RDbase2=8))
    assert rig.codes() == [0x010E01]


def test_discard_removes_mapping_and_pending_state() -> None:
    rig = Rig()
    _mapped(rig, icid=2)
    rig.its.translate_msi(DEV, 5)
    assert rig.pend_bit(2, 8300)
    rig.send(Discard(DeviceID=DEV, EventID=5))
    assert rig.m.events.errors == []
    assert not rig.pend_bit(2, 8300)
    assert rig.mem.read_u64(ITT + 5 * 8) == 0
    assert rig.its.translate_msi(DEV, 5).outcome == "EventID not mapped"
    rig.send(Int(DeviceID=DEV, EventID=5))
    assert rig.codes() == [0x010307]


@pytest.mark.parametrize("command", ["INV", "INVALL"])
def test_inv_makes_a_configuration_change_visible(command: str) -> None:
    rig = Rig(config_cache=True)
    _mapped(rig, icid=1)
    rig.set_cfg(8300, enable=False)
    rig.its.translate_msi(DEV, 5)  # the arrival caches the (disabled) configuration
    cpu = rig.m.cpuifs[1]
    assert cpu.acknowledge() == INTID_SPURIOUS
    rig.set_cfg(8300, enable=True)
    assert cpu.acknowledge() == INTID_SPURIOUS
    assert rig.pend_bit(1, 8300)
    rig.send(Inv(DeviceID=DEV, EventID=5) if command == "INV" else Invall(ICID=1))
    assert rig.m.events.errors == []
    assert cpu.acknowledge() == 8300
    assert not rig.pend_bit(1, 8300)


def test_inv_and_invall_errors() -> None:
    rig = Rig(its_error_policy="skip")
    rig.map_device()
    rig.send(Inv(DeviceID=DEV, EventID=1), Invall(ICID=3), Sync(RDbase=8), Sync(RDbase=7))
    assert rig.codes() == [0x010C07, 0x010D09, 0x010501]


def test_mapd_unmap_drops_later_msis() -> None:
    rig = Rig()
    _mapped(rig)
    assert rig.its.translate_msi(DEV, 5).pended
    rig.send(Mapd(DeviceID=DEV, Size=4, ITT_addr=ITT >> 8, V=0))
    assert rig.mem.read_u64(DT + DEV * 8) == 0
    assert rig.its.translate_msi(DEV, 5).outcome == "DeviceID not mapped"
    rig.send(Mapti(DeviceID=DEV, EventID=1, pINTID=8400, ICID=0))
    assert rig.codes() == [0x010A04]


@pytest.mark.parametrize(
    ("cmd", "code"),
    [
        (Mapd(DeviceID=1 << 16, Size=4, ITT_addr=ITT >> 8), 0x010801),
        (Mapd(DeviceID=DEV, Size=16, ITT_addr=ITT >> 8), 0x010802),
        (Mapc(ICID=8192, RDbase=0), 0x010903),  # beyond the 64 KiB collection table
        (Mapc(ICID=1, RDbase=8), 0x010902),
        (Mapti(DeviceID=DEV, EventID=32, pINTID=8300, ICID=0), 0x010A05),
        (Mapti(DeviceID=DEV, EventID=1, pINTID=8191, ICID=0), 0x010A06),
        (Mapti(DeviceID=DEV, EventID=1, pINTID=1 << 16, ICID=0), 0x010A06),
        (Mapti(DeviceID=DEV, EventID=1, pINTID=8300, ICID=8192), 0x010A03),
    ],
)
def test_command_parameter_errors(cmd: Any, code: int) -> None:
    rig = Rig()
    rig.map_device()
    before = rig.mem.read(DT, 8 * SZ_64K), rig.mem.read(CT, SZ_64K), rig.mem.read(ITT, 256)
    rig.send(cmd)
    assert rig.codes() == [code]
    assert (
        rig.mem.read(DT, 8 * SZ_64K),
        rig.mem.read(CT, SZ_64K),
        rig.mem.read(ITT, 256),
    ) == before


# -- two-level device table -----------------------------------------------------------


def test_two_level_device_table() -> None:
    rig = Rig(indirect=True)
    assert GitsBaser.decode(rig.read(GitsOffset.BASER)).Indirect == 1
    rig.map_device(dev=5)
    rig.map_collections()
    rig.send(Mapti(DeviceID=5, EventID=0, pINTID=8192, ICID=0))
    assert rig.m.events.errors == []
    assert DTE.decode(rig.mem.read_u64(L2 + 5 * 8)).Valid == 1
    assert rig.mem.read_u64(DT) == L2 | 1 << 63  # the ITS never writes level 1
    assert rig.its.translate_msi(5, 0).pended
    # DeviceID 8192 + 1 needs L1[1], which is invalid
    rig.send(Mapd(DeviceID=8193, Size=4, ITT_addr=(ITT + SZ_64K) >> 8))
    assert rig.codes() == [0x010801]
    assert rig.stalled
    assert rig.its.translate_msi(8193, 0).outcome == "DeviceID not mapped"


def test_two_level_device_table_second_page() -> None:
    rig = Rig(indirect=True, its_error_policy="skip")
    rig.mem.write_u64(DT + 8, (L2 + SZ_64K) | 1 << 63, KERNEL)
    rig.map_device(dev=8193)
    assert rig.m.events.errors == []
    assert DTE.decode(rig.mem.read_u64(L2 + SZ_64K + 8)).itt_address == ITT
    # an L1 descriptor naming a level-2 page outside RAM: a memory error stalls the queue
    rig.mem.write_u64(DT + 16, 0x10_0000_0000 | 1 << 63, KERNEL)
    rig.map_device(dev=2 * 8192)
    assert "bus fault" in rig.errors()[-1] and rig.stalled


# -- error policy ---------------------------------------------------------------------


def test_stall_policy_stops_until_retry() -> None:
    rig = Rig(its_error_policy="stall")
    rig.map_device()
    bad = rig.put(Mapc(ICID=1, RDbase=99))
    rig.put(Mapc(ICID=2, RDbase=2))
    rig.kick()
    assert rig.stalled and rig.creadr == bad
    assert rig.codes() == [0x010902]
    assert rig.mem.read_u64(CT + 2 * 8) == 0  # the command after the error did not run
    # more commands and a CWRITER write without Retry: still stalled
    rig.put(Mapc(ICID=3, RDbase=3))
    rig.kick()
    assert rig.stalled and rig.creadr == bad and rig.mem.read_u64(CT + 3 * 8) == 0
    # software fixes the command and retries
    rig.mem.write(CMDQ + bad, Sync(RDbase=0).to_bytes(), KERNEL)
    rig.kick(retry=True)
    assert not rig.stalled and rig.creadr == rig.cmd_write
    assert CTE.decode(rig.mem.read_u64(CT + 16)).RDbase == 2
    assert CTE.decode(rig.mem.read_u64(CT + 24)).RDbase == 3
    assert len(rig.m.events.errors) == 1


def test_stall_retry_of_an_unfixed_command_stalls_again() -> None:
    rig = Rig(its_error_policy="stall")
    bad = rig.send(Mapc(ICID=1, RDbase=99))
    rig.kick(retry=True)
    assert rig.stalled and rig.creadr == bad
    assert rig.codes() == [0x010902, 0x010902]


def test_skip_policy_continues() -> None:
    rig = Rig(its_error_policy="skip")
    rig.send(Mapc(ICID=1, RDbase=99), Mapc(ICID=2, RDbase=2))
    assert not rig.stalled and rig.creadr == rig.cmd_write
    assert rig.codes() == [0x010902]
    assert rig.m.events.errors[0].outcome == "skipped"
    assert CTE.decode(rig.mem.read_u64(CT + 16)).Valid == 1


@settings(max_examples=30, deadline=None)
@given(
    good=st.lists(st.booleans(), min_size=1, max_size=20),
    policy=st.sampled_from(["stall", "skip"]),
)
def test_error_policy_over_command_sequences(good: list[bool], policy: str) -> None:
    rig = Rig(its_error_policy=policy)
    start = rig.put(*(Mapc(ICID=i, RDbase=i % 8 if ok else 99) for i, ok in enumerate(good)))
    rig.kick()
    mapped = [CTE.decode(rig.mem.read_u64(CT + 8 * i)).Valid == 1 for i in range(len(good))]
    if policy == "skip" or all(good):
        assert mapped == good
        assert len(rig.m.events.errors) == good.count(False)
        assert rig.creadr == rig.cmd_write and not rig.stalled
    else:
        first_bad = good.index(False)
        assert mapped == [True] * first_bad + [False] * (len(good) - first_bad)
        assert len(rig.m.events.errors) == 1
        assert rig.stalled and rig.creadr == start + first_bad * CMD_BYTES
    assert rig.its.commands_executed == (
        len(good) if policy == "skip" or all(good) else good.index(False)
    )


@pytest.mark.parametrize("opcode", [0x29, 0x2A, 0x22, 0x02, 0x00, 0xFF])
@pytest.mark.parametrize("policy", ["stall", "skip"])
def test_unknown_or_gicv4_opcode_is_a_recorded_error(opcode: int, policy: str) -> None:
    rig = Rig(its_error_policy=policy)
    raw = bytes([opcode]) + bytes(range(1, 32))
    rig.send(raw, Mapc(ICID=1, RDbase=1))
    assert [e.code for e in rig.m.events.errors] == [0x010000 | opcode << 8]
    assert "not supported" in rig.errors()[0]
    assert rig.stalled == (policy == "stall")
    assert (CTE.decode(rig.mem.read_u64(CT + 8)).Valid == 1) == (policy == "skip")


def test_command_queue_outside_ram_stalls() -> None:
    rig = Rig(its_error_policy="skip")
    rig.set_enabled(False)
    rig.mmio(
        GitsOffset.CBASER,
        GitsCbaser(Size=0, Physical_Address=0x10_0000_0000 >> 12, Valid=1).encode(),
    )
    rig.mmio(GitsOffset.CWRITER, 0x40)
    rig.set_enabled(True)
    assert rig.stalled and "bus fault" in rig.errors()[-1]


# -- the queue ------------------------------------------------------------------------


def test_cwriter_beyond_the_queue_makes_it_invalid() -> None:
    rig = Rig(queue_pages=1)
    rig.put(Mapc(ICID=1, RDbase=1))
    rig.mmio(GitsOffset.CWRITER, 0x1000)  # one past the 4 KiB queue
    assert rig.errors() == ["ITS0: GITS_CWRITER 0x1000 beyond the queue -> queue invalid"]
    assert rig.creadr == 0 and rig.read(GitsOffset.CWRITER) == 0
    assert rig.mem.read_u64(CT + 8) == 0
    rig.kick()  # a valid value makes the queue usable again
    assert rig.creadr == 32 and CTE.decode(rig.mem.read_u64(CT + 8)).Valid == 1


def test_queue_wraps() -> None:
    rig = Rig(queue_pages=1, its_error_policy="skip")
    slots = 0x1000 // CMD_BYTES
    rig.send(*(Sync(RDbase=0) for _ in range(slots - 1)))
    assert rig.creadr == 0x1000 - CMD_BYTES
    rig.send(Mapc(ICID=10, RDbase=1), Mapc(ICID=11, RDbase=2), Mapc(ICID=12, RDbase=3))
    assert rig.cmd_write == 2 * CMD_BYTES and rig.creadr == 2 * CMD_BYTES
    assert [CTE.decode(rig.mem.read_u64(CT + 8 * i)).RDbase for i in (10, 11, 12)] == [1, 2, 3]
    assert rig.its.commands_executed == slots + 2
    assert rig.m.events.errors == []


@settings(max_examples=25, deadline=None)
@given(batches=st.lists(st.integers(1, 40), min_size=1, max_size=12))
def test_queue_pointer_arithmetic(batches: list[int]) -> None:
    """Batches of commands of any size, wrapping any number of times, all execute."""
    rig = Rig(queue_pages=1)
    icid = 0
    for n in batches:
        rig.send(*(Mapc(ICID=(icid + i) % 512, RDbase=(icid + i) % 8) for i in range(n)))
        icid += n
        assert rig.creadr == rig.cmd_write == (icid * CMD_BYTES) % 0x1000
    assert rig.its.commands_executed == sum(batches)
    assert rig.m.events.errors == []


def test_commands_wait_for_the_its_to_be_enabled() -> None:
    rig = Rig()
    rig.set_enabled(False)
    rig.send(Mapc(ICID=1, RDbase=1))
    assert rig.creadr == 0 and rig.mem.read_u64(CT + 8) == 0
    rig.set_enabled(True)
    assert rig.creadr == 32 and CTE.decode(rig.mem.read_u64(CT + 8)).Valid == 1


def test_writing_cbaser_resets_creadr_and_stall() -> None:
    rig = Rig()
    rig.send(Mapc(ICID=1, RDbase=99))
    assert rig.stalled
    rig.set_enabled(False)
    rig.write_cbaser(CMDQ, 16)
    assert rig.read(GitsOffset.CREADR) == 0
