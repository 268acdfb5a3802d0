"""Minimal reproduction of the MPTCP goodput collapse on an unshaped veth (docs/benchmarks.md, "MPTCP collapse").

Two namespaces, one plain veth pair, one address each, no lab, no emulator: iperf3 (through mptcpize for MPTCP)
with per-0.5 s samples of the counters a kernel developer asks for first: softnet drops (machine-wide),
the data subflow's `lastsnd` (ms since it last sent), TcpRetransSegs, MPTcpExtMPTCPRetrans, and at the end
every nstat counter that moved on either side.

    sudo .venv/bin/python benchmarks/cost_collapse.py --cc bbr --pin --proto mptcp --seconds 5
    sudo .venv/bin/python benchmarks/cost_collapse.py --cc cubic --pin --proto tcp --seconds 5

--pin puts the client on CPU 0 and the server on CPU 1 (taskset), as the lab's [cpu] accounting does.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
import uuid

from mptcpkit.interrupts import sigterm_as_interrupt

SERVER = "10.79.0.2"


def sh(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True).stdout


def softnet_drops() -> int:
    with open("/proc/net/softnet_stat") as f:
        return sum(int(line.split()[1], 16) for line in f)


def nstat(ns: str, *names: str) -> dict[str, int]:
    out = sh("ip", "netns", "exec", ns, "nstat", "-a" if not names else "-z", *names)
    rows = (line.split() for line in out.splitlines() if line and not line.startswith("#"))
    return {r[0]: int(r[1]) for r in rows if len(r) >= 2}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cc", default="bbr", help="congestion control in both namespaces (default bbr)")
    p.add_argument("--pin", action="store_true", help="client on CPU 0, server on CPU 1")
    p.add_argument("--proto", choices=["mptcp", "tcp"], default="mptcp")
    p.add_argument("--seconds", type=int, default=5)
    args = p.parse_args()
    if os.geteuid() != 0:
        print("benchmarks/cost_collapse.py: run as root (it creates network namespaces)", file=sys.stderr)
        return 2
    tag = uuid.uuid4().hex[:6]
    a, b = f"mkt-col{tag}-a", f"mkt-col{tag}-b"
    try:
        for ns in (a, b):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "netns", "exec", ns, "sysctl", "-qw", f"net.ipv4.tcp_congestion_control={args.cc}")
        sh("ip", "link", "add", f"mkl{tag}a", "netns", a, "type", "veth", "peer", f"mkl{tag}b", "netns", b)
        sh("ip", "-n", a, "addr", "add", "10.79.0.1/24", "dev", f"mkl{tag}a")
        sh("ip", "-n", b, "addr", "add", f"{SERVER}/24", "dev", f"mkl{tag}b")
        sh("ip", "-n", a, "link", "set", f"mkl{tag}a", "up")
        sh("ip", "-n", b, "link", "set", f"mkl{tag}b", "up")
        wrap = ["mptcpize", "run"] if args.proto == "mptcp" else []
        pin_a, pin_b = (["taskset", "-c", "0"], ["taskset", "-c", "1"]) if args.pin else ([], [])
        srv = subprocess.Popen(
            ["ip", "netns", "exec", b, *pin_b, *wrap, "iperf3", "-s", "-1", "-p", "5299"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.5)
        for ns in (a, b):
            sh("ip", "netns", "exec", ns, "nstat", "-n")
        argv = ["iperf3", "-c", SERVER, "-p", "5299", "-t", str(args.seconds), "-i", "0.5", "-f", "m"]
        cli = subprocess.Popen(
            ["ip", "netns", "exec", a, *pin_a, *wrap, *argv], stdout=subprocess.PIPE, text=True
        )
        drops0, t0 = softnet_drops(), time.time()
        print(f"load average {os.getloadavg()[0]:.2f}; cc {args.cc}; pinned {args.pin}; {args.proto}")
        while cli.poll() is None:
            time.sleep(0.5)
            ss = sh("ip", "netns", "exec", a, "ss", "-tin", "dst", SERVER)
            lastsnd = re.findall(r"lastsnd:(\d+)", ss)
            moved = nstat(a, "TcpRetransSegs", "MPTcpExtMPTCPRetrans")
            print(
                f"t={time.time() - t0:4.1f}s softnet drops +{softnet_drops() - drops0} lastsnd(ms) {lastsnd} {moved}"
            )
        out = cli.stdout.read() if cli.stdout else ""
        print("\n".join(line for line in out.splitlines() if "sec" in line))
        srv.wait(timeout=10)
        for side, ns in (("sender", a), ("receiver", b)):
            moved = {k: v for k, v in nstat(ns).items() if k.startswith(("MPTcp", "TcpExt", "TcpRetrans"))}
            print(f"{side} nstat: {moved}")
    finally:
        for ns in (a, b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    return 0


if __name__ == "__main__":
    with sigterm_as_interrupt():  # `kill` tears the namespaces down as Ctrl-C does
        sys.exit(main())
