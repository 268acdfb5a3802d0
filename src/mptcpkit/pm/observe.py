"""What the daemon shows of itself: the state file for `pm status`, Prometheus metrics and log targets."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from mptcpkit.pm.config import NotifyFlags

if TYPE_CHECKING:
    from mptcpkit.pm.daemon import Daemon

STATE_DIR = Path("/run/mptcpkit")


def default_state_file(netns: str | None) -> Path:
    return STATE_DIR / (f"pm-{netns}.json" if netns else "pm.json")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def status_dict(d: Daemon) -> dict[str, Any]:
    cfg = d.config
    core = d.core
    return {
        "pid": os.getpid(),
        "netns": d.netns,
        "started": d.started,
        "config": {
            "config_file": str(cfg.config_file) if cfg.config_file else None,
            "path_manager": cfg.path_manager,
            "addr_flags": cfg.addr_flags.names(),
            "notify_flags": [f.name.lower() for f in NotifyFlags if f in cfg.notify_flags and f.name],
        },
        "warnings": list(d.warnings),
        "plugins": [
            {"name": name, "priority": p.priority, "default": name == core.default}
            for name, p in d.plugins.items()
        ],
        "interfaces": [i.to_dict() for i in core.network.reported_links.values()],
        "addresses": [{"ifindex": a.ifindex, "addr": str(a.addr)} for a in core.network.reported_addresses()],
        "owned_endpoints": [e.to_dict() for e in d.pm.owned.values()],
        "limits_before": d.pm.limits_before.to_dict() if d.pm.limits_before else None,
        "connections": [c.to_dict() for c in core.connections.values()],
        "listeners": sorted(core.listeners),
        "events": dict(d.event_counts),
    }


class Metrics:
    """Prometheus gauges and counters on their own registry, served on `port` (imported only if used)."""

    def __init__(self, port: int) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

        reg = CollectorRegistry()
        self.connections = Gauge("mptcpkit_pm_connections", "MPTCP connections tracked", registry=reg)
        self.subflows = Gauge("mptcpkit_pm_subflows", "Subflows of tracked connections", registry=reg)
        self.endpoints = Gauge(
            "mptcpkit_pm_endpoints", "In-kernel endpoints added by the daemon", registry=reg
        )
        self.events = Counter("mptcpkit_pm_events", "mptcp_pm events received", ["type"], registry=reg)
        start_http_server(port, registry=reg)

    def event(self, name: str) -> None:
        self.events.labels(type=name).inc()

    def update(self, connections: int, subflows: int, endpoints: int) -> None:
        self.connections.set(connections)
        self.subflows.set(subflows)
        self.endpoints.set(endpoints)


class _PriorityFormatter(logging.Formatter):
    """`<prio>message`: what journald makes of stderr lines (used when the journal library is missing)."""

    prio: ClassVar[dict[int, int]] = {
        logging.DEBUG: 7,
        logging.INFO: 6,
        logging.WARNING: 4,
        logging.ERROR: 3,
        logging.CRITICAL: 2,
    }

    def format(self, record: logging.LogRecord) -> str:
        return f"<{self.prio.get(record.levelno, 6)}>{record.getMessage()}"


def journal_handler() -> logging.Handler | None:
    """journald's native protocol through systemd-python (structured fields, priorities); None if the
    library or the journal socket is not there."""
    if not Path("/run/systemd/journal/socket").exists():
        return None
    try:
        from systemd.journal import JournalHandler  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError:
        return None
    handler: logging.Handler = JournalHandler(SYSLOG_IDENTIFIER="mptcpkit-pm")
    return handler


def setup_logging(target: str, debug: bool) -> None:
    root = logging.getLogger("mptcpkit")
    root.handlers.clear()
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    handler: logging.Handler | None = None
    if target == "null":
        handler = logging.NullHandler()
    elif target == "syslog" and Path("/dev/log").exists():
        from logging.handlers import SysLogHandler

        handler = SysLogHandler(address="/dev/log")
        handler.setFormatter(logging.Formatter("mptcpkit-pm[%(process)d]: %(message)s"))
    elif target == "journal":
        handler = journal_handler()
        if handler is None:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(_PriorityFormatter())
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root.addHandler(handler)
