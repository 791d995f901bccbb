"""Every IMPLEMENTATION DEFINED or UNPREDICTABLE choice of the GIC model, in one place.

Each knob is declared once, as a field of :class:`GicKnobs` whose metadata carries its
meaning, allowed values, status in the architecture and the source that says real
implementations differ ("§7.N" marks are older internal references; their IHI 0069
sections are UNCONFIRMED).
Devices read their behaviour from a :class:`GicKnobs` value and nowhere else;
:data:`KNOB_INFO` (derived from the fields) is what ``gickexec platforms`` and
docs/hardware.md show.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any

from gickexec.bounded import clip, show

__all__ = ["KNOB_INFO", "GicKnobs", "KnobInfo", "knobs_with_overrides"]

IMPDEF = "IMPLEMENTATION DEFINED"
UNPRED = "UNPREDICTABLE"
CUNPRED = "CONSTRAINED UNPREDICTABLE"


@dataclass(frozen=True, slots=True)
class KnobInfo:
    """What one knob means, for listings and documentation."""

    name: str
    meaning: str
    allowed: str
    status: str
    source: str
    default: Any


def _knob(
    default: Any,
    meaning: str,
    status: str,
    source: str,
    *,
    allowed: str = "",
    minimum: int = 0,
    maximum: int | None = None,
) -> Any:
    return dataclasses.field(
        default=default,
        metadata={
            "meaning": meaning,
            "status": status,
            "source": source,
            "allowed": allowed,
            "minimum": minimum,
            "maximum": maximum,
        },
    )


@dataclass(frozen=True, slots=True)
class GicKnobs:
    """The GIC implementation's choices where the architecture leaves one."""

    # -- redistributor ----------------------------------------------------------------
    enable_lpis_clearable: bool = _knob(
        False,
        "GICR_CTLR.EnableLPIs can be written back to 0 once set (else it is RES1 once set)",
        f"{IMPDEF} (GICv3.0/4.0); RES1-once-set deprecated later",
        "§0, §7.1; Linux redist_disable_lpis() comment; Xen one-way, QEMU/KVM clearable",
    )
    report_ces: bool = _knob(
        False,
        "GICR_CTLR.CES reads as 1 (the redistributor says EnableLPIs is clearable)",
        "RO; 0 means 'not indicated'",
        "§1.2, §7.2; QEMU and KVM (since 2022) report 1",
    )
    report_ir: bool = _knob(
        False,
        "GICR_CTLR.IR reads as 1 (GICR_INVLPIR/INVALLR/SYNCR implemented)",
        "RO; 0 means 'not indicated'",
        "§1.2, §7.2; Linux commit 34453c2e9f79 (CES bit 1, IR bit 2); KVM reports 1",
    )
    range_selector: bool = _knob(
        True,
        "GICD_TYPER.RSS: affinity level 0 values up to 255 can be targeted (Range Selector "
        "support, printed by Linux as ', RSS' or 'Distributor has Range Selector support')",
        IMPDEF,
        "IHI 0069 GICD_TYPER.RSS; QEMU 7.2 arm_gicv3_dist.c reports 0 (the real 6.1 runs "
        "print 'GICv3 features: 16 PPIs' without ', RSS')",
    )
    direct_lpi: bool = _knob(
        False,
        "GICR_TYPER.DirectLPI: GICR_SETLPIR/CLRLPIR/INVLPIR/INVALLR/SYNCR are implemented "
        "(else those offsets are RAZ/WI)",
        f"{IMPDEF} with an ITS; mandatory without one",
        "§1.3, §1.7; gem5 reports 1, GIC-600AE TRM p.125",
    )
    base_writes_ignored_while_enabled: bool = _knob(
        True,
        "writes to GICR_PROPBASER/GICR_PENDBASER while EnableLPIs=1 are ignored (else the "
        "register takes the value but the redistributor keeps using the tables it latched "
        "when LPIs were enabled)",
        UNPRED,
        "§1.5, §7.3 (KVM/Xen ignore; QEMU/gem5 accept)",
    )
    rwp_clear_after_reads: int = _knob(
        1,
        "GICR_CTLR.RWP stays 1 for this many reads after EnableLPIs goes 1 -> 0; base "
        "writes and re-enabling before it reads 0 are treated as while enabled",
        f"timing {IMPDEF}; early writes {UNPRED}",
        "§1.2, §7.4 (only KVM models RWP)",
        maximum=1_000_000,
    )
    common_lpi_aff: int = _knob(
        0,
        "GICR_TYPER.CommonLPIAff: redistributors that must share one property table "
        "(0 all, 1 same Aff3, 2 same Aff3.Aff2, 3 same Aff3.Aff2.Aff1); enabling with a "
        "PROPBASER that differs within the group is recorded, each uses its own",
        f"RO {IMPDEF}; differing copies {UNPRED}",
        "§1.3, §7.5 (QEMU and gem5 report 1, KVM 0)",
        maximum=3,
    )
    config_cache: bool = _knob(
        True,
        "the redistributor caches LPI configuration bytes; changes are seen only after "
        "INV/INVALL/GICR_INVLPIR (else every use re-reads the property table)",
        IMPDEF,
        "§2.4, §7.6 (KVM caches all; gem5 none; QEMU HPPI only)",
    )
    config_cache_entries: int = _knob(
        0,
        "capacity of the configuration cache in LPIs; the oldest entry is evicted (0: unlimited)",
        f"size and policy {IMPDEF}",
        "§2.4, §7.6",
        maximum=1 << 24,
    )
    scan_pending_table_on_enable: bool = _knob(
        True,
        "on EnableLPIs 0 -> 1 with PTZ=0 the redistributor reads the pending table to "
        "learn pending LPIs",
        IMPDEF,
        "§2.4 (KVM, QEMU do); §7.7",
    )
    pending_cache_entries: int = _knob(
        0,
        "LPIs whose pending state the redistributor may hold internally before writing "
        "it to the pending table (the oldest is written back when more arrive; all on "
        "GICR_WAKER.ProcessorSleep or when EnableLPIs is cleared).  0: the table in "
        "memory is always current",
        f"{IMPDEF}; memory current only after an IMPDEF quiesce",
        "§1.6, §2.4, §7.7 (GIC-500/600 TRMs; QEMU/gem5 write through)",
        maximum=1 << 24,
    )
    pending_state_in_hypervisor: bool = _knob(
        False,
        "a hypervisor's virtual redistributor (KVM): pending LPIs are held in the "
        "hypervisor and written to the guest's pending table only when the VMM saves "
        "the GIC state (Machine.vmm_save_pending_tables); the table is read only when "
        "MAPTI/MAPI creates an LPI (its bit taken and cleared) and at EnableLPIs 0 -> 1 "
        "with PTZ=0 (the bits of mapped LPIs only); clearing EnableLPIs drops them "
        "unwritten, ProcessorSleep writes nothing",
        f"a hypervisor's choice within {IMPDEF}",
        "KVM arch/arm64/kvm/vgic/ (virt/kvm/arm/vgic/ in 4.20), read in Linux 4.20, "
        "5.10.7 and 6.6.9: vgic-v3.c vgic_v3_save_pending_tables() "
        "(KVM_DEV_ARM_VGIC_SAVE_PENDING_TABLES) and vgic_v3_lpi_sync_pending_status() "
        "(from vgic-its.c vgic_add_lpi()); vgic-its.c its_sync_lpi_pending_table() "
        "(vgic_enable_lpis()); vgic-mmio-v3.c vgic_mmio_write_v3r_ctlr() -> "
        "vgic_flush_pending_lpis() on disable",
    )
    pending_first_kb: str = _knob(
        "ignored",
        "what a redistributor does at enable when the IMPDEF first 1 KiB of the pending "
        "table is not zero: 'ignored' (scan the LPI part as usual) or 'table-ignored' "
        "(take the table as holding nothing pending)",
        f"content {IMPDEF}; non-zero at first allocation {UNPRED}",
        "§2.3, §7.8 (all software models ignore it)",
        allowed="ignored | table-ignored",
    )
    ptz_reads_back: bool = _knob(
        False,
        "GICR_PENDBASER.PTZ reads back as written (QEMU) instead of as 0",
        "WO, reads as 0 (QEMU deviates)",
        "§1.5, §7.9",
    )
    equal_priority_lowest_intid: bool = _knob(
        True,
        "among pending LPIs of equal priority the lowest INTID is acknowledged first "
        "(else the highest)",
        IMPDEF,
        "§4.3, §7.19 (QEMU, gem5: lowest)",
    )
    # -- ITS --------------------------------------------------------------------------
    its_error_policy: str = _knob(
        "stall",
        "what the ITS does on a command error: stall the queue (GITS_CREADR.Stalled, "
        "resumed by GITS_CWRITER.Retry) or skip the command and continue",
        f"{IMPDEF} / {CUNPRED}",
        "§3.7, §7.10 (GIC-600 TRM 3.10.2 stalls; QEMU/KVM/gem5 skip)",
        allowed="stall | skip",
    )
    its_table_writes_while_enabled: str = _knob(
        "ignored",
        "writes to GITS_BASER<n>/GITS_CBASER while GITS_CTLR.Enabled=1: 'ignored' or 'accepted'",
        UNPRED,
        "§3.4, §3.5, §7.11 (QEMU/KVM ignore; gem5 accepts)",
        allowed="ignored | accepted",
    )
    its_enable_invalid_tables: str = _knob(
        "zero-sized",
        "enabling the ITS while GITS_CBASER or the device/collection GITS_BASER is not "
        "Valid: 'zero-sized' (enable; lookups in those tables fail) or 'refused' "
        "(Enabled stays 0)",
        UNPRED,
        "§7.12 (QEMU treats the table as zero-sized; KVM refuses)",
        allowed="zero-sized | refused",
    )
    cwriter_out_of_range: str = _knob(
        "queue-invalid",
        "GITS_CWRITER written beyond the queue: 'queue-invalid' (no commands until a valid "
        "value is written) or 'write-ignored'",
        CUNPRED,
        "§3.4, §7.13 (spec's listed choice; KVM ignores the write)",
        allowed="queue-invalid | write-ignored",
    )
    mapti_overwrite: str = _knob(
        "overwrite",
        "MAPTI/MAPI of an EventID that is already mapped: 'overwrite' the ITE or 'ignored'",
        UNPRED,
        "§3.7, §7.14 (KVM ignores the command)",
        allowed="overwrite | ignored",
    )
    move_to_disabled_rdist: str = _knob(
        "nop",
        "MOVI/MOVALL whose target redistributor has EnableLPIs=0: 'nop' (pending state "
        "stays at the source) or 'drop' (pending state at the source is lost)",
        CUNPRED,
        "§3.7, §7.15 (QEMU NOPs; GIC-600AE MOVALL_DST_ENABLE_LPI_OFF drops)",
        allowed="nop | drop",
    )
    itt_entry_size: int = _knob(
        8,
        "bytes per ITT entry (GITS_TYPER.ITT_entry_size + 1); the model's ITE uses the "
        "first 8 bytes and leaves the rest as the implementation's",
        IMPDEF,
        "§3.3, §3.8, §7.16 (KVM 8, QEMU 12, QDF2400 16 per erratum 0065)",
        minimum=8,
        maximum=16,
    )
    device_id_bits: int = _knob(
        16,
        "DeviceID bits (GITS_TYPER.Devbits + 1)",
        IMPDEF,
        "§3.3 (QEMU, KVM: 16)",
        minimum=1,
        maximum=32,
    )
    event_id_bits: int = _knob(
        16,
        "EventID bits (GITS_TYPER.ID_bits + 1)",
        IMPDEF,
        "§3.3 (QEMU, KVM: 16)",
        minimum=1,
        maximum=32,
    )
    collection_id_bits: int = _knob(
        16,
        "Collection ID bits; below 16 reported with GITS_TYPER.CIL=1 and CIDbits",
        IMPDEF,
        "§3.3 (KVM: CIL=0; QEMU: CIL=1, CIDbits=15; GIC-600: CIL=1)",
        minimum=1,
        maximum=16,
    )
    hcc: int = _knob(
        0,
        "GITS_TYPER.HCC: collections held in the ITS (ICID < HCC need no memory; "
        "unmapped at reset, kept across kexec)",
        IMPDEF,
        "§3.3, §7.16 (GIC-600, QEMU, KVM: 0; VirtualBox 255)",
        maximum=255,
    )
    pta: bool = _knob(
        False,
        "GITS_TYPER.PTA: RDbase in commands is the redistributor's physical address >> 16 "
        "(else GICR_TYPER.Processor_Number)",
        IMPDEF,
        "§3.3, §3.7, §7.16 (all models: 0)",
    )
    its_indirect: bool = _knob(
        True,
        "GITS_BASER<n>.Indirect is writable for the device table (two-level tables); else RAZ/WI",
        IMPDEF,
        "§3.5 (QEMU, KVM: yes; gem5, Xen: flat only)",
    )
    its_page_size_64k_only: bool = _knob(
        False,
        "GITS_BASER<n>.Page_Size is fixed at 64 KiB (writes of other sizes read back as 64 KiB)",
        IMPDEF,
        "§3.5 (KVM forces 64 KiB)",
    )
    shareability: bool = _knob(
        True,
        "the Shareability fields of GITS_BASER<n>, GITS_CBASER, GICR_PROPBASER and "
        "GICR_PENDBASER hold what is written (else RAZ/WI, which Linux reads back and "
        "answers with non-cacheable tables)",
        IMPDEF,
        "§3.4, §3.5; Linux its_setup_baser() read-back; Rockchip erratum 3588001",
    )
    translater_high_event_bits: str = _knob(
        "bits-ignored",
        "an EventID written to GITS_TRANSLATER with bits above ID_bits set: "
        "'bits-ignored' (translate the low bits) or 'write-ignored' (drop the MSI)",
        CUNPRED,
        "§3.6, §7.17",
        allowed="bits-ignored | write-ignored",
    )

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _allowed(f: dataclasses.Field[Any], kind: type) -> str:
    if f.metadata["allowed"]:
        return str(f.metadata["allowed"])
    if kind is bool:
        return "true | false"
    hi = f.metadata["maximum"]
    return f"integer {f.metadata['minimum']}..{hi}" if hi is not None else "integer"


