"""The local side of incoming traffic (feature.network.incoming).

policy     which of the program's listening ports are subscribed, with which remote port/mode
state      the session's listeners, subscriptions and relayed connections (shared by threads)
relay      connections the agent opens -> the program's real local listener

The syscall handlers that use them are in mirrord_trace.handlers.incoming; sockaddrs and
the program's sockets (inode, borrowed duplicate) are mirrord_trace.net's sockaddr and
tracee_socket, shared with outgoing traffic.
"""
