"""Outgoing traffic: connect, sendto/sendmsg/sendmmsg, and what the program learns about the
connections (getpeername, getsockname, SO_ERROR, the source of UDP replies).

connect() to a remote destination: the agent connects from the target first (one round trip,
the thread parked meanwhile, the rest of the program running on); the program's socket is
then connected by the supervisor to a loopback relay whose other end is pumped through the
agent stream. A blocking socket sees 0, a non-blocking one EINPROGRESS and then SO_ERROR 0;
a failure gives the agent's errno the same way (non-blocking: EINPROGRESS, then SO_ERROR).
getpeername reports the destination the program asked for, getsockname the target-side
address.

UDP datagrams to remote destinations and DNS queries go to relays the same way; the
supervisor sends unconnected datagrams itself through the program's own socket, so its
source port is the program's, and recvfrom/recvmsg report the address the program sent to.

Unix sockets, loopback and destinations the policy keeps local are left alone (None), so
another family may still decide about them.
"""

from __future__ import annotations

import socket

from mirrord_trace.handlers.trap import SessionContext, Trap
from mirrord_trace.syscall_table import SyscallShape
from seccomp import ArgCondition

CONNECT = SyscallShape("connect", ("fd", "ptr", "int"))
SENDTO = SyscallShape("sendto", ("fd", "ptr", "int", "int", "ptr", "int"))
SENDMSG = SyscallShape("sendmsg", ("fd", "ptr", "int"))
SENDMMSG = SyscallShape("sendmmsg", ("fd", "ptr", "int", "int"))
GETPEERNAME = SyscallShape("getpeername", ("fd", "ptr", "ptr"))
GETSOCKNAME = SyscallShape("getsockname", ("fd", "ptr", "ptr"))
GETSOCKOPT = SyscallShape("getsockopt", ("fd", "int", "int", "ptr", "ptr"))
RECVFROM = SyscallShape("recvfrom", ("fd", "ptr", "int", "int", "ptr", "ptr"))
RECVMSG = SyscallShape("recvmsg", ("fd", "ptr", "int"))


def traps(context: SessionContext) -> list[Trap]:
    """Nothing to do without a target; otherwise every syscall that names a destination.

    The handlers themselves (mirrord_trace.handlers.outgoing_calls) are imported only then.
    """
    if context.agent is None:
        return []
    from mirrord_trace.handlers.outgoing_calls import OutgoingHandlers
    from mirrord_trace.handlers.outgoing_guard import guarded
    from mirrord_trace.net.session import net_session

    net = net_session(context.config, context.agent, context.extras)
    context.end_hooks.append(net.end)
    handlers = OutgoingHandlers(net, context.explain)
    return [
        Trap(CONNECT, guarded(handlers.connect)),
        Trap(SENDTO, guarded(handlers.sendto), when=ArgCondition(5, "!=", 0)),
        Trap(SENDMSG, guarded(handlers.sendmsg)),
        Trap(SENDMMSG, guarded(handlers.sendmmsg)),
        Trap(GETPEERNAME, guarded(handlers.getpeername)),
        Trap(GETSOCKNAME, guarded(handlers.getsockname)),
        Trap(GETSOCKOPT, guarded(handlers.getsockopt),
             when=ArgCondition(2, "==", socket.SO_ERROR)),
        Trap(RECVFROM, guarded(handlers.recvfrom), when=ArgCondition(4, "!=", 0)),
        Trap(RECVMSG, guarded(handlers.recvmsg)),
    ]
