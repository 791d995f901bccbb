"""UEFI system/configuration tables and the Linux memreserve structures (gickexec.arch.efi).

Byte layouts are checked against offsets written out here from the UEFI spec's
EFI_SYSTEM_TABLE (64-bit) and from include/linux/efi.h (GUID bytes and
(``struct linux_efi_memreserve`` in its v4.20 and v5.0+ forms, arm64, little-endian).
"""

from __future__ import annotations

import dataclasses
import struct
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gickexec.arch.efi import (
    ACPI_20_TABLE_GUID,
    ACPI_TABLE_GUID,
    CONFIG_TABLE_ENTRY_BYTES,
    EFI_SYSTEM_TABLE_BYTES,
    EFI_SYSTEM_TABLE_SIGNATURE,
    LINUX_EFI_MEMRESERVE_TABLE_GUID,
    MEMRESERVE_ENTRY_BYTES,
    MEMRESERVE_HEADER_BYTES,
    MEMRESERVE_V420_BYTES,
    SMBIOS3_TABLE_GUID,
    SMBIOS_TABLE_GUID,
    ConfigTableEntry,
    EfiSystemTable,
    MemreserveHeader,
    MemreserveV420,
    efi_memreserve_count,
    guid_bytes,
)

U64 = st.integers(0, (1 << 64) - 1)
U32 = st.integers(0, (1 << 32) - 1)
S32 = st.integers(-(1 << 31), (1 << 31) - 1)


def u64(data: bytes | bytearray, off: int) -> int:
    return int.from_bytes(data[off : off + 8], "little")


def u32(data: bytes | bytearray, off: int) -> int:
    return int.from_bytes(data[off : off + 4], "little")


# -- GUIDs ---------------------------------------------------------------------------------


def test_memreserve_guid_bytes() -> None:
    # include/linux/efi.h: EFI_GUID(0x888eb0c6, 0x8ede, 0x4ff5, 0xa8, 0xf0, 0x9a, ...)
    assert bytes.fromhex("c6b08e88de8ef54fa8f09aee5cb977c2") == LINUX_EFI_MEMRESERVE_TABLE_GUID
    # fmt: off
    expected = bytes([0xC6, 0xB0, 0x8E, 0x88, 0xDE, 0x8E, 0xF5, 0x4F,
                      0xA8, 0xF0, 0x9A, 0xEE, 0x5C, 0xB9, 0x77, 0xC2])
    # fmt: on
    assert expected == LINUX_EFI_MEMRESERVE_TABLE_GUID


def _efi_guid(a: int, b: int, c: int, *d: int) -> bytes:
    """The EFI_GUID() macro: u32, u16, u16 little-endian, then 8 bytes as written."""
    return struct.pack("<IHH8B", a, b, c, *d)


def test_guids_match_efi_guid_macro() -> None:
    assert (
        _efi_guid(0x888EB0C6, 0x8EDE, 0x4FF5, 0xA8, 0xF0, 0x9A, 0xEE, 0x5C, 0xB9, 0x77, 0xC2)
        == LINUX_EFI_MEMRESERVE_TABLE_GUID
    )
    assert (
        _efi_guid(0xF2FD1544, 0x9794, 0x4A2C, 0x99, 0x2E, 0xE5, 0xBB, 0xCF, 0x20, 0xE3, 0x94)
        == SMBIOS3_TABLE_GUID
    )


def test_guid_bytes_mixed_endian() -> None:
    assert guid_bytes("00112233-4455-6677-8899-aabbccddeeff") == bytes.fromhex(
        "33221100554477668899aabbccddeeff"
    )
    assert len(guid_bytes("888eb0c6-8ede-4ff5-a8f0-9aee5cb977c2")) == 16


# -- EFI_SYSTEM_TABLE ---------------------------------------------------------------------

SAMPLE = EfiSystemTable(
    revision=0x0002_0046,  # 2.70
    firmware_vendor=0x1111_2222_3333_4444,
    firmware_revision=0x0001_0000,
    runtime_services=0x5555_6666_7777_8888,
    boot_services=0x9999_AAAA_BBBB_CCCC,
    number_of_table_entries=7,
    configuration_table=0xDDDD_EEEE_FFFF_0000,
)


