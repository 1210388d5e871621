"""Outgoing traffic and DNS through the target: the pieces the outgoing handlers use.

A connection the program opens to a remote destination is made by the agent from the target's
network namespace first (one round trip); the program's own socket is then connected, by the
supervisor, to a relay on the loopback interface, and the relay's end is pumped through the
agent stream. getpeername/getsockname answer with the original destination and the target-side
address. UDP datagrams travel the same way; DNS queries go to a DNS relay that asks the
target's nameserver (or the host's, per the DNS filter) and answers from the address the
program sent to.

    sockaddr        struct sockaddr_in/_in6 <-> InetAddress
    tracee_socket   borrowing the program's socket (pidfd_getfd) and naming it (its inode)
    policy          local / remote / DNS for a destination (config, filters, resolved names)
    names           which host names resolved to which addresses (for host-name filters)
    flows           what the handlers remember about relayed sockets
    relays          the loopback relays: TCP listeners, UDP relay sockets
    dns_relay       the DNS relay (UDP and TCP), with the per-query local/remote decision
    session         NetSession: all of the above for one run
"""
