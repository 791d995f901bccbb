"""``gickexec inspect`` and ``run --export-vmcore``: round trips, both memreserve layouts,
discovery of the root, and hostile images."""

from __future__ import annotations

import dataclasses
import json
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from elftools.elf.elffile import ELFFile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gickexec import World
from gickexec.arch.efi import (
    LINUX_EFI_MEMRESERVE_TABLE_GUID,
    ConfigTableEntry,
    EfiSystemTable,
    MemreserveHeader,
)
from gickexec.cli import main
from gickexec.hw.memory import Agent, AgentKind, MemRegion, PhysicalMemory
from gickexec.inspect.analyze import (
    find_systab,
    inspect_image,
    tables_from_log,
    tables_from_registers,
)
from gickexec.inspect.drgn_interop import drgn_program
from gickexec.inspect.image import ImageError, open_image
from gickexec.inspect.vmcore import machine_info, write_vmcore
from gickexec.scenario.builtin import load_builtin
from gickexec.scenario.runner import play

FW = Agent(AgentKind.FIRMWARE, 0)
BASE = 0x4000_0000
SYSTAB = BASE + 0x1018
CFG = BASE + 0x2000
ROOT = BASE + 0x3E98
NODE = BASE + 0x5000
PROP = BASE + 0x10000
PEND = BASE + 0x20000


