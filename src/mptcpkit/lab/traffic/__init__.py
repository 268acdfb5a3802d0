"""mptcpkit.lab.traffic."""
