"""printk formatting and the kernel's message strings (Linux v4.19.1 to v6.1 sources, the
real 6.1 runs)."""

from __future__ import annotations

import dataclasses

import pytest

from gickexec import World
from gickexec.hw.platform import PLATFORMS
from gickexec.kernel import printk
from gickexec.kernel.printk import KernelLog, kformat, pa


@pytest.mark.parametrize(
    ("fmt", "args", "expected"),
    [
        ("CPU%d", (3,), "CPU3"),
        ("%d SPIs", (-1,), "-1 SPIs"),
        ("CPU%u:", (7,), "CPU7:"),
        ("%x", (0xABC,), "abc"),
        ("@%lx", (0x92A170000,), "@92a170000"),
        ("[%016llx]", (0xFD460000,), "[00000000fd460000]"),
        ("0x%010lx", (0x101,), "0x0000000101"),
        ("[0x%08x]", (0x413FD0C1,), "[0x413fd0c1]"),
        ("by %s", ("EDK II",), "by EDK II"),
        ("100%% of %d", (5,), "100% of 5"),
        ("@%pa", (0x9FC0480000,), "@0x0000009fc0480000"),
        ("v%u.%.02u", (2, 7), "v2.07"),
        ("no conversions", (), "no conversions"),
    ],
)
def test_kformat_conversions(fmt: str, args: tuple[object, ...], expected: str) -> None:
    assert kformat(fmt, *args) == expected


def test_pa_prints_0x_and_16_hex_digits() -> None:
    # A line of the real 6.1 dmesg (tests/data/realcheck).
    assert pa(0x9FC0480000) == "0x0000009fc0480000"
    assert pa(0) == "0x0000000000000000"
    assert pa(0xFFFF_FFFF_FFFF_FFFF) == "0xffffffffffffffff"


def test_kformat_reproduces_the_quoted_kdump_dmesg() -> None:
    assert (
        kformat(printk.ITS_PROP_TABLE, 0x9FC0480000)
        == "GICv3: using LPI property table @0x0000009fc0480000"
    )
    assert (
        kformat(printk.ITS_PEND_TABLE, 0, "reserved", 0x9FC0630000)
        == "GICv3: CPU0: using reserved LPI pending table @0x0000009fc0630000"
    )
    assert (
        kformat(printk.ITS_PEND_TABLE, 0, "allocated", 0xA3C3860000)
        == "GICv3: CPU0: using allocated LPI pending table @0x000000a3c3860000"
    )


def test_kformat_mixed_pa_and_integers() -> None:
    line = kformat(printk.ITS_EXPECTED_RESERVED, 0xDB2F0000, 0xDB2FFFFF)
    assert line == (
        "GICv3: Expected reserved range [0x00000000db2f0000:0x00000000db2fffff], not found"
    )


def test_kformat_too_many_arguments_raises() -> None:
    with pytest.raises(ValueError, match="too many arguments"):
        kformat("CPU%d", 1, 2)
    with pytest.raises(ValueError, match="too many arguments"):
        kformat("plain", 1)


# Linux v6.1 drivers/irqchip/irq-gic-v3-its.c and irq-gic-v3.c, verbatim without the
# trailing "\n".
KERNEL_STRINGS = {
    "ITS_PREALLOCATED": "GICv3: Using preallocated redistributor tables",
    "ITS_PROP_TABLE": "GICv3: using LPI property table @%pa",
    "ITS_PEND_TABLE": "GICv3: CPU%d: using %s LPI pending table @%pa",
    "ITS_EXPECTED_RESERVED": "GICv3: Expected reserved range [%pa:%pa], not found",
    "ITS_NO_LPIS": "CPU%d: LPIs not supported",
    "ITS_TIMEOUT_DISABLE": "CPU%d: Timeout while disabling LPIs",
    "ITS_FAILED_DISABLE": "CPU%d: Failed to disable LPIs",
    "ITS_ALLOCATED": "ITS@%pa: allocated %d %s @%lx (%s, esz %d, psz %dK, shr %d)",
}


