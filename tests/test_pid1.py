"""mirrord-trace exec as PID 1 (a container entrypoint), in a real new PID namespace."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from tests.conftest import ROOT, example_binary

MIRRORD_TRACE = str(ROOT / ".venv" / "bin" / "mirrord-trace")
UNSHARE = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"]

COUNT_ZOMBIES = (
    "import os\n"
    "z = 0\n"
    "for p in os.listdir('/proc'):\n"
    "    if p.isdigit():\n"
    "        try:\n"
    "            z += open(f'/proc/{p}/stat').read().rsplit(') ', 1)[1][0] == 'Z'\n"
    "        except OSError:\n"
    "            pass\n"
    "print('zombies', z)\n"
)


def test_pid1_reaps_orphans_and_passes_status() -> None:
    # Orphans: background jobs of subshells that exit at once, so they are re-parented to PID 1.
    script = (
        "(sleep 0.1 &) ; (sh -c 'exit 0' &) ; (sleep 0.2 &) ; sleep 0.8 ; "
        f"python3 -c \"{COUNT_ZOMBIES}\" ; exit 7"
    )
    out = subprocess.run([*UNSHARE, MIRRORD_TRACE, "exec", "--", "sh", "-c", script],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 7, out.stderr
    assert "zombies 0" in out.stdout


def test_pid1_forwards_sigterm() -> None:
    container = subprocess.Popen(
        [*UNSHARE, MIRRORD_TRACE, "exec", "--", str(example_binary("probe-static")),
         "echo-stdin"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        program = None
        deadline = time.monotonic() + 20
        while program is None and time.monotonic() < deadline:  # until the program itself runs
            found = subprocess.run(["pgrep", "-f", "probe-static echo-stdin"],
                                   capture_output=True, text=True).stdout.split()
            for pid in found:
                if Path(f"/proc/{pid}/exe").resolve() == example_binary("probe-static"):
                    program = int(pid)
            time.sleep(0.05)
        assert program is not None
        supervisor = int(Path(f"/proc/{program}/stat").read_text().rsplit(") ", 1)[1].split()[1])
        subprocess.run(["kill", "-TERM", str(supervisor)], check=True)  # as `docker stop` does
        assert container.wait(10) == 128 + signal.SIGTERM
    finally:
        container.kill()
        container.wait()
