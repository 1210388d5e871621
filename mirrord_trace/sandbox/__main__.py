"""`python -m mirrord_trace.sandbox up|status|down`: the sandbox CLI group on its own."""

from mirrord_trace.sandbox.cli import sandbox_group

sandbox_group(prog_name="python -m mirrord_trace.sandbox")
