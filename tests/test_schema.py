"""Scenario file validation: clear errors naming file, line and field; never a traceback."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gickexec.scenario.builtin import builtin_names, builtin_text, load_builtin
from gickexec.scenario.checks import evaluate
from gickexec.scenario.runner import play
from gickexec.scenario.schema import MAX_MSIS_PER_STEP, MAX_STEPS, ScenarioError, parse_scenario

MINIMAL = """\
platform = "efi-server-8"

[[devices]]
name = "eth0"
device_id = 0x100
vectors = 2

[[steps]]
action = "boot"
kernel = "v6.6"

[[steps]]
action = "traffic"
device = "eth0"
msis = 4
"""


def _error(text: str) -> ScenarioError:
    with pytest.raises(ScenarioError) as e:
        parse_scenario(text, "s.toml")
    return e.value


def test_every_builtin_parses() -> None:
    for name in builtin_names():
        sc = load_builtin(name)
        assert sc.name == name
        assert sc.steps[0].action == "boot"


def test_minimal_defaults() -> None:
    sc = parse_scenario(MINIMAL, "dir/minimal.toml")
    assert sc.name == "minimal"
    assert sc.seed == 0
    assert sc.devices[0].shutdown_hook is True
    assert sc.platform.cpus == 8


def test_error_names_line_of_the_offending_key() -> None:
    e = _error(MINIMAL.replace("msis = 4", "msis = -1"))
    assert e.line == MINIMAL.splitlines().index("msis = 4") + 1
    assert e.field_path == "steps[1].msis"
    assert str(e).startswith(
        f"s.toml:{e.line}: field 'steps[1].msis': must be 0..{MAX_MSIS_PER_STEP}, not -1"
    )


def test_first_step_must_boot() -> None:
    text = MINIMAL.replace('action = "boot"\nkernel = "v6.6"', 'action = "kexec"\nkernel = "v6.6"')
    assert "first step must be 'boot'" in str(_error(text))


@pytest.mark.parametrize(
    ("old", "new", "field", "fragment"),
    [
        ('device = "eth0"', 'device = "eth9"', "steps[1].device", "no device named 'eth9'"),
        ("vectors = 2", "vectors = 0", "devices[0].vectors", "must be 1..2048"),
        ("device_id = 0x100", "device_id = 0x10000", "devices[0].device_id", "0..65535"),
        ('action = "boot"', 'action = "reboot"', "steps[0].action", "unknown action 'reboot'"),
        ('platform = "efi-server-8"', 'platform = "efi-server-8"\ncpus = 0', "cpus", "1..512"),
        (
            'platform = "efi-server-8"',
            'platform = "efi-server-8"\nconfig_nr_cpus = 1',
            "config_nr_cpus",
            "2..4096",
        ),
        (
            'platform = "efi-server-8"',
            'platform = "efi-server-8"\n[knobs]\nnope = 1',
            "knobs.nope",
            "unknown GIC knob 'nope'",
        ),
        (
            'platform = "efi-server-8"',
            'platform = "efi-server-8"\n[knobs]\nenable_lpis_clearable = 1',
            "knobs.enable_lpis_clearable",
            "must be true or false",
        ),
    ],
)
def test_field_errors(old: str, new: str, field: str, fragment: str) -> None:
    e = _error(MINIMAL.replace(old, new, 1))
    assert e.field_path == field
    assert fragment in str(e)
    assert e.line is not None


def test_expect_forms() -> None:
    text = (
        MINIMAL
        + """
[expect]
msis_sent = 4
msis_lost = { max = 0 }
reused_tables = { first = false, rest = true }
tainted = [false]
log_contains = ["GICv3"]
"""
    )
    sc = parse_scenario(text)
    assert sc.expect.msis_sent == (4, 4)
    assert sc.expect.msis_lost == (None, 0)
    assert sc.expect.reused_tables == ("first-rest", False, True)
    assert sc.expect.tainted == (False,)


@pytest.mark.parametrize(
    ("expect", "fragment"),
    [
        ("msis_lost = { min = 3, max = 1 }", "greater than max"),
        ("msis_lost = {}", "needs min, max or both"),
        ("tainted = 3", "must be true/false"),
        ("reused_tables = { first = true }", "needs both"),
        ("log_contains = [1]", "array of non-empty strings"),
        ("surprise = 1", "unknown field"),
    ],
)
def test_expect_errors(expect: str, fragment: str) -> None:
    assert fragment in str(_error(MINIMAL + "\n[expect]\n" + expect + "\n"))


def test_repeat_cannot_nest_and_is_bounded() -> None:
    nested = (
        MINIMAL
        + """
[[steps]]
action = "repeat"
times = 2
steps = [{ action = "repeat", times = 2, steps = [{ action = "page-cache", fraction = 0.1 }] }]
"""
    )
    assert "cannot be nested" in str(_error(nested))
    huge = (
        MINIMAL
        + """
