"""Back-pressure (issue #20, item 4): an authenticated client that sends requests and never
reads the replies stalls its own session, not the agent's memory; another session of the same
agent is served meanwhile, and the stalled one gets every reply once it reads again."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from agent.session import MAX_FILE_WORK
from mirrord_trace.local_target import LocalAgent
from mirrord_trace.protocol import (
    MAX_FRAME_SIZE,
    PROTOCOL_VERSION,
    Hello,
    HelloOk,
    Reply,
    Request,
    encode,
)
from tests.test_agent_outsiders import MiB, memory
from tests.test_agent_robustness import RawConnection
from tests.test_agent_support import Target, running_target

PIPELINED = 1000
# A stalled session holds at most: what its transport buffers before it pauses (one reply
# past the 64 KiB high-water mark), the replies of its file work in flight, and one receive of
# undecoded requests; plus the interpreter's slack.
BOUND = (1 + MAX_FILE_WORK) * MAX_FRAME_SIZE // 4 + 16 * MiB


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    with running_target() as running:
        yield running


def test_a_client_that_never_reads_stalls_only_itself(target: Target) -> None:
    local = LocalAgent(target.pid)
    with local as agent_client:
        pid = agent_client.session_info["agent_pid"]
        assert local.socket_path is not None
        raw = RawConnection(local.socket_path)
        raw.send(encode(Hello(PROTOCOL_VERSION, local.token)))
        assert isinstance(raw.next_message(), HelloOk)
        raw.send(encode(Request(1, "fs.open_read", {"path": "/data/big.bin"})))
        opened = raw.next_message()
        assert isinstance(opened, Reply) and "handle" in opened.fields
        handle = opened.fields["handle"]
        before = memory(pid)["VmRSS"]
        requests = b"".join(
            encode(Request(2 + n, "fs.read", {"handle": handle, "offset": 0, "size": MiB}))
            for n in range(PIPELINED)
        )
        raw.send(requests)  # ~50 KB: fits in the socket; the replies would be 1000 MiB
        time.sleep(3.0)  # the agent has all it needs to answer every one of them
        peak = memory(pid)["VmHWM"]
        # The agent's other session goes on meanwhile.
        assert agent_client.request("env")["env"]["GREETING"] == "hello from the target"
        # The stalled session gets every reply, in full, once it reads again.
        answered = 0
        while answered < PIPELINED:
            message = raw.next_message()
            assert isinstance(message, Reply), message
            assert len(message.fields["data"]) == MiB
            answered += 1
        raw.close()
    growth = (peak - before) / MiB
    print(f"agent peak growth with {PIPELINED} unread 1 MiB replies: {growth:.1f} MiB")
    assert peak - before < BOUND, f"{(peak - before) / MiB:.1f} MiB"
