"""``gickexec``: the command line, a thin layer over :mod:`gickexec.scenario`.

Exit status: 0 when every scenario's expectations hold, 1 when one does not, 2 for bad
input (the message names the file, line and field), 3 for an internal error of the
model (one line; ``GICKEXEC_DEBUG=1`` adds the traceback).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn, cast

import click
import jinja2

from gickexec.bounded import InputError, clip, parse_uint, read_input
from gickexec.hw.platform import PLATFORMS
from gickexec.inspect.analyze import inspect_image, tables_from_note, tables_from_registers
from gickexec.inspect.image import ImageError, open_image
from gickexec.inspect.vmcore import (
    NOTE_NAME,
    machine_info,
    parse_note,
    target_mode,
    write_vmcore,
)
from gickexec.kernel.kexec import LOADERS, Loader
from gickexec.kernel.profiles import FEATURE_SOURCES, PROFILES
from gickexec.report.document import ResultDocumentError, bound_results
from gickexec.report.dump import render_inspection
from gickexec.report.hardware import platforms_doc, platforms_markdown, platforms_text
from gickexec.report.html import write_report
from gickexec.report.text import render_scenario, render_summary
from gickexec.scenario.builtin import builtin_names, builtin_text, load_builtin
from gickexec.scenario.matrix import (
    MATRIX_PLATFORMS,
    MATRIX_PROFILES,
    Boot,
    Mode,
    cells,
    matrix_markdown,
    matrix_text,
    run_cell,
)
from gickexec.scenario.runner import StepHook, run_scenario
from gickexec.scenario.schema import MAX_SEED, Scenario, ScenarioError, load_scenario
from gickexec.scenario.world import World

__all__ = ["main"]


def _bad_input(message: str) -> NoReturn:
    click.echo(f"gickexec: error: {message}", err=True)
    sys.exit(2)


def _resolve(arg: str) -> Scenario:
    """A scenario file path, or the name of a built-in scenario."""
    # os.path.exists, not Path.exists: an over-long name is "no such file", not OSError
    if os.path.exists(arg) or arg.endswith(".toml") or arg == "-":
        return load_scenario(arg)
    if arg in builtin_names():
        return load_builtin(arg)
    _bad_input(
        f"{arg}: no such file, and no built-in scenario of that name "
        f"(built-in: {', '.join(builtin_names())})"
    )


#: Exit status of an internal error (a bug of the model, not of the input).
EXIT_INTERNAL = 3


class _Guarded(click.Group):
    """Turns an exception the model did not expect into exit status 3 and one line."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as e:
            if os.environ.get("GICKEXEC_DEBUG", "0") != "0":
                raise
            message = " ".join(str(e).split())  # one line, whatever the exception says
            click.echo(
                f"gickexec: internal error: {type(e).__name__}: {clip(message, 200)} "
                "(a bug; GICKEXEC_DEBUG=1 shows the traceback)",
                err=True,
            )
            sys.exit(EXIT_INTERNAL)


@click.group(cls=_Guarded, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="gickexec")
def main() -> None:
    """Byte-accurate model of GICv3 LPI tables across kexec, with Linux's EFI memreserve fix."""