[[steps]]
action = "repeat"
times = 1000
steps = [{ action = "page-cache", fraction = 0.1 }, { action = "page-cache", fraction = 0.1 }]
"""
    )
    e = _error(huge)
    assert f"more than {MAX_STEPS} steps" in str(e)
    assert e.field_path.endswith(".times")
    assert e.line == huge.splitlines().index("times = 1000") + 1


def test_checks_report_each_expectation() -> None:
    sc = parse_scenario(MINIMAL + "\n[expect]\nmsis_sent = 5\ntainted = false\n")
    result = {
        "msis": {"sent": 4, "delivered": 4, "lost": 0},
        "corruption": {"bits": 0},
        "memreserve": {"nodes": 1, "entries": 9},
        "generations": [{"tainted": False, "reused_tables": False, "log": [], "memreserve": None}],
    }
    checks = evaluate(sc.expect, result)
    by = {c["check"]: c for c in checks}
    assert by["msis_sent"] == {
        "check": "msis_sent",
        "expected": {"min": 5, "max": 5},
        "actual": 4,
        "ok": False,
    }
    assert by["tainted"]["ok"] is True


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_text_never_escapes_as_a_traceback(text: str) -> None:
    try:
        parse_scenario(text, "fuzz.toml")
    except ScenarioError as e:
        assert str(e).startswith("fuzz.toml")


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_mutated_builtin_values_give_scenario_errors(data: st.DataObject) -> None:
    """Replace one value in a real scenario with junk of another type."""
    text = builtin_text("efi-kexec-fixed")
    lines = text.splitlines()
    candidates = [i for i, line in enumerate(lines) if " = " in line and not line.startswith("#")]
    i = data.draw(st.sampled_from(candidates))
    junk = data.draw(
        st.sampled_from(['"x"', "-5", "3.5", "true", "[1, 2]", "{ a = 1 }", "99999999"])
    )
    key = lines[i].split("=")[0]
    lines[i] = f"{key}= {junk}"
    try:
        parse_scenario("\n".join(lines), "m.toml")
    except ScenarioError as e:
        assert str(e).startswith("m.toml")


def test_boot_path_overrides_the_platform_firmware() -> None:
    assert parse_scenario(MINIMAL).platform.firmware == "efi"
    dt = parse_scenario('boot = "dt"\n' + MINIMAL)
    assert dt.platform.firmware == "dt"
    assert dt.platform.name == "efi-server-8"
    e = _error('boot = "uefi"\n' + MINIMAL)
    assert e.field_path == "boot" and e.line == 1
    assert "must be one of efi, dt, uefi-acpi, uefi-dt, dt, not 'uefi'" in str(e)


def test_errors_inside_inline_repeat_steps_name_their_own_line() -> None:
    """An error in the second inline step of a repeat is on that step's line (issue 11:
    it used to be reported at the repeat's [[steps]] header)."""
    head = MINIMAL[: MINIMAL.index('[[steps]]\naction = "traffic"')]
    text = head + (
        '[[steps]]\naction = "repeat"\ntimes = 2\n'
        'steps = [ { action = "kexec", kernel = "v6.6" },\n'
        '          { action = "traffic", device = "eth0", msis = "x" },\n'
        '          { action = "traffic", device = "nic9", msis = 1 } ]\n'
    )
    lines = text.splitlines()
    bad_line = next(i for i, ln in enumerate(lines, 1) if 'msis = "x"' in ln)
    with pytest.raises(ScenarioError) as bad:
        parse_scenario(text, "r.toml")
    assert bad.value.line == bad_line and bad.value.field_path == "steps[1].steps[1].msis"
    with pytest.raises(ScenarioError) as dev:
        parse_scenario(text.replace('msis = "x"', "msis = 1"), "r.toml")
    assert dev.value.line == bad_line + 1
    assert dev.value.field_path == "steps[1].steps[2].device"


def test_config_nr_cpus_reaches_every_kernel_the_scenario_boots() -> None:
    platform = 'platform = "efi-server-8"'
    text = MINIMAL.replace(platform, platform + "\nconfig_nr_cpus = 4")
    sc = parse_scenario(text)
    assert sc.config_nr_cpus == 4
    w = play(sc)
    assert all(len(k.possible_cpus) == 4 for k in w.generations)
    clipped = "Number of cores (8) exceeds configured maximum of 4 - clipping"
    assert clipped in w.generations[0].log.lines


def test_a_pinned_image_must_lie_in_ram() -> None:
    boot = 'action = "boot"\nkernel = "v6.6"'
    for where in ("0x10000000", "0x27fff0000"):  # below RAM; its end past the last bank
        text = MINIMAL.replace(boot, boot + f"\nimage = {where}", 1)
        with pytest.raises(ScenarioError, match="is not inside RAM") as bad:
            parse_scenario(text, "p.toml")
        assert bad.value.field_path == "steps[0].image"
    ok = MINIMAL.replace(boot, boot + "\nimage = 0x86000000", 1)
    assert parse_scenario(ok).steps[0].image == 0x86000000
