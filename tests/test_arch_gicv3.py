"""GICv3 register layouts (gickexec.arch.gicv3) against the architecture and Linux's encodings.

Golden values come from Arm IHI 0069's register descriptions and from the register values
Linux writes (v6.1 its_cpu_init_lpis(): ``PROPBASER = prop_pa | 0x780 | (lpi_id_bits - 1)``,
``PENDBASER = pend_pa | 0x780``).  The Linux macros are re-implemented here as tiny
independent functions so the model's field tables are checked against a second source.
"""

from __future__ import annotations

import inspect

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gickexec.arch import gicv3
from gickexec.arch.fields import Layout, LayoutError, LayoutRecord
from gickexec.arch.gicv3 import (
    GICD_CTLR,
    GICR_WAKER,
    GITS_CREADR,
    GITS_CWRITER,
    INTID_SPURIOUS,
    LPI_INTID_BASE,
    PAGE_SIZE_FIELD,
    BaserType,
    CACHE_nC,
    CACHE_RaWaWb,
    GicdCtlr,
    GicdOffset,
    GicdTyper,
    GicrCtlr,
    GicrOffset,
    GicrPendbaser,
    GicrPropbaser,
    GicrTyper,
    GitsBaser,
    GitsCbaser,
    GitsCtlr,
    GitsOffset,
    GitsTyper,
    LpiConfig,
    SHARE_InnerShareable,
    SHARE_NonShareable,
)

U64 = st.integers(0, (1 << 64) - 1)
U32 = st.integers(0, (1 << 32) - 1)


def genmask(hi: int, lo: int) -> int:
    """Linux GENMASK_ULL(hi, lo)."""
    return ((1 << (hi + 1)) - 1) & ~((1 << lo) - 1)


def bit(n: int) -> int:
    return 1 << n


# -- Linux macros (include/linux/irqchip/arm-gic-v3.h, v6.1) ------------------------------


def linux_propbaser(prop_pa: int, lpi_id_bits: int) -> int:
    # GIC_BASER_InnerShareable << 10 | GIC_BASER_CACHE_RaWaWb << 7 | (lpi_id_bits - 1)
    return prop_pa | (1 << 10) | (7 << 7) | ((lpi_id_bits - 1) & 0x1F)


def linux_pendbaser(pend_pa: int) -> int:
    return pend_pa | (1 << 10) | (7 << 7)


def gicd_typer_id_bits(typer: int) -> int:
    return ((typer >> 19) & 0x1F) + 1


def gicd_typer_num_lpis(typer: int) -> int:
    return ((typer >> 11) & 0x1F) + 1


def gits_baser_phys_52_to_48(phys: int) -> int:
    # GITS_BASER_PHYS_52_to_48(phys)
    return (phys & genmask(47, 16)) | (((phys >> 48) & 0xF) << 12)


# -- constants and offsets -----------------------------------------------------------------


def test_constants() -> None:
    assert LPI_INTID_BASE == 8192
    assert INTID_SPURIOUS == 1023
    assert (CACHE_nC, CACHE_RaWaWb) == (1, 7)
    assert (SHARE_NonShareable, SHARE_InnerShareable) == (0, 1)
    assert PAGE_SIZE_FIELD == {0: 0x1000, 1: 0x4000, 2: 0x10000}


def test_offsets() -> None:
    assert (GicdOffset.CTLR, GicdOffset.TYPER) == (0x0, 0x4)
    assert GicrOffset.CTLR == 0x0000
    assert GicrOffset.IIDR == 0x0004
    assert GicrOffset.TYPER == 0x0008
    assert GicrOffset.WAKER == 0x0014
    assert GicrOffset.PROPBASER == 0x0070
    assert GicrOffset.PENDBASER == 0x0078
    assert GicrOffset.STRIDE == 0x20000
    assert GitsOffset.CTLR == 0x0000
    assert GitsOffset.IIDR == 0x0004
    assert GitsOffset.TYPER == 0x0008
    assert GitsOffset.CBASER == 0x0080
    assert GitsOffset.CWRITER == 0x0088
    assert GitsOffset.CREADR == 0x0090
    assert GitsOffset.BASER == 0x0100
    assert GitsOffset.TRANSLATER == 0x10040
    assert GitsOffset.SIZE == 0x20000


