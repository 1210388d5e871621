"""The local side's connection to an agent, with a blocking API for the tracer thread.

One background thread owns the socket's reading side: it decodes replies and resolves the
futures callers wait on, answers pings, and pumps every open stream between the agent and a
local socket pair whose other end goes to the traced program. Callers send their own requests
directly (under a lock), which saves a thread hop on the latency-critical path.

Over a Unix socket (an agent on this machine) the agent may hand a connection over whole (see
HANDOVER in the protocol): the same thread then relays it socket to socket, with no frame and
no agent in its path.

The pieces, in the order a stream meets them: client (requests, the I/O thread), handshake
(connect and the hello exchange), streams (the stream table the I/O thread keeps), pump (a
stream relayed in frames to a local socket), handed_over and relay_end (a connection the
agent handed over whole, relayed socket to socket), local_stream (what both kinds share).
"""

from mirrord_trace.agent_client.client import AgentClient
from mirrord_trace.agent_client.errors import (
    AgentConnectError,
    AgentLost,
    HandshakeRejected,
    RemoteError,
)
from mirrord_trace.agent_client.local_stream import AgentStream

__all__ = [
    "AgentClient",
    "AgentConnectError",
    "AgentLost",
    "AgentStream",
    "HandshakeRejected",
    "RemoteError",
]
