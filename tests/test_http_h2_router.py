"""The HTTP/2 router as the sans-I/O object it is: h2 state machines for the client and for two
upstream servers exchange bytes with it in memory. Random sets of concurrent streams on one
connection (bodies far past the flow-control windows, trailers as gRPC sends them) must each
reach the side the filter picks, whole, and their answers come back on the right stream."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import h2.config
import h2.connection
import h2.events
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.http.filter import parse_filter
from agent.http.h2_router import CLIENT, H2Router
from agent.http.routes import PROGRAM, TARGET, Routes


@dataclass
class Server:
    """An upstream: answers each request with `side:path:body length`, then trailers."""

    side: str
    conn: h2.connection.H2Connection
    bodies: dict[int, bytes] = field(default_factory=dict)
    paths: dict[int, bytes] = field(default_factory=dict)

    def handle(self, events: list[Any]) -> None:
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                self.paths[event.stream_id] = dict(event.headers)[b":path"]
                self.bodies[event.stream_id] = b""
            elif isinstance(event, h2.events.DataReceived):
                self.bodies[event.stream_id] += event.data
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                sid = event.stream_id
                answer = b"%s:%s:%d" % (self.side.encode(), self.paths[sid], len(self.bodies[sid]))
                self.conn.send_headers(sid, [(b":status", b"200")])
                self.conn.send_data(sid, answer)
                self.conn.send_headers(sid, [(b"grpc-status", b"0")], end_stream=True)


def _conn(client_side: bool) -> h2.connection.H2Connection:
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=client_side, header_encoding=None)
    )
    conn.initiate_connection()
    return conn


def _noop_opener() -> Any:
    async def never() -> None:
        raise AssertionError("the sans-I/O router opens nothing itself")

    return never


@dataclass
class Request:
    headers: list[tuple[bytes, bytes]]
    body: bytes


def exchange(wire_filter: dict[str, Any], requests: list[Request]) -> tuple[Any, ...]:
    """Send the requests as concurrent streams of one client connection through a router;
    (the answers by stream in order, the router, the servers by side)."""
    routes = Routes(
        ((PROGRAM, parse_filter(wire_filter)),), {PROGRAM: _noop_opener(), TARGET: _noop_opener()}
    )
    router = H2Router(routes)
    router.start()
    client = _conn(True)
    servers: dict[str, Server] = {}
    pending: dict[int, bytes] = {}
    answers: dict[int, dict[str, Any]] = {}
    for n, request in enumerate(requests):
        sid = client.get_next_available_stream_id()
        headers = [(b":method", b"POST"), (b":scheme", b"http"), (b":authority", b"t"),
                   (b":path", b"/%d" % n), *request.headers]  # fmt: skip
        client.send_headers(sid, headers, end_stream=not request.body)
        if request.body:
            pending[sid] = request.body
        answers[sid] = {"data": b"", "trailers": None, "ended": False}

    for _ in range(10_000):
        moved = False
        for sid, body in list(pending.items()):  # the client sends what its windows allow
            room = min(client.local_flow_control_window(sid), client.max_outbound_frame_size)
            if room > 0:
                client.send_data(sid, body[:room], end_stream=room >= len(body))
                pending[sid] = body[room:]
                if not pending[sid]:
                    del pending[sid]
        if data := client.data_to_send():
            router.receive(CLIENT, data)
            moved = True
        for side in router.wanted():
            router.connecting_to(side)
            router.connected(side)
            servers[side] = Server(side, _conn(False))
        for side, server in servers.items():
            if data := router.data_to_send(side):
                server.handle(server.conn.receive_data(data))
                moved = True
            if data := server.conn.data_to_send():
                router.receive(side, data)
                moved = True
        if data := router.data_to_send(CLIENT):
            moved = True
            for event in client.receive_data(data):
                if isinstance(event, h2.events.DataReceived):
                    answers[event.stream_id]["data"] += event.data
                    client.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.TrailersReceived):
                    answers[event.stream_id]["trailers"] = dict(event.headers)
                elif isinstance(event, h2.events.StreamEnded):
                    answers[event.stream_id]["ended"] = True
        if not moved and not pending:
            break
    return [answers[sid] for sid in sorted(answers)], router, servers


REQUESTS = st.lists(
    st.tuples(st.booleans(), st.sampled_from([0, 1, 70_000, 300_000])), min_size=1, max_size=6
)


@settings(max_examples=25, deadline=None)
@given(REQUESTS)
def test_concurrent_streams_reach_the_chosen_side_whole(requests: list[tuple[bool, int]]) -> None:
    answers, router, servers = exchange(
        {"header": "^x-user: me$"},
        [
            Request([(b"x-user", b"me")] if wanted else [], bytes([n]) * size)
            for n, (wanted, size) in enumerate(requests)
        ],
    )
    for n, ((wanted, size), answer) in enumerate(zip(requests, answers, strict=True)):
        side = PROGRAM if wanted else TARGET
        assert answer["data"] == b"%s:/%d:%d" % (side.encode(), n, size)
        assert answer["trailers"] == {b"grpc-status": b"0"}
        assert answer["ended"]
    assert sorted(router.routed) == sorted(PROGRAM if w else TARGET for w, _ in requests)
    for server in servers.values():  # each body arrived whole at its server
        assert all(
            body == bytes([int(server.paths[sid][1:])]) * len(body)
            for sid, body in server.bodies.items()
        )


def test_json_body_filter_decides_each_stream_once_its_bounded_body_is_in() -> None:
    big = b'{"user": "alice", "pad": "' + b"x" * 200_000 + b'"}'  # past the 64 KiB bound
    bodies = [b'{"user": "alice"}', b'{"user": "bob"}', b"not json", big, b""]
    answers, _, servers = exchange(
        {"body": "json", "query": "$.user", "matches": "^alice$"},
        [Request([], body) for body in bodies],
    )
    sides = [answer["data"].split(b":")[0] for answer in answers]
    assert sides == [b"program", b"target", b"target", b"target", b"target"]
    assert [int(answer["data"].rsplit(b":", 1)[1]) for answer in answers] == [
        len(body) for body in bodies
    ]  # every body arrived whole, the big one streamed past the bound
    assert big in servers[TARGET].bodies.values()  # byte for byte
    assert list(servers[PROGRAM].bodies.values()) == [bodies[0]]
