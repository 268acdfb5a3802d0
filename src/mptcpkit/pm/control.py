"""The control API: D-Bus (through dbus-fast) on the system bus or a given bus, beyond mptcpd.

Object /org/mptcpkit/PathManager1, interface org.mptcpkit.PathManager1:

    Status() -> s (JSON)                 ListConnections() -> s (JSON list)
    AddSubflow(u token, s local, s remote, q remote_port, b backup)
    RemoveSubflow(u token, s local, q local_port, s remote, q remote_port)
    SetBackup(u token, s local, q local_port, s remote, q remote_port, b backup)
    signal Event(s type, u token, s json)   -- filter with D-Bus match rules, e.g. arg0='created', arg1=TOKEN

Only root, the daemon's own user and members of `control-group` may call methods: the daemon asks the bus
for the caller's uid (GetConnectionUnixUser) before it runs anything; a bus policy file can restrict it
further. dbus-fast is asyncio-based, so it runs in its own thread, started only when the API is enabled
(asyncio costs the daemon ~10 MB); commands are handed to the daemon's loop through a queue and a wake-up
socket, so plugins and the core stay single-threaded.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import grp
import json
import logging
import os
import pwd
import queue
import re
import socket
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("mptcpkit.pm.control")
PATH = "/org/mptcpkit/PathManager1"
IFACE = "org.mptcpkit.PathManager1"
BUS_NAME = "org.mptcpkit.PathManager1"
ERR_DENIED = "org.freedesktop.DBus.Error.AccessDenied"
ERR_FAILED = "org.mptcpkit.PathManager1.Error.Failed"

Command = Callable[..., Any]
SIGNATURES = {
    "Status": "",
    "ListConnections": "",
    "AddSubflow": "ussqb",
    "RemoveSubflow": "usqsq",
    "SetBackup": "usqsqb",
}


def bus_name(netns: str | None) -> str:
    """One name per managed namespace, so several daemons can share a bus."""
    if not netns:
        return BUS_NAME
    return f"{BUS_NAME}.ns_{re.sub(r'[^A-Za-z0-9_]', '_', os.path.basename(netns))}"


def allowed_uids(group: str | None) -> tuple[set[int], set[int]]:
    """(uids, gids) allowed to call: root, the daemon's user, and the members of `group`."""
    uids = {0, os.geteuid()}
    gids: set[int] = set()
    if group:
        try:
            g = grp.getgrnam(group)
        except KeyError:
            log.warning("control-group %r does not exist; only root may use the control API", group)
            return uids, gids
        gids.add(g.gr_gid)
        for name in g.gr_mem:
            with contextlib.suppress(KeyError):
                uids.add(pwd.getpwnam(name).pw_uid)
    return uids, gids


def uid_allowed(uid: int, group: str | None) -> bool:
    uids, gids = allowed_uids(group)
    if uid in uids:
        return True
    try:
        return pwd.getpwuid(uid).pw_gid in gids
    except KeyError:
        return False


async def bus_daemon_call(bus: Any, member: str, signature: str, body: list[Any]) -> Any:
    """Call a method of the bus itself (org.freedesktop.DBus), e.g. AddMatch or GetConnectionUnixUser."""
    from dbus_fast import Message

    return await bus.call(
        Message(
            destination="org.freedesktop.DBus",
            path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus",
            member=member,
            signature=signature,
            body=body,
        )
    )


