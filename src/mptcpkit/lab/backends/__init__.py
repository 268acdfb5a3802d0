"""mptcpkit.lab.backends."""