# -- GICR_PROPBASER -----------------------------------------------------------------------


@pytest.mark.parametrize("lpi_id_bits", [14, 15, 16, 24])
@pytest.mark.parametrize("pa", [0x8000_0000, 0x40_1234_5000, 0x000F_FFFF_FFFF_F000])
def test_propbaser_linux_value(pa: int, lpi_id_bits: int) -> None:
    reg = GicrPropbaser(
        IDbits=lpi_id_bits - 1,
        InnerCache=CACHE_RaWaWb,
        Shareability=SHARE_InnerShareable,
        Physical_Address=pa >> 12,
    )
    assert reg.encode() == linux_propbaser(pa, lpi_id_bits)
    dec = GicrPropbaser.decode(linux_propbaser(pa, lpi_id_bits))
    assert dec == reg
    assert dec.address == pa
    assert dec.lpi_id_bits == lpi_id_bits
    assert dec.OuterCache == 0


def test_propbaser_golden_16_bits() -> None:
    pa = 0x8_0040_0000
    reg = GicrPropbaser(IDbits=15, InnerCache=7, Shareability=1, Physical_Address=pa >> 12)
    assert reg.encode() == pa | 0x78F
    assert reg.to_bytes() == (pa | 0x78F).to_bytes(8, "little")


def test_propbaser_non_shareable_fallback() -> None:
    # Linux rewrites with shareability cleared and nC when shareability doesn't stick.
    pa = 0x9000_0000
    reg = GicrPropbaser.decode(pa | 0x80 | 15)
    assert (reg.InnerCache, reg.Shareability, reg.IDbits) == (CACHE_nC, SHARE_NonShareable, 15)
    assert reg.address == pa


def test_propbaser_outer_cache_and_fields() -> None:
    assert GicrPropbaser(OuterCache=7).encode() == 7 << 56
    assert GicrPropbaser(IDbits=0x1F).encode() == 0x1F
    assert GicrPropbaser(Shareability=3).encode() == 3 << 10
    assert GicrPropbaser(Physical_Address=(1 << 40) - 1).encode() == genmask(51, 12)


def test_propbaser_res0_matches_kvm_mask() -> None:
    # KVM PROPBASER_RES0_MASK: bits [63:59], [55:52], [6:5]
    assert gicv3.GICR_PROPBASER.res0_mask == genmask(63, 59) | genmask(55, 52) | genmask(6, 5)


def test_propbaser_too_wide_raises() -> None:
    with pytest.raises(LayoutError):
        GicrPropbaser(IDbits=32).encode()
    with pytest.raises(LayoutError):
        GicrPropbaser(Physical_Address=1 << 40).encode()


@given(U64)
def test_propbaser_address_matches_linux_macro(v: int) -> None:
    # GICR_PROPBASER_ADDRESS(x) = x & GENMASK_ULL(51, 12); IDBITS_MASK 0x1f
    reg = GicrPropbaser.decode(v)
    assert reg.address == v & genmask(51, 12)
    assert reg.IDbits == v & 0x1F


# -- GICR_PENDBASER -----------------------------------------------------------------------


@pytest.mark.parametrize("pa", [0x8001_0000, 0x40_1234_0000, 0x000F_FFFF_FFFF_0000])
def test_pendbaser_linux_value(pa: int) -> None:
    reg = GicrPendbaser(
        InnerCache=CACHE_RaWaWb, Shareability=SHARE_InnerShareable, Physical_Address=pa >> 16
    )
    assert reg.encode() == pa | 0x780
    assert reg.encode() == linux_pendbaser(pa)
    dec = GicrPendbaser.decode(pa | 0x780)
    assert dec == reg
    assert dec.address == pa
    assert dec.PTZ == 0


