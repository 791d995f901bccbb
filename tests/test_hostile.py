"""Hostile input and faults (issue 12): every class runs the real command line in a
subprocess under a time limit and an address-space limit, and asserts the exit status and
the message.  A hang fails on the timeout, unbounded memory on RLIMIT_AS, a traceback on
the exit status (1 or 3 instead of 2) and the missing message.
"""

from __future__ import annotations

import copy
import json
import os
import resource
import select
import stat
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gickexec.arch.efi import MemreserveHeader
from gickexec.bounded import MAX_INPUT_BYTES
from gickexec.cli import main
from gickexec.inspect.analyze import MAX_ENTRIES
from gickexec.report.document import (
    MAX_DRAWN,
    MAX_GENERATIONS,
    MAX_TIMELINE,
    ResultDocumentError,
    bound_results,
)
from gickexec.scenario.builtin import builtin_names, builtin_text
from gickexec.scenario.schema import (
    MAX_MSIS_PER_STEP,
    MAX_SCENARIO_BYTES,
    MAX_STEPS,
    MAX_TOTAL_MSIS,
    ScenarioError,
    parse_scenario,
)
from test_schema import MINIMAL  # boot v6.6, then 4 MSIs from eth0 (steps[0], steps[1])

#: Every attempt must end within this many seconds ...
TIMEOUT = 60
#: ... and within this much address space (the interpreter with numpy and matplotlib
#: needs about 700 MiB of it).
ADDRESS_SPACE = 1536 << 20


def _limits() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


# One interpreter under the limits plays every case in turn (starting one per case would
# cost a second of imports each): it reads {"args", "env", "umask"} lines and answers
# {"code", "out", "err"}; SIGALRM ends a case that runs past TIMEOUT.
_WORKER = r"""
import contextlib, io, json, os, signal, sys, traceback
from gickexec.cli import main

def _expired(*_):
    raise TimeoutError("case ran past its time limit")

signal.signal(signal.SIGALRM, _expired)
for line in sys.stdin:
    case = json.loads(line)
    out, err = io.StringIO(), io.StringIO()
    saved_env, saved_umask = dict(os.environ), os.umask(case["umask"])
    os.environ.update(case["env"])
    code = 0
    signal.alarm(case["timeout"])
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main.main(case["args"], prog_name="gickexec")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
    except BaseException:
        code, _ = -1, err.write(traceback.format_exc())
    finally:
        signal.alarm(0)
        os.umask(saved_umask)
        os.environ.clear()
        os.environ.update(saved_env)
    print(json.dumps({"code": code, "out": out.getvalue(), "err": err.getvalue()}), flush=True)
"""


class _Worker:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _WORKER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=_limits,  # noqa: PLW1509 - the test process starts no threads
        )

    def run(self, args: list[str], env: dict[str, str], umask: int) -> tuple[int, str, str]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        case = {"args": args, "env": env, "umask": umask, "timeout": TIMEOUT}
        self.proc.stdin.write(json.dumps(case) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], TIMEOUT + 10)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            self.proc.kill()
            pytest.fail(f"gickexec {args[:3]}: no answer within {TIMEOUT} s (hang or crash)")
        answer = json.loads(line)
        return answer["code"], answer["out"], answer["err"]

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


_worker: _Worker | None = None


@pytest.fixture(scope="module", autouse=True)
def _one_worker() -> Iterator[None]:
    yield
    if _worker is not None:
        _worker.close()


def _gickexec(
    *args: str | Path, env: dict[str, str] | None = None, umask: int = 0o022
) -> tuple[int, str, str]:
    """The command line in the bounded worker: (status, stdout, stderr)."""
    global _worker  # noqa: PLW0603 - one worker for the module, restarted after a failure
    if _worker is None or _worker.proc.poll() is not None:
        _worker = _Worker()
    return _worker.run([str(a) for a in args], env or {}, umask)


def _bad(args: list[str | Path], *fragments: str) -> str:
    """Exit status 2 with one ``gickexec: error:`` line holding every fragment."""
    code, _, err = _gickexec(*args)
    assert code == 2, err
    assert "Traceback" not in err
    assert err.startswith("gickexec: error:") or err.startswith("Usage:"), err
    for fragment in fragments:
        assert fragment in err, err
    return err


