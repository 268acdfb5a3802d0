"""`lab console`: an interactive shell on a lab host inside a running guest, over vsock or a virtio console port.

Transport: vsock (guest CID chosen per guest, `vhost-vsock-pci`) where this machine has /dev/vhost-vsock,
otherwise a dedicated virtio-serial port (`mptcpkit.console`) whose host end is a unix socket QEMU listens on:
the "serial console" of a guest that has no vsock. Both carry the same framed protocol, so one shell session
needs one byte stream and still returns the shell's exit code and follows the terminal's size:

    frame = 1 type byte + 4-byte big-endian length + payload
    client -> guest: h (hello, JSON {"host", "rows", "cols", "term"}), i (input), w (JSON {"rows", "cols"}),
                     e (end of input: the guest types ^D)
    guest -> client: o (output), x (exit code, JSON int)

The guest side (`serve_vsock`, `serve_port`) runs as threads of the agent; the host side is `run_console`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import select
import signal
import socket
import struct
import subprocess
import sys
import termios
import threading
import time
import tty
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mptcpkit.errors import LabError

VSOCK_PORT = 5123
PORT_NAME = "mptcpkit.console"
HEADER = struct.Struct(">cI")
MAX_FRAME = 1 << 20

Endpoint = dict[str, Any]
"""{"kind": "vsock", "cid": N, "port": P} or {"kind": "serial", "path": "/tmp/.../console.sock"}."""


# --- pure framing ------------------------------------------------------------------------------------------


def frame(kind: bytes, payload: bytes = b"") -> bytes:
    """One frame: type byte, payload length, payload."""
    if len(kind) != 1:
        raise ValueError("frame type is one byte")
    return HEADER.pack(kind, len(payload)) + payload


def json_frame(kind: bytes, value: Any) -> bytes:
    return frame(kind, json.dumps(value).encode())


class FrameReader:
    """Incremental decoder: feed bytes as they arrive, get complete (type, payload) frames back."""

    def __init__(self) -> None:
        self.buffer = b""

    def feed(self, data: bytes) -> list[tuple[bytes, bytes]]:
        self.buffer += data
        frames = []
        while len(self.buffer) >= HEADER.size:
            kind, length = HEADER.unpack_from(self.buffer)
            if length > MAX_FRAME:
                raise ValueError(f"console frame of {length} bytes is too long")
            end = HEADER.size + length
            if len(self.buffer) < end:
                break
            frames.append((kind, self.buffer[HEADER.size : end]))
            self.buffer = self.buffer[end:]
        return frames


# --- host side: which device a guest gets, and the client ---------------------------------------------------


def vsock_available() -> bool:
    """True when QEMU can give a guest a vsock device (vhost-vsock on this machine)."""
    return os.access("/dev/vhost-vsock", os.R_OK | os.W_OK)


def plan_endpoint(workdir: Path, *, vsock: bool) -> tuple[Endpoint, list[str]]:
    """The console endpoint of one guest and the QEMU options that create it.

    The serial variant adds a port to the agent's virtio-serial bus (`mkagentbus`, see single.AgentGuest).
    """
    if vsock:
        cid = random.randint(1000, 2**31 - 1)  # collisions make QEMU fail loudly; 2^31 makes them unlikely
        return {"kind": "vsock", "cid": cid, "port": VSOCK_PORT}, [
            "-device",
            f"vhost-vsock-pci,guest-cid={cid}",
        ]
    path = workdir / "console.sock"
    return {"kind": "serial", "path": str(path)}, [
        "-chardev",
        f"socket,id=mkconsole,path={path},server=on,wait=off",
        "-device",
        f"virtserialport,bus=mkagentbus.0,chardev=mkconsole,name={PORT_NAME}",
    ]


def connect(endpoint: Endpoint, timeout: float = 10.0) -> socket.socket:
    """A stream to the guest's console server (LabError when the guest is not reachable)."""
    try:
        if endpoint["kind"] == "vsock":
            sock = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            sock.connect((int(endpoint["cid"]), int(endpoint["port"])))
        else:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            sock.connect(str(endpoint["path"]))
    except OSError as exc:
        raise LabError(f"cannot reach the guest's console ({endpoint['kind']}): {exc}") from None
    sock.settimeout(None)
    return sock


def _terminal_size() -> tuple[int, int]:
    with contextlib.suppress(OSError):
        size = os.get_terminal_size(sys.stdout.fileno())
        return size.lines, size.columns
    return 24, 80


def run_console(endpoint: Endpoint, host: str, *, stdin: int = 0, stdout: int = 1) -> int:
    """Relay this terminal (or a pipe) to a shell on `host` in the guest; returns the shell's exit code."""
    sock = connect(endpoint)
    rows, cols = _terminal_size()
    term = os.environ.get("TERM", "vt100")
    is_tty = os.isatty(stdin)
    saved = termios.tcgetattr(stdin) if is_tty else None
    resized = threading.Event()
    previous_winch = None
    try:
        sock.sendall(json_frame(b"h", {"host": host, "rows": rows, "cols": cols, "term": term}))
        if is_tty:
            tty.setraw(stdin)
            previous_winch = signal.signal(signal.SIGWINCH, lambda *_: resized.set())
        reader = FrameReader()
        stdin_open = True
        while True:
            if resized.is_set():
                resized.clear()
                rows, cols = _terminal_size()
                sock.sendall(json_frame(b"w", {"rows": rows, "cols": cols}))
            watched = [sock.fileno(), *([stdin] if stdin_open else [])]
            try:
                ready, _, _ = select.select(watched, [], [], 0.5)
            except InterruptedError:
                continue
            if stdin in ready:
                data = os.read(stdin, 4096)
                try:
                    sock.sendall(frame(b"i", data) if data else frame(b"e"))
                except OSError:  # the guest ended the session: what it sent is still to be read
                    data = b""
                stdin_open = bool(data)
            if sock.fileno() in ready:
                data = sock.recv(65536)
                if not data:
                    raise LabError(f"the console of '{host}' closed before the shell exited")
                for kind, payload in reader.feed(data):
                    if kind == b"o":
                        os.write(stdout, payload)
                    elif kind == b"x":
                        return int(json.loads(payload))
    finally:
        if saved is not None:
            termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
        if previous_winch is not None:
            signal.signal(signal.SIGWINCH, previous_winch)
        sock.close()


