"""The path-manager daemon `mptcpkit pm`, a drop-in for mptcpd (see docs/pm.md).

config.py   mptcpd.conf [core] + flags          netmon.py  sans-IO network monitor (links/addresses -> events)
rtnl.py     rtnetlink sockets for netmon         plugin.py  Plugin API (15 callbacks) + discovery
handle.py   PathManager handle given to plugins  daemon.py  asyncio loop, dispatch, token -> plugin, cleanup
plugins/    addr_adv (in-kernel PM), sspi (user-space PM)
"""