def _scenario(tmp_path: Path, text: str, name: str = "s.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# -- integers beyond the int/str conversion limit -------------------------------------------

HUGE_DECIMAL = "9" * 5000
HUGE_HEX = "0x" + "f" * 5000


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        (f"seed = {HUGE_DECIMAL}\n" + MINIMAL, ["s.toml:", "not valid TOML", "4300"]),
        (f"seed = {HUGE_HEX}\n" + MINIMAL, ["s.toml:1:", "'seed'", "20000-bit integer"]),
        (MINIMAL + f"\n[expect]\nmsis_sent = {HUGE_HEX}\n", ["'expect.msis_sent'", "bit integer"]),
        (
            MINIMAL + f"\n[expect]\nmsis_lost = {{ max = {HUGE_HEX} }}\n",
            ["'expect.msis_lost.max'"],
        ),
        (
            MINIMAL.replace(
                'kernel = "v6.6"', f'kernel = "v6.6"\ncmdline = "nr_cpus={"9" * 5000}"'
            ),
            ["'steps[0].cmdline'", "nr_cpus=999", "..."],
        ),
        (
            MINIMAL.replace(
                'kernel = "v6.6"', f'kernel = "v6.6"\ncmdline = "crashkernel={"9" * 5000}M"'
            ),
            ["'steps[0].cmdline'", "out of range"],
        ),
        (
            MINIMAL.replace("device_id = 0x100", f"device_id = {HUGE_HEX}"),
            ["'devices[0].device_id'", "must be 0..65535"],
        ),
        (
            f'platform = "efi-server-8"\n[knobs]\nitt_entry_size = {HUGE_HEX}\n',
            ["s.toml:3:", "'knobs.itt_entry_size'", "must be in"],
        ),
    ],
)
def test_huge_integers_are_clear_errors(tmp_path: Path, text: str, fragments: list[str]) -> None:
    _bad(["run", _scenario(tmp_path, text)], *fragments)


@pytest.mark.parametrize("value", ["²", "١", "٣٢", "4\u0660"])
def test_non_ascii_digits_are_no_numbers(tmp_path: Path, value: str) -> None:
    text = MINIMAL.replace('kernel = "v6.6"', f'kernel = "v6.6"\ncmdline = "maxcpus={value}"')
    _bad(["run", _scenario(tmp_path, text)], "'steps[0].cmdline'", "expects a number of CPUs")
    text = MINIMAL.replace('kernel = "v6.6"', f'kernel = "v6.6"\ncmdline = "crashkernel={value}M"')
    _bad(["run", _scenario(tmp_path, text)], "'steps[0].cmdline'", "is not a size")


# -- deep nesting -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", ["[" * 100_000 + "]" * 100_000, "{a = " * 5000 + "1" + "}" * 5000]
)
def test_deeply_nested_toml_is_an_error(tmp_path: Path, value: str) -> None:
    _bad(["run", _scenario(tmp_path, MINIMAL + f"x = {value}\n")], "s.toml", "not valid TOML")


def test_deeply_nested_json_is_an_error(tmp_path: Path) -> None:
    doc = tmp_path / "r.json"
    doc.write_text('{"scenarios": ' + "[" * 200_000 + "]" * 200_000 + "}")
    _bad(["report", doc, "-o", tmp_path / "out"], "nested too deeply")
    doc.write_text('{"scenarios": [' + "{" + '"a": {' * 40 + "}" * 40 + "}]}")
    _bad(["report", doc, "-o", tmp_path / "out"], "nested more than")


# -- special and oversized files --------------------------------------------------------------


@pytest.mark.parametrize("special", ["/dev/zero", "/dev/urandom", "/dev/null"])
def test_character_devices_are_not_read(tmp_path: Path, special: str) -> None:
    if not os.path.exists(special):
        pytest.skip(f"no {special}")
    _bad(["run", special], special, "not a regular file")
    _bad(["report", special, "-o", tmp_path / "out"], "not a regular file")
    _bad(["inspect", special], "not a regular file")


def test_a_fifo_does_not_block(tmp_path: Path) -> None:
    fifo = tmp_path / "f.toml"
    os.mkfifo(fifo)
    _bad(["run", fifo], "not a regular file")
    _bad(["report", fifo, "-o", tmp_path / "out"], "not a regular file")
    _bad(["inspect", fifo], "not a regular file")


