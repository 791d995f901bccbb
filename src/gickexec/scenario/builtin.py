"""The scenarios shipped with gickexec (``gickexec scenarios``, ``gickexec show NAME``)."""

from __future__ import annotations

from importlib import resources

from gickexec.scenario.schema import Scenario, parse_scenario

__all__ = ["builtin_names", "builtin_text", "load_builtin"]

_DIR = "builtin"


def _files() -> dict[str, str]:
    """name -> file name, in file order (the default run order)."""
    out: dict[str, str] = {}
    root = resources.files("gickexec.scenario").joinpath(_DIR)
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".toml"):
            name = entry.name.split("-", 1)[1].removesuffix(".toml")
            out[name] = entry.name
    return out


def builtin_names() -> list[str]:
    return list(_files())


def builtin_text(name: str) -> str:
    files = _files()
    if name not in files:
        raise KeyError(name)
    return resources.files("gickexec.scenario").joinpath(_DIR, files[name]).read_text("utf-8")


def load_builtin(name: str) -> Scenario:
    return parse_scenario(builtin_text(name), f"<builtin:{name}>")