@pytest.mark.parametrize(("name", "kernel_string"), sorted(KERNEL_STRINGS.items()))
def test_message_constants_are_the_kernel_strings(name: str, kernel_string: str) -> None:
    assert getattr(printk, name) == kernel_string


_BOOTED = "Booted with LPIs enabled, memory probably corrupted"


@pytest.mark.parametrize(
    ("msg", "version", "text"),
    [
        # Linux v4.19.1 redist_disable_lpis(): no prefix; v4.20 writes "GICv3: " in
        (printk.ITS_BOOTED_ENABLED, (4, 19), "CPU%d: " + _BOOTED),
        (printk.ITS_BOOTED_ENABLED, (4, 20), "GICv3: CPU%d: " + _BOOTED),
        # v4.19.1 its_wait_for_range_completion(); a050fa5476d4 drops from_idx
        (printk.ITS_QUEUE_TIMEOUT, (4, 19), "ITS queue timeout (%llu %llu %llu)"),
        (printk.ITS_QUEUE_TIMEOUT, (6, 1), "ITS queue timeout (%llu %llu)"),
        (printk.GIC_UNEXPECTED, (5, 17), "Unexpected interrupt received!"),
        (printk.GIC_UNEXPECTED, (6, 1), "Unexpected interrupt (irqnr %u)"),
    ],
)
def test_versioned_messages_follow_the_source_of_each_version(
    msg: printk.Msg, version: tuple[int, int], text: str
) -> None:
    assert msg.at(version) == text


# Each boundary as read in single-release trees: (message, last version read that prints
# the earlier form, first version read that prints the later form, earlier, later).
_BOUNDARIES = [
    # arch/arm64/kernel/psci.c cpu_psci_cpu_kill(): 5.3.1 / 5.4.214
    (printk.PSCI_KILLED, (5, 3), (5, 4), None, "psci: CPU%d killed (polled %d ms)"),
    (printk.PSCI_KILLED_OLD, (5, 3), (5, 4), "psci: CPU%d killed.", None),
    # init/main.c print_unknown_bootoptions(): 5.14-rc5 / 5.15.55
    (
        printk.UNKNOWN_PARAMS,
        (5, 14),
        (5, 15),
        None,
        'Unknown kernel command line parameters "%s", will be passed to user space.',
    ),
    # arch/arm64/kernel/irq.c set_handle_irq(): 5.12.9 / 5.14-rc5
    (printk.ROOT_IRQ, (5, 12), (5, 14), None, "Root IRQ handler: %s"),
    # drivers/firmware/efi/efi.c efi_get_fdt_params() 5.6.4 / fdtparams.c 5.7.14
    (printk.EFI_FROM_FDT, (5, 6), (5, 7), "efi: Getting EFI parameters from FDT:", None),
    # arm64 reserve_elfcorehdr() 5.14-rc5 / drivers/of/fdt.c fdt_reserve_elfcorehdr() 5.15.55
    (
        printk.ELFCOREHDR_RESERVED,
        (5, 14),
        (5, 15),
        "Reserving %lldKB of memory at 0x%llx for elfcorehdr",
        "OF: fdt: Reserving %llu KiB of memory at 0x%llx for elfcorehdr",
    ),
    # arch/arm64/kernel/traps.c __die(): 6.0-rc1 / 6.2.12
    (
        printk.OOPS_INTERNAL,
        (6, 0),
        (6, 2),
        "Internal error: %s: %x [#%d] PREEMPT SMP",
        "Internal error: %s: %016lx [#%d] PREEMPT SMP",
    ),
    # arch/arm64/kernel/smp.c __cpu_die(): pr_notice 5.12.9 / pr_debug 5.14-rc5
    (printk.CPU_KILLED, (5, 12), (5, 14), "CPU%u: shutdown", None),
    # efi_systab_report_header(): 6.2.12 / 6.3.8
    (printk.EFI_BY, (6, 2), (6, 3), "efi: EFI v%u.%.02u by %s", "efi: EFI v%u.%u by %s"),
    # efi_config_parse_tables(): 5.7.14 / 5.8.1
    (printk.EFI_CFG_ENTRY, (5, 7), (5, 8), " %s=0x%lx ", "%s=0x%lx "),
    # gic_init_bases(): 5.3.1 / 5.4.214
    (printk.GIC_SPIS, (5, 3), (5, 4), None, "GICv3: %d SPIs implemented"),
    (printk.GIC_ESPIS, (5, 3), (5, 4), None, "GICv3: %d Extended SPIs implemented"),
    (printk.GIC_PPIS, (5, 3), (5, 4), None, "GICv3: %d PPIs implemented"),
    # gic_update_rdist_properties(): 5.5-rc5 / 5.6.4 / 5.7.14; 5.18.12 / 5.19
    (
        printk.GIC_VLPI,
        (5, 5),
        (5, 6),
        "GICv3: %sVLPI support, %sdirect LPI support",
        None,
    ),
    (
        printk.GIC_VLPI_RVPEID,
        (5, 5),
        (5, 6),
        None,
        "GICv3: %sVLPI support, %sdirect LPI support, %sRVPEID support",
    ),
    (
        printk.GIC_VLPI_RVPEID,
        (5, 6),
        (5, 7),
        "GICv3: %sVLPI support, %sdirect LPI support, %sRVPEID support",
        None,
    ),
    (printk.GIC_PPIS, (5, 18), (5, 19), "GICv3: %d PPIs implemented", None),
    (
        printk.GIC_RSS,
        (5, 18),
        (5, 19),
        "GICv3: Distributor has %sRange Selector support",
        None,
    ),
    (printk.GIC_FEATURES, (5, 18), (5, 19), None, "GICv3: GICv3 features: %d PPIs%s%s"),
    # gic_handle_irq() WARN_ONCE(): 5.17-rc5 / 5.18.12
    (
        printk.GIC_UNEXPECTED,
        (5, 17),
        (5, 18),
        "Unexpected interrupt received!",
        "Unexpected interrupt (irqnr %u)",
    ),
    # its_wait_for_range_completion(): 5.0.1 / 5.2.1
    (
        printk.ITS_QUEUE_TIMEOUT,
        (5, 0),
        (5, 2),
        "ITS queue timeout (%llu %llu %llu)",
        "ITS queue timeout (%llu %llu)",
    ),
]


