"""Errors of the netlink layer.

MptcpkitError
 +-- LabError
      +-- NetlinkError       anything that went wrong talking to the kernel over netlink
           +-- DecodeError   the bytes are not a valid message (kernel or peer sent garbage)
           +-- KernelError   the kernel refused a request: errno plus its extended-ack text
           +-- FamilyNotFound the generic-netlink family is absent (module not loaded / kernel too old)
"""

from __future__ import annotations

import errno as _errno
import os

from mptcpkit.errors import LabError


class NetlinkError(LabError):
    """Talking to the kernel over netlink failed."""


class DecodeError(NetlinkError):
    """Bytes that are not a valid netlink message; the only exception the decoders raise."""


class FamilyNotFound(NetlinkError):
    """The requested generic-netlink family is not registered in this kernel / namespace."""


class KernelError(NetlinkError):
    """The kernel answered a request with an error; `errno` and `extack` say why."""

    def __init__(self, errno: int, extack: str | None = None, *, request: str = "") -> None:
        self.errno = errno
        self.extack = extack
        self.request = request
        name = _errno.errorcode.get(errno, str(errno))
        text = f"{request}: " if request else ""
        text += f"kernel error {name} ({os.strerror(errno)})"
        if extack:
            text += f": {extack}"
        super().__init__(text)
