"""Bit-field layouts declared in the Arm spec's ``[hi:lo]`` notation.

A :class:`Layout` is a named register (or command, or table entry) of a fixed
width whose fields are written exactly as the GIC architecture specification
prints them, e.g. ``"[51:12]"`` or ``"[0]"``.  Multi-doubleword layouts (ITS
commands) may name the doubleword: ``"DW2[51:16]"``.  A layout checks itself
when it is built: every field must fit in the register and no two fields may
overlap.  Records built with :func:`layout_record` decode from and encode to
integers through the same table, so extraction and deposit can never disagree.
"""

from __future__ import annotations

import dataclasses
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Self, TypeVar, dataclass_transform

__all__ = [
    "Field",
    "Layout",
    "LayoutError",
    "LayoutRecord",
    "layout_record",
]


class LayoutError(ValueError):
    """A layout table is inconsistent, or a value does not fit a field (a model bug)."""


_SPEC_RE = re.compile(r"^(?:DW(?P<dw>\d+))?\[(?P<hi>\d+)(?::(?P<lo>\d+))?\]$")


@dataclass(frozen=True, slots=True)
class Field:
    """One field of a layout: bits ``[hi:lo]`` inclusive, LSB numbered 0."""

    name: str
    hi: int
    lo: int

    @classmethod
    def parse(cls, name: str, spec: str) -> Field:
        """Build a field from spec notation (``"[7:2]"``, ``"[0]"``, ``"DW1[31:0]"``)."""
        m = _SPEC_RE.match(spec.replace(" ", ""))
        if m is None:
            raise LayoutError(f"field {name!r}: cannot parse bit range {spec!r}")
        hi = int(m["hi"])
        lo = int(m["lo"]) if m["lo"] is not None else hi
        if lo > hi:
            raise LayoutError(f"field {name!r}: {spec!r} has lo > hi")
        base = 64 * int(m["dw"]) if m["dw"] is not None else 0
        if m["dw"] is not None and hi > 63:
            raise LayoutError(f"field {name!r}: {spec!r} exceeds a doubleword")
        return cls(name, base + hi, base + lo)

    @property
    def width(self) -> int:
        return self.hi - self.lo + 1

    @property
    def mask(self) -> int:
        """The field's bits in register position."""
        return ((1 << self.width) - 1) << self.lo

    def spec(self) -> str:
        return f"[{self.hi}]" if self.hi == self.lo else f"[{self.hi}:{self.lo}]"


