"""Exploration campaigns: generation, invariants, shrinking, determinism, resume, Dask."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from gickexec.cli import main
from gickexec.kernel.profiles import PROFILES
from gickexec.scenario import explore
from gickexec.scenario.builtin import load_builtin
from gickexec.scenario.explore import (
    RESULTS,
    SUMMARY,
    Campaign,
    ExploreError,
    Progress,
    check_scenario,
    generate,
    history_toml,
    parse_history,
    run_campaign,
)
from gickexec.scenario.schema import load_scenario, parse_scenario
from gickexec.scenario.world import World

#: cheap platforms (few CPUs) so that campaigns in tests take seconds
SMALL = ("efi-server-8", "qemu-virt", "kvm-guest", "rk3566-dt")
PLANTED = "v6.6-planted"
PLANTED_SIGNATURE = (
    f"uncovered-table: pending table not published in the memreserve list by {PLANTED}"
)


@pytest.fixture
def planted(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """v6.6 that forgets to reserve CPU1's LPI pending table."""
    profile = dataclasses.replace(
        PROFILES["v6.6"], name=PLANTED, planted_skip_pending_reservation=1
    )
    monkeypatch.setitem(PROFILES, PLANTED, profile)
    yield PLANTED


def _files(out: Path) -> dict[str, bytes]:
    """Every file of a campaign directory, with the directory's own name taken out."""
    return {
        str(p.relative_to(out)): p.read_bytes().replace(str(out).encode(), b"OUT")
        for p in sorted(out.rglob("*"))
        if p.is_file()
    }


def test_generation_is_a_function_of_seed_and_index() -> None:
    c = Campaign(seed=3, budget=50, platforms=SMALL, max_steps=5)
    for i in range(50):
        h = generate(c, i)
        assert h == generate(c, i)
        sc = parse_scenario(history_toml(h))
        assert sc.steps[0].action == "boot"
        assert 2 <= len(sc.steps) <= 5
        assert sc.platform.name in SMALL
    assert generate(c, 0) != generate(c, 1)
    assert generate(c, 0) != generate(dataclasses.replace(c, seed=4), 0)


def test_history_toml_keeps_every_field() -> None:
    c = Campaign(seed=1, budget=10, boots=("dt",))
    h = generate(c, 7)
    sc = parse_scenario(history_toml(h, ["a comment"]))
    assert sc.platform.firmware == "dt"
    assert sc.seed == h["seed"]
    assert [s.action for s in sc.steps] == [s["action"] for s in h["steps"]]
    assert [d.vectors for d in sc.devices] == [d["vectors"] for d in h["devices"]]


def test_invariants_on_built_in_scenarios() -> None:
    assert check_scenario(load_builtin("efi-kexec-fixed")) is None
    assert check_scenario(load_builtin("efi-kexec-chain")) is None
    unfixed = check_scenario(load_builtin("efi-kexec-unfixed"))
    assert unfixed is not None
    assert unfixed.signature == (
        "uncovered-table: property table not published in the memreserve list by v4.19"
    )
    assert unfixed.step == 2
    dt = check_scenario(load_builtin("dt-kexec-current"))
    assert dt is not None
    assert dt.signature == (
        "uncovered-table: property table left live, no memreserve list (device-tree boot)"
    )
    # With that check off, the same step fails on what the GIC does during the handover.
    later = check_scenario(load_builtin("efi-kexec-unfixed"), ["gic-write", "msi-lost"])
    assert later is not None and later.invariant == "gic-write"
    assert later.step == unfixed.step and "between kernels" in later.signature


def test_planted_bug_is_found_and_shrunk(planted: str, tmp_path: Path) -> None:
    control = Campaign(seed=5, budget=20, kernels=("v6.6",), platforms=("efi-server-8",))
    assert run_campaign(control, tmp_path / "control", workers=1, quiet=True)["failures"] == 0
    campaign = dataclasses.replace(control, kernels=(planted,))
    doc = run_campaign(campaign, tmp_path / "planted", workers=1, quiet=True)
    assert doc["histories"] == 20
    found = {s["signature"]: s for s in doc["signatures"]}
    assert PLANTED_SIGNATURE in found
    sig = found[PLANTED_SIGNATURE]
    assert sig["count"] >= 1
    assert sig["steps"] <= 5
    reproducer = Path(sig["reproducer"])
    scenario = load_scenario(reproducer)
    assert len(scenario.steps) == sig["steps"]
    failure = check_scenario(scenario)
    assert failure is not None
    assert failure.signature == PLANTED_SIGNATURE
    assert "CPU1's LPI pending table" in failure.message
    # `gickexec run` replays it to the same output, byte for byte, and fails.
    runs = [CliRunner().invoke(main, ["run", "--json", str(reproducer)]) for _ in range(2)]
    assert runs[0].exit_code == 1
    assert runs[0].output == runs[1].output
    result = json.loads(runs[0].stdout)["scenarios"][0]
    failed = [c for c in result["expectations"] if not c["ok"]]
    assert [c["check"] for c in failed] == ["log_absent"]