def test_over_long_names_are_clear_errors(tmp_path: Path) -> None:
    _bad(["run", "x" * 5000 + ".toml"], "File name too long")
    _bad(["run", "x" * 5000], "no such file")
    _bad(["inspect", "x" * 5000], "File name too long")


def test_oversized_inputs_are_refused_before_reading(tmp_path: Path) -> None:
    big = tmp_path / "big.toml"
    with big.open("wb") as f:
        f.truncate(MAX_SCENARIO_BYTES + 1)  # sparse: costs nothing to make
    _bad(["run", big], f"more than {MAX_SCENARIO_BYTES}")
    doc = big.rename(tmp_path / "big.json")
    with doc.open("wb") as f:
        f.truncate(MAX_INPUT_BYTES + 1)
    _bad(["report", doc, "-o", tmp_path / "out"], f"more than {MAX_INPUT_BYTES}")


# -- error locations ----------------------------------------------------------------------------


def test_a_bad_knob_is_reported_at_its_own_line(tmp_path: Path) -> None:
    text = 'platform = "efi-server-8"\n\n[knobs]\nenable_lpis_clearable = true\nhcc = "x"\n'
    _bad(["run", _scenario(tmp_path, text + MINIMAL[26:])], "s.toml:5:", "'knobs.hcc'")


def test_devices_as_a_table_is_reported_at_its_header(tmp_path: Path) -> None:
    text = MINIMAL.replace("[[devices]]", "[devices]")
    _bad(["run", _scenario(tmp_path, text)], "s.toml:3:", "'devices'", "array of tables")


def test_repeat_beyond_the_step_limit_is_reported_at_its_times(tmp_path: Path) -> None:
    text = (
        MINIMAL
        + f"""
[[steps]]
action = "repeat"
times = {MAX_STEPS}
steps = [{{ action = "page-cache", fraction = 0.1 }}, {{ action = "page-cache", fraction = 0.1 }}]
"""
    )
    line = text.splitlines().index(f"times = {MAX_STEPS}") + 1
    _bad(["run", _scenario(tmp_path, text)], f"s.toml:{line}:", "'steps[2].times'", "steps")


# -- unbounded work -----------------------------------------------------------------------------


def _traffic(msis: int) -> str:
    return f'{{ action = "traffic", device = "eth0", msis = {msis} }}'


@pytest.mark.parametrize(
    ("extra", "fragments"),
    [
        (
            f'[[steps]]\naction = "traffic"\ndevice = "eth0"\nmsis = {MAX_MSIS_PER_STEP + 1}\n',
            ["'steps[2].msis'", f"0..{MAX_MSIS_PER_STEP}"],
        ),
        (
            f'[[steps]]\naction = "repeat"\ntimes = 3\nsteps = [{_traffic(MAX_MSIS_PER_STEP)}]\n',
            ["'steps[2].times'", f"more than {MAX_TOTAL_MSIS} MSIs"],
        ),
        (
            f'[[steps]]\naction = "kdump"\nkernel = "v6.6"\n'
            f"inflight_msis = {MAX_MSIS_PER_STEP + 1}\n",
            ["'steps[2].inflight_msis'"],
        ),
    ],
)
def test_work_beyond_the_bounds_is_refused_before_anything_runs(
    tmp_path: Path, extra: str, fragments: list[str]
) -> None:
    _bad(["run", _scenario(tmp_path, MINIMAL + extra)], *fragments)


def test_the_documented_bounds_finish_in_seconds(tmp_path: Path) -> None:
    """The most MSIs the bounds allow play within the timeout."""
    half = (MAX_TOTAL_MSIS - 4) // 2  # MINIMAL sends 4 already
    assert half <= MAX_MSIS_PER_STEP
    text = (
        MINIMAL
        + f"""
[[steps]]
action = "repeat"
times = 2
steps = [{_traffic(half)}]
"""
    )
    code, out, err = _gickexec("run", "--no-logs", _scenario(tmp_path, text))
    assert code == 0, err
    assert f"sent {MAX_TOTAL_MSIS}, delivered {MAX_TOTAL_MSIS}, lost 0" in out


# -- command-line values -------------------------------------------------------------------------


def test_run_seed_is_bounded_like_a_files_seed() -> None:
    _bad(["run", "--seed", str(10**100), "efi-kexec-fixed"], "--seed")
    _bad(["matrix", "--seed", str(2**63 + 1)], "--seed")


