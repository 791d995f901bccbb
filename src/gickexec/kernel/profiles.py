"""Kernel profiles: which Linux behaviours a kernel version has, each with its source.

Behaviour is selected by feature flags, never by comparing version numbers (drgn's rule,
aesthetics.md P9).  Each flag that differs between profiles cites the upstream change in
the form ``Linux commit <hash> ("<subject>") (v<version>)``; where the research could not
pin a hash or version, the citation says so.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

from gickexec.fw.memreserve import MemreserveLayout

__all__ = ["FEATURE_SOURCES", "PROFILES", "KernelProfile", "get_profile"]

# Where each feature flag comes from.  Keys are KernelProfile field names.
FEATURE_SOURCES: dict[str, str] = {
    "reuses_preallocated_lpi_tables": (
        'Linux commit (v4.20 series patch 6) ("irqchip/gic-v3-its: Allow use of '
        'pre-programmed LPI tables") (v4.20); kdump reuse: patch 7 ("Use pre-programmed '
        'redistributor tables with kdump kernels") (v4.20)'
    ),
    "registers_lpi_tables_with_efi": (
        'Linux commit (v4.20 series patch 9) ("irqchip/gic-v3-its: Register LPI tables with '
        'EFI config table") (v4.20)'
    ),
    "memreserve_layout": (
        'Linux commit 71e0940d52e1 ("efi: honour memory reservations passed via a linux '
        'specific config table") (v4.20); Linux commit 80424b02d42b ("efi: Reduce the amount '
        'of memblock reservations for persistent allocations") (v5.0)'
    ),
    "efi_stub_installs_memreserve_root": (
        'Linux commit (Ard Biesheuvel, 2018-09-21) ("efi/arm: libstub: add a root memreserve '
        'config table") (v4.20)'
    ),
    "memreserve_node_bytes": (
        'Linux commit 18df7577adae ("efi/memreserve: deal with memreserve entries in unmapped '
        'memory") (v5.2): nodes sized SZ_4K and memremap()ed'
    ),
    "memreserve_in_iomem": (
        "Linux commit ab0eb16205b4 (\"efi/memreserve: Register reservations as 'reserved' in "
        '/proc/iomem") (v5.5)'
    ),
    "pending_memreserve_at_online": (
        'Linux commit d23bc2bc1d63 ("irqchip/gic-v3-its: Postpone LPI pending table freeing '
        'and memreserve") (v5.17)'
    ),
    "its_reset_baser_before_probe": (
        "Linux commit (Marc Zyngier, 2022-01) (\"irqchip/gic-v3-its: Reset each ITS's BASERn "
        'register before probe") (v5.17; hash not confirmed)'
    ),
    "checks_lpi_disable": (
        "redist_disable_lpis() with the RWP wait and EnableLPIs read-back; before the v4.20 "
        "series its_cpu_init_lpis() cleared EnableLPIs blindly and reprogrammed the tables "
        "(pre-4.20 irq-gic-v3-its.c read in a public copy; the exact version of Shanker "
        "Donthineni's RWP patch is UNCONFIRMED)"
    ),
    "printk_era": (
        "message formats that changed without behaviour: 'efi: EFI v2.70 by' and ' %s=0x%lx ' "
        "(EFI-5.1) versus 'EFI v2.7 by' and '%s=0x%lx ' (EFI-6.2); 'Unexpected interrupt "
        "received!' (handle_domain_irq era) versus 'Unexpected interrupt (irqnr %u)' "
        "(generic_handle_domain_irq era, v5.17+; reconstructed, UNCONFIRMED)"
    ),
}


@dataclass(frozen=True, slots=True)
class KernelProfile:
    """The behaviours of one kernel version that matter to LPI tables across kexec."""

    name: str
    release: str
    description: str
    #: Allocate-or-reuse logic of the v4.20 series (allocate_lpi_tables and friends).
    reuses_preallocated_lpi_tables: bool
    #: gic_reserve_range() -> efi_mem_reserve_persistent() for the GIC tables.
    registers_lpi_tables_with_efi: bool
    #: Which memreserve layout efi_config_parse_tables() reads (None: table unknown).
    memreserve_layout: MemreserveLayout | None
    efi_stub_installs_memreserve_root: bool
    memreserve_node_bytes: int
    memreserve_in_iomem: bool
    pending_memreserve_at_online: bool
    its_reset_baser_before_probe: bool
    checks_lpi_disable: bool
    printk_era: Literal["classic", "modern"]
    notes: tuple[str, ...] = field(default=())

    def source(self, feature: str) -> str:
        return FEATURE_SOURCES[feature]


_V4_19 = KernelProfile(
    name="v4.19",
    release="4.19.0",
    description="before the kexec fix: fresh LPI tables every boot, nothing reserved",
    reuses_preallocated_lpi_tables=False,
    registers_lpi_tables_with_efi=False,
    memreserve_layout=None,
    efi_stub_installs_memreserve_root=False,
    memreserve_node_bytes=4096,
    memreserve_in_iomem=False,
    pending_memreserve_at_online=False,
    its_reset_baser_before_probe=False,
    checks_lpi_disable=False,
    printk_era="classic",
)

# Each later profile is the earlier one plus what changed, so a reader sees the deltas.
_V5_10 = dataclasses.replace(
    _V4_19,
    name="v5.10",
    release="5.10.0",
    description="the fix with v5.0 memreserve nodes; pending tables reserved at STARTING",
    reuses_preallocated_lpi_tables=True,
    registers_lpi_tables_with_efi=True,
    memreserve_layout="v5.0",
    efi_stub_installs_memreserve_root=True,
    memreserve_in_iomem=True,
    checks_lpi_disable=True,
)

_V6_6 = dataclasses.replace(
    _V5_10,
    name="v6.6",
    release="6.6.0",
    description="current: pending tables reserved from the CPUHP online callback",
    pending_memreserve_at_online=True,
    its_reset_baser_before_probe=True,
    printk_era="modern",
)

PROFILES: dict[str, KernelProfile] = {p.name: p for p in (_V4_19, _V5_10, _V6_6)}


def get_profile(name: str) -> KernelProfile:
    try:
        return PROFILES[name]
    except KeyError:
        raise KeyError(f"unknown kernel profile {name!r} (known: {', '.join(PROFILES)})") from None
