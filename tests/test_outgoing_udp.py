"""Outgoing UDP through the target: unconnected sendto/sendmsg/sendmmsg and connected sockets,
against the pod's UDP echo service, with replies that come "from" the address sent to."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from tests.test_outgoing_support import PYTHON, native, traced

# A UDP client written against the socket API the way programs use it; it prints what came
# back and from where.
UDP_CLIENT = r'''
import ctypes, socket, struct, sys

mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
family = socket.AF_INET6 if ":" in host else socket.AF_INET
sock = socket.socket(family, socket.SOCK_DGRAM)
sock.settimeout(5)
parts = [b"udp ", b"through ", b"the pod"]


def sendmmsg(messages):
    libc = ctypes.CDLL(None, use_errno=True)

    class Iovec(ctypes.Structure):
        _fields_ = [("base", ctypes.c_char_p), ("len", ctypes.c_size_t)]

    class Msghdr(ctypes.Structure):
        _fields_ = [("name", ctypes.c_char_p), ("namelen", ctypes.c_uint32),
                    ("iov", ctypes.POINTER(Iovec)), ("iovlen", ctypes.c_size_t),
                    ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                    ("flags", ctypes.c_int)]

    class Mmsghdr(ctypes.Structure):
        _fields_ = [("hdr", Msghdr), ("len", ctypes.c_uint)]

    name = struct.pack("=H2s4s8x", socket.AF_INET, port.to_bytes(2, "big"),
                       socket.inet_aton(host))
    vector = (Mmsghdr * len(messages))()
    keep = []
    for index, message in enumerate(messages):
        iov = Iovec(message, len(message))
        keep.append(iov)
        vector[index].hdr = Msghdr(name, len(name), ctypes.pointer(iov), 1, None, 0, 0)
    sent = libc.sendmmsg(sock.fileno(), vector, len(messages), 0)
    if sent < 0:
        raise OSError(ctypes.get_errno(), "sendmmsg")
    print("sent", sent, "lengths", ",".join(str(vector[i].len) for i in range(sent)))
    return sent


expected = 1
if mode == "sendto":
    sock.sendto(b"".join(parts), (host, port))
elif mode == "sendmsg":
    sock.sendmsg(parts, [], 0, (host, port))
elif mode == "sendmmsg":
    batch = [b"first datagram", b"second datagram"]
    while batch:  # sendmmsg may send fewer than asked: the rest is sent again
        batch = batch[sendmmsg(batch):]
    expected = 2
elif mode == "connect":
    sock.connect((host, port))
    print("peer", "%s:%d" % sock.getpeername()[:2])
    sock.send(b"".join(parts))
for _ in range(expected):
    data, source = sock.recvfrom(65535)
    print("reply", data.decode(), "from", "%s:%d" % source[:2])
'''


@pytest.fixture
def udp_client(tmp_path: Path) -> str:
    script = tmp_path / "udp_client.py"
    script.write_text(UDP_CLIENT)
    return str(script)


@pytest.mark.parametrize("mode", ["sendto", "sendmsg", "connect"])
def test_datagram_echoed_by_the_pod_comes_from_the_address_sent_to(
    sandbox, udp_client: str, mode: str
) -> None:
    address = f"{sandbox.service_addr}:{sandbox.echo_port}"
    out = traced(sandbox, [PYTHON, udp_client, mode, sandbox.service_addr,
                           str(sandbox.echo_port)])
    assert out.returncode == 0, out.stderr
    assert f"reply udp through the pod from {address}" in out.stdout.splitlines()
    if mode == "connect":
        assert f"peer {address}" in out.stdout.splitlines()


def test_sendmmsg_batch_goes_through_the_pod(sandbox, udp_client: str) -> None:
    address = f"{sandbox.service_addr}:{sandbox.echo_port}"
    out = traced(sandbox, [PYTHON, udp_client, "sendmmsg", sandbox.service_addr,
                           str(sandbox.echo_port)])
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    # The first datagram opens the route, so the first call may report a short count; the
    # client sends the rest again, as programs must. Every datagram is echoed.
    sent = [line for line in lines if line.startswith("sent ")]
    assert sum(int(line.split()[1]) for line in sent) == 2
    assert lines[-2:] == [f"reply first datagram from {address}",
                          f"reply second datagram from {address}"]


def test_udp_kept_local_does_not_reach_the_pod(sandbox, udp_client: str) -> None:
    argv = [PYTHON, udp_client, "connect", sandbox.service_addr, str(sandbox.echo_port)]
    out = traced(sandbox, argv, flags=["--no-udp-outgoing"])
    assert out.returncode != 0
    assert "reply" not in out.stdout
    without = native(argv)
    assert without.returncode != 0


def test_connected_udp_to_an_unreachable_pod_network_fails_at_connect(
    sandbox, udp_client: str
) -> None:
    out = traced(sandbox, [PYTHON, udp_client, "connect", "2001:db8::1", "9"])
    assert out.returncode != 0
    assert f"[Errno {errno.ENETUNREACH}]" in out.stderr
