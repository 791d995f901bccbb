"""UEFI system table, configuration table and Linux memreserve layouts (arm64, LP64).

Sources: UEFI spec (EFI_TABLE_HEADER, EFI_SYSTEM_TABLE, EFI_CONFIGURATION_TABLE) and
``include/linux/efi.h`` (``struct linux_efi_memreserve``, LINUX_EFI_MEMRESERVE_TABLE_GUID)
of Linux v4.20 and v5.0.1 for the structure in its two eras:

* Era A (v4.20): one reservation per 24-byte node ``{next, base, size}``
  (Linux commit 71e0940d52e1 ("efi: honour memory reservations passed via a linux
  specific config table") (v4.20)).
* Era B (v5.0+): a 16-byte header ``{s32 size, s32 count, u64 next}`` and an array of
  ``{base, size}`` entries, 255 per 4 KiB node (Linux commit 80424b02d42b ("efi: Reduce
  the amount of memblock reservations for persistent allocations") (v5.0)).

Every field is CPU-native (little-endian on arm64).  These are pure encoders and
decoders; walking a chain in memory lives in :mod:`gickexec.fw.memreserve`.
"""

from __future__ import annotations

import struct
import uuid
import zlib
from dataclasses import dataclass

__all__ = [
    "ACPI_20_TABLE_GUID",
    "ACPI_TABLE_GUID",
    "CONFIG_TABLE_ENTRY_BYTES",
    "CONFIG_TABLE_NAMES",
    "EFI_MEMORY_ATTRIBUTES_TABLE_GUID",
    "EFI_SYSTEM_TABLE_BYTES",
    "EFI_SYSTEM_TABLE_SIGNATURE",
    "LINUX_EFI_INITRD_MEDIA_GUID",
    "LINUX_EFI_MEMRESERVE_TABLE_GUID",
    "LINUX_EFI_RANDOM_SEED_TABLE_GUID",
    "MEMRESERVE_ENTRY_BYTES",
    "MEMRESERVE_HEADER_BYTES",
    "MEMRESERVE_V420_BYTES",
    "SMBIOS3_TABLE_GUID",
    "SMBIOS_TABLE_GUID",
    "ConfigTableEntry",
    "EfiSystemTable",
    "MemreserveHeader",
    "MemreserveV420",
    "efi_memreserve_count",
    "guid_bytes",
    "systab_header_crc_ok",
]


def guid_bytes(text: str) -> bytes:
    """The in-memory (mixed-endian) 16 bytes of a GUID given in registry form."""
    return uuid.UUID(text).bytes_le


#: ``LINUX_EFI_MEMRESERVE_TABLE_GUID`` (include/linux/efi.h, v4.20).
LINUX_EFI_MEMRESERVE_TABLE_GUID = guid_bytes("888eb0c6-8ede-4ff5-a8f0-9aee5cb977c2")
#: ``SMBIOS3_TABLE_GUID`` (SMBIOS 3.0 entry point), shown in the kernel's efi: line.
SMBIOS3_TABLE_GUID = guid_bytes("f2fd1544-9794-4a2c-992e-e5bbcf20e394")
#: Configuration tables ``efi_config_parse_tables()`` names in its "efi:" line
#: (drivers/firmware/efi/efi.c ``common_tables[]``; GUIDs from the UEFI specification
#: and include/linux/efi.h).
ACPI_20_TABLE_GUID = guid_bytes("8868e871-e4f1-11d3-bc22-0080c73c8881")
ACPI_TABLE_GUID = guid_bytes("eb9d2d30-2d88-11d3-9a16-0090273fc14d")
SMBIOS_TABLE_GUID = guid_bytes("eb9d2d31-2d88-11d3-9a16-0090273fc14d")
EFI_MEMORY_ATTRIBUTES_TABLE_GUID = guid_bytes("dcfa911d-26eb-469f-a220-38b7dc461220")
LINUX_EFI_RANDOM_SEED_TABLE_GUID = guid_bytes("1ce1e5bc-7ceb-42f2-81e5-8aadf180f57b")
LINUX_EFI_INITRD_MEDIA_GUID = guid_bytes("5568e427-68fc-4f3d-ac74-ca555231cc68")
#: The name ``efi_config_parse_tables()`` prints for each of these (``common_tables[]``;
#: which a kernel version knows is the kernel model's business).
CONFIG_TABLE_NAMES = {
    ACPI_20_TABLE_GUID: "ACPI 2.0",
    ACPI_TABLE_GUID: "ACPI",
    SMBIOS_TABLE_GUID: "SMBIOS",
    SMBIOS3_TABLE_GUID: "SMBIOS 3.0",
    EFI_MEMORY_ATTRIBUTES_TABLE_GUID: "MEMATTR",
    LINUX_EFI_RANDOM_SEED_TABLE_GUID: "RNG",
    LINUX_EFI_INITRD_MEDIA_GUID: "INITRD",
    LINUX_EFI_MEMRESERVE_TABLE_GUID: "MEMRESERVE",
}

