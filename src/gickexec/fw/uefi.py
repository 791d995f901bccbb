"""UEFI firmware as the kernel sees it: a system table, a configuration table array and a
memory map, all in simulated memory, persisting across kexec (firmware runs only at
power-on; a kexec'd kernel finds the same system table through the device tree's
``linux,uefi-system-table``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from gickexec.arch.efi import (
    ACPI_20_TABLE_GUID,
    CONFIG_TABLE_ENTRY_BYTES,
    EFI_MEMORY_ATTRIBUTES_TABLE_GUID,
    EFI_SYSTEM_TABLE_BYTES,
    EFI_SYSTEM_TABLE_SIGNATURE,
    SMBIOS3_TABLE_GUID,
    ConfigTableEntry,
    EfiSystemTable,
)
from gickexec.hw.memory import FIRMWARE, MemRegion, PhysicalMemory

__all__ = [
    "EDK2_QEMU_VIRT",
    "GENERIC_EDK2",
    "EfiMemoryType",
    "FirmwareLayout",
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
    ACPI_RECLAIM = 9


class PhysicalReader(Protocol):
    """Anything that reads guest physical memory: the model's memory or a dump image."""

    def read(self, addr: int, size: int) -> bytes: ...

    def is_ram(self, addr: int, size: int) -> bool: ...


class SystemTableError(Exception):
    """The EFI system table or its configuration array cannot be read or is malformed."""


@dataclass(frozen=True, slots=True)
class FirmwareLayout:
    """Where a UEFI firmware build puts its tables and regions, as offsets below the top of
    the first RAM bank (EDK II allocates top-down, so the offsets hold when RAM grows).

    ``regions``: (offset, size, EFI memory type, label) of what the memory map marks other
    than conventional memory.  ``tables``: the firmware's own configuration tables in
    array order, (name, GUID, offset).  ``kernel_reserved``: (offset, size, label) of
    EFI_LOADER_DATA pages Linux keeps (``efi_init()`` reserves the memory map it was handed
    and the memory attributes table; the stub's pool page holds the INITRD and MEMRESERVE
    tables).  ``stub_pool``: where the stub's AllocatePool() lands; ``rng_seed``: where the
    stub's LINUX_EFI_RANDOM_SEED table lands (None: no EFI_RNG_PROTOCOL); ``initrd_top``:
    the initrd the stub loads ends here; ``nomap_memory``: (start, size) outside RAM that
    the memory map reports as runtime memory.
    """

    name: str
    systab: int
    vendor: int
    config_array: int
    regions: tuple[tuple[int, int, int, str], ...]
    tables: tuple[tuple[str, bytes, int], ...]
    kernel_reserved: tuple[tuple[int, int, str], ...] = ()
    stub_pool: int = 0
    rng_seed: int | None = None
    initrd_top: int = 0
    nomap_memory: tuple[tuple[int, int], ...] = ()
    #: (offset, size) of the device tree the EFI stub allocates for the kernel, if known
    stub_fdt: tuple[int, int] | None = None
    revision: int = (2 << 16) | 70
    vendor_name: str = "EDK II"
    source: str = ""
    #: what the firmware's loader appends to the command line when it hands over an
    #: initrd (EDK II's QemuLoadImageLib: " initrd=initrd")
    initrd_cmdline: str = ""


#: The model's generic EDK II-like firmware: a 16 MiB runtime region 64 MiB below the top
#: of the first bank with the system table and SMBIOS in it, and a 1 MiB loader pool
#: below that (no measured source: representative).
GENERIC_EDK2 = FirmwareLayout(
    name="generic EDK II",
    systab=(64 << 20) - 0x3E0018,
    vendor=(64 << 20) - 0x3E0400,
    config_array=(64 << 20) - 0x3E1000,
    regions=(
        (64 << 20, 16 << 20, EfiMemoryType.RUNTIME_SERVICES_DATA, "EFI Runtime Data"),
        (66 << 20, 1 << 20, EfiMemoryType.LOADER_DATA, "EFI Loader Data (pool)"),
    ),
    tables=(("SMBIOS 3.0", SMBIOS3_TABLE_GUID, (64 << 20) - 0x7F0000),),
    # EDK II pools hand out addresses that are 8-byte aligned but rarely page aligned
    # (the real MEMRESERVE root in a user's log sits at ...e98).
    stub_pool=(66 << 20) - 0xE98,
    source="representative",
)

