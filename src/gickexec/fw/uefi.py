"""UEFI firmware as the kernel sees it: a system table, a configuration table array and a
memory map, all in simulated memory, persisting across kexec (firmware runs only at
power-on; a kexec'd kernel finds the same system table through the device tree's
``linux,uefi-system-table``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from gickexec.arch.efi import (
    CONFIG_TABLE_ENTRY_BYTES,
    EFI_SYSTEM_TABLE_BYTES,
    EFI_SYSTEM_TABLE_SIGNATURE,
    SMBIOS3_TABLE_GUID,
    ConfigTableEntry,
    EfiSystemTable,
)
from gickexec.hw.memory import FIRMWARE, MemRegion, PhysicalMemory

__all__ = [
    "EfiMemoryType",
    "PhysicalReader",
    "SystemTableError",
    "UefiFirmware",
    "read_config_tables",
]

#: How many configuration tables a kernel model will accept before calling the table bogus.
MAX_CONFIG_TABLES = 1024


class EfiMemoryType:
    """EFI_MEMORY_TYPE values the model uses."""

    LOADER_DATA = 2
    RUNTIME_SERVICES_DATA = 6
    CONVENTIONAL = 7


class PhysicalReader(Protocol):
    """Anything that reads guest physical memory: the model's memory or a dump image."""

    def read(self, addr: int, size: int) -> bytes: ...

    def is_ram(self, addr: int, size: int) -> bool: ...


class SystemTableError(Exception):
    """The EFI system table or its configuration array cannot be read or is malformed."""


@dataclass(frozen=True, slots=True)
class _Layout:
    runtime: MemRegion
    loader_pool: MemRegion


class UefiFirmware:
    """EDK II-like firmware state: where it put its tables and what it allocated.

    Firmware tables go to a runtime-services region at the top of the first RAM bank
    (the kernel must keep it); pool allocations of EFI_LOADER_DATA come from a small
    loader-data region below it (ordinary RAM once the kernel runs).
    """

    VENDOR = "EDK II"
    REVISION = (2 << 16) | 70  # UEFI 2.70

    def __init__(self, mem: PhysicalMemory) -> None:
        self.mem = mem
        bank = mem.ram[0]
        rt_size = 16 << 20
        rt_start = bank.end - (64 << 20)
        self.layout = _Layout(
            MemRegion(rt_start, rt_size, "EFI Runtime Data"),
            MemRegion(rt_start - (2 << 20), 1 << 20, "EFI Loader Data (pool)"),
        )
        self.systab = rt_start + 0x3E0018
        self._vendor = rt_start + 0x3E0400
        self._cfg_capacity = 16
        self._cfg_array = rt_start + 0x3E1000
        self._smbios = rt_start + 0x7F0000
        # EDK II pools hand out addresses that are 8-byte aligned but rarely page aligned
        # (the real MEMRESERVE root in a user's log sits at ...e98).
        self._pool_next = self.layout.loader_pool.start + 0xE98
        self.power_on()

    def power_on(self) -> None:
        """Build the system table with its initial configuration tables."""
        vendor = (self.VENDOR + "\0").encode("utf-16-le")
        self.mem.write(self._vendor, vendor, FIRMWARE)
        # A minimal SMBIOS 3.0 entry point ("_SM3_"), so the kernel has more than one table.
        self.mem.write(self._smbios, b"_SM3_", FIRMWARE)
        self._entries: list[ConfigTableEntry] = [ConfigTableEntry(SMBIOS3_TABLE_GUID, self._smbios)]
        self._write_tables()

    def _write_tables(self) -> None:
        if len(self._entries) > self._cfg_capacity:
            raise RuntimeError("model firmware configuration table array is full")
        blob = b"".join(e.to_bytes() for e in self._entries)
        self.mem.write(self._cfg_array, blob, FIRMWARE)
        st = EfiSystemTable(
            revision=self.REVISION,
            firmware_vendor=self._vendor,
            firmware_revision=0x10000,
            runtime_services=self.layout.runtime.start + 0x1000,
            boot_services=0,
            number_of_table_entries=len(self._entries),
            configuration_table=self._cfg_array,
        )
        self.mem.write(self.systab, st.to_bytes(), FIRMWARE)

    # -- boot services the EFI stub uses ---------------------------------------------

    def allocate_pool(self, memory_type: int, size: int) -> int:
        """AllocatePool: 8-byte aligned memory of ``memory_type`` (only LOADER_DATA here)."""
        if memory_type != EfiMemoryType.LOADER_DATA:
            raise ValueError("the model firmware pools only EFI_LOADER_DATA")
        addr = self._pool_next
        self._pool_next = (addr + size + 7) & ~7
        if self._pool_next > self.layout.loader_pool.end:
            raise RuntimeError("model firmware pool exhausted")
        return addr

    def install_configuration_table(self, guid: bytes, table: int) -> None:
        """InstallConfigurationTable: add or replace the entry for ``guid``."""
        self._entries = [e for e in self._entries if e.guid != guid]
        self._entries.append(ConfigTableEntry(guid, table))
        self._write_tables()

    def memory_map(self) -> list[tuple[MemRegion, int]]:
        """The EFI memory map: (region, EFI memory type) pairs covering all RAM."""
        special = [
            (self.layout.runtime, EfiMemoryType.RUNTIME_SERVICES_DATA),
            (self.layout.loader_pool, EfiMemoryType.LOADER_DATA),
        ]
        out: list[tuple[MemRegion, int]] = []
        for bank in self.mem.ram:
            cursor = bank.start
            for region, kind in sorted(special, key=lambda s: s[0].start):
                if not bank.contains(region.start, region.size):
                    continue
                if region.start > cursor:
                    out.append(
                        (MemRegion(cursor, region.start - cursor), EfiMemoryType.CONVENTIONAL)
                    )
                out.append((region, kind))
                cursor = region.end
            if cursor < bank.end:
                out.append((MemRegion(cursor, bank.end - cursor), EfiMemoryType.CONVENTIONAL))
        return out


def read_config_tables(
    mem: PhysicalReader, systab: int
) -> tuple[EfiSystemTable, list[ConfigTableEntry]]:
    """Read and validate the system table at ``systab`` and its configuration array."""
    if not mem.is_ram(systab, EFI_SYSTEM_TABLE_BYTES):
        raise SystemTableError(f"EFI system table {systab:#x} is not in RAM")
    raw = mem.read(systab, EFI_SYSTEM_TABLE_BYTES)
    st = EfiSystemTable.from_bytes(raw)
    if st.signature != EFI_SYSTEM_TABLE_SIGNATURE:
        raise SystemTableError(f"EFI system table signature mismatch at {systab:#x}")
    n = st.number_of_table_entries
    if n > MAX_CONFIG_TABLES:
        raise SystemTableError(f"EFI system table claims {n} configuration tables")
    size = n * CONFIG_TABLE_ENTRY_BYTES
    if n and not mem.is_ram(st.configuration_table, size):
        raise SystemTableError("EFI configuration table array is not in RAM")
    blob = mem.read(st.configuration_table, size) if n else b""
    entries = [
        ConfigTableEntry.from_bytes(blob[i : i + CONFIG_TABLE_ENTRY_BYTES])
        for i in range(0, size, CONFIG_TABLE_ENTRY_BYTES)
    ]
    return st, entries
