"""Tiny MPTCP transfer programs the lab tests run on lab hosts (`python -c`), shared by the backend tests."""

from __future__ import annotations


def sink_server(port: int) -> str:
    """Accept one MPTCP connection on `port`, print "ready" first and the number of bytes received last."""
    return f"""
import socket
srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", {port})); srv.listen(1); print("ready", flush=True)
conn, _ = srv.accept(); total = 0
while (chunk := conn.recv(65536)):
    total += len(chunk)
print(total, flush=True)
"""


def sending_client(address: str, port: int, size: int, pause_s: float) -> str:
    """Send `size` bytes over MPTCP after `pause_s` (for a second subflow to join); print the subflow count."""
    return f"""
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262)
s.connect(("{address}", {port}))
time.sleep({pause_s})
s.sendall(bytes({size}))
info = s.getsockopt(284, 1, 64)
s.shutdown(socket.SHUT_WR); s.recv(1); s.close()
print(info[0])
"""