# --- guest side: the shell sessions -------------------------------------------------------------------------

ShellArgv = Callable[[str], list[str]]
"""Maps a lab host name to the argv of its shell (raises for an unknown host)."""


def _set_winsize(fd: int, rows: int, cols: int) -> None:
    with contextlib.suppress(OSError):
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _spawn_shell(argv: list[str], hello: dict[str, Any]) -> tuple[subprocess.Popen[bytes], int]:
    master, slave = os.openpty()
    _set_winsize(slave, int(hello.get("rows", 24)), int(hello.get("cols", 80)))

    def become_session_leader_of_the_pty() -> None:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    env = {**os.environ, "TERM": str(hello.get("term", "vt100")), "MPTCPKIT_LAB_HOST": str(hello["host"])}
    proc = subprocess.Popen(
        argv,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
        preexec_fn=become_session_leader_of_the_pty,  # the shell needs a controlling tty
        env=env,
        cwd="/root" if os.path.isdir("/root") else "/",
    )
    os.close(slave)
    return proc, master


def session(
    read: Callable[[], bytes], write: Callable[[bytes], None], fd: int, shell_argv: ShellArgv
) -> None:
    """Serve one console session on a stream (`fd` is polled, `read`/`write` move bytes; b"" = closed)."""
    reader = FrameReader()
    hello: dict[str, Any] | None = None
    pending: list[tuple[bytes, bytes]] = []
    while hello is None:
        data = read()
        if not data:
            return
        for kind, payload in reader.feed(data):
            if hello is None and kind == b"h":
                hello = json.loads(payload)
            elif hello is not None:
                pending.append((kind, payload))
    try:
        argv = shell_argv(str(hello.get("host", "")))
        proc, master = _spawn_shell(argv, hello)
    except Exception as exc:  # the client shows the reason and exits 1
        write(frame(b"o", f"mptcpkit console: {exc}\r\n".encode()) + json_frame(b"x", 1))
        return
    client_open = True
    try:

        def handle(kind: bytes, payload: bytes) -> None:
            if kind == b"i":
                os.write(master, payload)
            elif kind == b"e":
                os.write(master, b"\x04")
            elif kind == b"w":
                size = json.loads(payload)
                _set_winsize(master, int(size["rows"]), int(size["cols"]))

        for kind, payload in pending:
            handle(kind, payload)
        while True:
            watched = [master, *([fd] if client_open else [])]
            ready, _, _ = select.select(watched, [], [], 0.5)
            if master in ready:
                try:
                    out = os.read(master, 65536)
                except OSError:  # EIO: the shell and everything on its terminal exited
                    out = b""
                if not out:
                    break
                if client_open:
                    write(frame(b"o", out))
            if client_open and fd in ready:
                data = read()
                if not data:
                    client_open = False
                    os.killpg(proc.pid, signal.SIGHUP)
                    continue
                for kind, payload in reader.feed(data):
                    handle(kind, payload)
        code = proc.wait(timeout=10)
        if client_open:
            write(json_frame(b"x", code if code >= 0 else 128 - code))
    finally:
        os.close(master)
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def serve_vsock(shell_argv: ShellArgv, port: int = VSOCK_PORT) -> bool:
    """Listen on vsock in a daemon thread, one thread per session; False when the guest has no vsock."""
    subprocess.run(["modprobe", "-q", "vmw_vsock_virtio_transport"], check=False, capture_output=True)
    try:
        listener = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
        listener.bind((socket.VMADDR_CID_ANY, port))
        listener.listen(8)
    except (OSError, AttributeError):
        return False

    def one(conn: socket.socket) -> None:
        with conn:
            session(lambda: conn.recv(65536), conn.sendall, conn.fileno(), shell_argv)

    def accept_loop() -> None:
        while True:
            conn, _ = listener.accept()
            threading.Thread(target=one, args=(conn,), daemon=True).start()

    threading.Thread(target=accept_loop, name="console-vsock", daemon=True).start()
    return True


def serve_port(shell_argv: ShellArgv, device: Path) -> None:
    """Serve sessions one after another on a virtio-serial port, in a daemon thread.

    While QEMU's socket has no client, the port polls as POLLHUP and reads return EOF: wait for a client,
    then for its hello.
    """
    fd = os.open(device, os.O_RDWR)

    def read() -> bytes:
        while True:
            events = select.poll()
            events.register(fd, select.POLLIN)
            result = events.poll(500)
            if result and result[0][1] & select.POLLIN:
                return os.read(fd, 65536)
            if result and result[0][1] & select.POLLHUP:
                return b""  # the client went away

    def write(data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]

    def wait_for_client() -> None:
        while True:
            events = select.poll()
            events.register(fd, select.POLLIN)
            result = events.poll(500)
            if result and result[0][1] & select.POLLIN:
                return
            time.sleep(0.2)

    def loop() -> None:
        while True:
            wait_for_client()
            with contextlib.suppress(OSError, ValueError):
                session(read, write, fd, shell_argv)

    threading.Thread(target=loop, name="console-port", daemon=True).start()
