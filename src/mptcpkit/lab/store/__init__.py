"""mptcpkit.lab.store."""
