"""Export, inspect and report timings on the built-in fixed scenario (8 GiB machine).

* export: the sparse ELF core of the whole machine (size on disk vs apparent size);
* inspect: open + scan the image for the EFI system table (SEEK_DATA skips holes) +
  walk the memreserve chain + decode and check the live tables;
* report: the HTML page with its two figures.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from gickexec.inspect.analyze import find_systab, inspect_image, tables_from_note
from gickexec.inspect.image import open_image
from gickexec.inspect.vmcore import NOTE_NAME, machine_info, parse_note, write_vmcore
from gickexec.report.html import write_report
from gickexec.scenario.builtin import load_builtin
from gickexec.scenario.runner import describe, play


def _ms(t: float) -> str:
    return f"{(time.perf_counter() - t) * 1000:8.1f} ms"


def main() -> None:
    sc = load_builtin("efi-kexec-fixed")
    world = play(sc)
    assert world.firmware is not None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "g.elf"
        t = time.perf_counter()
        data = write_vmcore(
            world.machine.mem, path, info=machine_info(world.machine, world.firmware.systab)
        )
        st = path.stat()
        print(
            f"export              {_ms(t)}  {st.st_size >> 30} GiB apparent, "
            f"{st.st_blocks * 512 >> 10} KiB on disk, {data >> 10} KiB of data"
        )
        t = time.perf_counter()
        with open_image(path) as img:
            found, _ = find_systab(img)
            assert found == world.firmware.systab
            print(f"scan for systab     {_ms(t)}")
            t = time.perf_counter()
            doc = inspect_image(img, tables=tables_from_note(parse_note(img.notes[NOTE_NAME])))
            print(f"inspect (scan+walk+tables) {_ms(t)}  ok={doc['ok']}")
        result = describe(sc, world)
        result.update(ok=True, expectations=[])
        t = time.perf_counter()
        write_report([result], Path(tmp) / "report")
        print(f"report (html + 2 png) {_ms(t)}")


if __name__ == "__main__":
    main()
