"""ITS command encodings (32 bytes, four little-endian doublewords) and table entries.

Command fields are at their architectural positions (Arm IHI 0069, chapter 5's ITS
command descriptions; section numbers UNCONFIRMED), checked against Linux v4.19.1
``its_encode_*`` in drivers/irqchip/irq-gic-v3-its.c.  The in-memory device, collection
and interrupt translation table entries are IMPLEMENTATION DEFINED (IHI 0069, the ITS
tables); the layouts below are the
model's choice, patterned on QEMU's, and are advertised to software through
``GITS_BASER<n>.Entry_Size`` and ``GITS_TYPER.ITT_entry_size``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from gickexec.arch.fields import Layout, LayoutRecord, layout_record

__all__ = [
    "CMD_BYTES",
    "CTE",
    "CTE_BYTES",
    "DTE",
    "DTE_BYTES",
    "ITE",
    "ITE_BYTES",
    "OPCODE_NAMES",
    "Clear",
    "Discard",
    "Int",
    "Inv",
    "Invall",
    "ItsCommand",
    "Mapc",
    "Mapd",
    "Mapi",
    "Mapti",
    "Movall",
    "Movi",
    "Sync",
    "UnknownCommand",
    "decode_command",
]

CMD_BYTES = 32

OPCODE_NAMES: dict[int, str] = {
    0x01: "MOVI",
    0x03: "INT",
    0x04: "CLEAR",
    0x05: "SYNC",
    0x08: "MAPD",
    0x09: "MAPC",
    0x0A: "MAPTI",
    0x0B: "MAPI",
    0x0C: "INV",
    0x0D: "INVALL",
    0x0E: "MOVALL",
    0x0F: "DISCARD",
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


class ItsCommand(LayoutRecord):
    """Base of the physical ITS commands; ``OPCODE`` is DW0[7:0]."""

    OPCODE: ClassVar[int]

    def encode(self) -> int:
        return self.LAYOUT.encode_record(self, self.OPCODE)

    def to_bytes(self) -> bytes:
        # encode() without its call: the driver turns every command it posts into bytes
        return self.LAYOUT.encode_record(self, self.OPCODE).to_bytes(CMD_BYTES, "little")

    @property
    def name(self) -> str:
        return OPCODE_NAMES[self.OPCODE]


def _cmd(fields: dict[str, str]) -> Layout:
    # DW0[7:0] is the opcode, owned by ItsCommand; declaring it keeps overlap checks honest.
    return Layout("ITS_CMD", 256, {"_Command": "DW0[7:0]", **fields})


# Records cannot carry the private _Command field, so layouts for records omit it and
# a separate full layout (with the opcode) checks for overlaps at import time.
def _record_layout(name: str, fields: dict[str, str]) -> Layout:
    _cmd(fields)
    return Layout(name, 256, fields)


_MAPD = _record_layout(
    "MAPD", {"DeviceID": "DW0[63:32]", "Size": "DW1[4:0]", "ITT_addr": "DW2[51:8]", "V": "DW2[63]"}
)
_MAPC = _record_layout("MAPC", {"ICID": "DW2[15:0]", "RDbase": "DW2[51:16]", "V": "DW2[63]"})
_MAPTI = _record_layout(
    "MAPTI",
    {"DeviceID": "DW0[63:32]", "EventID": "DW1[31:0]", "pINTID": "DW1[63:32]", "ICID": "DW2[15:0]"},
)
_MAPI = _record_layout(
    "MAPI", {"DeviceID": "DW0[63:32]", "EventID": "DW1[31:0]", "ICID": "DW2[15:0]"}
)
_DEV_EVENT = {"DeviceID": "DW0[63:32]", "EventID": "DW1[31:0]"}
_MOVI = _record_layout("MOVI", {**_DEV_EVENT, "ICID": "DW2[15:0]"})
_INV = _record_layout("INV", _DEV_EVENT)
_INT = _record_layout("INT", _DEV_EVENT)
_CLEAR = _record_layout("CLEAR", _DEV_EVENT)
_DISCARD = _record_layout("DISCARD", _DEV_EVENT)
_INVALL = _record_layout("INVALL", {"ICID": "DW2[15:0]"})
_SYNC = _record_layout("SYNC", {"RDbase": "DW2[51:16]"})
_MOVALL = _record_layout("MOVALL", {"RDbase1": "DW2[51:16]", "RDbase2": "DW3[51:16]"})


@layout_record(_MAPD)
class Mapd(ItsCommand):
    """MAPD: map DeviceID to an ITT of 2^(Size+1) events at ITT_addr<<8 (V=0 unmaps)."""

    OPCODE = 0x08
    DeviceID: int = 0
    Size: int = 0
    ITT_addr: int = 0
    V: int = 1


@layout_record(_MAPC)
class Mapc(ItsCommand):
    """MAPC: map collection ICID to a redistributor (V=0 unmaps)."""

    OPCODE = 0x09
    ICID: int = 0
    RDbase: int = 0
    V: int = 1


@layout_record(_MAPTI)
class Mapti(ItsCommand):
    """MAPTI: map (DeviceID, EventID) to pINTID in collection ICID."""

    OPCODE = 0x0A
    DeviceID: int = 0
    EventID: int = 0
    pINTID: int = 0
    ICID: int = 0


@layout_record(_MAPI)
class Mapi(ItsCommand):
    """MAPI: MAPTI with pINTID = EventID."""

    OPCODE = 0x0B
    DeviceID: int = 0
    EventID: int = 0
    ICID: int = 0


@layout_record(_MOVI)
class Movi(ItsCommand):
    """MOVI: retarget an event to collection ICID (pending state follows)."""

    OPCODE = 0x01
    DeviceID: int = 0
    EventID: int = 0
    ICID: int = 0


@layout_record(_INV)
class Inv(ItsCommand):
    """INV: the target redistributor reloads the event's LPI configuration."""

    OPCODE = 0x0C
    DeviceID: int = 0
    EventID: int = 0


