"""The request kinds the agent serves: their fields, defaults and reply shapes.

Both sides use this table: the agent validates every request against it (a bad request gets an
EINVAL reply, an unknown kind ENOSYS, and the session goes on); the client checks before
sending, so a programming mistake fails where it is made.

Replies (fields of Reply):
  noop              {}
  env               {"env": {name: value}}            the target's /proc/<pid>/environ
  stats             {"session": {kind: n}, "total": {kind: n}, "bytes": {"read": n,
                    "written": n}}   requests received, this one included; "total" covers
                    every session; "bytes": file data this session read and wrote
  fs.open_read      {"stat": STAT, "content": bytes, ["handle": int]}
                    regular files: the first INLINE_READ_LIMIT bytes inline; "handle" is
                    present when there is more (continue with fs.read at len(content)).
                    Directories with "list": true: also "entries" as in fs.listdir, without
                    "." and "..". Other file types: just "stat". When "known" equals the
                    file's VERSION the reply is {"stat": STAT, "unchanged": true} and nothing
                    else: the caller's copy is still good. With "share": true a regular
                    file larger than INLINE_READ_LIMIT comes without content, with "handle"
                    and "fd", the agent's own descriptor of it: a client on the same
                    machine may duplicate it (pidfd_getfd of session "agent_pid").
  fs.read           {"data": bytes}                    empty at end of file; "close": true
                                                       closes the handle after this read
  fs.close          {}
  fs.stat           {"stat": STAT}
  fs.access         {}                                 EACCES/ENOENT... as an error
  fs.readlink       {"target": str}
  fs.listdir        {"entries": [{"name": str, "type": DT_*, "ino": int}], "more": bool}
                    with "." and ".."; "offset"/"limit" page through huge directories
  fs.open_write     {"stat": STAT, "content": bytes, "handle": int, "created": bool}
                    opens (O_CREAT, O_EXCL, O_TRUNC as given; "mode" for a new file, exact)
                    a regular file for reading and writing; content as in fs.open_read, the
                    handle stays open for fs.read/fs.pwrite until fs.close; with
                    "content": false, no content (a copy that will only be appended to)
  fs.pwrite         {"written": int}                   then ftruncate to "size" if >= 0,
                                                       then fsync if "sync"
  fs.mkdir          {}                                 "mode" exact (no umask applied)
  fs.unlink         {}                                 rmdir when "directory"
  fs.rename         {}                                 "flags": renameat2 RENAME_* flags
  fs.truncate       {}
  fs.chmod, fs.chown, fs.utimens, fs.symlink, fs.link   {}
                    "follow": false acts on a symlink itself; fs.utimens takes "times" as
                    [[sec, nsec], [sec, nsec]] (UTIME_NOW/UTIME_OMIT allowed), [] for now
  fs.getxattr       {"value": bytes}                   ENODATA when the attribute is not there
  fs.listxattr      {"names": [bytes]}
  fs.setxattr, fs.removexattr   {}                   "flags": XATTR_CREATE/XATTR_REPLACE
                    "follow": false acts on a symlink itself (which has no attributes here)
  fs.statfs         {"statfs": {"type", "bsize", "blocks", "bfree", "bavail", "files",
                    "ffree", "fsid": [int, int], "namelen", "frsize", "flags"}}  statfs(2)'s
  dns.query         {"payload": bytes}                 the nameserver's reply, unchanged
  dns.getaddrinfo   {"addresses": [{"family": int, "address": str}]}  with the target's
                    /etc/hosts, /etc/resolv.conf (search, ndots) and netns; ENOENT when the
                    name does not exist (EAI_NONAME), EAGAIN/ETIMEDOUT when no server answered
  net.connect       {"stream": int, "local": [host, port], "peer": [host, port]}
                    the stream id is the one the client chose (odd); data flows as StreamData.
                    With family AF_UNIX, `host` is the path of a Unix stream socket in the
                    target's root (resolved there, as file paths are) and `port` is 0
  incoming.subscribe {"subscription": int}            traffic to the target's TCP `port`:
                    mode "mirror" (a copy) or "steal" (the traffic itself; with "http_filter",
                    a filter tree as in agent.http.filter, only the matching HTTP requests;
                    the older "header_filter" / "path_filter" regexes still work).
                    Each connection arrives as a StreamOpen (even id) whose info is
                    {"subscription", "mode", "port", "peer": [host, port], "local": [host, port]}
                    With "handover": true, on a session over a Unix socket (the client is on
                    the agent's machine), a connection stolen whole arrives as itself instead:
                    its StreamOpen frame carries the connection's descriptor (SCM_RIGHTS on
                    the frame's bytes), info has HANDOVER: true, no stream message follows
                    for that id and the client owns the socket. Elsewhere the flag is ignored.
                    "override": true takes a port another session steals (its rules go; its
                    connections carry on); otherwise that is EADDRINUSE. "flush": true cuts
                    the port's open connections when the steal starts (conntrack -D).
  incoming.unsubscribe {}                             stop; stolen traffic goes to the target again

STAT is a map with the keys in STAT_FIELDS (times in nanoseconds); VERSION is the list
[dev, ino, size, mtime_ns, ctime_ns] taken from it (see stat_version). Paths are resolved inside
the target's root directory; `..` and symlinks cannot leave it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from errno import EINVAL, ENOSYS
from typing import Any

# Files up to this size come back with fs.open_read in one round trip.
INLINE_READ_LIMIT = 1024 * 1024
# fs.read never returns more than this per request.
MAX_READ_SIZE = 1024 * 1024

STAT_FIELDS = (
    "mode", "size", "uid", "gid", "nlink", "ino", "dev", "rdev",
    "atime_ns", "mtime_ns", "ctime_ns", "blksize", "blocks",
)  # fmt: skip

# fs.open_read lists at most this many directory entries (names of up to 255 bytes keep the
# reply under MAX_FRAME_SIZE); fs.listdir pages through the rest.
LISTING_LIMIT = 10_000


def stat_version(stat: dict[str, int]) -> list[int]:
    """What tells two states of a file apart without reading it (fs.open_read's "known")."""
    return [stat["dev"], stat["ino"], stat["size"], stat["mtime_ns"], stat["ctime_ns"]]


# getdents64 d_type values (linux/dirent.h), as fs.listdir reports them.
DT_UNKNOWN, DT_FIFO, DT_CHR, DT_DIR, DT_BLK, DT_REG, DT_LNK, DT_SOCK = 0, 1, 2, 4, 6, 8, 10, 12

TRANSPORTS = ("tcp", "udp")


class InvalidRequest(Exception):
    """A request that cannot be served as asked; carries the errno for the reply."""

    def __init__(self, errno: int, message: str) -> None:
        super().__init__(message)
        self.errno = errno
        self.message = message


_NUMBER = (int, float)


@dataclass(frozen=True)
class RequestSpec:
    required: dict[str, type | tuple[type, ...]] = field(default_factory=dict)
    optional: dict[str, tuple[type | tuple[type, ...], Any]] = field(default_factory=dict)


REQUESTS: dict[str, RequestSpec] = {
    "noop": RequestSpec(),
    "env": RequestSpec(),
    "stats": RequestSpec(),
    "fs.open_read": RequestSpec(
        {"path": str},
        {"flags": (int, 0), "list": (bool, False), "known": (list, []), "share": (bool, False)},
    ),
    "fs.read": RequestSpec({"handle": int, "offset": int, "size": int}, {"close": (bool, False)}),
    "fs.close": RequestSpec({"handle": int}),
    "fs.stat": RequestSpec({"path": str}, {"follow": (bool, True)}),
    "fs.access": RequestSpec({"path": str, "mode": int}, {"follow": (bool, True)}),
    "fs.readlink": RequestSpec({"path": str}),
    "fs.listdir": RequestSpec({"path": str}, {"offset": (int, 0), "limit": (int, 0)}),
    "fs.open_write": RequestSpec(
        {"path": str, "flags": int}, {"mode": (int, 0o644), "content": (bool, True)}
    ),
    "fs.pwrite": RequestSpec(
        {"handle": int, "offset": int, "data": bytes}, {"size": (int, -1), "sync": (bool, False)}
    ),
    "fs.mkdir": RequestSpec({"path": str}, {"mode": (int, 0o755)}),
    "fs.unlink": RequestSpec({"path": str}, {"directory": (bool, False)}),
    "fs.rename": RequestSpec({"old": str, "new": str}, {"flags": (int, 0)}),
    "fs.truncate": RequestSpec({"path": str, "length": int}),
    "fs.chmod": RequestSpec({"path": str, "mode": int}, {"follow": (bool, True)}),
    "fs.chown": RequestSpec({"path": str, "uid": int, "gid": int}, {"follow": (bool, True)}),
    "fs.utimens": RequestSpec({"path": str}, {"times": (list, []), "follow": (bool, True)}),
    "fs.symlink": RequestSpec({"target": str, "path": str}),
    "fs.link": RequestSpec({"old": str, "new": str}, {"follow": (bool, False)}),
    "fs.getxattr": RequestSpec({"path": str, "name": bytes}, {"follow": (bool, True)}),
    "fs.listxattr": RequestSpec({"path": str}, {"follow": (bool, True)}),
    "fs.setxattr": RequestSpec(
        {"path": str, "name": bytes, "value": bytes}, {"flags": (int, 0), "follow": (bool, True)}
    ),
    "fs.removexattr": RequestSpec({"path": str, "name": bytes}, {"follow": (bool, True)}),
    "fs.statfs": RequestSpec({"path": str}),
    "dns.query": RequestSpec(
        {"payload": bytes, "nameserver": str},
        {"port": (int, 53), "transport": (str, "udp"), "timeout": (_NUMBER, 5.0)},
    ),
    "dns.getaddrinfo": RequestSpec({"host": str}, {"family": (int, 0), "timeout": (_NUMBER, 5.0)}),
    "net.connect": RequestSpec(
        {"family": int, "host": str, "port": int, "stream": int},
        {"transport": (str, "tcp"), "timeout": (_NUMBER, 10.0)},
    ),
    "incoming.subscribe": RequestSpec(
        {"port": int, "mode": str},
        {
            "http_filter": (dict, {}),
            "header_filter": (str, ""),
            "path_filter": (str, ""),
            "handover": (bool, False),
            "override": (bool, False),
            "flush": (bool, False),
        },
    ),
    "incoming.unsubscribe": RequestSpec({"subscription": int}),
}

INCOMING_MODES = ("mirror", "steal")
# The StreamOpen info key of a connection handed over whole (see incoming.subscribe).
HANDOVER = "handover"


def _type_ok(value: object, expected: type | tuple[type, ...]) -> bool:
    kinds = expected if isinstance(expected, tuple) else (expected,)
    # bool is an int subclass; accept it only where bool is what is asked for.
    if isinstance(value, bool):
        return bool in kinds
    return isinstance(value, kinds)


def _type_name(expected: type | tuple[type, ...]) -> str:
    kinds = expected if isinstance(expected, tuple) else (expected,)
    return " or ".join(kind.__name__ for kind in kinds)


def validate_request(kind: str, fields: dict[str, Any]) -> dict[str, Any]:
    """The request's fields with defaults filled in; raises InvalidRequest."""
    spec = REQUESTS.get(kind)
    if spec is None:
        raise InvalidRequest(ENOSYS, f"unknown request kind {kind!r}")
    unknown = set(fields) - spec.required.keys() - spec.optional.keys()
    if unknown:
        raise InvalidRequest(EINVAL, f"{kind}: unknown fields {sorted(unknown)}")
    result: dict[str, Any] = {}
    expectations: list[tuple[str, type | tuple[type, ...]]] = []
    for name, expected in spec.required.items():
        if name not in fields:
            raise InvalidRequest(EINVAL, f"{kind}: missing field {name!r}")
        result[name] = fields[name]
        expectations.append((name, expected))
    for name, (expected, default) in spec.optional.items():
        result[name] = fields.get(name, default)
        expectations.append((name, expected))
    for name, expected in expectations:
        if not _type_ok(result[name], expected):
            raise InvalidRequest(EINVAL, f"{kind}: field {name!r} must be {_type_name(expected)}")
    if "transport" in result and result["transport"] not in TRANSPORTS:
        raise InvalidRequest(EINVAL, f"{kind}: transport must be one of {TRANSPORTS}")
    if kind == "incoming.subscribe" and result["mode"] not in INCOMING_MODES:
        raise InvalidRequest(EINVAL, f"{kind}: mode must be one of {INCOMING_MODES}")
    return result