def test_system_table_size_and_signature() -> None:
    assert EFI_SYSTEM_TABLE_BYTES == 120
    assert int.from_bytes(b"IBI SYST", "little") == EFI_SYSTEM_TABLE_SIGNATURE
    raw = SAMPLE.to_bytes()
    assert len(raw) == 120
    assert raw[:8] == b"IBI SYST"


def test_system_table_offsets() -> None:
    """EFI_TABLE_HEADER then the 64-bit EFI_SYSTEM_TABLE members at their natural offsets."""
    raw = SAMPLE.to_bytes(fix_crc=False)
    assert u64(raw, 0) == EFI_SYSTEM_TABLE_SIGNATURE  # Hdr.Signature
    assert u32(raw, 8) == 0x0002_0046  # Hdr.Revision
    assert u32(raw, 12) == 120  # Hdr.HeaderSize
    assert u32(raw, 16) == 0  # Hdr.CRC32 (not fixed)
    assert u32(raw, 20) == 0  # Hdr.Reserved
    assert u64(raw, 24) == 0x1111_2222_3333_4444  # FirmwareVendor
    assert u32(raw, 32) == 0x0001_0000  # FirmwareRevision (+4 bytes padding)
    assert u64(raw, 88) == 0x5555_6666_7777_8888  # RuntimeServices
    assert u64(raw, 96) == 0x9999_AAAA_BBBB_CCCC  # BootServices
    assert u64(raw, 104) == 7  # NumberOfTableEntries
    assert u64(raw, 112) == 0xDDDD_EEEE_FFFF_0000  # ConfigurationTable


def test_system_table_crc_independent() -> None:
    raw = SAMPLE.to_bytes()
    stored = u32(raw, 16)
    blanked = raw[:16] + b"\0\0\0\0" + raw[20:]
    assert stored == zlib.crc32(blanked[: u32(raw, 12)])
    assert stored != 0
    # the CRC is the only difference from the unfixed encoding
    assert raw[:16] == SAMPLE.to_bytes(fix_crc=False)[:16]
    assert raw[20:] == SAMPLE.to_bytes(fix_crc=False)[20:]


def test_system_table_crc_not_fixed_keeps_given_value() -> None:
    t = dataclasses.replace(SAMPLE, crc32=0xDEAD_BEEF)
    assert u32(t.to_bytes(fix_crc=False), 16) == 0xDEAD_BEEF
    # fix_crc ignores the stale value
    assert t.to_bytes() == SAMPLE.to_bytes()


def test_system_table_crc_ok() -> None:
    raw = SAMPLE.to_bytes()
    t = EfiSystemTable.from_bytes(raw)
    assert t.crc32 == u32(raw, 16)
    assert t.crc_ok(raw)
    unfixed = SAMPLE.to_bytes(fix_crc=False)
    assert not EfiSystemTable.from_bytes(unfixed).crc_ok(unfixed)


@given(st.integers(0, EFI_SYSTEM_TABLE_BYTES - 1), st.integers(1, 255))
def test_system_table_crc_detects_flipped_byte(pos: int, xor: int) -> None:
    raw = bytearray(SAMPLE.to_bytes())
    raw[pos] ^= xor
    flipped = bytes(raw)
    assert not EfiSystemTable.from_bytes(flipped).crc_ok(flipped)


def test_system_table_crc_ok_rejects_bad_header_size() -> None:
    small = dataclasses.replace(SAMPLE, header_size=24)
    raw = small.to_bytes()
    assert not EfiSystemTable.from_bytes(raw).crc_ok(raw)
    # data shorter than HeaderSize
    raw = SAMPLE.to_bytes()
    assert not EfiSystemTable.from_bytes(raw).crc_ok(raw[:119])


def test_system_table_decode_golden() -> None:
    raw = SAMPLE.to_bytes()
    t = EfiSystemTable.from_bytes(raw)
    assert t.signature == EFI_SYSTEM_TABLE_SIGNATURE
    assert t.header_size == 120
    assert dataclasses.replace(t, crc32=0) == SAMPLE
    assert t.to_bytes() == raw


@given(U32, U64, U32, U64, U64, U64, U64, U32)
def test_system_table_round_trip(
    rev: int, vendor: int, fwrev: int, rt: int, bs: int, n: int, cfg: int, crc: int
) -> None:
    t = EfiSystemTable(rev, vendor, fwrev, rt, bs, n, cfg, crc32=crc)
    assert EfiSystemTable.from_bytes(t.to_bytes(fix_crc=False)) == t
    fixed = t.to_bytes()
    back = EfiSystemTable.from_bytes(fixed)
    assert back.crc_ok(fixed)
    assert dataclasses.replace(back, crc32=crc) == t


