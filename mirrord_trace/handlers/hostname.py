"""feature.hostname: the program sees the target's host name, as in mirrord.

uname(2) is answered with this machine's kernel fields and the target's node name (the
target's /etc/hostname, read once through the agent, at the first uname); gethostname(3)
and `hostname` use uname. /etc/hostname itself is read from the target by the filesystem
rules (it is in their default remote list). Without a target, or with `feature.hostname`
false, uname is not trapped at all.
"""

from __future__ import annotations

import os
import threading

from mirrord_trace.handlers.actions import Action, Emulate
from mirrord_trace.handlers.call import SyscallCall
from mirrord_trace.handlers.trap import SessionContext, Trap
from mirrord_trace.syscall_table import SyscallShape

UNAME = SyscallShape("uname", ("ptr",))
# struct utsname (Linux, x86_64): six fields of __NEW_UTS_LEN + 1 = 65 bytes each.
UTS_FIELD = 65
_DOMAINNAME = "/proc/sys/kernel/domainname"


def target_hostname(agent: object) -> str | None:
    """The target's /etc/hostname (first line), or None when it has none."""
    try:
        content = agent.request("fs.open_read", path="/etc/hostname")["content"]  # type: ignore[attr-defined]
    except Exception:  # the agent's errors (no such file...): keep the local name
        return None
    name = bytes(content).decode(errors="replace").strip().splitlines()
    return name[0].strip() if name and name[0].strip() else None


def utsname(nodename: str) -> bytes:
    local = os.uname()
    try:
        with open(_DOMAINNAME, encoding="ascii", errors="replace") as stream:
            domainname = stream.read().strip()
    except OSError:
        domainname = "(none)"
    fields = (local.sysname, nodename, local.release, local.version, local.machine, domainname)
    return b"".join(
        field.encode(errors="replace")[: UTS_FIELD - 1].ljust(UTS_FIELD, b"\0") for field in fields
    )


def traps(context: SessionContext) -> list[Trap]:
    if context.agent is None or not context.config.feature.hostname:
        return []
    agent = context.agent
    lock = threading.Lock()
    answer: list[bytes | None] = []  # asked on the first uname: most programs never call it

    def on_uname(call: SyscallCall) -> Action | None:
        with lock:
            if not answer:
                hostname = target_hostname(agent)
                answer.append(None if hostname is None else utsname(hostname))
        if answer[0] is None:
            return None  # the target has no /etc/hostname: the local name
        return Emulate(0, ((call.args[0], answer[0]),), why="uname: the target's host name")

    return [Trap(UNAME, on_uname, notify=True)]
