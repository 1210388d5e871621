"""The local side of incoming traffic (feature.network.incoming).

policy     which of the program's listening ports are subscribed, with which remote port/mode
tracee_fds the program's socket behind an fd: its inode, a borrowed duplicate (pidfd_getfd)
state      the session's listeners, subscriptions and relayed connections (shared by threads)
relay      connections the agent opens -> the program's real local listener

The syscall handlers that use them are in mirrord_trace.handlers.incoming; sockaddrs are
mirrord_trace.net.sockaddr's (shared with outgoing traffic).
"""