@pytest.mark.parametrize("option", ["--memreserve", "--systab", "--prop", "--base"])
def test_negative_or_huge_inspect_addresses_are_refused(tmp_path: Path, option: str) -> None:
    image = tmp_path / "raw"
    image.write_bytes(bytes(4096))
    _bad(["inspect", image, "--base", "0", option, "-0x1000"], "-0x1000", "is not a number")
    _bad(["inspect", image, "--base", "0", option, "0x" + "f" * 5000], "out of range")
    _bad(["inspect", image, "--base", "0", "--pend", "0=-4096"], "--pend")


def test_matrix_refuses_freebsd_kboot_as_the_kernel_kexecd_from() -> None:
    for args in (["--from", "freebsd-kboot", "--to", "v6.6"], ["--to", "freebsd-kboot"]):
        _bad(["matrix", *args], "freebsd-kboot cannot be kexec'd or kdumped from")
    _bad(["matrix", "--from", "all", "--to", "freebsd-kboot"], "no Linux profile in --to")
    code, out, err = _gickexec(
        "matrix", "--from", "all", "--to", "v6.6,freebsd-kboot", "--platform", "efi-server-8",
        "--boot", "efi", "--mode", "kexec",
    )  # fmt: skip
    assert code == 0, err
    assert "v6.6 -> freebsd-kboot" in out
    assert "freebsd-kboot ->" not in out  # 'all' kexecs from the Linux profiles only


def test_scenarios_refuse_freebsd_kboot_where_it_cannot_run(tmp_path: Path) -> None:
    text = MINIMAL.replace('kernel = "v6.6"', 'kernel = "freebsd-kboot"')
    _bad(["run", _scenario(tmp_path, text)], "'steps[0].kernel'", "cannot boot from firmware")
    text = MINIMAL + '[[steps]]\naction = "kexec"\nkernel = "freebsd-kboot"\n' * 2
    _bad(["run", _scenario(tmp_path, text)], "'steps[3].action'", "cannot kexec")


# -- inspect: hostile images ---------------------------------------------------------------------

_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_PHDR = struct.Struct("<IIQQQQQQ")
_IDENT = b"\x7fELF" + bytes((2, 1, 1, 0)) + bytes(8)


def _core(path: Path, phoff: int, phdrs: list[bytes], tail: int = 8192) -> Path:
    ehdr = _EHDR.pack(_IDENT, 4, 183, 1, 0, phoff, 0, 0, 64, 56, len(phdrs), 64, 0, 0)
    path.write_bytes(ehdr + b"".join(phdrs) + bytes(tail))
    return path


_LOAD = _PHDR.pack(1, 7, 4096, 0, 0x1000, 4096, 4096, 4096)


@pytest.mark.parametrize("phoff", [2**62, 2**63 + 5, 2**64 - 64])
def test_elf_header_offsets_beyond_a_seek_are_clear_errors(tmp_path: Path, phoff: int) -> None:
    _bad(["inspect", _core(tmp_path / "c.elf", phoff, [_LOAD])], "malformed ELF")


def test_a_note_offset_beyond_a_seek_is_a_warning(tmp_path: Path) -> None:
    note = _PHDR.pack(4, 0, 2**62, 0, 0, 100, 100, 4)
    code, out, err = _gickexec("inspect", "--json", _core(tmp_path / "c.elf", 64, [note, _LOAD]))
    assert code == 1, err  # read, but no live table known: nothing could be checked
    assert any("PT_NOTE" in w for w in json.loads(out)["image"]["warnings"])


def test_an_8_gib_core_is_read_when_mapping_it_fails(tmp_path: Path) -> None:
    """8 GiB do not fit the address-space limit: the image is read with pread."""
    size = 8 << 30
    assert size > ADDRESS_SPACE
    core = _core(tmp_path / "c.elf", 64, [_PHDR.pack(1, 7, 4096, 0, 0x4000_0000, size, size, 4096)])
    with core.open("r+b") as f:
        f.truncate(4096 + size)
        f.seek(4096 + size - 4096)
        f.write(b"IBI SYST")  # a stray signature at the far end: the scan reads there
    code, out, err = _gickexec("inspect", "--json", core)
    assert code == 1, err  # read, but no live table known: nothing could be checked
    doc = json.loads(out)
    assert doc["image"]["segments"] == [{"paddr": 0x4000_0000, "size": size}]
    assert any("header size" in s for s in doc["systab_scan"])


