"""mptcpkit.lab.traffic: the lab's traffic engine (a server and a client process that print JSON).

Modules: `model` (result schema), `options` (process options), `engine` (argv builders + output parsers for
the runner), `iperf3` (iperf3 as an alternative engine), `stream`/`wire` (pure stream and framing codecs),
`core` (sockets), `cli` (`python -m mptcpkit.lab.traffic`). See docs/traffic.md.
"""
