"""GICv3 register layouts and offsets (distributor, redistributor, ITS, LPI tables).

Field positions follow Arm IHI 0069 (the register descriptions of chapter 12; the bare
section numbers below are older internal references whose mapping to IHI 0069 sections
is UNCONFIRMED) and Linux's include/linux/irqchip/arm-gic-v3.h.  Field names are the spec's, so that
``GICR_CTLR.EnableLPIs`` here greps to the same words in the specification and in
Linux's ``arm-gic-v3.h``.  Records are decoded at the MMIO/memory boundary and are
immutable; raw integers do not travel further than the device that owns them.
"""

from __future__ import annotations

from typing import ClassVar

from gickexec.arch.fields import Layout, LayoutRecord, layout_record

__all__ = [
    "GICD_CTLR",
    "GICD_TYPER",
    "GICR_CTLR",
    "GICR_PENDBASER",
    "GICR_PROPBASER",
    "GICR_TYPER",
    "GICR_WAKER",
    "GITS_BASER",
    "GITS_CBASER",
    "GITS_CREADR",
    "GITS_CTLR",
    "GITS_CWRITER",
    "GITS_TYPER",
    "INTID_SPURIOUS",
    "ITS_MAX_LPI_NRBITS",
    "LPI_CONFIG",
    "LPI_INTID_BASE",
    "PAGE_SIZE_FIELD",
    "BaserType",
    "CACHE_RaWaWb",
    "CACHE_nC",
    "GicdCtlr",
    "GicdOffset",
    "GicdTyper",
    "GicrCtlr",
    "GicrOffset",
    "GicrPendbaser",
    "GicrPropbaser",
    "GicrTyper",
    "GitsBaser",
    "GitsCbaser",
    "GitsCtlr",
    "GitsOffset",
    "GitsTyper",
    "LpiConfig",
    "SHARE_InnerShareable",
    "SHARE_NonShareable",
    "lpi_pendbase_sz",
    "lpi_propbase_sz",
]

#: First LPI INTID (§2.1).
LPI_INTID_BASE = 8192
#: The spurious INTID returned by ICC_IAR1_EL1 when nothing can be acknowledged (§4.3).
INTID_SPURIOUS = 1023

# Cacheability and shareability encodings shared by every *BASER register (§1.4).
CACHE_nC = 0b001
CACHE_RaWaWb = 0b111
SHARE_NonShareable = 0b00
SHARE_InnerShareable = 0b01

#: GITS_BASER.Page_Size encodings (§3.5).
PAGE_SIZE_FIELD = {0b00: 0x1000, 0b01: 0x4000, 0b10: 0x10000}

# Not architecture but the software both sides of a handover run: Linux's
# drivers/irqchip/irq-gic-v3-its.c and U-Boot's arch/arm/lib/gic-v3-its.c size the LPI
# tables with the same macros, so firmware-owned and kernel-owned tables agree.
#: ``ITS_MAX_LPI_NRBITS``: both drivers cap the LPI ID bits at 16 (64K LPIs).
ITS_MAX_LPI_NRBITS = 16
_SZ_64K = 0x10000


def lpi_propbase_sz(id_bits: int) -> int:
    """``LPI_PROPBASE_SZ``: ALIGN(BIT(lpi_id_bits), SZ_64K)."""
    return ((1 << id_bits) + _SZ_64K - 1) & ~(_SZ_64K - 1)