class ControlServer:
    """Runs the D-Bus side in a thread; `run_pending()` executes queued commands on the daemon's loop."""

    def __init__(self, bus: str, group: str | None, netns: str | None, handlers: dict[str, Command]) -> None:
        self.bus_address = bus
        self.group = group
        self.name = bus_name(netns)
        self.handlers = handlers
        self.commands: queue.Queue[tuple[Callable[[], Any], concurrent.futures.Future[Any]]] = queue.Queue()
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self._loop: Any = None
        self._bus: Any = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._tasks: set[Any] = set()
        self._thread = threading.Thread(target=self._thread_main, name="pm-control", daemon=True)

    # ------------------------------------------------------------------ daemon side
    def start(self) -> None:
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error
        log.info("control API on D-Bus %s as %s", self.bus_address, self.name)

    def run_pending(self) -> None:
        """Called by the daemon when `wake_r` is readable: run every queued command."""
        with contextlib.suppress(BlockingIOError):
            self.wake_r.recv(4096)
        while True:
            try:
                fn, fut = self.commands.get_nowait()
            except queue.Empty:
                return
            try:
                fut.set_result(fn())
            except BaseException as exc:
                fut.set_exception(exc)

    def publish(self, kind: str, token: int, data: dict[str, Any]) -> None:
        """Emit the Event signal (thread-safe; called from the daemon's loop)."""
        if self._loop is None:
            return
        payload = json.dumps(data, default=str)
        self._loop.call_soon_threadsafe(self._emit, kind, token & 0xFFFFFFFF, payload)

    def stop(self) -> None:
        if self._loop is not None and self._bus is not None:
            self._loop.call_soon_threadsafe(self._bus.disconnect)
        self._thread.join(5)
        self.wake_r.close()
        self.wake_w.close()

    # ------------------------------------------------------------------ D-Bus thread
    def _thread_main(self) -> None:
        import asyncio

        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._serve(loop))
        except BaseException as exc:
            self._error = exc
            self._ready.set()
        finally:
            loop.close()

    async def _serve(self, loop: Any) -> None:
        from dbus_fast import BusType, RequestNameReply
        from dbus_fast.aio import MessageBus

        self._loop = loop
        if self.bus_address == "system":
            bus = MessageBus(bus_type=BusType.SYSTEM)
        elif self.bus_address == "session":
            bus = MessageBus(bus_type=BusType.SESSION)
        else:
            bus = MessageBus(bus_address=self.bus_address)
        await bus.connect()
        self._bus = bus
        reply = await bus.request_name(self.name)
        if reply not in (RequestNameReply.PRIMARY_OWNER, RequestNameReply.ALREADY_OWNER):
            raise RuntimeError(f"D-Bus name {self.name} is taken ({reply.name})")
        bus.add_message_handler(self._on_message)
        self._ready.set()
        await bus.wait_for_disconnect()  # type: ignore[no-untyped-call]

    def _emit(self, kind: str, token: int, payload: str) -> None:
        from dbus_fast import Message

        if self._bus is not None and self._bus.connected:
            self._bus.send(Message.new_signal(PATH, IFACE, "Event", "sus", [kind, token, payload]))

    def _on_message(self, msg: Any) -> Any:
        from dbus_fast import MessageType

        if msg.message_type != MessageType.METHOD_CALL or msg.path != PATH or msg.interface != IFACE:
            return None
        import asyncio

        task = asyncio.ensure_future(self._handle(msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _handle(self, msg: Any) -> None:
        import asyncio

        from dbus_fast import Message

        bus = self._bus
        try:
            reply = await bus_daemon_call(bus, "GetConnectionUnixUser", "s", [msg.sender])
            uid = int(reply.body[0])
        except Exception as exc:
            bus.send(Message.new_error(msg, ERR_DENIED, f"cannot identify the caller: {exc}"))
            return
        if not uid_allowed(uid, self.group):
            bus.send(Message.new_error(msg, ERR_DENIED, f"uid {uid} is not root nor in the control group"))
            return
        handler = self.handlers.get(msg.member)
        want = SIGNATURES.get(msg.member)
        if handler is None or want is None:
            bus.send(Message.new_error(msg, "org.freedesktop.DBus.Error.UnknownMethod", msg.member))
            return
        if msg.signature != want:
            bus.send(
                Message.new_error(
                    msg, "org.freedesktop.DBus.Error.InvalidArgs", f"expected signature {want!r}"
                )
            )
            return
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        args = list(msg.body)
        self.commands.put((lambda: handler(*args), fut))
        with contextlib.suppress(OSError):
            self.wake_w.send(b"x")
        try:
            result = await asyncio.wrap_future(fut)
        except Exception as exc:
            bus.send(Message.new_error(msg, ERR_FAILED, str(exc)))
            return
        if result is None:
            bus.send(Message.new_method_return(msg))
        else:
            bus.send(Message.new_method_return(msg, "s", [json.dumps(result, default=str)]))
