"""``gickexec``: the command line, a thin layer over :mod:`gickexec.scenario`.

Exit status: 0 when every scenario's expectations hold, 1 when one does not, 2 for bad
input (the message names the file, line and field).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn, cast

import click

from gickexec.hw.platform import PLATFORMS
from gickexec.kernel.kexec import LOADERS, Loader
from gickexec.kernel.profiles import FEATURE_SOURCES, PROFILES
from gickexec.report.hardware import platforms_doc, platforms_markdown, platforms_text
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
from gickexec.scenario.runner import run_scenario
from gickexec.scenario.schema import Scenario, ScenarioError, load_scenario

__all__ = ["main"]


def _bad_input(message: str) -> NoReturn:
    click.echo(f"gickexec: error: {message}", err=True)
    sys.exit(2)


def _resolve(arg: str) -> Scenario:
    """A scenario file path, or the name of a built-in scenario."""
    path = Path(arg)
    if path.exists() or arg.endswith(".toml"):
        return load_scenario(path)
    if arg in builtin_names():
        return load_builtin(arg)
    _bad_input(
        f"{arg}: no such file, and no built-in scenario of that name "
        f"(built-in: {', '.join(builtin_names())})"
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="gickexec")
def main() -> None:
    """Byte-accurate model of GICv3 LPI tables across kexec, with Linux's EFI memreserve fix."""


@main.command()
@click.argument("scenarios", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of text.")
@click.option("-p", "--pretty", is_flag=True, help="Indent the JSON output.")
@click.option(
    "--seed", type=click.IntRange(min=0), default=None, help="Override every scenario's seed."
)
@click.option("--no-logs", is_flag=True, help="Leave the kernel logs out of the text report.")
def run(
    scenarios: tuple[str, ...], as_json: bool, pretty: bool, seed: int | None, no_logs: bool
) -> None:
    """Play scenario files (or built-in names); without arguments, the built-in defaults."""
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
    results: list[dict[str, Any]] = []
    for sc in loaded:
        result = run_scenario(sc)
        results.append(result)
        if not as_json:
            click.echo(render_scenario(result, logs=not no_logs))
            click.echo()
    if as_json:
        click.echo(json.dumps({"scenarios": results}, indent=2 if pretty else None))
    else:
        click.echo(render_summary(results))
    sys.exit(0 if all(r["ok"] for r in results) else 1)


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
        click.echo(f"{prof.name:<7} Linux {prof.release}: {prof.description}")
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


@main.command()
@click.option(
    "--from",
    "froms",
    default="same",
    show_default=True,
    help="Comma-separated profiles to kexec from; 'same' pairs each --to with itself, "
    "'all' uses every --to profile.",
)
@click.option("--to", "tos", default=",".join(MATRIX_PROFILES), show_default=True)
@click.option("--mode", "modes", default="kexec,kdump", show_default=True)
@click.option("--boot", "boots", default="efi,dt", show_default=True)
@click.option("--platform", "platforms", default=",".join(MATRIX_PLATFORMS), show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=1, show_default=True)
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
    elif froms == "all":
        from_list = to_list
    else:
        from_list = _split(froms, list(PROFILES), "profile")
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