class Layout:
    """A register/entry layout: a name, a width in bits and its fields."""

    __slots__ = (
        "_by_name",
        "_los",
        "_maxes",
        "_shifts",
        "encode_record",
        "fields",
        "make",
        "name",
        "res0_mask",
        "width",
    )

    def __init__(self, name: str, width: int, fields: Mapping[str, str]) -> None:
        self.name = name
        self.width = width
        parsed = [Field.parse(n, s) for n, s in fields.items()]
        used = 0
        for f in sorted(parsed, key=lambda f: f.lo):
            if f.hi >= width:
                raise LayoutError(f"{name}.{f.name} {f.spec()} exceeds the {width}-bit register")
            if used & f.mask:
                others = [g.name for g in parsed if g is not f and g.mask & f.mask]
                raise LayoutError(f"{name}.{f.name} {f.spec()} overlaps {', '.join(others)}")
            used |= f.mask
        self.fields: tuple[Field, ...] = tuple(parsed)
        self._by_name = {f.name: f for f in parsed}
        # (name, lo, value mask) per field: encoders and decoders run per table entry.
        self._shifts = tuple((f.name, f.lo, (1 << f.width) - 1) for f in parsed)
        self._los = tuple(f.lo for f in parsed)
        self._maxes = tuple((1 << f.width) - 1 for f in parsed)
        #: bits no field claims; a decoder ignores them and an encoder leaves them 0
        self.res0_mask = ((1 << width) - 1) & ~used
        for f in parsed:
            if not f.name.isidentifier():
                raise LayoutError(f"{name}: field name {f.name!r} is not an identifier")
        # Generated at first use: compiling them all would be a tenth of the start-up
        # of `gickexec run`, and most layouts serve a few runs only.
        self.encode_record: Callable[[object, int], int] = self._first_encode
        self.make: Callable[[type, int], Any] = self._first_make

    def _generate(self) -> None:
        self.encode_record, self.make = _compile(self)

    def _first_encode(self, obj: object, bits: int) -> int:
        self._generate()
        return self.encode_record(obj, bits)

    def _first_make(self, cls: type, value: int) -> Any:
        self._generate()
        return self.make(cls, value)

    def __repr__(self) -> str:
        return f"Layout({self.name!r}, {self.width})"

    def field(self, name: str) -> Field:
        try:
            return self._by_name[name]
        except KeyError:
            raise LayoutError(f"{self.name} has no field {name!r}") from None

    def extract(self, value: int, name: str) -> int:
        f = self.field(name)
        return (value >> f.lo) & ((1 << f.width) - 1)

    def deposit(self, value: int, name: str, field_value: int) -> int:
        f = self.field(name)
        if field_value < 0 or field_value >> f.width:
            raise LayoutError(
                f"{self.name}.{name} {f.spec()}: value {field_value:#x} does not fit {f.width} bits"
            )
        return (value & ~f.mask) | (field_value << f.lo)

    def unpack(self, value: int) -> dict[str, int]:
        return {name: (value >> lo) & m for name, lo, m in self._shifts}

    def pack(self, **values: int) -> int:
        out = 0
        for name, v in values.items():
            out = self.deposit(out, name, v)
        return out

    def pack_all(self, values: Sequence[int]) -> int:
        """``pack`` of one value per field, in field order (what records encode)."""
        if (
            len(values) == len(self._los)
            and min(values, default=0) >= 0
            and all(map(operator.le, values, self._maxes))
        ):
            # Every value fits its field and fields do not overlap: the sum is the OR
            # (in C: records encode per command, table entry and register write).
            return sum(map(operator.lshift, values, self._los))
        out = 0
        for (name, lo, m), v in zip(self._shifts, values, strict=True):
            if v < 0 or v > m:
                self.deposit(0, name, v)  # raises, with the field's spec in the message
            out |= v << lo
        return out

    def to_bytes(self, value: int) -> bytes:
        return value.to_bytes(self.width // 8, "little")

    def from_bytes(self, data: bytes) -> int:
        if len(data) != self.width // 8:
            raise LayoutError(f"{self.name}: expected {self.width // 8} bytes, got {len(data)}")
        return int.from_bytes(data, "little")


#: Records remembered per record class, by value (see LayoutRecord.decode)
_DECODED_LIMIT = 4096


def _compile(
    layout: Layout,
) -> tuple[Callable[[object, int], int], Callable[[type, int], Any]]:
    """Two straight-line functions generated from the layout's fields (as dataclasses
    generate ``__init__``), for records, which encode and decode per ITS command, table
    entry and register access (a loop over the fields with a call per step cost 1 to
    1.5 us of each):

    * ``encode_record(obj, bits)``: ``pack_all`` of ``obj``'s attributes named like the
      fields, ORed with ``bits`` (bits of no field); when every value is an ``int`` (not
      a ``bool`` or an int subclass, which a decode would not give back) ``obj`` is then
      also its class's decoded record of that value, as a decode would have made it;
    * ``make(cls, value)``: ``cls(**unpack(value))``.
    """
    names = [name for name, _, _ in layout._shifts]  # identifiers: checked at __init__
    reads = "".join(f"    v{i} = obj.{name}\n" for i, name in enumerate(names))
    fits = " and ".join(f"0 <= v{i} <= {m}" for i, (_, _, m) in enumerate(layout._shifts))
    ored = "".join(f"v{i} << {lo} | " for i, (_, lo, _) in enumerate(layout._shifts))
    ints = "".join(f"type(v{i}) is " for i in range(len(names)))
    values = "".join(f"v{i}, " for i in range(len(names)))
    fields = ", ".join(f"{name}=(value >> {lo}) & {m}" for name, lo, m in layout._shifts)
    source = (
        "def encode_record(obj, bits):\n"
        f"{reads}"
        f"    if {fits or 'True'}:\n"
        f"        value = {ored}bits\n"
        # the class's own cache: a subclass of a record class is no such record
        '        cache = type(obj).__dict__.get("_decoded")\n'
        f"        if cache is not None and {ints}int:\n"
        "            if len(cache) >= limit:\n"
        "                cache.clear()\n"
        "            cache[value] = obj\n"
        "        return value\n"
        # a value does not fit its field: pack_all raises for the first that does not
        f"    return layout.pack_all(({values})) | bits\n"
        "def make(cls, value):\n"
        f"    return cls({fields})\n"
    )
    namespace: dict[str, Any] = {"layout": layout, "limit": _DECODED_LIMIT}
    exec(source, namespace)  # made from the field table only: names checked in __init__
    return namespace["encode_record"], namespace["make"]


class LayoutRecord:
    """Base of frozen records whose fields mirror a :class:`Layout` one to one."""

    LAYOUT: ClassVar[Layout]

    @classmethod
    def decode(cls, value: int) -> Self:
        """Decode a raw register value (bits outside every field are ignored).

        Records are frozen, so one record serves every decode of the same value
        (register values repeat: GITS_CBASER per command, GICR_TYPER per CPU), and so
        does one that was encoded to it (the ITS decodes the commands the driver
        encoded, the redistributor the register values)."""
        cache: dict[int, Self] | None = cls.__dict__.get("_decoded")
        if cache is None:
            made: Self = cls.LAYOUT.make(cls, value)
            return made
        record: Self | None = cache.get(value)
        if record is None:
            record = cls.LAYOUT.make(cls, value)
            if len(cache) >= _DECODED_LIMIT:
                cache.clear()  # bounded: a guest writing ever new values costs O(1)
            cache[value] = record
        return record

    def encode(self) -> int:
        """Encode to a raw value; a field value too wide for its bits raises LayoutError."""
        return self.LAYOUT.encode_record(self, 0)

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        return cls.decode(cls.LAYOUT.from_bytes(data))

    def to_bytes(self) -> bytes:
        return self.LAYOUT.to_bytes(self.encode())


_R = TypeVar("_R", bound=type[LayoutRecord])


@dataclass_transform(frozen_default=True)
def layout_record(layout: Layout) -> Callable[[_R], _R]:
    """Class decorator: make a frozen dataclass whose fields are exactly ``layout``'s.

    Every field must be declared on the class as ``int`` (with or without a default); a
    mismatch between the class and the layout is reported at import time.
    """

    def wrap(cls: _R) -> _R:
        dc: Any = dataclasses.dataclass(frozen=True, slots=True)(cls)
        names = {f.name for f in dataclasses.fields(dc)}
        expected = {f.name for f in layout.fields}
        if names != expected:
            raise LayoutError(
                f"{cls.__name__} fields {sorted(names)} do not match {layout.name} "
                f"fields {sorted(expected)}"
            )
        dc.LAYOUT = layout
        dc._decoded = {}  # value -> record, see LayoutRecord.decode
        result: _R = dc
        return result

    return wrap