@given(st.binary(min_size=120, max_size=120))
def test_system_table_decode_arbitrary_bytes(raw: bytes) -> None:
    t = EfiSystemTable.from_bytes(raw)
    assert t.signature == u64(raw, 0)
    assert t.revision == u32(raw, 8)
    assert t.header_size == u32(raw, 12)
    assert t.crc32 == u32(raw, 16)
    assert t.firmware_vendor == u64(raw, 24)
    assert t.firmware_revision == u32(raw, 32)
    assert t.runtime_services == u64(raw, 88)
    assert t.boot_services == u64(raw, 96)
    assert t.number_of_table_entries == u64(raw, 104)
    assert t.configuration_table == u64(raw, 112)
    # the fields the model keeps come back at the same offsets
    again = t.to_bytes(fix_crc=False)
    for off, size in [(0, 20), (24, 12), (88, 32)]:
        assert again[off : off + size] == raw[off : off + size]


# -- EFI_CONFIGURATION_TABLE --------------------------------------------------------------


def test_config_table_entry_golden() -> None:
    # the MEMRESERVE address from a real boot log: efi: ... MEMRESERVE=0x807f8141e98
    e = ConfigTableEntry(LINUX_EFI_MEMRESERVE_TABLE_GUID, 0x807_F814_1E98)
    assert CONFIG_TABLE_ENTRY_BYTES == 24
    assert e.to_bytes() == bytes.fromhex(
        "c6b08e88de8ef54fa8f09aee5cb977c2"  # VendorGuid
        "981e14f807080000"  # VendorTable (u64 LE)
    )
    assert ConfigTableEntry.from_bytes(e.to_bytes()) == e


@given(st.binary(min_size=24, max_size=24))
def test_config_table_entry_round_trip(raw: bytes) -> None:
    e = ConfigTableEntry.from_bytes(raw)
    assert e.guid == raw[:16]
    assert e.table == u64(raw, 16)
    assert e.to_bytes() == raw


def test_config_table_entry_wrong_length() -> None:
    with pytest.raises(struct.error):
        ConfigTableEntry.from_bytes(bytes(23))


# -- struct linux_efi_memreserve (v5.0+) --------------------------------------------------


def test_memreserve_sizes() -> None:
    assert MEMRESERVE_HEADER_BYTES == 16
    assert MEMRESERVE_ENTRY_BYTES == 16
    assert MEMRESERVE_V420_BYTES == 24


def test_efi_memreserve_count() -> None:
    assert efi_memreserve_count(4096) == 255
    assert efi_memreserve_count(65536) == 4095
    assert efi_memreserve_count(16) == 0
    assert efi_memreserve_count(47) == 1
    # EFI_MEMRESERVE_SIZE(255) == SZ_4K
    assert MemreserveHeader.entry_offset(efi_memreserve_count(4096)) == 4096


def test_memreserve_header_golden() -> None:
    h = MemreserveHeader(size=255, count=1, next=0x8_1234_5000)
    assert h.to_bytes() == bytes.fromhex(
        "ff000000"  # s32 size = 255
        "01000000"  # s32 count = 1
        "0050341208000000"  # u64 next
    )
    assert MemreserveHeader.from_bytes(h.to_bytes()) == h


def test_memreserve_stub_root_is_sixteen_zero_bytes() -> None:
    assert MemreserveHeader(size=0, count=0, next=0).to_bytes() == bytes(16)


def test_memreserve_header_fields_are_signed() -> None:
    h = MemreserveHeader.from_bytes(bytes.fromhex("ffffffff 00000080 0000000000000000"))
    assert h.size == -1
    assert h.count == -(1 << 31)
    assert MemreserveHeader(-1, -(1 << 31), 0).to_bytes()[:8] == bytes.fromhex("ffffffff00000080")
    with pytest.raises(struct.error):
        MemreserveHeader(1 << 31, 0, 0).to_bytes()


def test_memreserve_header_reads_only_16_bytes() -> None:
    node = MemreserveHeader(255, 2, 0).to_bytes() + MemreserveHeader.pack_entry(1, 2)
    assert MemreserveHeader.from_bytes(node) == MemreserveHeader(255, 2, 0)