@layout_record(_INT)
class Int(ItsCommand):
    """INT: behave as if the device had written EventID to GITS_TRANSLATER."""

    OPCODE = 0x03
    DeviceID: int = 0
    EventID: int = 0


@layout_record(_CLEAR)
class Clear(ItsCommand):
    """CLEAR: clear the pending state of the event's LPI."""

    OPCODE = 0x04
    DeviceID: int = 0
    EventID: int = 0


@layout_record(_DISCARD)
class Discard(ItsCommand):
    """DISCARD: clear pending state and remove the event's mapping."""

    OPCODE = 0x0F
    DeviceID: int = 0
    EventID: int = 0


@layout_record(_INVALL)
class Invall(ItsCommand):
    """INVALL: reload the configuration of every LPI of the collection's redistributor."""

    OPCODE = 0x0D
    ICID: int = 0


@layout_record(_SYNC)
class Sync(ItsCommand):
    """SYNC: wait until earlier effects on RDbase are visible (synchronous in the model)."""

    OPCODE = 0x05
    RDbase: int = 0


@layout_record(_MOVALL)
class Movall(ItsCommand):
    """MOVALL: move all pending LPIs from RDbase1 to RDbase2."""

    OPCODE = 0x0E
    RDbase1: int = 0
    RDbase2: int = 0


@dataclass(frozen=True, slots=True)
class UnknownCommand:
    """A command the model does not execute (GICv4 or an undefined opcode)."""

    opcode: int
    raw: bytes

    @property
    def name(self) -> str:
        return OPCODE_NAMES.get(self.opcode, f"opcode {self.opcode:#04x}")

    def to_bytes(self) -> bytes:
        return self.raw


_BY_OPCODE: dict[int, type[ItsCommand]] = {
    c.OPCODE: c
    for c in (Mapd, Mapc, Mapti, Mapi, Movi, Inv, Int, Clear, Discard, Invall, Sync, Movall)
}


def decode_command(data: bytes) -> ItsCommand | UnknownCommand:
    """Decode one 32-byte command; bits outside the command's fields are ignored."""
    if len(data) != CMD_BYTES:
        raise ValueError(f"an ITS command is {CMD_BYTES} bytes, got {len(data)}")
    value = int.from_bytes(data, "little")
    opcode = value & 0xFF
    cls = _BY_OPCODE.get(opcode)
    if cls is None:
        return UnknownCommand(opcode, bytes(data))
    return cls.decode(value)


# -- In-memory table entries (IMPLEMENTATION DEFINED; the model's formats) -----------

DTE_BYTES = 8
CTE_BYTES = 8
ITE_BYTES = 8

_DTE = Layout("DTE", 64, {"Valid": "[0]", "Size": "[5:1]", "ITT_addr": "[49:6]"})
_CTE = Layout("CTE", 64, {"Valid": "[0]", "RDbase": "[36:1]"})
_ITE = Layout("ITE", 64, {"Valid": "[0]", "IntType": "[1]", "pINTID": "[25:2]", "ICID": "[47:32]"})


@layout_record(_DTE)
class DTE(LayoutRecord):
    """Device table entry: ITT address (>>8) and EventID bits - 1."""

    Valid: int = 0
    Size: int = 0
    ITT_addr: int = 0

    @property
    def itt_address(self) -> int:
        return self.ITT_addr << 8

    @property
    def num_events(self) -> int:
        return 1 << (self.Size + 1)


@layout_record(_CTE)
class CTE(LayoutRecord):
    """Collection table entry: the target redistributor (processor number when PTA=0)."""

    Valid: int = 0
    RDbase: int = 0


@layout_record(_ITE)
class ITE(LayoutRecord):
    """Interrupt translation entry: physical INTID and collection (IntType 1 = physical)."""

    Valid: int = 0
    IntType: int = 1
    pINTID: int = 0
    ICID: int = 0
