"""Xen dom0 without a MEMRESERVE table, maxcpus= and CPU hotplug, irqchip.gicv3_nolpi=1."""

from __future__ import annotations

from gickexec import World


def _world(platform: str = "efi-server-8", seed: int = 1) -> World:
    w = World.build(platform, seed=seed)
    w.add_device("eth0", device_id=0x100, nvec=8)
    return w


def test_xen_dom0_every_reservation_warns_with_enodev() -> None:
    w = _world("xen-guest")
    k = w.boot("v5.14")  # Leo Yan's report: Xen 4.16, Linux 5.15
    w.finish()
    assert w.memreserve_chain() is None
    assert k.efi is not None and k.efi.config_tables and k.efi.memreserve_root == -1
    warnings = [line for line in k.log.lines if line.startswith("WARNING:")]
    # the property table from its_init, then each CPU's pending table from STARTING
    assert warnings[0] == "WARNING: CPU: 0 PID: 0 at drivers/irqchip/irq-gic-v3-its.c its_init"
    assert warnings[1:] == [
        f"WARNING: CPU: {c} PID: 0 at drivers/irqchip/irq-gic-v3-its.c its_cpu_init"
        for c in range(k.nr_cpus)
    ]
    assert k.log.taints == {"W"}


def test_xen_dom0_v66_warns_from_the_online_callback() -> None:
    w = _world("xen-guest")
    k = w.boot("v6.6")
    funcs = [line.rsplit(" ", 1)[1] for line in k.log.lines if line.startswith("WARNING:")]
    assert funcs == ["its_init"] + ["its_cpu_memreserve_lpi"] * k.nr_cpus


def test_maxcpus_leaves_cpus_offline_and_their_tables_unregistered() -> None:
    w = _world()
    k = w.boot("v6.6", cmdline="maxcpus=4")
    assert k.online_cpus == [0, 1, 2, 3]
    assert "smp: Brought up 1 node, 4 CPUs" in k.log.lines
    assert [w.machine.rdists[c].ctlr().EnableLPIs for c in range(8)] == [1] * 4 + [0] * 4
    chain = w.memreserve_chain()
    assert chain is not None and len(chain.entries) == 1 + 4
    # pending tables were allocated for every possible CPU, registered only when online
    assert all(k.gic.rd[c].pend_page is not None for c in range(8))


def test_hotplugged_cpu_is_registered_then_survives_kexec_into_fewer_cpus() -> None:
    w = _world()
    w.boot("v5.10", cmdline="maxcpus=4")
    w.cpu_up(6)
    w.cpu_down(2)  # offline: its redistributor keeps LPIs on
    assert w.machine.rdists[2].ctlr().EnableLPIs and w.machine.rdists[6].ctlr().EnableLPIs
    first = w.generations[0]
    assert "CPU2: shutdown" in first.log.lines
    assert all(d.cpu != 2 for d in first.irqs.values())  # vectors moved off CPU 2
    w.traffic("eth0", 40)
    chain = w.memreserve_chain()
    assert chain is not None and len(chain.entries) == 1 + 5  # CPUs 0-3 and 6
    second = w.kexec("v5.10", cmdline="maxcpus=2")
    w.traffic("eth0", 40)
    w.finish()
    assert second.reused_tables and not second.tainted
    assert second.online_cpus == [0, 1]
    # CPUs 2 and 6 never start again but keep LPIs on: their tables stay reserved
    for cpu in (2, 6):
        pend = w.machine.rdists[cpu].pend_addr
        assert pend is not None and second.memblock.is_reserved_range(pend, 0x10000)
    assert (w.ledger.lost, w.corruption.bits) == (0, 0)


def test_cpu_hotplug_errors_are_notes() -> None:
    w = _world()
    w.boot("v6.6", cmdline="nr_cpus=2")
    w.cpu_up(5)
    w.cpu_down(0)
    assert w.notes == [
        "cpu-up 5: CPU 5 is not possible in this kernel (nr_cpus=2)",
        "cpu-down 0: CPU 0 is the boot CPU (not hot-pluggable in the model)",
    ]


def test_gicv3_nolpi_leaves_the_previous_tables_alone_on_dt() -> None:
    """The rk3566 workaround: no 'Booted with LPIs enabled' / 'Failed to disable LPIs',
    no taint; the devices get no MSIs."""
    w = _world("rk3566-dt")
    w.boot("v6.6")
    w.traffic("eth0", 16)
    second = w.kexec("v6.6", cmdline="irqchip.gicv3_nolpi=1")
    w.traffic("eth0", 16)
    w.finish()
    assert not second.gic.its_ok and not second.tainted
    assert not any("LPI" in line for line in second.log.lines)
    assert second.irqs == {}
    assert w.ledger.delivered == 16
    assert w.ledger.lost_reasons == {
        "dropped: device not allowed to signal (MSI-X off or no bus master)": 16
    }