RAW_BASE = 0x4000_0000


def _raw_chain(tmp_path: Path, pages: int, count: int) -> Path:
    """A v5.0 memreserve chain, one full node per page from :data:`RAW_BASE`."""
    nodes = []
    for i in range(pages):
        nxt = RAW_BASE + (i + 1) * 4096 if i + 1 < pages else 0
        entries = struct.pack(f"<{2 * count}Q", *([0x8000_0000 + i * 4096, 4096] * count))
        node = MemreserveHeader(size=count, count=count, next=nxt).to_bytes() + entries
        nodes.append(node + bytes(4096 - len(node)))
    path = tmp_path / "chain.raw"
    path.write_bytes(b"".join(nodes))
    return path


def test_a_memreserve_chain_of_millions_of_entries_is_bounded(tmp_path: Path) -> None:
    image = _raw_chain(tmp_path, 4096, 255)  # 1,044,480 valid reservations, 16 MiB
    code, out, err = _gickexec(
        "inspect", image, "--base", hex(RAW_BASE), "--memreserve", hex(RAW_BASE), "--json"
    )
    assert code == 1, err  # walked (bounded), but no live table known to check
    assert len(out) < 16 << 20
    doc = json.loads(out)
    assert doc["memreserve"]["entries"] <= MAX_ENTRIES
    assert doc["memreserve"]["error"] == f"more than {MAX_ENTRIES} reservations"
    assert any("walk stopped" in p for p in doc["problems"])


def test_propbaser_idbits_too_small_is_no_reserved_table(tmp_path: Path) -> None:
    image = tmp_path / "raw"
    image.write_bytes(bytes(8192))
    code, out, err = _gickexec(
        "inspect", image, "--base", "0", "--memreserve", "0", "--propbaser", "0x1000", "--json"
    )  # IDbits 0: one INTID bit
    assert code == 0, err
    (table,) = json.loads(out)["tables"]
    assert table["size"] == 0
    assert table["covered"] is False
    assert "fewer than 14 INTID bits" in table["error"]


# -- report: hostile result documents ------------------------------------------------------------


