"""Each IMPLEMENTATION DEFINED / UNPREDICTABLE knob changes exactly what it says.

Every test runs the same guest sequence under the knob's settings and asserts the
architecturally allowed outcome each setting selects (Arm IHI 0069's IMPLEMENTATION
DEFINED and UNPREDICTABLE cases).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from gickexec import World
from gickexec.arch.gicv3 import (
    GicdOffset,
    GicrCtlr,
    GicrOffset,
    GicrPendbaser,
    GicrPropbaser,
    GicrTyper,
    GitsBaser,
    GitsCbaser,
    GitsOffset,
    GitsTyper,
)
from gickexec.arch.its import ITE, Mapc, Mapd, Mapti, Movall, Movi, Sync
from gickexec.cli import main
from gickexec.hw.knobs import KNOB_INFO, GicKnobs, knobs_with_overrides
from gickexec.hw.machine import Machine
from gickexec.hw.memory import Agent, AgentKind
from gickexec.hw.platform import PLATFORMS
from test_hw_gicr import PEND, PROP, _enable, _kernel, _machine, _open_cpu, _set_cfg
from test_hw_its import CT, DEV, DT, ITT, SZ_64K, Rig, _mapped

# -- the knob table itself ------------------------------------------------------------


def test_every_knob_is_documented_with_status_and_source() -> None:
    names = {f.name for f in dataclasses.fields(GicKnobs)}
    assert {k.name for k in KNOB_INFO} == names
    for k in KNOB_INFO:
        assert k.meaning and k.status and k.source and k.allowed
        assert k.default == getattr(GicKnobs(), k.name)


def test_every_section7_item_has_a_knob_or_a_stated_reason() -> None:
    """§7 items 1-19; 18 (ITS cache invalidation) is moot: the model has no ITS cache."""
    cited = {
        int(part.split(".")[1].split()[0].rstrip(",);"))
        for k in KNOB_INFO
        for part in k.source.split("§")[1:]
        if part.startswith("7.")
    }
    assert cited >= set(range(1, 20)) - {18}


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("its_error_policy", "halt", "one of 'stall', 'skip'"),
        ("itt_entry_size", 4, "in 8..16"),
        ("common_lpi_aff", 4, "in 0..3"),
        ("pta", 1, "true or false"),
        ("hcc", "4", "integer"),
        ("nope", 1, "unknown GIC knob"),
    ],
)
def test_bad_knob_values_are_rejected(name: str, value: Any, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        knobs_with_overrides(GicKnobs(), {name: value})


def test_overrides_keep_the_rest() -> None:
    k = knobs_with_overrides(PLATFORMS["qemu-virt"].knobs, {"its_error_policy": "stall"})
    assert k.its_error_policy == "stall"
    assert k.itt_entry_size == 12 and k.ptz_reads_back


# -- presets ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PLATFORMS))
def test_presets_build_and_cite_a_source(name: str) -> None:
    p = PLATFORMS[name]
    assert p.source and p.description
    m = Machine(p)
    assert len(m.rdists) == p.cpus
    typer = GitsTyper.decode(m.its.mmio_read(GitsOffset.TYPER, 8))
    assert typer.ITT_entry_size + 1 == p.knobs.itt_entry_size
    # MMIO frames do not overlap each other or RAM
    frames = [(p.gicd_base, 0x10000), (p.its_base, 0x20000), (p.gicr_base, 0x20000 * p.cpus)]
    frames += [(r.start, r.size) for r in p.ram]
    frames.sort()
    assert all(a + s <= b for (a, s), (b, _) in itertools.pairwise(frames))


def test_preset_choices_that_tell_them_apart() -> None:
    p = PLATFORMS
    assert p["thunderx2"].cpus == 224 and p["thunderx2"].sockets == 2
    assert p["thunderx2"].affinity(112) == 0x10000  # first CPU of socket 1: Aff2 = 1
    assert p["centriq-2400"].cpus == 46 and p["centriq-2400"].knobs.itt_entry_size == 16
    assert p["ampere-altra"].cpus == 80 and p["ampere-altra"].knobs.its_error_policy == "stall"
    assert p["qemu-virt"].knobs.enable_lpis_clearable and p["qemu-virt"].knobs.report_ces
    assert not p["qemu-virt"].knobs.base_writes_ignored_while_enabled
    assert p["kvm-guest"].knobs.its_error_policy == "skip"
    assert p["kvm-guest"].knobs.its_page_size_64k_only
    assert not p["xen-guest"].knobs.enable_lpis_clearable and not p["xen-guest"].efi_stub
    assert not p["xen-guest"].knobs.its_indirect


def test_cli_platforms_lists_presets_knobs_and_json() -> None:
    r = CliRunner().invoke(main, ["platforms"])
    assert r.exit_code == 0
    for name in PLATFORMS:
        assert name in r.output
    for k in KNOB_INFO:
        assert k.name in r.output
    r = CliRunner().invoke(main, ["platforms", "--json"])
    doc = json.loads(r.stdout)
    assert {p["name"] for p in doc["platforms"]} == set(PLATFORMS)
    assert doc["platforms"][0]["knobs"].keys() == {k.name for k in KNOB_INFO}
    assert {k["name"] for k in doc["knobs"]} == {k.name for k in KNOB_INFO}


def test_docs_hardware_md_is_generated_from_the_knob_table() -> None:
    r = CliRunner().invoke(main, ["platforms", "--markdown"])
    assert r.exit_code == 0
    doc = Path(__file__).parent.parent / "docs" / "hardware.md"
    assert doc.read_text() == r.output, "regenerate: gickexec platforms --markdown"


# -- redistributor knobs ------------------------------------------------------------------


@pytest.mark.parametrize(("ces", "ir"), [(False, False), (True, False), (True, True)])
def test_ces_and_ir_reporting(ces: bool, ir: bool) -> None:
    m = _machine(report_ces=ces, report_ir=ir)
    ctlr = GicrCtlr.decode(m.mem.mmio_read(m.gicr_base(0) + GicrOffset.CTLR, 4))
    assert (int(ces), int(ir)) == (ctlr.CES, ctlr.IR)


@pytest.mark.parametrize("direct", [False, True])
def test_direct_lpi_registers(direct: bool) -> None:
    m = _machine(direct_lpi=direct)
    rd = _enable(m)
    _open_cpu(m)
    _set_cfg(m, 8200)
    base = m.gicr_base(0)
    assert GicrTyper.decode(m.mem.mmio_read(base + GicrOffset.TYPER, 8)).DirectLPI == int(direct)
    m.mem.mmio_write(base + GicrOffset.SETLPIR, 8, 8200, _kernel())
    assert rd.is_pending(8200) is direct
    if direct:
        m.mem.mmio_write(base + GicrOffset.CLRLPIR, 8, 8200, _kernel())
        assert not rd.is_pending(8200)
        assert m.events.errors == []
    else:
        assert "direct LPI register 0x40 written -> ignored" in str(m.events.errors[0])


def test_setlpir_has_no_effect_when_lpis_are_disabled_or_out_of_range() -> None:
    m = _machine(direct_lpi=True)
    m.mem.mmio_write(m.gicr_base(1) + GicrOffset.SETLPIR, 8, 8200, _kernel(1))
    rd = _enable(m)
    m.mem.mmio_write(m.gicr_base(0) + GicrOffset.SETLPIR, 8, 1 << 20, _kernel())
    assert rd.pending_lpis() == set() and m.rdists[1].pending_lpis() == set()


@pytest.mark.parametrize(("ir", "direct"), [(False, False), (True, False), (False, True)])
def test_invlpir_makes_a_configuration_change_visible(ir: bool, direct: bool) -> None:
    m = _machine(report_ir=ir, direct_lpi=direct)
    rd = _enable(m)
    _open_cpu(m)
    _set_cfg(m, 8200, enable=False)
    rd.set_pending(8200)
    _set_cfg(m, 8200, enable=True)
    assert m.cpuifs[0].acknowledge() == 1023  # cached: still disabled
    m.mem.mmio_write(m.gicr_base(0) + GicrOffset.INVLPIR, 8, 8200, _kernel())
    assert m.cpuifs[0].acknowledge() == (8200 if ir or direct else 1023)


def test_config_cache_capacity_evicts_the_oldest() -> None:
    m = _machine(config_cache_entries=2)
    rd = _enable(m)
    for intid in (8200, 8201, 8202):
        _set_cfg(m, intid, priority=0x80)
        rd.config(intid)
    _set_cfg(m, 8200, priority=0x40)  # 8200 was evicted: re-read from memory
    _set_cfg(m, 8202, priority=0x40)  # 8202 still cached
    assert rd.config(8200).priority == 0x40
    assert rd.config(8202).priority == 0x80


@pytest.mark.parametrize("aff", [0, 1, 2, 3])
def test_common_lpi_aff_group_check(aff: int) -> None:
    """CPU0 and CPU4 differ in Aff1 only; a different PROPBASER is UNPREDICTABLE iff
    CommonLPIAff says they share one table."""
    m = _machine(common_lpi_aff=aff)
    assert (
        GicrTyper.decode(m.mem.mmio_read(m.gicr_base(0) + GicrOffset.TYPER, 8)).CommonLPIAff == aff
    )
    _enable(m, 0)
    _enable(m, 4, prop=PROP + 0x100000)
    flagged = any("CommonLPIAff" in str(e) for e in m.events.errors)
    assert flagged is (aff < 3)
    assert m.rdists[4].prop_addr == PROP + 0x100000  # each uses its own either way


@pytest.mark.parametrize("policy", ["ignored", "table-ignored"])
def test_nonzero_first_kib_of_the_pending_table(policy: str) -> None:
    m = _machine(pending_first_kb=policy)
    m.mem.write_u8(PEND + 3, 0xFF, _kernel())  # IMPDEF area
    m.mem.write_u8(PEND + 8200 // 8, 1 << (8200 % 8), _kernel())
    rd = _enable(m)
    assert rd.pending_lpis() == ({8200} if policy == "ignored" else set())


@pytest.mark.parametrize("reads_back", [False, True])
def test_ptz_read_back(reads_back: bool) -> None:
    m = _machine(ptz_reads_back=reads_back)
    addr = m.gicr_base(0) + GicrOffset.PENDBASER
    m.mem.mmio_write(addr, 8, PEND | 1 << 62, _kernel())
    assert bool(m.mem.mmio_read(addr, 8) >> 62 & 1) is reads_back


@pytest.mark.parametrize("shareable", [False, True])
def test_shareability_read_back_of_redistributor_and_its_registers(shareable: bool) -> None:
    m = _machine(shareability=shareable)
    value = GicrPropbaser(IDbits=15, Shareability=1, Physical_Address=PROP >> 12).encode()
    addr = m.gicr_base(0) + GicrOffset.PROPBASER
    m.mem.mmio_write(addr, 8, value, _kernel())
    assert GicrPropbaser.decode(m.mem.mmio_read(addr, 8)).Shareability == int(shareable)
    rig = Rig(shareability=shareable)
    assert GitsCbaser.decode(rig.read(GitsOffset.CBASER)).Shareability == int(shareable)
    assert GitsBaser.decode(rig.read(GitsOffset.BASER)).Shareability == int(shareable)


def test_kernel_reads_back_shareability_and_flushes() -> None:
    """Linux sees Shareability read back as 0 and marks the tables for flushing."""
    base = PLATFORMS["efi-server-8"]
    w = World.build(base.with_knobs(dataclasses.replace(base.knobs, shareability=False)), seed=1)
    w.boot("v6.6")
    assert w.kernel.gic.needs_flushing
    assert any("shr 0" in line for line in w.generations[0].log.lines)


# -- ITS knobs -------------------------------------------------------------------------


@pytest.mark.parametrize("size", [8, 12, 16])
def test_itt_entry_size_sets_the_stride_of_translation_entries(size: int) -> None:
    rig = Rig(itt_entry_size=size)
    assert GitsTyper.decode(rig.read(GitsOffset.TYPER)).ITT_entry_size == size - 1
    _mapped(rig, event=5, intid=8300, icid=3)
    assert ITE.decode(rig.mem.read_u64(ITT + 5 * size)).pINTID == 8300
    assert rig.mem.read(ITT + 5 * size + 8, size - 8) == bytes(size - 8)
    assert rig.its.translate_msi(DEV, 5).cpu == 3


def test_hardware_collections_need_no_table_and_survive_table_loss() -> None:
    rig = Rig(hcc=4)
    assert GitsTyper.decode(rig.read(GitsOffset.TYPER)).HCC == 4
    _mapped(rig, icid=2)
    assert rig.mem.read_u64(CT + 2 * 8) == 0  # ICID 2 lives in the ITS
    assert rig.mem.read_u64(CT + 5 * 8) != 0  # ICID 5 (>= HCC) in memory
    rig.mem.write(CT, bytes(0x1000), rig.its.agent)  # software wipes the table
    assert rig.its.translate_msi(DEV, 5).cpu == 2


def test_pta_names_redistributors_by_address() -> None:
    rig = Rig(pta=True)
    assert GitsTyper.decode(rig.read(GitsOffset.TYPER)).PTA == 1
    rig.map_device()
    addr3 = rig.m.gicr_base(3) >> 16
    rig.send(Mapc(ICID=0, RDbase=addr3, V=1), Mapti(DeviceID=DEV, EventID=1, pINTID=8200, ICID=0))
    assert rig.its.translate_msi(DEV, 1).cpu == 3
    rig.send(Mapc(ICID=1, RDbase=3, V=1))  # a processor number is no address under PTA
    assert rig.codes()[-1] == 0x010902


def test_kernel_uses_redistributor_addresses_when_pta_is_set() -> None:
    base = PLATFORMS["efi-server-8"]
    w = World.build(base.with_knobs(dataclasses.replace(base.knobs, pta=True)), seed=1)
    w.add_device("eth0", device_id=0x100, nvec=8)
    w.boot("v6.6")
    w.traffic("eth0", 16)
    assert w.ledger.lost == 0 and w.ledger.delivered == 16
    assert w.machine.events.errors == []


def test_collection_id_bits_limit_icids() -> None:
    rig = Rig(collection_id_bits=4)
    t = GitsTyper.decode(rig.read(GitsOffset.TYPER))
    assert (t.CIL, t.CIDbits) == (1, 3)
    rig.send(Mapc(ICID=16, RDbase=0, V=1))
    assert rig.codes() == [0x010903]


@pytest.mark.parametrize("policy", ["ignored", "accepted"])
def test_table_writes_while_enabled(policy: str) -> None:
    rig = Rig(its_table_writes_while_enabled=policy)
    before = rig.read(GitsOffset.BASER + 8)
    rig.write_baser(1, CT + 0x10000, size_pages=1)
    moved = GitsBaser.decode(rig.read(GitsOffset.BASER + 8)).address == CT + 0x10000
    assert moved is (policy == "accepted")
    assert (rig.read(GitsOffset.BASER + 8) == before) is (policy == "ignored")


@pytest.mark.parametrize("policy", ["zero-sized", "refused"])
def test_enabling_with_invalid_tables(policy: str) -> None:
    rig = Rig(its_enable_invalid_tables=policy)
    rig.set_enabled(False)
    rig.mmio(GitsOffset.BASER + 8, 0)  # collection table no longer Valid
    rig.set_enabled(True)
    assert rig.its.enabled is (policy == "zero-sized")
    if policy == "zero-sized":
        rig.send(Mapc(ICID=0, RDbase=0, V=1))  # no table: out of range
        assert rig.codes()[-1] == 0x010903


@pytest.mark.parametrize("policy", ["queue-invalid", "write-ignored"])
def test_cwriter_out_of_range(policy: str) -> None:
    rig = Rig(cwriter_out_of_range=policy, queue_pages=1)
    rig.mmio(GitsOffset.CWRITER, 0x2000)
    rig.put(Mapd(DeviceID=DEV, Size=4, ITT_addr=ITT >> 8, V=1))
    rig.kick()  # a valid value: the queue is valid again under either choice
    assert rig.its.read_dte(DEV) is not None
    assert rig.errors()[0].endswith(
        "queue invalid" if policy == "queue-invalid" else "write ignored"
    )


@pytest.mark.parametrize("policy", ["overwrite", "ignored"])
def test_mapti_over_an_existing_mapping(policy: str) -> None:
    rig = Rig(mapti_overwrite=policy)
    _mapped(rig, event=5, intid=8300, icid=3)
    rig.send(Mapti(DeviceID=DEV, EventID=5, pINTID=8400, ICID=1))
    r = rig.its.translate_msi(DEV, 5)
    assert (r.intid, r.cpu) == ((8400, 1) if policy == "overwrite" else (8300, 3))


@pytest.mark.parametrize("policy", ["nop", "drop"])
@pytest.mark.parametrize("command", ["MOVI", "MOVALL"])
def test_moves_to_a_redistributor_with_lpis_disabled(policy: str, command: str) -> None:
    rig = Rig(move_to_disabled_rdist=policy, enable_lpis_clearable=True, rwp_clear_after_reads=0)
    _mapped(rig, event=5, intid=8300, icid=3)
    rig.its.translate_msi(DEV, 5)
    assert rig.pend_bit(3, 8300)
    rig.mem.mmio_write(rig.m.gicr_base(6) + GicrOffset.CTLR, 4, 0, _kernel(6))
    assert not rig.m.rdists[6].enable_lpis
    rig.send(Mapc(ICID=6, RDbase=6, V=1))
    rig.send(
        Movi(DeviceID=DEV, EventID=5, ICID=6) if command == "MOVI" else Movall(RDbase1=3, RDbase2=6)
    )
    assert rig.pend_bit(3, 8300) is (policy == "nop")
    assert rig.m.rdists[6].pending_lpis() == set()


@pytest.mark.parametrize("policy", ["bits-ignored", "write-ignored"])
def test_translater_eventid_above_id_bits(policy: str) -> None:
    rig = Rig(translater_high_event_bits=policy, event_id_bits=16)
    _mapped(rig, event=5, intid=8300, icid=3)
    r = rig.its.translate_msi(DEV, 5 | 1 << 20)
    assert r.pended is (policy == "bits-ignored")


def test_flat_only_its_keeps_indirect_clear_and_linux_goes_flat() -> None:
    rig = Rig(its_indirect=False)
    rig.set_enabled(False)
    rig.write_baser(0, DT, size_pages=1, indirect=True)
    assert GitsBaser.decode(rig.read(GitsOffset.BASER)).Indirect == 0
    w = World.build("xen-guest", seed=1)
    w.boot("v6.6")
    assert "allocated 65536 Devices" in "\n".join(w.generations[0].log.lines)
    assert "(flat, esz 8, psz 64K, shr 1)" in "\n".join(w.generations[0].log.lines)


@pytest.mark.parametrize("fixed", [False, True])
def test_page_size_read_back(fixed: bool) -> None:
    rig = Rig(its_page_size_64k_only=fixed)
    rig.set_enabled(False)
    value = GitsBaser(Size=0, Page_Size=0b00, Physical_Address=DT >> 12, Valid=1).encode()
    rig.mmio(GitsOffset.BASER, value)
    assert GitsBaser.decode(rig.read(GitsOffset.BASER)).page_bytes == (0x10000 if fixed else 0x1000)


def test_64k_pages_encode_address_bits_51_to_48_in_bits_15_to_12() -> None:
    rig = Rig()
    rig.set_enabled(False)
    high = (0x5 << 48) | 0x8200_0000
    field = (high & ((1 << 48) - 1)) >> 12 | (high >> 48) << 0  # PA[51:48] into bits [15:12]
    value = GitsBaser(Size=0, Page_Size=0b10, Physical_Address=field, Valid=1).encode()
    rig.mmio(GitsOffset.BASER, value)
    assert GitsBaser.decode(rig.read(GitsOffset.BASER)).address == high


def test_sync_to_an_unknown_redistributor_is_an_error_under_both_addressings() -> None:
    for pta in (False, True):
        rig = Rig(pta=pta)
        rig.send(Sync(RDbase=0x7777))
        assert rig.codes() == [0x010501]


# -- 32-bit halves of 64-bit registers ---------------------------------------------------


def test_64bit_its_registers_written_as_two_halves_equal_one_64bit_write() -> None:
    one, two = Rig(), Rig()
    for rig in (one, two):
        rig.set_enabled(False)
    value = GitsBaser(
        Size=3, Page_Size=0b10, Shareability=1, Physical_Address=(DT >> 12), Valid=1
    ).encode()
    one.mmio(GitsOffset.BASER, value)
    two.mmio(GitsOffset.BASER, value & 0xFFFFFFFF, size=4)
    two.mmio(GitsOffset.BASER + 4, value >> 32, size=4)
    assert one.read(GitsOffset.BASER) == two.read(GitsOffset.BASER)
    full = one.read(GitsOffset.BASER)  # Type and Entry_Size are the ITS's own
    assert GitsBaser.decode(full).address == DT
    assert two.read(GitsOffset.BASER + 4, 4) == full >> 32
    assert two.read(GitsOffset.BASER, 4) == full & 0xFFFFFFFF


def test_32bit_cwriter_write_processes_commands_and_creadr_reads_in_halves() -> None:
    rig = Rig()
    rig.put(Mapd(DeviceID=DEV, Size=4, ITT_addr=ITT >> 8, V=1))
    rig.mmio(GitsOffset.CWRITER, rig.cmd_write, size=4)
    assert rig.its.read_dte(DEV) is not None
    assert rig.read(GitsOffset.CREADR, 4) == 32
    assert rig.read(GitsOffset.CREADR + 4, 4) == 0
    typer = rig.read(GitsOffset.TYPER)
    assert rig.read(GitsOffset.TYPER + 4, 4) << 32 | rig.read(GitsOffset.TYPER, 4) == typer


def test_32bit_halves_of_redistributor_registers() -> None:
    m = _machine()
    base = m.gicr_base(2)
    value = GicrPropbaser(
        IDbits=15, Shareability=1, Physical_Address=(0x88_8010_0000 >> 12)
    ).encode()
    m.mem.mmio_write(base + GicrOffset.PROPBASER, 4, value & 0xFFFFFFFF, _kernel(2))
    m.mem.mmio_write(base + GicrOffset.PROPBASER + 4, 4, value >> 32, _kernel(2))
    assert m.mem.mmio_read(base + GicrOffset.PROPBASER, 8) == value
    typer = m.mem.mmio_read(base + GicrOffset.TYPER, 8)
    assert m.mem.mmio_read(base + GicrOffset.TYPER + 4, 4) == typer >> 32
    assert GicrTyper.decode(typer).Processor_Number == 2


def test_half_writes_while_enabled_are_ignored_like_full_ones() -> None:
    m = _machine()
    rd = _enable(m)
    m.mem.mmio_write(m.gicr_base(0) + GicrOffset.PROPBASER + 4, 4, 0x1, _kernel())
    assert rd.propbaser >> 32 == 0
    assert "GICR_PROPBASER written while EnableLPIs=1 -> write ignored" in str(m.events.errors[-1])


# -- pending state held inside the redistributor (§7.7) ----------------------------------


def test_pending_cache_holds_bits_until_evicted_or_quiesced() -> None:
    m = _machine(pending_cache_entries=2)
    rd = _enable(m, 0)
    _open_cpu(m)
    writes: list[int] = []
    m.mem.observe_gic_writes(lambda w: writes.append(w.addr))
    for intid in (8200, 8201, 8202):
        _set_cfg(m, intid)
        rd.set_pending(intid)
    # only the oldest was written back to make room; all three are pending
    assert writes == [PEND + 8200 // 8]
    assert all(rd.is_pending(i) for i in (8200, 8201, 8202))
    assert m.mem.read_u8(PEND + 8201 // 8) == 1 << (8200 % 8)
    # acknowledging a held LPI never touches memory
    assert m.cpuifs[0].acknowledge() == 8200
    m.cpuifs[0].eoi(8200)
    assert m.cpuifs[0].acknowledge() == 8201
    n = len(writes)
    assert n == 2  # 8200's bit cleared in memory; 8201 was only held
    # the quiesce sequence writes what is held
    waker = m.gicr_base(0) + GicrOffset.WAKER
    m.mem.mmio_write(waker, 4, 0b00, _kernel())  # awake (reset state is asleep)
    assert not m.mem.read_u8(PEND + 8202 // 8)
    m.mem.mmio_write(waker, 4, 0b10, _kernel())  # ProcessorSleep: quiesce
    assert m.mem.read_u8(PEND + 8202 // 8) & 1 << (8202 % 8)


def test_pending_cache_written_back_when_lpis_are_disabled() -> None:
    m = _machine(pending_cache_entries=8, enable_lpis_clearable=True)
    rd = _enable(m, 0)
    rd.set_pending(8300)
    assert not m.mem.read_u8(PEND + 8300 // 8)
    m.mem.mmio_write(m.gicr_base(0) + GicrOffset.CTLR, 4, 0, _kernel())
    assert m.mem.read_u8(PEND + 8300 // 8) == 1 << (8300 % 8)


def test_kexec_handover_bits_held_in_a_pending_cache_never_reach_memory() -> None:
    """Pending bits of the handover reach the stale table at once without a pending
    cache; a redistributor that holds them hands them to the second kernel's CPUs
    (which acknowledge them with no handler) and memory is never touched."""
    base = PLATFORMS["efi-server-8"]

    def run(entries: int) -> tuple[int, int]:
        knobs = dataclasses.replace(base.knobs, pending_cache_entries=entries)
        w = World.build(base.with_knobs(knobs), seed=3)
        w.add_device("eth0", device_id=0x100, nvec=8, shutdown_hook=False)
        w.boot("v4.19")
        # the handover's MSIs pend in the first kernel's tables (v4.19 cannot take the
        # CPUs' EnableLPIs back, so the second kernel never gets LPIs of its own)
        w.kexec("v4.19", handover_msis=8)
        w.finish()
        return w.corruption.bits, w.generations[1].unexpected_irqs

    assert run(0) == (16, 8)  # 8 bits set between kernels, cleared by the acknowledges
    assert run(64) == (0, 8)


# -- scenarios name a preset and override knobs ----------------------------------------


@pytest.mark.parametrize("name", sorted(PLATFORMS))
def test_fixed_kernel_keeps_every_msi_on_every_preset_that_boots_the_efi_stub(
    name: str, tmp_path: Path
) -> None:
    """The built-in fixed scenario replayed per preset through the CLI, with one knob
    overridden: EFI presets with the stub lose nothing; DT and Xen (no MEMRESERVE
    table) lose the second kernel's MSIs."""
    text = CliRunner().invoke(main, ["show", "efi-kexec-fixed"]).output
    text = text.replace(
        'platform = "efi-server-8"',
        f'platform = "{name}"\nknobs = {{ pending_cache_entries = 4 }}',
    )
    path = tmp_path / "s.toml"
    path.write_text(text)
    r = CliRunner().invoke(main, ["run", "--json", str(path)])
    assert r.exit_code in (0, 1), r.output
    doc = json.loads(r.stdout)["scenarios"][0]
    assert doc["platform"]["name"] == name
    assert doc["platform"]["knobs"]["pending_cache_entries"] == 4
    p = PLATFORMS[name]
    msis = doc["msis"]
    if p.firmware == "efi" and p.efi_stub:
        assert msis["lost"] == 0 and doc["corruption"]["bits"] == 0
        assert doc["generations"][1]["reused_tables"] or p.knobs.enable_lpis_clearable
    else:
        assert msis["lost"] > 0


