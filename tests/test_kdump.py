"""kdump: crashkernel= reservation, panic with MSIs in flight, the capture kernel in its
limited memory, is_kdump_kernel() reuse (even on DT), /proc/vmcore, and the v5.0 __va()
fault on the crashed kernel's memreserve list."""

from __future__ import annotations

import pytest

from gickexec import World
from gickexec.hw.machine import HELD_IN_PBA
from gickexec.kernel.cmdline import CmdlineError, parse_cmdline
from gickexec.scenario.runner import run_scenario
from gickexec.scenario.schema import parse_scenario

_2M = 0x200000


def _world(platform: str = "efi-server-8", seed: int = 1) -> World:
    w = World.build(platform, seed=seed)
    w.add_device("eth0", device_id=0x100, nvec=8)
    return w


def test_crashkernel_is_reserved_below_4g_and_logged() -> None:
    w = _world()
    k = w.boot("v6.6", cmdline="crashkernel=512M")
    assert k.crashkernel is not None
    base, size = k.crashkernel
    assert size == 512 << 20 and base % _2M == 0 and base + size <= 1 << 32
    assert f"crashkernel reserved: 0x{base:016x} - 0x{base + size:016x} (512 MB)" in k.log.lines
    assert k.memblock.is_reserved_range(base, size)
    owner = k.owner(base)
    assert owner is not None and owner.label == "crashkernel region"
    # nothing of the running kernel's GIC tables lies in it
    assert not any(base <= rd.pend_addr < base + size for rd in w.machine.rdists if rd.pend_addr)


@pytest.mark.parametrize("platform", ["efi-server-8", "rk3566-dt"])
def test_capture_kernel_reuses_the_crashed_kernels_tables(platform: str) -> None:
    w = _world(platform)
    first = w.boot("v6.6", cmdline="crashkernel=512M")
    w.traffic("eth0", 64)
    old_pend = {c: w.machine.rdists[c].pend_addr for c in range(first.nr_cpus)}
    cap = w.kdump("v6.6", panic_cpu=2)
    assert cap is not None and cap.is_kdump and cap.entry == "kdump"
    w.traffic("eth0", 64)
    w.finish()
    assert first.crashed == "panic: sysrq triggered crash"
    assert first.log.lines[-4:] == [
        "Kernel panic - not syncing: sysrq triggered crash",
        "SMP: stopping secondary CPUs",
        "Starting crashdump kernel...",
        "Bye!",
    ]
    # boots on the CPU that panicked, which it calls CPU0; nr_cpus=1
    midr = w.platform.midr
    assert cap.log.lines[0] == f"Booting Linux on physical CPU 0x0000000002 [0x{midr:08x}]"
    assert cap.possible_cpus == [2] and cap.online_cpus == [2]
    assert "smp: Brought up 1 node, 1 CPU" in cap.log.lines
    # is_kdump_kernel(): reuse without any reservation evidence, also on DT
    assert cap.reused_tables and not cap.tainted
    assert "GICv3: Using preallocated redistributor tables" in cap.log.lines
    pend_line = f"GICv3: CPU0: using reserved LPI pending table @0x{old_pend[2]:016x}"
    assert pend_line in cap.log.lines
    assert not any("Booted with LPIs enabled" in line for line in cap.log.lines)
    assert w.ledger.lost == 0 and w.ledger.delivered == 128
    assert w.ledger.delivered_per_generation[cap.generation] == 64
    assert {c for d in cap.irqs.values() for c in d.counts} == {2}  # all taken on CPU 2
    assert w.corruption.bits == 0


def test_capture_kernel_lives_in_the_crashkernel_region() -> None:
    w = _world()
    first = w.boot("v6.6", cmdline="crashkernel=512M")
    assert first.crashkernel is not None
    base, size = first.crashkernel
    cap = w.kdump("v6.6")
    assert cap is not None
    assert cap.memory == [(base, base + size)]
    assert cap.image[0] == base
    assert cap.pages is not None
    assert all(base <= s and e <= base + size for s, e in cap.pages.free_ranges())
    assert base <= cap.gic.cmd_base < base + size  # fresh ITS tables in its own memory
    # elfcorehdr at the top of the region, reserved; /proc/vmcore is the rest of RAM
    assert cap.kdump is not None
    hdr, hsize = cap.kdump.elfcorehdr
    # kexec-tools' elfcorehdr segment is the top page; the header itself 1 KiB-rounded
    top = base + size - 0x1000
    assert cap.kdump.segments.elfcorehdr == (top, 0x1000) and hdr == top
    assert hsize == 0x400 and cap.memblock.is_reserved_range(hdr, hsize)
    assert f"OF: fdt: Reserving 1 KiB of memory at 0x{hdr:x} for elfcorehdr" in cap.log.lines
    vmcore = cap.kdump.vmcore
    assert sum(e - s for s, e in vmcore) == w.machine.mem.ram_bytes - size
    assert any(s <= cap.gic.prop_table_pa < e for s, e in vmcore)


