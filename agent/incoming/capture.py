"""Capturing the TCP segments sent to the target's ports, passively, in its network namespace.

An AF_PACKET socket sees every packet of every interface of the namespace before netfilter,
and changes nothing: the target's own traffic is untouched. A classic-BPF program attached to
the socket keeps only TCP segments *to* the subscribed ports that arrive at the namespace
(loopback packets show up twice, once as outgoing: those copies are dropped), so the agent
wakes only for traffic it wants.

Headers are decoded with `struct` rather than scapy: scapy's dissection costs ~600 us per
packet on these machines, a hundred times the budget of a capture path.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from seccomp.bpf import JEQ_K, JSET_K, RET_K, Goto, Item, Jump, Label, Statement, assemble

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
PACKET_OUTGOING = 4
SOL_PACKET = 263
PACKET_STATISTICS = 6
SO_ATTACH_FILTER = 26
SO_RCVBUFFORCE = 33
IPPROTO_TCP = 6

# Classic BPF opcodes beyond the seccomp subset (linux/filter.h, bpf_common.h).
_LD_W_ABS = 0x20
_LD_H_ABS = 0x28
_LD_B_ABS = 0x30
_LD_H_IND = 0x48
_LDX_B_MSH = 0xB1
_SKF_AD_OFF = 0xFFFFF000  # -0x1000 as an unsigned 32-bit offset: ancillary data
_SKF_AD_PROTOCOL = 0
_SKF_AD_PKTTYPE = 4
# Keep whole packets: with GSO a captured "packet" can be a 64 KiB super-segment.
SNAP_LENGTH = 256 * 1024
_RECEIVE_BUFFER = 32 * 1024 * 1024

TCP_FIN, TCP_SYN, TCP_RST, TCP_ACK = 0x01, 0x02, 0x04, 0x10

_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_IPV6 = struct.Struct("!IHBB16s16s")
_TCP = struct.Struct("!HHIIBB")


@dataclass(frozen=True, slots=True)
class Segment:
    """One captured TCP segment, as much of it as mirroring needs."""

    source: str
    source_port: int
    destination: str
    destination_port: int
    sequence: int
    flags: int
    payload: bytes

    @property
    def flow(self) -> tuple[str, int, str, int]:
        return (self.source, self.source_port, self.destination, self.destination_port)

    @property
    def opens(self) -> bool:
        """A client's SYN: the start of a connection."""
        return self.flags & (TCP_SYN | TCP_ACK) == TCP_SYN


def port_filter(ports: Iterable[int]) -> bytes:
    """The BPF program (struct sock_filter array) keeping TCP segments to `ports`, or nothing."""
    wanted = sorted(set(ports))
    items: list[Item] = [
        Statement(_LD_W_ABS, _SKF_AD_OFF + _SKF_AD_PKTTYPE),
        Jump(JEQ_K, PACKET_OUTGOING, "drop", None),
        Statement(_LD_H_ABS, _SKF_AD_OFF + _SKF_AD_PROTOCOL),
        Jump(JEQ_K, ETH_P_IP, "ipv4", None),
        Jump(JEQ_K, ETH_P_IPV6, "ipv6", "drop"),
        Label("ipv4"),
        Statement(_LD_B_ABS, 9),  # protocol
        Jump(JEQ_K, IPPROTO_TCP, None, "drop"),
        Statement(_LD_H_ABS, 6),  # flags and fragment offset: later fragments have no ports
        Jump(JSET_K, 0x1FFF, "drop", None),
        Statement(_LDX_B_MSH, 0),  # X = IP header length
        Statement(_LD_H_IND, 2),  # the TCP destination port
        Goto("ports"),
        Label("ipv6"),
        Statement(_LD_B_ABS, 6),  # next header: extension headers are not followed
        Jump(JEQ_K, IPPROTO_TCP, None, "drop"),
        Statement(_LD_H_ABS, 40 + 2),
        Label("ports"),
    ]
    items.extend(Jump(JEQ_K, port, "keep", None) for port in wanted)
    items += [
        Label("drop"),
        Statement(RET_K, 0),
        Label("keep"),
        Statement(RET_K, SNAP_LENGTH),
    ]
    return assemble(items).to_bytes()


def parse_packet(packet: bytes, ethertype: int) -> Segment | None:
    """The TCP segment in a network-layer packet, or None for anything else or a runt."""
    try:
        if ethertype == ETH_P_IP:
            version_ihl, _, total, _, _, _, protocol, _, source, destination = _IPV4.unpack_from(
                packet
            )
            header = (version_ihl & 0x0F) * 4
            # A GSO super-segment may say 0 (or less than it holds): trust the capture length.
            end = total if header < total <= len(packet) else len(packet)
            source_text = str(ipaddress.IPv4Address(source))
            destination_text = str(ipaddress.IPv4Address(destination))
        elif ethertype == ETH_P_IPV6:
            _, length, protocol, _, source, destination = _IPV6.unpack_from(packet)
            header = 40
            end = header + length if length > 0 and header + length <= len(packet) else len(packet)
            source_text = str(ipaddress.IPv6Address(source))
            destination_text = str(ipaddress.IPv6Address(destination))
        else:
            return None
        if protocol != IPPROTO_TCP:
            return None
        sport, dport, sequence, _, offset, flags = _TCP.unpack_from(packet, header)
    except struct.error:
        return None
    data_start = header + (offset >> 4) * 4
    return Segment(
        source_text, sport, destination_text, dport, sequence, flags, packet[data_start:end]
    )


class PacketCapture:
    """A non-blocking AF_PACKET socket for the current network namespace, filtered by port."""

    def __init__(self) -> None:
        self.socket = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
        self.socket.setblocking(False)
        # Bursts (100 connections sending at once) must not overflow the default ~200 KiB.
        with contextlib.suppress(OSError):
            self.socket.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, _RECEIVE_BUFFER)
        self.set_ports(())

    def set_ports(self, ports: Iterable[int]) -> None:
        program = port_filter(ports)
        buffer = ctypes.create_string_buffer(program)
        # struct sock_fprog { unsigned short len; struct sock_filter *filter; }
        fprog = struct.pack("HL", len(program) // 8, ctypes.addressof(buffer))
        self.socket.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)

    def read_segments(self, limit: int = 256) -> list[Segment]:
        """The segments waiting now (at most `limit`), without blocking."""
        segments: list[Segment] = []
        for _ in range(limit):
            try:
                packet, address = self.socket.recvfrom(SNAP_LENGTH)
            except (BlockingIOError, InterruptedError):
                break
            segment = parse_packet(packet, address[1])
            if segment is not None:
                segments.append(segment)
        return segments

    def dropped(self) -> int:
        """Packets the kernel dropped since the last call (the socket's receive queue was full)."""
        stats = self.socket.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
        return struct.unpack("II", stats)[1]

    def fileno(self) -> int:
        return self.socket.fileno()

    def close(self) -> None:
        self.socket.close()
