"""`mptcpkit pm check-config`: the daemon's configuration and plugin loading, strictly, without the kernel.

The daemon follows mptcpd and only warns about unknown keys, values, flags, plugins and a missing plugin
directory. This check collects exactly those warnings (and the refusals) so an operator can see them before
a restart; any warning makes it fail.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from mptcpkit.pm.config import load


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def check(params: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(problems, summary lines) for the daemon's flags `params` (names as in the CLI)."""
    from mptcpkit.pm.plugin_loader import discover

    config = params.get("config")
    cfg = load(
        Path(config) if config else None,
        {
            "path-manager": params.get("path_manager"),
            "addr-flags": params.get("addr_flags"),
            "notify-flags": params.get("notify_flags"),
            "load-plugins": params.get("load_plugins"),
            "plugin-dir": params.get("plugin_dir"),
            "log": params.get("log"),
        },
    )
    problems = list(cfg.warnings)
    collect = _Collect()
    logger = logging.getLogger("mptcpkit.pm")
    logger.addHandler(collect)
    try:
        classes = discover(cfg.plugin_dir, cfg.load_plugins, warn=None)
    finally:
        logger.removeHandler(collect)
    problems += collect.messages
    names = [c.name for c in classes]
    if cfg.path_manager and cfg.path_manager not in names:
        problems.append(
            f"path-manager: plugin {cfg.path_manager!r} is not loaded (loaded: {', '.join(names) or 'none'})"
        )
    if not names:
        problems.append("no plugin would be loaded; the daemon refuses to start")
    default = cfg.path_manager if cfg.path_manager in names else (names[0] if names else "none")
    summary = [
        f"config file: {cfg.config_file or '(none)'}",
        f"plugin dir: {cfg.plugin_dir}",
        f"plugins: {', '.join(names) or 'none'} (default {default})",
        f"addr-flags: {','.join(cfg.addr_flags.names()) or '-'}",
    ]
    return problems, summary
