"""Request/response matching for one netlink request, written once for generic netlink and rtnetlink.

`PendingRequest` is a tiny sans-IO state machine: feed it every message read from the socket; it keeps the
replies carrying its sequence number, finishes on the ACK (errno 0), NLMSG_DONE (dump) or an error, and turns
NLMSG_ERROR into `KernelError` with the extack text. `transact()` is the blocking loop around it.
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass, field

from mptcpkit.netlink import nlmsg
from mptcpkit.netlink.errors import DecodeError, KernelError

RECV_SIZE = 1 << 16
"""Netlink messages are at most 32 KiB (dumps included); a 1 MiB recv() would cost an mmap per call."""


@dataclass
class PendingRequest:
    seq: int
    dump: bool
    what: str
    replies: list[nlmsg.Nlmsg] = field(default_factory=list)
    done: bool = False
    error: KernelError | None = None

    def feed(self, msg: nlmsg.Nlmsg) -> None:
        """Consume one message; messages for other sequence numbers are ignored."""
        if msg.seq != self.seq or self.done:
            return
        if msg.type == nlmsg.NLMSG_ERROR:
            err = nlmsg.parse_error(msg)
            if err.errno != 0:
                self.error = KernelError(err.errno, err.extack, request=self.what)
            self.done = True
        elif msg.type == nlmsg.NLMSG_DONE:
            if len(msg.payload) >= 4:
                # a dump may end with an error code in NLMSG_DONE
                code = -int.from_bytes(msg.payload[:4], "little", signed=True)
                if code > 0:
                    self.error = KernelError(code, None, request=self.what)
            self.done = True
        elif msg.type in (nlmsg.NLMSG_NOOP, nlmsg.NLMSG_OVERRUN):
            if msg.type == nlmsg.NLMSG_OVERRUN:
                raise DecodeError("netlink overrun")
        else:
            # a 'do' reply is followed by the ACK we always ask for, which ends the request
            self.replies.append(msg)


class Overrun(Exception):
    """The kernel dropped notifications for this socket (ENOBUFS): state must be read again."""


def pending_datagrams(sock: socket.socket) -> list[bytes]:
    """Every datagram queued on a non-blocking socket now; Overrun if the kernel dropped some."""
    out: list[bytes] = []
    while True:
        try:
            out.append(sock.recv(RECV_SIZE))
        except BlockingIOError:
            return out
        except OSError as exc:
            if exc.errno == errno.ENOBUFS:
                raise Overrun() from None
            raise


def transact(
    sock: socket.socket, msg_type: int, payload: bytes, seq: int, what: str, *, dump: bool = False
) -> list[nlmsg.Nlmsg]:
    """Send one request (always with NLM_F_ACK) and return its replies; raises KernelError on refusal."""
    flags = nlmsg.NLM_F_REQUEST | nlmsg.NLM_F_ACK | (nlmsg.NLM_F_DUMP if dump else 0)
    sock.send(nlmsg.pack_nlmsg(msg_type, flags, seq, payload))
    pending = PendingRequest(seq=seq, dump=dump, what=what)
    while not pending.done:
        for msg in nlmsg.iter_nlmsgs(sock.recv(RECV_SIZE)):
            pending.feed(msg)
    if pending.error is not None:
        raise pending.error
    return pending.replies
