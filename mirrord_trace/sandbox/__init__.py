"""The sandbox pod: a stand-in for a Kubernetes pod built from namespaces on this machine.

Used by tests, the demo and benchmarks:

    info = up("mysandbox")        # SandboxInfo: addresses, names, files, target pid, secret
    status("mysandbox")           # SandboxInfo with .problems, or None
    run_in_sandbox_netns(["python3", "-c", "..."], name="mysandbox", capture_output=True)
    run_in_target(["/bin/busybox", "nslookup", "db"], name="mysandbox", capture_output=True)
    down("mysandbox")             # removes processes, namespace, links, routes, files, state
"""

from mirrord_trace.sandbox.errors import SandboxError, SandboxExistsError
from mirrord_trace.sandbox.info import SandboxInfo
from mirrord_trace.sandbox.lifecycle import down, status, up
from mirrord_trace.sandbox.plan import DEFAULT_NAME, SANDBOX_BASE, InvalidSandboxName
from mirrord_trace.sandbox.run import run_in_sandbox_netns, run_in_target

__all__ = [
    "DEFAULT_NAME",
    "SANDBOX_BASE",
    "InvalidSandboxName",
    "SandboxError",
    "SandboxExistsError",
    "SandboxInfo",
    "down",
    "run_in_sandbox_netns",
    "run_in_target",
    "status",
    "up",
]
