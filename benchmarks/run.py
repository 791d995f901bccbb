"""Every speed figure in one run: ``python benchmarks/run.py [--json] [--quick]``.

The same as ``gickexec bench``; the figures and how they are taken are described in
benchmarks/README.md (code: src/gickexec/bench.py).
"""

from __future__ import annotations

import json
import sys

from gickexec.bench import format_text, measure


def main(argv: list[str]) -> None:
    unknown = [a for a in argv if a not in ("--json", "--quick")]
    if unknown:
        sys.exit(f"usage: python benchmarks/run.py [--json] [--quick] (unknown: {unknown})")
    figures = measure(quick="--quick" in argv)
    print(json.dumps(figures) if "--json" in argv else format_text(figures))


if __name__ == "__main__":
    main(sys.argv[1:])