def test_summary_document(tmp_path: Path) -> None:
    doc = run_campaign(
        Campaign(seed=1, budget=30, platforms=SMALL), tmp_path, workers=1, quiet=True
    )
    saved = json.loads((tmp_path / SUMMARY).read_text())
    assert saved == doc
    assert doc["histories"] == 30
    assert doc["failures"] == sum(s["count"] for s in doc["signatures"]) > 0
    lines = [json.loads(x) for x in (tmp_path / RESULTS).read_text().splitlines()]
    assert [line["index"] for line in lines] == list(range(30))
    assert sum(not line["ok"] for line in lines) == doc["failures"]
    for s in doc["signatures"]:
        assert set(s) >= {"signature", "count", "reproducer"}
        failure = check_scenario(load_scenario(s["reproducer"]))
        assert failure is not None and failure.signature == s["signature"]


def test_results_do_not_depend_on_the_number_of_workers(tmp_path: Path) -> None:
    campaign = Campaign(seed=11, budget=40, platforms=SMALL, max_steps=5)
    run_campaign(campaign, tmp_path / "one", workers=1, quiet=True)
    run_campaign(campaign, tmp_path / "two", workers=2, quiet=True)
    one, two = _files(tmp_path / "one"), _files(tmp_path / "two")
    assert one == two
    assert json.loads(one[SUMMARY])["failures"] > 0


def test_dask_local_cluster_gives_the_local_results(tmp_path: Path) -> None:
    distributed = pytest.importorskip("distributed")
    campaign = Campaign(seed=11, budget=24, platforms=SMALL, max_steps=5)
    run_campaign(campaign, tmp_path / "local", workers=1, quiet=True)
    with distributed.LocalCluster(
        n_workers=1,
        threads_per_worker=2,
        processes=False,
        host="127.0.0.1",
        protocol="tcp://",
        dashboard_address=None,
    ) as cluster:
        run_campaign(campaign, tmp_path / "dask", dask=cluster.scheduler_address, quiet=True)
    assert _files(tmp_path / "local") == _files(tmp_path / "dask")


def test_dask_unreachable_scheduler_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("distributed")
    monkeypatch.setattr(explore, "DASK_CONNECT_TIMEOUT", 1.0)
    with pytest.raises(ExploreError, match="cannot reach the scheduler"):
        run_campaign(Campaign(budget=1), tmp_path, dask="tcp://127.0.0.1:9", quiet=True)


def test_resume_after_sigkill(tmp_path: Path) -> None:
    args = ["--seed", "2", "--budget", "60", "--max-steps", "5"]
    args += ["--platform", ",".join(SMALL), "--workers", "1", "-q"]
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from gickexec.cli import main; main()",
            "explore",
            *args,
            "--out",
            str(killed),
        ],
    )
    results = killed / RESULTS
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if results.exists() and results.read_bytes().count(b"\n") >= 10:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the campaign ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    written = results.read_bytes().count(b"\n")
    assert 10 <= written < 60
    # A torn last line, as a kill in the middle of write() leaves it.
    with results.open("ab") as f:
        f.write(b'{"index": 99, "ok')
    resumed = CliRunner().invoke(main, ["explore", *args, "--out", str(killed), "--resume"])
    assert resumed.exit_code in (0, 1), resumed.output
    reference = tmp_path / "reference"
    CliRunner().invoke(main, ["explore", *args, "--out", str(reference)])
    lines = [json.loads(x) for x in results.read_text().splitlines()]
    assert [line["index"] for line in lines] == list(range(60))
    assert _files(killed) == _files(reference)


