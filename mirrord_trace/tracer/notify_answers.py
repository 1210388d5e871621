"""How a seccomp notification carries out the actions that are more than "run it" or "here is
the result": the notification engine's half of the engine-neutral actions.

The kernel runs a notified call with the caller's own arguments or not at all, so where the
ptrace engine rewrites an argument in place, this side does the work in the supervisor and
hands the program the outcome:
- OpenInstead: the supervisor opens the stand-in itself and injects the descriptor as the
  call's answer (SECCOMP_IOCTL_NOTIF_ADDFD with SECCOMP_ADDFD_FLAG_SEND, one step).
- ExitStop on a socket call whose whole effect is on the socket (listen, accept, recvfrom,
  recvmsg): the supervisor runs the call on a duplicate of the program's socket (pidfd_getfd
  shares the open file description), lays the results out in the program's memory as the
  kernel would (an accepted connection injected as the program's new fd with ADDFD, a peer or
  source address, received bytes) and gives the callback the result. With nothing to accept or
  receive on a blocking socket, the call is answered once there is (meanwhile the other calls
  are served); the supervisor waits for readiness, never in a receive, so no datagram is taken
  and then lost. A handler's Inject (calls run in the program) cannot happen here: its calls
  report ENOSYS, as a kernel that refuses them would, and the handler takes its fallback.
- Anything else that needs ptrace (a rewritten chdir path) has no answer here: `unsupported`
  says so once and fails the call, or lets it run when running it unchanged is harmless (see
  UNSUPPORTED_RUNS).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import select
import socket
import struct
import sys
import threading
from concurrent.futures import Future

from mirrord_trace.handlers.actions import Action, Emulate, ExitStop, Inject, OpenInstead
from mirrord_trace.handlers.call import SyscallCall
from mirrord_trace.net.sockaddr import from_socket_tuple, sockaddr_writes
from mirrord_trace.net.tracee_socket import TraceeSockets
from mirrord_trace.syscall_table import SYSCALL_NUMBERS

# <linux/seccomp.h>: _IOWR('!', 1, struct seccomp_notif_resp), _IOW('!', 3, struct
# seccomp_notif_addfd), _IOW('!', 2, __u64)
SECCOMP_IOCTL_NOTIF_SEND = 0xC018_2101
SECCOMP_USER_NOTIF_FLAG_CONTINUE = 1
# struct seccomp_notif_resp { u64 id; s64 val; s32 error; u32 flags; }
_RESPONSE = struct.Struct("=QqiI")
SECCOMP_IOCTL_NOTIF_ADDFD = 0x4018_2103
SECCOMP_IOCTL_NOTIF_ID_VALID = 0x4008_2102
SECCOMP_ADDFD_FLAG_SEND = 2
# struct seccomp_notif_addfd { u64 id; u32 flags; u32 srcfd; u32 newfd; u32 newfd_flags; }
_ADDFD = struct.Struct("=QIIII")

_LISTEN = SYSCALL_NUMBERS["listen"]
_ACCEPTS = {SYSCALL_NUMBERS["accept"], SYSCALL_NUMBERS["accept4"]}
# Calls the supervisor may run for the program on a duplicate of its socket: their only effect
# is on the socket itself (an accepted connection is injected as the program's new fd).
_RECVFROM = SYSCALL_NUMBERS["recvfrom"]
_RECVMSG = SYSCALL_NUMBERS["recvmsg"]
_RUN_ON_DUPLICATE = {_LISTEN, _RECVFROM, _RECVMSG, *_ACCEPTS}
# ptrace-only actions whose call may run unchanged under this engine: the program works, only
# the feature is missing. The others (chdir into a remote directory) would do the wrong thing.
UNSUPPORTED_RUNS: set[int] = set()
# struct msghdr { void *name; socklen_t namelen; struct iovec *iov; size_t iovlen;
#                 void *control; size_t controllen; int flags; }
_MSGHDR = struct.Struct("=QI4xQQQQi4x")
_IOVEC = struct.Struct("=QQ")
_CMSGHDR = struct.Struct("=Qii")
_SOCK_NONBLOCK = 0o4000
_SOCK_CLOEXEC = 0o2000000
_SOCKLEN = struct.Struct("<I")


class NotReady(Exception):
    """accept on a blocking listener with no connection yet: answer once `ready` is done."""

    def __init__(self, ready: Future[None]) -> None:
        super().__init__("no connection to accept yet")
        self.ready = ready


class NotifyAnswers:
    """Carries out OpenInstead and duplicate-run ExitStops for the notification thread."""

    def __init__(self, listener: int) -> None:
        self.listener = listener
        self.sockets = TraceeSockets()
        self._reported: set[str] = set()

    def open_instead(self, notification_id: int, action: OpenInstead) -> int:
        """Open the stand-in and answer the call with the program's new descriptor (sent here:
        the caller must not answer again). Returns the program's result."""
        flags = action.flags | os.O_CLOEXEC  # the supervisor's copy never reaches a child
        try:
            local = os.open(action.path, flags, action.mode)
        except OSError as error:
            result = -(error.errno or errno.EIO)
            self._send_error(notification_id, result)
        else:
            cloexec = os.O_CLOEXEC if action.flags & os.O_CLOEXEC else 0
            request = bytearray(
                _ADDFD.pack(notification_id, SECCOMP_ADDFD_FLAG_SEND, local, 0, cloexec)
            )
            try:
                result = fcntl.ioctl(self.listener, SECCOMP_IOCTL_NOTIF_ADDFD, request, True)
            except OSError as error:  # ENOENT: the caller is gone or the call was withdrawn
                result = -(error.errno or errno.EIO)
            finally:
                os.close(local)
        if action.on_done is not None:
            action.on_done(result)
        return result

    def _send_error(self, notification_id: int, result: int) -> None:
        send_result(self.listener, notification_id, result)

    def run_on_duplicate(
        self, notification_id: int, call: SyscallCall, action: ExitStop
    ) -> int | Emulate:
        """Run the call on a duplicate of the program's socket; the callback's answer, or the
        call's own result when it keeps it. NotReady: a blocking accept must wait."""
        try:
            with self.sockets.borrow(call.tgid, call.int_arg(0)) as sock:
                if call.nr == _LISTEN:
                    sock.listen(call.int_arg(1))
                    result = 0
                elif call.nr == _RECVFROM:
                    result = self._recvfrom(notification_id, call, sock)
                elif call.nr == _RECVMSG:
                    result = self._recvmsg(notification_id, call, sock)
                else:
                    result = self._accept(notification_id, call, sock)
        except OSError as error:
            result = -(error.errno or errno.EIO)
        replaced = action.on_exit(result)
        if replaced is None:
            return result
        if isinstance(replaced, Inject):
            # No calls can run in the program without ptrace: each fails as the kernel would
            # refuse it, and the handler takes its fallback (a stolen connection is relayed).
            return replaced.result([-errno.ENOSYS] * len(replaced.calls))
        return replaced

    def _accept(self, notification_id: int, call: SyscallCall, listener: socket.socket) -> int:
        """accept on the duplicate; the connection becomes the program's fd (ADDFD), its peer
        goes where the program asked, as the kernel's accept would write it."""
        if not select.select([listener], [], [], 0)[0]:
            if fcntl.fcntl(listener.fileno(), fcntl.F_GETFL) & os.O_NONBLOCK:
                return -errno.EAGAIN
            raise NotReady(self._when_readable(notification_id, listener.dup()))
        connection, peer = listener.accept()
        with connection:
            flags = call.int_arg(3) if call.nr != SYSCALL_NUMBERS["accept"] else 0
            connection.setblocking(not flags & _SOCK_NONBLOCK)
            buffer, length_pointer = call.args[1], call.args[2]
            if buffer and length_pointer:
                (room,) = _SOCKLEN.unpack(call.memory.read(length_pointer, 4))
                address = from_socket_tuple(peer, connection.family).packed()
                call.memory.write_all(sockaddr_writes(address, buffer, length_pointer, room))
            cloexec = os.O_CLOEXEC if flags & _SOCK_CLOEXEC else 0
            request = bytearray(_ADDFD.pack(notification_id, 0, connection.fileno(), 0, cloexec))
            return int(fcntl.ioctl(self.listener, SECCOMP_IOCTL_NOTIF_ADDFD, request, True))

    def _recvfrom(self, notification_id: int, call: SyscallCall, sock: socket.socket) -> int:
        """recvfrom on the duplicate: the datagram into the program's buffer, its source where
        the program asked (the handler then names the target's peer in its place). Waits for
        readiness, never in a blocking receive, so no datagram is taken and then lost."""
        buffer, size, flags = call.args[1], call.args[2] & 0xFFFFFFFF, call.int_arg(3)
        source, length_pointer = call.args[4], call.args[5]
        try:
            data, peer = sock.recvfrom(size, flags | socket.MSG_DONTWAIT)
        except BlockingIOError:
            if flags & socket.MSG_DONTWAIT or fcntl.fcntl(sock.fileno(), fcntl.F_GETFL) & (
                os.O_NONBLOCK
            ):
                return -errno.EAGAIN
            raise NotReady(self._when_readable(notification_id, sock.dup())) from None
        if data:
            call.memory.write(buffer, data)
        if source and length_pointer and isinstance(peer, tuple):
            (room,) = _SOCKLEN.unpack(call.memory.read(length_pointer, 4))
            address = from_socket_tuple(peer, sock.family).packed()
            call.memory.write_all(sockaddr_writes(address, source, length_pointer, room))
        return len(data)

    def _recvmsg(self, notification_id: int, call: SyscallCall, sock: socket.socket) -> int:
        """recvmsg on the duplicate, its results laid out in the program's msghdr as the kernel
        would: the data across the iovecs, the source, the control messages, the flags."""
        header, flags = call.args[1], call.int_arg(2)
        memory = call.memory
        name, name_room, iov, iov_count, control, control_room, _ = _MSGHDR.unpack(
            memory.read(header, _MSGHDR.size)
        )
        table = memory.read(iov, _IOVEC.size * iov_count) if iov_count else b""
        vectors = [_IOVEC.unpack_from(table, i * _IOVEC.size) for i in range(iov_count)]
        size = sum(length for _, length in vectors)
        try:
            data, ancillary, message_flags, peer = sock.recvmsg(
                size, control_room if control else 0, flags | socket.MSG_DONTWAIT
            )
        except BlockingIOError:
            if flags & socket.MSG_DONTWAIT or fcntl.fcntl(sock.fileno(), fcntl.F_GETFL) & (
                os.O_NONBLOCK
            ):
                return -errno.EAGAIN
            raise NotReady(self._when_readable(notification_id, sock.dup())) from None
        offset = 0
        for base, length in vectors:
            piece = data[offset:offset + length]
            if piece:
                memory.write(base, piece)
            offset += len(piece)
        if name and isinstance(peer, tuple):
            address = from_socket_tuple(peer, sock.family).packed()
            memory.write_all(sockaddr_writes(address, name, header + 8, name_room))
        packed = b"".join(
            _CMSGHDR.pack(_CMSGHDR.size + len(payload), level, kind) + payload
            + bytes(-len(payload) % 8)
            for level, kind, payload in ancillary
        )[:control_room]
        if packed:
            memory.write(control, packed)
        memory.write(header + 40, struct.pack("=Q", len(packed)))  # msg_controllen
        memory.write(header + 48, struct.pack("=i", message_flags))  # msg_flags
        return len(data)

    def _when_readable(self, notification_id: int, listener: socket.socket) -> Future[None]:
        """A future done when `listener` has a connection, or when the call is gone (the
        program was killed): checked twice a second, so the duplicate never outlives it."""
        ready: Future[None] = Future()

        def watch() -> None:
            with listener:
                while not select.select([listener], [], [], 0.5)[0]:
                    if not self._still_waiting(notification_id):
                        break
            ready.set_result(None)

        threading.Thread(target=watch, name="notify-accept", daemon=True).start()
        return ready

    def _still_waiting(self, notification_id: int) -> bool:
        try:
            fcntl.ioctl(self.listener, SECCOMP_IOCTL_NOTIF_ID_VALID,
                        notification_id.to_bytes(8, "little"))
        except OSError:
            return False
        return True

    def can_run_on_duplicate(self, call: SyscallCall) -> bool:
        return call.nr in _RUN_ON_DUPLICATE

    def unsupported(self, name: str, call: SyscallCall, action: Action) -> Emulate | None:
        """A ptrace-only action: None lets the call run unchanged, else the failure to answer.
        Said once per syscall."""
        runs = call.nr in UNSUPPORTED_RUNS
        if name not in self._reported:
            self._reported.add(name)
            what = action.why or type(action).__name__
            outcome = "runs unchanged" if runs else "fails with EOPNOTSUPP"
            sys.stderr.write(
                f"mirrord-trace: {name} ({what}) needs the ptrace engine; under the "
                f"notification engine (debuggers, --engine notify) the call {outcome}\n"
            )
            sys.stderr.flush()
        if runs:
            return None
        return Emulate(-errno.EOPNOTSUPP, why="needs the ptrace engine")

    def close(self) -> None:
        self.sockets.close()


def send_result(listener: int, notification_id: int, result: int | None) -> None:
    """Answer a notification with `result` (a negative errno for failures), or let the call run
    (`result` is None). A vanished caller or a withdrawn call (ENOENT) needs nothing more: a
    withdrawn call restarts under a new id and is decided again."""
    if result is None:
        response = _RESPONSE.pack(notification_id, 0, 0, SECCOMP_USER_NOTIF_FLAG_CONTINUE)
    elif -4096 < result < 0:
        response = _RESPONSE.pack(notification_id, 0, result, 0)
    else:
        response = _RESPONSE.pack(notification_id, result, 0, 0)
    with contextlib.suppress(OSError):
        fcntl.ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, bytearray(response), True)