def test_pendbaser_ptz_is_bit_62() -> None:
    assert GicrPendbaser(PTZ=1).encode() == bit(62)
    assert GicrPendbaser.decode(bit(62)).PTZ == 1
    assert GicrPendbaser.decode(bit(63)).PTZ == 0
    assert GicrPendbaser.decode(bit(61)).PTZ == 0


def test_pendbaser_address_is_64k_granular() -> None:
    # bits [15:12] are RES0: a 4K-aligned address loses them
    assert GicrPendbaser.decode(0x8000_F000).address == 0x8000_0000
    assert GicrPendbaser(Physical_Address=1).encode() == 0x1_0000


def test_pendbaser_res0() -> None:
    expected = genmask(63, 63) | genmask(61, 59) | genmask(55, 52) | genmask(15, 12)
    expected |= genmask(6, 0)
    assert gicv3.GICR_PENDBASER.res0_mask == expected


@given(U64)
def test_pendbaser_address_matches_linux_macro(v: int) -> None:
    # GICR_PENDBASER_ADDRESS(x) = x & GENMASK_ULL(51, 16)
    reg = GicrPendbaser.decode(v)
    assert reg.address == v & genmask(51, 16)
    assert (v >> 62) & 1 == reg.PTZ


# -- GICR_CTLR ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "position"),
    [
        ("EnableLPIs", 0),
        ("CES", 1),
        ("IR", 2),
        ("RWP", 3),
        ("DPG0", 24),
        ("DPG1NS", 25),
        ("DPG1S", 26),
        ("UWP", 31),
    ],
)
def test_gicr_ctlr_bits(field: str, position: int) -> None:
    assert GicrCtlr(**{field: 1}).encode() == bit(position)
    dec = GicrCtlr.decode(bit(position))
    assert getattr(dec, field) == 1
    assert sum(getattr(dec, f.name) for f in gicv3.GICR_CTLR.fields) == 1


def test_gicr_ctlr_linux_macros() -> None:
    # GICR_CTLR_ENABLE_LPIS (1UL << 0), GICR_CTLR_RWP (1UL << 3); merged 34453c2e9f79:
    # CES bit 1, IR bit 2 (not the v1 patch's swapped positions)
    assert GicrCtlr(EnableLPIs=1).encode() == 1 << 0
    assert GicrCtlr(RWP=1).encode() == 1 << 3
    assert GicrCtlr(CES=1).encode() == 1 << 1
    assert GicrCtlr(IR=1).encode() == 1 << 2
    assert GicrCtlr(CES=1, IR=1, EnableLPIs=1).encode() == 0b111


def test_gicr_ctlr_res0() -> None:
    assert gicv3.GICR_CTLR.res0_mask == genmask(30, 27) | genmask(23, 4)
    assert gicv3.GICR_CTLR.width == 32


# -- GICR_TYPER ---------------------------------------------------------------------------


def test_gicr_typer_gem5_value() -> None:
    # gem5: (affinity<<32)|(1<<24)|(cpuId<<8)|(1<<5)|(last<<4)|(1<<3)|(1<<0)
    aff, cpu = 0x0102_0304, 5
    v = (aff << 32) | (1 << 24) | (cpu << 8) | (1 << 5) | (1 << 4) | (1 << 3) | 1
    t = GicrTyper.decode(v)
    assert t.Affinity_Value == aff
    assert t.CommonLPIAff == 1
    assert t.Processor_Number == cpu
    assert (t.DPGS, t.Last, t.DirectLPI, t.PLPIS) == (1, 1, 1, 1)
    assert (t.VLPIS, t.Dirty, t.MPAM, t.RVPEID, t.VSGI, t.PPInum) == (0, 0, 0, 0, 0, 0)
    assert t.encode() == v


