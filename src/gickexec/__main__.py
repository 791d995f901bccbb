"""``python -m gickexec``: the same command line as the ``gickexec`` script."""

from gickexec.cli import main

main(prog_name="gickexec")