@pytest.mark.parametrize(("msg", "before", "after", "old", "new"), _BOUNDARIES)
def test_version_boundaries_as_read_in_the_release_trees(
    msg: printk.Msg,
    before: tuple[int, int],
    after: tuple[int, int],
    old: str | None,
    new: str | None,
) -> None:
    assert msg.at(before) == old
    assert msg.at(after) == new


def _gic_init_lines(profile: str) -> list[str]:
    w = World.build("qemu-virt", seed=1)
    k = w.boot(profile)
    return [line for line in k.log.lines if line.startswith(("GICv3: ", "Root IRQ"))][:8]


def test_gic_init_bases_lines_of_v5_5_v5_17_and_v6_1() -> None:
    """5.5: counts, the RSS line, then the PPI count and the VLPI line; 5.17: the root
    handler after the RSS line, no VLPI line for a GIC without VLPIs; 6.1: the features
    line instead of the PPI count and the RSS line (as the real 6.1 runs print)."""
    assert _gic_init_lines("v5.5")[:5] == [
        "GICv3: 224 SPIs implemented",
        "GICv3: 0 Extended SPIs implemented",
        "GICv3: Distributor has no Range Selector support",
        "GICv3: 16 PPIs implemented",
        "GICv3: no VLPI support, no direct LPI support",
    ]
    assert _gic_init_lines("v5.17")[:5] == [
        "GICv3: 224 SPIs implemented",
        "GICv3: 0 Extended SPIs implemented",
        "GICv3: Distributor has no Range Selector support",
        "Root IRQ handler: gic_handle_irq",
        "GICv3: 16 PPIs implemented",
    ]
    assert _gic_init_lines("v6.1")[:4] == [
        "GICv3: 224 SPIs implemented",
        "GICv3: 0 Extended SPIs implemented",
        "Root IRQ handler: gic_handle_irq",
        "GICv3: GICv3 features: 16 PPIs",
    ]