def test_gicr_typer_linux_macros() -> None:
    assert GicrTyper(PLPIS=1).encode() == 1 << 0
    assert GicrTyper(VLPIS=1).encode() == 1 << 1
    assert GicrTyper(DirectLPI=1).encode() == 1 << 3
    assert GicrTyper(Last=1).encode() == 1 << 4
    assert GicrTyper(RVPEID=1).encode() == 1 << 7
    # GICR_TYPER_CPU_NUMBER(r) (((r) >> 8) & 0xffff)
    assert GicrTyper(Processor_Number=0xFFFF).encode() == 0xFFFF << 8
    assert GicrTyper(CommonLPIAff=3).encode() == genmask(25, 24)
    assert GicrTyper(Affinity_Value=0xFFFF_FFFF).encode() == genmask(63, 32)
    assert GicrTyper(PPInum=0x1F).encode() == genmask(31, 27)
    assert gicv3.GICR_TYPER.res0_mask == 0


# -- GICR_WAKER ---------------------------------------------------------------------------


def test_gicr_waker() -> None:
    # GIC-600 reset value 0x6: ProcessorSleep=1, ChildrenAsleep=1
    assert GICR_WAKER.unpack(0x6) == {
        "Sleep": 0,
        "ProcessorSleep": 1,
        "ChildrenAsleep": 1,
        "Quiescent": 0,
    }
    assert GICR_WAKER.pack(Quiescent=1) == bit(31)
    assert GICR_WAKER.res0_mask == genmask(30, 3)


# -- Distributor ----------------------------------------------------------------------------


def test_gicd_ctlr_ns_view_linux_macros() -> None:
    # GICD_CTLR_ENABLE_G1 (1U << 0), GICD_CTLR_ENABLE_G1A (1U << 1), GICD_CTLR_ARE_NS (1U << 4)
    assert GICD_CTLR.pack(EnableGrp1=1) == 1 << 0
    assert GICD_CTLR.pack(EnableGrp1A=1) == 1 << 1
    assert GICD_CTLR.pack(ARE_NS=1) == 1 << 4
    assert GICD_CTLR.pack(RWP=1) == 1 << 31
    assert GICD_CTLR.width == 32


def test_gicd_typer_idbits_and_lpis_positions() -> None:
    assert GicdTyper(IDbits=0x1F).encode() == genmask(23, 19)
    assert GicdTyper(LPIS=1).encode() == bit(17)
    assert GicdTyper(MBIS=1).encode() == bit(16)
    assert GicdTyper(DVIS=1).encode() == bit(18)
    assert GicdTyper(num_LPIs=0x1F).encode() == genmask(15, 11)
    assert GicdTyper(ITLinesNumber=0x1F).encode() == genmask(4, 0)
    assert GicdTyper(ESPI_range=0x1F).encode() == genmask(31, 27)
    assert gicv3.GICD_TYPER.res0_mask == 0


def test_gicd_typer_qemu_value() -> None:
    # QEMU gicd_readl: (1<<25)|(1<<24)|(lpi_enable<<17)|(0xf<<19)|itlinesnumber
    v = (1 << 25) | (1 << 24) | (1 << 17) | (0xF << 19) | 7
    t = GicdTyper.decode(v)
    assert t.IDbits == 15
    assert gicd_typer_id_bits(v) == 16 == t.IDbits + 1  # Linux GICD_TYPER_ID_BITS: IDbits + 1
    assert t.LPIS == 1
    assert (t.No1N, t.A3V, t.ITLinesNumber) == (1, 1, 7)
    assert (t.MBIS, t.DVIS, t.num_LPIs, t.SecurityExtn) == (0, 0, 0, 0)
    assert t.encode() == v


@given(U32)
def test_gicd_typer_matches_linux_macros(v: int) -> None:
    t = GicdTyper.decode(v)
    assert t.IDbits + 1 == gicd_typer_id_bits(v)
    assert t.num_LPIs + 1 == gicd_typer_num_lpis(v)
    assert (v >> 17) & 1 == t.LPIS


# -- LPI configuration byte ---------------------------------------------------------------


def test_lpi_config_linux_default() -> None:
    # LPI_PROP_DEFAULT_PRIO 0xa0 | LPI_PROP_GROUP1: "Priority 0xa0, Group-1, disabled"
    c = LpiConfig.decode(0xA2)
    assert c.priority == 0xA0
    assert c.Priority == 0xA0 >> 2
    assert c.Group1 == 1
    assert c.Enable == 0
    assert c.encode() == 0xA2
    assert c.to_bytes() == b"\xa2"