#: "IBI SYST"
EFI_SYSTEM_TABLE_SIGNATURE = 0x5453595320494249

# -- EFI_SYSTEM_TABLE (64-bit) ---------------------------------------------------------
# Hdr{Signature u64, Revision u32, HeaderSize u32, CRC32 u32, Reserved u32},
# FirmwareVendor ptr, FirmwareRevision u32 (+4 pad), ConsoleInHandle, ConIn,
# ConsoleOutHandle, ConOut, StandardErrorHandle, StdErr, RuntimeServices, BootServices,
# NumberOfTableEntries (UINTN), ConfigurationTable ptr.
_SYSTAB = struct.Struct("<QIIII Q I4x Q Q Q Q Q Q Q Q Q Q")
EFI_SYSTEM_TABLE_BYTES = _SYSTAB.size  # 120


@dataclass(frozen=True, slots=True)
class EfiSystemTable:
    """The fields of EFI_SYSTEM_TABLE the model uses; the rest are carried through."""

    revision: int
    firmware_vendor: int
    firmware_revision: int
    runtime_services: int
    boot_services: int
    number_of_table_entries: int
    configuration_table: int
    crc32: int = 0
    header_size: int = EFI_SYSTEM_TABLE_BYTES
    signature: int = EFI_SYSTEM_TABLE_SIGNATURE

    def to_bytes(self, *, fix_crc: bool = True) -> bytes:
        """Encode; with ``fix_crc`` the header CRC32 is computed as the spec requires."""
        raw = self._pack(0 if fix_crc else self.crc32)
        if not fix_crc:
            return raw
        crc = zlib.crc32(raw[: self.header_size])
        return self._pack(crc)

    def _pack(self, crc: int) -> bytes:
        return _SYSTAB.pack(
            self.signature,
            self.revision,
            self.header_size,
            crc,
            0,
            self.firmware_vendor,
            self.firmware_revision,
            0,
            0,
            0,
            0,
            0,
            0,
            self.runtime_services,
            self.boot_services,
            self.number_of_table_entries,
            self.configuration_table,
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> EfiSystemTable:
        (
            sig,
            rev,
            hsize,
            crc,
            _res,
            vendor,
            fwrev,
            _h1,
            _p1,
            _h2,
            _p2,
            _h3,
            _p3,
            rt,
            bs,
            n,
            cfg,
        ) = _SYSTAB.unpack(data[: _SYSTAB.size])
        return cls(rev, vendor, fwrev, rt, bs, n, cfg, crc, hsize, sig)

    def crc_ok(self, data: bytes) -> bool:
        """Whether ``data`` (this table's bytes) carries a correct header CRC32."""
        if not EFI_SYSTEM_TABLE_BYTES <= self.header_size <= len(data):
            return False
        blanked = bytearray(data[: self.header_size])
        blanked[16:20] = b"\0\0\0\0"
        return zlib.crc32(bytes(blanked)) == self.crc32


# -- EFI_CONFIGURATION_TABLE -----------------------------------------------------------
_CFG = struct.Struct("<16sQ")
CONFIG_TABLE_ENTRY_BYTES = _CFG.size  # 24


def systab_header_crc_ok(raw: bytes) -> bool:
    """Whether the EFI_TABLE_HEADER CRC32 of ``raw`` (starting at the signature, at least
    HeaderSize bytes long) matches: CRC32 of HeaderSize bytes with the CRC field zeroed.
    Computed from the bytes themselves, so any HeaderSize the data claims is honoured."""
    if len(raw) < 24:
        return False
    header_size = int.from_bytes(raw[12:16], "little")
    if not 24 <= header_size <= len(raw):
        return False
    stored = int.from_bytes(raw[16:20], "little")
    return zlib.crc32(raw[:16] + bytes(4) + raw[20:header_size]) == stored


@dataclass(frozen=True, slots=True)
class ConfigTableEntry:
    """``{EFI_GUID VendorGuid; VOID *VendorTable}``."""

    guid: bytes
    table: int

    def to_bytes(self) -> bytes:
        return _CFG.pack(self.guid, self.table)

    @classmethod
    def from_bytes(cls, data: bytes) -> ConfigTableEntry:
        guid, table = _CFG.unpack(data)
        return cls(guid, table)


# -- struct linux_efi_memreserve -------------------------------------------------------
_MEMRESERVE_HDR = struct.Struct("<iiQ")
_MEMRESERVE_ENTRY = struct.Struct("<QQ")
MEMRESERVE_HEADER_BYTES = _MEMRESERVE_HDR.size  # 16
MEMRESERVE_ENTRY_BYTES = _MEMRESERVE_ENTRY.size  # 16
_V420 = struct.Struct("<QQQ")
MEMRESERVE_V420_BYTES = _V420.size  # 24


def efi_memreserve_count(node_bytes: int) -> int:
    """``EFI_MEMRESERVE_COUNT(size)``: entries that fit a node of ``node_bytes`` (255 for 4K)."""
    return (node_bytes - MEMRESERVE_HEADER_BYTES) // MEMRESERVE_ENTRY_BYTES


@dataclass(frozen=True, slots=True)
class MemreserveHeader:
    """Era-B node header: capacity ``size``, used ``count``, physical ``next`` (0 ends)."""

    size: int
    count: int
    next: int

    def to_bytes(self) -> bytes:
        return _MEMRESERVE_HDR.pack(self.size, self.count, self.next)

    @classmethod
    def from_bytes(cls, data: bytes) -> MemreserveHeader:
        size, count, nxt = _MEMRESERVE_HDR.unpack(data[:MEMRESERVE_HEADER_BYTES])
        return cls(size, count, nxt)

    @staticmethod
    def entry_offset(index: int) -> int:
        return MEMRESERVE_HEADER_BYTES + MEMRESERVE_ENTRY_BYTES * index

    @staticmethod
    def pack_entry(base: int, size: int) -> bytes:
        return _MEMRESERVE_ENTRY.pack(base, size)

    @staticmethod
    def unpack_entries(data: bytes) -> list[tuple[int, int]]:
        """Decode a run of ``{base, size}`` entries (len(data) a multiple of 16)."""
        return [(b, s) for b, s in _MEMRESERVE_ENTRY.iter_unpack(data)]


@dataclass(frozen=True, slots=True)
class MemreserveV420:
    """Era-A node: ``{next, base, size}``, one reservation (size 0 = the empty root)."""

    next: int
    base: int
    size: int

    def to_bytes(self) -> bytes:
        return _V420.pack(self.next, self.base, self.size)

    @classmethod
    def from_bytes(cls, data: bytes) -> MemreserveV420:
        return cls(*_V420.unpack(data[:MEMRESERVE_V420_BYTES]))
