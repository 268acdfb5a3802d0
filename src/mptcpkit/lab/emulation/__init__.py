"""mptcpkit.lab.emulation."""