@pytest.mark.parametrize(("name", "iidr"), [("qemu-virt", 0x43B), ("efi-server-8", 0)])
def test_iidr_registers_report_the_presets_product(name: str, iidr: int) -> None:
    """QEMU's gicv3_iidr() (an Arm r0p0, ProductID 0, like an r0p0 GIC-500) on qemu-virt;
    0 where no public source states the product's value."""
    m = Machine(PLATFORMS[name])
    p = m.platform
    assert m.mem.mmio_read(p.gicd_base + GicdOffset.IIDR, 4) == iidr
    assert m.mem.mmio_read(m.gicr_base(1) + GicrOffset.IIDR, 4) == iidr
    assert m.mem.mmio_read(p.its_base + GitsOffset.IIDR, 4) == iidr


def test_kvm_holds_lpi_pending_state_until_the_vmm_saves_it() -> None:
    """KVM keeps an LPI's pending state in the hypervisor: the guest's pending table is
    written only by a VMM save (KVM_DEV_ARM_VGIC_SAVE_PENDING_TABLES); an LPI the guest
    takes before that never touches memory; clearing EnableLPIs drops what is held."""
    m = Machine(PLATFORMS["kvm-guest"])
    agent = Agent(AgentKind.KERNEL, 0)
    rd0 = m.gicr_base(0)
    pend = 0x4100_0000
    prop = GicrPropbaser(IDbits=15, Physical_Address=0x4000_0000 >> 12).encode()
    m.mem.mmio_write(rd0 + GicrOffset.PROPBASER, 8, prop, agent)
    m.mem.mmio_write(rd0 + GicrOffset.PENDBASER, 8, pend, agent)
    m.mem.mmio_write(rd0 + GicrOffset.CTLR, 4, 1, agent)
    rd = m.rdists[0]
    intid = 8192 + 9
    rd.set_pending(intid)
    assert rd.is_pending(intid)
    assert m.mem.read_u8(pend + intid // 8) == 0  # held in the hypervisor
    m.vmm_save_pending_tables()
    assert m.mem.read_u8(pend + intid // 8) == 1 << (intid % 8)
    rd.set_pending(intid + 1)
    m.mem.mmio_write(rd0 + GicrOffset.CTLR, 4, 0, agent)  # KVM lets the guest clear it
    assert m.mem.read_u8(pend + (intid + 1) // 8) == 1 << (intid % 8)  # not written
    hw = Machine(PLATFORMS["efi-server-8"])
    hw.vmm_save_pending_tables()  # no hypervisor: nothing happens, nothing breaks


def _set_pend_bit(rig: Rig, cpu: int, intid: int) -> None:
    addr = PEND + cpu * SZ_64K + intid // 8
    rig.mem.write_u8(addr, rig.mem.read_u8(addr) | 1 << intid % 8, Agent(AgentKind.KERNEL, 0))


@pytest.mark.parametrize("kvm", [True, False])
def test_kvm_mapti_takes_and_clears_the_pending_bit_of_a_new_lpi(kvm: bool) -> None:
    """KVM vgic_add_lpi() -> vgic_v3_lpi_sync_pending_status() (Linux 5.10.7, 6.6.9): an
    LPI that MAPTI creates reads its bit from the target vCPU's table and clears it; an
    LPI that already exists (a second event mapping it) reads nothing.  A GIC that keeps
    pending state in memory leaves the bit alone."""
    rig = Rig(pending_state_in_hypervisor=kvm)
    rig.map_device()
    rig.map_collections()
    _set_pend_bit(rig, 3, 8300)
    rig.send(Mapti(DeviceID=DEV, EventID=5, pINTID=8300, ICID=3))
    rd = rig.m.rdists[3]
    assert rd.is_pending(8300)
    assert rig.pend_bit(3, 8300) is not kvm  # consumed by KVM, still in memory on hardware
    _set_pend_bit(rig, 3, 8300)
    rig.send(Mapti(DeviceID=DEV, EventID=6, pINTID=8300, ICID=3))
    assert rig.pend_bit(3, 8300)  # the LPI existed: vgic_add_lpi() returned it unread
    assert rig.errors() == []


def test_kvm_enable_reads_the_bits_of_mapped_lpis_only() -> None:
    """KVM its_sync_lpi_pending_table() at EnableLPIs 0 -> 1 with PTZ=0: a mapped LPI
    targeting the vCPU takes its bit (left set in memory); the bit of an LPI no ITE maps
    is not read.  With PTZ=1 nothing is read.  A hardware redistributor's scan takes
    both."""
    def reenable(rig: Rig, *, ptz: bool = False) -> None:
        agent = Agent(AgentKind.KERNEL, 0)
        base = rig.m.gicr_base(3)
        rig.mem.mmio_write(base + GicrOffset.CTLR, 4, 0, agent)
        while rig.mem.mmio_read(base + GicrOffset.CTLR, 4) & 1 << 3:  # RWP
            pass
        _set_pend_bit(rig, 3, 8300)
        _set_pend_bit(rig, 3, 8301)
        pend = GicrPendbaser(PTZ=int(ptz), Physical_Address=(PEND + 3 * SZ_64K) >> 16)
        rig.mem.mmio_write(base + GicrOffset.PENDBASER, 8, pend.encode(), agent)
        rig.mem.mmio_write(base + GicrOffset.CTLR, 4, 1, agent)

    kvm = Rig(pending_state_in_hypervisor=True, enable_lpis_clearable=True)
    _mapped(kvm)  # event 5 -> LPI 8300, collection 3
    reenable(kvm)
    rd = kvm.m.rdists[3]
    assert rd.is_pending(8300) and kvm.pend_bit(3, 8300)
    assert not rd.is_pending(8301) and kvm.pend_bit(3, 8301)
    assert kvm.errors() == []
    ptz = Rig(pending_state_in_hypervisor=True, enable_lpis_clearable=True)
    _mapped(ptz)
    reenable(ptz, ptz=True)
    assert not ptz.m.rdists[3].is_pending(8300)
    hw = Rig(enable_lpis_clearable=True)
    _mapped(hw)
    reenable(hw)
    assert hw.m.rdists[3].is_pending(8300) and hw.m.rdists[3].is_pending(8301)


def test_kvm_save_writes_mapped_lpis_latches_and_keeps_them() -> None:
    """vgic_v3_save_pending_tables(): each mapped LPI's bit is made its latch (a stale
    set bit of a mapped LPI that is not pending is cleared); the latch stays held."""
    rig = Rig(pending_state_in_hypervisor=True)
    _mapped(rig, event=5, intid=8300)
    rig.send(Mapti(DeviceID=DEV, EventID=6, pINTID=8302, ICID=3))
    rd = rig.m.rdists[3]
    rd.set_pending(8300)
    _set_pend_bit(rig, 3, 8302)  # stale: KVM holds 8302 as not pending
    assert not rig.pend_bit(3, 8300)
    rig.m.vmm_save_pending_tables()
    assert rig.pend_bit(3, 8300) and not rig.pend_bit(3, 8302)
    assert rd.is_pending(8300)


def test_kvm_mapd_frees_the_devices_lpis_so_a_new_mapti_reads_again() -> None:
    """vgic_its_cmd_handle_mapd() frees a mapped device (its events and, with the last
    of them, their LPIs) before mapping it again: the next MAPTI of the same pINTID
    creates the LPI anew and takes its pending bit again."""
    rig = Rig(pending_state_in_hypervisor=True)
    _mapped(rig, event=5, intid=8300)
    rig.map_device()  # MAPD V=1 over the mapped device: KVM frees it first
    _set_pend_bit(rig, 3, 8300)
    rig.send(Mapti(DeviceID=DEV, EventID=5, pINTID=8300, ICID=3))
    assert rig.m.rdists[3].is_pending(8300) and not rig.pend_bit(3, 8300)
    assert rig.errors() == []