@given(st.binary(min_size=16, max_size=16))
def test_memreserve_header_round_trip_bytes(raw: bytes) -> None:
    h = MemreserveHeader.from_bytes(raw)
    assert h.size == int.from_bytes(raw[0:4], "little", signed=True)
    assert h.count == int.from_bytes(raw[4:8], "little", signed=True)
    assert h.next == u64(raw, 8)
    assert h.to_bytes() == raw


@given(S32, S32, U64)
def test_memreserve_header_round_trip_values(size: int, count: int, nxt: int) -> None:
    h = MemreserveHeader(size, count, nxt)
    assert MemreserveHeader.from_bytes(h.to_bytes()) == h


def test_memreserve_entries() -> None:
    assert MemreserveHeader.entry_offset(0) == 0x10
    assert MemreserveHeader.entry_offset(1) == 0x20
    assert MemreserveHeader.entry_offset(254) == 4080
    e = MemreserveHeader.pack_entry(0x8_0001_0000, 0x1_0000)
    assert e == bytes.fromhex("00000100080000000000010000000000")
    run = e + MemreserveHeader.pack_entry(1, 2)
    assert MemreserveHeader.unpack_entries(run) == [(0x8_0001_0000, 0x1_0000), (1, 2)]
    assert MemreserveHeader.unpack_entries(b"") == []


@given(st.lists(st.tuples(U64, U64), max_size=8))
def test_memreserve_entries_round_trip(entries: list[tuple[int, int]]) -> None:
    run = b"".join(MemreserveHeader.pack_entry(b, s) for b, s in entries)
    assert len(run) == MEMRESERVE_ENTRY_BYTES * len(entries)
    assert MemreserveHeader.unpack_entries(run) == entries


def test_memreserve_node_layout() -> None:
    """A whole 4K node built from the pieces puts entry i at 0x10 + 16*i."""
    node = bytearray(4096)
    node[0:16] = MemreserveHeader(255, 2, 0).to_bytes()
    for i, (b, s) in enumerate([(0x1000, 0x2000), (0x3000, 0x4000)]):
        off = MemreserveHeader.entry_offset(i)
        node[off : off + 16] = MemreserveHeader.pack_entry(b, s)
    assert u64(node, 0x10) == 0x1000
    assert u64(node, 0x18) == 0x2000
    assert u64(node, 0x20) == 0x3000
    assert u64(node, 0x28) == 0x4000
    count = MemreserveHeader.from_bytes(bytes(node)).count
    assert MemreserveHeader.unpack_entries(bytes(node[16 : 16 + 16 * count])) == [
        (0x1000, 0x2000),
        (0x3000, 0x4000),
    ]


# -- struct linux_efi_memreserve (v4.20) --------------------------------------------------


def test_memreserve_v420_golden() -> None:
    n = MemreserveV420(next=0x8_0000_1000, base=0x8_0010_0000, size=0x1_0000)
    assert n.to_bytes() == bytes.fromhex(
        "0010000008000000"  # +0 next
        "0000100008000000"  # +8 base
        "0000010000000000"  # +16 size
    )
    assert MemreserveV420.from_bytes(n.to_bytes()) == n
    assert MemreserveV420(0, 0, 0).to_bytes() == bytes(24)


@given(st.binary(min_size=24, max_size=24))
def test_memreserve_v420_round_trip_bytes(raw: bytes) -> None:
    n = MemreserveV420.from_bytes(raw)
    assert (n.next, n.base, n.size) == (u64(raw, 0), u64(raw, 8), u64(raw, 16))
    assert n.to_bytes() == raw


def test_memreserve_v420_reads_only_24_bytes() -> None:
    n = MemreserveV420(1, 2, 3)
    assert MemreserveV420.from_bytes(n.to_bytes() + b"\xff" * 8) == n


def test_uefi_spec_table_guids_in_memory_order() -> None:
    """ACPI 2.0's GUID {0x8868e871, 0xe4f1, 0x11d3, {0xbc, 0x22, ...}} as firmware stores it."""
    assert bytes.fromhex("71e86888f1e4d311bc220080c73c8881") == ACPI_20_TABLE_GUID
    assert ACPI_TABLE_GUID[:4] == bytes.fromhex("302d9deb")
    assert SMBIOS_TABLE_GUID[:4] == bytes.fromhex("312d9deb")