#: AAVMF (EDK II 2022.11, Debian 12's qemu-efi-aarch64) on QEMU 7.2 ``virt``, measured from
#: the real runs (tests/data/realcheck: the "efi:" line, /proc/iomem and the memory node
#: ranges of the 1 GiB and 2 GiB runs; every offset below the top of RAM is the same in
#: both, except the memory attributes table, 8 KiB lower with 2 GiB -- the model keeps the
#: 1 GiB value).  The NOR flash at 0x04000000 is reported as runtime memory.
EDK2_QEMU_VIRT = FirmwareLayout(
    name="AAVMF 2022.11 (QEMU virt)",
    # The system table lives in runtime services data; its exact address is not in the
    # logs (model choice inside the top runtime region).
    systab=0x3F0000 - 0x18,
    vendor=0x3F0000 - 0x400,
    config_array=0x3F0000 - 0x1000,
    regions=(
        (0x400000, 0x3E0000, EfiMemoryType.RUNTIME_SERVICES_DATA, "EFI runtime (SMBIOS)"),
        (0x20000, 0x20000, EfiMemoryType.ACPI_RECLAIM, "EFI reserved (top of RAM)"),
        (0x3BC0000, 0x2F0000, EfiMemoryType.RUNTIME_SERVICES_DATA, "EFI runtime services"),
        (0x6200000, 0x10000, EfiMemoryType.ACPI_RECLAIM, "ACPI tables"),
    ),
    tables=(
        ("SMBIOS 3.0", SMBIOS3_TABLE_GUID, 0x130000),
        ("MEMATTR", EFI_MEMORY_ATTRIBUTES_TABLE_GUID, 0x32D4AE8),
        ("ACPI 2.0", ACPI_20_TABLE_GUID, 0x61FFFE8),
    ),
    kernel_reserved=((0x32D5000, 0x1000, "EFI memory attributes table"),),
    # the device tree the stub builds (one page): reserved by the first kernel only, so
    # a kexec'd kernel's CMA area reaches up to the ACPI tables (0x75e00000 in the real
    # second kernel)
    stub_fdt=(0x6400000, 0x1000),
    stub_pool=0x61EB000 - 0xF18,
    rng_seed=0x6200000 - 0xE798,
    initrd_top=0xA196000,
    nomap_memory=((0x04000000, 0x04000000),),
    initrd_cmdline=" initrd=initrd",
    source="tests/data/realcheck (AAVMF 2022.11-6+deb12u2, QEMU 7.2.22)",
)


class UefiFirmware:
    """UEFI firmware state: where it put its tables and what it allocated, following a
    :class:`FirmwareLayout` anchored at the top of the first RAM bank."""

    def __init__(self, mem: PhysicalMemory, layout: FirmwareLayout = GENERIC_EDK2) -> None:
        self.mem = mem
        self.layout = layout
        self.top = mem.ram[0].end
        self.systab = self.top - layout.systab
        self._vendor = self.top - layout.vendor
        self._cfg_capacity = 16
        self._cfg_array = self.top - layout.config_array
        self._pool_next = self.top - layout.stub_pool
        self.power_on()

    def at(self, offset: int) -> int:
        """The address ``offset`` bytes below the top of the first RAM bank."""
        return self.top - offset

    def power_on(self) -> None:
        """Build the system table with the firmware's own configuration tables."""
        vendor = (self.layout.vendor_name + "\0").encode("utf-16-le")
        self.mem.write(self._vendor, vendor, FIRMWARE)
        self._entries: list[ConfigTableEntry] = []
        for _name, guid, offset in self.layout.tables:
            addr = self.at(offset)
            if guid == SMBIOS3_TABLE_GUID:
                # A minimal SMBIOS 3.0 entry point ("_SM3_").
                self.mem.write(addr, b"_SM3_", FIRMWARE)
            self._entries.append(ConfigTableEntry(guid, addr))
        self._pool_next = self.top - self.layout.stub_pool
        self._write_tables()

    def _write_tables(self) -> None:
        if len(self._entries) > self._cfg_capacity:
            raise RuntimeError("model firmware configuration table array is full")
        blob = b"".join(e.to_bytes() for e in self._entries)
        self.mem.write(self._cfg_array, blob, FIRMWARE)
        st = EfiSystemTable(
            revision=self.layout.revision,
            firmware_vendor=self._vendor,
            firmware_revision=0x10000,
            runtime_services=self.top - self.layout.regions[0][0] + 0x1000,
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
        # Small pool allocations of EDK II sit 0x80 apart (pool header and tail): the
        # real INITRD and MEMRESERVE tables are at ...f18 and ...f98.
        self._pool_next = addr + max(0x80, (size + 0x7F) & ~0x7F)
        if self._pool_next - (addr & ~0xFFF) > 0x1000 * 16:
            raise RuntimeError("model firmware pool exhausted")
        return addr

    def install_configuration_table(self, guid: bytes, table: int) -> None:
        """InstallConfigurationTable: add or replace the entry for ``guid``."""
        self._entries = [e for e in self._entries if e.guid != guid]
        self._entries.append(ConfigTableEntry(guid, table))
        self._write_tables()

    def regions(self) -> list[tuple[MemRegion, int]]:
        """The memory map's non-conventional regions: (region, EFI memory type)."""
        return [
            (MemRegion(self.at(off), size, label), kind)
            for off, size, kind, label in self.layout.regions
        ]

    def kernel_reserved(self) -> list[tuple[int, int, str]]:
        """EFI_LOADER_DATA pages Linux keeps: (address, size, label)."""
        return [(self.at(off), size, label) for off, size, label in self.layout.kernel_reserved]

    def memory_map(self) -> list[tuple[MemRegion, int]]:
        """The EFI memory map: (region, EFI memory type) pairs covering all RAM."""
        special = sorted(self.regions(), key=lambda s: s[0].start)
        out: list[tuple[MemRegion, int]] = []
        for bank in self.mem.ram:
            cursor = bank.start
            for region, kind in special:
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