def test_lpi_config_enabled() -> None:
    c = LpiConfig.decode(0xA3)
    assert (c.Enable, c.Group1, c.priority) == (1, 1, 0xA0)
    assert LpiConfig(Enable=1).encode() == 1  # LPI_PROP_ENABLED (1 << 0)
    assert LpiConfig(Group1=1).encode() == 2  # LPI_PROP_GROUP1 (1 << 1)


@given(st.integers(0, 255))
def test_lpi_config_priority_is_top_six_bits(b: int) -> None:
    c = LpiConfig.decode(b)
    assert c.priority == b & 0xFC
    assert c.Enable == b & 1
    assert c.encode() == b
    assert LpiConfig.LAYOUT.res0_mask == 0


# -- GITS_CTLR ----------------------------------------------------------------------------


def test_gits_ctlr_linux_macros() -> None:
    assert GitsCtlr(Enabled=1).encode() == 1 << 0  # GITS_CTLR_ENABLE
    assert GitsCtlr(ImDe=1).encode() == 1 << 1  # GITS_CTLR_ImDe
    assert GitsCtlr(Quiescent=1).encode() == 1 << 31  # GITS_CTLR_QUIESCENT
    assert GitsCtlr(ITS_Number=0xF).encode() == genmask(7, 4)
    assert GitsCtlr(UMSIirq=1).encode() == 1 << 8
    assert gicv3.GITS_CTLR.res0_mask == genmask(30, 9) | genmask(3, 2)


# -- GITS_TYPER ---------------------------------------------------------------------------


def test_gits_typer_kvm_value() -> None:
    # KVM: Physical=1, ITT_entry_size=7 (8 bytes), ID_bits=15, Devbits=15
    v = 1 | (7 << 4) | (15 << 8) | (15 << 13)
    t = GitsTyper.decode(v)
    assert (t.Physical, t.ITT_entry_size, t.ID_bits, t.Devbits) == (1, 7, 15, 15)
    assert (t.PTA, t.CIL, t.HCC, t.Virtual) == (0, 0, 0, 0)
    assert GitsTyper(Physical=1, ITT_entry_size=7, ID_bits=15, Devbits=15).encode() == v


def test_gits_typer_gem5_value() -> None:
    # gem5 Gicv3Its gits_typer = 0x30023F01 (gem5 src/dev/arm/gic_v3_its.cc)
    t = GitsTyper.decode(0x3002_3F01)
    assert t.Physical == 1
    assert t.ITT_entry_size == 0
    assert t.ID_bits == 0x1F
    assert t.Devbits == 0b10001
    assert t.HCC == 0x30
    assert t.encode() == 0x3002_3F01


def test_gits_typer_field_positions() -> None:
    # Linux GITS_TYPER_*: PTA (1<<19), HCC_SHIFT 24, CIDBITS_SHIFT 32, CIL (1<<36),
    # VMOVP (1<<37), VMAPP (1<<40), SVPET_SHIFT 41
    assert GitsTyper(PTA=1).encode() == 1 << 19
    assert GitsTyper(SEIS=1).encode() == 1 << 18
    assert GitsTyper(HCC=0xFF).encode() == 0xFF << 24
    assert GitsTyper(CIDbits=0xF).encode() == 0xF << 32
    assert GitsTyper(CIL=1).encode() == 1 << 36
    assert GitsTyper(VMOVP=1).encode() == 1 << 37
    assert GitsTyper(MPAM=1).encode() == 1 << 38
    assert GitsTyper(VSGI=1).encode() == 1 << 39
    assert GitsTyper(VMAPP=1).encode() == 1 << 40
    assert GitsTyper(SVPET=3).encode() == 3 << 41
    assert GitsTyper(nID=1).encode() == 1 << 43
    assert GitsTyper(UMSI=1).encode() == 1 << 44
    assert GitsTyper(UMSIirq=1).encode() == 1 << 45
    assert GitsTyper(INV=1).encode() == 1 << 46
    assert GitsTyper(CCT=1).encode() == 1 << 2
    assert GitsTyper(Virtual=1).encode() == 1 << 1
    # RES0 [63:47], [23:20]; bit 3 is IMPLEMENTATION DEFINED and not modelled
    assert gicv3.GITS_TYPER.res0_mask == genmask(63, 47) | genmask(23, 20) | bit(3)