def test_cli_refuses_what_it_cannot_use(tmp_path: Path) -> None:
    run = CliRunner().invoke
    r = run(main, ["explore", "--budget", "2", "--out", str(tmp_path), "--platform", "nope"])
    assert r.exit_code == 2
    assert "unknown platform nope" in r.output
    r = run(main, ["explore", "--budget", "2", "--out", str(tmp_path), "--invariant", "x"])
    assert r.exit_code == 2 and "unknown invariant x" in r.output
    r = run(
        main, ["explore", "--budget", "2", "--out", str(tmp_path), "--kernels", "freebsd-kboot"]
    )
    assert r.exit_code == 2 and "at least one Linux profile" in r.output
    out = tmp_path / "c"
    first = run(main, ["explore", "--budget", "2", "--out", str(out), "-q", "--workers", "1"])
    assert first.exit_code in (0, 1) and first.output == ""
    again = run(main, ["explore", "--budget", "2", "--out", str(out), "--workers", "1"])
    assert again.exit_code == 2 and "--resume" in again.output
    other = run(main, ["explore", "--budget", "2", "--seed", "9", "--out", str(out), "--resume"])
    assert other.exit_code == 2 and "other settings" in other.output
    for text, message in (
        ('{"index": 5, "ok": true}\n', "history 5 is beyond --budget 2"),
        ('{"index": 0, "ok": false}\n', f"{out / RESULTS}:1: not a results line"),
        ('{"index": 0, "ok": true}\n{"ind\n{"index": 1, "ok": true}\n', ":2: not JSON"),
        ("[1]\n", "not a results line"),
    ):
        (out / RESULTS).write_text(text)
        bad = run(main, ["explore", "--budget", "2", "--out", str(out), "--resume"])
        assert bad.exit_code == 2, text
        assert message in bad.output, bad.output
        assert (out / RESULTS).read_text() == text
    (out / RESULTS).write_bytes(b"\xff\xfe\n")
    bad = run(main, ["explore", "--budget", "2", "--out", str(out), "--resume"])
    assert bad.exit_code == 2 and ":1: not JSON" in bad.output
    (out / "campaign.json").write_bytes(b"\xff\xfe")
    bad = run(main, ["explore", "--budget", "2", "--out", str(out), "--resume"])
    assert bad.exit_code == 2 and "campaign.json: not readable JSON" in bad.output
    file = tmp_path / "file"
    file.write_text("")
    bad = run(main, ["explore", "--budget", "2", "--out", str(file)])
    assert bad.exit_code == 2 and "is a file" in bad.output


def test_cli_prints_the_summary_and_exits_1_on_failures(tmp_path: Path) -> None:
    r = CliRunner().invoke(
        main,
        [
            "explore",
            "--budget",
            "6",
            "--seed",
            "1",
            "--out",
            str(tmp_path),
            "--workers",
            "1",
            "--platform",
            "rk3566-dt",
            "--kernels",
            "v6.6",
            "--max-steps",
            "3",
        ],
    )
    doc = json.loads((tmp_path / SUMMARY).read_text())
    assert doc["failures"] > 0
    assert r.exit_code == 1
    assert f"{doc['histories']} histories, {doc['failures']} failed" in r.output
    assert doc["signatures"][0]["signature"] in r.output


def test_progress_modes() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = Tty()
    bar = Progress(10, 0, quiet=False, stream=tty)
    bar.update(5, 2)
    bar.close()
    assert tty.getvalue().startswith("\r[")
    assert "5/10 histories" in tty.getvalue() and "2 failures" in tty.getvalue()
    plain = io.StringIO()
    lines = Progress(10, 0, quiet=False, stream=plain, interval=0)
    lines.update(3, 0)
    lines.close()
    assert plain.getvalue().splitlines()[0].startswith("explore: 3/10 histories, ")
    assert "\r" not in plain.getvalue()
    quiet = io.StringIO()
    q = Progress(10, 0, quiet=True, stream=quiet)
    q.update(3, 0)
    q.close()
    assert quiet.getvalue() == ""


def _two_steps(first: str, second: str) -> str:
    return f"""
platform = "efi-server-8"
[[devices]]
name = "nic0"
device_id = 0x100
vectors = 2
[[steps]]
action = "boot"
kernel = "v4.19"
{first}
[[steps]]
{second}
"""


def test_a_panic_the_history_asked_for_is_no_failure() -> None:
    hang = parse_scenario(_two_steps("", 'action = "kdump"\nkernel = "v6.6"'))
    assert check_scenario(hang) is None
    kboot = parse_scenario(_two_steps("", 'action = "kexec"\nkernel = "freebsd-kboot"'))
    crash = check_scenario(kboot, ["unasked-crash"])
    assert crash is not None
    assert crash.step == 1
    assert crash.signature.startswith("unasked-crash: [freebsd-kboot] FreeBSD kboot: CPUN's ")
    assert "0x" not in crash.signature
    assert crash.expect == {"crashed": [False, False]}


