"""A Debug Adapter Protocol client for tests: what an IDE (VS Code) says to a debug adapter
(debugpy, `dlv dap`) over a socket, one request at a time.

DAP frames are `Content-Length: N\\r\\n\\r\\n` + N bytes of JSON; requests carry a `seq`, the
adapter answers with a `response` naming it (`request_seq`) and sends `event`s at any time.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any


class DapError(AssertionError):
    """The adapter refused a request or did not send what the test waited for."""


class DapClient:
    def __init__(self, host: str, port: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.create_connection((host, port), timeout=timeout)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self.timeout = timeout
        self._buffer = b""
        self._seq = 0
        self.events: list[dict[str, Any]] = []  # every event, in arrival order

    def close(self) -> None:
        if self.sock.fileno() >= 0:
            self.sock.close()

    def send(self, command: str, **arguments: Any) -> int:
        self._seq += 1
        body = json.dumps({"seq": self._seq, "type": "request", "command": command,
                           "arguments": arguments}).encode()
        self.sock.sendall(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        return self._seq

    def request(self, command: str, **arguments: Any) -> dict[str, Any]:
        """Send a request and wait for its response (events meanwhile are kept)."""
        seq = self.send(command, **arguments)
        return self.response_to(seq)

    def response_to(self, seq: int) -> dict[str, Any]:
        while True:
            message = self._read()
            if message["type"] == "event":
                self.events.append(message)
            elif message["type"] == "response" and message["request_seq"] == seq:
                if not message.get("success"):
                    raise DapError(f"{message['command']} failed: {message.get('message')}")
                return message.get("body") or {}

    def wait_event(self, name: str) -> dict[str, Any]:
        """The first event called `name` not seen yet (an earlier one is taken first)."""
        for index, event in enumerate(self.events):
            if event["event"] == name:
                return self.events.pop(index).get("body") or {}
        while True:
            message = self._read()
            if message["type"] == "event" and message["event"] == name:
                return message.get("body") or {}
            if message["type"] == "event":
                self.events.append(message)

    def variables_at_stop(self, thread_id: int) -> dict[str, str]:
        """The innermost frame's local variables, name -> value as the adapter shows it."""
        frames = self.request("stackTrace", threadId=thread_id, startFrame=0, levels=1)
        frame = frames["stackFrames"][0]["id"]
        found: dict[str, str] = {}
        for scope in self.request("scopes", frameId=frame)["scopes"]:
            if scope.get("expensive"):
                continue
            listed = self.request("variables", variablesReference=scope["variablesReference"])
            for variable in listed["variables"]:
                found.setdefault(variable["name"], variable["value"])
        return found

    def _read(self) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        while True:
            head, separator, rest = self._buffer.partition(b"\r\n\r\n")
            if separator:
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length"))
                if len(rest) >= length:
                    self._buffer = rest[length:]
                    return json.loads(rest[:length])
            if time.monotonic() > deadline:
                raise DapError("the adapter sent nothing in time")
            chunk = self.sock.recv(65536)
            if not chunk:
                raise DapError("the adapter closed the connection")
            self._buffer += chunk
