"""Capture real `mptcp_pm` kernel messages as hex fixtures (run as root; not a test).

    .venv/bin/python tests/netlink/capture.py

Builds a namespace `mkt-pm-capture` with a veth pair, subscribes raw to `mptcp_pm_events`, drives one MPTCP
connection over IPv4 (a signalled address, an extra subflow, a priority change, an address removal) and
one over IPv6, and records every event plus replies to GET_ADDR / GET_LIMITS and an error with extack.
Writes tests/netlink/fixtures/kernel_messages.json: [{"name", "hex"}] where hex is one whole nlmsg.
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from pathlib import Path

from mptcpkit.mptcp_socket import IPPROTO_MPTCP
from mptcpkit.netlink import MptcpPmClient, nlmsg
from mptcpkit.netlink import mptcp_pm as pm
from mptcpkit.netlink.socket import run_in_netns

NS = "mkt-pm-capture"
OUT = Path(__file__).parent / "fixtures" / "kernel_messages.json"


def sh(*args: str) -> None:
    subprocess.run(["ip", "-n", NS, *args], check=True)


def capture_rtnl() -> list[dict[str, str]]:
    """A link dump, address dump and a route lookup from the capture namespace."""
    import ipaddress

    from mptcpkit.netlink import rtnetlink as rtnl
    from mptcpkit.netlink.socket import NETLINK_ROUTE, ifindex, open_netlink

    sh("route", "add", "default", "via", "10.9.0.2", "dev", "a0")
    sh("addr", "add", "2001:db8:9::1/64", "dev", "a0", "nodad")
    sock = open_netlink(NETLINK_ROUTE, NS)
    out: list[dict[str, str]] = []
    a0 = ifindex("a0", NS)
    assert a0 is not None
    for name, mtype, body, flags in (
        ("rtnl_links", rtnl.RTM_GETLINK, rtnl.req_dump_links(), nlmsg.NLM_F_DUMP),
        ("rtnl_addrs", rtnl.RTM_GETADDR, rtnl.req_dump_addrs(), nlmsg.NLM_F_DUMP),
        ("rtnl_route", rtnl.RTM_GETROUTE, rtnl.req_route_lookup(ipaddress.ip_address("192.0.2.1"), a0), 0),
    ):
        sock.send(nlmsg.pack_nlmsg(mtype, nlmsg.NLM_F_REQUEST | flags, 7, body))
        done = False
        while not done:
            for msg in nlmsg.iter_nlmsgs(sock.recv(1 << 16)):
                if msg.type in (nlmsg.NLMSG_DONE, nlmsg.NLMSG_ERROR):
                    done = True
                    continue
                raw = nlmsg.pack_nlmsg(msg.type, msg.flags, msg.seq, msg.payload, msg.pid)
                out.append({"name": f"{name}_{len(out)}", "hex": raw.hex()})
                done = done or not flags
    sock.close()
    return out


def main() -> None:
    subprocess.run(["ip", "netns", "del", NS], check=False, capture_output=True)
    subprocess.run(["ip", "netns", "add", NS], check=True)
    try:
        sh("link", "set", "lo", "up")
        sh("link", "add", "a0", "type", "veth", "peer", "name", "b0")
        for dev in ("a0", "b0"):
            sh("link", "set", dev, "up")
        sh("addr", "add", "10.9.0.1/24", "dev", "a0")
        sh("addr", "add", "10.9.0.2/24", "dev", "b0")
        time.sleep(0.3)
        records: list[dict[str, str]] = []
        with MptcpPmClient(netns=NS) as c:
            ev = c.subscribe()
            c.set_limits(subflows=4, add_addr_accepted=4)
            c.add_endpoint("10.9.0.2", id=2, flags="signal", port=10002)  # listener_created
            c.add_endpoint("127.0.0.2", id=3, flags="subflow")

            def serve(family: int, addr: str, port: int) -> None:
                def body() -> None:
                    s = socket.socket(family, socket.SOCK_STREAM, IPPROTO_MPTCP)
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    s.bind((addr, port))
                    s.listen()
                    conn, _ = s.accept()
                    conn.recv(100)
                    time.sleep(0.6)
                    conn.close()
                    s.close()

                run_in_netns(NS, body)

            t = threading.Thread(target=serve, args=(socket.AF_INET, "0.0.0.0", 8080))
            t.start()
            time.sleep(0.2)

            def client4() -> socket.socket:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
                s.connect(("127.0.0.1", 8080))
                s.send(b"x")
                return s

            cs = run_in_netns(NS, client4)
            time.sleep(0.4)
            c.set_flags(id=3, flags="backup")  # sub_priority
            time.sleep(0.1)
            c.del_endpoint(2)  # listener_closed, removed on the peer
            time.sleep(0.2)
            cs.close()
            t.join()
            time.sleep(0.2)

            t6 = threading.Thread(target=serve, args=(socket.AF_INET6, "::", 8081))
            t6.start()
            time.sleep(0.2)

            def client6() -> socket.socket:
                s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM, IPPROTO_MPTCP)
                s.connect(("::1", 8081))
                s.send(b"x")
                return s

            cs6 = run_in_netns(NS, client6)
            cs6.close()
            t6.join()
            time.sleep(0.3)

            ev.sock.setblocking(True)
            ev.sock.settimeout(0.5)
            while True:
                try:
                    data = ev.sock.recv(1 << 16)
                except TimeoutError:
                    break
                for msg in nlmsg.iter_nlmsgs(data):
                    name = pm.decode_event(msg.payload).name()
                    records.append(
                        {
                            "name": f"event_{name}",
                            "hex": nlmsg.pack_nlmsg(msg.type, msg.flags, msg.seq, msg.payload, msg.pid).hex(),
                        }
                    )

            # replies and an error, captured raw through the command socket
            sock = c._cmd.sock
            fam = c._cmd.family.id
            for name, payload, flags in (
                ("reply_get_limits", pm.req_get_limits(), nlmsg.NLM_F_REQUEST),
                ("reply_get_addr", pm.req_get_addr(3), nlmsg.NLM_F_REQUEST),
                ("reply_dump_addr", pm.req_get_addr(), nlmsg.NLM_F_REQUEST | nlmsg.NLM_F_DUMP),
                ("error_get_addr_missing", pm.req_get_addr(99), nlmsg.NLM_F_REQUEST | nlmsg.NLM_F_ACK),
            ):
                sock.send(nlmsg.pack_nlmsg(fam, flags, 4242, payload))
                sock.settimeout(1)
                i = 0
                while True:
                    data = sock.recv(1 << 16)
                    msgs = list(nlmsg.iter_nlmsgs(data))
                    for msg in msgs:
                        i += 1
                        records.append(
                            {
                                "name": f"{name}_{i}",
                                "hex": nlmsg.pack_nlmsg(
                                    msg.type, msg.flags, msg.seq, msg.payload, msg.pid
                                ).hex(),
                            }
                        )
                    if any(m.type in (nlmsg.NLMSG_DONE, nlmsg.NLMSG_ERROR) for m in msgs) or flags == 1:
                        break
            c.flush_endpoints()
        records += capture_rtnl()
        OUT.parent.mkdir(exist_ok=True)
        OUT.write_text(json.dumps(records, indent=1) + "\n")
        print(f"wrote {len(records)} messages to {OUT}")
        for r in records:
            print(r["name"])
    finally:
        subprocess.run(["ip", "netns", "del", NS], check=False)


if __name__ == "__main__":
    main()
