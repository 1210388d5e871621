"""`python -m mirrord_trace` runs the same command line as the `mirrord-trace` script."""

from mirrord_trace.cli import PROG, main

main(prog_name=PROG)
