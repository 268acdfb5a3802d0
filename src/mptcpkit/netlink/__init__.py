"""Generic-netlink client for the kernel's MPTCP path manager (`mptcp_pm`): sans-IO codec + thin sync client.

from mptcpkit.netlink import MptcpPmClient
with MptcpPmClient(netns="lab-a") as pm:
    pm.add_endpoint("10.0.2.1", flags="subflow", dev="eth1")
"""

from mptcpkit.netlink.client import EventsLost, MptcpPmClient
from mptcpkit.netlink.errors import DecodeError, FamilyNotFound, KernelError, NetlinkError
from mptcpkit.netlink.mptcp_events import (
    AddressAnnounced,
    AddressRemoved,
    ConnectionClosed,
    ConnectionCreated,
    ConnectionEstablished,
    ListenerClosed,
    ListenerCreated,
    MptcpEvent,
    SubflowClosed,
    SubflowEstablished,
    SubflowPriority,
    UnknownEvent,
)
from mptcpkit.netlink.mptcp_pm import (
    EndpointFlags,
    EventType,
    KernelEndpoint,
    Limits,
)

__all__ = [
    "AddressAnnounced",
    "AddressRemoved",
    "ConnectionClosed",
    "ConnectionCreated",
    "ConnectionEstablished",
    "DecodeError",
    "EndpointFlags",
    "EventType",
    "EventsLost",
    "FamilyNotFound",
    "KernelEndpoint",
    "KernelError",
    "Limits",
    "ListenerClosed",
    "ListenerCreated",
    "MptcpEvent",
    "MptcpPmClient",
    "NetlinkError",
    "SubflowClosed",
    "SubflowEstablished",
    "SubflowPriority",
    "UnknownEvent",
]
