"""mptcpkit.lab."""
