"""Every IMPLEMENTATION DEFINED or UNPREDICTABLE choice of the GIC model, in one place.

Each knob has a name, a meaning, its allowed values, its status in the architecture
and the source that says real implementations differ (``gic-architecture.md`` §7 items).
Devices read their behaviour from a :class:`GicKnobs` value and nowhere else.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["KNOB_INFO", "GicKnobs", "KnobInfo", "knobs_with_overrides"]

ItsErrorPolicy = Literal["skip", "stall"]


@dataclass(frozen=True, slots=True)
class GicKnobs:
    """The GIC implementation's choices where the architecture leaves one."""

    enable_lpis_clearable: bool = False
    report_ces: bool = False
    base_writes_ignored_while_enabled: bool = True
    rwp_clear_after_reads: int = 1
    config_cache: bool = True
    equal_priority_lowest_intid: bool = True
    its_error_policy: ItsErrorPolicy = "stall"
    scan_pending_table_on_enable: bool = True

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, slots=True)
class KnobInfo:
    name: str
    meaning: str
    allowed: str
    status: str
    source: str


KNOB_INFO: tuple[KnobInfo, ...] = (
    KnobInfo(
        "enable_lpis_clearable",
        "GICR_CTLR.EnableLPIs can be written back to 0 once set (else it is RES1 once set)",
        "true | false",
        "IMPLEMENTATION DEFINED (GICv3.0/4.0); RES1-once-set deprecated later",
        "gic-architecture.md §0, §7 item 1; Linux redist_disable_lpis() comment",
    ),
    KnobInfo(
        "report_ces",
        "GICR_CTLR.CES reads as 1 (the redistributor says EnableLPIs is clearable)",
        "true | false",
        "RO, 0 means 'not indicated'",
        "gic-architecture.md §1.2, §7 item 2",
    ),
    KnobInfo(
        "base_writes_ignored_while_enabled",
        "writes to GICR_PROPBASER/GICR_PENDBASER while EnableLPIs=1 are ignored "
        "(else the register takes the value but the redistributor keeps using the tables "
        "it latched when LPIs were enabled)",
        "true | false",
        "UNPREDICTABLE",
        "gic-architecture.md §1.5, §7 item 3 (KVM/Xen ignore; QEMU accepts)",
    ),
    KnobInfo(
        "rwp_clear_after_reads",
        "GICR_CTLR.RWP stays 1 for this many reads after EnableLPIs goes 1 -> 0",
        "integer >= 0",
        "timing is IMPLEMENTATION DEFINED",
        "gic-architecture.md §1.2, §7 item 4",
    ),
    KnobInfo(
        "config_cache",
        "the redistributor caches LPI configuration bytes; changes are seen only after "
        "INV/INVALL (else every arrival re-reads the property table)",
        "true | false",
        "IMPLEMENTATION DEFINED",
        "gic-architecture.md §2.4, §7 item 6",
    ),
    KnobInfo(
        "equal_priority_lowest_intid",
        "among pending LPIs of equal priority the lowest INTID is acknowledged first "
        "(else the highest)",
        "true | false",
        "IMPLEMENTATION DEFINED",
        "gic-architecture.md §4.3, §7 item 19 (QEMU, gem5: lowest)",
    ),
    KnobInfo(
        "its_error_policy",
        "what the ITS does on a command error: stall the queue (GITS_CREADR.Stalled) or "
        "skip the command and continue",
        "stall | skip",
        "IMPLEMENTATION DEFINED / CONSTRAINED UNPREDICTABLE",
        "gic-architecture.md §3.7, §7 item 10 (GIC-600 stalls; QEMU/KVM skip)",
    ),
    KnobInfo(
        "scan_pending_table_on_enable",
        "on EnableLPIs 0 -> 1 with PTZ=0 the redistributor reads the pending table to "
        "learn pending LPIs",
        "true | false",
        "IMPLEMENTATION DEFINED",
        "gic-architecture.md §2.4 (KVM, QEMU do)",
    ),
)

assert {k.name for k in KNOB_INFO} == {f.name for f in dataclasses.fields(GicKnobs)}


def knobs_with_overrides(base: GicKnobs, overrides: dict[str, Any]) -> GicKnobs:
    """``base`` with some knobs replaced; unknown names or wrong types raise ValueError."""
    fields = {f.name: f for f in dataclasses.fields(GicKnobs)}
    for name, value in overrides.items():
        if name not in fields:
            raise ValueError(f"unknown GIC knob {name!r} (known: {', '.join(sorted(fields))})")
        default = getattr(base, name)
        if name == "its_error_policy":
            if value not in ("skip", "stall"):
                raise ValueError(f"knob its_error_policy must be 'stall' or 'skip', not {value!r}")
        elif type(value) is not type(default):
            raise ValueError(
                f"knob {name} must be {type(default).__name__}, not {type(value).__name__}"
            )
        elif isinstance(value, int) and not isinstance(value, bool) and value < 0:
            raise ValueError(f"knob {name} must be >= 0")
    return dataclasses.replace(base, **overrides)
