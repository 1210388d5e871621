"""feature.network.ipv6 false: the program cannot open IPv6 sockets, as on a host without an
IPv6 stack (mirrord's meaning): socket(AF_INET6, ...) fails with EAFNOSUPPORT, so programs
fall back to IPv4 as they do there. Nothing is trapped when it is true (the default)."""

from __future__ import annotations

import errno
import socket

from mirrord_trace.handlers.actions import Action, Emulate
from mirrord_trace.handlers.call import SyscallCall
from mirrord_trace.handlers.trap import SessionContext, Trap
from mirrord_trace.syscall_table import SyscallShape
from seccomp import ArgCondition

SOCKET = SyscallShape("socket", ("int", "int", "int"))
SOCKETPAIR = SyscallShape("socketpair", ("int", "int", "int", "ptr"))
_WHY = "IPv6 is off (feature.network.ipv6 false)"


def traps(context: SessionContext) -> list[Trap]:
    if context.config.feature.network.ipv6:
        return []

    def refuse(call: SyscallCall) -> Action | None:
        if call.int_arg(0) == socket.AF_INET6:
            return Emulate(-errno.EAFNOSUPPORT, why=_WHY)
        return None

    only_inet6 = ArgCondition(0, "==", socket.AF_INET6)
    return [Trap(shape, refuse, when=only_inet6, notify=True) for shape in (SOCKET, SOCKETPAIR)]
