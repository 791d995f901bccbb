"""``gickexec``: the command line, a thin layer over :mod:`gickexec.scenario`.

Exit status of ``run``: 0 when every scenario passes (its expectations hold, or, when it
declares none, it is healthy), 1 when one does not, 2 for bad input (the message names
the file, line and field), 3 for an internal error of the model (one line;
``GICKEXEC_DEBUG=1`` adds the traceback).  Data goes to stdout, progress and messages to
stderr.
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

from gickexec.bounded import InputError, clip, parse_uint, read_input
from gickexec.hw.platform import PLATFORMS
from gickexec.kernel.kexec import LOADERS, Loader
from gickexec.kernel.profiles import FEATURE_SOURCES, PROFILES
from gickexec.report.document import ResultDocumentError, bound_results
from gickexec.report.hardware import platforms_doc, platforms_markdown, platforms_text
from gickexec.report.text import LogDetail, render_scenario, render_summary
from gickexec.scenario.builtin import builtin_names, builtin_text, load_builtin
from gickexec.scenario.matrix import (
    MATRIX_PLATFORMS,
    MATRIX_PROFILES,
    Boot,
    Mode,
    cells,
    matrix_markdown,
    matrix_text,
    run_cells,
)
from gickexec.scenario.runner import StepHook, run_scenario
from gickexec.scenario.schema import (
    MAX_SEED,
    Scenario,
    ScenarioError,
    load_scenario,
    parse_scenario,
)
from gickexec.scenario.world import World

__all__ = ["main"]


def _bad_input(message: str) -> NoReturn:
    click.echo(f"gickexec: error: {message}", err=True)
    sys.exit(2)


def _resolve(arg: str) -> Scenario:
    """A scenario file path, ``-`` for standard input, or the name of a built-in scenario."""
    if arg == "-":
        return parse_scenario(sys.stdin.read(), "<stdin>")
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


#: The version of every JSON document gickexec prints (its "schema" key; docs/json.md).
JSON_SCHEMA = 1


def _version_message() -> str:
    kernels = ", ".join(f"{p.name} ({p.release})" for p in PROFILES.values())
    return (
        "%(prog)s %(version)s\n"
        f"kernel profiles: {kernels}\n"
        f"platform presets: {', '.join(PLATFORMS)}"
    )


def _print_json(doc: dict[str, Any], pretty: bool) -> None:
    """The one JSON convention: a ``schema`` key first, compact unless ``-p``."""
    click.echo(json.dumps({"schema": JSON_SCHEMA, **doc}, indent=2 if pretty else None))


def _json_options(f: Any) -> Any:
    f = click.option("-p", "--pretty", is_flag=True, help="Indent the JSON output.")(f)
    return click.option(
        "--json", "as_json", is_flag=True, help="Print one JSON document (docs/json.md)."
    )(f)


def _colour(choice: str) -> bool | None:
    """click.echo's ``color``: None lets click colour only a terminal; NO_COLOR wins
    over auto (https://no-color.org)."""
    if choice == "auto":
        return False if os.environ.get("NO_COLOR") else None
    return choice == "always"


_COLOR_OPTION = click.option(
    "--color",
    type=click.Choice(["auto", "always", "never"]),
    default="auto",
    show_default=True,
    help="dmesg-style colour; auto: on a terminal unless NO_COLOR is set.",
)
_QUIET_OPTION = click.option(
    "-q", "--quiet", is_flag=True, help="No progress or messages on stderr."
)


class _Progress:
    """Progress on stderr: one rewritten line on a terminal, a plain line per tenth
    otherwise, nothing with -q."""

    def __init__(self, what: str, quiet: bool) -> None:
        self.what = what
        self.quiet = quiet
        self.tty = sys.stderr.isatty()

    def __call__(self, done: int, total: int, name: str) -> None:
        if self.quiet:
            return
        if self.tty:
            end = "\n" if done == total else ""
            click.echo(f"\r\x1b[K{self.what} {done}/{total} {name}{end}", err=True, nl=False)
        elif done == total or done * 10 // total != (done - 1) * 10 // total:
            click.echo(f"gickexec: {self.what} {done}/{total}", err=True)


def _complete_scenario(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    """Built-in scenario names, then files (click's shell completion)."""
    names = [click.shell_completion.CompletionItem(n) for n in builtin_names()]
    return [c for c in names if c.value.startswith(incomplete)] + [
        click.shell_completion.CompletionItem(incomplete, type="file")
    ]


def _complete_from(choices: Sequence[str]) -> Any:
    """Completion of a comma-separated list of ``choices`` (the last item)."""

    def complete(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
        head, _, last = incomplete.rpartition(",")
        prefix = head + "," if head else ""
        return [prefix + c for c in choices if c.startswith(last)]

    return complete


_EXIT_RUN = """\b
Exit status: 0 every scenario passed (its expectations hold; with none
declared, it is healthy), 1 one did not, 2 bad input."""


@click.group(
    cls=_Guarded,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="""\b
Examples:
  gickexec run                       the built-in scenarios, one screen each
  gickexec run efi-kexec-unfixed -v  one scenario with its full kernel logs
  gickexec matrix --from all         kexec/kdump from every kernel into every kernel
  gickexec fixes                     the candidate device-tree fixes, evaluated
  gickexec inspect vmcore --json     memreserve list and LPI tables of a real dump
Shell completion: eval "$(_GICKEXEC_COMPLETE=bash_source gickexec)" (zsh_source, fish_source).""",
)
@click.version_option(package_name="gickexec", message=_version_message())
def main() -> None:
    """Byte-accurate model of GICv3 LPI tables across kexec, with Linux's EFI memreserve fix.

    Each command's --help says what it prints and its exit status."""


@main.command(
    short_help="Play scenarios: logs, /proc/interrupts, health and expectations.",
    epilog=_EXIT_RUN
    + """

\b
Examples:
  gickexec run                          verdicts and the decisive log lines
  gickexec run efi-kexec-unfixed        one scenario: its full logs
  gickexec run my.toml --report out/    also an HTML report in out/
  gickexec show efi-kexec-fixed | gickexec run -   a scenario on stdin
  gickexec run --json -p > results.json""",
)
@click.argument("scenarios", nargs=-1, shell_complete=_complete_scenario)
@_json_options
@click.option(
    "--seed",
    type=click.IntRange(0, MAX_SEED),
    default=None,
    help="Override every scenario's seed.",
)
@click.option("--no-logs", is_flag=True, help="Leave the kernel logs out of the text report.")
@click.option(
    "-v",
    "--verbose",
    is_flag=True,
    help="Full kernel logs (the default for one scenario; otherwise the decisive lines).",
)
@click.option(
    "--all",
    "all_rows",
    is_flag=True,
    help="Every CPU column and row of /proc/interrupts, idle ones too.",
)
@_COLOR_OPTION
@_QUIET_OPTION
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
    help="Export after this top-level step of the scenario file (0-based; a repeat "
    "counts once; default: at the end).",
)
def run(
    scenarios: tuple[str, ...],
    as_json: bool,
    pretty: bool,
    seed: int | None,
    no_logs: bool,
    verbose: bool,
    all_rows: bool,
    color: str,
    quiet: bool,
    report_dir: Path | None,
    export_vmcore: Path | None,
    export_at: int | None,
) -> None:
    """Play scenario files, built-in names or - (stdin); without arguments, the built-ins.

    Prints per scenario the kernel logs, /proc/interrupts and a verdict: its health
    (healthy, or what went wrong, worst first) and whether its expectations held."""
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
        hook = _exporter(export_vmcore, at, quiet)
        _check_target(export_vmcore)
    elif export_at is not None:
        _bad_input("--export-at goes with --export-vmcore")
    colour = _colour(color)
    logs: LogDetail = "none" if no_logs else "full" if verbose or len(loaded) == 1 else "key"
    # text streams as it goes, and one scenario is quick: progress for JSON campaigns
    progress = _Progress("scenario", quiet or not as_json or len(loaded) == 1)
    results: list[dict[str, Any]] = []
    for sc in loaded:
        result = run_scenario(sc, hook)
        results.append(result)
        progress(len(results), len(loaded), sc.name)
        if not as_json:
            click.echo(render_scenario(result, logs=logs, all_rows=all_rows), color=colour)
            click.echo()
    if as_json:
        _print_json({"scenarios": results}, pretty)
    else:
        click.echo(render_summary(results), color=colour)
    if report_dir is not None:
        _write_report(results, report_dir, quiet)
    sys.exit(0 if all(r["ok"] for r in results) else 1)


def _check_target(path: Path) -> None:
    """Refuse an export target before the scenario runs, not after: a missing directory,
    or an existing output that is not a regular file (FIFO, device, symlink)."""
    from gickexec.inspect.vmcore import target_mode  # noqa: PLC0415 - lazy: pyelftools

    try:
        target_mode(path)
    except OSError as e:
        _bad_input(f"{clip(str(path), 400)}: {e.strerror}")


def _write_report(results: list[dict[str, Any]], outdir: Path, quiet: bool) -> None:
    # The report stack (jinja2, matplotlib) costs most of the start-up time: only here.
    import jinja2  # noqa: PLC0415 - lazy: report stack

    from gickexec.report.html import write_report  # noqa: PLC0415 - lazy: report stack

    try:
        results, notes = bound_results(results)
    except ResultDocumentError as e:
        _bad_input(f"not a result document of 'gickexec run --json': {e}")
    for note in notes:
        click.echo(f"gickexec: report: {note}", err=True)
    try:
        index = write_report(results, outdir, _Progress("report figures", quiet))
    except OSError as e:
        _bad_input(f"{outdir}: {e.strerror}")
    except (KeyError, TypeError, ValueError, AttributeError, jinja2.UndefinedError) as e:
        _bad_input(f"not a result document of 'gickexec run --json': {type(e).__name__}: {e}")
    if not quiet:
        click.echo(f"gickexec: report written to {index}", err=True)


@main.command(
    short_help="Write the HTML report of a saved 'run --json' document.",
    epilog="""\b
Exit status: 0 report written, 2 bad input.
Examples:
  gickexec report results.json -o out/
  gickexec run --json | gickexec report - -o out/""",
)
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
@_QUIET_OPTION
def report(results: Path, output: Path, quiet: bool) -> None:
    """Write the HTML report of a saved 'gickexec run --json' document (- for stdin)."""
    try:
        if str(results) == "-":
            doc = json.loads(sys.stdin.read())
        else:
            doc = json.loads(read_input(str(results)).decode("utf-8"))
    except InputError as e:
        _bad_input(str(e))
    except (UnicodeDecodeError, ValueError) as e:  # ValueError: JSON, or a huge integer
        _bad_input(f"{results}: not readable JSON: {clip(str(e))}")
    except RecursionError:
        _bad_input(f"{results}: not readable JSON: nested too deeply")
    if isinstance(doc, dict) and doc.get("schema", JSON_SCHEMA) != JSON_SCHEMA:
        _bad_input(
            f"{results}: a schema {clip(repr(doc['schema']))} document; this gickexec reads "
            f"schema {JSON_SCHEMA} (re-run 'gickexec run --json' with it)"
        )
    scenarios = doc.get("scenarios") if isinstance(doc, dict) else None
    if not isinstance(scenarios, list) or not all(isinstance(s, dict) for s in scenarios):
        _bad_input(f"{results}: expected {{\"scenarios\": [...]}} as 'gickexec run --json' writes")
    _write_report(scenarios, output, quiet)


def _exporter(path: Path, at: int, quiet: bool) -> StepHook:
    # pyelftools and the inspect code only when a core is exported.
    from gickexec.inspect.vmcore import machine_info, write_vmcore  # noqa: PLC0415 - lazy

    def hook(index: int, world: World) -> None:
        if index == at:
            systab = world.firmware.systab if world.firmware else None
            info = machine_info(world.machine, systab)
            try:
                write_vmcore(world.machine.mem, path, info=info)
            except OSError as e:
                _bad_input(f"{path}: {e.strerror}")
            if not quiet:
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


@main.command(short_help="Memreserve list and LPI tables in a real memory image.")
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
@_json_options
@_COLOR_OPTION
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
    pretty: bool,
    color: str,
) -> None:
    """Report what the next kernel would see in a guest memory image (ELF core or raw).

    \b
    Exit status: 0 every live LPI table is covered by the memreserve list, 1 one is
    not, or no live table was known so nothing could be checked, 2 bad input.
    \b
    Examples:
      gickexec inspect guest.elf
      gickexec inspect mem.raw --base 0x40000000 --propbaser 0x40a8000f --pendbaser 0=0x40ac0000"""

    # Lazy: pyelftools and the inspect code cost start-up time every other command saves.
    from gickexec.inspect.analyze import (  # noqa: PLC0415
        inspect_image,
        tables_from_log,
        tables_from_note,
        tables_from_registers,
    )
    from gickexec.inspect.image import ImageError, open_image  # noqa: PLC0415
    from gickexec.inspect.vmcore import NOTE_NAME, parse_note  # noqa: PLC0415
    from gickexec.report.dump import render_inspection  # noqa: PLC0415

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
        tables_how = "named by options"
        if not regs_given:
            tables, tables_how = tables_from_note(note), "from the image's GICKEXEC note"
        if not regs_given and not tables:
            tables, tables_how = tables_from_log(img, id_bits), "from kernel log lines in the image"
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
    doc["tables_how"] = tables_how if tables else None
    if as_json:
        _print_json(doc, pretty)
    else:
        click.echo(render_inspection(doc), nl=False, color=_colour(color))
    sys.exit(0 if doc["ok"] else 1)


@main.command()
@_json_options
def scenarios(as_json: bool, pretty: bool) -> None:
    """List the built-in scenarios (gickexec show NAME prints one)."""
    loaded = [load_builtin(name) for name in builtin_names()]
    if as_json:
        _print_json(
            {
                "scenarios": [
                    {"name": sc.name, "description": sc.description, "platform": sc.platform.name}
                    for sc in loaded
                ]
            },
            pretty,
        )
        return
    for sc in loaded:
        click.echo(f"{sc.name:<22} {sc.description}")


@main.command()
@click.argument("name", shell_complete=_complete_scenario)
def show(name: str) -> None:
    """Print a built-in scenario as TOML, ready to edit."""
    try:
        click.echo(builtin_text(name), nl=False)
    except KeyError:
        _bad_input(f"no built-in scenario {name!r} (built-in: {', '.join(builtin_names())})")


@main.command()
@_json_options
@click.option("--markdown", is_flag=True, help="Print docs/hardware.md.")
def platforms(as_json: bool, pretty: bool, markdown: bool) -> None:
    """List the platform presets and their GIC knob settings."""
    _one_format(as_json, markdown)
    if as_json:
        _print_json(platforms_doc(), pretty)
    elif markdown:
        click.echo(platforms_markdown(), nl=False)
    else:
        click.echo(platforms_text(), nl=False)


@main.command(
    short_help="Compare a scenario's kernel logs with a real serial log.",
    epilog="""\b
Exit status: 0 every compared line and kexec segment matches (numbers aside for lines),
1 something differs, 2 bad input.
Examples:
  gickexec compare qemu-uefi-kexec tests/data/realcheck/uefi-kexec.txt
  gickexec compare my.toml console.log --json -p""",
)
@click.argument("scenario", shell_complete=_complete_scenario)
@click.argument("log", type=click.Path(dir_okay=False, path_type=Path))
@_json_options
def compare(scenario: str, log: Path, as_json: bool, pretty: bool) -> None:
    """Play SCENARIO and compare each kernel generation's GIC, ITS, EFI, SMP, kexec and
    kdump lines with the boots in LOG (a serial console log or dmesg), in order and word
    for word except numbers; and kexec-tools' -d segments with the model's loader."""
    from gickexec.scenario.compare import compare_world  # noqa: PLC0415 - only here
    from gickexec.scenario.runner import play  # noqa: PLC0415

    sc = _resolve(scenario)
    try:
        text = read_input(str(log)).decode("utf-8", errors="replace")
    except InputError as e:
        _bad_input(str(e))
    result = compare_world(play(sc), text)
    if not result.generations or not any(g.real for g in result.generations):
        _bad_input(f"{log}: no kernel boot ('Booting Linux on physical CPU') in it")
    if as_json:
        _print_json({"scenario": sc.name, **result.to_json()}, pretty)
    else:
        click.echo(result.text())
    sys.exit(0 if result.ok else 1)


@main.command(
    short_help="Predict a live system's planned kexec or kdump from what it shows.",
    epilog="""\b
Exit status: 0 the handover is safe (tables reused, or no LPIs), 1 it is not (hang,
corruption, LPIs lost; with --enable-lpis unknown: in either case), 2 bad input.
Examples:
  gickexec preflight BUNDLE/                    # what 'gickexec collect' gathered
  gickexec preflight --dmesg dmesg.txt --iomem iomem.txt --kexec-debug kexec-d.txt
  gickexec preflight --dmesg serial.log --next v6.6 --enable-lpis unknown --json -p
See docs/preflight.md.""",
)
@click.argument("bundle", required=False, type=click.Path(path_type=Path))
@click.option(
    "--dmesg",
    "dmesg_path",
    type=click.Path(path_type=Path),
    help="The running kernel's log: dmesg, or a whole serial log.",
)
@click.option(
    "--iomem", "iomem_path", type=click.Path(path_type=Path), help="/proc/iomem, read as root."
)
@click.option(
    "--kexec-debug",
    "kexec_path",
    type=click.Path(path_type=Path),
    help="kexec-tools' -d output of the planned kexec -l or kexec -p.",
)
@click.option(
    "--interrupts",
    "irq_path",
    type=click.Path(path_type=Path),
    help="/proc/interrupts (its ITS-MSI rows are the devices the model drives).",
)
@click.option(
    "--next", "next_kernel", help="Profile of the next kernel (default: the running one's)."
)
@click.option(
    "--cmdline", help="The next kernel's command line (default: kexec -d's, else the running one)."
)
@click.option("--kdump", is_flag=True, help="The plan is a kdump (kexec -p, then a panic).")
@click.option(
    "--enable-lpis",
    type=click.Choice(["auto", "one-way", "clearable", "unknown"]),
    default="auto",
    show_default=True,
    help="Whether GICR_CTLR.EnableLPIs can be cleared; auto: known for QEMU virt, "
    "else unknown (both outcomes).",
)
@click.option("--mem-min", help="kexec --mem-min of the plan (without --kexec-debug).")
@click.option("--mem-max", help="kexec --mem-max of the plan (without --kexec-debug).")
@click.option("--initrd-size", help="Bytes of the next kernel's initrd (without --kexec-debug).")
@_json_options
def preflight(
    bundle: Path | None,
    dmesg_path: Path | None,
    iomem_path: Path | None,
    kexec_path: Path | None,
    irq_path: Path | None,
    next_kernel: str | None,
    cmdline: str | None,
    kdump: bool,
    enable_lpis: str,
    mem_min: str | None,
    mem_max: str | None,
    initrd_size: str | None,
    as_json: bool,
    pretty: bool,
) -> None:
    """Read what a running arm64 Linux shows (its kernel log, /proc/iomem, optionally
    kexec -d output of the planned load), build the model of it, play the planned kexec
    or kdump and say what the next kernel will do with the live LPI tables, and what
    would make it safe."""
    from gickexec.inspect.live import (  # noqa: PLC0415 - only here
        LiveError,
        read_bundle,
        read_live,
        read_text,
    )
    from gickexec.report.preflight import preflight_text  # noqa: PLC0415
    from gickexec.scenario.preflight import PreflightOptions  # noqa: PLC0415
    from gickexec.scenario.preflight import preflight as predict  # noqa: PLC0415

    try:
        if bundle is not None:
            if dmesg_path or iomem_path or kexec_path or irq_path:
                _bad_input("give a BUNDLE directory or --dmesg/--iomem files, not both")
            live = read_bundle(bundle)
        else:
            if dmesg_path is None:
                _bad_input("no input: give a BUNDLE directory or --dmesg FILE (and --iomem)")

            def text(path: Path | None) -> str | None:
                return None if path is None else read_text(path)

            log = text(dmesg_path)
            assert log is not None
            live = read_live(log, text(iomem_path), text(kexec_path), text(irq_path))
        opts = PreflightOptions(
            next_kernel=next_kernel,
            cmdline=cmdline,
            kdump=kdump,
            enable_lpis=cast(Any, enable_lpis),
            mem_min=None if mem_min is None else parse_uint(mem_min, "--mem-min"),
            mem_max=None if mem_max is None else parse_uint(mem_max, "--mem-max"),
            initrd_bytes=(
                None if initrd_size is None else parse_uint(initrd_size, "--initrd-size")
            ),
        )
        doc = predict(live, opts)
    except (LiveError, InputError) as e:
        _bad_input(str(e))
    if as_json:
        _print_json({"preflight": doc}, pretty)
    else:
        click.echo(preflight_text(doc))
    sys.exit(0 if doc["safe"] else 1)


@main.command(short_help="Print the collector script for 'gickexec preflight'.")
def collect() -> None:
    """Print collect.sh, the POSIX sh script that gathers a preflight bundle on the
    target (read-only, no Python needed there): gickexec collect > collect.sh, copy it
    over, run 'sudo sh collect.sh OUTDIR [kexec -l ARGS...]'."""
    from importlib import resources  # noqa: PLC0415

    script = resources.files("gickexec.data").joinpath("collect.sh").read_text("utf-8")
    click.echo(script, nl=False)


@main.command(short_help="List the kernel profiles and what tells them apart.")
@_json_options
def profiles(as_json: bool, pretty: bool) -> None:
    """List the kernel profiles and the behaviours that tell them apart."""
    if as_json:
        _print_json(
            {
                "profiles": [
                    {
                        "name": prof.name,
                        "os": "Linux" if prof.kind == "linux" else "FreeBSD",
                        "release": prof.release,
                        "description": prof.description,
                        "features": {n: getattr(prof, n) for n in FEATURE_SOURCES},
                    }
                    for prof in PROFILES.values()
                ],
                "feature_sources": dict(FEATURE_SOURCES),
            },
            pretty,
        )
        return
    for prof in PROFILES.values():
        os_name = "Linux" if prof.kind == "linux" else "FreeBSD"
        click.echo(f"{prof.name:<7} {os_name} {prof.release}: {prof.description}")
    click.echo("\nfeatures:")
    for name, source in FEATURE_SOURCES.items():
        values = ", ".join(f"{p.name}={getattr(p, name)}" for p in PROFILES.values())
        click.echo(f"  {name}: {values}\n      {source}")


def _one_format(as_json: bool, markdown: bool) -> None:
    if as_json and markdown:
        _bad_input("--json and --markdown exclude each other: pick one output format")


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


@main.command(
    short_help="Kexec/kdump from kernel X into Y per platform and boot.",
    epilog="""\b
Exit status: 0 the table was computed (its outcomes are data, not a verdict),
2 bad input.
Examples:
  gickexec matrix --to v4.19,v6.6 --mode kexec --boot efi
  gickexec matrix --from all --json -p
  gickexec matrix --from all --markdown > docs/compatibility.md""",
)
@click.option(
    "--from",
    "froms",
    default="same",
    show_default=True,
    shell_complete=_complete_from(["same", "all", *PROFILES]),
    help="Comma-separated profiles to kexec from; 'same' pairs each --to with itself, "
    "'all' uses every Linux --to profile.",
)
@click.option(
    "--to",
    "tos",
    default=",".join(MATRIX_PROFILES),
    show_default=True,
    shell_complete=_complete_from(list(PROFILES)),
    help="Comma-separated profiles to kexec (or kdump) into.",
)
@click.option(
    "--mode",
    "modes",
    default="kexec,kdump",
    show_default=True,
    shell_complete=_complete_from(["kexec", "kdump"]),
    help="kexec (kexec -l; -e) and/or kdump (a panic into a crashkernel= capture kernel).",
)
@click.option(
    "--boot",
    "boots",
    default="efi,dt",
    show_default=True,
    shell_complete=_complete_from(["efi", "dt"]),
    help="How the platform boots: efi (UEFI tables) and/or dt (device tree only).",
)
@click.option(
    "--platform",
    "platforms",
    default=",".join(MATRIX_PLATFORMS),
    show_default=True,
    shell_complete=_complete_from(list(PLATFORMS)),
    help="Comma-separated platform presets (gickexec platforms lists them).",
)
@click.option(
    "--seed",
    type=click.IntRange(0, MAX_SEED),
    default=1,
    show_default=True,
    help="Seed of every cell (placement of tables, KASLR).",
)
@click.option(
    "--loader",
    type=click.Choice(LOADERS),
    default="kexec-tools",
    show_default=True,
    help="What places the next kernel's segments on kexec.",
)
@_json_options
@click.option("--markdown", is_flag=True, help="Print docs/compatibility.md.")
@click.option(
    "--jobs",
    "-j",
    type=click.IntRange(min=1),
    default=None,
    help="Processes to run cells in (default: one per CPU); the output is the same.",
)
@_COLOR_OPTION
@_QUIET_OPTION
def matrix(
    froms: str,
    tos: str,
    modes: str,
    boots: str,
    platforms: str,
    seed: int,
    loader: Loader,
    as_json: bool,
    pretty: bool,
    markdown: bool,
    jobs: int | None,
    color: str,
    quiet: bool,
) -> None:
    """What happens when kernel X kexecs (or kdumps) into kernel Y, per platform and boot."""
    _one_format(as_json, markdown)
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
    results = run_cells(grid, seed, jobs, _Progress("matrix cell", quiet))
    if as_json:
        _print_json({"cells": results}, pretty)
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
        click.echo(matrix_text(results), color=_colour(color))


@main.command(
    short_help="The candidate fixes for device-tree systems, played through the model.",
    epilog="""\b
Exit status: 0 the table was computed (its outcomes are data, not a verdict).
Examples:
  gickexec fixes
  gickexec fixes --json -p
  gickexec fixes --markdown > docs/dt-fixes.md""",
)
@_json_options
@click.option("--markdown", is_flag=True, help="Print docs/dt-fixes.md.")
def fixes(as_json: bool, pretty: bool, markdown: bool) -> None:
    """Where each candidate fix for device-tree kexec and kdump holds and how it fails:
    chains of kernels that know the fix or not, kexec and kdump, DT and EFI boots,
    one-way and clearable EnableLPIs, kexec-tools and kexec_file_load (docs/dt-fixes.md)."""
    from gickexec.scenario import fixes as dt_fixes  # noqa: PLC0415 - only for fixes

    _one_format(as_json, markdown)
    results = dt_fixes.run_fix_cells(dt_fixes.fix_cells())
    if as_json:
        _print_json(dt_fixes.fixes_doc(results), pretty)
    elif markdown:
        click.echo(dt_fixes.fixes_markdown(results, "gickexec fixes --markdown"), nl=False)
    else:
        click.echo(dt_fixes.fixes_text(results))


@main.command(short_help="Measure the model's speed figures on this machine.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON document.")
@click.option("--quick", is_flag=True, help="Small counts, one repeat: a smoke run.")
def bench(as_json: bool, quick: bool) -> None:
    """Measure the model's speed figures on this machine (benchmarks/README.md)."""
    from gickexec.bench import format_text, measure  # noqa: PLC0415 - only for bench

    figures = measure(quick=quick)
    click.echo(json.dumps(figures) if as_json else format_text(figures))


def _names(values: tuple[str, ...]) -> tuple[str, ...]:
    """Repeatable options that also take comma-separated lists."""
    return tuple(v.strip() for value in values for v in value.split(",") if v.strip())


@main.command(short_help="Random kexec/kdump histories, failures shrunk to scenarios.")
@click.option("--budget", type=click.IntRange(min=1), required=True, help="Histories to run.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Directory for results.jsonl, summary.json and reproducers/.",
)
@click.option("--platform", "platforms", multiple=True, help="Platform preset(s) to draw from.")
@click.option("--kernels", multiple=True, help="Kernel profiles to draw from (comma-separated).")
@click.option(
    "--boot",
    "boots",
    multiple=True,
    type=click.Choice(["efi", "dt"]),
    help="Boot path(s) to draw from (default: each platform's own).",
)
@click.option("--max-steps", type=click.IntRange(2, 64), default=6, show_default=True)
@click.option("--invariant", "invariants", multiple=True, help="Check only these (repeatable).")
@click.option(
    "--workers", type=click.IntRange(min=1), default=None, help="Local processes [all cores]."
)
@click.option("--dask", metavar="tcp://HOST:PORT", help="Run on this Dask scheduler instead.")
@click.option("--resume", is_flag=True, help="Continue the campaign already in --out.")
@click.option("-q", "--quiet", is_flag=True, help="No progress and no summary on the terminal.")
def explore(
    budget: int,
    seed: int,
    out: Path,
    platforms: tuple[str, ...],
    kernels: tuple[str, ...],
    boots: tuple[str, ...],
    max_steps: int,
    invariants: tuple[str, ...],
    workers: int | None,
    dask: str | None,
    resume: bool,
    quiet: bool,
) -> None:
    """Random kexec/kdump histories checked after every step; failures shrunk to
    replayable scenarios (docs/explore.md).  Exit status 1 when a history failed."""
    from gickexec.scenario import explore as ex  # noqa: PLC0415 - only this command needs it

    if dask is not None and workers is not None:
        _bad_input("--workers and --dask exclude each other (the cluster has its workers)")
    settings: dict[str, Any] = {"seed": seed, "budget": budget, "max_steps": max_steps}
    for key, given in (
        ("platforms", _names(platforms)),
        ("kernels", _names(kernels)),
        ("boots", boots),
        ("invariants", _names(invariants)),
    ):
        if given:
            settings[key] = tuple(dict.fromkeys(given))
    try:
        campaign = ex.Campaign(**settings)
        doc = ex.run_campaign(campaign, out, workers=workers, dask=dask, resume=resume, quiet=quiet)
    except ex.ExploreError as e:
        _bad_input(str(e))
    except KeyboardInterrupt:
        click.echo(f"gickexec: interrupted; --resume --out {out} continues", err=True)
        sys.exit(130)
    if not quiet:
        click.echo(ex.summary_text(doc))
    sys.exit(1 if doc["failures"] else 0)