def _cli(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(main, list(args))
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    return r.exit_code, r.output


def _export(tmp_path: Path, scenario: str, at: int | None = None) -> tuple[Path, World]:
    path = tmp_path / f"{scenario}.elf"
    args = ["run", scenario, "--no-logs", "--export-vmcore", str(path)]
    if at is not None:
        args += ["--export-at", str(at)]
    code, _ = _cli(*args)
    assert code in (0, 1) and path.exists()
    sc = load_builtin(scenario)
    world = play(sc) if at is None else _play_until(sc, at)
    return path, world


def _play_until(sc: Any, at: int) -> World:
    return play(dataclasses.replace(sc, steps=sc.steps[: at + 1]))


# -- round trips through the model ------------------------------------------------------


def test_export_then_inspect_finds_the_models_reservations_and_tables(tmp_path: Path) -> None:
    path, world = _export(tmp_path, "efi-kexec-fixed")
    code, out = _cli("inspect", "--json", str(path))
    assert code == 0, out
    doc = json.loads(out)
    chain = world.memreserve_chain()
    assert chain is not None
    assert doc["memreserve"]["root"] == chain.root
    assert doc["memreserve"]["layout"] == "v5.0"
    found = [(e["addr"], e["size"]) for n in doc["memreserve"]["nodes"] for e in n["entries"]]
    assert found == chain.entries and len(found) == 9
    live = {(t["kind"], t["cpu"]): t for t in doc["tables"]}
    for rd in world.machine.rdists:
        assert live[("pend", rd.cpu)]["addr"] == rd.pend_addr
        assert live[("pend", rd.cpu)]["covered"]
    assert live[("prop", None)]["addr"] == world.machine.rdists[0].prop_addr
    assert live[("prop", None)]["enabled"] == 8  # eth0's eight vectors


def test_inspect_names_the_configuration_tables_as_the_kernel_does(tmp_path: Path) -> None:
    """QEMU virt's firmware installs MEMATTR and RNG tables: inspect names each as the
    kernel's "efi:" line does."""
    path, world = _export(tmp_path, "qemu-uefi-kexec")
    code, out = _cli("inspect", "--json", str(path))
    assert code == 0, out
    names = [t["name"] for t in json.loads(out)["systab"]["config_tables"]]
    efi_line = next(ln for ln in world.generations[-1].log.lines if "MEMRESERVE=" in ln)
    assert {"MEMATTR", "RNG", "MEMRESERVE"} <= set(names)
    assert all(f"{name}=" in efi_line for name in names if name)


def test_the_elf_core_reads_back_with_pyelftools(tmp_path: Path) -> None:
    path, world = _export(tmp_path, "efi-kexec-fixed")
    with path.open("rb") as f:
        elf = ELFFile(f)
        assert elf.header["e_type"] == "ET_CORE" and elf.header["e_machine"] == "EM_AARCH64"
        loads = [s for s in elf.iter_segments() if s["p_type"] == "PT_LOAD"]
        assert [(s["p_paddr"], s["p_memsz"]) for s in loads] == [
            (r.start, r.size) for r in world.machine.mem.ram
        ]
        seg = loads[0]
        systab = world.firmware.systab if world.firmware else 0
        f.seek(seg["p_offset"] + systab - seg["p_paddr"])
        assert f.read(8) == b"IBI SYST"
    # sparse: the 8 GiB machine costs only the pages the model stored
    assert path.stat().st_blocks * 512 < 64 << 20


def test_unfixed_kernel_leaves_live_tables_unreserved_exit_1(tmp_path: Path) -> None:
    path, _ = _export(tmp_path, "efi-kexec-unfixed", at=2)  # right after the kexec
    code, out = _cli("inspect", str(path))
    assert code == 1
    assert "no LINUX_EFI_MEMRESERVE_TABLE in the configuration table array" in out
    assert "NOT RESERVED" in out


def test_device_tree_machine_has_no_system_table(tmp_path: Path) -> None:
    path, _ = _export(tmp_path, "dt-kexec-current")
    code, out = _cli("inspect", "--json", str(path))
    doc = json.loads(out)
    assert code == 1
    assert "no valid EFI system table in the image" in doc["problems"]
    assert not any(t["covered"] for t in doc["tables"])


def test_v420_layout_is_detected(tmp_path: Path) -> None:
    w = World.build("efi-server-8", seed=2)
    w.add_device("eth0", device_id=0x100, nvec=4)
    w.boot("v4.20")
    path = tmp_path / "v420.elf"
    assert w.firmware is not None
    write_vmcore(w.machine.mem, path, info=machine_info(w.machine, w.firmware.systab))
    code, out = _cli("inspect", "--json", str(path))
    doc = json.loads(out)
    assert code == 0, doc["problems"]
    assert doc["memreserve"]["layout"] == "v4.20"
    assert doc["memreserve"]["entries"] == 9  # property table + 8 pending tables
    # forcing the other layout misreads the chain: the tables are no longer covered
    code, out = _cli("inspect", "--json", "--layout", "v5.0", str(path))
    assert code == 1


# -- a hand-built image: discovery, scanning, registers -----------------------------------


def _small_memory(*, stray: int = 0, entries: int = 2, cyclic: bool = False) -> PhysicalMemory:
    mem = PhysicalMemory([MemRegion(BASE, 1 << 20, "System RAM")])
    for i in range(stray):  # signature copies that are no system table
        mem.write(BASE + 0x100 + 0x40 * i, b"IBI SYST" + bytes(16), FW)
    st = EfiSystemTable(
        revision=(2 << 16) | 70,
        firmware_vendor=0,
        firmware_revision=1,
        runtime_services=0,
        boot_services=0,
        number_of_table_entries=1,
        configuration_table=CFG,
    )
    mem.write(SYSTAB, st.to_bytes(), FW)
    mem.write(CFG, ConfigTableEntry(LINUX_EFI_MEMRESERVE_TABLE_GUID, ROOT).to_bytes(), FW)
    mem.write(ROOT, struct.pack("<iiQ", 0, 0, NODE), FW)
    body = [(PROP, 0x10000), (PEND, 0x10000)][:entries]
    nxt = ROOT if cyclic else 0
    hdr = MemreserveHeader(size=255, count=len(body), next=nxt)
    mem.write(NODE, hdr.to_bytes() + b"".join(MemreserveHeader.pack_entry(*e) for e in body), FW)
    mem.write_u8(PROP + 5, 0xA1, FW)  # LPI 8197 enabled, priority 0xa0
    mem.write_u8(PEND + 8200 // 8, 1 << (8200 % 8), FW)
    return mem


def _raw(tmp_path: Path, mem: PhysicalMemory) -> Path:
    path = tmp_path / "raw.bin"
    path.write_bytes(mem.read(BASE, 1 << 20))
    return path


def test_raw_image_scan_skips_stray_signatures(tmp_path: Path) -> None:
    path = _raw(tmp_path, _small_memory(stray=3))
    with open_image(path, base=BASE) as img:
        found, seen = find_systab(img)
    assert found == SYSTAB
    assert len(seen) == 3 and all("header size" in s for s in seen)
    code, out = _cli(
        "inspect",
        str(path),
        "--base",
        hex(BASE),
        "--propbaser",
        hex(PROP | 15),
        "--pendbaser",
        f"0={PEND:#x}",
    )
    assert code == 0, out
    assert "found by scanning for 'IBI SYST'" in out
    assert "1 LPI(s) enabled; priorities: 0xa0 x1" in out
    assert "1 LPI(s) pending: 8200" in out


def test_a_signature_with_a_bad_crc_is_not_trusted(tmp_path: Path) -> None:
    mem = _small_memory()
    mem.write_u8(SYSTAB + 40, 0x55, FW)  # inside the header: CRC no longer matches
    with open_image(_raw(tmp_path, mem), base=BASE) as img:
        found, seen = find_systab(img)
    assert found is None and "CRC32 mismatch" in seen[0]


def test_uncovered_table_and_given_root(tmp_path: Path) -> None:
    path = _raw(tmp_path, _small_memory(entries=1))
    code, out = _cli(
        "inspect",
        str(path),
        "--base",
        hex(BASE),
        "--memreserve",
        hex(ROOT),
        "--prop",
        hex(PROP),
        "--pend",
        f"3={PEND:#x}",
        "--json",
    )
    doc = json.loads(out)
    assert code == 1
    assert [t["covered"] for t in doc["tables"]] == [True, False]
    assert doc["memreserve"]["how"] == "given (--memreserve)"
    assert "CPU3 pending table" in doc["problems"][0]


def test_cyclic_chain_is_bounded_and_flagged(tmp_path: Path) -> None:
    path = _raw(tmp_path, _small_memory(cyclic=True))
    code, out = _cli("inspect", str(path), "--base", hex(BASE), "--json")
    doc = json.loads(out)
    assert doc["memreserve"]["error"].startswith("cycle")
    assert any("memreserve walk stopped" in p for p in doc["problems"])
    # no live table was named: nothing was checked, and inspect does not claim "ok"
    assert code == 1 and any("nothing was checked" in p for p in doc["problems"])


def test_register_values_give_table_sizes() -> None:
    tables = tables_from_registers(PROP | 15, {1: PEND | (1 << 62)})
    assert [(t.kind, t.addr, t.size, t.cpu) for t in tables] == [
        ("prop", PROP, 0x10000 - 8192, None),
        ("pend", PEND, 0x2000, 1),
    ]


# -- bad input and hostile images ---------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--pendbaser", "zero"], "expected CPU=VALUE"),
        (["--propbaser", "0xzz"], "is not a number"),
        (["--base", "0x123"], "page-aligned"),
    ],
)
def test_bad_options_exit_2(tmp_path: Path, args: list[str], fragment: str) -> None:
    path = _raw(tmp_path, _small_memory())
    extra = [] if "--base" in args else ["--base", hex(BASE)]
    r = CliRunner().invoke(main, ["inspect", str(path), *extra, *args])
    assert r.exit_code == 2 and fragment in r.output