@pytest.fixture(scope="module")
def result_doc(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    path = tmp_path_factory.mktemp("doc") / "r.json"
    code, out, err = _gickexec("run", "--json", "efi-kexec-unfixed")
    assert code == 0, err
    path.write_text(out)
    doc: dict[str, Any] = json.loads(out)
    return doc


def _report(tmp_path: Path, doc: dict[str, Any]) -> tuple[int, str]:
    tmp_path.mkdir(exist_ok=True)
    path = tmp_path / "r.json"
    path.write_text(json.dumps(doc))
    code, _, err = _gickexec("report", path, "-o", tmp_path / "out")
    assert "Traceback" not in err
    return code, err


@pytest.mark.parametrize("value", [2**80, 2**63, -(2**70)])
def test_counts_beyond_a_c_long_are_refused(
    tmp_path: Path, result_doc: dict[str, Any], value: int
) -> None:
    doc = copy.deepcopy(result_doc)
    doc["scenarios"][0]["msis"]["delivered_per_cpu"]["0"] = value
    code, err = _report(tmp_path, doc)
    assert code == 2
    assert "msis.delivered_per_cpu.0" in err


def test_huge_json_integers_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_text('{"scenarios": [' + "9" * 5000 + "]}")
    _bad(["report", path, "-o", tmp_path / "out"], "not readable JSON", "4300")


def test_huge_documents_are_bounded_and_say_what_was_left_out(
    tmp_path: Path, result_doc: dict[str, Any]
) -> None:
    doc = copy.deepcopy(result_doc)
    sc = doc["scenarios"][0]
    gen = sc["generations"][1]
    first = gen["memory_map"][0]
    gen["memory_map"] = [
        dict(first, start=first["start"] + i * 4096, size=4096) for i in range(30_000)
    ]
    gen["reserved"] = [{"start": first["start"] + i * 8192, "size": 4096} for i in range(30_000)]
    small = dict(gen, memory_map=gen["memory_map"][:4], reserved=[], log=gen["log"][:4])
    sc["generations"] += [dict(small, index=i + 2) for i in range(10_000)]
    sc["timeline"] = [dict(sc["timeline"][-1], step=i) for i in range(30_000)]
    sc["corruption"]["events"] = sc["corruption"]["events"] * 4000
    code, err = _report(tmp_path, doc)
    assert code == 0, err
    assert f"generations: 10002, the first {MAX_GENERATIONS} shown" in err
    assert "gen 1 memory_map: 30000 ranges drawn as" in err
    assert "30000 timeline points, every 60th drawn" in err
    assert "corruption events: 32000, the first" in err
    assert (tmp_path / "out" / "index.html").exists()


# -- outputs -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["fifo", "symlink", "device"])
def test_export_vmcore_refuses_targets_that_are_not_regular_files(
    tmp_path: Path, kind: str
) -> None:
    target = tmp_path / "core"
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "symlink":
        (tmp_path / "victim").write_text("keep me")
        target.symlink_to(tmp_path / "victim")
    else:
        target = Path("/dev/null")
    _bad(["run", "efi-kexec-fixed", "--export-vmcore", target], "not a regular file")
    if kind == "symlink":
        assert target.is_symlink() and (tmp_path / "victim").read_text() == "keep me"
    if kind == "fifo":
        assert stat.S_ISFIFO(os.lstat(target).st_mode)


def test_export_vmcore_into_a_missing_directory_is_refused_before_the_run(tmp_path: Path) -> None:
    code, out, err = _gickexec("run", "efi-kexec-fixed", "--export-vmcore", tmp_path / "no" / "c")
    assert code == 2
    assert "no such directory" in err
    assert out == ""  # refused before the scenario played


def test_export_vmcore_keeps_modes_and_removes_stale_temporaries(tmp_path: Path) -> None:
    target = tmp_path / "core"
    stale = tmp_path / f".core.tmp-{2**22 + 12345}.abc"  # above Linux's pid_max default
    stale.write_bytes(b"left by a killed run")
    code, _, err = _gickexec("run", "efi-kexec-fixed", "--export-vmcore", target, umask=0o027)
    assert code == 0, err
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert not stale.exists()
    target.chmod(0o604)
    code, _, err = _gickexec("run", "efi-kexec-fixed", "--export-vmcore", target)
    assert code == 0, err
    assert stat.S_IMODE(target.stat().st_mode) == 0o604
    assert [p.name for p in tmp_path.iterdir()] == ["core"]


# -- internal errors -----------------------------------------------------------------------------

_BROKEN = (
    "import gickexec.cli as c\n"
    "def boom(*a, **k): raise ZeroDivisionError('model bug')\n"
    "c.run_scenario = boom\n"
    "c.main()\n"
)


def test_internal_errors_have_their_own_status_and_one_line() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _BROKEN, "run", "efi-kexec-fixed"],
        capture_output=True, text=True, timeout=TIMEOUT, check=False,
        env={k: v for k, v in os.environ.items() if k != "GICKEXEC_DEBUG"},
    )  # fmt: skip
    assert proc.returncode == 3
    assert proc.stderr.splitlines() == [
        "gickexec: internal error: ZeroDivisionError: model bug "
        "(a bug; GICKEXEC_DEBUG=1 shows the traceback)"
    ]
    proc = subprocess.run(
        [sys.executable, "-c", _BROKEN, "run", "efi-kexec-fixed"],
        capture_output=True, text=True, timeout=TIMEOUT, check=False,
        env={**os.environ, "GICKEXEC_DEBUG": "1"},
    )  # fmt: skip
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "ZeroDivisionError: model bug" in proc.stderr


# -- hypothesis: mutations of valid documents ----------------------------------------------------

_HOSTILE_VALUES = st.one_of(
    st.integers(min_value=-(2**200), max_value=2**200),
    st.sampled_from([2**64, 2**63, -1, 0, "", "²", "x" * 200, True, 1.5e300]),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.sampled_from(["min", "max", "first", "x"]), st.integers(), max_size=2),
    st.text(max_size=8),
)