def lpi_pendbase_sz(id_bits: int) -> int:
    """``LPI_PENDBASE_SZ``: ALIGN(BIT(lpi_id_bits) / 8, SZ_64K)."""
    return (((1 << id_bits) // 8) + _SZ_64K - 1) & ~(_SZ_64K - 1)


class GicdOffset:
    """Distributor register offsets (§4)."""

    CTLR = 0x0000
    TYPER = 0x0004
    IIDR = 0x0008


class GicrOffset:
    """Redistributor RD_base register offsets (§1.1)."""

    CTLR = 0x0000
    IIDR = 0x0004
    TYPER = 0x0008
    WAKER = 0x0014
    PROPBASER = 0x0070
    PENDBASER = 0x0078
    # Direct LPI registers (§1.7), implemented when GICR_TYPER.DirectLPI == 1.
    SETLPIR = 0x0040
    CLRLPIR = 0x0048
    INVLPIR = 0x00A0
    INVALLR = 0x00B0
    SYNCR = 0x00C0
    #: RD_base + SGI_base frames per redistributor in GICv3.
    STRIDE = 0x20000


class GitsOffset:
    """ITS register offsets (§3.1)."""

    CTLR = 0x0000
    IIDR = 0x0004
    TYPER = 0x0008
    CBASER = 0x0080
    CWRITER = 0x0088
    CREADR = 0x0090
    BASER = 0x0100  # + 8 * n, n = 0..7
    TRANSLATER = 0x10040
    #: control frame + translation frame
    SIZE = 0x20000


# -- Distributor (§4.1, §4.2) ---------------------------------------------------------

# Non-secure view of GICD_CTLR with two Security states (what Linux at EL1 sees).
GICD_CTLR = Layout(
    "GICD_CTLR",
    32,
    {"EnableGrp1": "[0]", "EnableGrp1A": "[1]", "ARE_NS": "[4]", "RWP": "[31]"},
)

GICD_TYPER = Layout(
    "GICD_TYPER",
    32,
    {
        "ITLinesNumber": "[4:0]",
        "CPUNumber": "[7:5]",
        "ESPI": "[8]",
        "NMI": "[9]",
        "SecurityExtn": "[10]",
        "num_LPIs": "[15:11]",
        "MBIS": "[16]",
        "LPIS": "[17]",
        "DVIS": "[18]",
        "IDbits": "[23:19]",
        "A3V": "[24]",
        "No1N": "[25]",
        "RSS": "[26]",
        "ESPI_range": "[31:27]",
    },
)


@layout_record(GICD_CTLR)
class GicdCtlr(LayoutRecord):
    """GICD_CTLR as Non-secure software sees it."""

    EnableGrp1: int = 0
    EnableGrp1A: int = 0
    ARE_NS: int = 0
    RWP: int = 0


@layout_record(GICD_TYPER)
class GicdTyper(LayoutRecord):
    """GICD_TYPER (RO)."""

    ITLinesNumber: int = 0
    CPUNumber: int = 0
    ESPI: int = 0
    NMI: int = 0
    SecurityExtn: int = 0
    num_LPIs: int = 0
    MBIS: int = 0
    LPIS: int = 0
    DVIS: int = 0
    IDbits: int = 0
    A3V: int = 0
    No1N: int = 0
    RSS: int = 0
    ESPI_range: int = 0


# -- Redistributor (§1.2 - §1.6) ------------------------------------------------------

GICR_CTLR = Layout(
    "GICR_CTLR",
    32,
    {
        "EnableLPIs": "[0]",
        "CES": "[1]",
        "IR": "[2]",
        "RWP": "[3]",
        "DPG0": "[24]",
        "DPG1NS": "[25]",
        "DPG1S": "[26]",
        "UWP": "[31]",
    },
)


@layout_record(GICR_CTLR)
class GicrCtlr(LayoutRecord):
    """GICR_CTLR.  CES is bit 1 and IR bit 2 (merged Linux 34453c2e9f79; §1.2 trap)."""

    EnableLPIs: int = 0
    CES: int = 0
    IR: int = 0
    RWP: int = 0
    DPG0: int = 0
    DPG1NS: int = 0
    DPG1S: int = 0
    UWP: int = 0


GICR_TYPER = Layout(
    "GICR_TYPER",
    64,
    {
        "PLPIS": "[0]",
        "VLPIS": "[1]",
        "Dirty": "[2]",
        "DirectLPI": "[3]",
        "Last": "[4]",
        "DPGS": "[5]",
        "MPAM": "[6]",
        "RVPEID": "[7]",
        "Processor_Number": "[23:8]",
        "CommonLPIAff": "[25:24]",
        "VSGI": "[26]",
        "PPInum": "[31:27]",
        "Affinity_Value": "[63:32]",
    },
)


@layout_record(GICR_TYPER)
class GicrTyper(LayoutRecord):
    """GICR_TYPER (RO)."""

    PLPIS: int = 0
    VLPIS: int = 0
    Dirty: int = 0
    DirectLPI: int = 0
    Last: int = 0
    DPGS: int = 0
    MPAM: int = 0
    RVPEID: int = 0
    Processor_Number: int = 0
    CommonLPIAff: int = 0
    VSGI: int = 0
    PPInum: int = 0
    Affinity_Value: int = 0


GICR_PROPBASER = Layout(
    "GICR_PROPBASER",
    64,
    {
        "IDbits": "[4:0]",
        "InnerCache": "[9:7]",
        "Shareability": "[11:10]",
        "Physical_Address": "[51:12]",
        "OuterCache": "[58:56]",
    },
)


@layout_record(GICR_PROPBASER)
class GicrPropbaser(LayoutRecord):
    """GICR_PROPBASER: the LPI Configuration table (4 KiB aligned)."""

    IDbits: int = 0
    InnerCache: int = 0
    Shareability: int = 0
    Physical_Address: int = 0
    OuterCache: int = 0

    @property
    def address(self) -> int:
        return self.Physical_Address << 12

    @property
    def lpi_id_bits(self) -> int:
        """Number of INTID bits the table covers (IDbits + 1)."""
        return self.IDbits + 1


GICR_PENDBASER = Layout(
    "GICR_PENDBASER",
    64,
    {
        "InnerCache": "[9:7]",
        "Shareability": "[11:10]",
        "Physical_Address": "[51:16]",
        "OuterCache": "[58:56]",
        "PTZ": "[62]",
    },
)


@layout_record(GICR_PENDBASER)
class GicrPendbaser(LayoutRecord):
    """GICR_PENDBASER: the LPI Pending table (64 KiB aligned).  PTZ is WO, reads as 0."""

    InnerCache: int = 0
    Shareability: int = 0
    Physical_Address: int = 0
    OuterCache: int = 0
    PTZ: int = 0

    @property
    def address(self) -> int:
        return self.Physical_Address << 16


GICR_WAKER = Layout(
    "GICR_WAKER",
    32,
    {"Sleep": "[0]", "ProcessorSleep": "[1]", "ChildrenAsleep": "[2]", "Quiescent": "[31]"},
)

# -- LPI Configuration table entry (§2.2) ---------------------------------------------

LPI_CONFIG = Layout("LPI_CONFIG", 8, {"Enable": "[0]", "Group1": "[1]", "Priority": "[7:2]"})


@layout_record(LPI_CONFIG)
class LpiConfig(LayoutRecord):
    """One byte of the LPI Configuration table.

    Bit 1 is what Linux calls ``LPI_PROP_GROUP1`` (Xen: RES1); the model stores it and
    otherwise ignores it (whether hardware other than Xen treats it as RES1 is UNCONFIRMED).
    """

    Enable: int = 0
    Group1: int = 0
    Priority: int = 0

    @property
    def priority(self) -> int:
        """The 8-bit priority the CPU interface compares (bits [1:0] are 0)."""
        return self.Priority << 2


# -- ITS (§3.2 - §3.5) ----------------------------------------------------------------

GITS_CTLR = Layout(
    "GITS_CTLR",
    32,
    {"Enabled": "[0]", "ImDe": "[1]", "ITS_Number": "[7:4]", "UMSIirq": "[8]", "Quiescent": "[31]"},
)


@layout_record(GITS_CTLR)
class GitsCtlr(LayoutRecord):
    """GITS_CTLR."""

    Enabled: int = 0
    ImDe: int = 0
    ITS_Number: int = 0
    UMSIirq: int = 0
    Quiescent: int = 0


GITS_TYPER = Layout(
    "GITS_TYPER",
    64,
    {
        "Physical": "[0]",
        "Virtual": "[1]",
        "CCT": "[2]",
        "ITT_entry_size": "[7:4]",
        "ID_bits": "[12:8]",
        "Devbits": "[17:13]",
        "SEIS": "[18]",
        "PTA": "[19]",
        "HCC": "[31:24]",
        "CIDbits": "[35:32]",
        "CIL": "[36]",
        "VMOVP": "[37]",
        "MPAM": "[38]",
        "VSGI": "[39]",
        "VMAPP": "[40]",
        "SVPET": "[42:41]",
        "nID": "[43]",
        "UMSI": "[44]",
        "UMSIirq": "[45]",
        "INV": "[46]",
    },
)


@layout_record(GITS_TYPER)
class GitsTyper(LayoutRecord):
    """GITS_TYPER (RO)."""

    Physical: int = 0
    Virtual: int = 0
    CCT: int = 0
    ITT_entry_size: int = 0
    ID_bits: int = 0
    Devbits: int = 0
    SEIS: int = 0
    PTA: int = 0
    HCC: int = 0
    CIDbits: int = 0
    CIL: int = 0
    VMOVP: int = 0
    MPAM: int = 0
    VSGI: int = 0
    VMAPP: int = 0
    SVPET: int = 0
    nID: int = 0
    UMSI: int = 0
    UMSIirq: int = 0
    INV: int = 0


GITS_CBASER = Layout(
    "GITS_CBASER",
    64,
    {
        "Size": "[7:0]",
        "Shareability": "[11:10]",
        "Physical_Address": "[51:12]",
        "OuterCache": "[55:53]",
        "InnerCache": "[61:59]",
        "Valid": "[63]",
    },
)


@layout_record(GITS_CBASER)
class GitsCbaser(LayoutRecord):
    """GITS_CBASER: the command queue, Size+1 pages of 4 KiB."""

    Size: int = 0
    Shareability: int = 0
    Physical_Address: int = 0
    OuterCache: int = 0
    InnerCache: int = 0
    Valid: int = 0

    @property
    def address(self) -> int:
        return self.Physical_Address << 12

    @property
    def queue_bytes(self) -> int:
        return (self.Size + 1) * 0x1000


GITS_CWRITER = Layout("GITS_CWRITER", 64, {"Retry": "[0]", "Offset": "[19:5]"})
GITS_CREADR = Layout("GITS_CREADR", 64, {"Stalled": "[0]", "Offset": "[19:5]"})

GITS_BASER = Layout(
    "GITS_BASER",
    64,
    {
        "Size": "[7:0]",
        "Page_Size": "[9:8]",
        "Shareability": "[11:10]",
        "Physical_Address": "[47:12]",
        "Entry_Size": "[52:48]",
        "OuterCache": "[55:53]",
        "Type": "[58:56]",
        "InnerCache": "[61:59]",
        "Indirect": "[62]",
        "Valid": "[63]",
    },
)


class BaserType:
    """GITS_BASER<n>.Type encodings (§3.5)."""

    NONE = 0b000
    DEVICE = 0b001
    VPE = 0b010
    COLLECTION = 0b100
    NAMES: ClassVar[dict[int, str]] = {
        NONE: "Unimplemented",
        DEVICE: "Devices",
        VPE: "Virtual CPUs",
        COLLECTION: "Interrupt Collections",
    }


@layout_record(GITS_BASER)
class GitsBaser(LayoutRecord):
    """GITS_BASER<n>: one ITS table (device, collection, vPE)."""

    Size: int = 0
    Page_Size: int = 0
    Shareability: int = 0
    Physical_Address: int = 0
    Entry_Size: int = 0
    OuterCache: int = 0
    Type: int = 0
    InnerCache: int = 0
    Indirect: int = 0
    Valid: int = 0

    @property
    def page_bytes(self) -> int:
        # 0b11 is reserved; QEMU treats it as 64 KiB and so do we (§3.5).
        return PAGE_SIZE_FIELD.get(self.Page_Size, 0x10000)

    @property
    def address(self) -> int:
        """Table base.  With 64 KiB pages, bits [15:12] of the field hold PA[51:48]."""
        raw = self.Physical_Address << 12
        if self.page_bytes == 0x10000:
            return (raw & ~0xF000 & ((1 << 48) - 1)) | (((raw >> 12) & 0xF) << 48)
        return raw

    @property
    def table_bytes(self) -> int:
        return (self.Size + 1) * self.page_bytes

    @property
    def entry_bytes(self) -> int:
        return self.Entry_Size + 1
