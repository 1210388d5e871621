"""File requests and the target's mounts: local filesystems are served inline, but a hung
network or FUSE filesystem must stall only the requests that touch it."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from agent.files.mounts import is_slow, parse_mountinfo
from mirrord_trace.agent_client import RemoteError
from mirrord_trace.local_target import LocalAgent
from tests.test_agent_support import running_target


def test_mountinfo_parsing_agrees_with_findmnt() -> None:
    ours = {
        (m.mount_point, m.fstype) for m in parse_mountinfo(Path("/proc/self/mountinfo").read_text())
    }
    listing = subprocess.run(
        ["findmnt", "--raw", "--noheadings", "--output", "TARGET,FSTYPE"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    # --raw escapes blanks as \x20; decode them the same way.
    theirs = {
        tuple(field.encode().decode("unicode_escape") for field in line.split(" ", 1))
        for line in listing.splitlines()
    }
    assert ours == theirs


@pytest.mark.parametrize(
    ("fstype", "slow"),
    [("nfs4", True), ("fuse.sshfs", True), ("cifs", True), ("ext4", False), ("overlay", False),
     ("tmpfs", False), ("proc", False)],
)  # fmt: skip
def test_network_and_fuse_filesystems_count_as_slow(fstype: str, slow: bool) -> None:
    assert is_slow(fstype) is slow


def test_a_hung_filesystem_stalls_only_the_requests_that_touch_it() -> None:
    if not os.path.exists("/dev/fuse"):
        pytest.skip("needs /dev/fuse (the fuse kernel module) for a hung FUSE mount")
    with running_target(stuck_fuse=True) as target, LocalAgent(target.pid) as client:
        hung = client.request_async("fs.stat", path="/stuck/anything")
        time.sleep(0.5)
        assert not hung.done()
        started = time.monotonic()
        assert client.request("fs.open_read", path="/etc/hostname")["content"] == b"target-host\n"
        assert client.request("env")["env"]["GREETING"] == "hello from the target"
        assert client.request("noop") == {}
        assert time.monotonic() - started < 2.0
        # The FUSE connection dies with its only holder; the stuck lookup then fails.
        os.kill(target.pid, signal.SIGKILL)
        with pytest.raises(RemoteError) as caught:
            hung.result(timeout=10)
        assert caught.value.errno in (errno.ENOTCONN, errno.ECONNABORTED)
