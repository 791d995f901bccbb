"""Instructions per MSI, counted by valgrind: ``python benchmarks/bench_instructions.py``.

Wall and CPU time on a shared 2-core VM move by 30 % from one run to the next; the number
of instructions the interpreter executes does not (with a fixed hash seed and one BLAS
thread).  Each figure is (Ir(N MSIs) - Ir(0)) / N for one-at-a-time traffic on
efi-server-8 (the ``msi_rate`` setting of benchmarks/run.py), with the one-step MSI path
(``World.fast_msi``) and without it.  Needs valgrind; takes about two minutes.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

_N = 10_000
_SCRIPT = """
import sys
from gickexec.bench import _booted
from gickexec.hw.platform import PLATFORMS
w = _booted(PLATFORMS["efi-server-8"], batch=False)
w.fast_msi = sys.argv[2] == "1"
w.traffic("eth0", int(sys.argv[1]))
"""


def _instructions(msis: int, fast: bool) -> int:
    env = dict(os.environ, PYTHONHASHSEED="0", OPENBLAS_NUM_THREADS="1")
    out = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
         sys.executable, "-c", _SCRIPT, str(msis), str(int(fast))],
        env=env, capture_output=True, text=True, check=True,
    ).stderr
    match = re.search(r"Collected : ([\d,]+)", out)
    if match is None:
        raise SystemExit(f"valgrind printed no instruction count:\n{out[-2000:]}")
    return int(match.group(1).replace(",", ""))


def main() -> None:
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed")
    for fast in (True, False):
        per_msi = (_instructions(_N, fast) - _instructions(0, fast)) // _N
        label = "one-step path" if fast else "reference path"
        print(f"{label:15} {per_msi:8,} instructions per MSI")


if __name__ == "__main__":
    main()
