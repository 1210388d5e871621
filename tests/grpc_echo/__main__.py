"""`python -m tests.grpc_echo NAME ADDRESS BUILD_DIR`: the echo server as a program of its own
(the pod's server, or the program under mirrord-trace); prints `listening PORT` when ready."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

from tests.grpc_echo import serve

if __name__ == "__main__":
    name, address, build = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    server, port = serve(build, name, address)
    print(f"listening {port}", flush=True)
    threading.Event().wait()  # until killed
