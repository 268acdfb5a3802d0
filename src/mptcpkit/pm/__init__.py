"""The path-manager daemon `mptcpkit pm`, a drop-in for mptcpd (see docs/pm.md).

core.py         sans-IO decisions: facts + time in, plugin calls + route lookups out (aioquic pattern)
netmon.py       sans-IO network monitor inside the core (links/addresses -> plugin events)
daemon.py       selector loop: reads sockets, feeds the core, applies its effects
rtnl_socket.py  rtnetlink sockets (notifications, dumps, route lookups)
config.py       mptcpd.conf [core] + flags (mptcpd's warn-and-fall-back rules)
check.py        `pm check-config`: the same rules, strictly
plugin.py       Plugin API (15 callbacks)      plugin_loader.py  discovery + trust rules
handle.py       PathManager handle for plugins observe.py        state file, metrics, log targets
daemon_args.py  lean argparse entry for the daemon (no typer at run time); cli.py: typer commands
plugins/        addr_adv (in-kernel PM), sspi (user-space PM)
"""