def test_taint_letters() -> None:
    # TAINT_CRAP is 'C', WARN_ON adds 'W' (kernel/panic.c taint_flags[]).
    assert printk.TAINT_CRAP == "C"
    assert printk.TAINT_WARN == "W"


def test_kernel_log_printk_warn_and_taints() -> None:
    log = KernelLog()
    log.printk(printk.ITS_FAILED_DISABLE, 2)
    log.add_taint(printk.TAINT_CRAP)
    log.warn(1, 0, "drivers/irqchip/irq-gic-v3-its.c", "its_cpu_init")
    assert log.lines == [
        "CPU2: Failed to disable LPIs",
        "------------[ cut here ]------------",
        "WARNING: CPU: 1 PID: 0 at drivers/irqchip/irq-gic-v3-its.c its_cpu_init",
    ]
    assert log.taints == {"C", "W"}
    assert log.taint_string == "CW"


def test_v419_gic_lines_in_v419_order() -> None:
    """v4.19.1 gic_init_bases(): no SPI count, the VLPI line, its_init() before
    gic_cpu_init(); v6.1 the SPI count, no VLPI line, the ITS after the redistributor."""
    def gic_lines(profile: str) -> list[str]:
        w = World.build("qemu-virt", seed=1)
        k = w.boot(profile)
        keep = ("GICv3: ", "GIC: ", "ITS ", "CPU0: ")
        return [line for line in k.log.lines if line.startswith(keep)]

    old = gic_lines("v4.19")
    assert not any("SPIs implemented" in line for line in old)
    assert "GICv3: no VLPI support, no direct LPI support" in old
    found = old.index("GICv3: CPU0: found redistributor 0 region 0:0x00000000080a0000")
    assert old.index("GIC: using LPI property table @0x" + old[found - 1][-16:]) < found
    assert old[found + 1].startswith("CPU0: using LPI pending table @0x")
    new = gic_lines("v6.1")
    assert new[0] == "GICv3: 224 SPIs implemented"
    assert not any("VLPI" in line for line in new)
    found = new.index("GICv3: CPU0: found redistributor 0 region 0:0x00000000080a0000")
    assert new[found + 1].startswith("ITS [mem 0x08080000-0x0809ffff]")


@pytest.mark.parametrize("profile", ["v4.19", "v6.1"])
def test_cache_flushing_lines_when_shareability_does_not_stick(profile: str) -> None:
    """its_probe_one() and its_cpu_init_lpis() (pr_info_once) read the Shareability back:
    a GIC with RAZ/WI Shareability gets the two "cache flushing" lines, once each."""
    base = PLATFORMS["qemu-virt"]
    plat = base.with_knobs(dataclasses.replace(base.knobs, shareability=False))
    lines = World.build(plat, seed=1).boot(profile).log.lines
    assert lines.count("ITS: using cache flushing for cmd queue") == 1
    assert lines.count("GIC: using cache flushing for LPI property table") == 1
    plain = World.build("qemu-virt", seed=1).boot(profile).log.lines
    assert not any("cache flushing" in line for line in plain)


def test_invalid_dtb_message_is_setup_machine_fdt_pr_crit_line_by_line() -> None:
    # v4.19.1 arch/arm64/kernel/setup.c: pr_crit("\nError: ...%pa (virtual address 0x%p)\n"
    # "The dtb must be ...\n" "\nPlease check your bootloader.")
    lines = [kformat(x, 0x4800_0000) if "%" in x else x for x in printk.DTB_INVALID]
    assert lines == [
        "",
        "Error: invalid device tree blob at physical address 0x0000000048000000 "
        "(virtual address 0x(____ptrval____))",
        "The dtb must be 8-byte aligned and must not exceed 2 MB in size",
        "",
        "Please check your bootloader.",
    ]
