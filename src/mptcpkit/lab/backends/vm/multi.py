"""VM backend, multi-VM mode: every lab host is its own guest running the kernel under test.

Each link becomes two TAP devices on this machine joined by a bridge of their own; each guest gets one
virtio-net NIC per link (MAC chosen per host and link), renamed inside the guest to the link's interface name.
Addresses, routes, MPTCP settings and shaping (tc/netem on each guest NIC's egress: the guest kernel is the one
under test, and it has netem where this machine may not) are applied inside each guest by its agent. All guests
boot at once. TAPs, bridges and guests are removed on close; a state file lets `cleanup_vms()` remove them
after a kill -9.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import pickle
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

from mptcpkit.errors import LabError
from mptcpkit.lab.backends.base import Backend, Lab, LabHost, LabInfo
from mptcpkit.lab.backends.tc_reshape import TcReshaper
from mptcpkit.lab.backends.vm import console as vm_console
from mptcpkit.lab.backends.vm import state
from mptcpkit.lab.backends.vm.single import AgentGuest, GuestSettings, VmHost, agent_argv
from mptcpkit.lab.backends.vm.state import start_time
from mptcpkit.lab.model import Topology


def link_devices(tag: str, index: int) -> tuple[str, str, str]:
    """(tap of end a, tap of end b, bridge) for link `index`: short, prefixed, unique per lab."""
    return f"mk{tag}{index}a", f"mk{tag}{index}b", f"mk{tag}{index}br"


def nic_mac(tag: str, host_index: int, link_index: int) -> str:
    """A locally administered unicast MAC naming (lab, host, link)."""
    return f"52:54:{tag[0:2]}:{tag[2:4]}:{host_index:02x}:{link_index:02x}"


def nic_qemu_opts(netdev_id: str, tap: str, mac: str) -> list[str]:
    return [
        "-netdev",
        f"tap,id={netdev_id},ifname={tap},script=no,downscript=no",
        "-device",
        f"virtio-net-pci,netdev={netdev_id},mac={mac}",
    ]


def _ip(*argv: str) -> None:
    result = subprocess.run(["ip", *argv], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise LabError(f"`ip {' '.join(argv)}` failed: {result.stderr.strip()}")


class MultiVmLab(Lab):
    """One guest per host; closing stops every guest and removes the TAPs and bridges."""

    def __init__(
        self,
        topology: Topology,
        info: LabInfo,
        nodes: dict[str, AgentGuest],
        links: list[str],
        state_file: Path,
    ) -> None:
        self.topology = topology
        self.info = info
        self._nodes = nodes
        self._links = links
        self._state_file = state_file
        self._closed = False
        self.set_link_shape = TcReshaper(self)  # set-link actions: `tc qdisc replace` in the guests

    def host(self, name: str) -> LabHost:
        node = self._nodes[name]
        assert node.channel is not None
        return VmHost(name, node.channel)

    def console_endpoint(self, host: str) -> vm_console.Endpoint:
        """Where `lab console` reaches `host`: its own guest."""
        return dict(self._nodes[host].console)

    def alive(self) -> bool:
        """False once any guest has stopped."""
        return all(n.guest.proc is not None and n.guest.proc.poll() is None for n in self._nodes.values())

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        _teardown(list(self._nodes.values()), self._links, self._state_file)


def _teardown(nodes: list[AgentGuest], links: list[str], state_file: Path) -> None:
    for node in nodes:
        with contextlib.suppress(Exception):
            node.shutdown()
    for link in links:
        subprocess.run(["ip", "link", "del", link], capture_output=True, check=False)
    state_file.unlink(missing_ok=True)


class MultiVmBackend(Backend):
    """Multi-VM mode (see the module docstring)."""

    name = "multi-vm"

    def __init__(self, kernel: Path | None = None, modules: Path | None = None, **settings: Any) -> None:
        # One small guest per host: less memory and one CPU each, a longer boot budget for several boots.
        settings = {"boot_timeout": 600.0, "cpus": 1, "memory": "768M", **settings}
        self.settings = GuestSettings(kernel, modules, **settings)

    def up(self, topology: Topology, *, emulation: str = "auto") -> MultiVmLab:
        tag = uuid.uuid4().hex[:6]
        state_file = state.STATE_DIR / f"mkt-vm-net-{tag}.json"
        created: list[str] = []
        nodes: dict[str, AgentGuest] = {}
        try:
            state.STATE_DIR.mkdir(parents=True, exist_ok=True)
            planned = [dev for i in range(len(topology.links)) for dev in link_devices(tag, i)]
            state_file.write_text(
                json.dumps(
                    {
                        "name": f"mkt-vm-net-{tag}",
                        "owner": os.getpid(),
                        "owner_start": start_time(os.getpid()),
                        "links": planned,
                    }
                )
            )
            macs: dict[str, dict[str, str]] = {h.name: {} for h in topology.hosts}
            nic_opts: dict[str, list[str]] = {h.name: [] for h in topology.hosts}
            host_index = {h.name: i for i, h in enumerate(topology.hosts)}
            for index, link in enumerate(topology.links):
                tap_a, tap_b, bridge = link_devices(tag, index)
                _ip("link", "add", bridge, "type", "bridge")
                created.append(bridge)
                for tap, end in ((tap_a, link.a), (tap_b, link.b)):
                    _ip("tuntap", "add", "dev", tap, "mode", "tap")
                    created.append(tap)
                    _ip("link", "set", tap, "master", bridge, "mtu", str(link.mtu), "up")
                    mac = nic_mac(tag, host_index[end.host], index)
                    macs[end.host][mac] = end.ifname
                    nic_opts[end.host] += nic_qemu_opts(f"nl{index}", tap, mac)
                _ip("link", "set", bridge, "up")
            for host in topology.hosts:
                guest = self.settings.guest(agent_argv())
                nodes[host.name] = AgentGuest(guest, nic_opts[host.name])
            for node in nodes.values():
                node.launch()
            deadline = time.monotonic() + self.settings.boot_timeout
            guest_info = {}
            blob = base64.b64encode(pickle.dumps(topology)).decode()
            for name, node in nodes.items():
                channel = node.connect(deadline)
                guest_info[name] = channel.call(
                    {"op": "host_up", "topology": blob, "host": name, "macs": macs[name]}, 600
                )
            info = LabInfo(
                lab_id=f"mkt-vm-net-{tag}",
                backend="multi-vm",
                topology=topology.name,
                emulation={"kind": "tc/netem on each guest NIC (egress)"},
                details={
                    "vms": {n: node.vm_info() for n, node in nodes.items()},
                    "guests": guest_info,
                    "links": {lk.name: link_devices(tag, i) for i, lk in enumerate(topology.links)},
                },
            )
            return MultiVmLab(topology, info, nodes, created, state_file)
        except BaseException:
            _teardown(list(nodes.values()), created, state_file)
            raise
