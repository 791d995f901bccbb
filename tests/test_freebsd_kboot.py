"""A non-Linux next kernel that consumes the memreserve list: FreeBSD booted by kboot
panics when a live GICR_PROPBASER/PENDBASER is not covered (D40902, D44038)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from gickexec import World
from gickexec.cli import main
from gickexec.kernel.freebsd_kboot import FreeBsdKboot


def _world(platform: str, first: str) -> World:
    w = World.build(platform, seed=1)
    w.add_device("eth0", device_id=0x100, nvec=8)
    w.boot(first)
    w.traffic("eth0", 16)
    w.kexec("freebsd-kboot")
    return w


def test_tables_published_by_linux_are_inherited() -> None:
    w = _world("efi-server-8", "v6.6")
    k = w.generations[1]
    assert isinstance(k, FreeBsdKboot)
    assert k.crashed is None and k.reused_tables
    assert "kboot: memreserve list @0x" in "\n".join(k.log.lines)
    for rd in w.machine.rdists:
        assert rd.pend_addr is not None
        owner = k.owner(rd.pend_addr)
        assert owner is not None and owner.role is not None and owner.role.index == rd.cpu
    w.traffic("eth0", 16)  # the inherited tables are FreeBSD's: GIC writes corrupt nothing
    assert w.corruption.bits == 0


@pytest.mark.parametrize(
    ("platform", "first", "why"),
    [
        ("efi-server-8", "v4.19", "kboot: no LINUX_EFI_MEMRESERVE_TABLE"),
        # a v4.20 list (24-byte nodes) read with the v5.0+ layout FreeBSD implements
        ("efi-server-8", "v4.20", "kboot: memreserve list @0x"),
        ("rk3566-dt", "v6.6", "kboot: no EFI system table"),
        ("xen-guest", "v6.6", "kboot: no LINUX_EFI_MEMRESERVE_TABLE"),
    ],
)
def test_unreserved_live_tables_make_it_panic(platform: str, first: str, why: str) -> None:
    w = _world(platform, first)
    k = w.generations[1]
    assert k.crashed is not None
    assert "GICR_PROPBASER points to" in k.crashed and "does not reserve" in k.crashed
    assert why in "\n".join(k.log.lines)
    assert k.log.lines[-1].startswith("panic: CPU0: GICR_PROPBASER 0x")
    assert not k.reused_tables and k.online_cpus == []


def test_scenario_file_names_the_consumer(tmp_path: Path) -> None:
    text = CliRunner().invoke(main, ["show", "efi-kexec-fixed"]).output
    head, _, _ = text.partition("[expect]")
    body = head.replace(
        'action = "kexec"\nkernel = "v6.6"', 'action = "kexec"\nkernel = "freebsd-kboot"'
    )
    assert body != head
    path = tmp_path / "fb.toml"
    path.write_text(body + "[expect]\ncrashed = [false, false]\nreused_tables = [false, true]\n")
    r = CliRunner().invoke(main, ["run", "--json", str(path)])
    assert r.exit_code == 0, r.output
    gens = json.loads(r.stdout)["scenarios"][0]["generations"]
    assert gens[1]["kernel"] == "freebsd-kboot"


def test_profiles_lists_it_as_freebsd() -> None:
    r = CliRunner().invoke(main, ["profiles"])
    assert "freebsd-kboot FreeBSD 14.1" in r.output
