"""Which code serves each request kind, and where it runs.

inline: quick, in the event loop (no thread hop, so the latency benchmarks measure the wire)
thread: blocking file work, in the thread pool
async:  network work, as a coroutine in the event loop (its sockets are in the target's netns)
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from agent.context import SessionContext
from agent.files import attributes, reads, writes
from agent.net import requests as net_requests
from agent.net.streams import TcpStream, UdpStream
from agent.target.process import read_credentials, read_environment
from mirrord_trace.protocol.requests import REQUESTS, InvalidRequest

Fields = dict[str, Any]


@dataclass(frozen=True)
class Handler:
    mode: Literal["inline", "thread", "async"]
    run: (
        Callable[[SessionContext, Fields], Fields]
        | Callable[[SessionContext, Fields], Awaitable[Fields]]
    )


def _noop(session: SessionContext, fields: Fields) -> Fields:
    return {}


def _env(session: SessionContext, fields: Fields) -> Fields:
    return {"env": read_environment(session.target_pid)}


def _stats(session: SessionContext, fields: Fields) -> Fields:
    return {
        "session": dict(session.counts),
        "total": dict(session.server.totals),
        "bytes": dict(session.byte_counts),
    }


def _count_bytes(session: SessionContext, what: str, amount: int) -> None:
    """File data moved for the client (the "bytes" of stats): what a change cost."""
    session.byte_counts[what] += amount


def _open_read(session: SessionContext, fields: Fields) -> Fields:
    return reads.open_read(
        session.root,
        session.handles,
        fields["path"],
        fields["flags"],
        list_entries=fields["list"],
        known=fields["known"],
        share=fields["share"],
    )


def _read(session: SessionContext, fields: Fields) -> Fields:
    if fields["size"] < 0 or fields["offset"] < 0:
        raise InvalidRequest(errno.EINVAL, "offset and size must not be negative")
    reply = reads.read(
        session.handles, fields["handle"], fields["offset"], fields["size"], fields["close"]
    )
    _count_bytes(session, "read", len(reply["data"]))
    return reply


def _close(session: SessionContext, fields: Fields) -> Fields:
    return reads.close(session.handles, fields["handle"])


def _stat(session: SessionContext, fields: Fields) -> Fields:
    return reads.stat_path(session.root, fields["path"], fields["follow"])


def _access(session: SessionContext, fields: Fields) -> Fields:
    who = read_credentials(session.target_pid)
    return reads.access(session.root, who, fields["path"], fields["mode"], fields["follow"])


def _readlink(session: SessionContext, fields: Fields) -> Fields:
    return reads.readlink(session.root, fields["path"])


def _listdir(session: SessionContext, fields: Fields) -> Fields:
    if fields["offset"] < 0 or fields["limit"] < 0:
        raise InvalidRequest(errno.EINVAL, "offset and limit must not be negative")
    return reads.listdir(session.root, fields["path"], fields["offset"], fields["limit"])


def _open_write(session: SessionContext, fields: Fields) -> Fields:
    reply = writes.open_write(
        session.root,
        session.handles,
        fields["path"],
        fields["flags"],
        fields["mode"],
        content=fields["content"],
    )
    _count_bytes(session, "read", len(reply["content"]))
    return reply


def _pwrite(session: SessionContext, fields: Fields) -> Fields:
    if fields["offset"] < 0:
        raise InvalidRequest(errno.EINVAL, "offset must not be negative")
    _count_bytes(session, "written", len(fields["data"]))
    return writes.pwrite(
        session.handles,
        fields["handle"],
        fields["offset"],
        fields["data"],
        fields["size"],
        fields["sync"],
    )


def _mkdir(session: SessionContext, fields: Fields) -> Fields:
    return writes.mkdir(session.root, fields["path"], fields["mode"])


def _unlink(session: SessionContext, fields: Fields) -> Fields:
    return writes.unlink(session.root, fields["path"], fields["directory"])


def _rename(session: SessionContext, fields: Fields) -> Fields:
    return writes.rename(session.root, fields["old"], fields["new"], fields["flags"])


def _truncate(session: SessionContext, fields: Fields) -> Fields:
    return writes.truncate(session.root, fields["path"], fields["length"])


def _chmod(session: SessionContext, fields: Fields) -> Fields:
    return writes.chmod(session.root, fields["path"], fields["mode"], fields["follow"])


def _chown(session: SessionContext, fields: Fields) -> Fields:
    return writes.chown(
        session.root, fields["path"], fields["uid"], fields["gid"], fields["follow"]
    )


def _utimens(session: SessionContext, fields: Fields) -> Fields:
    times = fields["times"]
    if times and (
        len(times) != 2 or not all(isinstance(t, list) and len(t) == 2 for t in times)
    ):
        raise InvalidRequest(errno.EINVAL, "times must be two [sec, nsec] pairs, or empty")
    return writes.utimens(session.root, fields["path"], times, fields["follow"])


def _symlink(session: SessionContext, fields: Fields) -> Fields:
    return writes.symlink(session.root, fields["target"], fields["path"])


def _link(session: SessionContext, fields: Fields) -> Fields:
    return writes.link(session.root, fields["old"], fields["new"], fields["follow"])


def _getxattr(session: SessionContext, fields: Fields) -> Fields:
    return attributes.getxattr(session.root, fields["path"], fields["name"], fields["follow"])


def _listxattr(session: SessionContext, fields: Fields) -> Fields:
    return attributes.listxattr(session.root, fields["path"], fields["follow"])


def _setxattr(session: SessionContext, fields: Fields) -> Fields:
    return attributes.setxattr(
        session.root,
        fields["path"],
        fields["name"],
        fields["value"],
        fields["flags"],
        fields["follow"],
    )


def _removexattr(session: SessionContext, fields: Fields) -> Fields:
    return attributes.removexattr(session.root, fields["path"], fields["name"], fields["follow"])


def _statfs(session: SessionContext, fields: Fields) -> Fields:
    return attributes.statfs(session.root, fields["path"])


async def _dns_query(session: SessionContext, fields: Fields) -> Fields:
    return await net_requests.dns_query(fields)


async def _dns_getaddrinfo(session: SessionContext, fields: Fields) -> Fields:
    from agent.net import resolver  # scapy is slow to import: only when a lookup needs it

    return await resolver.getaddrinfo(session.root, fields)


async def _connect(session: SessionContext, fields: Fields) -> Fields:
    stream_id: int = fields["stream"]
    family: int = fields["family"]
    if family == socket.AF_UNIX:
        return await _connect_unix(session, fields)
    address = net_requests.socket_address(family, fields["host"], fields["port"])
    session.reserve_stream(stream_id)
    try:
        if fields["transport"] == "tcp":
            sock = await net_requests.connect_socket(
                family, socket.SOCK_STREAM, address, float(fields["timeout"])
            )
            reader, writer = await asyncio.open_connection(sock=sock)
            stream: TcpStream | UdpStream = TcpStream(stream_id, reader, writer, session)
        else:
            sock = await net_requests.connect_socket(
                family, socket.SOCK_DGRAM, address, float(fields["timeout"])
            )
            udp = UdpStream(stream_id, session)
            await asyncio.get_running_loop().create_datagram_endpoint(lambda: udp, sock=sock)
            stream = udp
    except BaseException:
        session.release_stream(stream_id)
        raise
    session.attach_stream(stream)
    # The stream's pumps are tasks: they first run after this reply has been sent, so the
    # client always learns about the stream before its first data arrives.
    return {
        "stream": stream_id,
        "local": list(sock.getsockname()[:2]),
        "peer": list(sock.getpeername()[:2]),
    }


async def _connect_unix(session: SessionContext, fields: Fields) -> Fields:
    """net.connect to a Unix stream socket in the target (feature.network.outgoing.unix_streams)."""
    stream_id: int = fields["stream"]
    if fields["transport"] != "tcp":
        raise InvalidRequest(errno.EPROTOTYPE, "only stream Unix sockets are connected")
    session.reserve_stream(stream_id)
    try:
        sock = await net_requests.connect_unix(
            session.root, fields["host"], float(fields["timeout"])
        )
        reader, writer = await asyncio.open_unix_connection(sock=sock)
    except BaseException:
        session.release_stream(stream_id)
        raise
    session.attach_stream(TcpStream(stream_id, reader, writer, session))
    return {"stream": stream_id, "local": ["", 0], "peer": [fields["host"], 0]}


async def _incoming_subscribe(session: SessionContext, fields: Fields) -> Fields:
    from agent.incoming.service import service_for  # only sessions with incoming traffic

    return await service_for(session.server).subscribe(session, fields)


def _incoming_unsubscribe(session: SessionContext, fields: Fields) -> Fields:
    from agent.incoming.service import service_for

    return service_for(session.server).unsubscribe(session, fields)


HANDLERS: dict[str, Handler] = {
    "noop": Handler("inline", _noop),
    "env": Handler("inline", _env),
    "stats": Handler("inline", _stats),
    "fs.open_read": Handler("thread", _open_read),
    "fs.read": Handler("thread", _read),
    "fs.close": Handler("inline", _close),
    "fs.stat": Handler("thread", _stat),
    "fs.access": Handler("thread", _access),
    "fs.readlink": Handler("thread", _readlink),
    "fs.listdir": Handler("thread", _listdir),
    "fs.open_write": Handler("thread", _open_write),
    "fs.pwrite": Handler("thread", _pwrite),
    "fs.mkdir": Handler("thread", _mkdir),
    "fs.unlink": Handler("thread", _unlink),
    "fs.rename": Handler("thread", _rename),
    "fs.truncate": Handler("thread", _truncate),
    "fs.chmod": Handler("thread", _chmod),
    "fs.chown": Handler("thread", _chown),
    "fs.utimens": Handler("thread", _utimens),
    "fs.symlink": Handler("thread", _symlink),
    "fs.link": Handler("thread", _link),
    "fs.getxattr": Handler("thread", _getxattr),
    "fs.listxattr": Handler("thread", _listxattr),
    "fs.setxattr": Handler("thread", _setxattr),
    "fs.removexattr": Handler("thread", _removexattr),
    "fs.statfs": Handler("thread", _statfs),
    "dns.query": Handler("async", _dns_query),
    "dns.getaddrinfo": Handler("async", _dns_getaddrinfo),
    "net.connect": Handler("async", _connect),
    "incoming.subscribe": Handler("async", _incoming_subscribe),
    "incoming.unsubscribe": Handler("inline", _incoming_unsubscribe),
}

assert HANDLERS.keys() == REQUESTS.keys(), "every request kind in the protocol needs a handler"
