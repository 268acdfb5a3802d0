"""The daemon: a selector loop around the sans-IO core (`core.py`). It reads sockets, feeds the core, runs
the plugin calls the core asks for and sleeps until the core's timer. (Not asyncio: importing it pulls in
ssl and costs the daemon about 10 MB of RSS, for two sockets and one timer.)

Start: refuse if MPTCP is off; wait for the `mptcp_pm` family (a module may still be loading); subscribe to
events *before* dumping links/addresses (nothing slips between); sync address ids with the endpoints already
in the kernel; load plugins; report the initial network; let plugins reconcile. Run until SIGTERM/SIGINT.
Stop: plugins stop, then everything the daemon added is removed and the limits restored.
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import json
import logging
import os
import selectors
import signal
import socket
import time
from collections import Counter
from collections.abc import Callable
from ipaddress import ip_address
from typing import TYPE_CHECKING, Any

from mptcpkit.errors import EnvironmentProblem, UsageError
from mptcpkit.netlink.client import EventsLost, MptcpPmClient
from mptcpkit.netlink.errors import FamilyNotFound, KernelError, NetlinkError
from mptcpkit.netlink.mptcp_pm import Limits
from mptcpkit.pm import netmon
from mptcpkit.pm.config import Config, NotifyFlags, pm_type, require_mptcp_enabled
from mptcpkit.pm.core import Connection, PathManagerCore, PluginCall, RouteLookup
from mptcpkit.pm.handle import PathManager
from mptcpkit.pm.observe import Metrics, alive, default_state_file, setup_logging, status_dict
from mptcpkit.pm.plugin import Plugin, SockAddr, default_plugin
from mptcpkit.pm.plugin_loader import discover
from mptcpkit.pm.rtnl_socket import ResyncNeeded, RtnlSocket

if TYPE_CHECKING:
    from mptcpkit.pm.control import ControlServer

log = logging.getLogger("mptcpkit.pm")
FAMILY_WAIT_LOG_EVERY = 10.0
STATE_WRITE_DELAY = 0.5


def _takes_kwarg(fn: Callable[..., Any], name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


class Daemon:
    """Owns the sockets, the plugins and the core; `run()` blocks until a stop signal."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.netns = config.netns
        self.state_file = config.state_file or default_state_file(config.netns)
        self.plugins: dict[str, Plugin] = {}
        self.event_counts: Counter[str] = Counter()
        self.warnings: list[str] = list(config.warnings)
        self.started = time.time()
        self._stopping = False
        self._state_due: float | None = None
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._kwargs_ok: dict[tuple[str, str], bool] = {}
        self.metrics: Metrics | None = None
        self.client: MptcpPmClient | None = None
        self.rtnl: RtnlSocket | None = None
        self.control: ControlServer | None = None

    # ---------------------------------------------------------------- start / stop
    def _connect(self) -> MptcpPmClient | None:
        """The `mptcp_pm` client; waits (polling) while the family is not registered, as mptcpd does.
        None if a stop signal came while waiting."""
        require_mptcp_enabled(self.netns)
        next_log = 0.0
        while True:
            try:
                return MptcpPmClient(self.netns)
            except FamilyNotFound:
                now = time.monotonic()
                if now >= next_log:
                    log.warning("generic netlink family mptcp_pm is not there yet; waiting for it")
                    next_log = now + FAMILY_WAIT_LOG_EVERY
                if self._wait_signal(0.2):
                    return None

    def _open(self, client: MptcpPmClient) -> None:
        self.client = client
        rcvbuf = os.environ.get("MPTCPKIT_PM_EVENT_RCVBUF")  # a test knob: provoke event overruns
        client.subscribe(int(rcvbuf) if rcvbuf and rcvbuf.isdigit() else None)
        self.rtnl = RtnlSocket(self.netns, routes=bool(self.config.notify_flags & NotifyFlags.CHECK_ROUTE))
        cfg = self.config
        network = netmon.NetworkMonitor(
            notify=cfg.notify_flags, allow=cfg.allow_interfaces, deny=cfg.deny_interfaces
        )
        self.pm = PathManager(client, cfg, network, self.netns)
        self.pm.on_monitor_loopback = self._monitor_loopback
        self._adopt_previous_run()
        self._sync_ids()
        for w in self.warnings:
            log.warning("%s", w)
        classes = discover(cfg.plugin_dir, cfg.load_plugins, warn=self.warnings)
        for cls in classes:
            try:
                self.plugins[cls.name] = cls(self.pm)
            except (Exception, SystemExit) as exc:
                log.error("plugin %s could not be created: %s; skipped", cls.name, exc)
        default = default_plugin(list(self.plugins.values()), cfg.path_manager, self.warnings)
        self.core = PathManagerCore(network, list(self.plugins), default.name if default else None)
        for name, p in list(self.plugins.items()):
            try:
                p.start()
            except (Exception, SystemExit) as exc:
                log.error("plugin %s failed to start: %s: %s; it is not used", name, type(exc).__name__, exc)
                del self.plugins[name]
                self.core.remove_plugin(name)
        if not self.plugins:
            raise UsageError("no path-manager plugin could be loaded", hint="see the messages above")
        self._warn_pm_type()
        log.info("plugins: %s (default %s)", ", ".join(self.plugins), self.core.default or "none")

    def _warn_pm_type(self) -> None:
        kind = pm_type(self.netns)
        p = self.plugins.get(self.core.default or "")
        if p is not None and p.needs_userspace_pm and kind != "userspace":
            log.warning(
                "plugin %s drives the user-space path manager but net.mptcp.path_manager is %r "
                "(set it with: sysctl -w net.mptcp.path_manager=userspace)",
                p.name,
                kind,
            )

    def _sync_ids(self) -> None:
        """Endpoints that exist before we start keep their ids: the id manager never hands them out to
        another address (mptcpd 0.13 syncs its id manager the same way)."""
        assert self.client is not None
        for e in self.client.dump_endpoints():
            if e.addr is not None and e.id and e.id not in self.pm.idm.ids.values():
                self.pm.idm.reserve(e.addr, e.id)
        if self.pm.idm.ids:
            log.debug("address ids in use at start: %s", {str(a): i for a, i in self.pm.idm.ids.items()})

    def _adopt_previous_run(self) -> None:
        """A previous run that died without cleaning up left a state file: take over its endpoints and
        original limits, so they are removed/restored by this run instead of colliding (mptcpd: EEXIST)."""
        try:
            old = json.loads(self.state_file.read_text())
            pid = int(old.get("pid", 0))
        except (OSError, ValueError, AttributeError):
            return
        if pid and pid != os.getpid() and alive(pid):
            raise EnvironmentProblem(
                f"another mptcpkit pm (pid {pid}) is running for this namespace",
                hint=f"stop it, or use another --state-file than {self.state_file}",
            )
        assert self.client is not None
        try:
            lim = old.get("limits_before")
            if lim:
                self.pm.limits_before = Limits(int(lim["subflows"]), int(lim["add_addr_accepted"]))
            kernel = {e.id: e for e in self.client.dump_endpoints()}
            for item in old.get("owned_endpoints", []):
                e = kernel.get(int(item["id"]))
                if e is not None and str(e.addr) == item["addr"]:
                    self.pm.owned[e.id] = e
                    if e.addr is not None:
                        self.pm.idm.reserve(e.addr, e.id)
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("ignoring unreadable state file %s: %s", self.state_file, exc)
            return
        log.info("took over %d endpoint(s) left by a previous run (pid %d)", len(self.pm.owned), pid)

    def _start_control(self) -> None:
        from mptcpkit.pm.control import ControlServer

        self.control = ControlServer(
            self.config.control or "system",
            self.config.control_group,
            self.netns,
            {
                "Status": self.status,
                "ListConnections": lambda: [c.to_dict() for c in self.core.connections.values()],
                "AddSubflow": self._ctl_add_subflow,
                "RemoveSubflow": self._ctl_remove_subflow,
                "SetBackup": self._ctl_set_backup,
            },
        )
        self.control.start()
        self._sel.register(self.control.wake_r, selectors.EVENT_READ, self.control.run_pending)

    def _ctl_add_subflow(self, token: int, local: str, remote: str, port: int, backup: bool) -> None:
        laddr = ip_address(local)
        self.pm.add_subflow(
            token, self.pm.idm.get_id(laddr), SockAddr(laddr), SockAddr(ip_address(remote), port), backup
        )

    def _ctl_remove_subflow(self, token: int, local: str, lport: int, remote: str, rport: int) -> None:
        self.pm.remove_subflow(token, SockAddr(ip_address(local), lport), SockAddr(ip_address(remote), rport))

    def _ctl_set_backup(
        self, token: int, local: str, lport: int, remote: str, rport: int, backup: bool
    ) -> None:
        laddr, raddr = SockAddr(ip_address(local), lport), SockAddr(ip_address(remote), rport)
        self.pm.set_backup(token, laddr, raddr, backup)

    def close(self) -> None:
        if self.control is not None:
            self.control.stop()
        for name in self.plugins:
            self._call_plugin(PluginCall(name, "stop"))
        if self.config.restore_on_exit and hasattr(self, "pm"):
            self.pm.cleanup()
        with contextlib.suppress(FileNotFoundError):
            self.state_file.unlink()
        if self.rtnl is not None:
            self.rtnl.close()
        if self.client is not None:
            self.client.close()

    def _wait_signal(self, timeout: float) -> bool:
        """Sleep up to `timeout` s unless SIGTERM/SIGINT arrives; True if the daemon must stop."""
        import select

        r, _, _ = select.select([self._wake_r], [], [], timeout)
        if r:
            self._on_signal()
        return self._stopping

    def _on_signal(self) -> None:
        with contextlib.suppress(BlockingIOError):
            self._wake_r.recv(64)
        self._stopping = True

    def run(self) -> None:
        for s in (self._wake_r, self._wake_w):
            s.setblocking(False)
        old_fd = signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        old_handlers = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            client = self._connect()
            if client is not None:
                self._serve(client)
        finally:
            for sig, h in old_handlers.items():
                signal.signal(sig, h)
            signal.set_wakeup_fd(old_fd)
            self._sel.close()
            self._wake_r.close()
            self._wake_w.close()

    def _serve(self, client: MptcpPmClient) -> None:
        try:
            self._open(client)
            assert self.rtnl is not None
            links, addrs = self.rtnl.dump()
            self.core.start(links, addrs, time.monotonic())
            self._drain()
            if self.config.metrics_port is not None:
                self.metrics = Metrics(self.config.metrics_port)
                self._update_metrics()
            self._sel.register(client.subscribe().sock, selectors.EVENT_READ, self._on_pm_events)
            self._sel.register(self.rtnl.events, selectors.EVENT_READ, self._on_rtnl)
            self._sel.register(self._wake_r, selectors.EVENT_READ, self._on_signal)
            if self.config.control:
                self._start_control()
            self._write_state()
            # everything built so far (modules, plugins, config) lives as long as the daemon: out of the
            # collector's sight, a full collection no longer walks it in the middle of an event
            gc.collect()
            gc.freeze()
            log.info("mptcpkit pm running (pid %d)", os.getpid())
            while not self._stopping:
                self._step()
            log.info("stopping")
        finally:
            self.close()

    def _step(self) -> None:
        """One loop turn: sleep until a socket is readable or the next timer, then handle what is due."""
        now = time.monotonic()
        due = [t for t in (self.core.get_timer(), self._state_due) if t is not None and t != float("inf")]
        timeout = max(0.0, min(due) - now) if due else None
        for key, _ in self._sel.select(timeout):
            key.data()
        now = time.monotonic()
        timer = self.core.get_timer()
        if timer is not None and timer <= now:
            self.core.handle_timer(now)
            self._drain()
        if self._state_due is not None and self._state_due <= now:
            self._write_state()

    # ---------------------------------------------------------------- applying the core's effects
    def _drain(self) -> None:
        any_effect = False
        while (effect := self.core.next_effect()) is not None:
            any_effect = True
            if isinstance(effect, PluginCall):
                self._call_plugin(effect)
            elif isinstance(effect, RouteLookup):
                assert self.rtnl is not None
                ok = self.rtnl.default_route_via(effect.addr)
                self.core.route_answer(effect.addr, ok, time.monotonic())
        if any_effect:
            self._schedule_state()

    def _call_plugin(self, call: PluginCall) -> None:
        """One plugin callback; whatever it raises (also SystemExit) is logged and the daemon goes on."""
        plugin = self.plugins.get(call.plugin)
        if plugin is None:
            return
        fn = getattr(plugin, call.method)
        kwargs = call.kwargs
        if kwargs:
            key = (call.plugin, call.method)
            if key not in self._kwargs_ok:
                self._kwargs_ok[key] = all(_takes_kwarg(fn, k) for k in kwargs)
            if not self._kwargs_ok[key]:
                kwargs = {}
        log.debug("-> %s.%s%s", call.plugin, call.method, call.args)
        try:
            fn(*call.args, **kwargs)
        except SystemExit as exc:
            log.error("plugin %s called sys.exit(%s) in %s; ignored", call.plugin, exc.code, call.method)
        except KernelError as exc:
            log.error("plugin %s: %s failed: %s", call.plugin, call.method, exc)
        except Exception:
            log.exception("plugin %s failed in %s", call.plugin, call.method)

    def _monitor_loopback(self, on: bool) -> None:
        self.core.set_monitor_loopback(on, time.monotonic())
        self._drain()

    def _schedule_state(self) -> None:
        if self._state_due is None:
            # debounced: a state write costs ~2-3 ms (fsync-free replace), too much to pay per event
            self._state_due = time.monotonic() + STATE_WRITE_DELAY

    # ---------------------------------------------------------------- socket readers
    def _on_rtnl(self) -> None:
        assert self.rtnl is not None
        now = time.monotonic()
        try:
            changes = self.rtnl.read()
        except ResyncNeeded:
            log.warning("rtnetlink notifications lost; resynchronising")
            links, addrs = self.rtnl.dump()
            self.core.resync_network(links, addrs, now)
        else:
            self.core.handle_rtnl(changes, now)
        self._drain()

    def _on_pm_events(self) -> None:
        assert self.client is not None
        now = time.monotonic()
        try:
            events = self.client.read_events()
        except EventsLost as exc:
            log.warning("%s; rebuilding the connection list from the kernel", exc)
            self.event_counts["lost"] += 1
            self._resync_connections()
            self._drain()
            return
        except NetlinkError as exc:
            log.warning("undecodable mptcp_pm event skipped: %s", exc)
            return
        for e in events:
            self.event_counts[e.name()] += 1
            if self.metrics is not None:
                self.metrics.event(e.name())
            self.core.handle_pm_event(e, now)
            if self.control is not None:
                self.control.publish(e.name(), getattr(e, "token", 0) or 0, e.to_dict())
        self._drain()
        if events:
            self._update_metrics()

    def _resync_connections(self) -> None:
        from mptcpkit.netlink.sock_diag import mptcp_connections
        from mptcpkit.netlink.socket import run_in_netns

        try:
            live = run_in_netns(self.netns, mptcp_connections)
        except (OSError, NetlinkError) as exc:
            log.error("cannot list MPTCP connections: %s", exc)
            return
        self.core.resync_connections(
            [Connection(c.token, "", c.laddr, c.raddr, established=True) for c in live]
        )

    # ---------------------------------------------------------------- status and metrics
    def status(self) -> dict[str, Any]:
        return status_dict(self)

    def _write_state(self) -> None:
        self._state_due = None
        try:
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.state_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.status(), indent=1))
            os.chmod(tmp, 0o644)
            tmp.replace(self.state_file)
        except OSError as exc:
            log.warning("cannot write state file %s: %s", self.state_file, exc)

    def _update_metrics(self) -> None:
        if self.metrics is not None:
            conns = self.core.connections.values()
            self.metrics.update(len(conns), sum(len(c.subflows) + 1 for c in conns), len(self.pm.owned))


def run_daemon(config: Config) -> None:
    setup_logging(config.log, config.debug)
    Daemon(config).run()


__all__ = ["Daemon", "default_state_file", "run_daemon"]