@main.command()
@click.argument("scenarios", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of text.")
@click.option("-p", "--pretty", is_flag=True, help="Indent the JSON output.")
@click.option(
    "--seed",
    type=click.IntRange(0, MAX_SEED),
    default=None,
    help="Override every scenario's seed.",
)
@click.option("--no-logs", is_flag=True, help="Leave the kernel logs out of the text report.")
@click.option(
    "--report",
    "report_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Also write an HTML report with PNG figures into this directory.",
)
@click.option(
    "--export-vmcore",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the machine's memory as an ELF core (one scenario only).",
)
@click.option(
    "--export-at",
    type=click.IntRange(min=0),
    default=None,
    help="Export after this step (0-based; default: at the end).",
)
def run(
    scenarios: tuple[str, ...],
    as_json: bool,
    pretty: bool,
    seed: int | None,
    no_logs: bool,
    report_dir: Path | None,
    export_vmcore: Path | None,
    export_at: int | None,
) -> None:
    """Play scenario files ('-': standard input) or built-in names; without arguments, the
    built-in defaults."""
    try:
        loaded = (
            [_resolve(a) for a in scenarios]
            if scenarios
            else [load_builtin(n) for n in builtin_names()]
        )
    except ScenarioError as e:
        _bad_input(str(e))
    if seed is not None:
        loaded = [dataclasses.replace(s, seed=seed) for s in loaded]
    hook = None
    if export_vmcore is not None:
        if len(loaded) != 1:
            _bad_input("--export-vmcore needs exactly one scenario")
        steps = len(loaded[0].steps)
        at = steps - 1 if export_at is None else export_at
        if at >= steps:
            _bad_input(f"--export-at {at}: the scenario has steps 0..{steps - 1}")
        hook = _exporter(export_vmcore, at)
        _check_target(export_vmcore)
    elif export_at is not None:
        _bad_input("--export-at goes with --export-vmcore")
    results: list[dict[str, Any]] = []
    for sc in loaded:
        result = run_scenario(sc, hook)
        results.append(result)
        if not as_json:
            click.echo(render_scenario(result, logs=not no_logs))
            click.echo()
    if as_json:
        click.echo(json.dumps({"scenarios": results}, indent=2 if pretty else None))
    else:
        click.echo(render_summary(results))
    if report_dir is not None:
        _write_report(results, report_dir)
    sys.exit(0 if all(r["ok"] for r in results) else 1)


def _check_target(path: Path) -> None:
    """Refuse an export target before the scenario runs, not after: a missing directory,
    or an existing output that is not a regular file (FIFO, device, symlink)."""
    try:
        target_mode(path)
    except OSError as e:
        _bad_input(f"{clip(str(path), 400)}: {e.strerror}")


def _write_report(results: list[dict[str, Any]], outdir: Path) -> None:
    try:
        results, notes = bound_results(results)
    except ResultDocumentError as e:
        _bad_input(f"not a result document of 'gickexec run --json': {e}")
    for note in notes:
        click.echo(f"gickexec: report: {note}", err=True)
    try:
        index = write_report(results, outdir)
    except OSError as e:
        _bad_input(f"{outdir}: {e.strerror}")
    except (KeyError, TypeError, ValueError, AttributeError, jinja2.UndefinedError) as e:
        _bad_input(f"not a result document of 'gickexec run --json': {type(e).__name__}: {e}")
    click.echo(f"gickexec: report written to {index}", err=True)


@main.command()
@click.argument(
    "results", type=click.Path(dir_okay=False, exists=True, allow_dash=True, path_type=Path)
)
@click.option(
    "-o",
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Directory for index.html and the figures.",
)
def report(results: Path, output: Path) -> None:
    """Write the HTML report of a saved 'gickexec run --json' document ('-': standard input)."""
    try:
        doc = json.loads(read_input(str(results)).decode("utf-8"))
    except InputError as e:
        _bad_input(str(e))
    except (UnicodeDecodeError, ValueError) as e:  # ValueError: JSON, or a huge integer
        _bad_input(f"{results}: not readable JSON: {clip(str(e))}")
    except RecursionError:
        _bad_input(f"{results}: not readable JSON: nested too deeply")
    scenarios = doc.get("scenarios") if isinstance(doc, dict) else None
    if not isinstance(scenarios, list) or not all(isinstance(s, dict) for s in scenarios):
        _bad_input(f"{results}: expected {{\"scenarios\": [...]}} as 'gickexec run --json' writes")
    _write_report(scenarios, output)


def _exporter(path: Path, at: int) -> StepHook:
    def hook(index: int, world: World) -> None:
        if index == at:
            systab = world.firmware.systab if world.firmware else None
            info = machine_info(world.machine, systab)
            try:
                write_vmcore(world.machine.mem, path, info=info)
            except OSError as e:
                _bad_input(f"{path}: {e.strerror}")
            click.echo(f"gickexec: memory after step {at} written to {path}", err=True)

    return hook


def _cpu_values(items: tuple[str, ...], what: str) -> dict[int, int]:
    out: dict[int, int] = {}
    for item in items:
        cpu, sep, value = item.partition("=")
        try:
            if not sep:
                raise InputError(item)
            out[parse_uint(cpu, what)] = parse_uint(value, what)
        except InputError:
            _bad_input(f"{what} {item!r}: expected CPU=VALUE, e.g. 0=0x880e0000")
    return out


def _int(text: str | None, what: str) -> int | None:
    if text is None:
        return None
    try:
        return parse_uint(text, what)
    except InputError as e:
        _bad_input(str(e))


@main.command()
@click.argument("image", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--base", help="Read IMAGE as raw physical memory starting here.")
@click.option("--memreserve", help="Physical address of the memreserve root (efi: MEMRESERVE=).")
@click.option("--systab", help="Physical address of the EFI system table.")
@click.option(
    "--layout",
    type=click.Choice(["auto", "v4.20", "v5.0"]),
    default="auto",
    help="Memreserve node layout.",
)
@click.option("--propbaser", help="GICR_PROPBASER value (as a debugger shows it).")
@click.option("--pendbaser", multiple=True, help="CPU=GICR_PENDBASER value; repeatable.")
@click.option("--prop", help="Address of the LPI property table.")
@click.option("--pend", multiple=True, help="CPU=address of an LPI pending table; repeatable.")
@click.option(
    "--id-bits",
    type=click.IntRange(14, 24),
    default=16,
    help="LPI INTID bits when only addresses are given.",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON document.")
def inspect(
    image: Path,
    base: str | None,
    memreserve: str | None,
    systab: str | None,
    layout: str,
    propbaser: str | None,
    pendbaser: tuple[str, ...],
    prop: str | None,
    pend: tuple[str, ...],
    id_bits: int,
    as_json: bool,
) -> None:
    """Report what the next kernel would see in a guest memory image (ELF core or raw).

    Exit status 1 when a live LPI table is not covered by the memreserve list."""
    try:
        img = open_image(image, base=_int(base, "--base"))
    except ImageError as e:
        _bad_input(str(e))
    with img:
        note = parse_note(img.notes.get(NOTE_NAME, b""))
        regs_given = propbaser or pendbaser or prop or pend
        tables = tables_from_registers(
            _int(propbaser, "--propbaser"),
            _cpu_values(pendbaser, "--pendbaser"),
            _int(prop, "--prop"),
            _cpu_values(pend, "--pend"),
            id_bits,
        )
        if not regs_given:
            tables = tables_from_note(note)
        st, how = _int(systab, "--systab"), "given (--systab)"
        if st is None and memreserve is None and "EFI_SYSTAB" in note:
            st, how = note["EFI_SYSTAB"], "from the image's GICKEXEC note"
        doc = inspect_image(
            img,
            memreserve=_int(memreserve, "--memreserve"),
            systab=st,
            layout=layout,  # type: ignore[arg-type]
            tables=tables,
            systab_how=how,
        )
    click.echo(json.dumps(doc, indent=1) if as_json else render_inspection(doc), nl=as_json)
    sys.exit(0 if doc["ok"] else 1)


@main.command()
def scenarios() -> None:
    """List the built-in scenarios."""
    for name in builtin_names():
        sc = load_builtin(name)
        click.echo(f"{name:<22} {sc.description}")


@main.command()
@click.argument("name")
def show(name: str) -> None:
    """Print a built-in scenario as TOML, ready to edit."""
    try:
        click.echo(builtin_text(name), nl=False)
    except KeyError:
        _bad_input(f"no built-in scenario {name!r} (built-in: {', '.join(builtin_names())})")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON document.")
@click.option("--markdown", is_flag=True, help="Print docs/hardware.md.")
def platforms(as_json: bool, markdown: bool) -> None:
    """List the platform presets and their GIC knob settings."""
    if as_json:
        click.echo(json.dumps(platforms_doc(), indent=1))
    elif markdown:
        click.echo(platforms_markdown(), nl=False)
    else:
        click.echo(platforms_text(), nl=False)


@main.command()
def profiles() -> None:
    """List the kernel profiles and the behaviours that tell them apart."""
    for prof in PROFILES.values():
        os_name = "Linux" if prof.kind == "linux" else "FreeBSD"
        click.echo(f"{prof.name:<7} {os_name} {prof.release}: {prof.description}")
    click.echo("\nfeatures:")
    for name, source in FEATURE_SOURCES.items():
        values = ", ".join(f"{p.name}={getattr(p, name)}" for p in PROFILES.values())
        click.echo(f"  {name}: {values}\n      {source}")


def _split(value: str, known: Sequence[str], what: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in known]
    if bad or not items:
        _bad_input(f"unknown {what} {', '.join(bad) or repr(value)} (known: {', '.join(known)})")
    return items


def _check_froms(froms: Sequence[str]) -> None:
    """Only Linux kexecs or kdumps: FreeBSD kboot is a next kernel (``--to``) only."""
    if not froms:
        _bad_input("--from all: no Linux profile in --to to kexec from")
    cannot = [f for f in froms if PROFILES[f].kind != "linux"]
    if cannot:
        _bad_input(
            f"{', '.join(cannot)} cannot be kexec'd or kdumped from (a next kernel only: "
            "give it in --to with --from naming Linux profiles)"
        )


@main.command()
@click.option(
    "--from",
    "froms",
    default="same",
    show_default=True,
    help="Comma-separated profiles to kexec from; 'same' pairs each --to with itself, "
    "'all' uses every Linux --to profile.",
)
@click.option("--to", "tos", default=",".join(MATRIX_PROFILES), show_default=True)
@click.option("--mode", "modes", default="kexec,kdump", show_default=True)
@click.option("--boot", "boots", default="efi,dt", show_default=True)
@click.option("--platform", "platforms", default=",".join(MATRIX_PLATFORMS), show_default=True)
@click.option("--seed", type=click.IntRange(0, MAX_SEED), default=1, show_default=True)
@click.option(
    "--loader",
    type=click.Choice(LOADERS),
    default="kexec-tools",
    show_default=True,
    help="What places the next kernel's segments on kexec.",
)
@click.option("--json", "as_json", is_flag=True, help='Print {"cells": [...]}.')
@click.option("--markdown", is_flag=True, help="Print docs/compatibility.md.")
def matrix(
    froms: str,
    tos: str,
    modes: str,
    boots: str,
    platforms: str,
    seed: int,
    loader: Loader,
    as_json: bool,
    markdown: bool,
) -> None:
    """What happens when kernel X kexecs (or kdumps) into kernel Y, per platform and boot."""
    to_list = _split(tos, list(PROFILES), "profile")
    if froms == "same":
        from_list: list[str] | None = None
    elif froms == "all":  # FreeBSD kboot is a next kernel only (_check_froms)
        from_list = [p for p in to_list if PROFILES[p].kind == "linux"]
    else:
        from_list = _split(froms, list(PROFILES), "profile")
    _check_froms(to_list if from_list is None else from_list)
    grid = cells(
        from_list,
        to_list,
        cast("list[Mode]", _split(modes, ["kexec", "kdump"], "mode")),
        cast("list[Boot]", _split(boots, ["efi", "dt"], "boot method")),
        _split(platforms, list(PLATFORMS), "platform"),
        loader,
    )
    results = [run_cell(c, seed) for c in grid]
    if as_json:
        click.echo(json.dumps({"cells": results}))
    elif markdown:
        ctx = click.get_current_context()
        args = ["gickexec matrix"]
        for name in ("froms", "tos", "modes", "boots", "platforms", "seed", "loader"):
            value = ctx.params[name]
            if ctx.get_parameter_source(name) != click.core.ParameterSource.DEFAULT:
                flag = {"froms": "from", "seed": "seed", "loader": "loader"}.get(
                    name, name.rstrip("s")
                )
                args.append(f"--{flag} {value}")
        args.append("--markdown")
        click.echo(matrix_markdown(results, " ".join(args)), nl=False)
    else:
        click.echo(matrix_text(results))