def test_msis_in_flight_at_panic_are_lost_on_cpus_the_capture_kernel_never_starts() -> None:
    w = _world()
    w.boot("v6.6", cmdline="crashkernel=512M")
    cap = w.kdump("v6.6", panic_cpu=3, inflight_msis=8)
    assert cap is not None
    w.finish()
    # 8 vectors round-robin over CPUs 0-7: only CPU 3's survives (its pending bit is in
    # the reused table and the re-probed driver gets the same LPI number back)
    assert w.ledger.sent == 8
    assert dict(w.ledger.lost_per_cpu) == {c: 1 for c in range(8) if c != 3}
    assert w.ledger.delivered_per_cpu[3] == 1
    assert all(reason.startswith("stuck pending: LPI disabled") for reason in w.ledger.lost_reasons)


def test_v419_capture_kernel_cannot_use_the_sticky_tables() -> None:
    w = _world("rk3566-dt")
    w.boot("v4.19", cmdline="crashkernel=512M")
    cap = w.kdump("v4.19")
    assert cap is not None and not cap.reused_tables
    w.traffic("eth0", 32)
    w.finish()
    assert w.ledger.lost == 32 and w.ledger.delivered == 0


def test_v50_kdump_kernel_faults_on_the_crashed_kernels_list_with_va() -> None:
    """Jonathan Richardson's report: a v5.0 capture kernel that programs a fresh table
    calls efi_mem_reserve_persistent(), which walks the first kernel's list pages with
    __va(); they are outside the capture kernel's linear map."""
    w = _world()
    w.boot("v5.0", cmdline="crashkernel=512M maxcpus=4")  # CPUs 4-7 never start
    cap = w.kdump("v5.0", cmdline="", panic_cpu=1)
    assert cap is not None
    assert cap.crashed is not None and "__va(" in cap.crashed
    fault = next(i for i, line in enumerate(cap.log.lines) if line.startswith("Unable"))
    assert cap.log.lines[fault].startswith(
        "Unable to handle kernel paging request at virtual address ffff"
    )
    assert (
        cap.log.lines[fault + 1] == "Kernel panic - not syncing: Attempted to kill the idle task!"
    )
    assert (
        cap.log.lines[fault - 1]
        == "GICv3: CPU4: found redistributor 100 region 0:0x0000000030180000"
    )
    w.traffic("eth0", 16)
    w.finish()
    # the panic masked the vectors and no driver unmasked them: the device holds them
    assert w.ledger.delivered == 0 and w.ledger.lost == 0
    assert w.ledger.held_at_device == 16


def test_v52_kdump_kernel_memremaps_the_list_and_appends() -> None:
    w = _world()
    w.boot("v5.2", cmdline="crashkernel=512M maxcpus=4")
    before = w.memreserve_chain()
    assert before is not None and len(before.entries) == 1 + 4
    cap = w.kdump("v5.2", cmdline="", panic_cpu=1)
    assert cap is not None and cap.crashed is None
    after = w.memreserve_chain()
    assert after is not None
    # the four CPUs that never ran in the first kernel got fresh tables, registered into
    # the first kernel's list page (outside the capture kernel's memory)
    assert len(after.entries) == 1 + 8
    assert after.list_nodes[0].addr == before.list_nodes[0].addr
    new = {b for b, _ in after.entries} - {b for b, _ in before.entries}
    assert new == {cap.gic.rd[c].pend_addr for c in range(4, 8)}
    assert all(cap.in_linear_map(b, 0x10000) for b in new)
    assert not cap.in_linear_map(after.list_nodes[0].addr, 16)


def test_panic_without_crashkernel_hangs() -> None:
    w = _world()
    w.boot("v6.6")
    assert w.kdump("v6.6") is None
    assert len(w.generations) == 1
    assert "no crash kernel loaded" in w.notes[-1]
    assert "Starting crashdump kernel..." not in w.generations[0].log.lines
    w.kexec("v6.6")  # a dead kernel cannot kexec
    assert len(w.generations) == 1 and "kexec skipped" in w.notes[-1]


def test_cmdline_parser() -> None:
    c = parse_cmdline("crashkernel=1G maxcpus=2 nr_cpus=4 irqchip.gicv3_nolpi=1")
    assert (c.crashkernel, c.maxcpus, c.nr_cpus, c.gicv3_nolpi) == (1 << 30, 2, 4, True)
    assert str(c) == "crashkernel=1024M maxcpus=2 nr_cpus=4 irqchip.gicv3_nolpi=1"
    for bad in ("crashkernel=lots", "nr_cpus=0", "maxcpus=x"):
        with pytest.raises(CmdlineError):
            parse_cmdline(bad)
    # every other parameter passes through; the ones no kernel knows go to init
    c = parse_cmdline("console=ttyAMA0 quiet rc_stage=1 nokaslr  foo")
    assert c.nokaslr and c.unknown == ("rc_stage=1", "foo")
    assert c.text == "console=ttyAMA0 quiet rc_stage=1 nokaslr  foo"


