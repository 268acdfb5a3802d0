"""mptcpkit.lab.analysis."""
