"""Request/response matching for one netlink request, as a tiny sans-IO state machine.

Feed it every message read from the socket; it keeps the replies carrying its sequence number, finishes on the
ACK (errno 0), NLMSG_DONE (dump) or an error, and turns NLMSG_ERROR into `KernelError` with the extack text.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mptcpkit.netlink import wire
from mptcpkit.netlink.errors import DecodeError, KernelError


@dataclass
class PendingRequest:
    seq: int
    dump: bool
    what: str
    replies: list[bytes] = field(default_factory=list)
    done: bool = False
    error: KernelError | None = None

    def feed(self, msg: wire.Nlmsg) -> None:
        """Consume one message; messages for other sequence numbers are ignored."""
        if msg.seq != self.seq or self.done:
            return
        if msg.type == wire.NLMSG_ERROR:
            err = wire.parse_error(msg)
            if err.errno != 0:
                self.error = KernelError(err.errno, err.extack, request=self.what)
            self.done = True
        elif msg.type == wire.NLMSG_DONE:
            if len(msg.payload) >= 4:
                # a dump may end with an error code in NLMSG_DONE
                code = -int.from_bytes(msg.payload[:4], "little", signed=True)
                if code > 0:
                    self.error = KernelError(code, None, request=self.what)
            self.done = True
        elif msg.type in (wire.NLMSG_NOOP, wire.NLMSG_OVERRUN):
            if msg.type == wire.NLMSG_OVERRUN:
                raise DecodeError("netlink overrun")
        else:
            self.replies.append(msg.payload)
            if not self.dump and not (msg.flags & wire.NLM_F_MULTI):
                # a 'do' reply; the ACK (we always ask for one) still follows and ends the request
                pass