_TYPES = typing.get_type_hints(GicKnobs)
_FIELDS = {f.name: f for f in dataclasses.fields(GicKnobs)}

KNOB_INFO: tuple[KnobInfo, ...] = tuple(
    KnobInfo(
        f.name,
        f.metadata["meaning"],
        _allowed(f, bool if _TYPES[f.name] is bool else int if _TYPES[f.name] is int else str),
        f.metadata["status"],
        f.metadata["source"],
        f.default,
    )
    for f in _FIELDS.values()
)


def _check(name: str, value: Any) -> str | None:
    """Why ``value`` is no valid setting of knob ``name`` (None if it is)."""
    f = _FIELDS[name]
    kind = _TYPES[name]
    if kind is bool:
        return None if type(value) is bool else f"knob {name} must be true or false"
    if kind is int:
        if type(value) is not int:
            return f"knob {name} must be an integer"
        lo, hi = f.metadata["minimum"], f.metadata["maximum"]
        if value < lo or (hi is not None and value > hi):
            return f"knob {name} must be in {lo}..{hi}"
        return None
    choices = [c.strip() for c in str(f.metadata["allowed"]).split("|")]
    if value not in choices:
        return (
            f"knob {name} must be one of {', '.join(repr(c) for c in choices)}, not {show(value)}"
        )
    return None


def knobs_with_overrides(base: GicKnobs, overrides: dict[str, Any]) -> GicKnobs:
    """``base`` with some knobs replaced; unknown names or bad values raise ValueError."""
    for name, value in overrides.items():
        if name not in _FIELDS:
            raise ValueError(
                f"unknown GIC knob {clip(name)!r} (known: {', '.join(sorted(_FIELDS))})"
            )
        problem = _check(name, value)
        if problem:
            raise ValueError(problem)
    return dataclasses.replace(base, **overrides)