def _elf(tmp_path: Path) -> bytes:
    path = tmp_path / "small.elf"
    write_vmcore(_small_memory(), path, info={"EFI_SYSTAB": SYSTAB})
    return path.read_bytes()


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda b: b"", "empty file"),
        (lambda b: b"not an elf at all", "not an ELF core"),
        (lambda b: b[:40], "malformed ELF"),
        (lambda b: b[: len(b) // 2], "truncated image"),
        (lambda b: b[:16] + struct.pack("<H", 2) + b[18:], "not a core dump"),
    ],
)
def test_hostile_files_get_a_clear_error(tmp_path: Path, mutate: Any, fragment: str) -> None:
    path = tmp_path / "bad.elf"
    path.write_bytes(mutate(_elf(tmp_path)))
    r = CliRunner().invoke(main, ["inspect", str(path)])
    assert r.exit_code == 2, r.output
    assert fragment in r.output


def test_overlapping_segments_are_trimmed_with_a_warning(tmp_path: Path) -> None:
    data = bytearray(_elf(tmp_path))
    # duplicate the single PT_LOAD header over the PT_NOTE one: two identical segments
    ph = 64
    data[ph : ph + 56] = data[ph + 56 : ph + 112]
    path = tmp_path / "dup.elf"
    path.write_bytes(bytes(data))
    with open_image(path) as img:
        assert len(img.segments) == 1
        assert "overlaps" in img.warnings[0]
        doc = inspect_image(img, systab=SYSTAB)
    assert doc["memreserve"]["entries"] == 2


def test_systab_crc_covers_the_whole_header() -> None:
    raw = bytearray(_small_memory().read(SYSTAB, 120))
    assert zlib.crc32(bytes(raw[:16]) + bytes(4) + bytes(raw[20:120])) == int.from_bytes(
        raw[16:20], "little"
    )


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    flips=st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), max_size=12),
    cut=st.none() | st.integers(0, 1 << 20),
)
def test_corrupted_images_never_crash_or_hang(
    tmp_path: Path, flips: list[tuple[int, int]], cut: int | None
) -> None:
    data = bytearray(_elf(tmp_path))
    hot = [0, 64, 120, 4096]  # headers, the note, the first page of data
    for pos, value in flips:
        target = hot[pos % len(hot)] + pos % 64 if pos % 3 == 0 else pos % len(data)
        data[target % len(data)] = value
    if cut is not None:
        data = data[: cut % (len(data) + 1)]
    path = tmp_path / "fuzz.elf"
    path.write_bytes(bytes(data))
    r = CliRunner().invoke(main, ["inspect", "--json", str(path)])
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    assert r.exit_code in (0, 1, 2)
    if r.exit_code in (0, 1):
        json.loads(r.output)


def test_image_error_for_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="No such file"):
        open_image(tmp_path / "nope.elf")


