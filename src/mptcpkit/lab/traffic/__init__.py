"""mptcpkit.lab.traffic: the lab's traffic engine (a server and a client process that print JSON).

Modules: `model` (result schema), `options` (process options), `engine` (argv builders + output parsers for
the runner), `iperf3` (iperf3 as an alternative engine), `stream`/`protocol` (pure stream and control-frame codecs),
`sockets`/`stats`/`results` (shared plumbing), one module per mode: `bulk`, `rr`, `connect`, `paced`;
`client`/`server` (sessions), `kmem` (kernel socket memory), `cli` (`python -m mptcpkit.lab.traffic`). See docs/traffic.md.
"""
