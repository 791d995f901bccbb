"""Driver unbind/bind through sysfs: .remove (DISCARD, MAPD V=0) and a fresh probe."""

from __future__ import annotations

from gickexec import World
from gickexec.scenario.runner import run_scenario
from gickexec.scenario.schema import ScenarioError, parse_scenario


def _world() -> World:
    w = World.build("efi-server-8", seed=3)
    w.add_device("eth0", device_id=0x100, nvec=4)
    w.boot("v6.6")
    return w


def test_unbind_loses_msis_and_bind_brings_new_lpis() -> None:
    w = _world()
    w.traffic("eth0", 8)
    before = {v: w.kernel.irq_of_vector[("eth0", v)].hwirq for v in range(4)}
    w.unbind("eth0")
    assert not w.kernel.irq_of_vector and not w.kernel.irqs
    dev = w.machine.devices["eth0"]
    assert not dev.msix_enabled and not dev.bus_master
    w.traffic("eth0", 4)
    assert (w.ledger.delivered, w.ledger.lost) == (8, 4)
    assert all(r.startswith("dropped: device not allowed") for r in w.ledger.lost_reasons)
    w.bind("eth0")
    after = {v: w.kernel.irq_of_vector[("eth0", v)].hwirq for v in range(4)}
    assert set(after.values()).isdisjoint(before.values())
    w.traffic("eth0", 8)
    w.kexec("v6.6")
    w.traffic("eth0", 8)
    w.finish()
    assert (w.ledger.sent, w.ledger.delivered, w.ledger.lost) == (28, 24, 4)
    assert w.corruption.bits == 0


def test_unbind_and_bind_twice_are_notes() -> None:
    w = _world()
    w.unbind("eth0")
    w.unbind("eth0")
    w.bind("eth0")
    w.bind("eth0")
    assert w.notes == ["unbind eth0: eth0 has no driver bound", "bind eth0: eth0 is already bound"]


def test_scenario_steps() -> None:
    sc = parse_scenario(
        """
platform = "qemu-virt"
[[devices]]
name = "eth0"
device_id = 0x100
vectors = 2
[[steps]]
action = "boot"
kernel = "v6.6"
[[steps]]
action = "unbind"
device = "eth0"
[[steps]]
action = "traffic"
device = "eth0"
msis = 2
[[steps]]
action = "bind"
device = "eth0"
[[steps]]
action = "traffic"
device = "eth0"
msis = 2
"""
    )
    result = run_scenario(sc)
    assert [(t["action"], t["what"]) for t in result["timeline"]][1:4] == [
        ("unbind", "eth0"),
        ("traffic", "eth0 x2"),
        ("bind", "eth0"),
    ]
    assert (result["msis"]["delivered"], result["msis"]["lost"]) == (2, 2)


def test_unbind_of_an_unknown_device_is_a_scenario_error() -> None:
    text = """
platform = "qemu-virt"
[[steps]]
action = "boot"
kernel = "v6.6"
[[steps]]
action = "unbind"
device = "eth9"
"""
    try:
        parse_scenario(text, "s.toml")
    except ScenarioError as e:
        assert e.field_path == "steps[1].device"
        assert "no device named 'eth9'" in str(e)
    else:
        raise AssertionError("accepted an unknown device")