def test_shrunk_reproducer_is_one_minimal(planted: str, tmp_path: Path) -> None:
    campaign = Campaign(seed=5, budget=8, kernels=(planted,), platforms=("efi-server-8",))
    doc = run_campaign(campaign, tmp_path, workers=1, quiet=True)
    (sig,) = doc["signatures"]
    text = Path(sig["reproducer"]).read_text()
    scenario = load_scenario(sig["reproducer"])
    for i in range(1, len(scenario.steps)):
        fewer = dataclasses.replace(scenario, steps=scenario.steps[:i] + scenario.steps[i + 1 :])
        failure = check_scenario(fewer)
        assert failure is None or failure.signature != sig["signature"], i
    assert text.count("[[devices]]") == 1
    assert "vectors = 1" in text


def test_a_model_exception_is_a_failure_not_the_end(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def broken(self: World, cpu: int) -> None:
        raise RuntimeError(f"cpu {cpu} exploded at 0x1234")

    monkeypatch.setattr(World, "cpu_up", broken)
    campaign = Campaign(seed=1, budget=40, platforms=("qemu-virt",), kernels=("v6.6",))
    doc = run_campaign(campaign, tmp_path, workers=1, quiet=True)
    assert doc["histories"] == 40
    sig = next(s for s in doc["signatures"] if s["invariant"] == "model-error")
    assert sig["signature"] == "model-error: RuntimeError: cpu N exploded at ADDR"
    scenario = load_scenario(sig["reproducer"])
    assert [s.action for s in scenario.steps] == ["boot", "cpu-up"]


def test_workers_and_dask_exclude_each_other(tmp_path: Path) -> None:
    args = ["explore", "--budget", "1", "--out", str(tmp_path), "--workers", "2"]
    r = CliRunner().invoke(main, [*args, "--dask", "tcp://127.0.0.1:9"])
    assert r.exit_code == 2 and "exclude each other" in r.output
    assert not (tmp_path / RESULTS).exists()


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    index=st.integers(0, 10**6),
    platforms=st.lists(st.sampled_from((*SMALL, "xen-guest")), min_size=1, unique=True),
    boots=st.lists(st.sampled_from(("efi", "dt")), unique=True),
    max_steps=st.integers(2, 10),
)
def test_any_history_plays_without_a_model_error(
    seed: int, index: int, platforms: list[str], boots: list[str], max_steps: int
) -> None:
    campaign = Campaign(
        seed=seed,
        budget=index + 1,
        platforms=tuple(platforms),
        boots=tuple(boots),  # type: ignore[arg-type]
        max_steps=max_steps,
    )
    history = generate(campaign, index)
    scenario = parse_history(history)
    assert len(scenario.steps) <= max_steps
    failure = check_scenario(scenario)
    assert failure is None or failure.invariant != "model-error", failure


@given(st.text(), st.text())
def test_history_toml_quotes_any_text(description: str, comment: str) -> None:
    h = generate(Campaign(seed=1, budget=1), 0)
    h["description"] = description
    text = history_toml(h, [comment])
    assert parse_scenario(text).description == description
    assert text.startswith("# ") and text.count("\n# ") == 0


def test_resume_with_a_larger_budget_extends_the_campaign(tmp_path: Path) -> None:
    small = Campaign(seed=4, budget=10, platforms=SMALL, max_steps=4)
    big = dataclasses.replace(small, budget=20)
    run_campaign(small, tmp_path / "grown", workers=1, quiet=True)
    run_campaign(big, tmp_path / "grown", workers=1, quiet=True, resume=True)
    run_campaign(big, tmp_path / "fresh", workers=1, quiet=True)
    assert _files(tmp_path / "grown") == _files(tmp_path / "fresh")


def test_a_list_layout_the_next_kernel_misreads_is_named() -> None:
    text = _two_steps("", 'action = "kexec"\nkernel = "v6.6"').replace('"v4.19"', '"v4.20"', 1)
    failure = check_scenario(parse_scenario(text))
    assert failure is not None
    # which table comes first depends on placement; the cause does not
    assert failure.signature.startswith("uncovered-table: p")
    assert failure.signature.endswith(
        " table published in the v4.20 list layout by v4.20, which v6.6 reads as v5.0"
    )
