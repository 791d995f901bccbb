"""Bit-field layouts (gickexec.arch.fields): spec-notation parsing, self-checks, pack/unpack.

The layout layer is what every register, ITS command and table entry is built on, so a
mistake here shows up everywhere.  These tests use small synthetic layouts with values
worked out by hand.
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gickexec.arch import gicv3, its
from gickexec.arch.fields import Field, Layout, LayoutError, LayoutRecord, layout_record


def genmask(hi: int, lo: int) -> int:
    """Linux GENMASK_ULL(hi, lo), written out independently."""
    return sum(1 << b for b in range(lo, hi + 1))


# -- Field.parse -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "hi", "lo", "width"),
    [
        ("[7:2]", 7, 2, 6),
        ("[0]", 0, 0, 1),
        ("[63]", 63, 63, 1),
        ("[51:12]", 51, 12, 40),
        ("[ 51 : 12 ]", 51, 12, 40),
        ("DW0[7:0]", 7, 0, 8),
        ("DW0[63:32]", 63, 32, 32),
        ("DW1[31:0]", 95, 64, 32),
        ("DW2[51:16]", 179, 144, 36),
        ("DW2[63]", 191, 191, 1),
        ("DW3[51:16]", 243, 208, 36),
    ],
)
def test_field_parse(spec: str, hi: int, lo: int, width: int) -> None:
    f = Field.parse("f", spec)
    assert (f.name, f.hi, f.lo) == ("f", hi, lo)
    assert f.width == width
    assert f.mask == genmask(hi, lo)


@pytest.mark.parametrize(
    ("spec", "canonical"),
    [("[7:2]", "[7:2]"), ("[5]", "[5]"), ("[3:3]", "[3]"), ("DW1[3:0]", "[67:64]")],
)
def test_field_spec_round_trip(spec: str, canonical: str) -> None:
    assert Field.parse("f", spec).spec() == canonical


@pytest.mark.parametrize(
    "spec",
    ["", "7:2", "[7:2", "[a:b]", "[7:2:1]", "[-1]", "DW[3:0]", "dw1[3:0]", "DW1[64]", "DW0[70:60]"],
)
def test_field_parse_rejects_bad_specs(spec: str) -> None:
    with pytest.raises(LayoutError, match="'bad'"):
        Field.parse("bad", spec)


def test_field_parse_rejects_lo_above_hi() -> None:
    with pytest.raises(LayoutError, match="lo > hi"):
        Field.parse("rev", "[2:7]")


def test_layout_error_is_a_value_error() -> None:
    assert issubclass(LayoutError, ValueError)


# -- Layout construction checks ----------------------------------------------------------


def test_overlap_detected_and_both_fields_named() -> None:
    with pytest.raises(LayoutError) as exc:
        Layout("REG", 32, {"Alpha": "[7:0]", "Beta": "[9:7]"})
    msg = str(exc.value)
    assert "Alpha" in msg
    assert "Beta" in msg
    assert "REG" in msg


def test_overlap_detected_regardless_of_declaration_order() -> None:
    with pytest.raises(LayoutError) as exc:
        Layout("REG", 32, {"Inner": "[3:2]", "Outer": "[7:0]"})
    assert "Inner" in str(exc.value)
    assert "Outer" in str(exc.value)


def test_overlap_identical_single_bit() -> None:
    with pytest.raises(LayoutError, match="overlaps"):
        Layout("REG", 8, {"A": "[4]", "B": "[4]"})


def test_overlap_across_doublewords_detected() -> None:
    # DW1[0] is bit 64, which is inside the plain [95:64] range.
    with pytest.raises(LayoutError) as exc:
        Layout("CMD", 256, {"Ev": "DW1[31:0]", "Sz": "[64]"})
    assert "Ev" in str(exc.value)
    assert "Sz" in str(exc.value)


def test_adjacent_fields_do_not_overlap() -> None:
    lay = Layout("REG", 16, {"lo": "[7:0]", "hi": "[15:8]"})
    assert lay.res0_mask == 0


@pytest.mark.parametrize(
    ("width", "spec"), [(32, "[32]"), (32, "[40:31]"), (8, "[8:0]"), (64, "[64]")]
)
def test_field_beyond_register_width_raises(width: int, spec: str) -> None:
    with pytest.raises(LayoutError) as exc:
        Layout("SMALL", width, {"Wide": spec})
    assert "Wide" in str(exc.value)
    assert str(width) in str(exc.value)


def test_field_at_top_bit_is_accepted() -> None:
    lay = Layout("REG", 32, {"Top": "[31]"})
    assert lay.field("Top").mask == 1 << 31


def test_doubleword_field_beyond_256_bits_raises() -> None:
    with pytest.raises(LayoutError):
        Layout("CMD", 256, {"X": "DW4[0]"})


def test_unparsable_field_raises_at_construction() -> None:
    with pytest.raises(LayoutError, match="Bad"):
        Layout("REG", 32, {"Good": "[0]", "Bad": "[x]"})


# -- res0_mask ---------------------------------------------------------------------------


def test_res0_mask_is_complement_of_fields() -> None:
    lay = Layout("REG", 8, {"a": "[0]", "b": "[7:4]"})
    assert lay.res0_mask == 0b0000_1110


def test_res0_mask_of_empty_layout_is_everything() -> None:
    assert Layout("EMPTY", 32, {}).res0_mask == 0xFFFF_FFFF


def test_res0_mask_with_doublewords() -> None:
    lay = Layout("CMD", 256, {"Op": "DW0[7:0]", "V": "DW2[63]"})
    assert lay.res0_mask == genmask(255, 0) & ~0xFF & ~(1 << 191)


def test_layout_metadata() -> None:
    lay = Layout("REG", 32, {"a": "[0]", "b": "[7:4]"})
    assert lay.name == "REG"
    assert lay.width == 32
    assert [f.name for f in lay.fields] == ["a", "b"]
    assert "REG" in repr(lay)
    assert lay.field("b") == Field("b", 7, 4)


def test_unknown_field_name_raises() -> None:
    lay = Layout("REG", 32, {"a": "[0]"})
    with pytest.raises(LayoutError, match="nope"):
        lay.field("nope")
    with pytest.raises(LayoutError):
        lay.extract(0, "nope")
    with pytest.raises(LayoutError):
        lay.deposit(0, "nope", 1)
    with pytest.raises(LayoutError):
        lay.pack(nope=1)


# -- extract / deposit / pack / unpack ---------------------------------------------------

DEMO = Layout("DEMO", 32, {"En": "[0]", "Mode": "[3:1]", "Addr": "[23:8]", "Top": "[31]"})


def test_extract() -> None:
    v = 0x8012_340B  # Top=1, Addr=0x1234, Mode=0b101, En=1
    assert DEMO.extract(v, "En") == 1
    assert DEMO.extract(v, "Mode") == 0b101
    assert DEMO.extract(v, "Addr") == 0x1234
    assert DEMO.extract(v, "Top") == 1


def test_extract_ignores_bits_above_register() -> None:
    assert DEMO.extract((1 << 40) | (1 << 31), "Top") == 1


def test_deposit_replaces_only_its_field() -> None:
    v = 0xFFFF_FFFF
    assert DEMO.deposit(v, "Mode", 0) == 0xFFFF_FFF1
    assert DEMO.deposit(0, "Addr", 0xBEEF) == 0x00BE_EF00
    assert DEMO.deposit(0x00BE_EF00, "Addr", 0x0001) == 0x0000_0100


@pytest.mark.parametrize(
    ("name", "value"), [("En", 2), ("Mode", 8), ("Addr", 0x1_0000), ("Top", 3)]
)
def test_deposit_too_wide_value_raises(name: str, value: int) -> None:
    with pytest.raises(LayoutError) as exc:
        DEMO.deposit(0, name, value)
    assert name in str(exc.value)


def test_deposit_negative_value_raises() -> None:
    with pytest.raises(LayoutError):
        DEMO.deposit(0, "Mode", -1)


def test_deposit_max_value_fits() -> None:
    assert DEMO.deposit(0, "Mode", 7) == 0b1110
    assert DEMO.deposit(0, "Addr", 0xFFFF) == 0x00FF_FF00


def test_pack() -> None:
    assert DEMO.pack() == 0
    assert DEMO.pack(En=1, Mode=0b101, Addr=0x1234, Top=1) == 0x8012_340B
    assert DEMO.pack(Top=1) == 0x8000_0000


def test_pack_too_wide_raises() -> None:
    with pytest.raises(LayoutError):
        DEMO.pack(Mode=0b1000)


def test_unpack() -> None:
    assert DEMO.unpack(0x8012_340B) == {"En": 1, "Mode": 0b101, "Addr": 0x1234, "Top": 1}
    # RES0 bits [7:4] and [30:24] are dropped
    assert DEMO.unpack(0x7F00_00F0) == {"En": 0, "Mode": 0, "Addr": 0, "Top": 0}


@given(st.integers(0, (1 << 32) - 1))
def test_pack_unpack_round_trip_clears_res0(v: int) -> None:
    assert DEMO.pack(**DEMO.unpack(v)) == v & ~DEMO.res0_mask
    for f in DEMO.fields:
        assert DEMO.extract(v, f.name) == (v >> f.lo) & ((1 << f.width) - 1)


@given(st.integers(0, 1), st.integers(0, 7), st.integers(0, 0xFFFF), st.integers(0, 1))
def test_unpack_pack_round_trip(en: int, mode: int, addr: int, top: int) -> None:
    values = {"En": en, "Mode": mode, "Addr": addr, "Top": top}
    packed = DEMO.pack(**values)
    assert packed == en | (mode << 1) | (addr << 8) | (top << 31)
    assert DEMO.unpack(packed) == values


def test_to_from_bytes_little_endian() -> None:
    assert DEMO.to_bytes(0x8012_340B) == bytes([0x0B, 0x34, 0x12, 0x80])
    assert DEMO.from_bytes(bytes([0x0B, 0x34, 0x12, 0x80])) == 0x8012_340B


@pytest.mark.parametrize("n", [0, 3, 5, 8])
def test_from_bytes_wrong_length_raises(n: int) -> None:
    with pytest.raises(LayoutError, match="DEMO"):
        DEMO.from_bytes(bytes(n))


# -- layout_record ------------------------------------------------------------------------


@layout_record(DEMO)
class Demo(LayoutRecord):
    En: int = 0
    Mode: int = 0
    Addr: int = 0
    Top: int = 0


def test_record_encode_decode() -> None:
    r = Demo(En=1, Mode=0b101, Addr=0x1234, Top=1)
    assert r.encode() == 0x8012_340B
    assert Demo.decode(0x8012_340B) == r
    assert Demo.decode(0xFFFF_FFFF) == Demo(1, 7, 0xFFFF, 1)
    assert Demo.LAYOUT is DEMO


def test_record_bytes() -> None:
    r = Demo(Addr=0xABCD)
    assert r.to_bytes() == bytes([0x00, 0xCD, 0xAB, 0x00])
    assert Demo.from_bytes(r.to_bytes()) == r
    with pytest.raises(LayoutError):
        Demo.from_bytes(b"\0\0")


def test_record_encode_too_wide_raises() -> None:
    with pytest.raises(LayoutError, match="Mode"):
        Demo(Mode=8).encode()
    with pytest.raises(LayoutError):
        Demo(Addr=-1).encode()


def test_record_is_frozen() -> None:
    r = Demo()
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.En = 1  # type: ignore[misc]


def test_record_equality_and_hash() -> None:
    assert Demo(En=1) == Demo(En=1)
    assert Demo(En=1) != Demo(En=0)
    assert len({Demo(En=1), Demo(En=1), Demo()}) == 2


def test_layout_record_rejects_missing_field() -> None:
    with pytest.raises(LayoutError) as exc:

        @layout_record(DEMO)
        class Missing(LayoutRecord):
            En: int = 0
            Mode: int = 0
            Addr: int = 0

    msg = str(exc.value)
    assert "Missing" in msg
    assert "DEMO" in msg


def test_layout_record_rejects_extra_field() -> None:
    with pytest.raises(LayoutError, match="Extra"):

        @layout_record(DEMO)
        class Extra(LayoutRecord):
            En: int = 0
            Mode: int = 0
            Addr: int = 0
            Top: int = 0
            Bogus: int = 0


def test_layout_record_rejects_misspelt_field() -> None:
    with pytest.raises(LayoutError):

        @layout_record(DEMO)
        class Misspelt(LayoutRecord):
            En: int = 0
            mode: int = 0
            Addr: int = 0
            Top: int = 0


def test_layout_record_classvars_are_not_fields() -> None:
    lay = Layout("ONE", 8, {"X": "[0]"})

    @layout_record(lay)
    class One(LayoutRecord):
        CONST = 5
        X: int = 0

    assert One(X=1).encode() == 1
    assert One.CONST == 5


def _record_classes() -> list[type[LayoutRecord]]:
    assert gicv3.GicrTyper and its.Mapc  # the model's records are defined
    out: list[type[LayoutRecord]] = []
    todo = list(LayoutRecord.__subclasses__())
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        if "LAYOUT" in cls.__dict__:
            out.append(cls)
    return sorted(out, key=lambda c: c.__qualname__)


@pytest.mark.parametrize("cls", _record_classes(), ids=lambda c: c.__qualname__)
@given(data=st.data())
def test_generated_codecs_equal_the_field_loop(
    cls: type[LayoutRecord], data: st.DataObject
) -> None:
    """Every record class of the model: the generated encoder is ``pack`` field by field
    (the same value, or the same LayoutError for a value that does not fit, negative
    ones too), the generated decoder is ``cls(**unpack(value))``."""
    layout = cls.LAYOUT
    values = {
        f.name: data.draw(st.integers(-2, (1 << f.width) + 1) | st.integers(0, (1 << f.width) - 1))
        for f in layout.fields
    }
    record = cls(**values)
    try:
        expected: int | str = layout.pack(**values)
    except LayoutError as e:
        expected = str(e)
    cache = cls._decoded  # type: ignore[attr-defined]
    cache.clear()
    try:
        got: int | str = layout.encode_record(record, 0)
    except LayoutError as e:
        got = str(e)
    assert got == expected
    # an encoded record serves decodes of its value only as what a decode would make
    assert all(r == cls(**layout.unpack(v)) and r.__dict__ == {} for v, r in cache.items())
    assert all(
        type(getattr(r, f.name)) is int for r in cache.values() for f in layout.fields
    )
    raw = data.draw(st.integers(0, (1 << layout.width) - 1))
    assert layout.make(cls, raw) == cls(**layout.unpack(raw))


def test_only_int_fields_make_an_encoded_record_a_decoded_one() -> None:
    """A record built with a bool (or an int subclass) encodes as the int would, but a
    decode of its value still gives ints."""
    cache = its.Mapc._decoded  # type: ignore[attr-defined]
    value = its.Mapc(ICID=0x7A5, RDbase=0x3C1, V=1).encode()
    assert cache.pop(value) == its.Mapc(ICID=0x7A5, RDbase=0x3C1, V=1)
    assert its.Mapc(ICID=0x7A5, RDbase=0x3C1, V=True).encode() == value
    assert value not in cache
    assert type(its.Mapc.decode(value).V) is int
    fresh = its.Mapc(ICID=0x7A6, RDbase=0x3C1, V=1)
    assert its.Mapc.decode(fresh.encode()) is fresh
