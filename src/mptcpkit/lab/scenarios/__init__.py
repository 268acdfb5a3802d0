"""mptcpkit.lab.scenarios."""
