"""ITS command encodings and table entries (gickexec.arch.its).

Every command is checked against a deliberately naive encoder written here from the
Linux ``its_encode_*`` helpers (drivers/irqchip/irq-gic-v3-its.c, v4.19.1): each helper is
``its_mask_encode(&raw_cmd[dw], value, hi, lo)``, i.e. ``(value << lo) & GENMASK(hi, lo)``
in one of four little-endian doublewords.  A few commands also have hand-annotated byte
literals so that the naive encoder itself is pinned down.
"""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gickexec.arch.fields import LayoutError, LayoutRecord
from gickexec.arch.its import (
    CMD_BYTES,
    CTE,
    CTE_BYTES,
    DTE,
    DTE_BYTES,
    ITE,
    ITE_BYTES,
    OPCODE_NAMES,
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

# -- the naive, independent encoder --------------------------------------------------------


def _genmask(hi: int, lo: int) -> int:
    return ((1 << (hi + 1)) - 1) & ~((1 << lo) - 1)


class NaiveCmd:
    """struct its_cmd_block { u64 raw_cmd[4]; } and the its_encode_* helpers."""

    def __init__(self) -> None:
        self.raw = [0, 0, 0, 0]

    def _mask_encode(self, dw: int, val: int, hi: int, lo: int) -> NaiveCmd:
        mask = _genmask(hi, lo)
        self.raw[dw] &= ~mask
        self.raw[dw] |= (val << lo) & mask
        return self

    def cmd(self, op: int) -> NaiveCmd:  # its_encode_cmd
        return self._mask_encode(0, op, 7, 0)

    def devid(self, devid: int) -> NaiveCmd:  # its_encode_devid
        return self._mask_encode(0, devid, 63, 32)

    def event_id(self, event_id: int) -> NaiveCmd:  # its_encode_event_id
        return self._mask_encode(1, event_id, 31, 0)

    def phys_id(self, phys_id: int) -> NaiveCmd:  # its_encode_phys_id
        return self._mask_encode(1, phys_id, 63, 32)

    def size(self, size: int) -> NaiveCmd:  # its_encode_size
        return self._mask_encode(1, size, 4, 0)

    def itt(self, itt_addr: int) -> NaiveCmd:  # its_encode_itt (byte address)
        return self._mask_encode(2, itt_addr >> 8, 51, 8)

    def valid(self, valid: int) -> NaiveCmd:  # its_encode_valid
        return self._mask_encode(2, valid, 63, 63)

    def collection(self, col: int) -> NaiveCmd:  # its_encode_collection
        return self._mask_encode(2, col, 15, 0)

    def target(self, target_addr: int) -> NaiveCmd:  # its_encode_target (byte address)
        return self._mask_encode(2, target_addr >> 16, 51, 16)

    def target2(self, target_addr: int) -> NaiveCmd:  # MOVALL RDbase2, DW3[51:16]
        return self._mask_encode(3, target_addr >> 16, 51, 16)

    def to_bytes(self) -> bytes:
        return struct.pack("<4Q", *self.raw)


# -- hand-annotated golden encodings -------------------------------------------------------


def test_mapd_golden_bytes() -> None:
    cmd = Mapd(DeviceID=0x1234_5678, Size=4, ITT_addr=0x8000_0000 >> 8, V=1)
    expected = bytes.fromhex(
        "08 000000"  # DW0[7:0] opcode MAPD, [31:8] RES0
        "78563412"  # DW0[63:32] DeviceID 0x12345678
        "04 000000 00000000"  # DW1[4:0] Size = 4 (32 events)
        "00 00 00 80 00 00 00 80"  # DW2[51:8] ITT_addr = 0x80000000>>8, DW2[63] V
        "0000000000000000"  # DW3
    )
    assert cmd.to_bytes() == expected
    assert len(expected) == CMD_BYTES
    naive = NaiveCmd().cmd(0x08).devid(0x1234_5678).size(4).itt(0x8000_0000).valid(1)
    assert naive.to_bytes() == expected  # the naive encoder agrees with the hand-written bytes


def test_mapc_golden_bytes() -> None:
    cmd = Mapc(ICID=0x0003, RDbase=0x0002, V=1)  # PTA=0: processor 2 in DW2[31:16]
    expected = bytes.fromhex(
        "0900000000000000"  # DW0 opcode MAPC
        "0000000000000000"  # DW1
        "0300 0200 00000080"  # DW2[15:0] ICID=3, [51:16] RDbase=2, [63] V
        "0000000000000000"
    )
    assert cmd.to_bytes() == expected
    assert NaiveCmd().cmd(0x09).collection(3).target(2 << 16).valid(1).to_bytes() == expected


def test_mapti_golden_bytes() -> None:
    cmd = Mapti(DeviceID=0x10, EventID=0x5, pINTID=8192, ICID=0x7)
    expected = bytes.fromhex(
        "0a000000 10000000"  # opcode MAPTI, DeviceID 0x10
        "05000000 00200000"  # EventID 5, pINTID 0x2000
        "0700000000000000"  # ICID 7
        "0000000000000000"
    )
    assert cmd.to_bytes() == expected
    naive = NaiveCmd().cmd(0x0A).devid(0x10).event_id(5).phys_id(8192).collection(7)
    assert naive.to_bytes() == expected


def test_sync_and_movall_golden_bytes() -> None:
    assert Sync(RDbase=0x1).to_bytes() == bytes.fromhex(
        "0500000000000000000000000000000000000100000000000000000000000000"
    )
    assert Movall(RDbase1=0x1, RDbase2=0xABCD).to_bytes() == bytes.fromhex(
        "0e00000000000000000000000000000000000100000000000000cdab00000000"
    )


def test_int_golden_bytes() -> None:
    assert Int(DeviceID=0xFFFF_FFFF, EventID=0xFFFF_FFFF).to_bytes() == bytes.fromhex(
        "03000000ffffffffffffffff00000000" + "00" * 16
    )


# -- every command against the naive encoder ------------------------------------------------

GOLDEN_CASES: list[tuple[ItsCommand, NaiveCmd]] = [
    (
        Mapd(DeviceID=0xDEAD, Size=15, ITT_addr=0x4_5678_9A00 >> 8, V=1),
        NaiveCmd().cmd(0x08).devid(0xDEAD).size(15).itt(0x4_5678_9A00).valid(1),
    ),
    (
        Mapd(DeviceID=7, Size=3, ITT_addr=0, V=0),
        NaiveCmd().cmd(0x08).devid(7).size(3).valid(0),
    ),
    (
        Mapc(ICID=0xFFFF, RDbase=0x5, V=1),
        NaiveCmd().cmd(0x09).collection(0xFFFF).target(5 << 16).valid(1),
    ),
    (
        Mapc(ICID=1, RDbase=0x8_0A00, V=1),  # PTA=1: RD frame PA 0x8_0A00_0000
        NaiveCmd().cmd(0x09).collection(1).target(0x8_0A00_0000).valid(1),
    ),
    (
        Mapti(DeviceID=0x42, EventID=0x1F, pINTID=0x2020, ICID=3),
        NaiveCmd().cmd(0x0A).devid(0x42).event_id(0x1F).phys_id(0x2020).collection(3),
    ),
    (
        Mapi(DeviceID=0x42, EventID=0x2020, ICID=3),
        NaiveCmd().cmd(0x0B).devid(0x42).event_id(0x2020).collection(3),
    ),
    (
        Movi(DeviceID=0x1000, EventID=9, ICID=0x11),
        NaiveCmd().cmd(0x01).devid(0x1000).event_id(9).collection(0x11),
    ),
    (Inv(DeviceID=1, EventID=2), NaiveCmd().cmd(0x0C).devid(1).event_id(2)),
    (Invall(ICID=0xBEEF), NaiveCmd().cmd(0x0D).collection(0xBEEF)),
    (Sync(RDbase=0x3), NaiveCmd().cmd(0x05).target(3 << 16)),
    (Discard(DeviceID=3, EventID=4), NaiveCmd().cmd(0x0F).devid(3).event_id(4)),
    (Int(DeviceID=5, EventID=6), NaiveCmd().cmd(0x03).devid(5).event_id(6)),
    (Clear(DeviceID=7, EventID=8), NaiveCmd().cmd(0x04).devid(7).event_id(8)),
    (
        Movall(RDbase1=0x1, RDbase2=0x2),
        NaiveCmd().cmd(0x0E).target(1 << 16).target2(2 << 16),
    ),
]


@pytest.mark.parametrize(
    ("cmd", "naive"), GOLDEN_CASES, ids=[type(c).__name__ for c, _ in GOLDEN_CASES]
)
def test_command_matches_naive_encoder(cmd: ItsCommand, naive: NaiveCmd) -> None:
    raw = cmd.to_bytes()
    assert raw == naive.to_bytes()
    assert cmd.encode() == int.from_bytes(naive.to_bytes(), "little")
    assert decode_command(raw) == cmd


U32 = st.integers(0, (1 << 32) - 1)
U16 = st.integers(0, (1 << 16) - 1)
RD = st.integers(0, (1 << 36) - 1)


def _check(cmd: ItsCommand, naive: NaiveCmd) -> None:
    assert cmd.to_bytes() == naive.to_bytes()
    assert decode_command(naive.to_bytes()) == cmd


@given(U32, st.integers(0, 31), st.integers(0, (1 << 44) - 1), st.integers(0, 1))
def test_mapd_vs_naive(devid: int, size: int, itt: int, v: int) -> None:
    _check(
        Mapd(DeviceID=devid, Size=size, ITT_addr=itt, V=v),
        NaiveCmd().cmd(0x08).devid(devid).size(size).itt(itt << 8).valid(v),
    )


@given(U16, RD, st.integers(0, 1))
def test_mapc_vs_naive(icid: int, rd: int, v: int) -> None:
    _check(
        Mapc(ICID=icid, RDbase=rd, V=v),
        NaiveCmd().cmd(0x09).collection(icid).target(rd << 16).valid(v),
    )


@given(U32, U32, U32, U16)
def test_mapti_vs_naive(devid: int, ev: int, pintid: int, icid: int) -> None:
    _check(
        Mapti(DeviceID=devid, EventID=ev, pINTID=pintid, ICID=icid),
        NaiveCmd().cmd(0x0A).devid(devid).event_id(ev).phys_id(pintid).collection(icid),
    )


@given(U32, U32, U16)
def test_mapi_and_movi_vs_naive(devid: int, ev: int, icid: int) -> None:
    _check(
        Mapi(DeviceID=devid, EventID=ev, ICID=icid),
        NaiveCmd().cmd(0x0B).devid(devid).event_id(ev).collection(icid),
    )
    _check(
        Movi(DeviceID=devid, EventID=ev, ICID=icid),
        NaiveCmd().cmd(0x01).devid(devid).event_id(ev).collection(icid),
    )


@pytest.mark.parametrize(
    ("cls", "opcode"), [(Inv, 0x0C), (Int, 0x03), (Clear, 0x04), (Discard, 0x0F)]
)
@given(devid=U32, ev=U32)
def test_device_event_commands_vs_naive(
    cls: type[Inv | Int | Clear | Discard], opcode: int, devid: int, ev: int
) -> None:
    _check(cls(DeviceID=devid, EventID=ev), NaiveCmd().cmd(opcode).devid(devid).event_id(ev))


@given(U16, RD, RD)
def test_invall_sync_movall_vs_naive(icid: int, rd1: int, rd2: int) -> None:
    _check(Invall(ICID=icid), NaiveCmd().cmd(0x0D).collection(icid))
    _check(Sync(RDbase=rd1), NaiveCmd().cmd(0x05).target(rd1 << 16))
    _check(
        Movall(RDbase1=rd1, RDbase2=rd2),
        NaiveCmd().cmd(0x0E).target(rd1 << 16).target2(rd2 << 16),
    )


# -- opcodes, names, defaults --------------------------------------------------------------

ALL_COMMANDS: list[type[ItsCommand]] = [
    Mapd,
    Mapc,
    Mapti,
    Mapi,
    Movi,
    Inv,
    Invall,
    Sync,
    Discard,
    Int,
    Clear,
    Movall,
]

EXPECTED_OPCODES = {
    "MOVI": 0x01,
    "INT": 0x03,
    "CLEAR": 0x04,
    "SYNC": 0x05,
    "MAPD": 0x08,
    "MAPC": 0x09,
    "MAPTI": 0x0A,
    "MAPI": 0x0B,
    "INV": 0x0C,
    "INVALL": 0x0D,
    "MOVALL": 0x0E,
    "DISCARD": 0x0F,
}
GICV4_OPCODES = {
    0x21: "VMOVI",
    0x22: "VMOVP",
    0x23: "VSGI",
    0x25: "VSYNC",
    0x29: "VMAPP",
    0x2A: "VMAPTI",
    0x2B: "VMAPI",
    0x2D: "VINVALL",
    0x2E: "INVDB",
}


@pytest.mark.parametrize("cls", ALL_COMMANDS, ids=lambda c: c.__name__)
def test_opcode_and_name(cls: type[ItsCommand]) -> None:
    cmd = cls()
    assert EXPECTED_OPCODES[cmd.name] == cls.OPCODE
    assert cmd.name == cls.__name__.upper()
    assert cmd.to_bytes()[0] == cls.OPCODE
    assert cmd.encode() & 0xFF == cls.OPCODE


def test_opcode_table() -> None:
    assert {**{v: k for k, v in EXPECTED_OPCODES.items()}, **GICV4_OPCODES} == OPCODE_NAMES


@pytest.mark.parametrize("cls", ALL_COMMANDS, ids=lambda c: c.__name__)
def test_fields_never_touch_opcode_byte(cls: type[ItsCommand]) -> None:
    assert cls.LAYOUT.width == 8 * CMD_BYTES
    assert cls.LAYOUT.res0_mask & 0xFF == 0xFF


def test_valid_defaults() -> None:
    assert Mapd().V == 1
    assert Mapc().V == 1
    assert Mapd().to_bytes()[23] == 0x80
    assert Mapc(V=0).to_bytes()[23] == 0x00


def test_too_wide_field_raises() -> None:
    with pytest.raises(LayoutError):
        Mapd(Size=32).encode()
    with pytest.raises(LayoutError):
        Mapc(ICID=1 << 16).to_bytes()
    with pytest.raises(LayoutError):
        Mapd(ITT_addr=1 << 44).encode()
    with pytest.raises(LayoutError):
        Sync(RDbase=1 << 36).encode()
    with pytest.raises(LayoutError):
        Mapti(DeviceID=1 << 32).encode()


# -- decode_command -------------------------------------------------------------------------


def _values(cls: type[LayoutRecord]) -> st.SearchStrategy[dict[str, int]]:
    return st.fixed_dictionaries(
        {f.name: st.integers(0, (1 << f.width) - 1) for f in cls.LAYOUT.fields}
    )


@pytest.mark.parametrize("cls", ALL_COMMANDS, ids=lambda c: c.__name__)
@settings(max_examples=40)
@given(data=st.data())
def test_decode_command_round_trip(cls: type[ItsCommand], data: st.DataObject) -> None:
    cmd = cls(**data.draw(_values(cls)))
    raw = cmd.to_bytes()
    assert len(raw) == CMD_BYTES
    decoded = decode_command(raw)
    assert type(decoded) is cls
    assert decoded == cmd
    assert decode_command(bytearray(raw)) == cmd  # type: ignore[arg-type]


@pytest.mark.parametrize("cls", ALL_COMMANDS, ids=lambda c: c.__name__)
@settings(max_examples=40)
@given(data=st.data())
def test_decode_arbitrary_bytes_then_encode(cls: type[ItsCommand], data: st.DataObject) -> None:
    raw = bytearray(data.draw(st.binary(min_size=CMD_BYTES, max_size=CMD_BYTES)))
    raw[0] = cls.OPCODE
    decoded = decode_command(bytes(raw))
    assert isinstance(decoded, cls)
    value = int.from_bytes(raw, "little")
    assert decoded.encode() == (value & ~cls.LAYOUT.res0_mask) | cls.OPCODE


def test_decode_ignores_res0_bits() -> None:
    clean = Mapd(DeviceID=9, Size=4, ITT_addr=0x1234, V=1).to_bytes()
    dirty = bytearray(clean)
    dirty[1] = 0xFF  # DW0[15:8]
    dirty[8 + 4] = 0xFF  # DW1[39:32]
    dirty[16] = 0xFF  # DW2[7:0]
    dirty[24:32] = b"\xff" * 8  # DW3
    assert decode_command(bytes(dirty)) == decode_command(clean)


@pytest.mark.parametrize("opcode", sorted(GICV4_OPCODES))
def test_gicv4_opcodes_are_unknown_commands(opcode: int) -> None:
    raw = bytes([opcode]) + bytes(range(1, CMD_BYTES))
    cmd = decode_command(raw)
    assert isinstance(cmd, UnknownCommand)
    assert cmd.opcode == opcode
    assert cmd.raw == raw
    assert cmd.to_bytes() == raw
    assert cmd.name == GICV4_OPCODES[opcode]


def test_vmapp_keeps_raw_bytes_and_name() -> None:
    # VMAPP: DW1[47:32] vPEID, DW2[63] V, DW2[51:16] RDbase, DW3[51:16] VPT_addr, DW3[4:0] size
    raw = NaiveCmd().cmd(0x29)
    raw.raw[1] = 0x5 << 32
    raw.raw[2] = (1 << 63) | (2 << 16)
    raw.raw[3] = (0x8_0000 << 16) | 15
    data = bytearray(raw.to_bytes())
    cmd = decode_command(data)  # type: ignore[arg-type]  # a bytearray is accepted too
    assert isinstance(cmd, UnknownCommand)
    assert cmd.name == "VMAPP"
    assert cmd.opcode == 0x29
    assert cmd.raw == bytes(data)
    assert type(cmd.raw) is bytes  # a copy, not the caller's bytearray
    data[0] = 0
    assert cmd.raw[0] == 0x29


@given(
    st.integers(0, 255).filter(lambda op: op not in EXPECTED_OPCODES.values()),
    st.binary(min_size=CMD_BYTES - 1, max_size=CMD_BYTES - 1),
)
def test_every_non_physical_opcode_is_unknown(opcode: int, rest: bytes) -> None:
    raw = bytes([opcode]) + rest
    cmd = decode_command(raw)
    assert isinstance(cmd, UnknownCommand)
    assert cmd.opcode == opcode
    assert cmd.to_bytes() == raw
    assert cmd.name == GICV4_OPCODES.get(opcode, f"opcode {opcode:#04x}")


def test_undefined_opcode_name() -> None:
    cmd = decode_command(b"\x7f" + bytes(31))
    assert isinstance(cmd, UnknownCommand)
    assert cmd.name == "opcode 0x7f"
    assert decode_command(bytes(32)).name == "opcode 0x00"


def test_opcode_is_only_the_low_byte() -> None:
    # DW0[15:8] is RES0, so 0x0105 is still SYNC rather than something else
    raw = (0x0105).to_bytes(2, "little") + bytes(30)
    assert decode_command(raw) == Sync()


@pytest.mark.parametrize("n", [0, 1, 16, 31, 33, 64])
def test_decode_wrong_length_raises(n: int) -> None:
    with pytest.raises(ValueError, match="32"):
        decode_command(b"\x05" + bytes(max(n - 1, 0)) if n else b"")


# -- table entries (IMPLEMENTATION DEFINED; the model's own formats) ------------------------


def test_entry_sizes() -> None:
    assert DTE_BYTES == DTE.LAYOUT.width // 8 == 8
    assert CTE_BYTES == CTE.LAYOUT.width // 8 == 8
    assert ITE_BYTES == ITE.LAYOUT.width // 8 == 8
    assert len(DTE().to_bytes()) == DTE_BYTES


def test_dte_golden() -> None:
    d = DTE(Valid=1, Size=15, ITT_addr=0x8_1234_5600 >> 8)
    assert d.encode() == 1 | (15 << 1) | ((0x8_1234_5600 >> 8) << 6)
    assert d.to_bytes() == (1 | (15 << 1) | (0x812_3456 << 6)).to_bytes(8, "little")
    assert d.itt_address == 0x8_1234_5600
    assert d.num_events == 1 << 16
    assert DTE.decode(d.encode()) == d


def test_dte_max_fields() -> None:
    d = DTE(Valid=1, Size=31, ITT_addr=(1 << 44) - 1)
    assert d.encode() == _genmask(49, 0)
    assert d.itt_address == _genmask(51, 8)  # full 52-bit ITT address fits
    assert d.num_events == 1 << 32


def test_cte_golden() -> None:
    c = CTE(Valid=1, RDbase=3)
    assert c.encode() == 0b111
    assert CTE.decode(0b111) == c
    assert CTE(Valid=1, RDbase=(1 << 36) - 1).encode() == _genmask(36, 0)


def test_ite_golden() -> None:
    e = ITE(Valid=1, pINTID=8192, ICID=5)
    assert e.IntType == 1  # physical by default
    assert e.encode() == 1 | (1 << 1) | (8192 << 2) | (5 << 32)
    assert e.to_bytes() == bytes([0x03, 0x80, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00])
    assert ITE.decode(e.encode()) == e
    assert ITE(pINTID=(1 << 24) - 1, IntType=0).encode() == _genmask(25, 2)


def test_entries_hold_every_command_field() -> None:
    """MAPD/MAPC/MAPTI values must fit the entries they are stored in."""
    assert DTE.LAYOUT.field("ITT_addr").width == Mapd.LAYOUT.field("ITT_addr").width
    assert DTE.LAYOUT.field("Size").width == Mapd.LAYOUT.field("Size").width
    assert CTE.LAYOUT.field("RDbase").width == Mapc.LAYOUT.field("RDbase").width
    assert ITE.LAYOUT.field("ICID").width == Mapti.LAYOUT.field("ICID").width
    # pINTID: the ITE keeps 24 bits, the maximum INTID width (GICD_TYPER.IDbits <= 23)
    assert ITE.LAYOUT.field("pINTID").width == 24


ENTRIES: list[type[LayoutRecord]] = [DTE, CTE, ITE]


@pytest.mark.parametrize("cls", ENTRIES, ids=lambda c: c.__name__)
@settings(max_examples=50)
@given(data=st.data())
def test_entry_round_trips(cls: type[LayoutRecord], data: st.DataObject) -> None:
    values: dict[str, Any] = data.draw(_values(cls))
    e = cls(**values)
    assert cls.decode(e.encode()) == e
    assert cls.from_bytes(e.to_bytes()) == e
    v = data.draw(st.integers(0, (1 << 64) - 1))
    assert cls.decode(v).encode() == v & ~cls.LAYOUT.res0_mask


def test_entry_from_bytes_wrong_length() -> None:
    with pytest.raises(LayoutError):
        DTE.from_bytes(bytes(12))