def test_drgn_reads_the_models_memory() -> None:
    pytest.importorskip("drgn")
    w = World.build("efi-server-8", seed=1)
    w.boot("v6.6")
    assert w.firmware is not None
    prog = drgn_program(w.machine.mem)
    assert prog.read(w.firmware.systab, 8, True) == b"IBI SYST"


def test_inspect_text_golden(tmp_path: Path) -> None:
    path = _raw(tmp_path, _small_memory())
    code, out = _cli(
        "inspect", str(path), "--base", hex(BASE), "--prop", hex(PROP), "--pend", f"0={PEND:#x}"
    )
    assert code == 0
    assert out.replace(str(path), "IMG") == (
        "image  IMG (raw, 1 segment(s))\n"
        "EFI system table @0x40001018 (found by scanning for 'IBI SYST'), UEFI 2.7, CRC ok\n"
        "  config table 888eb0c6-8ede-4ff5-a8f0-9aee5cb977c2 MEMRESERVE -> 0x40003e98\n"
        "efi: MEMRESERVE=0x40003e98 (found by scanning for 'IBI SYST'); layout v5.0 "
        "(size/count zero, next at offset 8); 2 node(s) counting the root, 2 reservation(s)\n"
        "  node @0x40003e98 size 0 count 0 next 0x40005000\n"
        "  node @0x40005000 size 255 count 2 next 0x0\n"
        "    reserved [0x000040010000-0x00004001ffff]\n"
        "    reserved [0x000040020000-0x00004002ffff]\n"
        "live LPI tables (named by options):\n"
        "LPI property table [0x000040010000-0x00004001dfff] reserved\n"
        "  1 LPI(s) enabled; priorities: 0xa0 x1\n"
        "CPU0 LPI pending table [0x000040020000-0x000040021fff] reserved\n"
        "  1 LPI(s) pending: 8200\n"
        "ok: all 2 live LPI table(s) checked are covered by the memreserve list\n"
    )


def test_inspect_without_live_tables_says_nothing_was_checked(tmp_path: Path) -> None:
    """No table named, no GICKEXEC note: no "ok" claim, exit 1 (issue 11)."""
    path = _raw(tmp_path, _small_memory())
    code, out = _cli("inspect", str(path), "--base", hex(BASE))
    assert code == 1
    assert "ok: " not in out and out.rstrip().endswith("NOT OK: nothing could be checked")
    assert "nothing was checked against the memreserve list" in out


def test_inspect_colours_the_verdict_only_when_asked(tmp_path: Path) -> None:
    path = _raw(tmp_path, _small_memory())
    plain = CliRunner().invoke(main, ["inspect", str(path), "--base", hex(BASE)]).stdout
    coloured = (
        CliRunner()
        .invoke(main, ["inspect", str(path), "--base", hex(BASE), "--color", "always"])
        .stdout
    )
    assert "\x1b[" not in plain
    assert "\x1b[31m\x1b[1mNOT OK: nothing could be checked\x1b[0m" in coloured


def _with_log(mem: PhysicalMemory, at: int, lines: list[str]) -> PhysicalMemory:
    mem.write(at, "\n".join(lines).encode() + b"\n", FW)
    return mem


def test_inspect_finds_live_tables_in_the_kernel_log(tmp_path: Path) -> None:
    """No options, no note: the printk lines in memory name the tables (issue 11)."""
    log = [
        f"GICv3: using LPI property table @0x{PROP:016x}",
        f"GICv3: CPU0: using allocated LPI pending table @0x{PEND:016x}",
    ]
    path = _raw(tmp_path, _with_log(_small_memory(), BASE + 0x8_0000, log))
    code, out = _cli("inspect", str(path), "--base", hex(BASE))
    assert code == 0, out
    assert "live LPI tables (from kernel log lines in the image):" in out
    assert "CPU0 LPI pending table [0x000040020000-0x000040021fff] reserved" in out
    # an older kernel's line for a table nobody reserved makes it NOT OK
    stale = _with_log(
        _small_memory(),
        BASE + 0x8_0000,
        [*log, "CPU1: using LPI pending table @0x0000000040060000"],
    )
    code, out = _cli("inspect", str(_raw(tmp_path, stale)), "--base", hex(BASE))
    assert (
        code == 1 and "CPU1 LPI pending table [0x000040060000-0x000040061fff] NOT RESERVED" in out
    )


def test_log_lines_split_across_chunks_are_found(tmp_path: Path) -> None:
    line = f"CPU7: using LPI pending table @0x{PEND:016x}"
    at = BASE + 0x4_0000 - 20  # the line straddles a 256 KiB chunk boundary
    path = _raw(tmp_path, _with_log(_small_memory(), at, [line]))
    with open_image(path, base=BASE) as img:
        found = tables_from_log(img, chunk=0x4_0000)
    assert [(t.kind, t.cpu, t.addr) for t in found] == [("pend", 7, PEND)]