@st.composite
def _mutated_scenario(draw: st.DrawFn) -> str:
    """A built-in scenario with a few hostile edits: a value replaced, a line dropped or
    repeated, a table header turned into the other kind."""
    lines = builtin_text(draw(st.sampled_from(builtin_names()))).splitlines()
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(lines) - 1))
        edit = draw(st.sampled_from(["value", "drop", "repeat", "header"]))
        if edit == "value" and " = " in lines[i] and not lines[i].startswith("#"):
            lines[i] = f"{lines[i].split(' = ')[0]} = {_toml(draw(_HOSTILE_VALUES))}"
        elif edit == "drop":
            del lines[i]
        elif edit == "repeat":
            lines.insert(i, lines[i])
        elif edit == "header" and lines[i].startswith("["):
            inner = lines[i].strip("[]")
            lines[i] = f"[{inner}]" if lines[i].startswith("[[") else f"[[{inner}]]"
        if not lines:
            lines = [""]
    return "\n".join(lines) + "\n"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return hex(value) if value >= 0 else str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"


@settings(max_examples=150, deadline=None)
@given(_mutated_scenario())
def test_mutated_scenarios_validate_or_fail_with_a_scenario_error(text: str) -> None:
    try:
        parse_scenario(text, "m.toml")
    except ScenarioError as e:
        assert str(e).startswith("m.toml")
        assert len(str(e)) < 2000


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value in ``doc`` (bounded: lists contribute their first items)."""
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in list(doc.items())[:40]:
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc[:3]):
            out += _paths(v, (*prefix, i))
    return out


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_mutated_result_documents_are_bounded_or_refused(
    result_doc: dict[str, Any], data: st.DataObject
) -> None:
    """The check before rendering: a ResultDocumentError, or a document whose every
    number fits 64 bits and whose drawn lists are within the bounds."""
    doc = copy.deepcopy(result_doc)
    paths = [p for p in _paths(doc["scenarios"]) if p]
    path = data.draw(st.sampled_from(paths))
    parent = doc["scenarios"]
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = data.draw(_HOSTILE_VALUES)
    try:
        bounded, _ = bound_results(doc["scenarios"])
    except ResultDocumentError as e:
        assert str(e)
        return
    for sc in bounded:
        gens = sc.get("generations")
        if isinstance(gens, list):
            assert len(gens) <= MAX_GENERATIONS
            drawn = sum(
                len(g.get(k) or []) for g in gens if isinstance(g, dict)
                for k in ("memory_map", "reserved") if isinstance(g.get(k), list)
            )  # fmt: skip
            assert drawn <= max(MAX_DRAWN, 4214)
        if isinstance(sc.get("timeline"), list):
            assert len(sc["timeline"]) <= MAX_TIMELINE + 1


def test_mutated_result_documents_render_or_fail_cleanly(
    tmp_path: Path, result_doc: dict[str, Any]
) -> None:
    """A few mutations all the way through ``gickexec report``: 0 or 2, never 1 or 3."""
    for i, (path, value) in enumerate(
        [
            (("msis", "lost_per_cpu"), {"0": "many"}),
            (("generations", 0, "memory_map", 0, "start"), -(2**62)),
            (("timeline",), [{"step": 2**62, "sent": 1, "delivered": 1, "lost": 0,
                              "action": "boot", "what": "x", "generation": 0}]),
            (("platform", "ram"), []),
            (("generations",), []),
        ]
    ):  # fmt: skip
        doc = copy.deepcopy(result_doc)
        parent = doc["scenarios"][0]
        for key in path[:-1]:
            parent = parent[key]
        parent[path[-1]] = value
        code, err = _report(tmp_path / str(i), doc)
        assert code in (0, 2), err


def test_standard_input_is_read_where_dash_is_offered(tmp_path: Path) -> None:
    runner = CliRunner()
    played = runner.invoke(main, ["run", "-", "--json"], input=builtin_text("efi-kexec-fixed"))
    assert played.exit_code == 0, played.stderr
    reported = runner.invoke(
        main, ["report", "-", "-o", str(tmp_path / "out")], input=played.stdout
    )
    assert reported.exit_code == 0, reported.stderr
    assert (tmp_path / "out" / "index.html").exists()


def test_a_drawn_list_that_is_no_list_is_left_to_the_renderer(result_doc: dict[str, Any]) -> None:
    """Found by the explore profile: counting drawn ranges took len() of a number."""
    doc = copy.deepcopy(result_doc)
    doc["scenarios"][0]["generations"][0]["memory_map"] = 5
    bounded, notes = bound_results(doc["scenarios"])
    assert bounded[0]["generations"][0]["memory_map"] == 5
    assert notes == []