def test_gits_typer_qemu_value() -> None:
    # QEMU: Physical=1, ITT_entry_size=0xB, ID_bits=15, Devbits=15, CIL=1, CIDbits=15
    v = 1 | (0xB << 4) | (15 << 8) | (15 << 13) | (15 << 32) | (1 << 36)
    t = GitsTyper.decode(v)
    assert (t.ITT_entry_size, t.CIDbits, t.CIL, t.HCC) == (0xB, 15, 1, 0)


# -- GITS_CBASER / CWRITER / CREADR -------------------------------------------------------


def test_gits_cbaser_linux_value() -> None:
    # its_alloc_cmd_queue: pa | GITS_CBASER_RaWaWb | GITS_CBASER_InnerShareable
    #                      | (ITS_CMD_QUEUE_SZ / SZ_4K - 1) | GITS_CBASER_VALID
    pa = 0x8_1230_0000
    v = pa | (7 << 59) | (1 << 10) | (0x10000 // 0x1000 - 1) | (1 << 63)
    c = GitsCbaser.decode(v)
    assert c.Valid == 1
    assert c.InnerCache == 7
    assert c.OuterCache == 0
    assert c.Shareability == 1
    assert c.Size == 15
    assert c.queue_bytes == 0x10000
    assert c.address == pa
    assert c.encode() == v


@pytest.mark.parametrize(
    ("size", "nbytes"), [(0, 0x1000), (1, 0x2000), (15, 0x10000), (255, 0x100000)]
)
def test_gits_cbaser_queue_bytes(size: int, nbytes: int) -> None:
    assert GitsCbaser(Size=size).queue_bytes == nbytes


def test_gits_cbaser_fields() -> None:
    assert GitsCbaser(OuterCache=7).encode() == genmask(55, 53)
    assert GitsCbaser(InnerCache=7).encode() == genmask(61, 59)
    assert GitsCbaser(Physical_Address=(1 << 40) - 1).encode() == genmask(51, 12)
    assert gicv3.GITS_CBASER.res0_mask == bit(62) | genmask(58, 56) | bit(52) | genmask(9, 8)


def test_gits_cwriter_creadr() -> None:
    assert GITS_CWRITER.pack(Offset=1) == 0x20  # one 32-byte command
    assert GITS_CWRITER.pack(Retry=1) == 1
    assert GITS_CWRITER.extract(0xFFFE0, "Offset") == 0x7FFF
    assert GITS_CWRITER.extract(0x1_0000_0020, "Offset") == 1
    assert GITS_CREADR.pack(Stalled=1) == 1
    assert GITS_CREADR.unpack(0x40 | 1) == {"Stalled": 1, "Offset": 2}
    assert GITS_CWRITER.res0_mask == genmask(63, 20) | genmask(4, 1)
    assert GITS_CREADR.res0_mask == genmask(63, 20) | genmask(4, 1)


# -- GITS_BASER ---------------------------------------------------------------------------


def test_baser_type_encodings() -> None:
    # Linux GITS_BASER_TYPE_DEVICE 1, _VCPU 2, _COLLECTION 4
    assert (BaserType.NONE, BaserType.DEVICE, BaserType.VPE, BaserType.COLLECTION) == (0, 1, 2, 4)
    assert BaserType.NAMES[BaserType.DEVICE] == "Devices"
    assert BaserType.NAMES[BaserType.COLLECTION] == "Interrupt Collections"


def test_gits_baser_linux_device_table() -> None:
    # its_setup_baser: phys | type<<56 | (esz-1)<<48 | (pages-1) | cache | shr | page size | VALID
    pa = 0x8_1234_0000
    v = (
        gits_baser_phys_52_to_48(pa)
        | (BaserType.DEVICE << 56)
        | ((8 - 1) << 48)
        | (2 - 1)
        | (7 << 59)
        | (1 << 10)
        | (0b10 << 8)
        | (1 << 63)
    )
    b = GitsBaser.decode(v)
    assert b.Valid == 1
    assert b.Indirect == 0
    assert b.Type == BaserType.DEVICE
    assert b.entry_bytes == 8
    assert b.page_bytes == 0x10000
    assert b.table_bytes == 2 * 0x10000
    assert b.InnerCache == 7
    assert b.Shareability == 1
    assert b.address == pa
    assert b.encode() == v


def test_gits_baser_64k_pa_51_48_in_bits_15_12() -> None:
    pa = 0x000A_0000_1234_0000  # PA[51:48] = 0xA
    v = gits_baser_phys_52_to_48(pa) | (0b10 << 8)
    assert (v >> 12) & 0xF == 0xA  # the high PA nibble sits in register bits [15:12]
    assert v & genmask(47, 16) == 0x1234_0000
    b = GitsBaser.decode(v)
    assert b.address == pa
    assert GitsBaser(Page_Size=0b10, Physical_Address=v >> 12 & ((1 << 36) - 1)).encode() == v


def test_gits_baser_64k_golden_field() -> None:
    b = GitsBaser(Page_Size=0b10, Physical_Address=0x13)  # field bits [47:12]
    # register bits [47:16] = 0x1 -> PA[47:16] = 0x1, bits [15:12] = 0x3 -> PA[51:48] = 3
    assert b.encode() == 0x1_3000 | 0x200
    assert b.address == (3 << 48) | 0x1_0000


@pytest.mark.parametrize("page_size", [0b00, 0b01])
def test_gits_baser_small_pages_address_is_plain(page_size: int) -> None:
    b = GitsBaser(Page_Size=page_size, Physical_Address=0xA_0001_2345)
    assert b.address == 0xA_0001_2345 << 12
    assert b.page_bytes == PAGE_SIZE_FIELD[page_size]


def test_gits_baser_reserved_page_size_treated_as_64k() -> None:
    b = GitsBaser(Page_Size=0b11, Physical_Address=0x15)
    assert b.page_bytes == 0x10000
    assert b.address == (5 << 48) | 0x1_0000


@given(st.integers(0, (1 << 36) - 1))
def test_gits_baser_64k_address_matches_linux_macro(pa64k: int) -> None:
    pa = pa64k << 16  # any 64K-aligned 52-bit PA
    v = gits_baser_phys_52_to_48(pa) | (0b10 << 8)
    assert GitsBaser.decode(v).address == pa


def test_gits_baser_field_positions() -> None:
    assert GitsBaser(Entry_Size=0x1F).encode() == genmask(52, 48)
    assert GitsBaser(Type=7).encode() == genmask(58, 56)
    assert GitsBaser(OuterCache=7).encode() == genmask(55, 53)
    assert GitsBaser(InnerCache=7).encode() == genmask(61, 59)
    assert GitsBaser(Indirect=1).encode() == bit(62)
    assert GitsBaser(Valid=1).encode() == bit(63)  # GITS_BASER_VALID
    assert GitsBaser(Size=0xFF).encode() == 0xFF
    assert GitsBaser(Page_Size=3).encode() == genmask(9, 8)
    assert gicv3.GITS_BASER.res0_mask == 0


# -- every record and layout in gicv3.py round-trips ---------------------------------------

RECORDS: list[type[LayoutRecord]] = sorted(
    (
        obj
        for obj in vars(gicv3).values()
        if inspect.isclass(obj)
        and issubclass(obj, LayoutRecord)
        and obj is not LayoutRecord
        and hasattr(obj, "LAYOUT")
    ),
    key=lambda c: c.__name__,
)
LAYOUTS: list[Layout] = sorted(
    (obj for obj in vars(gicv3).values() if isinstance(obj, Layout)), key=lambda lay: lay.name
)


def test_enumeration_is_complete() -> None:
    names = {c.__name__ for c in RECORDS}
    assert names == {
        "GicdCtlr",
        "GicdTyper",
        "GicrCtlr",
        "GicrPendbaser",
        "GicrPropbaser",
        "GicrTyper",
        "GitsBaser",
        "GitsCbaser",
        "GitsCtlr",
        "GitsTyper",
        "LpiConfig",
    }
    assert {lay.name for lay in LAYOUTS} >= {
        "GICD_CTLR",
        "GICR_WAKER",
        "GITS_CWRITER",
        "GITS_CREADR",
    } | {c.LAYOUT.name for c in RECORDS}


def test_layout_widths() -> None:
    widths = {lay.name: lay.width for lay in LAYOUTS}
    assert widths == {
        "GICD_CTLR": 32,
        "GICD_TYPER": 32,
        "GICR_CTLR": 32,
        "GICR_TYPER": 64,
        "GICR_PROPBASER": 64,
        "GICR_PENDBASER": 64,
        "GICR_WAKER": 32,
        "LPI_CONFIG": 8,
        "GITS_CTLR": 32,
        "GITS_TYPER": 64,
        "GITS_CBASER": 64,
        "GITS_CWRITER": 64,
        "GITS_CREADR": 64,
        "GITS_BASER": 64,
    }


def _field_values(layout: Layout) -> st.SearchStrategy[dict[str, int]]:
    return st.fixed_dictionaries(
        {f.name: st.integers(0, (1 << f.width) - 1) for f in layout.fields}
    )


@pytest.mark.parametrize("cls", RECORDS, ids=lambda c: c.__name__)
@settings(max_examples=50)
@given(data=st.data())
def test_record_decode_encode_round_trip(cls: type[LayoutRecord], data: st.DataObject) -> None:
    values = data.draw(_field_values(cls.LAYOUT))
    rec = cls(**values)
    raw = rec.encode()
    assert 0 <= raw < 1 << cls.LAYOUT.width
    assert raw & cls.LAYOUT.res0_mask == 0
    assert cls.decode(raw) == rec
    assert cls.from_bytes(rec.to_bytes()) == rec
    assert len(rec.to_bytes()) == cls.LAYOUT.width // 8


@pytest.mark.parametrize("cls", RECORDS, ids=lambda c: c.__name__)
@settings(max_examples=50)
@given(data=st.data())
def test_record_encode_decode_round_trip(cls: type[LayoutRecord], data: st.DataObject) -> None:
    width = cls.LAYOUT.width
    v = data.draw(st.integers(0, (1 << width) - 1))
    assert cls.decode(v).encode() == v & ~cls.LAYOUT.res0_mask
    assert cls.from_bytes(v.to_bytes(width // 8, "little")).encode() == v & ~cls.LAYOUT.res0_mask


@pytest.mark.parametrize("cls", RECORDS, ids=lambda c: c.__name__)
def test_record_defaults_encode_to_zero(cls: type[LayoutRecord]) -> None:
    assert cls().encode() == 0


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda lay: lay.name)
@settings(max_examples=50)
@given(data=st.data())
def test_layout_pack_unpack_round_trip(layout: Layout, data: st.DataObject) -> None:
    v = data.draw(st.integers(0, (1 << layout.width) - 1))
    assert layout.pack(**layout.unpack(v)) == v & ~layout.res0_mask


def test_gicd_ctlr_golden_value_linux_writes() -> None:
    # v4.19.1 gic_dist_init(): GICD_CTLR_ARE_NS | GICD_CTLR_ENABLE_G1A | GICD_CTLR_ENABLE_G1
    assert GicdCtlr(EnableGrp1=1, EnableGrp1A=1, ARE_NS=1).encode() == (1 << 4) | 0b11
    assert GicdCtlr.decode(0x8000_0012) == GicdCtlr(EnableGrp1A=1, ARE_NS=1, RWP=1)