def test_panic_masks_msix_vectors_at_the_device_as_well_as_the_lpis() -> None:
    """machine_kexec_mask_interrupts() -> its_mask_msi_irq(): pci_msi_mask_irq() sets the
    vector's mask bit, irq_chip_mask_parent() clears the LPI's enable bit.  Only writes
    already posted reach the ITS after the panic; the device raises nothing new."""
    w = _world()
    w.boot("v6.6", cmdline="crashkernel=512M")
    k0 = w.kernel
    dev = w.machine.devices["eth0"]
    k0.crash_shutdown("test")
    assert all(v.masked for v in dev.vectors)
    assert not any(dev.can_signal(vec) for vec in range(dev.nvec))
    result = w.machine.signal_msi(dev, 0)
    assert result.outcome == HELD_IN_PBA and result.cpu is None  # held, not sent
    assert dev.vectors[0].pending
    posted = w.machine.signal_msi(dev, 0, posted=True)
    assert posted.pended  # the LPI is disabled, so it stays pending
    rd = w.machine.rdists[posted.cpu]
    assert posted.intid is not None and not rd.config(posted.intid).Enable


def test_events_on_masked_vectors_wait_in_the_pba_for_the_capture_kernels_driver() -> None:
    """MSI-X per-vector masking: events raised after the panic masked the vectors set
    the vectors' Pending Bit Array bits instead of being sent; the capture kernel's
    driver programs and unmasks each vector, and the device then sends one message per
    pending vector, which that kernel handles.  Before, they were counted lost."""
    w = _world()
    w.boot("v6.6", cmdline="crashkernel=512M")
    w.traffic("eth0", 8)
    dev = w.machine.devices["eth0"]
    assert dev.nvec == 8 and list(w.machine.devices) == ["eth0"]
    cap = w.kdump("v6.6", masked_msis=16)  # two events on each vector
    assert cap is not None and cap.crashed is None
    assert not any(v.pending for v in dev.vectors)  # sent when unmasked
    w.traffic("eth0", 8)
    w.finish()
    assert w.ledger.sent == 8 + 16 + 8
    assert w.ledger.held_at_device == 0 and w.ledger.lost == 0
    assert w.ledger.delivered == w.ledger.sent
    # one message per pending vector: 8 interrupts stand for the 16 held events
    assert sum(sum(d.counts.values()) for d in cap.irqs.values()) == 8 + 8



def test_verdict_reports_events_held_at_the_device_apart_from_lost() -> None:
    """A v5.0 capture kernel dies before its driver unmasks anything: the events raised
    after the panic stay in the device's Pending Bit Array; the JSON verdict counts them
    as held_at_device, and `sent == delivered + lost + held_at_device`."""
    scenario = parse_scenario(
        """\
platform = "efi-server-8"

[[devices]]
name = "eth0"
device_id = 0x100
vectors = 2

[[steps]]
action = "boot"
kernel = "v5.0"
cmdline = "crashkernel=512M maxcpus=4"

[[steps]]
action = "kdump"
kernel = "v5.0"
cmdline = ""
panic_cpu = 1
masked_msis = 5
"""
    )
    result = run_scenario(scenario)
    m = result["msis"]
    assert (m["sent"], m["delivered"], m["lost"], m["held_at_device"]) == (5, 0, 0, 5)
    # never delivered: the health verdict says so instead of calling the run healthy
    assert not result["health"]["healthy"]
    summaries = [p["summary"] for p in result["health"]["problems"] if p["kind"] == "lost"]
    assert "5 of 5 MSI events still held at the device (vector masked, never unmasked)" in (
        summaries
    )


def test_unmask_sends_a_held_message_only_with_msix_on() -> None:
    """Machine.msix_unmask(): with MSI-X off (after a driver's .remove) the PBA bit the
    panic left stays and nothing is sent; a reset (power-on) clears it."""
    w = _world()
    w.boot("v6.6", cmdline="crashkernel=512M")
    w.kernel.crash_shutdown("test")
    dev = w.machine.devices["eth0"]
    assert w.machine.signal_msi(dev, 1).outcome == HELD_IN_PBA
    dev.msix_enabled = False
    assert w.machine.msix_unmask(dev, 1) is None and dev.vectors[1].pending
    dev.msix_enabled = True
    dev.vectors[1].masked = True
    sent = w.machine.msix_unmask(dev, 1)
    assert sent is not None and sent.pended and not dev.vectors[1].pending
    w.machine.signal_msi(dev, 2)
    w.machine.power_on()
    assert not dev.vectors[2].pending and dev.vectors[2].masked
