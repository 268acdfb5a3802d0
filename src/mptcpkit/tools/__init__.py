"""mptcpkit.tools."""
